#include "model/make.hpp"

#include <ATen/ATen.h>

#include <cmath>
#include <filesystem>

#include "model/params.hpp"
#include "model/safetensors.hpp"
#include "util/error.hpp"
#include "util/files.hpp"

namespace teap::model {

Model random_model(const ModelConfig& config, uint64_t seed, c10::ScalarType dtype) {
  Model m;
  m.config = config;
  m.dtype = dtype;
  at::Generator gen = at::detail::createCPUGenerator(seed);
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  const double out_scale = 1.0 / std::sqrt(2.0 * std::max(1, config.n_layers));
  const std::vector<NamedParam> table = parameter_table(m);
  // Checked before anything is allocated: sizes that do not fit would otherwise end in
  // std::bad_alloc or the kernel's OOM killer.
  double params = 0;
  for (const NamedParam& p : table) {
    double n = 1;
    for (int64_t s : p.shape) n *= static_cast<double>(s);
    if (!p.optional) params += n;
  }
  if (params > kMaxRandomParameters)
    throw InputError("model of " + std::to_string(config.n_layers) + " layers, d_model " + std::to_string(config.d_model) +
                     ", d_mlp " + std::to_string(config.d_mlp) + ", vocabulary " + std::to_string(config.vocab_size) + ": " +
                     std::to_string(static_cast<long long>(params)) + " parameters, more than the " +
                     std::to_string(static_cast<long long>(kMaxRandomParameters)) + " a random model may have");
  for (const NamedParam& p : table) {
    if (p.optional) continue;  // tied lm_head: the embedding serves
    at::Tensor t = at::normal(0.0, 1.0, p.shape, gen, f64);
    switch (p.kind) {
      case ParamKind::Embedding:
      case ParamKind::Matrix: {
        const bool out_proj = p.name.find("o_proj") != std::string::npos || p.name.find("out_proj") != std::string::npos ||
                              p.name.find("c_proj") != std::string::npos || p.name.find("down_proj") != std::string::npos;
        t = t * (0.02 * (out_proj ? out_scale : 1.0));
        break;
      }
      case ParamKind::Bias:
      case ParamKind::NormBias: t = t * 0.02; break;
      case ParamKind::NormWeight: t = 1.0 + t * 0.1; break;
    }
    *p.slot = t.to(dtype);
  }
  if (!m.weights.lm_head.defined()) m.weights.lm_head = m.weights.wte;
  m.weights.rope_inv_freq = rope_frequencies(config);
  return m;
}

void save_model(const Model& m, const std::string& folder, const SaveOptions& options) {
  std::filesystem::create_directories(folder);
  Model copy = m;  // parameter_table needs slots; the tensors themselves are shared, not copied
  std::vector<at::Tensor> keep;  // owns the CPU bytes until written
  std::vector<TensorView> views;
  for (const NamedParam& p : parameter_table(copy)) {
    if (p.optional && (copy.weights.lm_head.is_same(copy.weights.wte) || !p.slot->defined())) continue;
    at::Tensor t = p.slot->to(at::kCPU).to(options.bf16 ? at::kBFloat16 : at::kFloat).contiguous();
    keep.push_back(t);
    TensorView v;
    v.name = p.name;
    v.dtype = options.bf16 ? DType::BF16 : DType::F32;
    v.shape = p.shape;
    v.data = static_cast<const uint8_t*>(t.data_ptr());
    v.nbytes = t.numel() * t.element_size();
    views.push_back(v);
  }
  ModelConfig c = m.config;
  write_file_atomic(folder + "/config.json", config_to_json(c));
  if (options.max_shard_bytes > 0) {
    write_sharded(folder, views, options.max_shard_bytes);
  } else {
    write_safetensors(folder + "/model.safetensors", views, {{"format", "pt"}});
  }
}

}  // namespace teap::model
