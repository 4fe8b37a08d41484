#!/usr/bin/env bash
# GPU check, in one go (about 5 to 10 minutes on a 16-core machine with one NVIDIA GPU):
#   1. finds a CUDA LibTorch: $Torch_DIR, else the one inside python3's torch package
#      (torch.utils.cmake_prefix_path), and refuses a CPU-only one;
#   2. configures ./build-gpu with the CUDA toolkit (cuSOLVER SVD; NCCL when c10d has it) and builds;
#   3. runs the *_CUDA tests, then every other test that takes under a minute (-L unit);
#   4. runs svd_bench (cuSOLVER on the device against the exact CPU SVD) and methods_bench (MLP).
# Output: build-gpu/gpu-check/*.txt, and everything is printed as it runs. Exit status: the first
# failing step's.
#
# Dependencies other than LibTorch and CUDA (HDF5 C/C++, Boost.Program_options, nlohmann_json, zlib,
# GoogleTest) come from the system, or from a prefix given as STRATA_DEPS_PREFIX (a folder with
# include/ and lib/ and their CMake files, e.g. Debian's -dev packages unpacked with dpkg-deb -x).
#   STRATA_DEPS_PREFIX=/opt/strata-deps scripts/gpu-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
out=build-gpu/gpu-check
step() { printf '\n== gpu-check: %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }

step "device"
command -v nvidia-smi >/dev/null || { echo "gpu-check: nvidia-smi not found: no NVIDIA driver on this machine" >&2; exit 2; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

step "LibTorch"
if [[ -z "${Torch_DIR:-}" ]]; then
  prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)' 2>/dev/null) ||
    { echo "gpu-check: set Torch_DIR, or install PyTorch with CUDA for python3" >&2; exit 2; }
  Torch_DIR="$prefix/Torch"
fi
[[ -f "$Torch_DIR/TorchConfig.cmake" ]] || { echo "gpu-check: no TorchConfig.cmake in Torch_DIR=$Torch_DIR" >&2; exit 2; }
python3 -c 'import torch, sys; print("torch", torch.__version__, "cuda", torch.version.cuda); sys.exit(0 if torch.version.cuda else 3)' ||
  { echo "gpu-check: python3's torch is a CPU-only build; a CUDA LibTorch is needed" >&2; exit 2; }
# The torch target carries its string ABI (-D_GLIBCXX_USE_CXX11_ABI) to everything linked with it;
# older PyTorch wheels use the pre-C++11 ABI, and then the C++ dependencies must have been built so too.
abi=$(python3 -c 'import torch; print(int(torch.compiled_with_cxx11_abi()))' 2>/dev/null || echo 1)
echo "Torch_DIR=$Torch_DIR (CXX11 ABI $abi)"
[[ "$abi" == 1 ]] || echo "gpu-check: warning: this LibTorch uses the pre-C++11 ABI; Debian's Boost and HDF5 C++ libraries will not link"

step "configure"
prefix_path="$Torch_DIR"
[[ -n "${STRATA_DEPS_PREFIX:-}" ]] && prefix_path="$STRATA_DEPS_PREFIX;$prefix_path"
cuda_root=${CUDA_HOME:-/usr/local/cuda}
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
cmake -S . -B build-gpu "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DSTRATA_WITH_CUDA=ON \
  -DSTRATA_BUILD_BENCH=ON -DCMAKE_PREFIX_PATH="$prefix_path" -DCUDAToolkit_ROOT="$cuda_root" | tee build-gpu.configure.txt | grep -E "strata:|CUDA|Torch" || true
grep -q "CUDA (cuSOLVER) backend: ON" build-gpu.configure.txt ||
  { echo "gpu-check: the CUDA toolkit (cuSOLVER) was not found under $cuda_root; set CUDA_HOME" >&2; exit 2; }
mkdir -p "$out"
mv build-gpu.configure.txt "$out/configure.txt"

step "build"
cmake --build build-gpu -j"$jobs" 2>&1 | tail -n 5

step "CUDA tests"
(cd build-gpu && ctest --output-on-failure -R '_CUDA' --timeout 300) 2>&1 | tee "$out/cuda-tests.txt"
grep -q "tests passed" "$out/cuda-tests.txt"

step "library tests (-L unit)"
(cd build-gpu && ctest --output-on-failure -L unit -j"$jobs" --timeout 300) 2>&1 | tail -n 15 | tee "$out/unit-tests.txt"

step "svd_bench"
timeout 240 build-gpu/bench/svd_bench --reps 10 2>&1 | tee "$out/svd_bench.txt"

step "methods_bench (MLP, batch 10 and 256, one thread)"
timeout 240 build-gpu/bench/methods_bench --batches 10,256 --examples 2000 2>&1 | grep -v ' done$' | tee "$out/methods_bench.txt"

step "done"
echo "gpu-check: results in $out/"
