// Tiny models of the three families and random prompt batches for the attribution tests, and the
// mapping between the attribution graph's nodes and the reference forward pass's.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#include "eap/graph.hpp"
#include "eap/score.hpp"
#include "model/model.hpp"
#include "reference_forward.hpp"

namespace teap::eap_test {

inline constexpr int kVocab = 50;

// Three layers, four query heads: GPT-Neo with a local layer whose window (3) is shorter than the
// prompts, Qwen2 grouped-query (2 kv heads) with Q/K/V biases, Llama with llama3 rope scaling.
model::ModelConfig tiny_config(model::Family f);

// Multiplies attention (Q, K), and the other matrices of every layer; the embeddings stay.
void scale_layers(model::Model& m, double qk, double rest);

// A float64 model with sharp attention and MLPs that matter, so second-order terms are visible.
model::Model make_model(model::Family f, uint64_t seed = 7);

struct Batch {
  eap::BatchInput in;
  at::Tensor clean, corrupt;  // [B,P] int64
};

// Random prompts; each corrupt prompt differs from its clean one in one position, at or after
// `first_pos` (0: anywhere).
Batch make_batch(int B, int P, uint64_t seed, int first_pos = 0);

// The reference's activation of upstream node u of `g`.
at::Tensor upstream_act(const eap::Graph& g, const RefRun& r, int u);

// The reference's input copy that downstream node v of `g` stands for.
Node downstream_node(const eap::Graph& g, int v);

}  // namespace teap::eap_test
