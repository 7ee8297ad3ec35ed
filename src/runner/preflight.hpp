// Owns the checks a job passes before any unit runs (rank 0, `run` and `run --dry-run` alike):
// every model and tokenizer of the job is found and loads (config, checkpoint header, tensor names
// and shapes, without the weights), the device exists, the job's thread count fits the machine, every
// cell generates an example that fits the model's positions, and one batch fits in memory.
// Problems are collected, not stopped at the first, so a user fixes a job in one pass.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "job/job.hpp"

namespace teap::runner {

struct PreflightContext {
  int ranks_on_node = 1;   // ranks sharing this node's memory
  int threads = 1;         // intra-op threads of each rank
};

struct PreflightResult {
  std::vector<std::string> problems;             // one line each; empty when the job can run
  std::map<std::string, std::string> weights_id;  // model (as the job names it) -> weights_fingerprint
};

// Problems are "FILE:LINE: key: what" or "cell ID: what". A model in a BM slot of another family
// (BM1 gpt_neo, BM2 qwen2, BM3 llama) is a problem unless settings.any_architecture.
PreflightResult preflight(const job::Job& job, const PreflightContext& context);

// Estimated peak bytes of one EAP batch of `prompts` prompts of `positions` tokens, the last
// `suffix` of which differ between clean and corrupt (the prefix is computed once, without
// gradients), for a model of these sizes, weights included (`weight_bytes` as computed).
double estimate_batch_bytes(int n_layers, int n_heads, int d_model, int d_head, int d_mlp, int prompts, int positions,
                            int suffix, double weight_bytes);

// Memory this machine has available now (MemAvailable), in bytes; 0 when unknown.
double available_memory_bytes();

}  // namespace teap::runner
