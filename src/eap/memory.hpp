// Owns the memory estimate of scoring one batch, and the micro-batch size that keeps it within a
// budget. Plain C++ (no LibTorch): the runner's checks before work use it without loading a model.
#pragma once

#include <cstdint>
#include <string>

namespace teap::eap {

// What the estimate needs of a model and a run.
struct WorkShape {
  int n_layers = 0, n_heads = 0, n_kv_heads = 0, d_model = 0, d_head = 0, d_mlp = 0, vocab = 0;
  int activation_bytes = 4;  // the run's dtype: 4 (float32), 2 (bfloat16), 8 (float64)
  int compute_bytes = 4;     // differences and gradients: 4, or 8 for a float64 run
  // eap-ig-inputs, clean-corrupted: the corrupt run (and the interpolated ones) take gradients, so
  // each micro-batch runs its own with a full record instead of sharing the batch's plain one.
  bool corrupt_with_gradients = false;
  // bfloat16 products through float32 (a CPU without native bfloat16 products, model/products.hpp):
  // each product also holds float32 copies of its operands and its result, and a weight's float32
  // copy lives in a buffer of up to 2^24 floats (64 MiB) kept per thread.
  bool products_in_float32 = false;
};

// Estimated peak bytes of score_batch's work on a micro-batch of `prompts` prompts of `positions`
// tokens, the last `suffix` of which differ between clean and corrupt, weights excluded: the clean
// run's activation record and autograd graph (and a gradient method's corrupt run's: WorkShape::
// corrupt_with_gradients), the upstream differences [L*(H+1), prompts*suffix, d],
// one layer's gradients [3H+1, prompts*suffix, d] and its temporaries; and what the micro-batches of
// a share of `share` prompts (0: `prompts`, one call) hold for the whole share: the common prefix's
// keys and values and the corrupt run's z and MLP outputs (each run once, without gradients), and
// the last position's full logits of both runs (found once).
// upstream_layers > 0: the differences of that many upstream layers at a time (streamed; 0: all).
double batch_work_bytes(const WorkShape& s, int64_t prompts, int64_t positions, int64_t suffix, int64_t upstream_layers = 0,
                        int64_t share = 0);

// The largest number of prompts, at most `prompts` (the share), whose work fits `budget_bytes`;
// 0 when not even one prompt does.
int64_t micro_batch_prompts(const WorkShape& s, int64_t prompts, int64_t positions, int64_t suffix, double budget_bytes,
                            int64_t upstream_layers = 0);

// How many upstream layers' differences one pass of the contraction holds when a share of `share`
// prompts is scored one prompt at a time: 0 (all of them, no streaming) when that work fits
// `budget_bytes`, else the most layers for which it fits (each further pass recomputes the
// gradients of the layers its rows feed), or -1 when not even one layer at a time fits.
int64_t upstream_layers_per_pass(const WorkShape& s, int64_t positions, int64_t suffix, double budget_bytes,
                                 int64_t share = 1);

// Sizes a user writes: "12GiB", "800MiB", "1.5 GB", "auto" is not one. Units KiB MiB GiB TiB
// (1024-based) and KB MB GB TB (1000-based), B or none for bytes. nullopt-like -1 when unparsable.
double parse_bytes(const std::string& text);
std::string format_bytes(double bytes);  // "1.5 GiB", "800.0 MiB"

}  // namespace teap::eap
