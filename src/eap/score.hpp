// Owns the score matrix of one batch: two forward passes (corrupt, clean) and one backward pass
// to activations, then the contraction S[u,v] = sum (a_u_clean - a_u_corrupt) . dLD/dx_v as one
// matrix product per downstream layer. Sees the model only through its ActivationRecord.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "eap/graph.hpp"
#include "eap/method.hpp"
#include "eap/metric.hpp"

namespace teap::model {
struct Model;
}

namespace teap::eap {

struct BatchInput {
  int n_prompts = 0, n_positions = 0;
  std::vector<int64_t> clean_ids, corrupt_ids;        // [n_prompts * n_positions] row-major
  std::vector<int64_t> clean_answer, corrupt_answer;  // [n_prompts] the metric's token pair
  std::vector<int64_t> expected;  // [n_prompts] what the model should write (accuracy); empty: clean_answer
};

// Seconds spent in each phase of score_batch (for the benchmark).
struct ScoreProfile {
  double prefix = 0;  // the clean prompts' positions before the first corrupted one (run once)
  double clean_forward = 0, backward = 0, accuracy = 0, corrupt_forward = 0, differences = 0;
  double gradients = 0;    // building each downstream layer's gradients (the norm's VJP per head)
  double contraction = 0;  // the products of differences and gradients
  double interpolated_forward = 0;  // eap-ig-inputs: the forward passes of steps 1..m-1
};

// (clean, corrupt) answer token pairs that a metric averages each prompt's logit difference over.
struct MetricPairs {
  std::vector<int64_t> clean, corrupt;
};

// Buffers one score_batch call leaves to the next (eap/workspace.hpp): give the calls of a unit or
// of a batch's micro-batches the same one. Not for two threads at once.
struct ScoreWorkspace;
std::shared_ptr<ScoreWorkspace> make_workspace();

struct ScoreOptions {
  Method method = Method::Eap;
  int ig_steps = kDefaultIgSteps;  // eap-ig-inputs: the interpolation's steps m
  MetricPairing pairing = MetricPairing::Own;
  // pairing == Notebook: the pairs every prompt's logit difference is broadcast over, the answer
  // pairs of the cell's last batch (runner::notebook_metric_pairs); required in that mode, unused
  // otherwise. The batch's own pairs still give the recorded clean_ld / corrupt_ld (baselines).
  MetricPairs broadcast;
  ScoreProfile* profile = nullptr;  // filled when given
  // A rank group's share of one batch: S is multiplied by `weight` (n_prompts here / in the whole
  // batch) and handed to `sum_scores` (data, count, is_double, on_cuda) while still on its device,
  // so that the group adds its partial matrices there (NCCL on CUDA, MPI on the host).
  double weight = 1.0;
  std::function<void(void*, size_t, bool, bool)> sum_scores;
  std::shared_ptr<ScoreWorkspace> workspace;  // none: the call allocates its own buffers
  // > 0: the upstream differences are held for this many upstream layers at a time (the memory
  // plan's streaming when one prompt's [U, N, d] differences do not fit the budget), each pass
  // recomputing the gradients of the layers its rows feed; 0: all at once.
  int upstream_layers = 0;
};

// The method's score matrix of one batch (exact: eap/evaluate.hpp's exact_batch).
// Memory (eap): the upstream differences of the batch [n_upstream, B*P, d_model] (or of
// options.upstream_layers layers at a time) plus one downstream layer's gradients
// [3H+1, B*P, d_model] at a time, in float32 (float64 for a float64 model; bfloat16 for a bfloat16
// one), besides the two runs' activation records.
BatchScores score_batch(const model::Model& m, const Graph& g, const BatchInput& in, const ScoreOptions& options = {});

// One inference forward pass yielding the per-prompt logit differences of `ids` (the cost
// against which an EAP batch is measured); for Notebook, the own-paired ones (what it records).
std::vector<double> logit_diffs(const model::Model& m, const std::vector<int64_t>& ids, int n_prompts,
                                int n_positions, const std::vector<int64_t>& clean_answer,
                                const std::vector<int64_t>& corrupt_answer, MetricPairing pairing);

// Checks that a batch's shapes agree and every id is inside the model's vocabulary.
void check_batch(const model::Model& m, const BatchInput& in);
// Checks the options against the model: notebook pairing has its broadcast pairs, equal in
// number, inside the vocabulary.
void check_options(const model::Model& m, const ScoreOptions& options);

}  // namespace teap::eap
