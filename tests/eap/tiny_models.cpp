#include "tiny_models.hpp"

#include <random>

#include "model/make.hpp"

namespace teap::eap_test {

using model::Family;

model::ModelConfig tiny_config(Family f) {
  model::ModelConfig c;
  c.family = f;
  c.model_type = model::family_name(f);
  c.n_heads = 4;
  c.vocab_size = kVocab;
  c.max_positions = 32;
  switch (f) {
    case Family::GptNeo:  // a local layer whose window (3) is shorter than the prompts
      c.n_layers = 3;
      c.n_kv_heads = 4;
      c.d_model = 16;
      c.d_mlp = 32;
      c.norm_eps = 1e-5;
      c.local_layer = {false, true, false};
      c.window_size = 3;
      c.activation = "gelu_new";
      c.tie_word_embeddings = true;
      break;
    case Family::Qwen2:  // grouped-query (2 kv heads for 4 query heads), Q/K/V biases
      c.n_layers = 3;
      c.n_kv_heads = 2;
      c.d_model = 16;
      c.d_mlp = 24;
      c.norm_eps = 1e-6;
      c.local_layer.assign(3, false);
      c.activation = "silu";
      c.tie_word_embeddings = true;
      c.qkv_bias = true;
      c.rope_theta = 1000000.0;
      break;
    case Family::Llama:  // llama3 rope scaling whose band covers the tiny head's frequencies
      c.n_layers = 3;
      c.n_kv_heads = 2;
      c.d_model = 32;
      c.d_mlp = 48;
      c.norm_eps = 1e-6;
      c.local_layer.assign(3, false);
      c.activation = "silu";
      c.tie_word_embeddings = false;
      c.rope_theta = 500000.0;
      c.rope_scaling = model::RopeScaling{"llama3", 8.0, 1.0, 4.0, 256};
      break;
  }
  c.d_head = c.d_model / c.n_heads;
  return c;
}

// Multiplies attention (Q, K), and the other matrices of every layer; the embeddings stay.
void scale_layers(model::Model& m, double qk, double rest) {
  for (auto& w : m.weights.layers) {
    for (at::Tensor* t : {&w.w_q, &w.w_k}) t->mul_(qk);
    for (at::Tensor* t : {&w.w_v, &w.w_o, &w.w_fc, &w.w_proj, &w.w_gate, &w.w_up, &w.w_down})
      if (t->defined()) t->mul_(rest);
  }
}

// A float64 model with sharp attention and MLPs that matter, so second-order terms are visible.
model::Model make_model(Family f, uint64_t seed) {
  model::Model m = model::random_model(tiny_config(f), seed, at::kDouble);
  scale_layers(m, 10.0, 4.0);
  return m;
}

// Random prompts; each corrupt prompt differs from its clean one in one position.
Batch make_batch(int B, int P, uint64_t seed, int first_pos) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> tok(0, kVocab - 1);
  std::uniform_int_distribution<int> pos(first_pos, P - 1);
  Batch b;
  b.in.n_prompts = B;
  b.in.n_positions = P;
  for (int i = 0; i < B; ++i) {
    const int at_pos = pos(rng);
    for (int p = 0; p < P; ++p) {
      const int64_t t = tok(rng);
      b.in.clean_ids.push_back(t);
      int64_t r = t;
      if (p == at_pos)
        while (r == t) r = tok(rng);
      b.in.corrupt_ids.push_back(r);
    }
    const int64_t c = tok(rng);
    int64_t r = c;
    while (r == c) r = tok(rng);
    b.in.clean_answer.push_back(c);
    b.in.corrupt_answer.push_back(r);
  }
  b.clean = at::tensor(at::ArrayRef<int64_t>(b.in.clean_ids), at::kLong).view({B, P}).clone();
  b.corrupt = at::tensor(at::ArrayRef<int64_t>(b.in.corrupt_ids), at::kLong).view({B, P}).clone();
  return b;
}

// The reference's activation of upstream node u.
at::Tensor upstream_act(const eap::Graph& g, const RefRun& r, int u) {
  if (u == g.input_up()) return r.embed;
  const int l = u / (g.n_heads + 1), h = u % (g.n_heads + 1);
  return h == g.n_heads ? r.mlp[l] : r.head[l][h];
}

// The reference's input copy that downstream node v stands for.
Node downstream_node(const eap::Graph& g, int v) {
  if (v == g.logits_down()) return {Port::Logits, 0, 0};
  if (!g.heads_down()) return {Port::Mlp, v, 0};
  const int per = 3 * g.n_heads + 1, l = v / per, r = v % per, H = g.n_heads;
  if (r == 3 * H) return {Port::Mlp, l, 0};
  return {r < H ? Port::Q : r < 2 * H ? Port::K : Port::V, l, r % H};
}

}  // namespace teap::eap_test
