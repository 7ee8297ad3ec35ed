// Qwen2 (BM2) and Llama (BM3): RMSNorm, rotary attention with grouped-query heads (Q/K/V biases
// in Qwen2, llama3 frequency scaling in Llama), gated SiLU MLP.
#include <cmath>

#include "model/blocks.hpp"

namespace teap::model {

// RMSNorm, rotary attention scaled by 1/sqrt(d_head), gated SiLU MLP.
BlockSpec llama_block(const Model& m) {
  return BlockSpec{1.0 / std::sqrt(static_cast<double>(m.config.d_head)), /*rotary=*/true, gated_mlp};
}

at::Tensor llama_layer(const Model& m, int l, const at::Tensor& x, const LayerContext& ctx) {
  const BlockSpec b = llama_block(m);
  return pre_norm_layer(m, l, x, ctx, b.attn_scale, b.rotary, b.mlp);
}

}  // namespace teap::model
