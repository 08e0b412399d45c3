#!/usr/bin/env bash
# The ONNX parity tier: exports GSM BN-Inception (the official checkpoint in ../shared/fixtures),
# TSM / GSF / TSN ResNet-50, GSF / TSN BN-Inception, InceptionV3, EfficientNet-Lite and every
# small case of tests/onnx_export.rs, runs each in ONNX Runtime and OpenVINO (fp32), and fails
# when a logit is more than 1e-4 (relative to the largest) off gateshift's own.
#
# The runtimes come from PyPI into a throwaway virtualenv (removed at the end; pass a folder as
# $1 to keep and reuse one). Needs python3 with venv and network access to PyPI, ~1 min of
# tests after the build.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-}"
if [[ -z "$venv" ]]; then
    venv="$(mktemp -d)/venv"
    trap 'rm -rf "$(dirname "$venv")"' EXIT
fi
if [[ ! -x "$venv/bin/python" ]]; then
    echo "making a virtualenv with ONNX Runtime and OpenVINO in $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet onnxruntime openvino safetensors numpy
fi
"$venv/bin/python" -c 'import onnxruntime, openvino; print("onnxruntime", onnxruntime.__version__, "· openvino", openvino.__version__)'
GATESHIFT_PYTHON="$venv/bin/python" cargo test --release --test onnx_export -- --ignored --nocapture
