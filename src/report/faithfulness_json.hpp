// Owns the `faithfulness` object of a cell's result JSON (docs/faithfulness.md): per circuit F,
// its spread over batches, per-batch values and edge count; the top-k curve and its area; which
// nodes were scored; why F is missing when it is. Plain data.
#pragma once

#include <nlohmann/json.hpp>

#include "eap/faithfulness.hpp"

namespace teap::report {

struct FaithfulnessContext {
  bool input_node = false, logits_node = false;  // the nodes the scoring graph had
  bool head_destinations = true;                 // false: downstream_heads = "none" (MLP destinations only)
  bool pruned = false;
  int top_n = 0;  // the top-n that made the consistent circuit
  int batches_evaluated = 0, n_batches = 0;
};

// Non-finite numbers (a cell without F) are written as null.
nlohmann::ordered_json faithfulness_json(const eap::CellFaithfulness& f, const FaithfulnessContext& c);

}  // namespace teap::report
