// A deliberately simple, slow float64 forward pass of the three families, written the way
// TransformerLens computes attribution: every query head of every layer gets its own copies of the
// residual stream for its Q, K and V inputs (before the norm), every MLP its own input copy, and the
// final norm its own. An additive perturbation can be put on any one of those copies, so an edge's
// contribution can be moved without touching anything else. Independent of model::forward and of
// the EAP code: it only reads the weights of a model::Model.
#pragma once

#include <ATen/ATen.h>

#include <map>
#include <vector>

#include "model/model.hpp"

namespace teap::eap_test {

// A downstream input copy: the Q/K/V input of query head `head` in `layer`, the MLP input of
// `layer`, or the final residual stream entering the last norm (Logits).
enum class Port { Q, K, V, Mlp, Logits };

struct Node {
  Port port = Port::Mlp;
  int layer = 0;
  int head = 0;  // only for Q/K/V
  bool operator<(const Node& o) const {
    if (port != o.port) return port < o.port;
    if (layer != o.layer) return layer < o.layer;
    return head < o.head;
  }
};

// delta[node] : [B,P,d_model] added to that node's input copy only.
using Deltas = std::map<Node, at::Tensor>;

struct RefRun {
  at::Tensor logits;                          // [B,P,vocab] float64
  at::Tensor embed;                           // [B,P,d] token (+ position) embedding
  std::vector<std::vector<at::Tensor>> head;  // [L][H] each [B,P,d]: z_h . W_O[h] (no bias)
  std::vector<at::Tensor> mlp;                // [L] each [B,P,d]: MLP output, bias included
  std::vector<at::Tensor> resid_pre;          // [L] residual stream entering layer l
  at::Tensor resid_final;                     // [B,P,d] before the final norm (no delta)
};

// Runs the model on ids [B,P] (int64) with the perturbations `deltas`. Everything in float64.
RefRun reference_forward(const model::Model& m, const at::Tensor& ids, const Deltas& deltas = {});

// Per-prompt logit difference at the last position: "own" pairing (broadcast = false) uses
// prompt i's own tokens; broadcast averages over the answer pairs of every prompt of the batch.
std::vector<double> ref_logit_diffs(const RefRun& r, const std::vector<int64_t>& clean_answer,
                                    const std::vector<int64_t>& corrupt_answer, bool broadcast);
double ref_mean_ld(const RefRun& r, const std::vector<int64_t>& clean_answer,
                   const std::vector<int64_t>& corrupt_answer, bool broadcast);

}  // namespace teap::eap_test
