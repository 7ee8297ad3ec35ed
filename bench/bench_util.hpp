// What the C++ benchmarks share (header only): timing, and the random batch they score.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cstdint>

#include "eap/score.hpp"

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

// B seeded random prompts of P tokens, each corrupt copy differing in the token at `corrupt_at`,
// with fixed (clean, corrupt) answer pairs.
inline eap::BatchInput random_batch(int B, int P, int vocab, int corrupt_at = 11) {
  at::Generator gen = at::detail::createCPUGenerator(7);
  const at::Tensor ids = at::randint(0, vocab, {B, P}, gen, at::kLong);
  eap::BatchInput in;
  in.n_prompts = B;
  in.n_positions = P;
  in.clean_ids.assign(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + int64_t{B} * P);
  in.corrupt_ids = in.clean_ids;
  for (int i = 0; i < B; ++i) {
    in.corrupt_ids[i * P + corrupt_at] = (in.corrupt_ids[i * P + corrupt_at] + 1) % vocab;  // one word differs
    in.clean_answer.push_back((i * 7919) % vocab);
    in.corrupt_answer.push_back((i * 104729 + 13) % vocab);
  }
  return in;
}

}  // namespace teap::bench
