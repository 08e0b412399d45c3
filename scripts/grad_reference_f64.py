"""Float64 reference for the official training-step gradients of the GSM BN-Inception
fixture, to tell float32 rounding from real differences (docs/FIDELITY.md).

Rebuilds the fixture's step (train-mode BN, no dropout, cross-entropy, clip 20) with the
reference model of scripts/torch_cpu_bench.py (checked against the fixture logits) in
float32 and float64, prints how far each float32 result is from float64, and writes the
float64 post-clip gradients of the fixture's three tensors and the float64 pre-clip gradient
norm (`grad_norm`) to tests/fixtures/gsm_bninception_grads_f64.safetensors.

    /tmp/torchvenv/bin/python scripts/grad_reference_f64.py ../shared/fixtures
"""
import sys

import torch
from safetensors.torch import load_file, save_file

from torch_cpu_bench import BnInceptionGsm

fixtures = sys.argv[1]
torch.set_num_threads(2)
io = load_file(f"{fixtures}/gsm_bninception_seg8_io.safetensors")
ckpt = torch.load(f"{fixtures}/gsm_bninception_seg8.pth.tar", map_location="cpu", weights_only=True)
names = {
    "base_model.conv1_7x7_s2.weight": lambda m: m.units["conv1_7x7_s2"].weight,
    "base_model.gsm_inception_3a_1x1.conv3D.weight": lambda m: m.gsm["inception_3a_1x1"].conv3D.weight,
    "new_fc.weight": lambda m: m.new_fc.weight,
}
grads, norms = {}, {}
for dtype in (torch.float32, torch.float64):
    model = BnInceptionGsm()
    model.load_official(ckpt["state_dict"])
    model = model.to(dtype).train()
    loss = torch.nn.functional.cross_entropy(model(io["input"].to(dtype)), io["train.labels"])
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 20.0)
    grads[dtype] = {k: get(model).grad.detach().clone() for k, get in names.items()}
    norms[dtype] = norm.detach().clone()
    print(f"{dtype}: loss {loss.item():.9f}, pre-clip norm {norm.item():.6f}")


def rel(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


for k in names:
    f32, f64, official = grads[torch.float32][k], grads[torch.float64][k], io[f"grad.{k}"]
    print(f"{k}: official f32 vs f64 {rel(official, f64):.2e}, reference f32 vs f64 {rel(f32, f64):.2e}")
official_norm = io["train.grad_norm"].double()
print(f"pre-clip norm: official f32 vs f64 {rel(official_norm, norms[torch.float64]):.2e}")
save_file(
    {k: v.float().contiguous() for k, v in grads[torch.float64].items()}
    | {"grad_norm": norms[torch.float64].reshape(1).float()},
    "tests/fixtures/gsm_bninception_grads_f64.safetensors",
    metadata={"source": "scripts/grad_reference_f64.py", "torch": torch.__version__},
)
