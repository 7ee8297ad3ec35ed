// The patched run: the pre-norm block of blocks.cpp with one residual copy per destination.
//
// For destination v of circuit c the input is x_v = x + sum_u ablated[c,u,v] * (a_u_corrupt - a_u_this),
// x being this run's residual stream at v. The differences (a_u_corrupt - a_u_this) of every
// upstream node computed so far are kept per circuit, with `input` first so that the nodes feeding
// a layer's heads (and, with that layer's heads, its MLP) are one leading range: a destination's
// patch is then one product over that range. Attention runs on the stacked circuits; the per-head
// copies, head outputs and MLPs run circuit by circuit in blocks the allocator can reuse.
#include "model/patched.hpp"

#include <algorithm>
#include <array>
#include <map>
#include <vector>

#include "model/blocks.hpp"

namespace teap::model {
namespace {

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

namespace {

// Elements of one block of per-head residual copies: small enough for the allocator to reuse its
// memory (glibc maps blocks above 32 MiB afresh, and the page faults then cost more than the work).
constexpr int64_t kBlockElements = int64_t(4) << 20;

// Calls f(h0, n) for the runs of consecutive true entries of `on` [H], at most `most` at a time.
template <class F>
void for_each_run(const std::vector<char>& on, int64_t most, F&& f) {
  const int64_t H = static_cast<int64_t>(on.size());
  for (int64_t h = 0; h < H;) {
    if (!on[h]) {
      ++h;
      continue;
    }
    int64_t n = 0;
    while (h + n < H && on[h + n] && n < most) ++n;
    f(h, n);
    h += n;
  }
}

// One pass's fixed facts: shapes, the circuits' masks, which destinations each circuit patches.
struct Pass {
  const Model& m;
  c10::ScalarType ct;
  BlockSpec spec;
  int64_t L = 0, H = 0, dh = 0, d = 0, group = 0, U = 0, D = 0, C = 0, B = 0, Ps = 0, N = 0, Nd = 0, heads_per_block = 0;
  at::Tensor A{};        // [C, U, D] the masks, upstream rows in internal order (input first)
  at::Tensor corrupt{};  // [U, N*d] the corrupt run's outputs, rule order
  at::Tensor diff{};     // [C, U, N*d] a_u_corrupt - a_u_this, internal order
  std::vector<char> patched{};  // [C * D] whether circuit c's destination v reads any corrupt output

  bool patches(int64_t c, int64_t v) const { return patched[size_t(c * D + v)] != 0; }
  bool any_patches(int64_t from, int64_t count) const {
    for (int64_t c = 0; c < C; ++c)
      for (int64_t v = from; v < from + count; ++v)
        if (patches(c, v)) return true;
    return false;
  }
  // sum over the first `rows` internal upstream rows u of A[c, u, col0 + j] * diff[c, u]: [n, N*d]
  at::Tensor patch_of(int64_t c, int64_t rows, int64_t col0, int64_t n) const {
    return at::mm(A.select(0, c).narrow(0, 0, rows).narrow(1, col0, n).t(), diff.select(0, c).narrow(0, 0, rows));
  }
};

// Each query head's q, k and v [C*B, Ps, H, dh] of layer l from its own residual copy. Copies
// whose patches are equal (same corrupt sources: in a small circuit most destinations read every
// source's corrupt output) are one copy, normed once and projected by all their heads' weights.
std::array<at::Tensor, 3> head_inputs(const Pass& p, int64_t l, const at::Tensor& x) {
  const Model& m = p.m;
  const auto& w = m.weights.layers[l];
  const int64_t base = l * (3 * p.H + 1), rows = 1 + l * (p.H + 1), H3 = 3 * p.H;
  // Every destination's weight rows [3H, dh, d] and bias [3H, dh] (k and v per query head).
  const at::Tensor w_all = at::cat({per_query_head(w.w_q, p.dh, 1), per_query_head(w.w_k, p.dh, p.group),
                                    per_query_head(w.w_v, p.dh, p.group)});
  at::Tensor b_all;
  if (w.b_q.defined())
    b_all = at::cat({per_query_head(w.b_q, p.dh, 1), per_query_head(w.b_k, p.dh, p.group), per_query_head(w.b_v, p.dh, p.group)});
  at::Tensor out = at::empty({3, p.C * p.B, p.Ps, p.H, p.dh}, x.options());
  for (int64_t c = 0; c < p.C; ++c) {
    const at::Tensor xc = x.narrow(0, c * p.B, p.B).reshape({p.N, p.d});
    const at::Tensor cols = p.A.select(0, c).narrow(0, 0, rows).narrow(1, base, H3).t().to(at::kCPU, at::kFloat).contiguous();
    const float* cp = cols.data_ptr<float>();  // [3H, rows]
    std::map<std::vector<float>, std::vector<int64_t>> groups;
    for (int64_t j = 0; j < H3; ++j) groups[std::vector<float>(cp + j * rows, cp + (j + 1) * rows)].push_back(j);
    auto project = [&](const at::Tensor& xin, const std::vector<int64_t>& members) {
      const at::Tensor xn = apply_norm(m, static_cast<int>(l), 1, xin).to(m.dtype);  // [N, d]
      const int64_t n = static_cast<int64_t>(members.size());
      const at::Tensor idx = at::tensor(at::ArrayRef<int64_t>(members), at::kLong).to(w_all.device());
      at::Tensor o = model::mm(xn, w_all.index_select(0, idx).reshape({n * p.dh, p.d}).t()).view({p.N, n, p.dh});
      if (b_all.defined()) o = o + b_all.index_select(0, idx).unsqueeze(0);
      for (int64_t i = 0; i < n; ++i) {
        const int64_t j = members[i];
        out.select(0, j / p.H).narrow(0, c * p.B, p.B).select(2, j % p.H).copy_(o.select(1, i).view({p.B, p.Ps, p.dh}));
      }
    };
    std::vector<const std::vector<int64_t>*> patched;
    for (const auto& [col, members] : groups) {
      if (std::any_of(col.begin(), col.end(), [](float v) { return v != 0.0f; })) patched.push_back(&members);
      else project(xc, members);  // the unpatched heads read the shared stream
    }
    // The patched copies' patches a block at a time: one product reads the differences once per
    // block, not once per copy.
    const at::Tensor xs = xc.to(p.ct);
    const at::Tensor block_cols = p.A.select(0, c).narrow(0, 0, rows).narrow(1, base, H3);  // [rows, 3H]
    for (size_t b0 = 0; b0 < patched.size(); b0 += size_t(p.heads_per_block)) {
      const size_t nb = std::min(patched.size() - b0, size_t(p.heads_per_block));
      std::vector<int64_t> first_member;
      for (size_t i = 0; i < nb; ++i) first_member.push_back(patched[b0 + i]->front());
      const at::Tensor sel = at::tensor(at::ArrayRef<int64_t>(first_member), at::kLong).to(block_cols.device());
      const at::Tensor pt = at::mm(block_cols.index_select(1, sel).t(), p.diff.select(0, c).narrow(0, 0, rows));  // [nb, Nd]
      for (size_t i = 0; i < nb; ++i) project(pt.select(0, int64_t(i)).view({p.N, p.d}) + xs, *patched[b0 + i]);
    }
  }
  return {out.select(0, 0), out.select(0, 1), out.select(0, 2)};
}

// The attention output [C*B, Ps, d] (bias included) from z [C*B, Ps, H, dh], each head's output
// z_h . W_O[h] kept apart as an upstream node: its difference from the corrupt run's goes to `diff`.
at::Tensor attention_output(Pass& p, int64_t l, const at::Tensor& z) {
  const auto& w = p.m.weights.layers[l];
  const at::Tensor w_o = w.w_o.to(p.ct).view({p.d, p.H, p.dh}).permute({1, 2, 0});  // [H,dh,d]
  const int64_t row = 1 + l * (p.H + 1);
  at::Tensor attn = at::zeros({p.C, p.N, p.d}, p.corrupt.options());
  for (int64_t c = 0; c < p.C; ++c) {
    const at::Tensor zc = z.narrow(0, c * p.B, p.B).to(p.ct).reshape({p.N, p.H, p.dh}).transpose(0, 1);  // [H,N,dh]
    for_each_run(std::vector<char>(p.H, 1), p.heads_per_block, [&](int64_t h0, int64_t n) {
      const at::Tensor heads = at::bmm(zc.narrow(0, h0, n), w_o.narrow(0, h0, n));  // [n,N,d]
      p.diff.select(0, c).narrow(0, row + h0, n).copy_(p.corrupt.narrow(0, l * (p.H + 1) + h0, n) - heads.view({n, p.Nd}));
      attn.select(0, c).add_(heads.sum(0));
    });
  }
  if (w.b_o.defined()) attn.add_(w.b_o.to(p.ct));
  return attn.view({p.C * p.B, p.Ps, p.d}).to(p.m.dtype);
}

// The MLP half of layer l for every circuit: its input patched where the circuit says, its output's
// difference from the corrupt run's to `diff`. Returns the residual stream after the layer.
at::Tensor mlp_half(Pass& p, int64_t l, const at::Tensor& mid) {
  const Model& m = p.m;
  const int64_t col = l * (3 * p.H + 1) + 3 * p.H, rows = 1 + l * (p.H + 1) + p.H;
  at::Tensor next = at::empty_like(mid);
  for (int64_t c = 0; c < p.C; ++c) {
    const at::Tensor mc = mid.narrow(0, c * p.B, p.B);
    at::Tensor in = mc;
    if (p.patches(c, col)) in = (mc.to(p.ct).reshape({1, p.Nd}) + p.patch_of(c, rows, col, 1)).view({p.B, p.Ps, p.d});
    const at::Tensor out = p.spec.mlp(m.weights.layers[l], apply_norm(m, static_cast<int>(l), 2, in).to(m.dtype));
    p.diff.select(0, c).select(0, rows).copy_(p.corrupt.select(0, l * (p.H + 1) + p.H) - out.to(p.ct).reshape({p.Nd}));
    next.narrow(0, c * p.B, p.B).copy_(mc + out);
  }
  return next;
}

}  // namespace

at::Tensor patched_forward(const Model& m, const at::Tensor& ids, const Patch& patch, int64_t start,
                           const ActivationRecord* prefix) {
  TORCH_CHECK(ids.dim() == 2 && ids.scalar_type() == at::kLong, "patched_forward: ids must be [B,P] int64");
  TORCH_CHECK(start >= 0 && start < ids.size(1) && (start == 0 || prefix), "patched_forward: start needs a prefix record");
  check_ids(m, ids);
  const auto& cfg = m.config;
  Pass p{m, compute_type(m), block_spec(m)};
  p.L = cfg.n_layers, p.H = cfg.n_heads, p.dh = cfg.d_head, p.d = cfg.d_model, p.group = cfg.n_heads / cfg.n_kv_heads;
  p.U = patch_upstream(cfg), p.D = patch_downstream(cfg);
  p.C = patch.ablated.size(0), p.B = ids.size(0), p.Ps = ids.size(1) - start, p.N = p.B * p.Ps, p.Nd = p.N * p.d;
  p.heads_per_block = std::max<int64_t>(1, kBlockElements / std::max<int64_t>(1, p.Nd));
  const int64_t L = p.L, H = p.H, U = p.U, D = p.D, C = p.C, B = p.B, Ps = p.Ps, Nd = p.Nd;
  TORCH_CHECK(patch.ablated.dim() == 3 && patch.ablated.size(1) == U && patch.ablated.size(2) == D,
              "patched_forward: ablated must be [C, U, D] of the full graph");
  TORCH_CHECK(patch.corrupt.dim() == 4 && patch.corrupt.size(0) == U && patch.corrupt.size(1) == B &&
                  patch.corrupt.size(2) == Ps && patch.corrupt.size(3) == p.d,
              "patched_forward: corrupt outputs must be [U, B, P - start, d]");

  const at::Tensor ablated = patch.ablated.to(m.device, p.ct);
  p.A = at::cat({ablated.narrow(1, U - 1, 1), ablated.narrow(1, 0, U - 1)}, 1).contiguous();
  p.corrupt = patch.corrupt.to(m.device, p.ct).reshape({U, Nd});
  const at::Tensor on = (p.A != 0).any(1).to(at::kCPU).contiguous();  // [C, D]
  p.patched.assign(on.data_ptr<bool>(), on.data_ptr<bool>() + C * D);
  const int64_t input_rule = U - 1;

  // Where the pass starts: with the clean run's record, at the first layer some circuit patches,
  // and after that layer's attention when only its MLP is patched.
  int64_t first = 0;
  bool from_mid = false;
  if (patch.clean) {
    first = L;
    for (int64_t l = 0; l < L; ++l)
      if (p.any_patches(l * (3 * H + 1), 3 * H + 1)) {
        first = l;
        from_mid = !p.any_patches(l * (3 * H + 1), 3 * H);
        break;
      }
  }

  p.diff = at::empty({C, U, Nd}, p.corrupt.options());
  at::Tensor x;  // [C*B, Ps, d] this run's residual stream
  if (first == 0 && !from_mid) {
    const at::Tensor e = embed(m, ids.narrow(1, start, Ps).to(m.device), start);  // [B,Ps,d]
    p.diff.select(1, 0).copy_(p.corrupt.narrow(0, input_rule, 1) - e.to(p.ct).reshape({1, Nd}));
    x = e.repeat({C, 1, 1});
  } else {
    // What comes before the start is the clean run's: every difference so far is corrupt - clean.
    const at::Tensor clean_out = patch.clean_out.to(m.device, p.ct).reshape({U, Nd});
    p.diff.select(1, 0).copy_((p.corrupt.narrow(0, input_rule, 1) - clean_out.narrow(0, input_rule, 1)).expand({C, Nd}));
    const int64_t n = first * (H + 1) + (from_mid ? H : 0);
    if (n > 0)
      p.diff.narrow(1, 1, n).copy_((p.corrupt.narrow(0, 0, n) - clean_out.narrow(0, 0, n)).unsqueeze(0).expand({C, n, Nd}));
    const auto& rec = *patch.clean;
    const at::Tensor& resid = first == L ? rec.resid_final : from_mid ? rec.layers[first].resid_mid : rec.layers[first].resid_pre;
    x = resid.detach().repeat({C, 1, 1});
  }

  for (int64_t l = first; l < L; ++l) {
    at::Tensor mid = x;
    if (!(l == first && from_mid)) {
      const auto qkv = head_inputs(p, l, x);
      at::Tensor pk, pv;  // the shared prefix's keys and values, once per circuit
      if (prefix) {
        pk = prefix->layers[l].k.detach().repeat({C, 1, 1, 1});
        pv = prefix->layers[l].v.detach().repeat({C, 1, 1, 1});
      }
      const AttentionMask mask{cfg.local_layer[l], cfg.window_size};
      const at::Tensor z = attend(m, qkv[0], qkv[1], qkv[2], p.spec.attn_scale, p.spec.rotary, mask, start, pk, pv);
      mid = x + attention_output(p, l, z);
    }
    x = mlp_half(p, l, mid);
  }
  if (p.any_patches(D - 1, 1)) {
    at::Tensor patched = x.to(p.ct).clone();
    for (int64_t c = 0; c < C; ++c)
      if (p.patches(c, D - 1))
        patched.narrow(0, c * B, B).add_(p.patch_of(c, U, D - 1, 1).view({B, Ps, p.d}));
    x = patched;
  }
  return apply_norm(m, static_cast<int>(L), 0, x);
}

}  // namespace teap::model
