// Qwen2 (BM2) and Llama (BM3): RMSNorm, rotary attention with grouped-query heads (Q/K/V biases
// in Qwen2, llama3 frequency scaling in Llama), gated SiLU MLP.
#include <cmath>

#include "model/blocks.hpp"

namespace teap::model {

at::Tensor llama_layer(const Model& m, int l, const at::Tensor& x, const LayerContext& ctx) {
  const auto& w = m.weights.layers[l];
  const double scale = 1.0 / std::sqrt(static_cast<double>(m.config.d_head));
  const at::Tensor attn =
      attention(m, l, rms_norm(m, x, w.ln1_w).to(m.dtype), scale, true,
                AttentionMask{m.config.local_layer[l], m.config.window_size}, ctx);
  const at::Tensor mid = x + attn;
  at::Tensor mlp_in = rms_norm(m, mid, w.ln2_w).to(m.dtype);
  LayerRecord* rec = ctx.rec;
  if (rec && ctx.grads) mlp_in.retain_grad();
  const at::Tensor mlp_out = gated_mlp(w, mlp_in);
  if (rec) {
    rec->resid_pre = x;
    rec->resid_mid = mid;
    rec->mlp_in = mlp_in;
    rec->mlp_out = mlp_out;
  }
  return mid + mlp_out;
}

}  // namespace teap::model
