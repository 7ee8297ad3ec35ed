#include "model/products.hpp"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <atomic>
#include <vector>

namespace teap::model {
namespace {

// LibTorch's own rule for a oneDNN bfloat16 product (ATen's mkldnn_bf16_device_check): AVX-512 BW,
// VL and DQ. Other architectures: through float32, never the risk of the scalar loop (where a CPU
// there has bfloat16 instructions, LibTorch's product would be at most about 2x faster).
bool cpu_has_bf16_products() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return at::hasMKLDNN() && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("avx512dq");
#else
  return false;
#endif
}

std::atomic<int> forced{-1};  // -1: the CPU decides; 0 or 1: a test's choice

at::Tensor f32(const at::Tensor& t) { return t.to(at::kFloat); }

// Converting a weight costs a float32 copy of it; blocks of output rows bound that copy (one block
// for every weight of the real models but the unembedding).
constexpr int64_t kBlockElements = int64_t(1) << 24;

// A weight's (a product's second operand's) float32 copy, valid until this thread's next call:
// written into one buffer kept per thread (as large as the largest operand: 64 MiB for a weight
// converted in blocks). A fresh 64 MiB tensor for every product comes from mmap and costs its page
// faults each time: converting BM3's 8192 x 2048 MLP weight took 51 ms that way, against 6 ms into
// a reused buffer, where the product itself at 144 rows takes 63 ms.
at::Tensor weight_f32(const at::Tensor& w) {
  thread_local at::Tensor buffer;
  const int64_t n = w.numel();
  if (!buffer.defined() || buffer.numel() < n) buffer = at::empty({std::max<int64_t>(n, int64_t(1) << 20)}, at::kFloat);
  return buffer.narrow(0, 0, n).view(w.sizes()).copy_(w);
}

at::Tensor linear_float32(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  const int64_t out = w.size(0), in = w.size(1);
  const at::Tensor xf = f32(x);
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = out;
  at::Tensor y = at::empty(shape, x.options());  // bfloat16
  const int64_t rows = std::max<int64_t>(1, kBlockElements / in);
  for (int64_t r = 0; r < out; r += rows) {
    const int64_t n = std::min(rows, out - r);
    const at::Tensor wb = weight_f32(w.narrow(0, r, n));
    y.narrow(-1, r, n).copy_(b.defined() ? at::linear(xf, wb, f32(b.narrow(0, r, n))) : at::linear(xf, wb));
  }
  return y;
}

// dx = dy . w, in float32, rounded once; blocks of w's rows are blocks of the inner dimension,
// whose float32 partial products add up before the rounding.
at::Tensor input_gradient_float32(const at::Tensor& dy, const at::Tensor& w) {
  const int64_t out = w.size(0), in = w.size(1);
  const at::Tensor dyf = f32(dy).reshape({-1, out});
  at::Tensor dx;
  const int64_t rows = std::max<int64_t>(1, kBlockElements / in);
  for (int64_t r = 0; r < out; r += rows) {
    const int64_t n = std::min(rows, out - r);
    const at::Tensor part = at::mm(dyf.narrow(1, r, n), weight_f32(w.narrow(0, r, n)));
    if (dx.defined()) dx.add_(part);
    else dx = part;
  }
  std::vector<int64_t> shape(dy.sizes().begin(), dy.sizes().end());
  shape.back() = in;
  return dx.to(at::kBFloat16).view(shape);
}

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// A bfloat16 linear map computed in float32 whose backward pass keeps the bfloat16 weight only.
struct Float32Linear : torch::autograd::Function<Float32Linear> {
  // The bias is no autograd input (an undefined tensor cannot be one): it takes no gradient.
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w, c10::optional<at::Tensor> b) {
    ctx->save_for_backward({w});
    return linear_float32(x, w, b.value_or(at::Tensor()));
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const at::Tensor w = ctx->get_saved_variables()[0];
    return {input_gradient_float32(grads[0], w), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

bool bf16_products_native() {
  static const bool native = cpu_has_bf16_products();
  const int f = forced.load();
  return f < 0 ? native : f == 1;
}

void force_bf16_products_native(std::optional<bool> native) { forced.store(native ? (*native ? 1 : 0) : -1); }

bool products_in_float32(c10::ScalarType dtype, c10::Device device) {
  return dtype == at::kBFloat16 && device.is_cpu() && !bf16_products_native();
}

bool products_in_float32(const at::Tensor& t) { return products_in_float32(t.scalar_type(), t.device()); }

at::Tensor mm(const at::Tensor& a, const at::Tensor& b) {
  if (!products_in_float32(a)) return at::mm(a, b);
  return at::mm(f32(a), weight_f32(b)).to(at::kBFloat16);
}

at::Tensor matmul(const at::Tensor& a, const at::Tensor& b) {
  if (!products_in_float32(a)) return at::matmul(a, b);
  return at::matmul(f32(a), f32(b)).to(at::kBFloat16);
}

at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  if (!products_in_float32(x)) return b.defined() ? at::linear(x, w, b) : at::linear(x, w);
  if (x.requires_grad() && at::GradMode::is_enabled()) return Float32Linear::apply(x, w, c10::optional<at::Tensor>(b));
  return linear_float32(x, w, b);
}

}  // namespace teap::model
