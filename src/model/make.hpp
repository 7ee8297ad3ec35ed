// Owns writing models: random initialisation of a config, and saving any Model as a complete
// Hugging Face folder (config.json + safetensors, plain or sharded, F32 or BF16).
#pragma once

#include <cstdint>
#include <string>

#include "model/model.hpp"

namespace teap::model {

// Weights drawn from a seeded generator, scaled so activations stay in a sane range: matrices and
// embeddings N(0, 0.02) (output projections scaled down by sqrt(2 * layers), as GPT-2 does), biases
// N(0, 0.02), norm weights 1 + N(0, 0.1), norm biases N(0, 0.02). Non-trivial biases and norm
// weights make tests exercise every parameter.
// More parameters than this (8 GiB of float32, above Llama-3.2-1B) is an InputError before
// anything is allocated.
inline constexpr double kMaxRandomParameters = 2147483648.0;
Model random_model(const ModelConfig& config, uint64_t seed, c10::ScalarType dtype = c10::kFloat);

struct SaveOptions {
  bool bf16 = false;           // store BF16 instead of F32
  int64_t max_shard_bytes = 0;  // > 0: sharded files with an index
};

// Writes config.json and the weights into `folder` (created if needed). Every file is written
// aside and renamed into place.
void save_model(const Model& m, const std::string& folder, const SaveOptions& options = {});

}  // namespace teap::model
