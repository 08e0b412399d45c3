#!/usr/bin/env bash
# Opt-in fuzzing (not part of CI): each target for SECONDS (default 60) with cargo-fuzz.
# cargo-fuzz needs nightly compiler flags; RUSTC_BOOTSTRAP lets the stable toolchain accept them.
# Crashes land in fuzz/artifacts/<target>/; turn each into a regression test.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
export RUSTC_BOOTSTRAP=1
for target in list_parse pth_read frame_template format_detect image_header; do
  echo "fuzzing $target for ${seconds}s" >&2
  # Seeds (tiny valid files, fuzz/seeds/TARGET) start the search inside the formats.
  seeds=()
  [ -d "fuzz/seeds/$target" ] && seeds=("fuzz/seeds/$target")
  mkdir -p "fuzz/corpus/$target"
  cargo fuzz run "$target" "fuzz/corpus/$target" "${seeds[@]}" -- -max_total_time="$seconds" -rss_limit_mb=4096 -malloc_limit_mb=1024
done
