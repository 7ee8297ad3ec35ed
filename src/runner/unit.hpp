// Owns the work of one cell and one batch index, free of scheduling: the prompt batch turned into
// model input, and the cell's result from its batches' scores (baselines, consistent edges).
#pragma once

#include <string>
#include <vector>

#include "eap/graph.hpp"
#include "eap/metric.hpp"
#include "eap/score.hpp"
#include "eap/topn.hpp"
#include "tinysql/batch.hpp"

namespace teap::runner {

// Model input of a prompt batch: inputs cut at the answer position, the metric's (clean,
// corrupt) word tokens, and the real answer token for accuracy.
eap::BatchInput batch_input(const tinysql::Batch& batch);

struct CellResult {
  eap::Baselines baselines;
  double clean_metric = 0, corrupt_metric = 0;  // mean over batches of the normalised metric
  double clean_accuracy = 0;                    // over all prompts of the cell
  int n_positions = 0;                          // of the last batch (all batches of a cell agree for GPT-2)
  std::vector<eap::Edge> edges;                 // consistent edges, normalised scores
};

// Baselines over all batches, then normalised consistent edges. A degenerate cell (LD_clean ==
// LD_corr) is an InputError carrying the numbers: nothing is normalised by zero.
CellResult reduce_cell(const eap::Graph& g, const std::vector<const eap::BatchScores*>& batches, int top_n,
                       bool signed_rank);

}  // namespace teap::runner
