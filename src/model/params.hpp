// The one table of a family's parameters: Hugging Face tensor name, where it lives in Weights,
// the shape the config implies, and what kind of parameter it is. Loading, saving and random
// initialisation all walk this table, so the three cannot disagree on a name (internal header).
#pragma once

#include <string>
#include <vector>

#include "model/model.hpp"

namespace teap::model {

enum class ParamKind { Embedding, Matrix, Bias, NormWeight, NormBias };

struct NamedParam {
  std::string name;            // Hugging Face's tensor name
  at::Tensor* slot;            // where it lives in Model::weights
  std::vector<int64_t> shape;  // what the config implies
  ParamKind kind;
  bool optional = false;       // may be absent (a tied lm_head)
};

// Sizes the weights' layer list, then lists every parameter of `m`'s family.
std::vector<NamedParam> parameter_table(Model& m);

// The rotary frequencies [d_head/2] (float32) of a qwen2/llama config, llama3 scaling applied;
// undefined for gpt_neo. Derived from the config, never stored in a checkpoint.
at::Tensor rope_frequencies(const ModelConfig& c);

}  // namespace teap::model
