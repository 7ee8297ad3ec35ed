#include "eap/score.hpp"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "eap/evaluate.hpp"
#include "eap/gradient_sum.hpp"
#include "eap/runs.hpp"
#include "eap/workspace.hpp"
#include "model/model.hpp"
#include "model/products.hpp"
#include "util/error.hpp"

namespace teap::eap {
namespace {

// X [r, L] . Y[k, L]^T for a very long L and small r, k. BLAS splits a product's threads over its
// rows and columns, of which there are few here; cutting L into one slice per thread and adding
// the slices' products keeps every thread busy.
// bfloat16 operands give a bfloat16 product (accumulated in float32 by oneDNN / cuBLAS, rounded
// once at the end); the slices' products are added in float32.
at::Tensor long_product(const at::Tensor& X, const at::Tensor& Y) {
  const int64_t threads = at::get_num_threads(), L = X.size(1);
  if (threads <= 1 || L < threads * 4096 || L % threads != 0 || !X.device().is_cpu()) return at::matmul(X, Y.t());
  const int64_t c = threads, Lc = L / c;
  const at::Tensor Xs = X.view({X.size(0), c, Lc}).transpose(0, 1);  // [c, r, Lc]
  const at::Tensor Ys = Y.view({Y.size(0), c, Lc}).permute({1, 2, 0});  // [c, Lc, k]
  const at::Tensor parts = at::bmm(Xs, Ys);
  return (parts.scalar_type() == at::kBFloat16 ? parts.to(at::kFloat) : parts).sum(0);
}

// Marks phase boundaries; a no-op without a profile.
struct PhaseClock {
  ScoreProfile* profile;
  std::chrono::steady_clock::time_point last = std::chrono::steady_clock::now();
  void lap(double ScoreProfile::*field) {
    if (!profile) return;
    const auto now = std::chrono::steady_clock::now();
    profile->*field += std::chrono::duration<double>(now - last).count();
    last = now;
  }
};

at::Tensor grad_or_zeros(const at::Tensor& t) {
  return t.grad().defined() ? t.grad() : at::zeros_like(t);
}

}  // namespace

std::shared_ptr<ScoreWorkspace> make_workspace() { return std::make_shared<ScoreWorkspace>(); }

void check_batch(const model::Model& m, const BatchInput& in) {
  const size_t B = in.n_prompts, P = in.n_positions;
  if (B == 0 || P == 0) throw InputError("batch: empty (" + std::to_string(B) + " prompts of " + std::to_string(P) + " tokens)");
  if (in.clean_ids.size() != B * P || in.corrupt_ids.size() != B * P || in.clean_answer.size() != B ||
      in.corrupt_answer.size() != B || (!in.expected.empty() && in.expected.size() != B))
    throw InputError("batch: clean/corrupt ids or answers do not match " + std::to_string(B) + " x " + std::to_string(P));
  const int64_t V = m.config.vocab_size;
  for (const auto* v : {&in.clean_ids, &in.corrupt_ids, &in.clean_answer, &in.corrupt_answer, &in.expected})
    for (int64_t id : *v)
      if (id < 0 || id >= V)
        throw InputError("batch: token id " + std::to_string(id) + " is outside the model's vocabulary of " + std::to_string(V));
}

void check_options(const model::Model& m, const ScoreOptions& options) {
  if (options.pairing != MetricPairing::Notebook) return;
  const auto& p = options.broadcast;
  if (p.clean.empty() || p.clean.size() != p.corrupt.size())
    throw InputError("metric_pairing notebook: the broadcast needs the cell's last batch's (clean, corrupt) answer pairs (" +
                     std::to_string(p.clean.size()) + " clean, " + std::to_string(p.corrupt.size()) + " corrupt given)");
  const int64_t V = m.config.vocab_size;
  for (const auto* v : {&p.clean, &p.corrupt})
    for (int64_t id : *v)
      if (id < 0 || id >= V)
        throw InputError("metric_pairing notebook: broadcast token id " + std::to_string(id) +
                         " is outside the model's vocabulary of " + std::to_string(V));
}

std::vector<double> logit_diffs(const model::Model& m, const std::vector<int64_t>& ids, int n_prompts, int n_positions,
                                const std::vector<int64_t>& clean_answer, const std::vector<int64_t>& corrupt_answer,
                                MetricPairing pairing) {
  at::NoGradGuard no_grad;
  const at::Tensor hidden = model::forward(m, as_tensor(ids, n_prompts, n_positions));
  // Notebook records own-paired differences: the same numbers as Own.
  if (pairing == MetricPairing::Notebook) pairing = MetricPairing::Own;
  return to_vector(logit_diff(m, hidden, answer_tokens(clean_answer, m.device),
                              answer_tokens(corrupt_answer, m.device), pairing)
                       .recorded);
}

BatchScores score_batch(const model::Model& m, const Graph& g, const BatchInput& in, const ScoreOptions& options) {
  if (options.method == Method::Exact) return exact_batch(m, g, in, options);
  if (options.method == Method::EapIgInputs && (options.ig_steps < 1 || options.ig_steps > kMaxIgSteps))
    throw InputError("ig_steps: " + std::to_string(options.ig_steps) + " is outside 1.." + std::to_string(kMaxIgSteps));
  check_batch(m, in);
  check_options(m, options);
  const auto& c = m.config;
  if (g.n_layers != c.n_layers || g.n_heads != c.n_heads)
    throw InputError("graph of " + std::to_string(g.n_layers) + " layers x " + std::to_string(g.n_heads) +
                     " heads does not fit the model (" + std::to_string(c.n_layers) + " x " + std::to_string(c.n_heads) + ")");
  const int64_t B = in.n_prompts, P = in.n_positions, d = c.d_model, H = c.n_heads, dh = c.d_head;
  const auto ct = m.dtype == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor clean_tok = answer_tokens(in.clean_answer, m.device);
  const at::Tensor corrupt_tok = answer_tokens(in.corrupt_answer, m.device);

  BatchScores out;
  out.n_upstream = g.n_upstream();
  out.n_downstream = g.n_downstream();
  out.n_prompts = static_cast<int>(B);
  out.n_positions = static_cast<int>(P);

  PhaseClock clock{options.profile};
  ScoreWorkspace own;  // without a shared workspace, this call's buffers
  ScoreWorkspace& ws = options.workspace ? *options.workspace : own;
  // Before the first position where a clean and a corrupt prompt differ, the two runs are equal
  // (causal attention), every activation difference there is zero, and no gradient flows from
  // there to a later position. So the common prefix runs once, without gradients, and both runs
  // compute only the positions from `start` on, attending to the prefix's keys and values.
  const bool shared_prefix = ws.prefix_start > 0;  // the whole batch's, run once (eap/workspace.hpp)
  // A part of a batch whose corrupt run is shared starts where that run did (the whole batch's first
  // difference), even when its own prompts agree for longer: the two records must cover the same positions.
  const int64_t start = shared_prefix || ws.corrupt_shared ? ws.prefix_start : first_difference(in);
  const int64_t Ps = P - start, N = B * Ps;
  const at::Tensor clean_ids = as_tensor(in.clean_ids, B, P);
  model::ActivationRecord prefix;
  if (shared_prefix) {
    prefix = prefix_rows(ws.prefix, ws.part_row, B);
  } else if (start > 0) {
    at::NoGradGuard no_grad;
    prefix.keys_values_only = true;
    model::forward(m, clean_ids.narrow(1, 0, start), &prefix);
  }
  const model::ActivationRecord* before = start > 0 ? &prefix : nullptr;
  clock.lap(&ScoreProfile::prefix);

  model::ActivationRecord clean, corrupt;
  // eap-ig-inputs, clean-corrupted: the gradients of several runs, summed (eap/gradient_sum.hpp).
  std::unique_ptr<GradientSum> sum;
  if (options.method != Method::Eap) {
    sum = std::make_unique<GradientSum>(m, g, N);
    gradient_runs(m, in, options, start, before, clean, corrupt, out, *sum);  // times its own phases
    clock.last = std::chrono::steady_clock::now();
  } else {
    clean.with_grads = true;
    clean.last_position_only = true;  // the metric reads the last position's logits alone
    {
      at::AutoGradMode grad_on(true);
      const at::Tensor hidden = model::forward(m, clean_ids, &clean, start, before);
      const LogitDiffs ld = logit_diff(m, hidden, clean_tok, corrupt_tok, options.pairing, options.broadcast);
      out.clean_ld = to_vector(ld.recorded);
      check_finite(m, out.clean_ld, "clean logit difference");
      clock.lap(&ScoreProfile::clean_forward);
      ld.metric.mean().backward();  // gradient of the batch's mean LD: S_b is a mean over prompts
      clock.lap(&ScoreProfile::backward);
      at::NoGradGuard no_grad;
      if (ws.defer_tops) {
        ws.clean_last.push_back(hidden.detach().select(1, -1).clone());  // [B,d]
      } else {
        record_clean_top(in, top_tokens(m, hidden.select(1, -1)), out);
      }
      clock.lap(&ScoreProfile::accuracy);
    }

    if (ws.corrupt_shared) {  // the whole batch's corrupt run, these prompts' rows (eap/workspace.hpp)
      corrupt = corrupt_rows(ws.corrupt, ws.part_row, B);
      out.corrupt_ld.assign(ws.corrupt_ld.begin() + ws.part_row, ws.corrupt_ld.begin() + ws.part_row + B);
    } else {
      const at::Tensor hidden = corrupt_run(m, in, options, start, before, corrupt, out.corrupt_ld);
      // The corrupt run's top answer: a prompt "flips" when it differs from the clean one.
      if (ws.defer_tops) ws.corrupt_last.push_back(hidden.select(1, -1).clone());
      else out.corrupt_top = to_ids(top_tokens(m, hidden.select(1, -1)));
    }
    clock.lap(&ScoreProfile::corrupt_forward);
  }
  // Both records cover positions [start, P): N = B * Ps rows of d features; a last layer's z, MLP
  // input and output, and the final residual stream, may cover the last position only
  // (model::ActivationRecord::last_position_only).

  at::NoGradGuard no_grad;
  // The contraction's operand type. A bfloat16 run keeps its upstream differences in bfloat16 and
  // contracts them with bfloat16 gradients: the products accumulate in float32 inside the GEMM
  // (oneDNN on CPU, cuBLAS on CUDA), at twice float32's speed and half its memory; the activations
  // themselves are bfloat16, so the differences lose nothing but the final rounding of each head's
  // z_h . W_O[h] (relative 2^-9, unbiased), and the gradients' operands are computed in float32 and
  // rounded once (see `gradients` below). Tolerance and top edges against float32: docs/eap.md,
  // tests/eap/test_scale.cpp (Bf16Contraction).
  // On a CPU without bfloat16 products (model/products.hpp) the operands are float32, as a float32
  // run's: a bfloat16 GEMM would convert both to float32 anyway, and the differences once a batch
  // cost less than the gradients' conversion at every downstream layer.
  const auto ot = m.dtype == at::kBFloat16 && !model::products_in_float32(m.dtype, m.device) ? at::kBFloat16 : ct;
  const int64_t U = g.n_upstream(), L = c.n_layers, in_row = g.input_up();
  const bool layer_norm = c.family == model::Family::GptNeo;
  at::Tensor S = at::zeros({U, g.n_downstream()}, at::TensorOptions().dtype(ct).device(m.device));
  // Rows [N, d] of a difference or gradient as [B, n, d], each prompt's last n of Ps positions, the
  // positions before them zeroed: what a record covering the last position only leaves there. The
  // zeros are exact: such a position's difference meets only gradients that are zero (nothing reads
  // its output), and its gradient is zero.
  auto last_positions = [&](const at::Tensor& rows, int64_t n) {
    const at::Tensor v = rows.view({B, Ps, d});
    if (n == Ps) return v;
    v.narrow(1, 0, Ps - n).zero_();
    return v.narrow(1, Ps - n, n);
  };

  // The gradients at downstream layer b's destinations [K, N*d] in the operand type: K = 3H+1 (q, k, v
  // per query head, then the MLP) where some upstream node feeds the layer's heads, else 1.
  at::Tensor G_buffer, G_low;  // G_low: a gradient method's float32 sums rounded to bfloat16 in a bfloat16 run
  // heads_read: whether the caller reads the head columns (a streaming pass whose rows all come from
  // layer b does not); without them only the MLP row is built.
  auto gradients = [&](int b, bool heads_read) -> at::Tensor {
    const auto& rc = clean.layers[b];
    const auto& w = m.weights.layers[b];
    const bool head_cols = heads_read && g.heads_down() && (b > 0 || in_row >= 0);
    const int64_t K = head_cols ? 3 * H + 1 : 1;
    // One buffer for every layer's gradients: a fresh allocation per layer costs page faults. Plain
    // eap builds them in the operand type (bfloat16 in a bfloat16 run, see below); the gradient
    // methods' sums are float32, rounded into G_low.
    const auto gt = sum ? ct : ot;
    if (!G_buffer.defined())
      G_buffer = reuse(gt == ct ? ws.gradients : ws.gradients_low, {g.heads_down() ? 3 * H + 1 : 1, N, d},
                       at::TensorOptions().dtype(gt).device(m.device));
    at::Tensor Gall = G_buffer.narrow(0, 0, K);
    if (sum) {
      sum->layer_gradients(b, Gall);  // the runs' summed gradients at the layer's destinations
    } else {
      // The MLP's input: the norm's VJP of the gradient at the MLP's normalised input.
      last_positions(Gall.select(0, K - 1), rc.mlp_in.size(1))
          .copy_(model::norm_vjp(m, b, 2, rc.resid_mid.detach(), grad_or_zeros(rc.mlp_in).detach()));
      if (head_cols) {
        // Query head h's private copy of the residual stream gets the norm's VJP of
        // g_h = dproj_h . W[h]: with gw = rstd * (g_h * w), VJP = gw - mean_d(gw) - xhat * mean_d(gw * xhat)
        // (no mean term for RMSNorm). Folding rstd into dproj and w into W makes gw one batched
        // product; the two mean terms are then subtracted in place, their scalars per head and position
        // taken from the run's recorded projections (no pass over gw). In a bfloat16 run the operands
        // (dproj * rstd, W * w, xhat: each computed in float32, rounded once) and gw are bfloat16: the
        // products accumulate in float32 inside the GEMM; the mean term's scalars are float32 from the
        // bfloat16 projections (relative 2^-9 each), rounded once, and the term (about 1/sqrt(d) of gw)
        // and its subtraction round again, each by 2^-9 of |gw| at most, the size of the rounding the
        // contraction's bfloat16 operand needs anyway; built so, the gradients cost half the memory
        // traffic and twice the GEMM speed of float32 (error against float32: Bf16Contraction).
        const at::Tensor x = rc.resid_pre.detach().to(ct).reshape({N, d});
        const at::Tensor mu = layer_norm ? x.mean(-1, true) : at::zeros({N, 1}, x.options());
        const at::Tensor rstd = at::rsqrt((x - mu).pow(2).mean(-1, true) + c.norm_eps);  // [N,1]
        const at::Tensor xhat = ((x - mu) * rstd).to(gt);                                // [N,d]
        // W * w in the operand type: a bfloat16 product is computed in float32 and rounded once, as a
        // float32 product rounded afterwards would be, without converting the weights both ways.
        const at::Tensor norm_w = w.ln1_w.to(gt);
        const int64_t group = H / c.n_kv_heads;
        auto heads = [&](int slot, const at::Tensor& proj, const at::Tensor& weight, int64_t repeat) {
          const int64_t n_w = H / repeat;                              // weight heads (key/value heads for k, v)
          const at::Tensor wh = weight.to(gt).view({n_w, dh, d}) * norm_w;  // [n_w, dh, d]
          const at::Tensor dp_ct = grad_or_zeros(proj).detach().to(ct).permute({2, 0, 1, 3}).reshape({H, N, dh}) * rstd.unsqueeze(0);
          const at::Tensor dp = dp_ct.to(gt);
          at::Tensor gw = Gall.narrow(0, slot * H, H);
          // The query heads that share a key/value head are consecutive, so each group's rows are one
          // product with its weight head: [n_w, repeat*N, dh] x [n_w, dh, d] (no per-query-head copy).
          at::Tensor gw_groups = gw.view({n_w, repeat * N, d});
          const at::Tensor dp_groups = dp.reshape({n_w, repeat * N, dh});  // dp may keep z's permuted strides
          at::bmm_out(gw_groups, dp_groups, wh);                            // [H,N,d]
          // mean_d(gw * xhat) [H,N] from the recorded projection (eap/gradient_sum.hpp), not from a
          // pass over gw: dp . (proj - biases) / d, in the compute type.
          const at::Tensor m2 = head_mean_term(m, b, slot, proj, dp_ct).to(gt).unsqueeze(-1);
          gw.addcmul_(m2, xhat.unsqueeze(0), -1.0);
          // mean_d gw = dp . mean_d(wh): [H,N,1]
          if (layer_norm) gw.sub_(at::bmm(dp_groups, wh.mean(-1, true)).view({H, N, 1}));
        };
        heads(0, rc.q, w.w_q, 1);
        heads(1, rc.k, w.w_k, group);
        heads(2, rc.v, w.w_v, group);
      }
    }
    if (gt == ot) return Gall.view({K, N * d});
    if (!G_low.defined()) G_low = reuse(ws.gradients_low, G_buffer.sizes(), at::TensorOptions().dtype(ot).device(m.device));
    return G_low.narrow(0, 0, K).copy_(Gall).view({K, N * d});
  };
  at::Tensor Gl;  // the gradient at the logits' input (the final residual stream) [1, N*d]
  if (g.logits_down() >= 0 && sum) {
    Gl = sum->final_gradient().reshape({1, N * d}).to(ot);
  } else if (g.logits_down() >= 0) {
    Gl = at::empty({N, d}, at::TensorOptions().dtype(ot).device(m.device));
    last_positions(Gl, clean.resid_final.size(1)).copy_(grad_or_zeros(clean.resid_final).detach());
    Gl = Gl.view({1, N * d});
  }

  // Upstream differences a_u_clean - a_u_corrupt, one row per upstream node, for the upstream layers
  // of one pass: all of them, or (options.upstream_layers, when the whole [U, N, d] would not fit
  // the memory budget) that many at a time, each pass then recomputing the gradients of the layers
  // its rows feed. The input node's row follows the first pass's layer rows.
  const int64_t chunk = options.upstream_layers > 0 ? std::min<int64_t>(options.upstream_layers, L) : L;
  for (int64_t l0 = 0; l0 < L; l0 += chunk) {
    // The pass's rows: the graph's rows of layers [l0, l1), from r0 on (each layer's heads, then its MLP).
    const int64_t l1 = std::min(L, l0 + chunk), r0 = g.head_up(int(l0), 0), n_rows = g.mlp_up(int(l1) - 1) + 1 - r0;
    const bool with_input = in_row >= 0 && l0 == 0;
    at::Tensor A = reuse(ws.differences, {n_rows + (with_input ? 1 : 0), N, d}, at::TensorOptions().dtype(ot).device(m.device));
    for (int64_t l = l0; l < l1; ++l) {
      const auto& rc = clean.layers[l];
      const auto& rr = corrupt.layers[l];
      const int64_t n = rc.z.size(1);  // Ps, or 1 (the last layer of a run that reads the last position only)
      TORCH_CHECK(rr.z.size(1) == n && rc.mlp_out.size(1) == n && rr.mlp_out.size(1) == n,
                  "score_batch: the clean and corrupt records of layer ", l, " cover different positions");
      const at::Tensor z_diff = (rc.z.detach() - rr.z.detach()).to(ot).permute({2, 0, 1, 3}).reshape({H, B * n, dh});
      // Each head's z_h . W_O[h]^T, written in place: W_O [d, H*dh] read through its transpose (BLAS's
      // own operand flag), not permuted into a [H, dh, d] copy, whose strided transposition cost more
      // than the products.
      const at::Tensor w_o = m.weights.layers[l].w_o.to(ot);  // [d, H*dh]
      for (int64_t h = 0; h < H; ++h) {
        at::Tensor row = A.select(0, g.head_up(int(l), int(h)) - r0);
        if (n == Ps) at::mm_out(row, z_diff.select(0, h), w_o.narrow(1, h * dh, dh).t());
        else last_positions(row, n).copy_(at::mm(z_diff.select(0, h), w_o.narrow(1, h * dh, dh).t()).view({B, n, d}));
      }
      last_positions(A.select(0, g.mlp_up(int(l)) - r0), n).copy_(rc.mlp_out.detach() - rr.mlp_out.detach());
    }
    if (with_input) A.select(0, n_rows).copy_((clean.embed.detach() - corrupt.embed.detach()).reshape({N, d}));
    const at::Tensor A2 = A.view({A.size(0), N * d});
    clock.lap(&ScoreProfile::differences);

    // One pass over the pass's differences per downstream layer for its 3H head columns. The MLP
    // columns of every layer, and the logits', are one product after the layers: a 3H+1st column
    // costs a GEMM as much as 11 more (BM3 bfloat16: 96 columns 42 ms, 97 columns 47 ms), and
    // one-column products (a layer's own heads on its MLP, the logits) run at memory speed.
    const int64_t n_mlp = L - l0, n_cols = n_mlp + (Gl.defined() ? 1 : 0);
    at::Tensor Gm = reuse(ws.mlp_columns, {n_cols, N * d}, at::TensorOptions().dtype(ot).device(m.device));
    for (int b = static_cast<int>(l0); b < L; ++b) {
      // The pass's rows that feed layer b's heads: the earlier layers'.
      const int64_t rows_q = std::clamp<int64_t>(g.head_up(b, 0) - r0, 0, n_rows);
      clock.lap(&ScoreProfile::contraction);
      const at::Tensor G = gradients(b, rows_q > 0 || with_input);
      const int64_t K = G.size(0);
      Gm.select(0, b - l0).copy_(G.select(0, K - 1));
      clock.lap(&ScoreProfile::gradients);
      if (K == 1) continue;
      const at::Tensor Gh = G.narrow(0, 0, 3 * H);
      if (rows_q > 0)
        S.narrow(0, r0, rows_q).narrow(1, g.q_down(b, 0), 3 * H).copy_(long_product(A2.narrow(0, 0, rows_q), Gh));
      if (with_input)  // a one-row product (not at::mv): bfloat16 matrix-vector products have no fast CPU kernel
        S.select(0, in_row).narrow(0, g.q_down(b, 0), 3 * H).copy_(long_product(A2.narrow(0, n_rows, 1), Gh).squeeze(0));
    }
    if (Gl.defined()) Gm.select(0, n_mlp).copy_(Gl.view({N * d}));
    // [pass rows (+ input), n_cols]: entries of rows that do not feed a column (a layer's MLP and
    // later rows on its MLP) are computed and not kept.
    const at::Tensor T = long_product(A2, Gm);
    for (int b = static_cast<int>(l0); b < L; ++b) {
      // The pass's rows that feed layer b's MLP: the earlier layers' and b's own heads.
      const int64_t rows_m = std::clamp<int64_t>(g.mlp_up(b) - r0, 0, n_rows);
      if (rows_m > 0) S.narrow(0, r0, rows_m).select(1, g.mlp_down(b)).copy_(T.narrow(0, 0, rows_m).select(1, b - l0));
      if (with_input) S.select(0, in_row).select(0, g.mlp_down(b)).copy_(T.select(0, n_rows).select(0, b - l0));
    }
    if (Gl.defined()) {
      S.narrow(0, r0, n_rows).select(1, g.logits_down()).copy_(T.narrow(0, 0, n_rows).select(1, n_mlp));
      if (with_input) S.select(0, in_row).select(0, g.logits_down()).copy_(T.select(0, n_rows).select(0, n_mlp));
    }
    clock.lap(&ScoreProfile::contraction);
  }
  if (sum) S.div_(sum->runs());  // the mean of the runs' gradients
  // Checked before a rank group adds its parts, so that the rank that overflowed is the one to say so.
  if (!at::isfinite(S).all().item<bool>())
    throw std::runtime_error(m.path + ": non-finite edge scores (NaN or Inf): the model's activations or gradients overflow");
  if (options.weight != 1.0) S.mul_(options.weight);
  if (options.sum_scores) {
    S = S.contiguous();
    options.sum_scores(S.data_ptr(), static_cast<size_t>(S.numel()), S.scalar_type() == at::kDouble, S.is_cuda());
  }
  const at::Tensor Sf = S.to(at::kCPU, at::kFloat).contiguous();
  clock.lap(&ScoreProfile::contraction);
  out.scores.assign(Sf.data_ptr<float>(), Sf.data_ptr<float>() + Sf.numel());
  return out;
}

}  // namespace teap::eap
