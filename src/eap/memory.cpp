#include "eap/memory.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace teap::eap {

double batch_work_bytes(const WorkShape& s, int64_t prompts, int64_t positions, int64_t suffix, int64_t upstream_layers,
                        int64_t share) {
  const double L = s.n_layers, H = s.n_heads, d = s.d_model, dh = s.d_head, f = s.d_mlp, a = s.activation_bytes,
               c = s.compute_bytes;
  const double B = double(prompts), P = double(positions), S = double(std::min(suffix, positions));
  const double rows = B * S;  // suffix positions of every prompt: what both runs compute
  // Per suffix row and layer, the clean run keeps its record (residual streams, z, q/k/v per
  // query head, the MLP's input and output) and what autograd saves for the backward pass
  // (rotated q and k, the norms' float32 inputs, the MLP's two hidden tensors, model/gated_mlp.cpp;
  // GPT-Neo's MLP keeps two as well, its input to gelu and gelu's output).
  const double clean = (8.0 * H * dh + 6.0 * d + 2.0 * f) * a + 4.0 * d * 4.0;
  // Attention probabilities over every key, float32 scores and their softmax, kept per layer by
  // autograd.
  const double attention = 2.0 * H * P * 4.0;
  // A gradient method's corrupt run: the same again, in every micro-batch.
  const double runs = s.corrupt_with_gradients ? 2.0 : 1.0;
  // The upstream differences of every layer, and one layer's gradients with its temporaries.
  const double held = upstream_layers > 0 ? std::min<double>(double(upstream_layers), L) : L;
  const double differences = held * (H + 1.0) * d * c + 2.0 * d * c;
  const double gradients = (3.0 * H + 1.0) * d * c + 3.0 * H * dh * c + 4.0 * d * c;
  // The MLP inputs' and the logits' gradients, every layer's, kept for one product after the layers.
  const double mlp_columns = (L + 1.0) * d * c;
  // What the micro-batches of a share hold for the whole share:
  const double Bs = double(std::max(share, prompts)), share_rows = Bs * S;
  // - the common prefix's keys and values per key/value head (no gradients; the rest of its record
  //   is dropped layer by layer), which every micro-batch's attention reads;
  const double prefix = Bs * (P - S) * L * (2.0 * s.n_kv_heads * dh) * a;
  // - the corrupt run (method eap), once for the share without gradients: its record keeps each
  //   layer's z and MLP output and the embedding; while it runs (before the micro-batches), one
  //   layer's temporaries for all of the share's rows: the MLP's three hidden tensors, the residual
  //   stream, its norm and the attention's output, and the attention's float32 scores and softmax;
  const double corrupt = s.corrupt_with_gradients ? 0.0 : share_rows * (L * (H * dh + d) + d) * a;
  // Products through float32: the largest operands are an MLP's (an input of f and its float32
  // copy, a product of f), and the weights' buffer is as large as the unembedding's block.
  const double product_copies = s.products_in_float32 ? 2.0 * f * 4.0 : 0.0;
  const double weight_buffer = s.products_in_float32 ? 4.0 * std::min(double(int64_t(1) << 24), std::max(s.vocab * d, d * f)) : 0.0;
  const double corrupt_pass =
      s.corrupt_with_gradients ? 0.0 : share_rows * (3.0 * f + 4.0 * d) * a + Bs * 2.0 * H * S * P * 4.0 + share_rows * product_copies;
  // - the last position's full logits of both runs, float32.
  const double logits = 2.0 * Bs * s.vocab * 4.0;
  return std::max(runs * rows * L * (clean + attention) + rows * product_copies, corrupt_pass) +
         rows * (differences + gradients + mlp_columns) + corrupt + prefix + logits + weight_buffer;
}

int64_t micro_batch_prompts(const WorkShape& s, int64_t prompts, int64_t positions, int64_t suffix, double budget_bytes,
                            int64_t upstream_layers) {
  if (prompts <= 0) return 0;
  auto fits = [&](int64_t n) { return batch_work_bytes(s, n, positions, suffix, upstream_layers, prompts) <= budget_bytes; };
  if (fits(prompts)) return prompts;
  int64_t lo = 0, hi = prompts;  // work(lo) fits (or lo == 0), work(hi) does not
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    (fits(mid) ? lo : hi) = mid;
  }
  return lo;
}

int64_t upstream_layers_per_pass(const WorkShape& s, int64_t positions, int64_t suffix, double budget_bytes, int64_t share) {
  if (batch_work_bytes(s, 1, positions, suffix, 0, share) <= budget_bytes) return 0;
  for (int64_t layers = s.n_layers - 1; layers >= 1; --layers)
    if (batch_work_bytes(s, 1, positions, suffix, layers, share) <= budget_bytes) return layers;
  return -1;
}

double parse_bytes(const std::string& text) {
  const char* p = text.c_str();
  while (std::isspace(static_cast<unsigned char>(*p))) ++p;
  if (!std::isdigit(static_cast<unsigned char>(*p))) return -1;
  char* end = nullptr;
  const double v = std::strtod(p, &end);
  if (end == p || !std::isfinite(v) || v < 0) return -1;
  std::string unit(end);
  unit.erase(std::remove_if(unit.begin(), unit.end(), [](unsigned char ch) { return std::isspace(ch); }), unit.end());
  static const struct {
    const char* name;
    double scale;
  } units[] = {{"", 1},       {"B", 1},          {"KiB", 1024.0},   {"MiB", 1048576.0}, {"GiB", 1073741824.0},
               {"TiB", 1099511627776.0},         {"KB", 1e3},       {"MB", 1e6},        {"GB", 1e9},
               {"TB", 1e12}};
  for (const auto& u : units)
    if (unit == u.name) return v * u.scale;
  return -1;
}

std::string format_bytes(double bytes) {
  char buf[32];
  if (bytes >= 1073741824.0) std::snprintf(buf, sizeof buf, "%.1f GiB", bytes / 1073741824.0);
  else std::snprintf(buf, sizeof buf, "%.1f MiB", bytes / 1048576.0);
  return buf;
}

}  // namespace teap::eap
