// Owns the patched run ("running a circuit", ../shared/spec/circuits.md): a forward pass on the
// clean prompts in which every destination (each head's own q, k and v input, each MLP input,
// logits) reads its own copy of the residual stream, where the edges a circuit leaves out carry
// the corrupt run's upstream outputs instead of this run's, patches propagating layer by layer.
// Several circuits run in one pass, stacked along the batch dimension.
//
// Nodes are those of the full attribution graph with both extra nodes, in eap/graph.hpp's index
// order (the model knows the order, not the edges):
//   upstream   U = L*(H+1) + 1: head.l.h = l*(H+1) + h, mlp.l = l*(H+1) + H, input = L*(H+1)
//   downstream D = L*(3H+1) + 1: head.l.h.q/k/v = l*(3H+1) + {0, H, 2H} + h, mlp.l = l*(3H+1) + 3H,
//                                logits = L*(3H+1)
#pragma once

#include <ATen/core/Tensor.h>

#include "model/model.hpp"

namespace teap::model {

inline int64_t patch_upstream(const ModelConfig& c) { return int64_t(c.n_layers) * (c.n_heads + 1) + 1; }
inline int64_t patch_downstream(const ModelConfig& c) { return int64_t(c.n_layers) * (3 * c.n_heads + 1) + 1; }

// Every upstream node's output in a recorded run, [U, B, P, d_model] in the compute type:
// head.l.h = z_h . W_O[h] (no bias), mlp.l = the MLP's output (bias included), input = embedding.
at::Tensor upstream_outputs(const Model& m, const ActivationRecord& rec);

struct Patch {
  at::Tensor corrupt;  // [U, B, P, d] upstream_outputs of the corrupt run, over the positions run
  // [C, U, D], 1 where circuit c's destination v reads u's corrupt output (u -> v is not in the
  // circuit), 0 where it reads this run's. Pairs that are not edges must be 0.
  at::Tensor ablated;
  // Optional: the clean run's record over the same positions, and its upstream_outputs. Layers
  // before the first destination that any circuit patches are then taken from it, not recomputed
  // (an `exact` score's circuit differs from the clean run only from its edge's layer on).
  const ActivationRecord* clean = nullptr;
  at::Tensor clean_out;  // [U, B, P, d]
};

// Runs the circuits of `patch` on `ids` [B, P] (positions [start, P), the earlier ones' keys and
// values from `prefix`, as forward()) and returns the final-normed residual stream
// [C*B, P - start, d] in float32, circuit-major (row c*B + i is circuit c, prompt i).
// Memory: the circuits' upstream differences [C, U, B*(P-start), d] plus one slot of per-head
// residual copies [C, H, B*(P-start), d], in the compute type.
at::Tensor patched_forward(const Model& m, const at::Tensor& ids, const Patch& patch, int64_t start = 0,
                           const ActivationRecord* prefix = nullptr);

}  // namespace teap::model
