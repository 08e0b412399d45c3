#!/usr/bin/env python3
"""Reference outputs of the official Gate-Shift-Fuse module (swathikirans/GSF, `gsf.py`) for
gateshift's GSF parity test (tests/parity_gsf_module.rs).

The official file is not part of gateshift: download it yourself and pass its folder. Run in a
throwaway virtualenv with torch (never a project dependency):
    python3 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch==2.11.0 safetensors
    /tmp/torchvenv/bin/python scripts/gsf_reference.py /path/to/GSF tests/fixtures/gsf_module.safetensors

Two cases, each under its own key prefix: `r100.` (16 channels, all of them gated, 8
segments, 2 clips, 5x6) and `r50.` (24 channels, gsf_ch_ratio 50 so 12 gated and 12 passed
through, 4 segments, 2 clips, 4x4). Per case: the input `x`, the parameters `param.*` (random,
BN affine included, so every term is exercised), the train-mode output `train.y` for the
upstream gradient `train.grad_y`, the gradients `train.grad_x` and `train.grad.*`, the BN
running statistics after that step `train.buffer_after.*`, and the eval-mode output `eval.y`.
"""
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, sys.argv[1])
from gsf import GSF  # noqa: E402  (the official module)


def case(prefix, channels, ratio, segments, clips, h, w, seed):
    torch.manual_seed(seed)
    m = GSF(channels, num_segments=segments, gsf_ch_ratio=ratio)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(0.3 * torch.randn_like(p))
        m.bn.weight.add_(1.0)
    out = {}
    for k, v in m.state_dict().items():
        if "num_batches_tracked" not in k and "running" not in k:
            out[f"{prefix}param.{k}"] = v.clone()
    x = torch.randn(clips * segments, channels, h, w)
    out[f"{prefix}x"] = x.clone()
    m.train()
    xg = x.clone().requires_grad_()
    y = m(xg)
    grad_y = torch.randn_like(y)
    (y * grad_y).sum().backward()
    out[f"{prefix}train.y"] = y.detach()
    out[f"{prefix}train.grad_y"] = grad_y
    out[f"{prefix}train.grad_x"] = xg.grad
    for k, p in m.named_parameters():
        out[f"{prefix}train.grad.{k}"] = p.grad.clone()
    out[f"{prefix}train.buffer_after.bn.running_mean"] = m.bn.running_mean.clone()
    out[f"{prefix}train.buffer_after.bn.running_var"] = m.bn.running_var.clone()
    m.eval()
    with torch.no_grad():
        out[f"{prefix}eval.y"] = m(x)
    return out


tensors = {}
tensors.update(case("r100.", 16, 100, 8, 2, 5, 6, 0))
tensors.update(case("r50.", 24, 50, 4, 2, 4, 4, 1))
save_file({k: v.contiguous() for k, v in tensors.items()}, sys.argv[2])
print(f"wrote {len(tensors)} tensors to {sys.argv[2]}")
