#!/usr/bin/env bash
# CPU inference side by side in one run (issue: CPU inference at OpenVINO's speed): gateshift
# (`bench model` on flex, fp32 and bf16) and the very same models exported with
# `bench model --onnx` run in ONNX Runtime and OpenVINO (fp32, and OpenVINO's default: bf16
# where the CPU has AVX-512 BF16 or AMX), for BN-Inception + GSM, BN-Inception (TSN) and
# ResNet-50 + TSM, 1 clip and 8 clips × 8 × 224². PyTorch eager runs the official-layout
# BN-Inception + GSM (scripts/torch_cpu_bench.py, checked against the official fixture's
# logits in ../shared/fixtures) at both batches; PyPI's torch wheel pulls several GB of CUDA
# libraries (NO_TORCH=1 skips it).
#
# At batch 1 it also profiles each model op by op in gateshift (`bench model --profile`, fp32
# and bf16) and layer by layer in OpenVINO (PERF_COUNT, fp32 and its default), the fp32
# profiles joined by op and shape (scripts/cpu_profile.py): which layers stand between
# gateshift and OpenVINO.
#
# The runtimes come from PyPI into a throwaway virtualenv ($1 to keep and reuse one).
# Usage: scripts/cpu_engines.sh [VENV] [ITERS]
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-}"
iters="${2:-8}"
threads=$(nproc)
if [[ -z "$venv" ]]; then
    venv="$(mktemp -d)/venv"
    trap 'rm -rf "$(dirname "$venv")"' EXIT
fi
[[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
if ! "$venv/bin/python" -c "import onnxruntime, openvino, safetensors, numpy" 2>/dev/null; then
    "$venv/bin/pip" install --quiet onnxruntime openvino safetensors numpy
fi
if [[ "${NO_TORCH:-0}" != 1 ]] && ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
    "$venv/bin/pip" install --quiet --no-cache-dir torch==2.11.0
fi
cargo build --release --quiet
out=$(mktemp -d)
bin=target/release/gateshift
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-), $threads threads; bf16 instructions: $(grep -o -m1 -E 'avx512_bf16|amx_bf16' /proc/cpuinfo || echo none)"
for batch in 1 8; do
    models=()
    for spec in "bninception gsm" "bninception none" "resnet50 tsm"; do
        set -- $spec
        name="$out/$1-$2-b$batch.onnx"
        profile=()
        [[ $batch == 1 ]] && profile=(--profile --profile-json "${name%.onnx}.profile.json")
        "$bin" bench model --arch "$1" --temporal "$2" --batch "$batch" --mode infer --iters "$iters" --onnx "$name" "${profile[@]}"
        "$bin" bench model --arch "$1" --temporal "$2" --batch "$batch" --mode infer --iters "$iters" --precision bf16 \
            ${profile:+--profile}
        models+=("$name")
    done
    "$venv/bin/python" scripts/cpu_engines.py "${models[@]}" --iters "$iters" --threads "$threads"
    if [[ $batch == 1 ]]; then
        for m in "${models[@]}"; do
            for precision in f32 default; do
                "$venv/bin/python" scripts/cpu_profile.py "$m" "${m%.onnx}.profile.json" --threads "$threads" \
                    --precision "$precision"
            done
        done
    fi
done
if [[ "${NO_TORCH:-0}" != 1 ]]; then
    "$venv/bin/python" scripts/torch_cpu_bench.py ../shared/fixtures --iters "$iters" --threads "$threads" --batches 1,8
fi
rm -rf "$out"
