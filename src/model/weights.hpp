// Owns the parameters of one transformer as plain tensors, in Hugging Face's layout (a Linear
// weight is [out, in]). A tensor left undefined is absent in that family (no bias, no wpe).
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

namespace teap::model {

struct LayerWeights {
  at::Tensor ln1_w, ln1_b;       // [d_model]; ln1_b undefined for RMSNorm
  at::Tensor w_q;                // [H*d_head, d_model]
  at::Tensor w_k, w_v;           // [Hkv*d_head, d_model]
  at::Tensor b_q;                // [H*d_head] (qwen2 only)
  at::Tensor b_k, b_v;           // [Hkv*d_head] (qwen2 only)
  at::Tensor w_o;                // [d_model, H*d_head]
  at::Tensor b_o;                // [d_model] (gpt_neo only)
  at::Tensor ln2_w, ln2_b;       // [d_model]; ln2_b undefined for RMSNorm
  at::Tensor w_fc, b_fc;         // [d_mlp, d_model], [d_mlp] (gpt_neo)
  at::Tensor w_proj, b_proj;     // [d_model, d_mlp], [d_model] (gpt_neo)
  at::Tensor w_gate, w_up;       // [d_mlp, d_model] (qwen2, llama)
  at::Tensor w_down;             // [d_model, d_mlp] (qwen2, llama)
};

struct Weights {
  at::Tensor wte;                // [vocab, d_model] token embedding
  at::Tensor wpe;                // [max_positions, d_model] (gpt_neo only)
  std::vector<LayerWeights> layers;
  at::Tensor ln_f_w, ln_f_b;     // [d_model]; ln_f_b undefined for RMSNorm
  at::Tensor lm_head;            // [vocab, d_model]; the same tensor as wte when tied
  at::Tensor rope_inv_freq;      // [d_head/2] float32 rotary frequencies (qwen2, llama)
};

}  // namespace teap::model
