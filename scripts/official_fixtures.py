#!/usr/bin/env python3
"""Reference fixtures from the official code, for tests/fidelity.rs. Run in a throwaway
virtualenv (torch, torchvision, numpy, safetensors), never as a project dependency:

    python3 -m venv /tmp/tv && /tmp/tv/bin/pip install torch==2.11.0 torchvision==0.26.0 numpy safetensors
    /tmp/tv/bin/python scripts/official_fixtures.py GSM_REPO TSM_REPO GSF_REPO GST_REPO tests/fixtures [NAME…]

where the repositories are checkouts of swathikirans/GSM, mit-han-lab/temporal-shift-module,
swathikirans/GSF and chenxuluo/GST-video; NAMEs (gsm, tsm, gsf, gst) make only those
fixtures. It writes:

- `gsm_module_t16.safetensors`, `gsm_module_t5.safetensors`: one official `gsmModule` (gsm.py)
  with T = 16 and T = 5, laid out as ../shared/fixtures/gsm_module.safetensors (input, parameters,
  train-mode output and gradients, BN statistics after the step, eval output, TSM shift),
  metadata C/H/W/T/B.
- `tsm_resnet101_official.safetensors`: the official TSM `TSN(…, 'resnet101', is_shift=True,
  shift_place='blockres')`; `gsf_resnet50_official.safetensors`: torchvision ResNet-50 with
  the official GSF module after each bottleneck's conv3 (25%), as the GSF code places it;
  `gst_resnet50_official.safetensors`: the official GST `TemporalModel(…, 'GST', 'resnet50',
  alpha=4, beta=2)`, its fixed `AvgPool2d(7)` (global at 224²) made global at any size.
  Whole models are too large to commit, so their weights come from a generator both sides
  implement (`values` below, `tests/common/weights.rs`): the fixture holds the checkpoint's
  key list and shapes (metadata `keys`), the BN running statistics calibrated on random input
  (they cannot be generated), the input's shape, and the official code's logits in eval mode.
"""
import json
import os
import sys

import numpy as np
import torch
import torchvision
from safetensors.torch import save_file

MASK = (1 << 64) - 1
TSM = {}  # the official TSM code's TSN and TemporalShift, imported by main


def fnv1a(text):
    h = 0xCBF29CE484222325
    for b in text.encode():
        h = ((h ^ b) * 0x100000001B3) & MASK
    return h


def uniform(key, n):
    """n values in [0, 1) from splitmix64 of (FNV-1a(key) ^ i·φ), exactly as weights.rs."""
    with np.errstate(over="ignore"):
        i = np.arange(n, dtype=np.uint64)
        z = np.uint64(fnv1a(key)) ^ (i * np.uint64(0x9E3779B97F4A7C15))
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def values(key, shape):
    """The generated tensor `key` of `shape` (float32): He-uniform for weights of rank ≥ 2,
    1 ± 0.25 for rank-1 weights (BN scales) but 0.5 ± 0.125 for a bottleneck's last BN (`bn3`:
    residual branches small next to the identity, as in trained ResNets — a float32
    ResNet-101 then rounds its logits by 1.7e-5 instead of 9.2e-5), ±0.1 for biases, ±1 for
    the input."""
    n = int(np.prod(shape)) if len(shape) else 1
    u = 2.0 * uniform(key, n) - 1.0
    if key == "input":
        v = u
    elif len(shape) >= 2:
        v = u * np.sqrt(6.0 / int(np.prod(shape[1:])))
    elif key.endswith("bn3.weight"):
        v = 0.5 + 0.125 * u
    elif key.endswith(".weight"):
        v = 1.0 + 0.25 * u
    else:
        v = 0.1 * u
    return torch.from_numpy(v.astype(np.float32).reshape(shape))


def fill(model, prefix):
    """Generated values for every parameter of `model` (BN statistics: calibrated later)."""
    with torch.no_grad():
        for name, p in model.state_dict().items():
            if name.endswith(("running_mean", "running_var", "num_batches_tracked")):
                continue
            p.copy_(values(prefix + name, tuple(p.shape)))


def calibrate(model, x):
    """BN running statistics of one training-mode pass over `x` (momentum 1), then eval."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = 1.0
            m.reset_running_stats()
    model.train()
    with torch.no_grad():
        model(x)
    model.eval()


def whole_model_fixture(path, model, prefix, input_shape, container):
    x = values("input", input_shape)
    fill(model, prefix)
    calibrate(model, x)
    with torch.no_grad():
        logits = model(x)
        # The same model in float64: how far float32 rounding alone moves the logits.
        logits64 = model.double()(x.double()).float()
        model.float()
    state = model.state_dict()
    keys = [[prefix + k, list(v.shape)] for k, v in state.items() if not k.endswith("num_batches_tracked")]
    stats = {prefix + k: v.contiguous() for k, v in state.items() if k.endswith(("running_mean", "running_var"))}
    meta = {"keys": json.dumps(keys), "input_shape": json.dumps(list(input_shape)), "container": container}
    save_file({**stats, "logits": logits.contiguous(), "logits_f64": logits64.contiguous()}, path, metadata=meta)
    rel = ((logits - logits64).abs().max() / logits64.abs().max()).item()
    print(f"{path}: {len(keys)} tensors, logits {tuple(logits.shape)}; float32 vs float64: {rel:.2e}")


def tsm_resnet101(out):
    # torchvision ≥ 0.13 takes `weights=` by keyword only; the official code passes
    # `pretrained` positionally (False here: no download).
    original = torchvision.models.resnet101
    torchvision.models.resnet101 = lambda pretrained=False, **kw: original(weights=None, **kw)
    model = TSM["TSN"](10, 8, "RGB", base_model="resnet101", consensus_type="avg", dropout=0.5, partial_bn=False,
                print_spec=False, pretrain="", is_shift=True, shift_div=8, shift_place="blockres")
    whole_model_fixture(f"{out}/tsm_resnet101_official.safetensors", model, "module.", (1, 24, 64, 64), "state_dict")


def gsf_resnet50(gsf_repo, out):
    import types

    sys.path.insert(0, gsf_repo)
    import gsf as official

    # The official module pads with torch.cuda.FloatTensor; on the CPU, zeros of that shape.
    official.ftens = lambda *size: torch.zeros(*size)
    GSF = official.GSF

    def bottleneck_forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.gsf(self.conv3(out)))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)

    base = torchvision.models.resnet50(weights=None)
    for layer in [base.layer1, base.layer2, base.layer3, base.layer4]:
        for block in layer:
            block.gsf = GSF(block.conv3.out_channels, num_segments=8, gsf_ch_ratio=25)
            block.forward = types.MethodType(bottleneck_forward, block)
    base.fc = torch.nn.Identity()

    class Tsn(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.base_model, self.new_fc = base, torch.nn.Linear(2048, 10)

        def forward(self, x):
            f = self.base_model(x.view(-1, 3, *x.shape[2:]))
            return self.new_fc(f).view(x.shape[0], 8, -1).mean(1)

    whole_model_fixture(f"{out}/gsf_resnet50_official.safetensors", Tsn(), "module.", (1, 24, 64, 64),
                        "model_state_dict")


def gst_resnet50(gst_repo, out):
    sys.path.insert(0, gst_repo)
    for name in ("models", "transforms", "GST"):
        sys.modules.pop(name, None)
    import GST
    import models as gst_models

    # The official resnet50() downloads the ImageNet weights; the fixture's are generated.
    GST.resnet50 = lambda alpha, beta, **kw: GST.ResNet(GST.Bottleneck, [3, 4, 6, 3], alpha, beta, **kw)
    model = gst_models.TemporalModel(10, 8, "GST", "resnet50", alpha=4, beta=2, dropout=0.3)
    model.base_model.avgpool = torch.nn.AdaptiveAvgPool2d(1)
    whole_model_fixture(f"{out}/gst_resnet50_official.safetensors", model, "module.", (1, 24, 64, 64), "state_dict")


def gsm_module(gsm_repo, out, t):
    sys.path.insert(0, gsm_repo)
    import gsm as official

    # The official module pads with torch.cuda.FloatTensor; on the CPU, zeros of that shape.
    official.ftens = lambda *size: torch.zeros(*size)
    torch.manual_seed(t)
    c, b, h, w = 16, 2, 7, 5
    m = official.gsmModule(c, num_segments=t)
    with torch.no_grad():
        m.conv3D.weight.normal_(0, 0.2)
        m.conv3D.bias.normal_(0, 0.1)
        m.bn.weight.uniform_(0.5, 1.5)
        m.bn.bias.normal_(0, 0.1)
    x = torch.randn(b * t, c, h, w)
    param = {f"param.{k}": v.clone() for k, v in m.state_dict().items() if "running" not in k and "num_batches" not in k}
    # Running statistics calibrated on x (as the shared fixture), then one recorded step.
    m.bn.momentum = 1.0
    m.train()
    with torch.no_grad():
        m(x)
    m.bn.momentum = 0.1
    xg = x.clone().requires_grad_(True)
    y = m(xg)
    grad_y = torch.randn_like(y)
    y.backward(grad_y)
    out_t = {"x": x, **param, "train.y": y.detach(), "train.grad_y": grad_y, "train.grad_x": xg.grad}
    for k, p in m.named_parameters():
        out_t[f"train.grad.{k}"] = p.grad
    out_t["train.buffer_after.bn.running_mean"] = m.bn.running_mean.clone()
    out_t["train.buffer_after.bn.running_var"] = m.bn.running_var.clone()
    m.eval()
    with torch.no_grad():
        out_t["eval.y"] = m(x)
    # The official TSM shift (fold_div 8) of x, for the same file layout.
    out_t["tsm.y"] = TSM["TemporalShift"].shift(x, t, fold_div=8)
    meta = {"C": str(c), "H": str(h), "W": str(w), "T": str(t), "B": str(b), "bn_eps": "1e-5", "bn_momentum": "0.1"}
    path = f"{out}/gsm_module_t{t}.safetensors"
    save_file({k: v.contiguous() for k, v in out_t.items()}, path, metadata=meta)
    print(f"{path}: T={t}")


def main():
    gsm_repo, tsm_repo, gsf_repo, gst_repo, out = sys.argv[1:6]
    only = set(sys.argv[6:])

    def want(name):
        return not only or name in only

    os.makedirs(out, exist_ok=True)
    # `ops` is TSM's: imported first, as the GSM and GSF repositories have an `ops` of their own.
    sys.path.insert(0, tsm_repo)
    from ops.models import TSN
    from ops.temporal_shift import TemporalShift

    TSM.update(TSN=TSN, TemporalShift=TemporalShift)
    torch.set_num_threads(2)
    if want("gsm"):
        for t in (16, 5):
            gsm_module(gsm_repo, out, t)
    if want("tsm"):
        tsm_resnet101(out)
    if want("gsf"):
        gsf_resnet50(gsf_repo, out)
    if want("gst"):
        gst_resnet50(gst_repo, out)


if __name__ == "__main__":
    main()
