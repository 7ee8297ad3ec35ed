// GPT-Neo (BM1): learned positions, LayerNorm, unscaled attention with alternating global and
// local layers, gelu_new MLP.
#include "model/blocks.hpp"

namespace teap::model {

at::Tensor gpt_neo_embed(const Model& m, const at::Tensor& ids, int64_t pos0) {
  const at::Tensor pos = at::arange(pos0, pos0 + ids.size(1), ids.options());
  return at::embedding(m.weights.wte, ids) + at::embedding(m.weights.wpe, pos).unsqueeze(0);
}

at::Tensor gpt_neo_layer(const Model& m, int l, const at::Tensor& x, const LayerContext& ctx) {
  const auto& w = m.weights.layers[l];
  const AttentionMask mask{m.config.local_layer[l], m.config.window_size};
  // GPT-Neo does not scale its attention scores by 1/sqrt(d_head).
  const at::Tensor attn =
      attention(m, l, layer_norm(m, x, w.ln1_w, w.ln1_b).to(m.dtype), 1.0, false, mask, ctx);
  const at::Tensor mid = x + attn;
  at::Tensor mlp_in = layer_norm(m, mid, w.ln2_w, w.ln2_b).to(m.dtype);
  LayerRecord* rec = ctx.rec;
  if (rec && ctx.grads) mlp_in.retain_grad();
  const at::Tensor mlp_out = gelu_mlp(w, mlp_in);
  if (rec) {
    rec->resid_pre = x;
    rec->resid_mid = mid;
    rec->mlp_in = mlp_in;
    rec->mlp_out = mlp_out;
  }
  return mid + mlp_out;
}

}  // namespace teap::model
