# Every third-party library comes from Debian 12's packages (scripts/setup.sh installs them).
# CUDA and NCCL are optional: found under /usr/local/cuda they enable the GPU code, else one line.

find_package(PkgConfig REQUIRED)
pkg_check_modules(PCRE2 REQUIRED IMPORTED_TARGET libpcre2-8)

find_path(UNISTRING_INCLUDE_DIR uninorm.h)
find_library(UNISTRING_LIBRARY unistring)
if(NOT UNISTRING_INCLUDE_DIR OR NOT UNISTRING_LIBRARY)
  message(FATAL_ERROR "libunistring not found: apt-get install libunistring-dev (scripts/setup.sh does)")
endif()
add_library(teap_unistring INTERFACE)
target_include_directories(teap_unistring INTERFACE ${UNISTRING_INCLUDE_DIR})
target_link_libraries(teap_unistring INTERFACE ${UNISTRING_LIBRARY})

find_package(nlohmann_json 3 REQUIRED)
find_package(CLI11 REQUIRED)
find_package(spdlog REQUIRED)
find_package(tomlplusplus REQUIRED)
find_package(Threads REQUIRED)
# Flush-to-zero on every thread of the OpenMP pool LibTorch and OpenBLAS share (model/denormal.cpp).
find_package(OpenMP REQUIRED COMPONENTS CXX)

find_package(Torch REQUIRED)
message(STATUS "LibTorch ${Torch_VERSION}")

find_package(MPI REQUIRED COMPONENTS C CXX)
set(HDF5_PREFER_PARALLEL TRUE)
find_package(HDF5 REQUIRED COMPONENTS C)
if(NOT HDF5_IS_PARALLEL)
  message(WARNING "HDF5 is not the MPI build; install libhdf5-openmpi-dev")
endif()

find_package(GTest)

set(TEAP_CUDA_ROOT "/usr/local/cuda" CACHE PATH "Where to look for the CUDA toolkit and NCCL")
find_path(TEAP_CUDA_INCLUDE cuda_runtime.h HINTS ${TEAP_CUDA_ROOT}/include NO_DEFAULT_PATH)
find_path(TEAP_NCCL_INCLUDE nccl.h HINTS ${TEAP_CUDA_ROOT}/include /usr/include)
find_library(TEAP_NCCL_LIBRARY nccl HINTS ${TEAP_CUDA_ROOT}/lib64 ${TEAP_CUDA_ROOT}/lib)
find_library(TEAP_CUDART_LIBRARY cudart HINTS ${TEAP_CUDA_ROOT}/lib64 ${TEAP_CUDA_ROOT}/lib)
if(TEAP_CUDA_INCLUDE AND TEAP_NCCL_INCLUDE AND TEAP_NCCL_LIBRARY AND TEAP_CUDART_LIBRARY)
  set(TEAP_HAVE_NCCL ON)
  message(STATUS "CUDA and NCCL found under ${TEAP_CUDA_ROOT}: NCCL all-reduce is built")
else()
  set(TEAP_HAVE_NCCL OFF)
  message(STATUS "CUDA/NCCL not found: building without NCCL (MPI all-reduce only)")
endif()
