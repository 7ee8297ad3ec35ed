#!/usr/bin/env bash
# Run THERE (the GPU machine: no package manager, no network; a venv with PyTorch + CUDA, nvcc,
# cmake, ninja): unpacks the bundle's Debian packages into a private prefix with dpkg -x and builds
# against the venv's LibTorch (CUDA, C++11 ABI) and the NCCL that comes with it.
#
#   scripts/gpu/build.sh [--bundle DIR] [--prefix DIR] [--build DIR] [--python PY]
#                        [--torch-cmake DIR] [--cuda-root DIR|none] [--jobs N] [--targets "T..."]
#
#   --bundle       what scripts/gpu/bundle.sh wrote here (default .gpu-bundle)
#   --prefix       where the packages are unpacked (default .gpu-prefix; unpacked once, reused)
#   --build        build folder (default build-gpu)
#   --python       the Python that holds torch (default: $TEAP_PYTHON, else python3 on PATH)
#   --torch-cmake  LibTorch's CMake folder (default: that Python's torch.utils.cmake_prefix_path)
#   --cuda-root    the CUDA toolkit (default: two levels above nvcc); 'none' builds without NCCL
#   --targets      what to build (default: "all bench_eap": everything, tests and the benchmark)
#
# On the Debian build machine the same script builds against Debian's LibTorch:
#   scripts/gpu/build.sh --torch-cmake /usr/lib/x86_64-linux-gnu/cmake --cuda-root none --build build-gpu-test
# scripts/gpu/env.sh (sourced) sets the variables the programs need to run from the prefix.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bundle="$root/.gpu-bundle"
prefix="$root/.gpu-prefix"
build="$root/build-gpu"
python=${TEAP_PYTHON:-python3}
torch_cmake=""
cuda_root=""
jobs=$(nproc 2>/dev/null || echo 2)
targets="all bench_eap"
while (($#)); do
  case $1 in
    --bundle) bundle=${2:?--bundle needs a folder}; shift 2 ;;
    --prefix) prefix=${2:?--prefix needs a folder}; shift 2 ;;
    --build) build=${2:?--build needs a folder}; shift 2 ;;
    --python) python=${2:?--python needs a program}; shift 2 ;;
    --torch-cmake) torch_cmake=${2:?--torch-cmake needs a folder}; shift 2 ;;
    --cuda-root) cuda_root=${2:?--cuda-root needs a folder or none}; shift 2 ;;
    --jobs) jobs=${2:?--jobs needs a number}; shift 2 ;;
    --targets) targets=${2:?--targets needs names}; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "gpu-build: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[[ $jobs =~ ^[1-9][0-9]*$ ]] || { echo "gpu-build: --jobs must be a positive number, not '$jobs'" >&2; exit 2; }
[ -d "$bundle/debs" ] || { echo "gpu-build: $bundle/debs not found (run scripts/gpu/bundle.sh here and carry .gpu-bundle)" >&2; exit 2; }
command -v cmake >/dev/null || { echo "gpu-build: cmake not found" >&2; exit 1; }
t0=$(date +%s)

# --- 1. the private prefix ------------------------------------------------------------------------
mkdir -p "$prefix"
prefix=$(cd "$prefix" && pwd)
stamp="$prefix/.unpacked-$(ls "$bundle/debs" | md5sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  n=0
  for deb in "$bundle"/debs/*.deb; do
    if command -v dpkg >/dev/null; then
      dpkg -x "$deb" "$prefix"
    else  # no dpkg: a .deb is an ar archive whose data.tar.* holds the files
      member=$(ar t "$deb" | grep '^data\.tar') || { echo "gpu-build: $deb: no data.tar member" >&2; exit 1; }
      case $member in
        *.xz) ar p "$deb" "$member" | tar -xJ -C "$prefix" ;;
        *.zst) ar p "$deb" "$member" | zstd -dc | tar -x -C "$prefix" ;;
        *.gz) ar p "$deb" "$member" | tar -xz -C "$prefix" ;;
        *) ar p "$deb" "$member" | tar -x -C "$prefix" ;;
      esac
    fi
    n=$((n + 1))
  done
  touch "$stamp"
  echo "gpu-build: $n packages unpacked into $prefix"
fi
# shellcheck source=env.sh
source "$root/scripts/gpu/env.sh" "$prefix"

# --- 2. LibTorch, CUDA, NCCL ----------------------------------------------------------------------
if [ -z "$torch_cmake" ]; then
  command -v "$python" >/dev/null || { echo "gpu-build: $python not found (--python or --torch-cmake)" >&2; exit 2; }
  torch_cmake=$("$python" -c 'import torch.utils; print(torch.utils.cmake_prefix_path)') ||
    { echo "gpu-build: $python cannot import torch (--python or --torch-cmake)" >&2; exit 2; }
fi
[ -d "$torch_cmake" ] || { echo "gpu-build: --torch-cmake $torch_cmake is not a folder" >&2; exit 2; }
cuda_args=()
if [ "$cuda_root" != none ]; then
  if [ -z "$cuda_root" ]; then
    nvcc=$(command -v nvcc || true)
    [ -n "$nvcc" ] || for d in /usr/local/cuda /usr/local/cuda-13.0; do [ -x "$d/bin/nvcc" ] && nvcc=$d/bin/nvcc && break; done
    [ -n "$nvcc" ] || { echo "gpu-build: nvcc not found (put it on PATH, or --cuda-root DIR, or --cuda-root none)" >&2; exit 2; }
    cuda_root=$(cd "$(dirname "$(readlink -f "$nvcc")")/.." && pwd)
  fi
  [ -f "$cuda_root/include/cuda_runtime.h" ] || { echo "gpu-build: $cuda_root/include/cuda_runtime.h not found (--cuda-root)" >&2; exit 2; }
  # NCCL: the one LibTorch loads (the venv's nvidia-nccl wheel ships libnccl.so.2 without libnccl.so).
  nccl_h=""; nccl_so=""
  site=$(cd "$torch_cmake/../../.." 2>/dev/null && pwd || true)  # .../site-packages
  for d in "$site/nvidia" "$cuda_root" /usr; do
    [ -d "$d" ] || continue
    [ -n "$nccl_h" ] || nccl_h=$(find "$d" -name nccl.h -path '*include*' 2>/dev/null | head -1)
    [ -n "$nccl_so" ] || nccl_so=$(find "$d" \( -name libnccl.so -o -name 'libnccl.so.[0-9]*' \) 2>/dev/null | sort | head -1)
  done
  cudart=$(find "$cuda_root"/lib64/ "$cuda_root"/lib/ "$cuda_root"/targets/*/lib/ -maxdepth 1 -name 'libcudart.so*' 2>/dev/null | sort | head -1 || true)
  cuda_args=(-DTEAP_CUDA_ROOT="$cuda_root" -DCUDAToolkit_ROOT="$cuda_root" -DCMAKE_CUDA_COMPILER="$cuda_root/bin/nvcc")
  [ -n "$nccl_h" ] && cuda_args+=(-DTEAP_NCCL_INCLUDE="$(dirname "$nccl_h")")
  [ -n "$nccl_so" ] && cuda_args+=(-DTEAP_NCCL_LIBRARY="$nccl_so")
  [ -n "$cudart" ] && cuda_args+=(-DTEAP_CUDART_LIBRARY="$cudart")
  export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
  echo "gpu-build: CUDA $cuda_root, NCCL ${nccl_so:-not found} (${nccl_h:-no nccl.h}), cudart ${cudart:-not found}"
else
  cuda_args=(-DTEAP_CUDA_ROOT="$prefix/no-cuda")
fi

# --- 3. configure and build ---
# HDF5: Debian's h5pcc wrapper names /usr and link flags (-lcurl ...) that need -dev symlinks; a
# wrapper that fails makes FindHDF5 take the include folder and library given here instead.
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
want_gen=${gen[1]:-Unix Makefiles}
if [ -f "$build/CMakeCache.txt" ] && ! grep -q "^CMAKE_GENERATOR:INTERNAL=$want_gen\$" "$build/CMakeCache.txt"; then
  rm -rf "$build/CMakeCache.txt" "$build/CMakeFiles"  # made with another generator
fi
arch=x86_64-linux-gnu
libdirs="$prefix/usr/lib/$arch:$prefix/usr/lib/$arch/openmpi/lib:$prefix/usr/lib/$arch/hdf5/openmpi"
mkdir -p "$build"
cmake -S "$root" -B "$build" "${gen[@]}" -U "HDF5_*" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_PREFIX_PATH="$prefix/usr;$torch_cmake" \
  -DCMAKE_LIBRARY_ARCHITECTURE=$arch \
  -DPKG_CONFIG_EXECUTABLE="$prefix/usr/bin/pkgconf" \
  -DMPI_C_COMPILER="$prefix/usr/bin/mpicc.openmpi" -DMPI_CXX_COMPILER="$prefix/usr/bin/mpicxx.openmpi" \
  -DMPIEXEC_EXECUTABLE="$prefix/usr/bin/mpirun.openmpi" \
  -DHDF5_C_COMPILER_EXECUTABLE="$(command -v false)" \
  -DHDF5_C_INCLUDE_DIR="$prefix/usr/include/hdf5/openmpi" \
  -DHDF5_hdf5_LIBRARY_RELEASE="$prefix/usr/lib/$arch/hdf5/openmpi/libhdf5.so" \
  -DUNISTRING_INCLUDE_DIR="$prefix/usr/include" -DUNISTRING_LIBRARY="$prefix/usr/lib/$arch/libunistring.so" \
  -DTEAP_REFERENCE_PYTHON="$(command -v "$python" || echo "$python")" \
  -DCMAKE_EXE_LINKER_FLAGS="-Wl,-rpath-link,$libdirs" \
  "${cuda_args[@]}" >"$build/configure.log" 2>&1 || { tail -40 "$build/configure.log"; echo "gpu-build: configure failed ($build/configure.log)" >&2; exit 1; }
grep -E "LibTorch|CUDA|NCCL|MPI|HDF5" "$build/configure.log" | grep -v "^--   " || true
# Every third-party library must come from the prefix (or LibTorch's folder), not a system copy.
stray=$(grep -E '^(PCRE2_LINK_LIBRARIES|UNISTRING_LIBRARY|MPI_mpi_LIBRARY|HDF5_hdf5_LIBRARY_RELEASE|spdlog_DIR|fmt_DIR|tomlplusplus_DIR|CLI11_DIR|nlohmann_json_DIR|GTest_DIR)[:=]' \
  "$build/CMakeCache.txt" | grep -v "$prefix" || true)
if [ -n "$stray" ]; then
  echo "gpu-build: found outside $prefix:" >&2; echo "$stray" >&2; exit 1
fi
# shellcheck disable=SC2086
cmake --build "$build" -j "$jobs" ${targets:+--target $targets}
echo "gpu-build: built in $build in $(($(date +%s) - t0)) s (prefix $prefix, LibTorch from $torch_cmake)"
