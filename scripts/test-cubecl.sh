#!/usr/bin/env bash
# Opt-in test tier for the CubeCL route (not in .ci/run: it is a second build of burn with
# the wgpu runtime, several minutes on 2 cores). Runs the fused GSM's CubeCL kernels
# (src/ops/gate_shift/cube.rs) — the ones `--features cuda` compiles for NVIDIA GPUs —
# through wgpu on whatever adapter the machine has; without a GPU that is Mesa's lavapipe
# (a Vulkan implementation on the CPU), installed here if missing. Checks them against the
# flex kernels and the official fixtures (GATESHIFT_TEST_BACKEND sets the parity tests' device).
#
#   scripts/test-cubecl.sh            # wgpu (lavapipe without a GPU)
#   FEATURES=cuda scripts/test-cubecl.sh   # on a machine with an NVIDIA GPU
set -euo pipefail
cd "$(dirname "$0")/.."
features=${FEATURES:-wgpu}
target=${CARGO_TARGET_DIR:-target-$features}
if [ "$features" = wgpu ] && ! ls /usr/share/vulkan/icd.d/lvp_icd.*.json >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -q && $sudo apt-get install -y -q mesa-vulkan-drivers libvulkan1
fi
backend=$features
CARGO_TARGET_DIR=$target cargo test --release --features "$features" --lib gsm_cube
# The official fixtures on this backend: GSM and GSF modules, whole-model logits and
# activations. (The fixtures' training steps are left out: on wgpu burn's convolution backward
# gets the first layer's weight gradient wrong, docs/FIDELITY.md; `check backend` shows it.)
GATESHIFT_TEST_BACKEND=$features CARGO_TARGET_DIR=$target cargo test --release --features "$features" \
  --test parity_gsm_module --test parity_gsf_module
GATESHIFT_TEST_BACKEND=$features CARGO_TARGET_DIR=$target cargo test --release --features "$features" \
  --test parity_models logits_and_activations
CARGO_TARGET_DIR=$target cargo build --release --features "$features"
fixture=${GATESHIFT_SHARED:-../shared}/fixtures/gsm_module.safetensors
for path in fused composed; do
  "$target/release/gateshift" check gsm-module "$fixture" --backend "$backend" --path "$path"
done
