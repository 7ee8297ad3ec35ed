#include "eap/gradient_sum.hpp"

#include <chrono>

#include "eap/runs.hpp"

namespace teap::eap {
namespace {

at::Tensor grad_of(const at::Tensor& t) { return t.grad().defined() ? t.grad().detach() : at::zeros_like(t); }

// [B,P,H,dh] -> [H, B*P, dh] in the compute type.
at::Tensor per_head(const at::Tensor& t, at::ScalarType ct, int64_t H, int64_t N, int64_t dh) {
  return t.detach().to(ct).permute({2, 0, 1, 3}).reshape({H, N, dh});
}

// Adds seconds since the last lap to a profile field; a no-op without a profile.
struct Lap {
  ScoreProfile* profile;
  std::chrono::steady_clock::time_point last = std::chrono::steady_clock::now();
  void operator()(double ScoreProfile::*field) {
    if (!profile) return;
    const auto now = std::chrono::steady_clock::now();
    profile->*field += std::chrono::duration<double>(now - last).count();
    last = now;
  }
};

void accumulate(at::Tensor& sum, const at::Tensor& x) {
  if (sum.defined()) sum.add_(x);
  else sum = x.clone();
}

}  // namespace

at::Tensor head_mean_term(const model::Model& m, int b, int slot, const at::Tensor& value, const at::Tensor& dp) {
  const auto& c = m.config;
  const auto& w = m.weights.layers[b];
  const auto ct = dp.scalar_type();
  const int64_t H = c.n_heads, dh = c.d_head, N = dp.size(1), repeat = slot == 0 ? 1 : H / c.n_kv_heads;
  const at::Tensor& weight = slot == 0 ? w.w_q : slot == 1 ? w.w_k : w.w_v;
  const at::Tensor& bias = slot == 0 ? w.b_q : slot == 1 ? w.b_k : w.b_v;
  // W[h] (w * xhat) = the projection less its bias and less W[h] b_norm (LayerNorm's bias).
  at::Tensor offset;  // [weight heads, dh]
  if (bias.defined()) offset = bias.to(ct).view({-1, dh});
  if (c.family == model::Family::GptNeo && w.ln1_b.defined()) {
    const at::Tensor wb = at::mv(weight.to(ct), w.ln1_b.to(ct)).view({-1, dh});
    offset = offset.defined() ? offset + wb : wb;
  }
  at::Tensor centred = per_head(value, ct, H, N, dh);
  if (offset.defined()) {
    if (repeat > 1) offset = offset.repeat_interleave(repeat, 0);
    centred = centred - offset.unsqueeze(1);
  }
  return (dp * centred).sum(-1) / double(c.d_model);
}

GradientSum::GradientSum(const model::Model& m, const Graph& g, int64_t n_rows)
    : m_(m),
      ct_(m.dtype == at::kDouble ? at::kDouble : at::kFloat),
      N_(n_rows),
      heads_down_(g.heads_down()),
      input_node_(g.input_up() >= 0),
      layers_(m.config.n_layers) {}

// As score.cpp: layer b's head destinations get a column only if something feeds them.
bool GradientSum::heads_needed(int b) const { return heads_down_ && (b > 0 || input_node_); }

void GradientSum::add(const model::ActivationRecord& rec) {
  at::NoGradGuard no_grad;
  const auto& c = m_.config;
  const int64_t H = c.n_heads, dh = c.d_head, d = c.d_model, N = N_;
  const bool layer_norm = c.family == model::Family::GptNeo;
  for (int b = 0; b < c.n_layers; ++b) {
    const auto& r = rec.layers[b];
    Layer& L = layers_[b];
    accumulate(L.mlp, model::norm_vjp(m_, b, 2, r.resid_mid.detach(), grad_of(r.mlp_in)).to(ct_).reshape({N, d}));
    if (!heads_needed(b)) continue;
    const at::Tensor x = r.resid_pre.detach().to(ct_).reshape({N, d});
    const at::Tensor mu = layer_norm ? x.mean(-1, true) : at::zeros({N, 1}, x.options());
    const at::Tensor rstd = at::rsqrt((x - mu).pow(2).mean(-1, true) + c.norm_eps);  // [N,1]
    const at::Tensor c2 = at::empty({3 * H, N}, x.options());
    const at::Tensor* values[3] = {&r.q, &r.k, &r.v};
    for (int slot = 0; slot < 3; ++slot) {
      const at::Tensor dp = per_head(grad_of(*values[slot]), ct_, H, N, dh) * rstd.unsqueeze(0);  // [H,N,dh]
      accumulate(L.dp[slot], dp);
      c2.narrow(0, slot * H, H).copy_(head_mean_term(m_, b, slot, *values[slot], dp));
    }
    L.c2.push_back(c2);
    L.xhat.push_back((x - mu) * rstd);
  }
  accumulate(final_, grad_of(rec.resid_final).to(ct_).reshape({N, d}));
  ++runs_;
}

void GradientSum::layer_gradients(int b, at::Tensor G) const {
  at::NoGradGuard no_grad;
  const auto& c = m_.config;
  const int64_t H = c.n_heads, dh = c.d_head, d = c.d_model, K = G.size(0);
  const Layer& L = layers_[b];
  G.select(0, K - 1).copy_(L.mlp);
  if (K == 1) return;
  TORCH_CHECK(heads_needed(b) && K == 3 * H + 1, "GradientSum: head rows asked for where none were kept");
  const auto& w = m_.weights.layers[b];
  const at::Tensor norm_w = w.ln1_w.to(ct_);
  const bool layer_norm = c.family == model::Family::GptNeo;
  const int64_t group = H / c.n_kv_heads;
  auto heads = [&](int slot, const at::Tensor& weight, int64_t repeat) {
    at::Tensor wh = weight.to(ct_).view({-1, dh, d}) * norm_w;  // [heads, dh, d]
    if (repeat > 1) wh = wh.repeat_interleave(repeat, 0);
    at::Tensor gw = G.narrow(0, slot * H, H);
    at::bmm_out(gw, L.dp[slot], wh);
    if (layer_norm) gw.sub_(at::bmm(L.dp[slot], wh.mean(-1, true)));
  };
  heads(0, w.w_q, 1);
  heads(1, w.w_k, group);
  heads(2, w.w_v, group);
  at::Tensor qkv = G.narrow(0, 0, 3 * H);
  for (size_t k = 0; k < L.c2.size(); ++k) qkv.addcmul_(L.c2[k].unsqueeze(2), L.xhat[k].unsqueeze(0), -1.0);
}

void gradient_runs(const model::Model& m, const BatchInput& in, const ScoreOptions& options, int64_t start,
                   const model::ActivationRecord* prefix, model::ActivationRecord& clean,
                   model::ActivationRecord& corrupt, BatchScores& out, GradientSum& sum) {
  const int64_t B = in.n_prompts, P = in.n_positions, Ps = P - start;
  const auto ct = m.dtype == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor clean_tok = answer_tokens(in.clean_answer, m.device);
  const at::Tensor corrupt_tok = answer_tokens(in.corrupt_answer, m.device);
  const bool ig = options.method == Method::EapIgInputs;
  Lap lap{options.profile};
  // One run's metric, its gradient added to `sum`; returns the recorded LDs and the top tokens.
  auto run = [&](model::ActivationRecord& rec, const at::Tensor* ids, const at::Tensor* embedding, bool grads,
                 const char* what, std::vector<double>* ld_out, double ScoreProfile::*phase) -> at::Tensor {
    rec.with_grads = grads;
    at::AutoGradMode grad_mode(grads);
    const at::Tensor hidden = ids ? model::forward(m, *ids, &rec, start, prefix)
                                  : model::forward_embedded(m, *embedding, &rec, start, prefix);
    const LogitDiffs ld = logit_diff(m, hidden, clean_tok, corrupt_tok, options.pairing, options.broadcast);
    if (ld_out) {
      *ld_out = to_vector(ld.recorded);
      check_finite(m, *ld_out, what);
    }
    lap(phase);
    if (grads) {
      ld.metric.mean().backward();  // S_b is a mean over prompts: the gradient of the batch's mean LD
      sum.add(rec);
      lap(&ScoreProfile::backward);
    }
    return ld_out ? top_tokens(m, hidden.select(1, Ps - 1)) : at::Tensor();  // [B]
  };

  const at::Tensor clean_ids = as_tensor(in.clean_ids, B, P), corrupt_ids = as_tensor(in.corrupt_ids, B, P);
  const at::Tensor top = run(clean, &clean_ids, nullptr, !ig, "clean logit difference", &out.clean_ld,
                             &ScoreProfile::clean_forward);
  record_clean_top(in, top, out);
  lap(&ScoreProfile::accuracy);
  // eap-ig-inputs' step k = 0 is the corrupt run itself (e_corr + 0 (e_clean - e_corr)).
  out.corrupt_top = to_ids(run(corrupt, &corrupt_ids, nullptr, true, "corrupt logit difference", &out.corrupt_ld,
                               &ScoreProfile::corrupt_forward));
  if (!ig) return;
  // Steps k = 1..m-1 on the clean tokens' positions [start, P): embedding e_corr + (k/m)(e_clean - e_corr).
  // The common prefix stays valid: before `start` the clean and corrupt tokens are equal, so are
  // their embeddings (token and position), and every interpolated embedding equals them there.
  at::Tensor e_corr, e_diff;
  {
    at::NoGradGuard no_grad;
    e_corr = corrupt.embed.detach().to(ct);
    e_diff = clean.embed.detach().to(ct) - e_corr;
  }
  const int steps = options.ig_steps;
  for (int k = 1; k < steps; ++k) {
    at::Tensor e;
    {
      at::NoGradGuard no_grad;
      e = (e_corr + e_diff * (double(k) / steps)).to(m.dtype);
    }
    model::ActivationRecord rec;
    run(rec, nullptr, &e, true, "interpolated logit difference", nullptr, &ScoreProfile::interpolated_forward);
  }
}

}  // namespace teap::eap
