// Owns one fact about this process's CPU, in a header without LibTorch so that plain planning code
// (runner/memory_plan.cpp) can ask it too: whether LibTorch multiplies bfloat16 natively here, or
// a run's bfloat16 products go through float32 (model/products.hpp says why and how).
#pragma once

#include <optional>

namespace teap::model {

// Whether this CPU multiplies bfloat16 natively (decided once per process from its features).
bool bf16_products_native();
// Tests: take one path or the other whatever the CPU (both give the same products up to the order
// of float32 sums); nullopt: the CPU decides again.
void force_bf16_products_native(std::optional<bool> native);

}  // namespace teap::model
