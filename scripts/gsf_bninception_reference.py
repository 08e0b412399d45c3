#!/usr/bin/env python3
"""Whole-model GSF reference: BN-Inception (the layer list of scripts/torch_cpu_bench.py,
checked there against the official GSM fixture) with the *official* GSF module
(swathikirans/GSF `gsf.py`, which you download yourself) at its 10 places, random weights
and BN statistics, saved as an official-format checkpoint (`module.base_model.gsf_X.*`) with
an input and its logits. `gateshift forward --temporal gsf` must reproduce the logits.

    /tmp/torchvenv/bin/python scripts/gsf_bninception_reference.py /path/to/GSF OUT_DIR
    gateshift forward --checkpoint OUT_DIR/gsf_bninception_seg8.pth.tar --arch bninception \
        --temporal gsf --segments 8 --input OUT_DIR/gsf_bninception_seg8_io.safetensors --output out.safetensors
"""
import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, sys.argv[1])
from gsf import GSF  # noqa: E402  (official)
from torch_cpu_bench import BnInceptionGsm  # noqa: E402


def randomise_bn(model):
    """Random BN affine parameters and running statistics, so that eval mode uses them all."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)


def main():
    torch.manual_seed(0)
    model = BnInceptionGsm(segments=8, classes=174)
    for name in list(model.gsm.keys()):
        model.gsm[name] = GSF(model.units[name].out_channels, num_segments=8, gsf_ch_ratio=100)
    randomise_bn(model)
    model.eval()
    state = {}
    for key, value in model.state_dict().items():
        if key.startswith("units."):
            key = "base_model." + key[len("units."):]
        elif key.startswith("gsm."):
            layer, rest = key[len("gsm."):].split(".", 1)
            key = f"base_model.gsf_{layer}.{rest}"
        state["module." + key] = value
    out = sys.argv[2]
    os.makedirs(out, exist_ok=True)
    torch.save({"state_dict": state, "arch": "BNInception"}, f"{out}/gsf_bninception_seg8.pth.tar")
    x = 50 * torch.randn(2, 24, 224, 224)
    with torch.no_grad():
        logits = model(x)
    save_file({"input": x.contiguous(), "logits": logits.contiguous()}, f"{out}/gsf_bninception_seg8_io.safetensors")
    print(f"wrote {out}: {len(state)} tensors, logits {tuple(logits.shape)}")


if __name__ == "__main__":
    main()
