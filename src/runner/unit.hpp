// Owns the work of one cell and one batch index, free of scheduling: the prompt batch turned into
// model input, and the cell's result from its batches' scores (baselines, consistent edges).
#pragma once

#include <string>
#include <vector>

#include "eap/graph.hpp"
#include "eap/metric.hpp"
#include "eap/score.hpp"
#include "eap/topn.hpp"
#include "io/unit_file.hpp"
#include "tinysql/batch.hpp"

namespace teap::runner {

// What a unit file holds of its batch's scores, moved out of the record (scores, logit
// differences, accuracy, top tokens): what reduce, status and the evaluation read back.
eap::BatchScores batch_scores_of(io::UnitRecord&& u);

// Model input of a prompt batch: inputs cut at the answer position, the metric's (clean,
// corrupt) word tokens, and the real answer token for accuracy.
eap::BatchInput batch_input(const tinysql::Batch& batch);

// The pairs that metric_pairing = notebook broadcasts every prompt of a cell over: the (clean,
// corrupt) answer tokens of the cell's last batch (index n_batches - 1), regenerated here (a batch
// is a pure function of tokenizer, cell, seed, index and size), so any rank scores any batch alone.
eap::MetricPairs notebook_metric_pairs(const tokenizer::Tokenizer& tok, const tinysql::CellSettings& cell, uint64_t seed,
                                       int n_batches, int batch_size);

// One batch's mean logit differences and their normalised metrics against the cell's baselines.
struct BatchValues {
  double clean_ld = 0, corrupt_ld = 0, clean_metric = 0, corrupt_metric = 0;
};

struct CellResult {
  eap::Baselines baselines;                     // the cell's LD_clean, LD_corr (eap::baselines with the pairing)
  double clean_metric = 0, corrupt_metric = 0;  // mean over batches of the normalised metric
  BatchValues last_batch;                       // the last batch's: what the notebook's JSON reported
  double clean_accuracy = 0;                    // over all prompts of the cell
  int n_positions = 0;                          // of the last batch (all batches of a cell agree for GPT-2)
  std::vector<eap::Edge> edges;                 // consistent edges, normalised scores
};

// Baselines over all batches, then normalised consistent edges. A degenerate cell (LD_clean ==
// LD_corr) is an InputError carrying the numbers: nothing is normalised by zero. `batches` are in
// batch order (the last one is the notebook's "last batch").
CellResult reduce_cell(const eap::Graph& g, const std::vector<const eap::BatchScores*>& batches, int top_n,
                       bool signed_rank, eap::MetricPairing pairing = eap::MetricPairing::Own);

}  // namespace teap::runner
