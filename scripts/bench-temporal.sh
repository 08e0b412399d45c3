#!/bin/bash
# The temporal modules on ResNet-50 against TSN (docs/PERFORMANCE.md), paired: per module and
# mode, TSN is timed right before the module, and the pair's ratio is printed, so that a VM
# whose speed drifts over minutes still gives comparable figures.
# Usage: scripts/bench-temporal.sh [BINARY] [MODULES...]   (after `cargo build --release`)
set -euo pipefail
bin=${1:-target/release/gateshift}
shift || true
modules=${*:-tsm gsm gsf csn r2plus1d mfnet gst}
median() { "$bin" bench model --arch resnet50 --temporal "$1" --mode "$2" --warmup 1 --iters 5 2>&1 |
  grep -o "median [0-9.]*" | cut -d' ' -f2; }
for m in $modules; do
  for mode in train infer; do
    tsn=$(median none "$mode")
    ms=$(median "$m" "$mode")
    echo "$m $mode: $ms ms, TSN $tsn ms, $(awk -v a="$ms" -v b="$tsn" 'BEGIN { printf "%+.0f%%", 100 * a / b - 100 }')"
  done
done
