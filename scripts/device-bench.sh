#!/usr/bin/env bash
# The GPU check, run on a lent device machine in one call (see docs/PERFORMANCE.md), on the
# two GPU routes of one binary built with `--features tch,cuda`:
#   tch-cuda  burn's libtorch backend (cuDNN), fused GSM = src/ops/gate_shift/cuda.rs
#             (NVRTC from torch's pip wheels, found beside torch/lib);
#   cuda      burn's CubeCL CUDA backend (kernels by NVRTC), fused GSM =
#             src/ops/gate_shift/cube.rs.
# Order, most important first, so that a run cut short still answers the acceptance points
# (the first run, 2026-11-27 on an H200, is in docs/PERFORMANCE.md; its CubeCL rows took the
# whole budget without finishing, so they now come after the tch-cuda target rows and checks,
# with one row of their own):
#   1. GSM module parity against the official fixture, fused and composed, on both routes
#      (on tch-cuda this includes the inference unit's CUDA kernels: NCHW, channels-last
#      `unit_*_nhwc`, and both in bf16); the whole BN-Inception against flex (`check backend`:
#      a training step, then fp32 and bf16 inference), TF32 off, with and without cuDNN's fused
#      convolution + ReLU (GATESHIFT_CONV_RELU=1);
#   2. the targets' rows on tch-cuda: BN-Inception GSM and TSN, 8 segments, batch 32, bf16,
#      infer and train, with the defaults (libtorch's own convolution and batch norm,
#      src/ops/torch/; channels-last; BN folded into the convolutions in
#      inference, src/model/layers.rs), then each turned off alone on the GSM rows
#      (GATESHIFT_CHANNELS_LAST=0, GATESHIFT_FOLD_BN=0, GATESHIFT_TORCH_LAYERS=0 as in the
#      first run); a training step's phases with the flat and the per-parameter clip + SGD;
#      inference with GATESHIFT_CONV_RELU=1; PyTorch eager (scripts/torch_gpu_bench.py) on the
#      same card, NCHW and channels_last;
#      the 10 GSM modules alone in inference, and the whole GSM unit op by op against fused
#      (`bench gsm`);
#   3. the whole-network check with libtorch's TF32 default, and on ResNet-18 + TSM;
#   4. CubeCL cuda: a training step against flex, `bench gsm` (its BN-Inception row, with the
#      warm-up time, runs in section 2 after the default target rows);
#   5. the rest of the tch-cuda table: fp32, composed GSM, TSM ResNet-50 (and PyTorch's),
#      `bench gsm`.
# Rows stop being started after $BUDGET_S seconds (default 400); each row is cut at
# $ROW_S seconds (default 120; CubeCL's model row gets $CUBE_ROW_S, default 150). Each result
# is appended to $OUT/results.txt as it comes; $OUT/card.txt names the card.
#
# Prepare here, then run there (the binary runs against the device's own torch libraries):
#   CARGO_TARGET_DIR=target-tch LIBTORCH_USE_PYTORCH=1 LIBTORCH_BYPASS_VERSION_CHECK=1 \
#     PATH=/tmp/torchvenv/bin:$PATH cargo build --release --features tch,cuda
#   mkdir -p device && cp ../shared/fixtures/gsm_module.safetensors device/
#   strip -o device/gateshift target-tch/release/gateshift && gzip -9f device/gateshift
#   run: scripts/device-bench.sh   carry: device
# (the binary with both routes is ~96 MB, 71 MB stripped, 17 MB gzipped: the carry cap is 64 MiB)
set -uo pipefail
out=${OUT:-/tmp/gateshift-device}
mkdir -p "$out"
if [ -z "${BIN:-}" ] && [ -f device/gateshift.gz ]; then
  gunzip -c device/gateshift.gz > /tmp/gateshift && chmod +x /tmp/gateshift
  BIN=/tmp/gateshift
fi
bin=${BIN:-target-tch/release/gateshift}
budget=${BUDGET_S:-400}
row_s=${ROW_S:-120}
start=$SECONDS
torch_dir=$(python3 -c 'import os, torch; print(os.path.dirname(torch.__file__))')
# libtorch for tch-cuda; NVRTC for CubeCL from the pip wheels or the CUDA toolkit, whichever
# the machine has (the tch-cuda kernels find it beside torch/lib themselves).
nv_lib=$(dirname "$torch_dir")/nvidia/cu13/lib
export LD_LIBRARY_PATH="$torch_dir/lib:$nv_lib:/usr/local/cuda/lib64:/usr/local/cuda-13.0/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}"
# CubeCL's NVRTC includes the toolkit's headers (cuda_bf16.h): CUDA_PATH names the toolkit.
if [ -z "${CUDA_PATH:-}" ]; then
  for d in /usr/local/cuda /usr/local/cuda-13.0; do [ -d "$d/include" ] && export CUDA_PATH=$d && break; done
fi
echo "CUDA_PATH=${CUDA_PATH:-unset}" | tee "$out/env.txt"
ldd "$bin" | grep -E "torch|not found" | tee -a "$out/env.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/card.txt"
nproc | sed "s/^/cpu cores: /" | tee -a "$out/card.txt"
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' | tee -a "$out/card.txt"
date -u +%FT%TZ | tee -a "$out/card.txt"
log() { tee -a "$out/results.txt"; }
# Runs a command unless the budget is spent; its output goes to results.txt.
row() {
  if (( SECONDS - start > budget )); then
    echo "skipped (budget spent): $*" | log
    return
  fi
  local env=""
  for v in GATESHIFT_TORCH_LAYERS GATESHIFT_CHANNELS_LAST GATESHIFT_FOLD_BN GATESHIFT_CONV_RELU GATESHIFT_DEVICE_ALL_REDUCE NVIDIA_TF32_OVERRIDE; do
    [ -n "${!v:-}" ] && env+="$v=${!v} "
  done
  echo "-- $env$*" | log
  timeout "${limit:-$row_s}" "$@" 2>&1 | log
}
model() { # backend arch temporal mode precision [extra...]
  local backend=$1 arch=$2 temporal=$3 mode=$4 precision=$5
  shift 5
  row "$bin" bench model --arch "$arch" --temporal "$temporal" --segments 8 --batch 32 --mode "$mode" \
    --precision "$precision" --backend "$backend" --warmup 3 --iters 10 "$@"
}
torch_ref() { # temporal mode precision [extra...]
  local temporal=$1 mode=$2 precision=$3
  shift 3
  row python3 scripts/torch_gpu_bench.py --temporal "$temporal" --mode "$mode" --precision "$precision" "$@"
}
echo "== 1. GSM module parity (official fixture), fused and composed" | log
for path in fused composed; do
  for backend in tch-cuda cuda; do
    row "$bin" check gsm-module device/gsm_module.safetensors --backend "$backend" --path "$path"
  done
done
# The whole network against flex: a training step (every gradient), then inference as `test`
# runs it (BN folded, fused GSM units, channels-last) in fp32 and bf16; TF32 off, so that fp32
# means fp32. Then the same with cuDNN's fused convolution + ReLU (GATESHIFT_CONV_RELU=1).
NVIDIA_TF32_OVERRIDE=0 row "$bin" check backend --backend tch-cuda --arch bninception --temporal gsm --bf16
GATESHIFT_CONV_RELU=1 NVIDIA_TF32_OVERRIDE=0 row "$bin" check backend --backend tch-cuda --arch bninception --temporal gsm --bf16
echo "== 2. target rows: BN-Inception, 8 segments, batch 32, bf16 (tch-cuda; PyTorch eager)" | log
# Defaults: libtorch conv/BN (torch_layers), channels-last, BN folded into convs in inference.
for mode in infer train; do
  for temporal in gsm none; do
    model tch-cuda bninception "$temporal" "$mode" bf16
  done
done
# The acceptance row still missing ("bench model works on every compiled backend"): one
# BN-Inception row on CubeCL cuda (kernel compilation in the first iteration), early so that
# the budget cannot skip it.
limit=${CUBE_ROW_S:-150} row "$bin" bench model --arch bninception --temporal gsm --segments 8 --batch 32 \
  --mode infer --precision fp32 --backend cuda --warmup 1 --iters 2
echo "== 2b. data-parallel training (bench model --devices): one rank per GPU; with one GPU two ranks share it (the route works; no scaling to read)" | log
gpus=$(nvidia-smi -L | wc -l)
devs=$(seq -s, -f "tch-cuda:%g" 0 $((gpus - 1)))
[ "$gpus" -lt 2 ] && devs="tch-cuda:0,tch-cuda:0"
# NCCL for the on-device gradient sum (src/ops/all_reduce/device.rs) is loaded as libnccl.so;
# the pip wheel ships libnccl.so.2 only.
nccl=$(ls "$(dirname "$torch_dir")"/nvidia/nccl/lib/libnccl.so.2 2>/dev/null | head -1)
if [ -n "$nccl" ]; then
  mkdir -p /tmp/nccl-lib && ln -sf "$nccl" /tmp/nccl-lib/libnccl.so && export LD_LIBRARY_PATH="/tmp/nccl-lib:$LD_LIBRARY_PATH"
fi
echo "nccl: ${nccl:-not found}" | log
row "$bin" bench model --arch bninception --temporal gsm --segments 8 --batch 16 --mode train \
  --warmup 2 --iters 5 --devices "$devs"
if [ "$gpus" -ge 2 ]; then
  # The same through host memory, and on CubeCL (burn's collective): the NCCL routes' gain.
  GATESHIFT_DEVICE_ALL_REDUCE=0 row "$bin" bench model --arch bninception --temporal gsm --segments 8 \
    --batch 16 --mode train --warmup 2 --iters 5 --devices "$devs"
  row "$bin" bench model --arch resnet18 --temporal tsm --segments 8 --batch 8 --mode train \
    --warmup 1 --iters 3 --devices "$(seq -s, -f "cuda:%g" 0 $((gpus - 1)))"
  # Correctness: one epoch of a small run on two GPUs, NCCL against host memory (losses and
  # accuracies should agree to float32 rounding).
  row "$bin" synth --out /tmp/dp-data --train-per-class 8 --val-per-class 2 --size 32
  for route in 1 0; do
    GATESHIFT_DEVICE_ALL_REDUCE=$route row "$bin" train --arch resnet-mini --temporal gsm --segments 4 \
      --epochs 1 --batch-size 4 --input-size 32 --scale-size 32 --workers 2 --seed 3 --dropout 0 \
      --freeze-bn --quiet --train-list /tmp/dp-data/train.txt --val-list /tmp/dp-data/val.txt \
      --devices tch-cuda:0,tch-cuda:1 --out /tmp/dp-run-$route
    cat /tmp/dp-run-$route/metrics.jsonl 2>&1 | log
  done
fi
# cuDNN's convolution with the bias and ReLU fused (off by default until measured here).
for temporal in gsm none; do
  GATESHIFT_CONV_RELU=1 model tch-cuda bninception "$temporal" infer bf16
done
# Where a training step's time goes (synchronised phases), with the flat clip + SGD of
# `Sgd::step_clipped` (the GPU default) and with the per-parameter one.
model tch-cuda bninception gsm train bf16 --phases --sgd flat
model tch-cuda bninception gsm train bf16 --phases --sgd per-param
# Each default turned off alone, on the GSM rows.
for mode in infer train; do
  GATESHIFT_CHANNELS_LAST=0 model tch-cuda bninception gsm "$mode" bf16
done
GATESHIFT_FOLD_BN=0 model tch-cuda bninception gsm infer bf16
for mode in infer train; do
  GATESHIFT_TORCH_LAYERS=0 model tch-cuda bninception gsm "$mode" bf16
done
for mode in infer train; do
  for temporal in gsm none; do
    torch_ref "$temporal" "$mode" bf16
    torch_ref "$temporal" "$mode" bf16 --channels-last
  done
done
# What the 10 GSM modules cost alone (fused against composed): GSM's overhead over TSN.
row "$bin" bench gsm --backend tch-cuda --batch 32 --mode infer --iters 10
row "$bin" bench gsm --backend tch-cuda --batch 32 --mode infer --iters 10 --precision bf16
echo "== 3. a whole training step against flex (logits, loss, every gradient), TF32 on; ResNet-18" | log
row "$bin" check backend --backend tch-cuda --arch bninception --temporal gsm
NVIDIA_TF32_OVERRIDE=0 row "$bin" check backend --backend tch-cuda --arch resnet18 --temporal tsm
echo "== 4. CubeCL cuda" | log
row "$bin" check backend --backend cuda --arch resnet18 --temporal tsm
row "$bin" bench gsm --backend cuda --batch 32 --mode train --iters 10
echo "== 5. the rest of the tch-cuda table" | log
for mode in infer train; do
  for temporal in gsm none; do
    model tch-cuda bninception "$temporal" "$mode" fp32
  done
  model tch-cuda bninception gsm "$mode" bf16 --gsm composed
  model tch-cuda resnet50 tsm "$mode" bf16
  model tch-cuda resnet50 tsm "$mode" fp32
  GATESHIFT_TORCH_LAYERS=0 model tch-cuda resnet50 tsm "$mode" bf16
done
for mode in infer train; do
  for temporal in gsm none; do
    torch_ref "$temporal" "$mode" fp32
  done
  # TSM ResNet-50 in PyTorch eager on the same card (scripts/torch_tsm_resnet.py's model).
  torch_ref tsm "$mode" bf16 --arch resnet50
done
row "$bin" bench gsm --backend tch-cuda --batch 32 --mode train --iters 10
echo "done in $((SECONDS - start)) s" | log
