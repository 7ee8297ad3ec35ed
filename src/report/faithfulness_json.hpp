// Owns the `faithfulness` object of a cell's result JSON (docs/faithfulness.md): per circuit F,
// its spread over batches, per-batch values and edge count; the top-k curve and its area; which
// nodes were scored; why F is missing when it is. Plain data.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "eap/faithfulness.hpp"

namespace teap::report {

struct FaithfulnessContext {
  bool input_node = false, logits_node = false;  // the nodes the scoring graph had
  bool head_destinations = true;                 // false: downstream_heads = "none" (MLP destinations only)
  bool pruned = false;
  int top_n = 0;  // the top-n that made the consistent circuit
  int batches_evaluated = 0, n_batches = 0;
  // Said as "note" when not empty: e.g. that the evaluated consistent circuit used the job's top_n
  // while the file's edges were reduced with another (reduce --top-n, --signed).
  std::string note;
};

// Non-finite numbers (a cell without F) are written as null.
nlohmann::ordered_json faithfulness_json(const eap::CellFaithfulness& f, const FaithfulnessContext& c);

// A cell whose evaluation is not complete: how many batches are there, which are missing or
// failed, and "incomplete" saying so; no circuit, curve or area, so that nothing half-computed
// reads as the cell's F.
nlohmann::ordered_json faithfulness_incomplete_json(const FaithfulnessContext& c, const std::vector<int>& missing,
                                                    const std::vector<int>& failed);

// Batch numbers as text: {2, 3, 4, 5, 9} -> "2, 3-5, 9" (sorted input).
std::string ranges(const std::vector<int>& xs);

}  // namespace teap::report
