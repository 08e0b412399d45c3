#!/usr/bin/env python3
"""Times exported gateshift models in ONNX Runtime and OpenVINO (fp32, and OpenVINO's default
precision: bf16 on CPUs with AVX-512 BF16 or AMX; for batches of several clips also OpenVINO's
throughput mode, one request per clip on its streams) and reports each engine's logit error
against gateshift's own (the `.io.safetensors` that `bench model --onnx` writes beside the
model). Interleaved rounds, median of ITERS runs each; THREADS threads for every engine.

Usage: cpu_engines.py MODEL.onnx [MODEL.onnx ...] [--iters 8] [--rounds 3] [--threads 2]
For scripts/cpu_engines.sh, in a throwaway virtualenv; never a gateshift dependency."""
import argparse
import statistics
import time

import numpy as np
from safetensors.numpy import load_file


def ort_session(model, threads):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    s = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    return lambda x: s.run(["logits"], {"frames": x})[0]


def ov_model(model, threads, precision):
    import openvino as ov
    config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
    if precision:
        config["INFERENCE_PRECISION_HINT"] = precision
    compiled = ov.Core().compile_model(model, "CPU", config)
    request = compiled.create_infer_request()
    out = compiled.output("logits")
    return lambda x: request.infer([x])[out].copy()


def ov_throughput(model, threads, precision):
    """OpenVINO's throughput mode: the clips of a batch as separate requests on its streams
    (`PERFORMANCE_HINT THROUGHPUT`, its own number of requests), all in flight at once."""
    import openvino as ov
    config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "THROUGHPUT"}
    if precision:
        config["INFERENCE_PRECISION_HINT"] = precision
    compiled = ov.Core().compile_model(model, "CPU", config)
    queue = ov.AsyncInferQueue(compiled, compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
    out = compiled.output("logits")
    results = {}
    queue.set_callback(lambda request, i: results.__setitem__(i, request.get_tensor(out).data.copy()))

    def run(x):
        results.clear()
        for i in range(x.shape[0]):
            queue.start_async({0: x[i:i + 1]}, i)
        queue.wait_all()
        return np.concatenate([results[i] for i in range(x.shape[0])])
    return run


def main():
    p = argparse.ArgumentParser()
    p.add_argument("models", nargs="+")
    p.add_argument("--iters", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    import onnxruntime
    import openvino
    print(f"onnxruntime {onnxruntime.__version__}, openvino {openvino.__version__}, {a.threads} threads")
    for model in a.models:
        io = load_file(model[: -len(".onnx")] + ".io.safetensors")
        x, want = io["input"].astype(np.float32), io["logits"].astype(np.float32)
        engines = {
            "onnxruntime fp32": ort_session(model, a.threads),
            "openvino fp32": ov_model(model, a.threads, "f32"),
            "openvino default": ov_model(model, a.threads, None),
        }
        if x.shape[0] > 1:
            engines["openvino fp32 throughput"] = ov_throughput(model, a.threads, "f32")
            engines["openvino default throughput"] = ov_throughput(model, a.threads, None)
        times = {k: [] for k in engines}
        errors = {}
        for name, run in engines.items():
            got = run(x)
            run(x)
            errors[name] = float(np.abs(got - want).max() / np.abs(want).max())
        for _ in range(a.rounds):
            for name, run in engines.items():
                for _ in range(a.iters):
                    t = time.perf_counter()
                    run(x)
                    times[name].append(1e3 * (time.perf_counter() - t))
        print(f"{model}: batch {x.shape[0]}")
        for name in engines:
            rounds = [statistics.median(times[name][r * a.iters:(r + 1) * a.iters]) for r in range(a.rounds)]
            shown = " / ".join(f"{r:.1f}" for r in rounds)
            print(f"  {name:<27} {shown} ms per batch (rounds)   logit error vs gateshift {errors[name]:.1e}")


if __name__ == "__main__":
    main()
