// Internal to the runner's unit files (score_unit.cpp, evaluate_unit.cpp): what a rank keeps
// between units (its loaded model and tokenizer, the circuits of the cell it last evaluated) and
// the scoring graph a job's settings give. Includes LibTorch through the model.
#pragma once

#include <spdlog/spdlog.h>

#include <chrono>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "eap/circuit.hpp"
#include "eap/graph.hpp"
#include "eap/metric.hpp"
#include "eap/score.hpp"
#include "job/job.hpp"
#include "model/hf_cache.hpp"
#include "model/model.hpp"
#include "runner/run_unit.hpp"
#include "tokenizer/tokenizer.hpp"

namespace teap::runner {

// What an evaluation unit needs of its cell's scores: the baselines and the circuits (computed
// once per cell and rank, from every score unit of the cell).
struct CellCircuits {
  std::string key;  // cell id + evaluation hash
  eap::Baselines baselines;
  std::string no_faithfulness;  // why F is undefined ("" when it is)
  std::vector<eap::Circuit> circuits;
};

// Loaded models and tokenizers, kept while consecutive units use them.
struct Workspace {
  CellCircuits cell;  // the last evaluated cell's
  int ranks_on_node = 1;              // > 1: weights in another dtype are converted once per node
  std::set<std::string> told_micro;   // models whose micro-batches the log has described
  std::string key;
  std::optional<model::Model> model;
  std::optional<tokenizer::Tokenizer> tok;
  // The score units' buffers (eap/workspace.hpp), kept from one batch to the next: on CPU fresh
  // pages each batch would cost page faults. Sized by the micro-batch, so within the memory budget;
  // dropped with the model and before an evaluation unit, whose runs need the memory instead.
  std::shared_ptr<eap::ScoreWorkspace> buffers;

  void load(const job::Cell& c, const job::Settings& s) {
    const std::string k = c.weights + "|" + c.tokenizer + "|" + std::to_string(c.trim_vocab) + "|" + s.dtype + "|" + s.device;
    if (k == key) {
      spdlog::debug("model cache hit: {} already loaded for cell {}", c.weights, c.id);
      return;
    }
    if (!key.empty()) spdlog::debug("model cache miss: {} replaces the model loaded before", c.weights);
    buffers.reset();
    model.reset();
    tok.reset();
    key.clear();
    tok.emplace(tokenizer::Tokenizer::load(model::resolve_model_path(c.tokenizer)));
    model::LoadOptions lo;
    lo.dtype = s.dtype;
    lo.device = s.device;
    if (c.trim_vocab) lo.trim_vocab_to = tok->vocab_size();
    if (ranks_on_node > 1) lo.convert_cache = model::default_convert_cache();
    const auto t0 = std::chrono::steady_clock::now();
    model.emplace(model::load_model(c.weights, lo));
    spdlog::info("loaded {} ({} layers x {} heads) in {:.2f} s; {} MiB of weights mapped read-only{}{}", c.weights,
                 model->config.n_layers, model->config.n_heads,
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), model->mapped_bytes >> 20,
                 model->mapped_bytes ? " from " : " (private copies)", model->mapped_from);
    key = k;
  }
};

// The graph a job's settings score on, for model `m`.
inline eap::Graph scoring_graph(const job::Job& job, const model::Model& m) {
  eap::GraphOptions go;
  go.downstream_heads = eap::parse_downstream_heads(job.settings.downstream_heads, job.path);
  go.input_node = job.settings.input_node;
  go.logits_node = job.settings.logits_node;
  return eap::make_graph(m.config.n_layers, m.config.n_heads, go);
}

}  // namespace teap::runner
