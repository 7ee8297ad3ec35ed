// Timing helpers shared by the C++ benchmarks (header only).
#pragma once

#include <algorithm>
#include <chrono>

namespace teap::bench {

// Seconds on the monotonic clock.
inline double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// The fastest of `reps` runs of f, in seconds: the least disturbed by whatever else runs.
template <class F>
double best_of(int reps, F&& f) {
  double best = 1e30;
  for (int i = 0; i < reps; ++i) {
    const double t0 = now();
    f();
    best = std::min(best, now() - t0);
  }
  return best;
}

}  // namespace teap::bench
