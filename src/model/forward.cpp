// The forward pass over all layers, the unembedding, and the per-layer norm lookup.
#include "model/blocks.hpp"
#include "util/error.hpp"

namespace teap::model {

void check_ids(const Model& m, const at::Tensor& ids) {
  // Past these limits LibTorch's embedding fails with "index out of range in self" and a stack
  // trace; the user should learn which limit instead.
  const int64_t P = ids.size(-1);
  if (P > m.config.max_positions)
    fail_input(m.path + "/config.json", "max_position_embeddings is " + std::to_string(m.config.max_positions) +
                                            ", less than the " + std::to_string(P) + " tokens given");
  const at::Tensor c = ids.to(at::kCPU, at::kLong).contiguous();
  const int64_t* p = c.data_ptr<int64_t>();
  for (int64_t i = 0, n = c.numel(); i < n; ++i)
    if (p[i] < 0 || p[i] >= m.config.vocab_size)
      fail_input(m.path + "/config.json", "token id " + std::to_string(p[i]) + " is outside the model's vocabulary of " +
                                              std::to_string(m.config.vocab_size) + " (vocab_size)");
}

at::Tensor apply_norm(const Model& m, int layer, int which, const at::Tensor& x) {
  const auto& wt = m.weights;
  const bool final_norm = layer == m.config.n_layers;
  const at::Tensor& w = final_norm ? wt.ln_f_w : which == 1 ? wt.layers[layer].ln1_w : wt.layers[layer].ln2_w;
  const at::Tensor& b = final_norm ? wt.ln_f_b : which == 1 ? wt.layers[layer].ln1_b : wt.layers[layer].ln2_b;
  return m.config.family == Family::GptNeo ? layer_norm(m, x, w, b) : rms_norm(m, x, w);
}

at::Tensor norm_vjp(const Model& m, int layer, int which, const at::Tensor& x, const at::Tensor& gy) {
  const auto& wt = m.weights;
  const bool final_norm = layer == m.config.n_layers;
  const auto ct = compute_type(m);
  const at::Tensor w = (final_norm ? wt.ln_f_w : which == 1 ? wt.layers[layer].ln1_w : wt.layers[layer].ln2_w).to(ct);
  const at::Tensor h = x.detach().to(ct);
  const at::Tensor g = gy.to(ct) * w;  // gradient at the normalised value
  const double eps = m.config.norm_eps;
  if (m.config.family == Family::GptNeo) {
    // LayerNorm: xhat = (x - mean) / sigma; dx = (g - mean(g) - xhat * mean(g * xhat)) / sigma.
    const at::Tensor mu = h.mean(-1, true);
    const at::Tensor rstd = at::rsqrt((h - mu).pow(2).mean(-1, true) + eps);
    const at::Tensor xhat = (h - mu) * rstd;
    return (g - g.mean(-1, true) - xhat * (g * xhat).mean(-1, true)) * rstd;
  }
  // RMSNorm: xhat = x / rms; dx = (g - xhat * mean(g * xhat)) / rms.
  const at::Tensor rinv = at::rsqrt(h.pow(2).mean(-1, true) + eps);
  const at::Tensor xhat = h * rinv;
  return (g - xhat * (g * xhat).mean(-1, true)) * rinv;
}

at::Tensor embed(const Model& m, const at::Tensor& ids, int64_t pos0) {
  return m.config.family == Family::GptNeo ? gpt_neo_embed(m, ids, pos0) : at::embedding(m.weights.wte, ids);
}

at::Tensor forward(const Model& m, const at::Tensor& ids, ActivationRecord* record, int64_t start,
                   const ActivationRecord* prefix) {
  TORCH_CHECK(ids.dim() == 2 && ids.scalar_type() == at::kLong, "forward: ids must be [B,P] int64");
  TORCH_CHECK(start >= 0 && start < ids.size(1) && (start == 0 || prefix), "forward: start needs a prefix record");
  check_ids(m, ids);
  const at::Tensor dev_ids = ids.narrow(1, start, ids.size(1) - start).to(m.device);
  return forward_embedded(m, embed(m, dev_ids, start), record, start, prefix);
}

at::Tensor forward_embedded(const Model& m, const at::Tensor& embedding, ActivationRecord* record, int64_t start,
                            const ActivationRecord* prefix) {
  TORCH_CHECK(embedding.dim() == 3 && embedding.size(2) == m.config.d_model, "forward: embedding must be [B,P,d_model]");
  TORCH_CHECK(start >= 0 && (start == 0 || prefix), "forward: start needs a prefix record");
  TORCH_CHECK(start + embedding.size(1) <= m.config.max_positions, "forward: positions past max_position_embeddings");
  const bool neo = m.config.family == Family::GptNeo;
  at::Tensor x = embedding;
  const bool grads = record && record->with_grads;
  if (record) {
    record->embed = x;
    record->layers.assign(m.config.n_layers, LayerRecord{});
  }
  // Where the last layer's output is first read (ActivationRecord::last_position_only).
  const int64_t P = x.size(1);
  const int64_t read_from = !record ? 0 : record->keys_values_only ? P : record->last_position_only ? P - 1 : 0;
  for (int l = 0; l < m.config.n_layers; ++l) {
    const LayerContext ctx{record ? &record->layers[l] : nullptr, grads, start, prefix ? &prefix->layers[l] : nullptr,
                           l == m.config.n_layers - 1 ? read_from : 0, record && record->keys_values_only};
    x = neo ? gpt_neo_layer(m, l, x, ctx) : llama_layer(m, l, x, ctx);
    if (record && record->keys_values_only) {
      LayerRecord kept;
      kept.k = record->layers[l].k;
      kept.v = record->layers[l].v;
      record->layers[l] = std::move(kept);
    } else if (record && record->upstream_only) {
      LayerRecord kept;
      kept.z = record->layers[l].z;
      kept.mlp_out = record->layers[l].mlp_out;
      record->layers[l] = std::move(kept);
    }
  }
  if (grads && x.requires_grad()) x.retain_grad();
  if (record && !record->keys_values_only && !record->upstream_only) record->resid_final = x;
  return apply_norm(m, m.config.n_layers, 0, x);
}

at::Tensor last_position_logits(const Model& m, const at::Tensor& hidden, const at::Tensor& tokens) {
  const int64_t B = hidden.size(0), K = tokens.size(1);
  const at::Tensor last = hidden.select(1, hidden.size(1) - 1).to(m.dtype);             // [B,d]
  const at::Tensor rows = m.weights.lm_head.index_select(0, tokens.reshape({-1}).to(m.device))
                              .view({B, K, -1});                                        // [B,K,d]
  return model::matmul(rows, last.unsqueeze(2)).squeeze(2).to(compute_type(m));            // [B,K]
}

at::Tensor full_logits(const Model& m, const at::Tensor& hidden) {
  return model::linear(hidden.to(m.dtype), m.weights.lm_head).to(compute_type(m));
}

int64_t parameter_count(const Model& m) {
  int64_t n = 0;
  auto add = [&](const at::Tensor& t) {
    if (t.defined()) n += t.numel();
  };
  const auto& w = m.weights;
  add(w.wte);
  add(w.wpe);
  add(w.ln_f_w);
  add(w.ln_f_b);
  if (!w.lm_head.is_same(w.wte)) add(w.lm_head);
  for (const auto& l : w.layers)
    for (const at::Tensor* t : {&l.ln1_w, &l.ln1_b, &l.w_q, &l.w_k, &l.w_v, &l.b_q, &l.b_k, &l.b_v, &l.w_o,
                                &l.b_o, &l.ln2_w, &l.ln2_b, &l.w_fc, &l.b_fc, &l.w_proj, &l.b_proj,
                                &l.w_gate, &l.w_up, &l.w_down})
      add(*t);
  return n;
}

}  // namespace teap::model
