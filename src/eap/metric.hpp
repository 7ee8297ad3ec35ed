// Owns the metric: per-prompt logit differences, the cell's baselines, the normalised metric,
// and the per-batch result that scoring produces and the reducer consumes (plain data, no LibTorch).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace teap::eap {

// "own": prompt i uses its own (clean, corrupt) answer tokens. "batch_broadcast": the notebook's
// indexing broadcast, prompt i's difference averaged over the answer pairs of every prompt of the batch.
// "notebook": what the notebook computed (../shared/spec/eap.md, metric_pairing): every prompt of
// every batch scored against the broadcast over the answer pairs of the cell's *last* batch (its
// `metric` bound `examples` when defined), baselines own-paired (mean over batches of each batch's
// mean), and its JSON's logit differences and metrics those of the last batch.
enum class MetricPairing { Own, BatchBroadcast, Notebook };
MetricPairing parse_metric_pairing(const std::string& s, const std::string& where);
std::string to_string(MetricPairing p);

struct BatchScores {
  int n_upstream = 0, n_downstream = 0;
  int n_prompts = 0, n_positions = 0;
  std::vector<float> scores;       // [n_upstream * n_downstream] raw S_b = dLD/dx (mean over prompts), 0 off-edge
  // [n_prompts] LD_i of the clean and corrupt runs: under the pairing's metric for own and
  // batch_broadcast; own-paired for notebook (what its baselines use; the scores are gradients of
  // the broadcast over the last batch's pairs, which these do not record).
  std::vector<double> clean_ld;
  std::vector<double> corrupt_ld;
  int clean_correct = 0;           // prompts whose top clean prediction is the clean answer
  // [n_prompts] each run's top token at the last position (empty when not recorded: old files).
  std::vector<int64_t> clean_top, corrupt_top;
  double clean_accuracy() const { return n_prompts ? double(clean_correct) / n_prompts : 0.0; }
};

// LD_clean and LD_corr: means over every prompt of the cell (all its batches).
struct Baselines {
  double clean_ld = 0, corrupt_ld = 0;
  int n_prompts = 0;
  double denominator() const { return clean_ld - corrupt_ld; }
  // The normalisation divides by LD_clean - LD_corr; a cell where that vanishes has no scores.
  bool degenerate() const;
  std::string describe() const;  // "LD_clean = 1.2, LD_corr = 1.2"
};

Baselines baselines(const std::vector<const BatchScores*>& batches);
// The pairing's baselines: for notebook, the mean over batches of each batch's mean LD (as the
// notebook averaged its per-batch means); otherwise `baselines`. Equal when batches are equal in size.
Baselines baselines(const std::vector<const BatchScores*>& batches, MetricPairing pairing);

// M of one batch: mean_i (LD_i - LD_corr) / (LD_clean - LD_corr).
double normalised_metric(const std::vector<double>& ld, const Baselines& b);

}  // namespace teap::eap
