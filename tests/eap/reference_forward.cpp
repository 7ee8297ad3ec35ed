// The reference forward pass: one loop over layers, one over query heads, each head reading its
// own copies of the residual stream. Norms, softmax, gelu_new and SiLU are written out by hand
// from the Hugging Face formulas so that nothing is shared with src/model/.
#include "reference_forward.hpp"

#include <cmath>
#include <limits>

namespace teap::eap_test {
namespace {

at::Tensor f64(const at::Tensor& t) { return t.defined() ? t.to(at::kCPU, at::kDouble) : at::Tensor(); }

}  // namespace

RefRun reference_forward(const model::Model& m, const at::Tensor& ids_in, const Deltas& deltas) {
  const auto& c = m.config;
  const auto& W = m.weights;
  const bool neo = c.family == model::Family::GptNeo;
  const at::Tensor ids = ids_in.to(at::kCPU, at::kLong);
  const int64_t B = ids.size(0), P = ids.size(1), d = c.d_model, H = c.n_heads, Hkv = c.n_kv_heads,
                dh = c.d_head, group = H / Hkv;
  const double eps = c.norm_eps;

  auto plus = [&](const at::Tensor& x, const Node& n) {
    const auto it = deltas.find(n);
    return it == deltas.end() ? x : x + f64(it->second).view({B, P, d});
  };
  // LayerNorm (gpt_neo) or RMSNorm (qwen2, llama) over the last dimension.
  auto norm = [&](const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
    if (neo) {
      const at::Tensor mu = x.mean(-1, true);
      const at::Tensor var = (x - mu).pow(2).mean(-1, true);
      return (x - mu) / at::sqrt(var + eps) * f64(w) + f64(b);
    }
    return x / at::sqrt(x.pow(2).mean(-1, true) + eps) * f64(w);
  };

  // Rotary tables ("rotate half"): angle p * inv_freq[i], duplicated over both halves.
  at::Tensor cos, sin;
  if (!neo) {
    const at::Tensor pos = at::arange(P, at::TensorOptions().dtype(at::kDouble));
    const at::Tensor ang = at::outer(pos, f64(W.rope_inv_freq));
    cos = at::cat({ang, ang}, -1).cos();  // [P, dh]
    sin = at::cat({ang, ang}, -1).sin();
  }
  auto rotate = [&](const at::Tensor& x) {  // x [B,P,dh]
    const at::Tensor x1 = x.narrow(-1, 0, dh / 2), x2 = x.narrow(-1, dh / 2, dh / 2);
    return x * cos + at::cat({-x2, x1}, -1) * sin;
  };

  RefRun run;
  const at::Tensor tok = f64(W.wte).index_select(0, ids.reshape({-1})).view({B, P, d});
  run.embed = neo ? tok + f64(W.wpe).narrow(0, 0, P).unsqueeze(0) : tok;
  at::Tensor x = run.embed;

  for (int l = 0; l < c.n_layers; ++l) {
    const auto& w = W.layers[l];
    run.resid_pre.push_back(x);
    // Which keys each query position sees: causal, and in a local layer 0 <= i-j < window.
    at::Tensor allowed = at::ones({P, P}, at::kBool).tril();
    if (c.local_layer[l]) {
      const at::Tensor i = at::arange(P).view({P, 1}), j = at::arange(P).view({1, P});
      allowed = allowed & ((i - j) < c.window_size);
    }
    const double scale = neo ? 1.0 : 1.0 / std::sqrt(double(dh));
    at::Tensor attn = at::zeros({B, P, d}, at::kDouble);
    run.head.emplace_back();
    for (int h = 0; h < H; ++h) {
      const int64_t kvh = h / group;
      auto project = [&](const Node& n, const at::Tensor& wm, const at::Tensor& bias, int64_t row_block) {
        const at::Tensor xn = norm(plus(x, n), w.ln1_w, w.ln1_b);
        at::Tensor y = at::matmul(xn, f64(wm).narrow(0, row_block * dh, dh).t());
        if (bias.defined()) y = y + f64(bias).narrow(0, row_block * dh, dh);
        return y;  // [B,P,dh]
      };
      at::Tensor q = project({Port::Q, l, h}, w.w_q, w.b_q, h);
      at::Tensor k = project({Port::K, l, h}, w.w_k, w.b_k, kvh);
      const at::Tensor v = project({Port::V, l, h}, w.w_v, w.b_v, kvh);
      if (!neo) {
        q = rotate(q);
        k = rotate(k);
      }
      at::Tensor s = at::matmul(q, k.transpose(1, 2)) * scale;  // [B,P,P]
      s = s.masked_fill(allowed.logical_not(), -std::numeric_limits<double>::infinity());
      const at::Tensor e = at::exp(s - std::get<0>(s.max(-1, true)));
      const at::Tensor probs = e / e.sum(-1, true);
      const at::Tensor z = at::matmul(probs, v);                                     // [B,P,dh]
      const at::Tensor out = at::matmul(z, f64(w.w_o).narrow(1, h * dh, dh).t());  // [B,P,d]
      run.head[l].push_back(out);
      attn = attn + out;
    }
    if (w.b_o.defined()) attn = attn + f64(w.b_o);
    const at::Tensor mid = x + attn;
    const at::Tensor xn = norm(plus(mid, {Port::Mlp, l, 0}), w.ln2_w, w.ln2_b);
    at::Tensor mlp;
    if (neo) {
      const at::Tensor a = at::matmul(xn, f64(w.w_fc).t()) + f64(w.b_fc);
      const at::Tensor g = 0.5 * a * (1.0 + at::tanh(std::sqrt(2.0 / M_PI) * (a + 0.044715 * a.pow(3))));
      mlp = at::matmul(g, f64(w.w_proj).t()) + f64(w.b_proj);
    } else {
      const at::Tensor gate = at::matmul(xn, f64(w.w_gate).t());
      const at::Tensor up = at::matmul(xn, f64(w.w_up).t());
      mlp = at::matmul(gate / (1.0 + at::exp(-gate)) * up, f64(w.w_down).t());
    }
    run.mlp.push_back(mlp);
    x = mid + mlp;
  }
  run.resid_final = x;
  run.logits = at::matmul(norm(plus(x, {Port::Logits, 0, 0}), W.ln_f_w, W.ln_f_b), f64(W.lm_head).t());
  return run;
}

std::vector<double> ref_logit_diffs(const RefRun& r, const std::vector<int64_t>& clean_answer,
                                    const std::vector<int64_t>& corrupt_answer, bool broadcast) {
  const int64_t B = r.logits.size(0), P = r.logits.size(1);
  const at::Tensor last = r.logits.select(1, P - 1).contiguous();
  const double* L = last.data_ptr<double>();
  const int64_t V = last.size(1);
  std::vector<double> out(B);
  for (int64_t i = 0; i < B; ++i) {
    if (!broadcast) {
      out[i] = L[i * V + clean_answer[i]] - L[i * V + corrupt_answer[i]];
    } else {
      double c = 0, r2 = 0;
      for (int64_t j = 0; j < B; ++j) {
        c += L[i * V + clean_answer[j]];
        r2 += L[i * V + corrupt_answer[j]];
      }
      out[i] = (c - r2) / B;
    }
  }
  return out;
}

double ref_mean_ld(const RefRun& r, const std::vector<int64_t>& clean_answer, const std::vector<int64_t>& corrupt_answer,
                   bool broadcast) {
  const auto ld = ref_logit_diffs(r, clean_answer, corrupt_answer, broadcast);
  double s = 0;
  for (double x : ld) s += x;
  return s / ld.size();
}

}  // namespace teap::eap_test
