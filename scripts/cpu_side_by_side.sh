#!/usr/bin/env bash
# BN-Inception + GSM, 1 clip × 8 × 224² inference on CPU, side by side in one run:
# gateshift on flex (pure Rust), gateshift on tch (libtorch), PyTorch eager (the reference
# model of scripts/torch_cpu_bench.py, checked against the official fixture's logits).
# Needs a throwaway torch virtualenv (TORCH_VENV, default /tmp/torchvenv, see
# torch_cpu_bench.py) and a tch build:
#   CARGO_TARGET_DIR=target-tch LIBTORCH_USE_PYTORCH=1 LIBTORCH_BYPASS_VERSION_CHECK=1 \
#     PATH=$TORCH_VENV/bin:$PATH cargo build --release --features tch
# Usage: scripts/cpu_side_by_side.sh [FIXTURES_DIR] [ITERS]
set -euo pipefail
fixtures=${1:-../shared/fixtures}
iters=${2:-10}
venv=${TORCH_VENV:-/tmp/torchvenv}
tch_bin=${TCH_BIN:-target-tch/release/gateshift}
torch_lib=$("$venv/bin/python" -c 'import os, torch; print(os.path.dirname(torch.__file__) + "/lib")')
cargo build --release --quiet
bench() { "$@" --arch bninception --segments 8 --batch 1 --mode infer --iters "$iters"; }
for t in gsm none; do
  bench target/release/gateshift bench model --temporal $t --backend flex
  [ $t = gsm ] && bench target/release/gateshift bench model --temporal $t --backend flex --gsm composed
  if [ -x "$tch_bin" ]; then
    LD_LIBRARY_PATH="$torch_lib" bench "$tch_bin" bench model --temporal $t --backend tch
    [ $t = gsm ] && LD_LIBRARY_PATH="$torch_lib" bench "$tch_bin" bench model --temporal $t --backend tch --gsm composed
  else
    echo "no tch build at $tch_bin: tch rows skipped"
  fi
done
"$venv/bin/python" scripts/torch_cpu_bench.py "$fixtures" --iters "$iters"
