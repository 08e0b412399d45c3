"""PyTorch GPU eager reference for `docs/PERFORMANCE.md`, run by `scripts/device-bench.sh` on
the same card and in the same run as `gateshift bench model`: BN-Inception with GSM (or TSN,
no temporal module), or ResNet-50 with TSM (or TSN), 8 segments, 174 classes, random weights,
synthetic input, timed with the same protocol (warm-up, median of timed iterations,
synchronised).

The models are `torch_cpu_bench.py`'s and `torch_tsm_resnet.py`'s, which check themselves
against the official fixture logits.
bf16 is autocast (fp32 weights) for both modes; training is one SGD step with momentum.
It needs torch with CUDA; it is never a project dependency.
    python3 scripts/torch_gpu_bench.py --temporal gsm --mode train --precision bf16
"""
import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_cpu_bench import BnInceptionGsm  # noqa: E402
from torch_tsm_resnet import TsmResNet  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", choices=["bninception", "resnet50"], default="bninception")
    ap.add_argument("--temporal", choices=["gsm", "tsm", "none"], default="gsm")
    ap.add_argument("--mode", choices=["infer", "train"], default="infer")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--segments", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--device", default="cuda", help="cpu: a quick check of the script alone")
    ap.add_argument("--channels-last", action="store_true", help="2D conv weights (and so activations) in channels_last")
    a = ap.parse_args()
    torch.backends.cudnn.benchmark = True
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if a.arch == "resnet50":
        if a.temporal == "gsm":
            ap.error("--arch resnet50 takes --temporal tsm or none")
        model = TsmResNet(depth=50, segments=a.segments, shift=a.temporal == "tsm")
    else:
        if a.temporal == "tsm":
            ap.error("--arch bninception takes --temporal gsm or none")
        model = BnInceptionGsm(segments=a.segments)
        if a.temporal == "none":
            model.gsm = nn.ModuleDict()
    model = model.to(dev)
    if a.channels_last:
        # channels_last 2D conv weights make cuDNN run the first convolution, and so the whole
        # network, channels-last (the input stays NCHW: the model views it as frames first;
        # GSM's 5D Conv3d weight stays as it is, `Module.to` would refuse it).
        for p in model.parameters():
            if p.dim() == 4:
                p.data = p.data.contiguous(memory_format=torch.channels_last)
    model.train(a.mode == "train")
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    loss_fn = nn.CrossEntropyLoss()
    dtype = torch.bfloat16 if a.precision == "bf16" else torch.float32
    times = []
    for i in range(a.warmup + a.iters):
        x = torch.randn(a.batch, 3 * a.segments, a.size, a.size, device=dev)
        labels = torch.zeros(a.batch, dtype=torch.long, device=dev)
        sync()
        t0 = time.perf_counter()
        with torch.autocast(dev.type, dtype=dtype, enabled=a.precision == "bf16"):
            if a.mode == "infer":
                with torch.no_grad():
                    model(x)
            else:
                loss = loss_fn(model(x).float(), labels)
        if a.mode == "train":
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 20.0)
            opt.step()
        sync()
        if i >= a.warmup:
            times.append(time.perf_counter() - t0)
    ms = 1000 * statistics.median(times)
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else float("nan")
    card = torch.cuda.get_device_name() if cuda else "cpu"
    name = "tsn" if a.temporal == "none" else a.temporal
    order = ", channels_last" if a.channels_last else ""
    print(
        f"pytorch {torch.__version__} eager{order} {card}: {a.arch}+{name} "
        f"{a.mode} {a.precision} batch {a.batch}x{a.segments}x{a.size}^2: median {ms:.1f} ms/iter, "
        f"{a.batch / ms * 1000:.1f} clips/s, peak allocated {peak:.0f} MiB"
    )


if __name__ == "__main__":
    main()
