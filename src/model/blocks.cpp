#include "model/blocks.hpp"

#include <algorithm>

namespace teap::model {

at::Tensor layer_norm(const Model& m, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  const auto ct = compute_type(m);
  return at::layer_norm(x.to(ct), {x.size(-1)}, w.to(ct), b.to(ct), m.config.norm_eps);
}

at::Tensor rms_norm(const Model& m, const at::Tensor& x, const at::Tensor& w) {
  const auto ct = compute_type(m);
  const at::Tensor h = x.to(ct);
  const at::Tensor normed = h * at::rsqrt(h.pow(2).mean(-1, true) + m.config.norm_eps);
  // As Hugging Face: back to the activation dtype before the weight multiplies.
  return w.to(ct) * normed.to(m.dtype).to(ct);
}

at::Tensor apply_rotary(const Model& m, const at::Tensor& x, int64_t pos0) {
  const auto ct = compute_type(m);
  const int64_t P = x.size(1), half = x.size(3) / 2;
  const at::Tensor pos = at::arange(pos0, pos0 + P, at::TensorOptions().dtype(ct).device(x.device()));
  const at::Tensor freqs = at::outer(pos, m.weights.rope_inv_freq.to(ct));  // [P, d_head/2]
  const at::Tensor cos = at::cat({freqs, freqs}, -1).cos().to(x.scalar_type()).view({1, P, 1, 2 * half});
  // rotate_half(x) * sin = cat(-x2, x1) * cat(s, s) = roll(x, half) * cat(-s, s), bit for bit; the
  // roll's backward is one roll, where the halves' narrow and cat each cost a zeroed copy of x.
  const at::Tensor s = freqs.sin();
  const at::Tensor sin = at::cat({-s, s}, -1).to(x.scalar_type()).view({1, P, 1, 2 * half});
  return x * cos + at::roll(x, half, 3) * sin;
}

at::Tensor attend(const Model& m, at::Tensor q, at::Tensor k, at::Tensor v, double scale, bool rotary,
                  AttentionMask mask, int64_t pos0, const at::Tensor& prefix_k, const at::Tensor& prefix_v) {
  const bool has_prefix = prefix_k.defined();
  const int64_t q_pos0 = pos0 + k.size(1) - q.size(1);  // the queries are the last of k's positions
  if (has_prefix) {  // keys and values of positions [0, pos0) from the run that computed them
    at::Tensor pk = prefix_k.detach().narrow(1, 0, pos0), pv = prefix_v.detach().narrow(1, 0, pos0);
    if (pk.size(2) != k.size(2)) {  // a keys-and-values-only record's, one per key/value head
      pk = pk.repeat_interleave(k.size(2) / pk.size(2), 2);
      pv = pv.repeat_interleave(k.size(2) / pv.size(2), 2);
    }
    k = at::cat({pk, k}, 1);
    v = at::cat({pv, v}, 1);
  }
  const int64_t key_pos0 = has_prefix ? 0 : pos0, P = q.size(1);
  if (rotary) {
    q = apply_rotary(m, q, q_pos0);
    k = apply_rotary(m, k, key_pos0);
  }
  const auto ct = compute_type(m);
  at::Tensor scores = at::matmul(q.transpose(1, 2).to(ct), k.transpose(1, 2).transpose(2, 3).to(ct));
  if (scale != 1.0) scores = scores * scale;  // [B,H,P,Pk]
  const auto opts = at::TensorOptions().dtype(at::kLong).device(q.device());
  const int64_t Pk = k.size(1);
  const at::Tensor i = at::arange(q_pos0, q_pos0 + P, opts).view({P, 1});
  const at::Tensor j = at::arange(key_pos0, key_pos0 + Pk, opts).view({1, Pk});
  at::Tensor allowed = j <= i;
  if (mask.local) allowed = allowed & ((i - j) < mask.window);
  scores = scores.masked_fill(allowed.logical_not(), -std::numeric_limits<double>::infinity());
  const at::Tensor probs = at::softmax(scores, -1).to(m.dtype);
  return model::matmul(probs, v.transpose(1, 2)).transpose(1, 2);  // [B,P,H,dh]
}

at::Tensor attention(const Model& m, int l, const at::Tensor& xn, double scale, bool rotary,
                     AttentionMask mask, const LayerContext& ctx) {
  const auto& c = m.config;
  const auto& w = m.weights.layers[l];
  const int64_t B = xn.size(0), P = xn.size(1), H = c.n_heads, Hkv = c.n_kv_heads, dh = c.d_head;
  const int64_t from = std::min(ctx.read_from, P), n = P - from;  // the positions whose output is read
  LayerRecord* rec = ctx.rec;
  // A record's q covers every position (with a zero gradient where nothing is read), as its k and v
  // do; a keys-and-values-only record keeps none.
  const int64_t Pq = rec && !ctx.kv_heads ? P : n;
  at::Tensor q = model::linear(Pq == P ? xn : xn.narrow(1, from, n), w.w_q, w.b_q).view({B, Pq, H, dh});
  at::Tensor k = model::linear(xn, w.w_k, w.b_k).view({B, P, Hkv, dh});
  at::Tensor v = model::linear(xn, w.w_v, w.b_v).view({B, P, Hkv, dh});
  const at::Tensor k_kv = k, v_kv = v;  // what a keys-and-values-only record keeps: 1/group of the repeated size
  if (Hkv != H) {  // grouped-query: one copy per query head, so each head's share is addressable
    k = k.repeat_interleave(H / Hkv, 2);
    v = v.repeat_interleave(H / Hkv, 2);
  }
  if (rec) {
    if (ctx.grads && !xn.requires_grad()) {
      // Nothing before this layer needs a gradient: the projections are the graph's roots, so
      // the backward pass stops here instead of running on to the embedding.
      q = q.detach().requires_grad_(true);
      k = k.detach().requires_grad_(true);
      v = v.detach().requires_grad_(true);
    } else if (ctx.grads) {
      q.retain_grad();
      k.retain_grad();
      v.retain_grad();
    }
    rec->q = q;
    rec->k = ctx.kv_heads ? k_kv : k;
    rec->v = ctx.kv_heads ? v_kv : v;
  }
  if (n == 0) return at::zeros({B, 0, c.d_model}, xn.options());  // keys and values were all it had to give
  const at::Tensor q_read = Pq == n ? q : q.narrow(1, from, n);
  const at::Tensor z = ctx.prefix ? attend(m, q_read, k, v, scale, rotary, mask, ctx.pos0, ctx.prefix->k, ctx.prefix->v)
                                   : attend(m, q_read, k, v, scale, rotary, mask, ctx.pos0, at::Tensor(), at::Tensor());
  if (rec) rec->z = z;
  return model::linear(z.reshape({B, n, H * dh}), w.w_o, w.b_o);
}

at::Tensor pre_norm_layer(const Model& m, int l, const at::Tensor& x, const LayerContext& ctx, double attn_scale,
                          bool rotary, MlpFn mlp) {
  const AttentionMask mask{m.config.local_layer[l], m.config.window_size};
  const int64_t P = x.size(1), from = std::min(ctx.read_from, P);
  const at::Tensor attn = attention(m, l, apply_norm(m, l, 1, x).to(m.dtype), attn_scale, rotary, mask, ctx);
  if (from == P) return attn;  // nothing reads this layer's output (a keys-and-values-only run's last layer)
  const at::Tensor mid = (from > 0 ? x.narrow(1, from, P - from) : x) + attn;
  at::Tensor mlp_in = apply_norm(m, l, 2, mid).to(m.dtype);
  if (ctx.rec && ctx.grads) mlp_in.retain_grad();
  const at::Tensor mlp_out = mlp(m.weights.layers[l], mlp_in);
  if (LayerRecord* rec = ctx.rec) {
    rec->resid_pre = x;
    rec->resid_mid = mid;
    rec->mlp_in = mlp_in;
    rec->mlp_out = mlp_out;
  }
  return mid + mlp_out;
}

at::Tensor gelu_mlp(const LayerWeights& w, const at::Tensor& xn) {
  return model::linear(at::gelu(model::linear(xn, w.w_fc, w.b_fc), "tanh"), w.w_proj, w.b_proj);
}

at::Tensor gated_mlp(const LayerWeights& w, const at::Tensor& xn) {
  if (xn.requires_grad() && at::GradMode::is_enabled()) return gated_mlp_recorded(w, xn);
  return model::linear(at::silu(model::linear(xn, w.w_gate)) * model::linear(xn, w.w_up), w.w_down);
}

}  // namespace teap::model
