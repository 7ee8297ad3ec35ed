// Internal to eap/: what outlives one score_batch call.
//
// Why: on CPU every fresh block of the size of the upstream differences (gigabytes for BM3 at a
// batch of 30) costs a page fault and a zeroed page per 4 KiB, which on virtual machines that
// hand freed memory back to the host cost about 4 s per GiB, as much as a forward pass; so the
// differences and gradient buffers are kept for the next micro-batch and batch (CUDA's caching
// allocator does this for GPU tensors already). And a micro-batched batch's top tokens come from
// one pass over the unembedding (for BM3 a gigabyte of float32) for the whole batch, not one per
// micro-batch and run.
#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "eap/score.hpp"
#include "model/model.hpp"

namespace teap::eap {

struct ScoreWorkspace {
  at::Tensor differences, gradients, gradients_low, mlp_columns;  // flat, grown to the largest call's need
  // When set, score_batch (method eap) leaves its runs' last-position final hidden states [B, d]
  // here instead of the top tokens and clean accuracy; score_in_micro_batches sets it.
  bool defer_tops = false;
  std::vector<at::Tensor> clean_last, corrupt_last;
  // Set by score_in_micro_batches when its batch's prompts agree before prefix_start > 0: the
  // common prefix of the whole batch, run once (a micro-batch's own would be a GEMM of a few rows
  // per weight matrix); the call for the batch's prompts [part_row, part_row + B) attends to
  // those rows of its keys and values.
  model::ActivationRecord prefix;
  int64_t prefix_start = 0, part_row = 0;
  // Set by score_in_micro_batches (method eap): the corrupt run of the whole batch, run once
  // without gradients, keeping only what the upstream differences read (z, MLP outputs, the
  // embedding) and its logit differences; a part's call takes its rows instead of running its
  // own. Why: the corrupt run needs no autograd graph, so its memory is the kept record alone,
  // and a whole batch's products run at full speed where a micro-batch's do not.
  bool corrupt_shared = false;
  model::ActivationRecord corrupt;
  std::vector<double> corrupt_ld;
};

// Prompts [row, row + n) of a whole batch's corrupt record (upstream_only).
inline model::ActivationRecord corrupt_rows(const model::ActivationRecord& corrupt, int64_t row, int64_t n) {
  model::ActivationRecord r;
  r.embed = corrupt.embed.narrow(0, row, n);
  r.layers.resize(corrupt.layers.size());
  for (size_t l = 0; l < corrupt.layers.size(); ++l) {
    r.layers[l].z = corrupt.layers[l].z.narrow(0, row, n);
    r.layers[l].mlp_out = corrupt.layers[l].mlp_out.narrow(0, row, n);
  }
  return r;
}

// The keys and values of prompts [row, row + n) of a prefix record: all a run that starts after
// the prefix reads of it.
inline model::ActivationRecord prefix_rows(const model::ActivationRecord& prefix, int64_t row, int64_t n) {
  model::ActivationRecord r;
  r.layers.resize(prefix.layers.size());
  for (size_t l = 0; l < prefix.layers.size(); ++l) {
    r.layers[l].k = prefix.layers[l].k.narrow(0, row, n);
    r.layers[l].v = prefix.layers[l].v.narrow(0, row, n);
  }
  return r;
}

// A tensor of `shape` over `slot`'s memory, `slot` replaced by a larger one first when it is too
// small or of another dtype or device. Its contents are whatever the last user left.
inline at::Tensor reuse(at::Tensor& slot, at::IntArrayRef shape, const at::TensorOptions& o) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  if (!slot.defined() || slot.numel() < n || slot.scalar_type() != o.dtype().toScalarType() || slot.device() != o.device()) {
    slot = at::Tensor();  // the old block is freed before the new one is taken
    slot = at::empty({n}, o);
  }
  return slot.narrow(0, 0, n).view(shape);
}

}  // namespace teap::eap
