#!/usr/bin/env python3
"""Runs an exported gateshift ONNX model in ONNX Runtime and OpenVINO and compares its logits
with gateshift's own (a safetensors file with `input` and `logits`).

Usage: onnx_check.py MODEL.onnx IO.safetensors [--tolerance 1e-4] [--json OUT.json]
Prints one line per engine; exits 1 when an engine's relative error (max |a - b| / max |b|)
exceeds the tolerance. Only for the opt-in parity tier (scripts/onnx-parity.sh): the Python
side lives in a throwaway virtualenv, never in gateshift."""
import argparse
import json
import sys

import numpy as np
from safetensors.numpy import load_file


def ort_logits(model, x):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"frames": x})[0]


def openvino_logits(model, x):
    import openvino as ov
    core = ov.Core()
    # fp32 arithmetic: OpenVINO's default on CPUs with AVX-512 BF16 or AMX is bf16.
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return compiled([x])[compiled.output("logits")]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("io")
    p.add_argument("--tolerance", type=float, default=1e-4)
    p.add_argument("--json")
    a = p.parse_args()
    io = load_file(a.io)
    x, want = io["input"].astype(np.float32), io["logits"].astype(np.float32)
    scale = float(np.abs(want).max())
    results, ok = {}, True
    for name, run in [("onnxruntime", ort_logits), ("openvino", openvino_logits)]:
        got = run(a.model, x)
        if got.shape != want.shape:
            print(f"{name}: logits {got.shape}, gateshift {want.shape}")
            ok = False
            continue
        err = float(np.abs(got - want).max()) / max(scale, 1e-30)
        results[name] = err
        good = err <= a.tolerance and np.isfinite(got).all()
        ok &= bool(good)
        print(f"{name}: relative error {err:.2e} ({'ok' if good else 'OVER ' + str(a.tolerance)})")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
