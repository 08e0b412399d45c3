#!/usr/bin/env bash
# GSM-EfficientNet-Lite0 on the synth time-reversal pairs, from ImageNet weights vs from
# random init, same data, recipe and epochs (the comparison in docs/PRETRAINED.md).
# Usage: scripts/lite0_init_compare.sh [OUT_DIR]   (about 40 minutes on 2 cores)
set -euo pipefail
out=${1:-runs/lite0-init}
bin=target/release/gateshift
cargo build --release --quiet
$bin assets fetch efficientnet-lite0
weights="${GATESHIFT_CACHE:-$HOME/.cache/gateshift}/assets/efficientnet-lite0/efficientnet-lite0-57934424.safetensors"
[ -d "$out/data" ] || $bin synth --out "$out/data" --pairs 3 --train-per-class 40 --val-per-class 15 --size 96 --seed 7
common=(--arch efficientnet-lite0 --temporal gsm --segments 4 --dropout 0
  --train-list "$out/data/train.txt" --val-list "$out/data/val.txt" --class-names "$out/data/classes.txt"
  --input-size 96 --scale-size 96 --flip-swap 0:1 --epochs 12 --batch-size 8 --lr 0.01 --warmup-epochs 0
  --eval-every 1 --seed 0 --workers 2)
for init in imagenet random; do
  run="$out/$init"
  if [ -f "$run/last.safetensors" ]; then
    $bin train --resume "$run"
  elif [ $init = imagenet ]; then
    $bin train "${common[@]}" --init "$weights" --partial --out "$run"
  else
    $bin train "${common[@]}" --out "$run"
  fi
done
for init in imagenet random; do
  echo "== $init"; tail -n 5 "$out/$init/metrics.jsonl"
done
