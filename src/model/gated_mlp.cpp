// The gated SiLU MLP of a run that keeps gradients, with a backward pass of its own (one autograd
// node instead of five). Why, memory: it keeps gate(x) and up(x) only, where autograd's pieces keep
// silu(gate(x)) and the product as well; the MLP's hidden tensors were two thirds of the clean
// run's saved state per row, and this is what lets a float32 micro-batch hold twice the rows in the
// same memory (runner/memory_plan.hpp). Why, speed (bfloat16 on CPU): silu_backward's bfloat16
// kernel runs at 4 ns per element (the float32 one, conversions included, at 1), and oneDNN's
// bfloat16 `dY . W` product over an 8192 x 2048 weight runs 1.2x slower than the forward's
// `X . W^T` over the same weight, where the same product cut into 2048 x 2048 blocks does not.
// Measured (BM3 shape, 144 rows, one thread, repeated in one-off programs): about 4.6 ms of an
// MLP's 90 ms forward and backward; on a whole EAP batch (about 21 s) that is within the shared
// machine's run-to-run noise (docs/eap.md). Scores 3.6% of the largest from a float32 run's (3.8%
// before). In float32 the node runs as fast as autograd's pieces (64.1 s against 65.5 s a batch).
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <vector>

#include "model/blocks.hpp"

namespace teap::model {

at::Tensor input_gradient(const at::Tensor& dy, const at::Tensor& w, int64_t chunk) {
  const int64_t out = w.size(0), in = w.size(1);
  // The blocks are for oneDNN's bfloat16 product; a product through float32 is one whole BLAS call.
  const bool blocked = dy.scalar_type() == at::kBFloat16 && dy.device().is_cpu() && bf16_products_native() && chunk > 0 &&
                       std::min(out, in) >= chunk && std::max(out, in) > chunk;
  if (!blocked) return model::mm(dy, w);
  if (out > in) {
    // Blocks along the product's inner dimension, each rounded to bfloat16 (oneDNN gives no float32
    // result) and added in float32: one rounding more than a whole product (BM3's 8192 x 2048 at
    // 144 rows: largest error 1.7 against 1.0 for the whole product, entries up to 460, bfloat16's
    // step there 2).
    at::Tensor sum = at::mm(dy.narrow(1, 0, chunk), w.narrow(0, 0, chunk)).to(at::kFloat);
    for (int64_t k = chunk; k < out; k += chunk) {
      const int64_t n = std::min(chunk, out - k);
      sum.add_(at::mm(dy.narrow(1, k, n), w.narrow(0, k, n)));
    }
    return sum.to(at::kBFloat16);
  }
  // Blocks of output columns: each column is still one product over the whole inner dimension.
  at::Tensor dx = at::empty({dy.size(0), in}, dy.options());
  for (int64_t j = 0; j < in; j += chunk) {
    const int64_t n = std::min(chunk, in - j);
    at::Tensor block = dx.narrow(1, j, n);
    at::mm_out(block, dy, w.narrow(1, j, n));
  }
  return dx;
}

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// down(silu(gate(x)) * up(x)); the weights take no gradient.
struct GatedMlp : torch::autograd::Function<GatedMlp> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& xn, const at::Tensor& w_gate, const at::Tensor& w_up,
                            const at::Tensor& w_down) {
    const at::Tensor gate = model::linear(xn, w_gate), up = model::linear(xn, w_up);  // [..., d_mlp]
    // Two of the [rows, d_mlp] tensors kept where autograd's pieces keep four (gate, silu(gate), up,
    // their product): silu is recomputed in the backward's elementwise type.
    ctx->save_for_backward({gate, up, w_gate, w_up, w_down});
    return model::linear(at::silu(gate) * up, w_down);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &gate = saved[0], &up = saved[1], &w_gate = saved[2], &w_up = saved[3], &w_down = saved[4];
    const int64_t d_mlp = gate.size(-1), d = w_gate.size(1);
    const auto dt = gate.scalar_type();
    const auto ct = dt == at::kDouble ? at::kDouble : at::kFloat;  // the elementwise part's type
    const at::Tensor dh = input_gradient(grads[0].reshape({-1, w_down.size(0)}), w_down).to(ct);  // [N, d_mlp]
    const at::Tensor g = gate.reshape({-1, d_mlp}).to(ct);
    const at::Tensor d_up = (dh * at::silu(g)).to(dt);
    const at::Tensor d_gate = at::silu_backward(dh * up.reshape({-1, d_mlp}).to(ct), g).to(dt);
    const at::Tensor dx = input_gradient(d_gate, w_gate).add_(input_gradient(d_up, w_up));  // as autograd adds them
    std::vector<int64_t> shape(gate.sizes().begin(), gate.sizes().end());
    shape.back() = d;
    return {dx.view(shape), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor gated_mlp_recorded(const LayerWeights& w, const at::Tensor& xn) {
  return GatedMlp::apply(xn, w.w_gate, w.w_up, w.w_down);
}

}  // namespace teap::model
