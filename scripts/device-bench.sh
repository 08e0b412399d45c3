#!/usr/bin/env bash
# The GPU check, run on a lent device machine in one call (see docs/PERFORMANCE.md):
# GSM module parity on the GPU against the official fixture, then the benchmark table
# (BN-Inception GSM/TSN and TSM ResNet-50, 8 segments, batch 32, train and infer, fp32 and
# bf16) on burn's libtorch backend with CUDA. GSM runs the fused CUDA kernels (fp32 and bf16;
# src/model/temporal/gsm_cuda.rs, compiled at run time by NVRTC from torch's pip wheels, found beside torch/lib);
# the parity check runs both the fused and the composed GSM, and the table has composed GSM
# rows for comparison. Writes $OUT/card.txt and $OUT/results.txt.
#
# Prepare here, then run there (the binary runs against the device's own torch libraries):
#   CARGO_TARGET_DIR=target-tch LIBTORCH_USE_PYTORCH=1 LIBTORCH_BYPASS_VERSION_CHECK=1 \
#     PATH=/tmp/torchvenv/bin:$PATH cargo build --release --features tch
#   mkdir -p device && cp ../shared/fixtures/gsm_module.safetensors device/
#   run: scripts/device-bench.sh   carry: target-tch/release/gateshift, device
set -uo pipefail
out=${OUT:-/tmp/gateshift-device}
mkdir -p "$out"
bin=${BIN:-target-tch/release/gateshift}
torch_lib=$(python3 -c 'import os, torch; print(os.path.dirname(torch.__file__) + "/lib")')
# (NVRTC for the fused kernels is found by the binary beside this torch/lib.)
export LD_LIBRARY_PATH="$torch_lib:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/card.txt"
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' | tee -a "$out/card.txt"
{
  echo "== GSM module parity on tch-cuda (fused and composed)"
  "$bin" check gsm-module device/gsm_module.safetensors --backend tch-cuda --path fused
  "$bin" check gsm-module device/gsm_module.safetensors --backend tch-cuda --path composed
  echo "== the 10 BN-Inception GSMs alone, batch 32, fused vs composed"
  for mode in infer train; do
    timeout 120 "$bin" bench gsm --backend tch-cuda --batch 32 --mode "$mode" --iters 10
  done
  for model in "bninception gsm" "bninception none" "resnet50 tsm"; do
    set -- $model
    for mode in infer train; do
      for precision in fp32 bf16; do
        timeout 150 "$bin" bench model --arch "$1" --temporal "$2" --segments 8 --batch 32 \
          --mode "$mode" --precision "$precision" --backend tch-cuda --warmup 3 --iters 10
        if [ "$2" = gsm ]; then
          timeout 150 "$bin" bench model --arch "$1" --temporal gsm --gsm composed --segments 8 --batch 32 \
            --mode "$mode" --precision "$precision" --backend tch-cuda --warmup 3 --iters 10
        fi
      done
    done
  done
} 2>&1 | tee "$out/results.txt"
