"""PyTorch CPU eager reference for `docs/PERFORMANCE.md`: BN-Inception + GSM (8 segments,
174 classes) built from the official layer list, loaded from the official-format fixture
checkpoint, checked against the fixture logits, then timed on BATCHES clips x 8 x 224^2
inference with the same protocol as `gateshift bench model` (warm-up, medians of timed
iterations, in ROUNDS rounds).

Run in a throwaway virtualenv, never as a project dependency:
    python3 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch==2.11.0 safetensors numpy
    /tmp/torchvenv/bin/python scripts/torch_cpu_bench.py ../shared/fixtures [--threads 2] [--batches 1,8]
"""
import argparse
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file

# name: (in, out, kernel, stride, pad); a leading '*' marks the 10 GSM places.
STEM = [("conv1_7x7_s2", 3, 64, 7, 2, 3), ("conv2_3x3_reduce", 64, 64, 1, 1, 0), ("conv2_3x3", 64, 192, 3, 1, 1)]
# Block: (name, input, 1x1 (0 = none), 3x3 reduce, 3x3, double reduce, double, pool proj (0 = none), pool, stride)
BLOCKS = [
    ("3a", 192, 64, 64, 64, 64, 96, 32, "avg", 1),
    ("3b", 256, 64, 64, 96, 64, 96, 64, "avg", 1),
    ("3c", 320, 0, 128, 160, 64, 96, 0, "max", 2),
    ("4a", 576, 224, 64, 96, 96, 128, 128, "avg", 1),
    ("4b", 576, 192, 96, 128, 96, 128, 128, "avg", 1),
    ("4c", 576, 160, 128, 160, 128, 160, 128, "avg", 1),
    ("4d", 608, 96, 128, 192, 160, 192, 128, "avg", 1),
    ("4e", 608, 0, 128, 192, 192, 256, 0, "max", 2),
    ("5a", 1056, 352, 192, 320, 160, 224, 128, "avg", 1),
    ("5b", 1024, 352, 192, 320, 192, 224, 128, "max", 1),
]


class Gsm(nn.Module):
    """Gate-Shift Module: tanh gates from a grouped 3x3x3 Conv3d on ReLU(BN3d(x)); half 1
    gated from t+1, half 2 from t-1, zero padded; residual; per-half re-interleave."""

    def __init__(self, planes, segments):
        super().__init__()
        self.conv3D = nn.Conv3d(planes, 2, 3, padding=1, groups=2)
        self.bn = nn.BatchNorm3d(planes)
        self.segments = segments

    def forward(self, x):
        bt, c, h, w = x.shape
        t = self.segments
        x = x.view(bt // t, t, c, h, w).permute(0, 2, 1, 3, 4)
        gate = torch.tanh(self.conv3D(F.relu(self.bn(x))))
        x1, x2 = x[:, : c // 2], x[:, c // 2 :]
        y1, y2 = x1 * gate[:, :1], x2 * gate[:, 1:]
        s1 = torch.zeros_like(y1)
        s1[:, :, :-1] = y1[:, :, 1:]
        s2 = torch.zeros_like(y2)
        s2[:, :, 1:] = y2[:, :, :-1]
        z1, z2 = s1 + x1 - y1, s2 + x2 - y2

        def interleave(z):
            b, ch, tt, hh, ww = z.shape
            return z.view(b, 2, ch // 2, tt, hh, ww).transpose(1, 2).reshape(b, ch, tt, hh, ww)

        y = torch.cat([interleave(z1), interleave(z2)], 1)
        return y.permute(0, 2, 1, 3, 4).reshape(bt, c, h, w)


class BnInceptionGsm(nn.Module):
    def __init__(self, segments=8, classes=174):
        super().__init__()
        self.units = nn.ModuleDict()
        self.gsm = nn.ModuleDict()
        for name, cin, cout, k, s, p in STEM:
            self.unit(name, cin, cout, k, s, p)
        for b, cin, c1, r3, c3, rd, cd, pp, _, stride in BLOCKS:
            if c1:
                self.unit(f"inception_{b}_1x1", cin, c1, 1, 1, 0, gsm=segments)
            self.unit(f"inception_{b}_3x3_reduce", cin, r3, 1, 1, 0, gsm=segments if not c1 else 0)
            self.unit(f"inception_{b}_3x3", r3, c3, 3, stride, 1)
            self.unit(f"inception_{b}_double_3x3_reduce", cin, rd, 1, 1, 0)
            self.unit(f"inception_{b}_double_3x3_1", rd, cd, 3, 1, 1)
            self.unit(f"inception_{b}_double_3x3_2", cd, cd, 3, stride, 1)
            if pp:
                self.unit(f"inception_{b}_pool_proj", cin, pp, 1, 1, 0)
        self.new_fc = nn.Linear(1024, classes)
        self.segments = segments

    def unit(self, name, cin, cout, k, s, p, gsm=0):
        self.units[name] = nn.Conv2d(cin, cout, k, s, p)
        self.units[name + "_bn"] = nn.BatchNorm2d(cout)
        if gsm:
            self.gsm[name] = Gsm(cout, gsm)

    def run(self, name, x):
        x = self.units[name](x)
        if name in self.gsm:
            x = self.gsm[name](x)
        return F.relu(self.units[name + "_bn"](x))

    def forward(self, clip):
        n = clip.shape[0]
        x = clip.view(n * self.segments, 3, clip.shape[2], clip.shape[3])
        x = self.run("conv1_7x7_s2", x)
        x = F.max_pool2d(x, 3, 2, ceil_mode=True)
        x = self.run("conv2_3x3", self.run("conv2_3x3_reduce", x))
        x = F.max_pool2d(x, 3, 2, ceil_mode=True)
        for b, _, c1, _, _, _, _, pp, pool, stride in BLOCKS:
            outs = []
            if c1:
                outs.append(self.run(f"inception_{b}_1x1", x))
            outs.append(self.run(f"inception_{b}_3x3", self.run(f"inception_{b}_3x3_reduce", x)))
            d = self.run(f"inception_{b}_double_3x3_reduce", x)
            outs.append(self.run(f"inception_{b}_double_3x3_2", self.run(f"inception_{b}_double_3x3_1", d)))
            if stride == 2:
                outs.append(F.max_pool2d(x, 3, 2, ceil_mode=True))
            else:
                pooled = (
                    F.avg_pool2d(x, 3, 1, 1, ceil_mode=True, count_include_pad=True)
                    if pool == "avg"
                    else F.max_pool2d(x, 3, 1, 1, ceil_mode=True)
                )
                outs.append(self.run(f"inception_{b}_pool_proj", pooled))
            x = torch.cat(outs, 1)
        x = x.mean((2, 3))
        return self.new_fc(x).view(n, self.segments, -1).mean(1)

    def load_official(self, state_dict):
        mine = {}
        for key, value in state_dict.items():
            key = key.removeprefix("module.").removeprefix("base_model.")
            if key.endswith("num_batches_tracked"):
                continue
            if key.startswith("gsm_"):
                layer, rest = key[4:].split(".", 1)
                mine[f"gsm.{layer}.{rest}"] = value
            elif key.startswith("new_fc."):
                mine[key] = value
            else:
                layer, rest = key.split(".", 1)
                mine[f"units.{layer}.{rest}"] = value
        self.load_state_dict(mine, strict=True)


def check_against_fixture(model, fixture, name):
    """`model` loaded from the official-format checkpoint `fixture`.pth.tar gives the logits of
    `fixture`_io.safetensors in eval mode; returns it in eval mode."""
    ckpt = torch.load(f"{fixture}.pth.tar", map_location="cpu", weights_only=True)
    model.load_official(ckpt["state_dict"])
    model.eval()
    io = load_file(f"{fixture}_io.safetensors")
    with torch.no_grad():
        logits = model(io["input"])
    err = ((logits - io["logits"]).abs().max() / io["logits"].abs().max()).item()
    print(f"parity: {name} logits rel err {err:.2e} vs the official fixture")
    assert err < 1e-4, "reference model does not match the official code"
    return model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("fixtures")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batches", default="1", help="clips per batch, comma-separated")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model = check_against_fixture(BnInceptionGsm(), f"{a.fixtures}/gsm_bninception_seg8", "bninception+gsm")
    for batch in [int(b) for b in a.batches.split(",")]:
        x = torch.randn(batch, 24, 224, 224)
        rounds = []
        with torch.no_grad():
            for _ in range(2):
                model(x)
            for _ in range(a.rounds):
                times = []
                for _ in range(a.iters):
                    t0 = time.perf_counter()
                    model(x)
                    times.append(time.perf_counter() - t0)
                rounds.append(1000 * statistics.median(times))
        shown = " / ".join(f"{r:.1f}" for r in rounds)
        print(f"pytorch {torch.__version__} eager cpu, {a.threads} threads: bninception+gsm infer "
              f"{batch}x8x224^2 {shown} ms per batch (rounds)")


if __name__ == "__main__":
    main()
