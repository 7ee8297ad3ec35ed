// Internal to eap/: what every scoring method and the circuit evaluation share about a batch's
// runs: its ids as tensors, the metric's logit differences under a pairing, the common prefix of
// the clean and corrupt prompts, and the checks of what a run gave.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "eap/metric.hpp"
#include "eap/score.hpp"
#include "model/model.hpp"

namespace teap::eap {

at::Tensor as_tensor(const std::vector<int64_t>& v, int64_t rows, int64_t cols);
// One answer token id per prompt [B] (int64) on `device`: what logit_diff takes.
at::Tensor answer_tokens(const std::vector<int64_t>& ids, const c10::Device& device);
std::vector<int64_t> to_ids(const at::Tensor& t);
std::vector<double> to_vector(const at::Tensor& t);

// Per-prompt logit differences [B] from the final hidden state: `metric`, whose batch mean is
// differentiated (and which `exact` differences), and `recorded`, what a batch result keeps (the
// baselines' pairing).
struct LogitDiffs {
  at::Tensor metric, recorded;
};
LogitDiffs logit_diff(const model::Model& m, const at::Tensor& hidden, const at::Tensor& clean, const at::Tensor& corrupt,
                      MetricPairing pairing, const MetricPairs& broadcast = {});

// The first position at which some prompt's clean and corrupt ids differ, at most P - 1 (the
// last position is always computed: the metric reads it). Before it the two runs are equal.
int64_t first_difference(const BatchInput& in);

// Each prompt's top token from its last position's final-normed hidden state `last` [B, d]: one
// product with the unembedding. [B] ids on the model's device.
at::Tensor top_tokens(const model::Model& m, const at::Tensor& last);

// out.clean_top and out.clean_correct (the prompts whose top token is in.expected's, or else the
// clean answer) from the clean run's top tokens [B].
void record_clean_top(const BatchInput& in, const at::Tensor& top, BatchScores& out);

// A NaN or Inf from an overflowing activation would otherwise be stored as a done unit and ranked.
void check_finite(const model::Model& m, const std::vector<double>& v, const char* what);

// The corrupt run of method eap: positions [start, P) without gradients, `record` keeping only
// what the upstream differences read (model::ActivationRecord::upstream_only), its last layer at
// the last position only (last_position_only); `ld` its recorded logit differences (checked
// finite). Returns the final hidden state at the last position [B, 1, d].
at::Tensor corrupt_run(const model::Model& m, const BatchInput& in, const ScoreOptions& options, int64_t start,
                       const model::ActivationRecord* prefix, model::ActivationRecord& record, std::vector<double>& ld);

// The clean and corrupt runs of a batch without gradients, recorded over positions [start, P)
// (the common prefix run once into `prefix`), with what a BatchScores records of them: LDs, top
// tokens, clean accuracy.
struct PlainRuns {
  int64_t start = 0;
  model::ActivationRecord prefix, clean, corrupt;
  at::Tensor clean_tok, corrupt_tok;  // [B] the metric's answer tokens, on the model's device
  LogitDiffs clean_ld, corrupt_ld;
  const model::ActivationRecord* before() const { return start > 0 ? &prefix : nullptr; }
};
PlainRuns plain_runs(const model::Model& m, const BatchInput& in, MetricPairing pairing, const MetricPairs& broadcast,
                     BatchScores& out);

}  // namespace teap::eap
