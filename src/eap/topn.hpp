// Owns ranking: the top-n edges of one batch and the consistent edges of a cell (those in the
// top-n of every batch), as the notebook keeps them.
#pragma once

#include <vector>

#include "eap/graph.hpp"

namespace teap::eap {

struct Edge {
  int up = 0, down = 0;
  double score = 0;  // normalised; for consistent edges the mean over batches
};

// The n valid edges of largest |score| (or largest score when `signed_rank`), ties broken by
// (upstream index, downstream index). `scores` is [n_upstream * n_downstream], multiplied by
// `scale` (1 / (LD_clean - LD_corr)) before ranking.
std::vector<Edge> top_n(const Graph& g, const float* scores, double scale, int n, bool signed_rank);

// Edges in the top-n of every batch; score = mean over batches of the normalised score; sorted
// by |mean| descending (signed mean when `signed_rank`), same tie rule.
std::vector<Edge> consistent_edges(const Graph& g, const std::vector<const float*>& batch_scores, double scale,
                                   int n, bool signed_rank);

}  // namespace teap::eap
