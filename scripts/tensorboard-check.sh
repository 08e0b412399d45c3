#!/usr/bin/env bash
# The TensorBoard tier: trains a small run (and a resumed one), then reads each run's event
# file with TensorBoard's own reader and checks its scalars and steps against metrics.jsonl
# (`cargo test --release --test train_cli -- --ignored`).
#
# TensorBoard comes from PyPI into a throwaway virtualenv (removed at the end; pass a folder as
# $1 to keep and reuse one). Needs python3 with venv and network access to PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-}"
if [[ -z "$venv" ]]; then
    venv="$(mktemp -d)/venv"
    trap 'rm -rf "$(dirname "$venv")"' EXIT
fi
if [[ ! -x "$venv/bin/python" ]]; then
    echo "making a virtualenv with TensorBoard in $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet tensorboard
fi
"$venv/bin/python" -c 'import tensorboard; print("tensorboard", tensorboard.__version__)'
GATESHIFT_PYTHON="$venv/bin/python" cargo test --release --test train_cli -- --ignored --nocapture
