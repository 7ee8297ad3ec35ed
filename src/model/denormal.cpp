#include "model/denormal.hpp"

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <dlfcn.h>
#include <omp.h>

#include <algorithm>
#include <atomic>

#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
#endif

namespace teap::model {

bool flush_denormals(bool on) {
  if (!at::globalContext().setFlushDenormal(on)) return false;
  // Every thread of a team this large runs the body once; libgomp keeps its threads for later
  // teams (LibTorch's intra-op regions and OpenBLAS's, whose count is its own), so each of them
  // gets the setting.
  int blas = 0;
  if (auto* get = reinterpret_cast<int (*)()>(::dlsym(RTLD_DEFAULT, "openblas_get_num_threads"))) blas = get();
  const int team = std::max({at::get_num_threads(), omp_get_max_threads(), blas, 1});
  std::atomic<bool> ok{true};
#pragma omp parallel num_threads(team)
  {
    if (!at::globalContext().setFlushDenormal(on)) ok = false;
  }
  return ok;
}

bool flushing_denormals() {
#if defined(__SSE__) || defined(__x86_64__)
  const unsigned csr = _mm_getcsr();
  return (csr & 0x8000u) && (csr & 0x0040u);  // FTZ and DAZ
#else
  return false;
#endif
}

}  // namespace teap::model
