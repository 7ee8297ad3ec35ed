#include "eap/score.hpp"

#include <ATen/ATen.h>

#include "model/model.hpp"
#include "util/error.hpp"

namespace teap::eap {
namespace {

at::Tensor as_tensor(const std::vector<int64_t>& v, int64_t rows, int64_t cols) {
  return at::tensor(at::ArrayRef<int64_t>(v), at::kLong).view({rows, cols});
}

// LD_i [B] from the final hidden state, with the chosen pairing.
at::Tensor logit_diff(const model::Model& m, const at::Tensor& hidden, const at::Tensor& clean, const at::Tensor& corrupt,
                      MetricPairing pairing) {
  const int64_t B = clean.size(0);
  if (pairing == MetricPairing::Own) {
    const at::Tensor l = model::last_position_logits(m, hidden, at::stack({clean, corrupt}, 1));  // [B,2]
    return l.select(1, 0) - l.select(1, 1);
  }
  const at::Tensor all = at::cat({clean, corrupt}).unsqueeze(0).expand({B, 2 * B}).contiguous();
  const at::Tensor l = model::last_position_logits(m, hidden, all);  // [B,2B]
  return l.narrow(1, 0, B).mean(1) - l.narrow(1, B, B).mean(1);
}

std::vector<double> to_vector(const at::Tensor& t) {
  const at::Tensor c = t.detach().to(at::kCPU, at::kDouble).contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

at::Tensor grad_or_zeros(const at::Tensor& t) {
  return t.grad().defined() ? t.grad() : at::zeros_like(t);
}

}  // namespace

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

std::vector<double> logit_diffs(const model::Model& m, const std::vector<int64_t>& ids, int n_prompts, int n_positions,
                                const std::vector<int64_t>& clean_answer, const std::vector<int64_t>& corrupt_answer,
                                MetricPairing pairing) {
  at::NoGradGuard no_grad;
  const at::Tensor hidden = model::forward(m, as_tensor(ids, n_prompts, n_positions));
  return to_vector(logit_diff(m, hidden, as_tensor(clean_answer, n_prompts, 1).view({-1}).to(m.device),
                              as_tensor(corrupt_answer, n_prompts, 1).view({-1}).to(m.device), pairing));
}

BatchScores score_batch(const model::Model& m, const Graph& g, const BatchInput& in, const ScoreOptions& options) {
  check_batch(m, in);
  const auto& c = m.config;
  if (g.n_layers != c.n_layers || g.n_heads != c.n_heads)
    throw InputError("graph of " + std::to_string(g.n_layers) + " layers x " + std::to_string(g.n_heads) +
                     " heads does not fit the model (" + std::to_string(c.n_layers) + " x " + std::to_string(c.n_heads) + ")");
  const int64_t B = in.n_prompts, P = in.n_positions, N = B * P, d = c.d_model, H = c.n_heads, dh = c.d_head;
  const auto ct = m.dtype == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor clean_tok = as_tensor(in.clean_answer, B, 1).view({-1}).to(m.device);
  const at::Tensor corrupt_tok = as_tensor(in.corrupt_answer, B, 1).view({-1}).to(m.device);

  BatchScores out;
  out.n_upstream = g.n_upstream();
  out.n_downstream = g.n_downstream();
  out.n_prompts = static_cast<int>(B);
  out.n_positions = static_cast<int>(P);

  model::ActivationRecord corrupt;
  {
    at::NoGradGuard no_grad;
    const at::Tensor hidden = model::forward(m, as_tensor(in.corrupt_ids, B, P), &corrupt);
    out.corrupt_ld = to_vector(logit_diff(m, hidden, clean_tok, corrupt_tok, options.pairing));
  }

  model::ActivationRecord clean;
  clean.with_grads = true;
  {
    at::AutoGradMode grad_on(true);
    const at::Tensor hidden = model::forward(m, as_tensor(in.clean_ids, B, P), &clean);
    const at::Tensor ld = logit_diff(m, hidden, clean_tok, corrupt_tok, options.pairing);
    ld.mean().backward();  // gradient of the batch's mean LD: S_b is a mean over prompts
    out.clean_ld = to_vector(ld);
    at::NoGradGuard no_grad;
    const at::Tensor last = model::full_logits(m, hidden.detach().narrow(1, P - 1, 1)).squeeze(1);  // [B,V]
    const at::Tensor expected =
        in.expected.empty() ? clean_tok : as_tensor(in.expected, B, 1).view({-1}).to(m.device);
    out.clean_correct = static_cast<int>((last.argmax(-1) == expected).sum().item<int64_t>());
  }

  at::NoGradGuard no_grad;
  // Upstream differences a_u_clean - a_u_corrupt, one row per upstream node: A [U, N, d].
  const int64_t U = g.n_upstream();
  at::Tensor A = at::empty({U, N, d}, at::TensorOptions().dtype(ct).device(m.device));
  for (int l = 0; l < c.n_layers; ++l) {
    const auto& rc = clean.layers[l];
    const auto& rr = corrupt.layers[l];
    const at::Tensor z_diff = (rc.z.detach() - rr.z).to(ct).permute({2, 0, 1, 3}).reshape({H, N, dh});
    const at::Tensor w_o = m.weights.layers[l].w_o.to(ct).view({d, H, dh}).permute({1, 2, 0});  // [H,dh,d]
    A.narrow(0, g.head_up(l, 0), H).copy_(at::bmm(z_diff, w_o));  // each head's z_h . W_O[h]
    A.select(0, g.mlp_up(l)).copy_((rc.mlp_out.detach() - rr.mlp_out).to(ct).reshape({N, d}));
  }
  if (g.input_up() >= 0) A.select(0, g.input_up()).copy_((clean.embed.detach() - corrupt.embed).to(ct).reshape({N, d}));
  const at::Tensor A2 = A.view({U, N * d});

  at::Tensor S = at::zeros({U, g.n_downstream()}, at::TensorOptions().dtype(ct).device(m.device));
  // Scores of the rows [0, rows) and the input row into the columns whose gradients G [k, N*d] hold.
  auto contract = [&](int64_t rows, const at::Tensor& G, int64_t col0, int64_t ncols) {
    if (rows > 0) S.narrow(0, 0, rows).narrow(1, col0, ncols).copy_(at::matmul(A2.narrow(0, 0, rows), G.t()));
    if (g.input_up() >= 0) S.select(0, g.input_up()).narrow(0, col0, ncols).copy_(at::matmul(G, A2.select(0, g.input_up())));
  };
  for (int b = 0; b < c.n_layers; ++b) {
    const auto& rc = clean.layers[b];
    const auto& w = m.weights.layers[b];
    if (g.heads_down()) {
      // Gradient at each query head's private copy of the residual stream: the norm's VJP of
      // dq_h . W_Q[h] (and likewise K, V with the shared key/value head of h's group).
      const int64_t group = H / c.n_kv_heads;
      auto per_head = [&](const at::Tensor& proj_out, const at::Tensor& weight, int64_t rows_per_head_group) {
        const at::Tensor dg = grad_or_zeros(proj_out).to(ct).permute({2, 0, 1, 3}).reshape({H, N, dh});
        at::Tensor wh = weight.to(ct).view({-1, dh, d});
        if (rows_per_head_group > 1) wh = wh.repeat_interleave(rows_per_head_group, 0);
        return at::bmm(dg, wh);  // [H, N, d]
      };
      const at::Tensor gy = at::cat({per_head(rc.q, w.w_q, 1), per_head(rc.k, w.w_k, group), per_head(rc.v, w.w_v, group)})
                                .view({3 * H, B, P, d});
      const at::Tensor G = model::norm_vjp(m, b, 1, rc.resid_pre, gy).reshape({3 * H, N * d});
      contract(int64_t(b) * (H + 1), G, g.q_down(b, 0), 3 * H);
    }
    const at::Tensor Gm = model::norm_vjp(m, b, 2, rc.resid_mid, grad_or_zeros(rc.mlp_in)).reshape({1, N * d});
    contract(int64_t(b) * (H + 1) + H, Gm, g.mlp_down(b), 1);
  }
  if (g.logits_down() >= 0) {
    const at::Tensor Gl = grad_or_zeros(clean.resid_final).to(ct).reshape({1, N * d});
    S.narrow(1, g.logits_down(), 1).copy_(at::matmul(A2, Gl.t()));
  }
  const at::Tensor Sf = S.to(at::kCPU, at::kFloat).contiguous();
  out.scores.assign(Sf.data_ptr<float>(), Sf.data_ptr<float>() + Sf.numel());
  return out;
}

}  // namespace teap::eap
