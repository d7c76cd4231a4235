#!/usr/bin/env bash
# GPU check of the pulsed-update kernels, for a machine with a CUDA GPU: builds the CPU and CUDA FFI
# modules of this checkout, then runs benchmarks/gpu_check.py (CUDA vs CPU kernel for every device
# kind and mode on the same keys; timings at 512^2 and 4096^2 with batches 64 and 256; table + JSON).
#
#   benchmarks/gpu_check.sh [--out FILE] [--repeats N] [--skip-timing]
#
# Needs: python with jax + jaxlib and a CUDA backend for jax (jax[cuda12] / jax[cuda13]), cmake,
# nvcc, nanobind (pip) — no network. Environment: PYTHON (default python3), BUILD_DIR (default
# build-gpu-check in the repository), CUDA_ARCHS (default: the GPU's own, from nvidia-smi, else
# "80-real;90"). The package is staged next to the built modules and imported from there, so
# nothing is installed.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
py=${PYTHON:-python3}
build=${BUILD_DIR:-$repo/build-gpu-check}
pyexe=$("$py" -c 'import sys; print(sys.executable)')

archs=${CUDA_ARCHS:-}
if [ -z "$archs" ] && command -v nvidia-smi >/dev/null 2>&1; then
  cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')
  [ -n "$cc" ] && archs="$cc"
fi
archs=${archs:-"80-real;90"}

echo "== build (CUDA architectures $archs) in $build"
t=$SECONDS
cmake -S "$repo" -B "$build" -DCMAKE_BUILD_TYPE=Release -DRPUJAX_CUDA=ON \
  -DRPUJAX_CUDA_ARCHITECTURES="$archs" -DPython_EXECUTABLE="$pyexe" >"$build.cmake.log" 2>&1 \
  || { cat "$build.cmake.log"; exit 1; }
cmake --build "$build" -j"$(nproc)" 2>&1 | tail -3
echo "   ($((SECONDS - t)) s)"

stage="$build/stage"
rm -rf "$stage"
mkdir -p "$stage"
cp -r "$repo/rpujax" "$stage/"
find "$stage" -name '__pycache__' -prune -exec rm -rf {} +
cp "$build"/_ffi_cpu*.so "$build"/_ffi_cuda*.so "$stage/rpujax/"

echo "== check"
mkdir -p "$repo/benchmarks/results"
cd "$repo"
PYTHONPATH="$stage" "$pyexe" -c 'import rpujax, rpujax._ffi_cuda as m; print("rpujax from", rpujax.__file__, "| CUDA module", m.build_info())'
PYTHONPATH="$stage" "$pyexe" "$repo/benchmarks/gpu_check.py" "$@"
