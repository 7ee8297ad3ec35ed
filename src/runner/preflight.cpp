#include "runner/preflight.hpp"

#include <cstdio>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "eap/memory.hpp"
#include "model/hf_cache.hpp"
#include "model/model.hpp"
#include "runner/memory_plan.hpp"
#include "tinysql/batch.hpp"
#include "tokenizer/tokenizer.hpp"
#include "util/error.hpp"

namespace teap::runner {
namespace {

// Memory this machine has available now (MemAvailable), in bytes; 0 when unknown.
double available_memory_bytes() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  double kb = 0;
  std::string unit;
  while (in >> key >> kb >> unit)
    if (key == "MemAvailable:") return kb * 1024.0;
  return 0;
}

std::string gib(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f GiB", bytes / (1024.0 * 1024 * 1024));
  return buf;
}

// The first position where the clean and corrupt inputs differ: the batch's suffix starts there.
int first_difference(const tinysql::Example& e) {
  for (size_t i = 0; i < e.clean_input_ids.size(); ++i)
    if (e.clean_input_ids[i] != e.corrupt_input_ids[i]) return static_cast<int>(i);
  return static_cast<int>(e.clean_input_ids.size());
}

}  // namespace

PreflightResult preflight(const job::Job& job, const PreflightContext& ctx) {
  const job::Settings& s = job.settings;
  PreflightResult result;
  std::vector<std::string>& problems = result.problems;
  auto settings_key = [&](const char* key) { return job.path + ": settings." + key; };

  try {
    model::check_device(s.device);
  } catch (const InputError& e) {
    problems.push_back(settings_key("device") + ": " + e.what());
  }
  // The job's own count is bounded by the machine (a count from SLURM is the scheduler's business).
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (s.threads > cores)
    problems.push_back(settings_key("threads") + ": " + std::to_string(s.threads) + " threads per rank is more than this node's " +
                       std::to_string(cores) + " cores");

  // Each model and tokenizer once, however many cells use it.
  std::map<std::string, std::optional<model::CheckpointInfo>> models;
  std::map<std::string, std::optional<tokenizer::Tokenizer>> tokenizers;
  for (const auto& c : job.cells) {
    if (!models.count(c.weights)) {
      auto& m = models[c.weights];
      try {
        m = model::check_model(c.weights);
        result.weights_id[c.weights] = m->fingerprint;
      } catch (const InputError& e) {
        problems.push_back(c.weights_origin + ": " + e.what());
      }
    }
    // A tokenizer in a model folder already found missing is the same problem.
    const bool same_missing = models.count(c.tokenizer) && !models[c.tokenizer];
    if (!tokenizers.count(c.tokenizer) && !same_missing) {
      auto& t = tokenizers[c.tokenizer];
      try {
        t.emplace(tokenizer::Tokenizer::load(model::resolve_model_path(c.tokenizer)));
      } catch (const InputError& e) {
        problems.push_back(c.tokenizer_origin + ": " + e.what());
      }
    }
  }

  // Every cell generates an example (its batch 0's first prompt) that the model can take.
  std::set<std::string> checked_family;
  std::map<std::string, std::optional<std::pair<std::string, MemoryPlan>>> worst_plan;  // model -> (cell, plan)
  const int share = (s.batch_size + s.group_size - 1) / s.group_size;  // prompts per rank
  for (const auto& c : job.cells) {
    const auto found = tokenizers.find(c.tokenizer);
    if (found == tokenizers.end() || !found->second) continue;
    const auto& tok = found->second;
    tinysql::Batch b;
    try {
      b = tinysql::make_batch(*tok, c.prompts, s.seed, 0, 1);
    } catch (const InputError& e) {
      problems.push_back("cell " + c.id + ": cannot be generated: " + e.what());
      continue;
    }
    const auto& m = models[c.weights];
    if (!m || b.examples.empty()) continue;
    static const model::Family expected[] = {model::Family::GptNeo, model::Family::Qwen2, model::Family::Llama};
    if (!s.any_architecture && m->config.family != expected[c.model - 1] && checked_family.insert(c.weights).second)
      problems.push_back(c.weights_origin + ": " + m->path + " is a " + model::family_name(m->config.family) +
                         " checkpoint, but BM" + std::to_string(c.model) + " is " +
                         model::family_name(expected[c.model - 1]) +
                         " (models.md); set settings.any_architecture = true to use it anyway");
    const int P = b.input_length;
    if (P > m->config.max_positions) {
      problems.push_back("cell " + c.id + ": its prompts have " + std::to_string(P) + " tokens, more than " + c.weights +
                         "'s max_position_embeddings " + std::to_string(m->config.max_positions));
      continue;
    }
    const int S = P - first_difference(b.examples.front());
    const MemoryPlan plan = plan_memory(m->config, m->parameters, double(m->bytes), s, share, P, S, ctx.ranks_on_node,
                                        ctx.threads);
    auto& worst = worst_plan[c.weights];
    if (!worst || plan.peak_resident() > worst->second.peak_resident()) worst = std::make_pair(c.id, plan);
  }
  // Memory, model by model (a rank holds one model at a time): one prompt must fit the budget,
  // a pairing that needs the whole batch must have it, and the node's ranks together must fit
  // what the node has available now.
  const double available = available_memory_bytes();
  double worst_node = 0;
  std::string worst_model;
  for (const auto& [weights, cell_plan] : worst_plan) {
    const auto& [cell, p] = *cell_plan;
    result.memory.push_back(weights + ": " + describe(p, ctx.ranks_on_node));
    if (p.micro == 0) {
      problems.push_back(settings_key("memory_budget") + ": " + eap::format_bytes(p.budget) + " per rank is less than " +
                         weights + " needs for one prompt (cell " + cell + "): its work " + eap::format_bytes(p.one_prompt) +
                         " with the contraction streaming one upstream layer at a time" +
                         (p.weights_private > 0 ? " and the rank's private weights " + eap::format_bytes(p.weights_private)
                                                : std::string(" (the weights are mapped, shared by the node)")) +
                         "; raise memory_budget");
      continue;
    }
    if (p.micro < p.prompts && s.metric_pairing == "batch_broadcast")
      problems.push_back(settings_key("memory_budget") + ": " + eap::format_bytes(p.budget) + " per rank holds " +
                         std::to_string(p.micro) + " of a batch's " + std::to_string(p.prompts) + " prompts of " + weights +
                         ", but metric_pairing batch_broadcast needs the whole batch at once: raise memory_budget or lower batch_size");
    const double node = p.weights_shared + ctx.ranks_on_node * (p.weights_private + p.work);
    if (node > worst_node) worst_node = node, worst_model = weights;
  }
  if (s.device == "cpu" && available > 0 && worst_node > available)
    problems.push_back(settings_key("memory_budget") + ": " + worst_model + " needs about " + gib(worst_node) + " on this node (" +
                       std::to_string(ctx.ranks_on_node) + " rank(s), batches of " + std::to_string(s.batch_size) +
                       " prompts), " + gib(available) + " available: lower memory_budget (smaller micro-batches) or run fewer ranks");
  return result;
}

}  // namespace teap::runner
