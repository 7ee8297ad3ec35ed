// Self-consistency of the forward pass and its activation record, and the loader's bad-input errors
// (a shape that disagrees with the config, a missing tensor, an unknown model_type).
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <tuple>
#include <utility>

#include "model/blocks.hpp"
#include "model/config.hpp"
#include "model/make.hpp"
#include "model/model.hpp"
#include "model/products.hpp"
#include "model/safetensors.hpp"
#include "util/error.hpp"
#include "util/files.hpp"

using namespace teap;
using model::Family;

namespace {

model::ModelConfig tiny(Family f) {
  model::ModelConfig c;
  c.family = f;
  c.model_type = model::family_name(f);
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = f == Family::GptNeo ? 4 : 2;
  c.d_model = 32;
  c.d_head = 8;
  c.d_mlp = 64;
  c.vocab_size = 61;
  c.max_positions = 64;
  c.norm_eps = 1e-5;
  c.local_layer = {false, f == Family::GptNeo};
  c.window_size = 3;  // shorter than the prompts below
  c.activation = f == Family::GptNeo ? "gelu_new" : "silu";
  c.tie_word_embeddings = f != Family::Llama;
  c.qkv_bias = f == Family::Qwen2;
  c.rope_theta = f == Family::GptNeo ? 0 : 10000.0;
  if (f == Family::Llama) c.rope_scaling = model::RopeScaling{"llama3", 8.0, 1.0, 4.0, 16};
  return c;
}

at::Tensor ids(int B, int P, int seed) {
  at::Generator g = at::detail::createCPUGenerator(seed);
  return at::randint(0, 61, {B, P}, g, at::kLong);
}

class Families : public ::testing::TestWithParam<Family> {};

// z_h . W_O[h] summed over heads, plus W_O's bias, is the attention block's output: recovered as
// resid_mid - resid_pre.
TEST_P(Families, HeadOutputsPlusBiasEqualTheAttentionOutput) {
  const model::Model m = model::random_model(tiny(GetParam()), 3, at::kDouble);
  model::ActivationRecord rec;
  at::NoGradGuard ng;
  model::forward(m, ids(3, 9, 1), &rec);
  for (int l = 0; l < 2; ++l) {
    const auto& r = rec.layers[l];
    const auto& w = m.weights.layers[l];
    at::Tensor sum = at::zeros_like(r.resid_pre);
    for (int h = 0; h < 4; ++h)
      sum += at::matmul(r.z.select(2, h), w.w_o.narrow(1, h * 8, 8).t());
    if (w.b_o.defined()) sum += w.b_o;
    EXPECT_LT((sum - (r.resid_mid - r.resid_pre)).abs().max().item<double>(), 1e-12) << "layer " << l;
    // The MLP output closes the layer: the next layer's input.
    const at::Tensor next = l + 1 < 2 ? rec.layers[l + 1].resid_pre : rec.resid_final;
    EXPECT_LT((r.resid_mid + r.mlp_out - next).abs().max().item<double>(), 1e-12);
  }
}

TEST_P(Families, RecordingDoesNotChangeTheLogits) {
  const model::Model m = model::random_model(tiny(GetParam()), 4, at::kFloat);
  const at::Tensor x = ids(2, 7, 2);
  at::Tensor plain, recorded, with_grads;
  {
    at::NoGradGuard ng;
    plain = model::full_logits(m, model::forward(m, x));
    model::ActivationRecord rec;
    recorded = model::full_logits(m, model::forward(m, x, &rec));
  }
  model::ActivationRecord rec;
  rec.with_grads = true;
  with_grads = model::full_logits(m, model::forward(m, x, &rec)).detach();
  EXPECT_TRUE(at::equal(plain, recorded));
  EXPECT_TRUE(at::equal(plain, with_grads));
}

TEST_P(Families, ABatchEqualsThePromptsOneByOne) {
  const model::Model m = model::random_model(tiny(GetParam()), 5, at::kDouble);
  const at::Tensor x = ids(4, 11, 3);
  at::NoGradGuard ng;
  const at::Tensor all = model::full_logits(m, model::forward(m, x));
  for (int i = 0; i < 4; ++i) {
    const at::Tensor one = model::full_logits(m, model::forward(m, x.narrow(0, i, 1)));
    EXPECT_LT((one - all.narrow(0, i, 1)).abs().max().item<double>(), 1e-12) << "prompt " << i;
  }
}

// Starting at position p0 with the keys and values of a run on the same prefix gives the same
// suffix as the full run (what EAP's corrupt run relies on).
TEST_P(Families, RunFromAPrefixEqualsTheFullRun) {
  const model::Model m = model::random_model(tiny(GetParam()), 6, at::kDouble);
  const at::Tensor x = ids(2, 10, 4);
  at::NoGradGuard ng;
  const at::Tensor full = model::forward(m, x);
  model::ActivationRecord prefix;
  model::forward(m, x.narrow(1, 0, 4), &prefix);
  const at::Tensor tail = model::forward(m, x, nullptr, 4, &prefix);
  EXPECT_LT((tail - full.narrow(1, 4, 6)).abs().max().item<double>(), 1e-12);
}

// A run that reads the last position only (what EAP's runs read) computes the last layer's
// attention and MLP there alone: the same last-position output, the same gradients at every
// recorded point for a loss on that output, and the full run's gradients are zero where the short
// run has none (which is why score_batch may take them as zero). Also from a prefix, whose
// keys-and-values-only run leaves an empty output and the same keys and values (per key/value head).
TEST_P(Families, LastPositionOnlyKeepsTheLastPositionAndItsGradients) {
  const model::Model m = model::random_model(tiny(GetParam()), 8, at::kDouble);
  const at::Tensor x = ids(3, 10, 5);
  const int64_t start = 4, Ps = 6, last = m.config.n_layers - 1;
  model::ActivationRecord prefix, prefix_kv;
  {
    at::NoGradGuard ng;
    model::forward(m, x.narrow(1, 0, start), &prefix);
    prefix_kv.keys_values_only = true;
    EXPECT_EQ(model::forward(m, x.narrow(1, 0, start), &prefix_kv).size(1), 0);
  }
  const int64_t group = m.config.n_heads / m.config.n_kv_heads;
  for (int l = 0; l <= last; ++l) {  // one per key/value head, the full record's repeated per query head
    ASSERT_EQ(prefix_kv.layers[l].k.size(2), m.config.n_kv_heads);
    EXPECT_LT((prefix_kv.layers[l].k.repeat_interleave(group, 2) - prefix.layers[l].k).abs().max().item<double>(), 1e-12);
    EXPECT_LT((prefix_kv.layers[l].v.repeat_interleave(group, 2) - prefix.layers[l].v).abs().max().item<double>(), 1e-12);
  }
  at::Generator g = at::detail::createCPUGenerator(12);
  const at::Tensor r = at::randn({3, m.config.d_model}, g, at::kDouble);
  model::ActivationRecord full, short_run;
  full.with_grads = short_run.with_grads = true;
  short_run.last_position_only = true;
  at::AutoGradMode grad_on(true);
  const at::Tensor h_full = model::forward(m, x, &full, start, &prefix_kv);
  const at::Tensor h_short = model::forward(m, x, &short_run, start, &prefix_kv);
  ASSERT_EQ(h_full.size(1), Ps);
  ASSERT_EQ(h_short.size(1), 1);
  EXPECT_LT((h_short.select(1, 0) - h_full.select(1, Ps - 1)).abs().max().item<double>(), 1e-12);
  (h_full.select(1, Ps - 1) * r).sum().backward();
  (h_short.select(1, 0) * r).sum().backward();
  auto close = [](const at::Tensor& a, const at::Tensor& b) {
    return (a - b).abs().max().item<double>() <= 1e-12 * std::max(1.0, b.abs().max().item<double>());
  };
  for (int l = 0; l <= last; ++l) {
    const auto &f = full.layers[l], &s = short_run.layers[l];
    for (const auto& [name, a, b] : {std::tuple{"q", s.q, f.q}, std::tuple{"k", s.k, f.k}, std::tuple{"v", s.v, f.v}}) {
      ASSERT_EQ(a.sizes(), b.sizes()) << name << " layer " << l;
      EXPECT_TRUE(close(a.grad(), b.grad())) << name << "'s gradient, layer " << l;
    }
    const int64_t n = l == last ? 1 : Ps;  // the positions the short run's layer covers after its attention
    ASSERT_EQ(s.z.size(1), n);
    ASSERT_EQ(s.mlp_in.size(1), n);
    EXPECT_TRUE(close(s.z, f.z.narrow(1, Ps - n, n))) << "layer " << l;
    EXPECT_TRUE(close(s.mlp_out, f.mlp_out.narrow(1, Ps - n, n))) << "layer " << l;
    EXPECT_TRUE(close(s.resid_mid, f.resid_mid.narrow(1, Ps - n, n))) << "layer " << l;
    EXPECT_TRUE(close(s.mlp_in.grad(), f.mlp_in.grad().narrow(1, Ps - n, n))) << "layer " << l;
    if (n < Ps) EXPECT_EQ(f.mlp_in.grad().narrow(1, 0, Ps - n).abs().max().item<double>(), 0.0);
  }
  EXPECT_TRUE(close(short_run.resid_final.grad().select(1, 0), full.resid_final.grad().select(1, Ps - 1)));
  EXPECT_EQ(full.layers[last].q.grad().narrow(1, 0, Ps - 1).abs().max().item<double>(), 0.0);
}

TEST_P(Families, NormVjpMatchesAutograd) {
  const model::Model m = model::random_model(tiny(GetParam()), 7, at::kDouble);
  at::Generator g = at::detail::createCPUGenerator(9);
  const at::Tensor x = at::randn({2, 5, 32}, g, at::kDouble).requires_grad_(true);
  const at::Tensor gy = at::randn({3, 2, 5, 32}, g, at::kDouble);
  for (int which : {1, 2}) {
    const at::Tensor y = model::apply_norm(m, 1, which, x);
    const at::Tensor vjp = model::norm_vjp(m, 1, which, x, gy);  // all three cotangents at once
    for (int k = 0; k < 3; ++k) {
      if (x.grad().defined()) x.mutable_grad().zero_();
      y.backward(gy[k], /*retain_graph=*/true);
      EXPECT_LT((vjp[k] - x.grad()).abs().max().item<double>(), 1e-12) << "norm " << which << " cotangent " << k;
    }
  }
}

// The gated MLP's own backward pass (any run's that keeps gradients) against autograd through
// the same formula: equal outputs, input gradients within float64 rounding.
TEST(GatedMlp, OwnBackwardMatchesAutograd) {
  at::Generator g = at::detail::createCPUGenerator(11);
  model::LayerWeights w;
  w.w_gate = at::randn({64, 32}, g, at::kDouble) * 0.2;
  w.w_up = at::randn({64, 32}, g, at::kDouble) * 0.2;
  w.w_down = at::randn({32, 64}, g, at::kDouble) * 0.2;
  const at::Tensor x = at::randn({2, 5, 32}, g, at::kDouble);
  const at::Tensor gy = at::randn({2, 5, 32}, g, at::kDouble);
  at::AutoGradMode grad_on(true);
  const at::Tensor x1 = x.clone().requires_grad_(true), x2 = x.clone().requires_grad_(true);
  const at::Tensor y1 = model::gated_mlp_recorded(w, x1);
  const at::Tensor y2 = at::linear(at::silu(at::linear(x2, w.w_gate)) * at::linear(x2, w.w_up), w.w_down);
  ASSERT_EQ(y1.sizes(), y2.sizes());
  EXPECT_TRUE(at::equal(y1, y2));
  y1.backward(gy);
  y2.backward(gy);
  ASSERT_TRUE(x1.grad().defined());
  const double scale = x2.grad().abs().max().item<double>();
  ASSERT_GT(scale, 0.0);
  EXPECT_LT((x1.grad() - x2.grad()).abs().max().item<double>(), 1e-12 * scale);
}

// A bfloat16 input gradient in blocks (both layouts: blocks of the inner dimension, of the output's
// columns) equals the exact product within bfloat16 rounding; float32 is never blocked. The bound is
// a few roundings of the largest entry (products this small do not go through oneDNN, and LibTorch's
// own bfloat16 kernel rounds more often: 1% measured); a missing or misplaced block is off by the
// entry's size.
TEST(GatedMlp, BlockedInputGradientMatchesOneProduct) {
  // The blocks are for LibTorch's own bfloat16 product: that path, whatever the CPU.
  model::force_bf16_products_native(true);
  at::Generator g = at::detail::createCPUGenerator(12);
  for (const auto& [out, in] : {std::pair<int64_t, int64_t>{80, 16}, {16, 80}}) {
    const at::Tensor dy = at::randn({7, out}, g, at::kFloat).to(at::kBFloat16);
    const at::Tensor w = at::randn({out, in}, g, at::kFloat).to(at::kBFloat16);
    const at::Tensor exact = at::mm(dy.to(at::kDouble), w.to(at::kDouble));
    const at::Tensor blocked = model::input_gradient(dy, w, 16);
    ASSERT_EQ(blocked.scalar_type(), at::kBFloat16);
    ASSERT_EQ(blocked.sizes(), exact.sizes());
    const double scale = exact.abs().max().item<double>();
    EXPECT_LT((blocked.to(at::kDouble) - exact).abs().max().item<double>(), 3e-2 * scale) << out << " x " << in;
    EXPECT_TRUE(at::equal(model::input_gradient(dy.to(at::kFloat), w.to(at::kFloat), 16),
                          at::mm(dy.to(at::kFloat), w.to(at::kFloat))));
  }
  model::force_bf16_products_native(std::nullopt);
}

// --- The loader's errors: one line naming the file and the tensor or key -------------------------

std::string saved(Family f, const std::string& name) {
  const auto dir = std::filesystem::temp_directory_path() / ("teap_forward_" + std::to_string(::getpid()) + "_" + name);
  std::filesystem::remove_all(dir);
  model::save_model(model::random_model(tiny(f), 1), dir.string());
  return dir.string();
}

std::string load_error(const std::string& dir) {
  try {
    model::load_model(dir);
  } catch (const InputError& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(Loader, ShapeThatDisagreesWithTheConfig) {
  const std::string dir = saved(Family::Qwen2, "shape");
  model::ModelConfig c = model::parse_config(dir + "/config.json");
  c.d_mlp = 48;
  write_file_atomic(dir + "/config.json", model::config_to_json(c));
  const std::string e = load_error(dir);
  EXPECT_NE(e.find("model.safetensors"), std::string::npos) << e;
  EXPECT_NE(e.find("mlp.gate_proj.weight' has shape [64, 32], the config implies [48, 32]"), std::string::npos) << e;
  EXPECT_EQ(e.find('\n'), std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST(Loader, MissingTensor) {
  const std::string dir = saved(Family::GptNeo, "missing");
  {
    const model::Checkpoint ck = model::Checkpoint::open(dir);
    std::vector<model::TensorView> keep;
    for (const auto& n : ck.names())
      if (n != "transformer.h.1.ln_2.bias") keep.push_back(ck.get(n));
    model::write_safetensors(dir + "/model.safetensors.new", keep);
  }
  std::filesystem::rename(dir + "/model.safetensors.new", dir + "/model.safetensors");
  const std::string e = load_error(dir);
  EXPECT_NE(e.find("transformer.h.1.ln_2.bias"), std::string::npos) << e;
  EXPECT_NE(e.find(dir), std::string::npos) << e;
  std::filesystem::remove_all(dir);
}

TEST(Loader, UnknownModelTypeListsTheSupportedOnes) {
  const std::string dir = saved(Family::Llama, "type");
  std::string cfg = read_file(dir + "/config.json");
  cfg.replace(cfg.find("\"llama\""), 7, "\"mamba\"");
  write_file_atomic(dir + "/config.json", cfg);
  const std::string e = load_error(dir);
  EXPECT_NE(e.find("config.json"), std::string::npos) << e;
  EXPECT_NE(e.find("mamba"), std::string::npos) << e;
  EXPECT_NE(e.find("gpt_neo"), std::string::npos) << e;
  EXPECT_NE(e.find("qwen2"), std::string::npos) << e;
  std::filesystem::remove_all(dir);
}

TEST(Loader, VocabularyTrimDropsTheExtraRows) {
  model::ModelConfig c = tiny(Family::GptNeo);
  c.vocab_size = 62;  // one pad row beyond a 61-token tokenizer
  const auto dir = std::filesystem::temp_directory_path() / ("teap_forward_" + std::to_string(::getpid()) + "_trim");
  model::save_model(model::random_model(c, 2), dir.string());
  model::LoadOptions lo;
  lo.trim_vocab_to = 61;
  const model::Model m = model::load_model(dir.string(), lo);
  EXPECT_EQ(m.weights.wte.size(0), 61);
  EXPECT_EQ(m.weights.lm_head.size(0), 61);
  EXPECT_EQ(m.trimmed_rows, 1);
  at::NoGradGuard ng;
  EXPECT_EQ(model::full_logits(m, model::forward(m, ids(1, 4, 1))).size(-1), 61);
  std::filesystem::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(All, Families, ::testing::Values(Family::GptNeo, Family::Qwen2, Family::Llama),
                         [](const auto& info) { return model::family_name(info.param); });

}  // namespace
