#include "runner/memory_plan.hpp"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <mutex>

#include "model/bf16_native.hpp"

namespace teap::runner {
namespace {

double read_number_file(const char* path) {
  std::ifstream in(path);
  std::string s;
  if (!(in >> s) || s == "max") return 0;
  try {
    return std::stod(s);
  } catch (...) {
    return 0;
  }
}

double mem_available() {
  std::ifstream in("/proc/meminfo");
  std::string key, unit;
  double kb = 0;
  while (in >> key >> kb >> unit)
    if (key == "MemAvailable:") return kb * 1024.0;
  return 0;
}

}  // namespace

eap::WorkShape work_shape(const model::ModelConfig& c, const job::Settings& s) {
  eap::WorkShape w;
  w.n_layers = c.n_layers;
  w.n_heads = c.n_heads;
  w.n_kv_heads = c.n_kv_heads;
  w.d_model = c.d_model;
  w.d_head = c.d_head;
  w.d_mlp = c.d_mlp;
  w.vocab = c.vocab_size;
  w.activation_bytes = s.dtype == "bfloat16" ? 2 : 4;
  w.compute_bytes = 4;
  w.corrupt_with_gradients = s.method == "eap-ig-inputs" || s.method == "clean-corrupted";
  w.products_in_float32 = s.dtype == "bfloat16" && s.device == "cpu" && !model::bf16_products_native();
  return w;
}

namespace {

MemoryPlan finish(MemoryPlan p, const model::ModelConfig& c, const job::Settings& s, int64_t positions, int64_t suffix,
                  int ranks_on_node, int threads) {
  const eap::WorkShape w = work_shape(c, s);
  p.budget = rank_budget_bytes(s, ranks_on_node, p.weights_shared);
  if (s.memory_budget_bytes <= 0 && p.budget > 0) {
    // "auto" also stops where a larger working set buys no speed (auto_work_cap_bytes).
    const double cap = p.weights_private + auto_work_cap_bytes(w, positions, suffix, threads, p.prompts, p.weights_shared);
    p.budget = std::min(p.budget, cap);
  }
  p.one_prompt = eap::batch_work_bytes(w, 1, positions, suffix, 0, p.prompts);
  if (p.budget <= 0) {
    p.micro = p.prompts;
  } else {
    // Below one prompt's work, the contraction streams over upstream layers (eap/memory.hpp).
    const int64_t layers = eap::upstream_layers_per_pass(w, positions, suffix, p.budget - p.weights_private, p.prompts);
    p.upstream_layers = std::max<int64_t>(layers, 0);
    p.micro = layers < 0 ? 0 : eap::micro_batch_prompts(w, p.prompts, positions, suffix, p.budget - p.weights_private, p.upstream_layers);
    if (layers < 0) p.one_prompt = eap::batch_work_bytes(w, 1, positions, suffix, 1, p.prompts);  // the least it can do with
  }
  p.work = eap::batch_work_bytes(w, std::max<int64_t>(p.micro, 1), positions, suffix, p.upstream_layers, p.prompts);
  return p;
}

}  // namespace

double node_memory_bytes() {
  static std::once_flag once;
  static double bytes = 0;
  std::call_once(once, [] {
    bytes = mem_available();
    for (const char* limit : {"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}) {
      const double v = read_number_file(limit);
      if (v > 0 && v < 1e18) bytes = bytes > 0 ? std::min(bytes, v) : v;
    }
  });
  return bytes;
}

double rank_budget_bytes(const job::Settings& s, int ranks_on_node, double shared_weight_bytes) {
  if (s.memory_budget_bytes > 0) return s.memory_budget_bytes;
  if (s.device != "cpu" || node_memory_bytes() <= 0) return 0;
  return std::max(0.0, 0.9 * node_memory_bytes() - shared_weight_bytes) / std::max(1, ranks_on_node);
}

double auto_work_cap_bytes(const eap::WorkShape& w, int64_t positions, int64_t suffix, int threads, int64_t share,
                           double shared_weight_bytes) {
  const int64_t rows = kAutoRowsPerThread * (w.products_in_float32 ? kAutoRowsFactorThroughFloat32 : 1) * std::max(1, threads);
  const int64_t prompts = std::max<int64_t>(1, (rows + std::max<int64_t>(suffix, 1) - 1) / std::max<int64_t>(suffix, 1));
  return std::max({kAutoMinWorkBytes, eap::batch_work_bytes(w, prompts, positions, suffix, 0, share),
                   kAutoWorkShareOfWeights * shared_weight_bytes});
}

MemoryPlan plan_memory(const model::ModelConfig& c, int64_t parameters, double stored_bytes, const job::Settings& s,
                       int64_t prompts, int64_t positions, int64_t suffix, int ranks_on_node, int threads) {
  MemoryPlan p;
  p.prompts = prompts;
  const double run_bytes = double(parameters) * (s.dtype == "bfloat16" ? 2.0 : 4.0);
  if (s.device == "cpu") {
    const bool stored_as_run = std::abs(stored_bytes - run_bytes) < 0.01 * run_bytes;
    (stored_as_run || ranks_on_node > 1 ? p.weights_shared : p.weights_private) = run_bytes;
  }
  return finish(p, c, s, positions, suffix, ranks_on_node, threads);
}

MemoryPlan plan_memory_loaded(const model::ModelConfig& c, double weight_bytes, double mapped_bytes, const job::Settings& s,
                              int64_t prompts, int64_t positions, int64_t suffix, int ranks_on_node, int threads) {
  MemoryPlan p;
  p.prompts = prompts;
  if (s.device == "cpu") {
    p.weights_shared = mapped_bytes;
    p.weights_private = std::max(0.0, weight_bytes - mapped_bytes);
  }
  return finish(p, c, s, positions, suffix, ranks_on_node, threads);
}

std::string describe(const MemoryPlan& p, int ranks_on_node) {
  std::string s = "about " + eap::format_bytes(p.peak_resident()) + " resident per rank (" +
                  eap::format_bytes(p.peak_proportional(ranks_on_node)) + " of the node's memory with " +
                  std::to_string(ranks_on_node) + " rank(s)): weights " +
                  eap::format_bytes(p.weights_shared + p.weights_private) +
                  (p.weights_private > 0 ? " private" : p.weights_shared > 0 ? " mapped, shared by the node's ranks" : " (on the device)") +
                  ", work " + eap::format_bytes(p.work);
  if (p.micro > 0 && p.micro < p.prompts)
    s += " in micro-batches of " + std::to_string(p.micro) + " of the batch's " + std::to_string(p.prompts) + " prompts";
  else
    s += " for the batch of " + std::to_string(p.prompts) + " prompts";
  if (p.upstream_layers > 0)
    s += ", the contraction streaming over " + std::to_string(p.upstream_layers) + " upstream layer(s) at a time";
  s += p.budget > 0 ? "; budget " + eap::format_bytes(p.budget) + " per rank" : "; no budget";
  return s;
}

}  // namespace teap::runner
