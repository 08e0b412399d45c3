#!/usr/bin/env python3
"""How far PyTorch's CPU autocast (bfloat16) moves the official BN-Inception + GSM logits from
float32, next to `gateshift forward --precision bf16` on the same checkpoint and inputs
(docs/FIDELITY.md). The model is torch_cpu_bench.py's, checked against the official fixture.
Writes a 16-segment input for gateshift; prints relative errors (max|err| / max|ref|).

    /tmp/tv/bin/python scripts/bf16_autocast_reference.py ../shared/fixtures OUT_DIR
"""
import os
import sys

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_cpu_bench import BnInceptionGsm, check_against_fixture  # noqa: E402


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def main():
    fixtures, out = sys.argv[1:3]
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    inputs = {8: load_file(f"{fixtures}/gsm_bninception_seg8_io.safetensors")["input"]}
    # A 16-segment clip in the same convention (BGR 0-255 minus the mean), from the 8 frames.
    x8 = inputs[8].view(2, 8, 3, 224, 224)
    inputs[16] = torch.cat([x8, x8.flip(1) + torch.randn_like(x8)], 1).reshape(2, 48, 224, 224)
    save_file({"input": inputs[16].contiguous()}, f"{out}/bninception_gsm_seg16_input.safetensors")
    check_against_fixture(BnInceptionGsm(segments=8), f"{fixtures}/gsm_bninception_seg8", "fp32")
    state = torch.load(f"{fixtures}/gsm_bninception_seg8.pth.tar", map_location="cpu", weights_only=True)
    for segments, x in inputs.items():
        model = BnInceptionGsm(segments=segments)
        model.load_official(state["state_dict"])
        model.eval()
        with torch.no_grad():
            fp32 = model(x)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                bf16 = model(x).float()
        top = (fp32.argmax(1) == bf16.argmax(1)).all().item()
        print(f"segments {segments}: autocast bf16 vs fp32 rel {rel(bf16, fp32):.2e}, same top class: {top}")
        save_file({"logits": fp32.contiguous(), "autocast": bf16.contiguous()}, f"{out}/bninception_gsm_seg{segments}_torch.safetensors")


if __name__ == "__main__":
    main()
