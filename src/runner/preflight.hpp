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
  // "MODEL: about X resident per rank ..." for each model, its largest cell (--dry-run prints them).
  std::vector<std::string> memory;
};

// Problems are "FILE:LINE: key: what" or "cell ID: what". A model in a BM slot of another family
// (BM1 gpt_neo, BM2 qwen2, BM3 llama) is a problem unless settings.any_architecture.
PreflightResult preflight(const job::Job& job, const PreflightContext& context);

}  // namespace teap::runner
