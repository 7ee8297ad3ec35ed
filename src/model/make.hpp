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
// aside and renamed into place. Tensors are converted and written one at a time, so the peak
// memory beyond the model is one tensor. config.json's torch_dtype says what is stored.
void save_model(const Model& m, const std::string& folder, const SaveOptions& options = {});

// save_model(random_model(config, seed), folder, options) without holding the model: each tensor
// is drawn (the same values, in the same order), converted, written and freed, so a Llama-3.2-1B
// shape needs about one embedding's worth of memory instead of the whole model. Returns the
// number of parameters written.
int64_t write_random_model(const ModelConfig& config, uint64_t seed, const std::string& folder,
                           const SaveOptions& options = {});

// The real configurations of the TinySQL base models (../shared/spec/models.md; Hugging Face's
// config.json of each): "bm1" TinyStories-Instruct-2Layers-33M (gpt_neo, 2 layers x 16 heads,
// d 1024, vocabulary 50257, tied), "bm2" Qwen2.5-0.5B-Instruct (24 layers, 14/2 heads, d 896,
// d_mlp 4864, vocabulary 151936, tied), "bm3" Llama-3.2-1B-Instruct (16 layers, 32/8 heads,
// d 2048, d_mlp 8192, vocabulary 128256, tied, llama3 rope scaling). InputError for another name.
ModelConfig preset_config(const std::string& name);

}  // namespace teap::model
