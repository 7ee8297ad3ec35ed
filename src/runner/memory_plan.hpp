// Owns the rank's memory budget and what it means for a model (issue 17): how much of the
// weights the node shares, how many prompts a micro-batch holds, the estimated peak per rank.
// Used before work (preflight: a budget below one prompt's needs is an error; --dry-run prints
// the estimate per model) and by each score unit (its micro-batch size).
#pragma once

#include <cstdint>
#include <string>

#include "eap/memory.hpp"
#include "job/job.hpp"
#include "model/config.hpp"

namespace teap::runner {

// This node's memory for the sweep: the smaller of MemAvailable when first asked (cached for the
// process, so that weights loaded later do not shrink it) and the cgroup's memory limit; 0 when
// unknown.
double node_memory_bytes();

// What eap::batch_work_bytes needs of a model and a job's settings (dtype, method).
eap::WorkShape work_shape(const model::ModelConfig& c, const job::Settings& s);

// settings.memory_budget in bytes: what one rank may hold privately, its batch's work and any
// private weights (weights mapped read-only are the node's, counted once, not in any rank's
// budget). "auto": 90% of node_memory_bytes(), less the shared weights, divided among the node's
// ranks (0, no limit, when unknown or on CUDA). The plans below also cap "auto" by
// auto_work_cap_bytes.
double rank_budget_bytes(const job::Settings& s, int ranks_on_node, double shared_weight_bytes = 0);

// The "auto" budget's second bound on a rank's work on CPU (private weights come on top): the work
// of the fewest prompts whose suffix rows (prompts x corrupted positions) reach kAutoRowsPerThread
// per intra-op thread, and never less than kAutoMinWorkBytes. Why: on CPU the scoring's products
// (the runs' GEMMs, the backward pass, the contraction) are efficient at about a hundred rows per
// thread, each micro-batch streams every weight through the runs and the backward pass once, and a
// larger working set costs fresh pages (page faults, first touch) and cache misses; measured (one
// thread, one EAP batch of 30 prompts): BM2 float32 (bench_eap --micro N, 2026-12-02, docs/jobs.md)
// 33.4-36.8 s whole, 27.6 s in micro-batches of 8, 28.9-30.3 s of 4, 32.9 s of 3, 34.9 s of 2; BM3
// float32 (2026-12-03) 71.6 s in micro-batches of 3, 65.1 s of 6; BM3 bfloat16 38.7 s of 3, 32.9 s of
// 6, 33.6 s whole. Without this bound a batch of 30 never split and each rank's work (about twice
// the BM2 weights) made two ranks hold 1.69x one rank's memory (bench/bench_memory.py); with it
// each rank's work is a fraction of the weights the node's ranks share (the gated MLP keeps two of
// its four hidden tensors, model/gated_mlp.cpp, which is what lets float32 hold 128 rows per thread
// within that). kAutoMinWorkBytes keeps small models, whose whole batch is cheap, in whole batches
// (and their results bit-identical to an unsplit run).
constexpr int64_t kAutoRowsPerThread = 128;
// bfloat16 products through float32 (eap::WorkShape::products_in_float32) also convert every weight
// to float32 in each micro-batch's forward and backward pass: about 8 ms per 16M elements, what
// BM3's products take for some 17 rows, so there the rows are twice as many. Measured on an AVX2
// EPYC (one thread, one BM3 bfloat16 batch of 30 prompts, 24 corrupted positions, 2026-12-03):
// 104.5 s in micro-batches of 6 (128 rows per thread), 98.0-100.2 s of 8, 95.4 s of 11 (256 rows;
// the weights' conversions alone took 4.7 s of a batch in micro-batches of 8). The price: two ranks
// of such a node hold more beside the weights they share than in float32 or on an AVX-512 CPU.
constexpr int64_t kAutoRowsFactorThroughFloat32 = 2;
constexpr double kAutoMinWorkBytes = 256.0 * 1024 * 1024;
// Where the node's ranks share their weights, the cap is at least kAutoWorkShareOfWeights of the
// shared weights' bytes (estimated work; a larger micro-batch streams the weights fewer times). Why
// this share: a further rank on the node adds its runtime and work, and at 0.4 of the weights
// (eap::batch_work_bytes estimates 20-40% above the measured work) two ranks hold at most about
// 1.3x one rank's memory: bench/bench_memory.py, BM2 float32 (micro-batches of 6, 0.39 of the
// weights) 1.28. Measured on BM3 float32 (one thread, one batch of 30, 2026-12-03): 65.3 s in
// micro-batches of 6, 59.8 s of 10; the share gives it 8.
constexpr double kAutoWorkShareOfWeights = 0.4;
// `share`: the rank's share of a batch, whose prefix and logits every micro-batch's work includes
// (eap::batch_work_bytes; 0: the capped micro-batch itself).
double auto_work_cap_bytes(const eap::WorkShape& w, int64_t positions, int64_t suffix, int threads, int64_t share = 0,
                           double shared_weight_bytes = 0);

struct MemoryPlan {
  double weights_private = 0;  // bytes of weights only this rank holds
  double weights_shared = 0;   // bytes mapped read-only: one copy for the node's ranks
  double budget = 0;           // the rank's budget (0: none)
  int64_t prompts = 0;         // the rank's share of a batch
  int64_t micro = 0;           // prompts per micro-batch (== prompts when the batch fits; 0: not one fits)
  int64_t upstream_layers = 0; // > 0: not even one prompt's differences fit whole, so the contraction
                               // holds this many upstream layers' at a time (eap::ScoreOptions)
  double work = 0;             // estimated work of one micro-batch
  double one_prompt = 0;       // ... of one prompt
  // Estimated peak resident memory of the rank (shared weights counted whole, as RSS counts them)
  // and its proportional share (shared weights divided among the node's ranks). The budget bounds
  // weights_private + work.
  double peak_resident() const { return weights_private + weights_shared + work; }
  double peak_proportional(int ranks_on_node) const {
    return weights_private + weights_shared / std::max(1, ranks_on_node) + work;
  }
};

// `parameters` and `stored_bytes`: of the checkpoint's tensors (model::CheckpointInfo). On CPU the
// weights are shared when stored in the run's dtype (mapped) or when the node's ranks share a
// converted copy (ranks_on_node > 1); otherwise private (CUDA: on the device, none on the host).
// `threads`: the rank's intra-op threads (the "auto" budget's cap grows with them).
MemoryPlan plan_memory(const model::ModelConfig& c, int64_t parameters, double stored_bytes, const job::Settings& s,
                       int64_t prompts, int64_t positions, int64_t suffix, int ranks_on_node, int threads = 1);

// The same for a loaded model: its weights' bytes and how many of them are mapped are known.
MemoryPlan plan_memory_loaded(const model::ModelConfig& c, double weight_bytes, double mapped_bytes,
                              const job::Settings& s, int64_t prompts, int64_t positions, int64_t suffix,
                              int ranks_on_node, int threads = 1);

// One line for --dry-run: "about 7.7 GiB per rank (weights 4.6 GiB shared, ...)".
std::string describe(const MemoryPlan& p, int ranks_on_node);

}  // namespace teap::runner
