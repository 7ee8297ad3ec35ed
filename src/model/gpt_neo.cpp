// GPT-Neo (BM1): learned positions, LayerNorm, unscaled attention with alternating global and
// local layers, gelu_new MLP.
#include "model/blocks.hpp"

namespace teap::model {

at::Tensor gpt_neo_embed(const Model& m, const at::Tensor& ids, int64_t pos0) {
  const at::Tensor pos = at::arange(pos0, pos0 + ids.size(1), ids.options());
  return at::embedding(m.weights.wte, ids) + at::embedding(m.weights.wpe, pos).unsqueeze(0);
}

// LayerNorm, attention without the 1/sqrt(d_head) scaling (global or local per layer), gelu_new MLP.
BlockSpec gpt_neo_block(const Model&) { return BlockSpec{1.0, /*rotary=*/false, gelu_mlp}; }

at::Tensor gpt_neo_layer(const Model& m, int l, const at::Tensor& x, const LayerContext& ctx) {
  const BlockSpec b = gpt_neo_block(m);
  return pre_norm_layer(m, l, x, ctx, b.attn_scale, b.rotary, b.mlp);
}

}  // namespace teap::model
