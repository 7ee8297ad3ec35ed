// Owns running circuits on a batch and the `exact` scores (../shared/spec/circuits.md): the clean
// and corrupt runs once, then patched runs (model/patched.hpp) of many circuits at a time.
#pragma once

#include <cstdint>
#include <vector>

#include "eap/circuit.hpp"
#include "eap/score.hpp"

namespace teap::model {
struct Model;
}

namespace teap::eap {

struct EvaluateOptions {
  MetricPairing pairing = MetricPairing::Own;
  MetricPairs broadcast;  // notebook pairing: as ScoreOptions::broadcast
  // Circuits run together in one patched pass, bounded so that the pass's upstream differences
  // and per-head residual copies fit this many bytes (at least one circuit per pass).
  double memory_budget = 2.0 * (1 << 30);
};

struct BatchEvaluation {
  BatchScores runs;  // the clean and corrupt runs' LDs, top tokens and accuracy (no scores)
  // [circuits][n_prompts] each prompt's LD with the circuit run, under the pairing's recorded LD
  // (own-paired for notebook: the baselines' pairing, so F compares like with like).
  std::vector<std::vector<double>> circuit_ld;
};

// Runs every circuit (masks over evaluation_graph of the model's shape) on the batch's clean
// prompts with the corrupt run's activations patched in. Identical circuits run once; a circuit
// that keeps every edge is the clean run and is not recomputed.
BatchEvaluation evaluate_batch(const model::Model& m, const BatchInput& in, const std::vector<const Circuit*>& circuits,
                               const EvaluateOptions& options = {});

// method = exact: S[u,v] = M(all edges) - M(all but u -> v) for every edge of `g`, in the metric's
// raw units (mean LD over the batch), by one patched run per edge, many per pass.
BatchScores exact_batch(const model::Model& m, const Graph& g, const BatchInput& in, const ScoreOptions& options = {});

// How many circuits of this model and batch one pass holds within `budget` bytes.
int64_t circuits_per_pass(const model::Model& m, int64_t n_rows, double budget);

}  // namespace teap::eap
