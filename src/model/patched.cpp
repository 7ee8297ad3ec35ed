// The patched run: the pre-norm block of blocks.cpp with one residual copy per destination.
//
// For destination v of circuit c the input is x_v = x + sum_u ablated[c,u,v] * (a_u_corrupt - a_u_this),
// x being this run's residual stream at v. The differences (a_u_corrupt - a_u_this) of every
// upstream node computed so far are kept per circuit, with `input` first so that the nodes feeding
// a layer's heads (and, with that layer's heads, its MLP) are one leading range: each layer's
// patches are then one batched product per destination kind.
#include "model/patched.hpp"

#include <vector>

#include "model/blocks.hpp"

namespace teap::model {
namespace {

at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  return b.defined() ? at::linear(x, w, b) : at::linear(x, w);
}

// Per-query-head rows of a projection's weight [heads*dh, d] -> [H, dh, d] (and bias -> [H, dh]).
at::Tensor per_query_head(const at::Tensor& t, int64_t dh, int64_t group) {
  at::Tensor r = t.view({-1, dh, t.dim() == 2 ? t.size(1) : 1});
  if (t.dim() == 1) r = r.squeeze(2);
  return group > 1 ? r.repeat_interleave(group, 0) : r;
}

}  // namespace

at::Tensor upstream_outputs(const Model& m, const ActivationRecord& rec) {
  const auto& c = m.config;
  const auto ct = compute_type(m);
  const int64_t H = c.n_heads, dh = c.d_head, d = c.d_model, B = rec.embed.size(0), P = rec.embed.size(1), N = B * P;
  at::Tensor out = at::empty({patch_upstream(c), B, P, d}, rec.embed.options().dtype(ct));
  for (int l = 0; l < c.n_layers; ++l) {
    const auto& r = rec.layers[l];
    const at::Tensor z = r.z.detach().to(ct).reshape({N, H, dh}).transpose(0, 1);                          // [H,N,dh]
    const at::Tensor w_o = m.weights.layers[l].w_o.to(ct).view({d, H, dh}).permute({1, 2, 0});             // [H,dh,d]
    at::Tensor heads = out.narrow(0, int64_t(l) * (H + 1), H).view({H, N, d});
    at::bmm_out(heads, z, w_o);
    out.select(0, int64_t(l) * (H + 1) + H).copy_(r.mlp_out.detach());
  }
  out.select(0, patch_upstream(c) - 1).copy_(rec.embed.detach());
  return out;
}

at::Tensor patched_forward(const Model& m, const at::Tensor& ids, const Patch& patch, int64_t start,
                           const ActivationRecord* prefix) {
  TORCH_CHECK(ids.dim() == 2 && ids.scalar_type() == at::kLong, "patched_forward: ids must be [B,P] int64");
  TORCH_CHECK(start >= 0 && start < ids.size(1) && (start == 0 || prefix), "patched_forward: start needs a prefix record");
  check_ids(m, ids);
  const auto& c = m.config;
  const auto ct = compute_type(m);
  const BlockSpec spec = block_spec(m);
  const int64_t L = c.n_layers, H = c.n_heads, dh = c.d_head, d = c.d_model, group = c.n_heads / c.n_kv_heads;
  const int64_t U = patch_upstream(c), D = patch_downstream(c);
  const int64_t C = patch.ablated.size(0), B = ids.size(0), Ps = ids.size(1) - start, N = B * Ps, Nd = N * d;
  TORCH_CHECK(patch.ablated.dim() == 3 && patch.ablated.size(1) == U && patch.ablated.size(2) == D,
              "patched_forward: ablated must be [C, U, D] of the full graph");
  TORCH_CHECK(patch.corrupt.dim() == 4 && patch.corrupt.size(0) == U && patch.corrupt.size(1) == B &&
                  patch.corrupt.size(2) == Ps && patch.corrupt.size(3) == d,
              "patched_forward: corrupt outputs must be [U, B, P - start, d]");

  // Internal upstream order: input first (row 0), then row 1 + the index rule's.
  const at::Tensor ablated = patch.ablated.to(m.device, ct);
  const at::Tensor A = at::cat({ablated.narrow(1, U - 1, 1), ablated.narrow(1, 0, U - 1)}, 1);  // [C,U,D]
  const at::Tensor corrupt = patch.corrupt.to(m.device, ct).reshape({U, Nd});
  auto corrupt_rows = [&](int64_t rule_index, int64_t count) { return corrupt.narrow(0, rule_index, count); };
  const int64_t input_rule = U - 1;

  // Which destinations any circuit patches (one host copy instead of a sync per layer).
  const at::Tensor patched_cols = (A != 0).any(0).any(0).to(at::kCPU);
  const bool* pc = patched_cols.data_ptr<bool>();
  auto any_patched = [&](int64_t from, int64_t count) {
    for (int64_t j = from; j < from + count; ++j)
      if (pc[j]) return true;
    return false;
  };
  int64_t first = 0;
  if (patch.clean) {
    first = L;
    for (int64_t l = 0; l < L && first == L; ++l)
      if (any_patched(l * (3 * H + 1), 3 * H + 1)) first = l;
  }

  at::Tensor diff = at::empty({C, U, Nd}, corrupt.options());  // internal rows: a_u_corrupt - a_u_this
  at::Tensor x;                                                 // [C*B, Ps, d] this run's residual stream
  if (first == 0) {
    const at::Tensor e = embed(m, ids.narrow(1, start, Ps).to(m.device), start);  // [B,Ps,d]
    diff.select(1, 0).copy_(corrupt_rows(input_rule, 1) - e.to(ct).reshape({1, Nd}));
    x = e.repeat({C, 1, 1});
  } else {
    // Layers before `first` are the clean run's: every difference so far is corrupt - clean.
    const at::Tensor clean_out = patch.clean_out.to(m.device, ct).reshape({U, Nd});
    diff.select(1, 0).copy_((corrupt_rows(input_rule, 1) - clean_out.narrow(0, input_rule, 1)).expand({C, Nd}));
    const int64_t n = first * (H + 1);
    diff.narrow(1, 1, n).copy_((corrupt_rows(0, n) - clean_out.narrow(0, 0, n)).unsqueeze(0).expand({C, n, Nd}));
    const at::Tensor& resid = first < L ? patch.clean->layers[first].resid_pre : patch.clean->resid_final;
    x = resid.detach().repeat({C, 1, 1});
  }

  for (int64_t l = first; l < L; ++l) {
    const auto& w = m.weights.layers[l];
    const int64_t base = l * (3 * H + 1);
    const int64_t r_att = 1 + l * (H + 1), r_mlp = r_att + H;  // internal rows feeding the heads / the MLP
    at::Tensor q, k, v;                                          // [C*B, Ps, H, dh]
    if (!any_patched(base, 3 * H)) {
      const at::Tensor xn = apply_norm(m, l, 1, x).to(m.dtype);
      q = linear(xn, w.w_q, w.b_q).view({C * B, Ps, H, dh});
      k = linear(xn, w.w_k, w.b_k).view({C * B, Ps, -1, dh});
      v = linear(xn, w.w_v, w.b_v).view({C * B, Ps, -1, dh});
      if (group > 1) {
        k = k.repeat_interleave(group, 2);
        v = v.repeat_interleave(group, 2);
      }
    } else {
      const at::Tensor xc = x.to(ct).reshape({C, 1, N, d});
      // Query head h's slot input: norm(x + patch_h), projected by its rows of the weight.
      auto slot = [&](int64_t s, const at::Tensor& weight, const at::Tensor& bias, int64_t g) {
        const at::Tensor cols = A.narrow(1, 0, r_att).narrow(2, base + s * H, H);              // [C,r,H]
        const at::Tensor p = at::bmm(cols.transpose(1, 2), diff.narrow(1, 0, r_att));          // [C,H,Nd]
        const at::Tensor xn = apply_norm(m, l, 1, p.view({C, H, N, d}) + xc).to(m.dtype);     // [C,H,N,d]
        at::Tensor out = at::matmul(xn, per_query_head(weight, dh, g).transpose(1, 2));        // [C,H,N,dh]
        if (bias.defined()) out = out + per_query_head(bias, dh, g).view({1, H, 1, dh});
        return out.view({C, H, B, Ps, dh}).permute({0, 2, 3, 1, 4}).reshape({C * B, Ps, H, dh});
      };
      q = slot(0, w.w_q, w.b_q, 1);
      k = slot(1, w.w_k, w.b_k, group);
      v = slot(2, w.w_v, w.b_v, group);
    }
    at::Tensor pk, pv;  // the shared prefix's keys and values, once per circuit
    if (prefix) {
      pk = prefix->layers[l].k.detach().repeat({C, 1, 1, 1});
      pv = prefix->layers[l].v.detach().repeat({C, 1, 1, 1});
    }
    const AttentionMask mask{c.local_layer[l], c.window_size};
    const at::Tensor z = attend(m, q, k, v, spec.attn_scale, spec.rotary, mask, start, pk, pv);  // [C*B,Ps,H,dh]
    // Each head's output z_h . W_O[h], kept apart: it is an upstream node.
    const at::Tensor heads = at::bmm(z.to(ct).reshape({C * N, H, dh}).transpose(0, 1),
                                     w.w_o.to(ct).view({d, H, dh}).permute({1, 2, 0}));  // [H, C*N, d]
    at::Tensor attn = heads.sum(0);
    if (w.b_o.defined()) attn = attn + w.b_o.to(ct);
    const at::Tensor mid = x + attn.view({C * B, Ps, d}).to(m.dtype);
    diff.narrow(1, r_att, H).copy_(corrupt_rows(l * (H + 1), H).unsqueeze(0) - heads.view({H, C, Nd}).transpose(0, 1));

    at::Tensor mlp_in;
    if (pc[base + 3 * H]) {
      const at::Tensor cols = A.narrow(1, 0, r_mlp).narrow(2, base + 3 * H, 1);               // [C,r,1]
      const at::Tensor p = at::bmm(cols.transpose(1, 2), diff.narrow(1, 0, r_mlp));           // [C,1,Nd]
      mlp_in = apply_norm(m, l, 2, (mid.to(ct).reshape({C, 1, Nd}) + p).view({C * B, Ps, d})).to(m.dtype);
    } else {
      mlp_in = apply_norm(m, l, 2, mid).to(m.dtype);
    }
    const at::Tensor mlp_out = spec.mlp(w, mlp_in);
    diff.select(1, r_mlp).copy_(corrupt_rows(l * (H + 1) + H, 1) - mlp_out.to(ct).reshape({C, Nd}));
    x = mid + mlp_out;
  }
  if (pc[D - 1]) {
    const at::Tensor p = at::bmm(A.narrow(2, D - 1, 1).transpose(1, 2), diff);  // [C,1,Nd]
    x = (x.to(ct).reshape({C, 1, Nd}) + p).view({C * B, Ps, d});
  }
  return apply_norm(m, static_cast<int>(L), 0, x);
}

}  // namespace teap::model
