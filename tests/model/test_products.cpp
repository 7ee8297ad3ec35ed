// bfloat16 products through float32 (model/products.hpp): one rounding of the exact product, the
// backward pass of a linear map, the unembedding's blocks, and a whole forward pass by either path.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <optional>

#include "model/blocks.hpp"
#include "model/config.hpp"
#include "model/make.hpp"
#include "model/model.hpp"
#include "model/products.hpp"

using namespace teap;

namespace {

// Forces one path for a test's duration; the CPU decides again afterwards.
struct ForcedPath {
  explicit ForcedPath(bool native) { model::force_bf16_products_native(native); }
  ~ForcedPath() { model::force_bf16_products_native(std::nullopt); }
};

at::Tensor bf16_randn(at::IntArrayRef shape, at::Generator& g) {
  return at::randn(shape, g, at::kFloat).to(at::kBFloat16);
}

// Largest |got - exact| as a multiple of what one rounding of the exact product to bfloat16 may cost:
// 2^-8 of the entry (half of bfloat16's spacing, which is 2^-7 of the entry's power of two), plus
// float32's sums, at most 2^-20 of the sum of the products' magnitudes `mag` (inner dimension <= 4096).
// One rounding keeps this at or under 1; a second rounding, or a missing block, does not.
double roundings(const at::Tensor& got, const at::Tensor& exact, const at::Tensor& mag) {
  const at::Tensor tol = exact.to(at::kDouble).abs() * std::ldexp(1.0, -8) + mag.to(at::kDouble) * std::ldexp(1.0, -20);
  return ((got.to(at::kDouble) - exact.to(at::kDouble)).abs() / tol).max().item<double>();
}

}  // namespace

TEST(Products, TheCpuDecidesUnlessATestForces) {
  const at::Tensor b = at::zeros({2, 2}, at::kBFloat16), f = at::zeros({2, 2}, at::kFloat);
  EXPECT_FALSE(model::products_in_float32(f));
  {
    ForcedPath p(false);
    EXPECT_TRUE(model::products_in_float32(b));
    EXPECT_FALSE(model::products_in_float32(f));
  }
  {
    ForcedPath p(true);
    EXPECT_FALSE(model::products_in_float32(b));
  }
  EXPECT_EQ(model::products_in_float32(b), !model::bf16_products_native());
}

TEST(Products, LinearRoundsTheExactProductOnce) {
  ForcedPath p(false);
  at::Generator g = at::detail::createCPUGenerator(21);
  const at::Tensor x = bf16_randn({3, 5, 40}, g), w = bf16_randn({24, 40}, g), b = bf16_randn({24}, g);
  const at::Tensor xd = x.to(at::kDouble), wd = w.to(at::kDouble);
  const at::Tensor mag = at::linear(xd.abs(), wd.abs()) + b.to(at::kDouble).abs();
  for (bool bias : {false, true}) {
    SCOPED_TRACE(bias ? "bias" : "no bias");
    const at::Tensor y = bias ? model::linear(x, w, b) : model::linear(x, w);
    ASSERT_EQ(y.scalar_type(), at::kBFloat16);
    ASSERT_EQ(y.sizes(), (at::IntArrayRef{3, 5, 24}));
    const at::Tensor exact = bias ? at::linear(xd, wd, b.to(at::kDouble)) : at::linear(xd, wd);
    EXPECT_LE(roundings(y, exact, mag), 1.0);
  }
  // mm and matmul the same way.
  const at::Tensor a2 = x.view({15, 40}), b2 = w.t();
  const at::Tensor exact2 = at::mm(a2.to(at::kDouble), b2.to(at::kDouble)), mag2 = mag.view({15, 24});
  EXPECT_LE(roundings(model::mm(a2, b2), exact2, mag2), 1.0);
  const at::Tensor b3 = w.t().unsqueeze(0).expand({3, 40, 24}).contiguous();
  const at::Tensor exact3 = at::bmm(xd, b3.to(at::kDouble));
  EXPECT_LE(roundings(model::matmul(x, b3), exact3, mag), 1.0);
}

// The backward pass multiplies by the bfloat16 weight (through float32) and gives the input alone
// a gradient; the bias may be absent.
TEST(Products, LinearBackwardIsTheInputGradient) {
  ForcedPath p(false);
  at::Generator g = at::detail::createCPUGenerator(22);
  const at::Tensor w = bf16_randn({24, 40}, g), b = bf16_randn({24}, g), gy = bf16_randn({3, 5, 24}, g);
  const at::Tensor exact = at::matmul(gy.to(at::kDouble), w.to(at::kDouble));
  const at::Tensor mag = at::matmul(gy.to(at::kDouble).abs(), w.to(at::kDouble).abs());
  at::AutoGradMode grad_on(true);
  for (bool bias : {false, true}) {
    SCOPED_TRACE(bias ? "bias" : "no bias");
    const at::Tensor x = bf16_randn({3, 5, 40}, g).requires_grad_(true);
    const at::Tensor y = bias ? model::linear(x, w, b) : model::linear(x, w);
    ASSERT_TRUE(y.requires_grad());
    y.backward(gy);
    ASSERT_TRUE(x.grad().defined());
    EXPECT_EQ(x.grad().scalar_type(), at::kBFloat16);
    EXPECT_LE(roundings(x.grad(), exact, mag), 1.0);
    EXPECT_FALSE(w.grad().defined());
  }
}

// A weight over 2^24 elements is converted in blocks of output rows (forward) and of the inner
// dimension (backward); a missing or misplaced block would be off by whole entries.
TEST(Products, LargeWeightsInBlocks) {
  ForcedPath p(false);
  at::Generator g = at::detail::createCPUGenerator(23);
  const int64_t out = 4100, in = 4096;  // 16.8M elements: two blocks
  const at::Tensor w = bf16_randn({out, in}, g), b = bf16_randn({out}, g);
  const at::Tensor x = bf16_randn({2, in}, g), gy = bf16_randn({2, out}, g);
  const at::Tensor wd = w.to(at::kDouble), bd = b.to(at::kDouble);
  EXPECT_LE(roundings(model::linear(x, w, b), at::linear(x.to(at::kDouble), wd, bd),
                      at::linear(x.to(at::kDouble).abs(), wd.abs()) + bd.abs()),
            1.0);
  at::AutoGradMode grad_on(true);
  const at::Tensor xg = x.clone().requires_grad_(true);
  model::linear(xg, w, b).backward(gy);
  EXPECT_LE(roundings(xg.grad(), at::mm(gy.to(at::kDouble), wd), at::mm(gy.to(at::kDouble).abs(), wd.abs())), 1.0);
}
// A bfloat16 model's forward pass by either path: the same hidden states within bfloat16's
// roundings (each path rounds every product once; their float32 sums differ in order only).
TEST(Products, ForwardPassByEitherPath) {
  for (model::Family f : {model::Family::Qwen2, model::Family::Llama, model::Family::GptNeo}) {
    SCOPED_TRACE(model::family_name(f));
    model::ModelConfig c = model::family_config(f, 2, 4, f == model::Family::GptNeo ? 4 : 2, 64, 128, 97);
    c.max_positions = 32;
    const model::Model m = model::random_model(c, 5, at::kBFloat16);
    at::Generator g = at::detail::createCPUGenerator(24);
    const at::Tensor ids = at::randint(0, 97, {2, 9}, g, at::kLong);
    at::Tensor h[2];
    for (int native = 0; native < 2; ++native) {
      ForcedPath p(native == 1);
      h[native] = model::forward(m, ids).to(at::kFloat);
    }
    const double scale = h[1].abs().max().item<double>();
    ASSERT_GT(scale, 0.0);
    EXPECT_LT((h[0] - h[1]).abs().max().item<double>(), 2e-2 * scale);
  }
}
