// Owns the matrix products of a run's tensors where their dtype is bfloat16 on a CPU that cannot
// multiply bfloat16 quickly. LibTorch 1.13 hands a bfloat16 product to oneDNN only on CPUs with
// AVX-512 (BW, VL and DQ); elsewhere (AVX2: AMD before Zen 4, Intel desktops) it runs a scalar
// loop, about 50x slower than float32's BLAS (1.3 against 72 GFLOP/s on an AVX2 EPYC, one thread),
// which made a bfloat16 EAP batch of the real models take hours. There these functions convert the
// operands to float32, multiply with BLAS and round the product to bfloat16 once: oneDNN's own
// arithmetic (float32 accumulation, one rounding at the end) up to the order of the sums. Every
// other product (CUDA, float32, float64, a CPU with native bfloat16 products) is LibTorch's own.
#pragma once

#include <ATen/core/Tensor.h>

#include "model/bf16_native.hpp"

namespace teap::model {

// Whether a product with this operand goes through float32: bfloat16, on the CPU, not native.
bool products_in_float32(const at::Tensor& t);
bool products_in_float32(c10::ScalarType dtype, c10::Device device);

// The products a run uses, each LibTorch's own unless products_in_float32(first operand).
at::Tensor mm(const at::Tensor& a, const at::Tensor& b);
// Differentiable (autograd saves the float32 copies of both operands: used for attention's small
// probabilities-by-values product only).
at::Tensor matmul(const at::Tensor& a, const at::Tensor& b);
// x [..., in] . w[out, in]^T + b [out]; differentiable in x only (w and b take no gradient): the
// backward pass multiplies by w itself, saving no float32 copy of it. A weight larger than 16M
// elements is converted in blocks of output rows (the unembedding: 262M elements for BM3).
at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b = at::Tensor());

}  // namespace teap::model
