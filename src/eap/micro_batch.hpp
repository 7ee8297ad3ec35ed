// Owns scoring a batch in micro-batches: the metric is a mean over prompts, so the score matrix
// of a batch is the prompt-weighted sum of its parts' matrices (equal up to float order), and a
// batch whose work does not fit the memory budget is scored part by part.
#pragma once

#include "eap/score.hpp"

namespace teap::eap {

// Prompts [lo, hi) of a batch.
BatchInput prompts_of(const BatchInput& in, int lo, int hi);

// score_batch on `in` in parts of at most `max_prompts` prompts (balanced: 30 by 8 is 8, 8, 7, 7;
// max_prompts <= 0 or >= the batch: one call, exactly score_batch). Each part's matrix is weighted
// by its share of the prompts (times options.weight) and the parts are added where score_batch
// would have left the matrix, on the model's device, in its compute type; options.sum_scores (a
// rank group's sum) is then called once with the total, as score_batch calls it. Per-prompt
// results (LDs, top tokens) are concatenated and accuracy counts added. metric_pairing
// batch_broadcast averages over the whole batch's pairs: split, it is an InputError.
BatchScores score_in_micro_batches(const model::Model& m, const Graph& g, const BatchInput& in, const ScoreOptions& options,
                                   int max_prompts);

}  // namespace teap::eap
