#include "runner/preflight.hpp"

#include <cstdio>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "model/hf_cache.hpp"
#include "model/model.hpp"
#include "tinysql/batch.hpp"
#include "tokenizer/tokenizer.hpp"
#include "util/error.hpp"

namespace teap::runner {
namespace {

// Estimated peak bytes of one EAP batch of B prompts of P tokens, the last S of which differ
// between clean and corrupt (the prefix is computed once, without gradients), weights included.
double estimate_batch_bytes(int L, int H, int d, int dh, int f, int B, int P, int S, double weight_bytes) {
  const double f32 = 4;
  // Per suffix position, both runs: each layer's recorded activations (q, k, v, z per head, the
  // residual streams, the MLP's input and hidden layer) and the upstream differences the
  // contraction reads ((H + 1) nodes per layer of width d).
  const double per_suffix = L * (2.0 * (4.0 * H * dh + 3.0 * d + 2.0 * f) + (H + 1.0) * d) + 2.0 * d;
  // Per prefix position: its keys and values, kept for the suffix's attention.
  const double per_prefix = L * 2.0 * 2.0 * H * dh;
  // Attention weights of the suffix over every position.
  const double attention = 2.0 * L * H * double(S) * P;
  return weight_bytes + f32 * B * (S * per_suffix + (P - S) * per_prefix + attention);
}

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
  double worst_bytes = 0;
  std::string worst_cell;
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
    const double weights = double(m->parameters) * (s.dtype == "bfloat16" ? 2.0 : 4.0);
    const auto& cf = m->config;
    const double bytes =
        estimate_batch_bytes(cf.n_layers, cf.n_heads, cf.d_model, cf.d_head, cf.d_mlp, share, P, S, weights);
    if (bytes > worst_bytes) worst_bytes = bytes, worst_cell = c.id;
  }
  const double available = available_memory_bytes();
  if (s.device == "cpu" && available > 0 && worst_bytes * ctx.ranks_on_node > available)
    problems.push_back(settings_key("batch_size") + ": a batch of " + std::to_string(s.batch_size) + " prompts needs about " +
                       gib(worst_bytes) + " per rank (cell " + worst_cell + "), " + std::to_string(ctx.ranks_on_node) +
                       " rank(s) on this node, " + gib(available) + " available: lower batch_size");
  return result;
}

}  // namespace teap::runner
