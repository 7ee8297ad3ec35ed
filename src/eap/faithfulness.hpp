// Owns a cell's faithfulness (../shared/spec/circuits.md): from each batch's F per circuit, the
// cell's F (mean over batches) and its spread, the top-k curve F(k) and its area on a log-k axis.
// Plain data: the evaluation files (io/) and the runs (eap/evaluate.hpp) feed it, reports print it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace teap::eap {

// One batch's evaluation: per circuit its name, top-k's k (-1 for the others), edge count and F
// (NaN where the cell has no F).
struct BatchFaithfulness {
  std::vector<std::string> circuit;
  std::vector<int64_t> k, edges;
  std::vector<double> f;
};

struct CircuitFaithfulness {
  std::string name;
  int64_t k = -1, edges = 0;
  double f = 0;                 // mean over batches
  double spread = 0;            // standard deviation over batches (n - 1; 0 with one batch)
  std::vector<double> per_batch;
};

struct CellFaithfulness {
  std::vector<CircuitFaithfulness> circuits;  // in the evaluation's order
  std::vector<double> curve_k, curve_f;       // the top-k circuits, k ascending
  double auc = 0;                             // area under F(k) over log k, normalised (circuit.hpp)
  std::string no_faithfulness;                // why there is no F ("" when there is)
  int n_batches = 0;
  const CircuitFaithfulness* find(const std::string& name) const;
};

// The cell's faithfulness from its batches (every batch with the same circuits, in order); an
// InputError naming `where` when they disagree.
CellFaithfulness cell_faithfulness(const std::vector<BatchFaithfulness>& batches, const std::string& no_faithfulness,
                                   const std::string& where);

}  // namespace teap::eap
