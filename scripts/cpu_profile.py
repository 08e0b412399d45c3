#!/usr/bin/env python3
"""Per-layer profile of gateshift against OpenVINO on the same model: where gateshift's CPU
inference still loses. Reads the ONNX model `bench model --onnx` wrote and the per-op profile
`bench model --profile-json` wrote for the same model and batch; runs the model in OpenVINO
with PERF_COUNT and joins the two by op and shape (`conv 3x3/1 192>64 28x28`: kernel/stride,
channels in > out, input plane). Nodes of a temporal module (exported in the scope `gsm/`,
`tsm/`, `gsf/`) join gateshift's fused module unit; OpenVINO's reorders, concats and
reshapes join gateshift's rest (what runs outside `ops::`).

Usage: cpu_profile.py MODEL.onnx PROFILE.json [--precision f32|bf16|default] [--iters 20]
       [--threads 2] [--top 12]
For scripts/cpu_engines.sh, in a throwaway virtualenv; never a gateshift dependency."""
import argparse
import collections
import json

import numpy as np
from safetensors.numpy import load_file

SCOPES = ("gsm", "tsm", "gsf")
POOLS = {"MaxPool": "maxpool", "AvgPool": "avgpool"}


def shape(port):
    return [int(d) for d in port.get_partial_shape().to_shape()]


def key_of(op):
    """The gateshift profile key of an OpenVINO op read from the ONNX model, or None."""
    name = op.get_friendly_name()
    scope = name.split("/")[0]
    if scope in SCOPES:
        return f"{scope} unit"
    kind = op.get_type_name()
    if kind == "Convolution":
        n, c, h, w = shape(op.input(0))
        cout, _, kh, kw = shape(op.input(1))
        s = op.get_attributes()["strides"][0]
        return f"conv {kh}x{kw}/{s} {c}>{cout} {h}x{w}"
    if kind in POOLS:
        n, c, h, w = shape(op.input(0))
        a = op.get_attributes()
        k, s = a["kernel"][0], a["strides"][0]
        return f"{POOLS[kind]} {k}x{k}/{s} {c}>{c} {h}x{w}"
    return None


def kind_of(key):
    """The words before the channels (`conv 3x3/1`, `maxpool 3x3/2`, `rest`); a temporal
    module's nodes (OpenVINO) and ops (gateshift: `gsm unit`, `time shift`, `gsf fusion`, ...)
    are `temporal module`."""
    if key.split(" ")[0] in SCOPES + ("time", "tap"):
        return "temporal module"
    words = key.split(" ")
    end = next((i for i, w in enumerate(words) if ">" in w), len(words))
    return " ".join(words[:end])


def openvino_profile(model_path, x, precision, threads, iters):
    """ms per inference by gateshift key (`rest` for what no key names) and the runtime
    primitive of each key."""
    import openvino as ov
    core = ov.Core()
    model = core.read_model(model_path)
    model.reshape({model.inputs[0].get_any_name(): list(x.shape)})
    keys = {op.get_friendly_name(): key_of(op) for op in model.get_ordered_ops()}
    config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "PERF_COUNT": True}
    if precision != "default":
        config["INFERENCE_PRECISION_HINT"] = precision
    compiled = core.compile_model(model, "CPU", config)
    request = compiled.create_infer_request()
    for _ in range(3):
        request.infer([x])
    ms = collections.defaultdict(float)
    primitive = {}
    for _ in range(iters):
        request.infer([x])
        for p in request.get_profiling_info():
            if p.status.name != "EXECUTED":
                continue
            key = keys.get(p.node_name) or scoped(p.node_name) or "rest"
            ms[key] += p.real_time.total_seconds() * 1e3 / iters
            primitive.setdefault(key, p.exec_type)
    return ms, primitive


def scoped(runtime_name):
    """A runtime node whose name carries a temporal module's scope (a fused subgraph)."""
    for scope in SCOPES:
        if f"{scope}/" in runtime_name:
            return f"{scope} unit"
    return None


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("profile")
    p.add_argument("--precision", default="f32")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--top", type=int, default=12)
    a = p.parse_args()
    x = load_file(a.model[: -len(".onnx")] + ".io.safetensors")["input"].astype(np.float32)
    ours = json.load(open(a.profile))
    g = {k: v["ms"] for k, v in ours["ops"].items()}
    g["rest"] = ours["total_ms"] - sum(g.values())
    flops = {k: v["gflop"] for k, v in ours["ops"].items()}
    ov_ms, primitive = openvino_profile(a.model, x, a.precision, a.threads, a.iters)
    print(f"{a.model}: batch {x.shape[0]}, OpenVINO {a.precision}, {a.threads} threads "
          f"(gateshift: {ours['forwards']} forwards; OpenVINO: PERF_COUNT, {a.iters} inferences)")
    print(f"  total: gateshift {ours['total_ms']:.1f} ms, OpenVINO {sum(ov_ms.values()):.1f} ms (sum of its layers)")
    kinds = collections.defaultdict(lambda: [0.0, 0.0, 0.0])
    for k in set(g) | set(ov_ms):
        kd = kinds[kind_of(k)]
        kd[0] += g.get(k, 0.0)
        kd[1] += ov_ms.get(k, 0.0)
        kd[2] += flops.get(k, 0.0)
    print(f"  {'op kind':<18} {'gateshift ms':>12} {'OpenVINO ms':>12} {'gap ms':>8} {'GFLOP/s ours / OV':>18}")
    for k, (ms, ov, gf) in sorted(kinds.items(), key=lambda kv: kv[1][1] - kv[1][0]):
        rates = f"{gf / ms * 1e3:6.0f} / {gf / ov * 1e3:4.0f}" if gf > 0 and ms > 0 and ov > 0 else ""
        print(f"  {k:<18} {ms:12.2f} {ov:12.2f} {ms - ov:8.2f} {rates:>18}")
    print(f"  the {a.top} shapes with the largest gap (ms per forward; OpenVINO's primitive):")
    rows = [(k, g.get(k, 0.0), ov_ms.get(k, 0.0)) for k in set(g) | set(ov_ms) if k != "rest"]
    for k, ms, ov in sorted(rows, key=lambda r: r[2] - r[1])[: a.top]:
        print(f"    {k:<38} {ms:8.2f} {ov:8.2f} {ms - ov:8.2f}  {primitive.get(k, '-')}")


if __name__ == "__main__":
    main()
