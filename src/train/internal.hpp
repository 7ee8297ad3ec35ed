// What train.cpp and eval.cpp share: packing sequences into one padded batch with the positions
// and targets of the response tokens, the logits at those positions only, and the exact-match
// check (internal to train/; LibTorch).
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "model/model.hpp"
#include "train/data.hpp"
#include "train/train.hpp"

namespace teap::train::detail {

// Sequences right-padded to the longest (with `pad_id`): causal attention keeps the padding out of
// every earlier position, and no loss is taken there.
struct Packed {
  at::Tensor ids;        // [B, L] int64
  at::Tensor positions;  // [N] int64: b * L + t for every position t whose next token is a response token
  at::Tensor targets;    // [N] int64: that next token
  std::vector<int> owner;  // [N]: the sequence each position belongs to
};

Packed pack(const std::vector<Sequence>& seqs, int pad_id);

// Logits [N, vocab] at the packed positions: the final-normed hidden state gathered there, times
// the unembedding. Differentiable when the weights require gradients.
at::Tensor response_logits(const model::Model& m, const Packed& p);

struct ExactMatch {
  Count exact;
  std::vector<Count> by_fields;  // index n-1
  Count by_synonyms[4];          // none, table, field, both
  std::vector<Sequence> failed;  // the sequences not reproduced exactly
};

// Exact match of `n` items of `stream` (see evaluate), in chunks of at most `chunk` items.
ExactMatch exact_match(const model::Model& m, const tokenizer::Tokenizer& tok, const DataOptions& data, uint64_t seed,
                       Stream stream, int n, int chunk = 64);

}  // namespace teap::train::detail
