// Shared building blocks of the three architectures (internal to model/): norms, rotary
// embedding, causal attention, the two MLP kinds. A layer file composes them so that it reads
// like the architecture.
#pragma once

#include <ATen/ATen.h>

#include "model/model.hpp"
#include "model/products.hpp"  // the blocks' products (bfloat16 on a CPU without bfloat16 products)

namespace teap::model {

// The type norms and softmax run in: float32, or float64 for a float64 model.
inline c10::ScalarType compute_type(const Model& m) {
  return m.dtype == c10::kDouble ? c10::kDouble : c10::kFloat;
}

at::Tensor layer_norm(const Model& m, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b);
at::Tensor rms_norm(const Model& m, const at::Tensor& x, const at::Tensor& w);

// x [B,P,H,d_head] rotated by position pos0 + p (the "rotate half" layout).
at::Tensor apply_rotary(const Model& m, const at::Tensor& x, int64_t pos0 = 0);

// How one layer runs: where it records, whether it keeps gradients, and, for a run that starts at
// position pos0, the record of a run on the same tokens before pos0 (causal attention makes those
// positions' keys and values equal), whose keys and values it attends to. The layer's output is
// read from its position read_from on (relative to pos0; the last layer of a run that reads the
// last position only, ActivationRecord::last_position_only): earlier positions give their keys and
// values (and their queries, when recorded) and nothing else.
struct LayerContext {
  LayerRecord* rec = nullptr;
  bool grads = false;
  int64_t pos0 = 0;
  const LayerRecord* prefix = nullptr;
  int64_t read_from = 0;
  // A keys-and-values-only run (ActivationRecord::keys_values_only): k and v are recorded per
  // key/value head, not repeated per query head.
  bool kv_heads = false;
};

// Which keys a query may see: causal, and for a local layer only the last `window` positions.
struct AttentionMask {
  bool local = false;
  int window = 0;
};

// The core of causal attention on per-query-head k, v [B,P,H,d_head] (before rotary) of positions
// [pos0, pos0+P) and q [B,Pq,H,d_head] of the last Pq <= P of them: rotary when the family uses it,
// keys and values of positions [0, pos0) prepended from `prefix_k`/`prefix_v` [B,>=pos0,H,d_head]
// (or [B,>=pos0,H_kv,d_head], one per key/value head, repeated here) when defined, masked
// softmax. Returns z [B,Pq,H,d_head], each query head's attention-weighted values.
at::Tensor attend(const Model& m, at::Tensor q, at::Tensor k, at::Tensor v, double scale, bool rotary,
                  AttentionMask mask, int64_t pos0, const at::Tensor& prefix_k, const at::Tensor& prefix_v);

// Attention of layer `l` on its normed input xn [B,P,d]: Q/K/V projections, rotary when the
// family uses it, causal softmax, W_O, for the positions from ctx.read_from on ([B,P-read_from,d]).
// Records q/k/v/z into ctx.rec when given, retaining the gradients of q/k/v when ctx.grads.
at::Tensor attention(const Model& m, int l, const at::Tensor& xn, double scale, bool rotary,
                     AttentionMask mask, const LayerContext& ctx);

at::Tensor gelu_mlp(const LayerWeights& w, const at::Tensor& xn);   // c_proj(gelu_new(c_fc(x)))
at::Tensor gated_mlp(const LayerWeights& w, const at::Tensor& xn);  // down(silu(gate(x)) * up(x))

using MlpFn = at::Tensor (*)(const LayerWeights&, const at::Tensor&);

// gated_mlp's graph when xn requires a gradient: one autograd node that keeps two [rows, d_mlp]
// tensors (autograd's pieces keep four) and whose backward computes the elementwise part in
// float32 (float64 for float64) and the products through input_gradient (gated_mlp.cpp).
at::Tensor gated_mlp_recorded(const LayerWeights& w, const at::Tensor& xn);

// The gradient at a linear layer's input, dy [N, out] . w [out, in] -> [N, in]. A bfloat16 product
// on CPU over a weight whose sides are both at least `chunk` and one more is computed in blocks of
// `chunk` (of the inner dimension when out > in, of the output's columns otherwise): oneDNN's
// bfloat16 kernel for this layout slows on large weights (8192 x 2048, 264 rows: 29.3 ms whole, 22.5
// ms in 2048-blocks, 23.3 ms for the forward's product). Any other product is one at::mm.
constexpr int64_t kBf16BackwardBlock = 2048;
at::Tensor input_gradient(const at::Tensor& dy, const at::Tensor& w, int64_t chunk = kBf16BackwardBlock);

// The pre-norm block every family runs: x += attn(norm1(x)); x += mlp(norm2(x)), recording the
// residual stream before each half, the MLP's input (its gradient kept when ctx.grads) and output.
// Positions before ctx.read_from feed the attention's keys and values only: the result, and what
// is recorded after the attention, cover the positions from read_from on.
at::Tensor pre_norm_layer(const Model& m, int l, const at::Tensor& x, const LayerContext& ctx, double attn_scale,
                          bool rotary, MlpFn mlp);

// What a family's pre-norm block is made of, so that the patched run (patched.cpp) builds the same
// block with per-destination inputs.
struct BlockSpec {
  double attn_scale = 1.0;
  bool rotary = false;
  MlpFn mlp = nullptr;
};

// The per-family blocks, layers and embeddings (gpt_neo.cpp, llama.cpp).
BlockSpec gpt_neo_block(const Model& m);
BlockSpec llama_block(const Model& m);
inline BlockSpec block_spec(const Model& m) {
  return m.config.family == Family::GptNeo ? gpt_neo_block(m) : llama_block(m);
}
// The token (+ position) embedding of ids [B,P] at positions pos0.. (the family's).
at::Tensor embed(const Model& m, const at::Tensor& ids, int64_t pos0);
at::Tensor gpt_neo_embed(const Model& m, const at::Tensor& ids, int64_t pos0);
at::Tensor gpt_neo_layer(const Model& m, int l, const at::Tensor& x, const LayerContext& ctx);
at::Tensor llama_layer(const Model& m, int l, const at::Tensor& x, const LayerContext& ctx);

}  // namespace teap::model
