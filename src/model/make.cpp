#include "model/make.hpp"

#include <ATen/ATen.h>

#include <cmath>
#include <filesystem>

#include "model/params.hpp"
#include "model/safetensors.hpp"
#include "util/error.hpp"
#include "util/files.hpp"

namespace teap::model {

namespace {

// The random model's checks and draws, shared by random_model and write_random_model.
void check_random_size(const ModelConfig& config, const std::vector<NamedParam>& table) {
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
}

// One parameter's draw, in float64, scaled for its kind. Consumes `gen` in table order.
at::Tensor draw(const NamedParam& p, at::Generator& gen, double out_scale) {
  at::Tensor t = at::normal(0.0, 1.0, p.shape, gen, at::TensorOptions().dtype(at::kDouble));
  switch (p.kind) {
    case ParamKind::Embedding:
    case ParamKind::Matrix: {
      const bool out_proj = p.name.find("o_proj") != std::string::npos || p.name.find("out_proj") != std::string::npos ||
                            p.name.find("c_proj") != std::string::npos || p.name.find("down_proj") != std::string::npos;
      t.mul_(0.02 * (out_proj ? out_scale : 1.0));
      break;
    }
    case ParamKind::Bias:
    case ParamKind::NormBias: t.mul_(0.02); break;
    case ParamKind::NormWeight: t.mul_(0.1).add_(1.0); break;
  }
  return t;
}

double out_scale_of(const ModelConfig& c) { return 1.0 / std::sqrt(2.0 * std::max(1, c.n_layers)); }

// What a stored tensor becomes: F32 or BF16 bytes on the host.
at::Tensor stored(const at::Tensor& t, bool bf16) {
  return t.to(at::kCPU).to(at::kFloat).to(bf16 ? at::kBFloat16 : at::kFloat).contiguous();
}

void write_config(ModelConfig c, const std::string& folder, const SaveOptions& options) {
  c.torch_dtype = options.bf16 ? "bfloat16" : "float32";
  write_file_atomic(folder + "/config.json", config_to_json(c));
}

CheckpointWriter open_writer(const std::string& folder, const std::vector<TensorSpec>& specs, const SaveOptions& options) {
  if (options.max_shard_bytes > 0) return CheckpointWriter(folder, specs, static_cast<size_t>(options.max_shard_bytes));
  return CheckpointWriter(folder + "/model.safetensors", specs, 0);
}

}  // namespace

Model random_model(const ModelConfig& config, uint64_t seed, c10::ScalarType dtype) {
  Model m;
  m.config = config;
  m.dtype = dtype;
  at::Generator gen = at::detail::createCPUGenerator(seed);
  const std::vector<NamedParam> table = parameter_table(m);
  check_random_size(config, table);
  for (const NamedParam& p : table) {
    if (p.optional) continue;  // tied lm_head: the embedding serves
    *p.slot = draw(p, gen, out_scale_of(config)).to(dtype);
  }
  if (!m.weights.lm_head.defined()) m.weights.lm_head = m.weights.wte;
  m.weights.rope_inv_freq = rope_frequencies(config);
  return m;
}

int64_t write_random_model(const ModelConfig& config, uint64_t seed, const std::string& folder, const SaveOptions& options) {
  Model m;  // sizes and slots only: no tensor is kept in it
  m.config = config;
  at::Generator gen = at::detail::createCPUGenerator(seed);
  const std::vector<NamedParam> table = parameter_table(m);
  check_random_size(config, table);
  const DType dt = options.bf16 ? DType::BF16 : DType::F32;
  std::vector<TensorSpec> specs;
  int64_t params = 0;
  for (const NamedParam& p : table) {
    if (p.optional) continue;
    specs.push_back({p.name, dt, p.shape});
    params += static_cast<int64_t>(specs.back().nbytes() / dtype_size(dt));
  }
  std::filesystem::create_directories(folder);
  CheckpointWriter w = open_writer(folder, specs, options);
  for (const NamedParam& p : table) {
    if (p.optional) continue;
    // As random_model then save_model: float64 draw, rounded to float32, then to what is stored.
    const at::Tensor t = stored(draw(p, gen, out_scale_of(config)).to(at::kFloat), options.bf16);
    w.put(p.name, t.data_ptr(), static_cast<size_t>(t.numel() * t.element_size()));
  }
  w.commit();
  write_config(config, folder, options);
  return params;
}

void save_model(const Model& m, const std::string& folder, const SaveOptions& options) {
  std::filesystem::create_directories(folder);
  Model copy = m;  // parameter_table needs slots; the tensors themselves are shared, not copied
  const DType dt = options.bf16 ? DType::BF16 : DType::F32;
  std::vector<const NamedParam*> chosen;
  const std::vector<NamedParam> table = parameter_table(copy);
  std::vector<TensorSpec> specs;
  for (const NamedParam& p : table) {
    if (p.optional && (copy.weights.lm_head.is_same(copy.weights.wte) || !p.slot->defined())) continue;
    chosen.push_back(&p);
    specs.push_back({p.name, dt, p.shape});
  }
  {
    CheckpointWriter w = open_writer(folder, specs, options);
    for (const NamedParam* p : chosen) {
      const at::Tensor t = stored(*p->slot, options.bf16);
      w.put(p->name, t.data_ptr(), static_cast<size_t>(t.numel() * t.element_size()));
    }
    w.commit();
  }
  write_config(m.config, folder, options);
}

ModelConfig preset_config(const std::string& name) {
  ModelConfig c;
  if (name == "bm1") {
    // roneneldan/TinyStories-Instruct-2Layers-33M
    c = family_config(Family::GptNeo, 2, 16, 16, 1024, 4096, 50257);
    c.max_positions = 2048;
    c.window_size = 256;
    c.norm_eps = 1e-5;
    c.bos_token_id = c.eos_token_id = 50256;
  } else if (name == "bm2") {
    // Qwen/Qwen2.5-0.5B-Instruct
    c = family_config(Family::Qwen2, 24, 14, 2, 896, 4864, 151936);
    c.max_positions = 32768;
    c.norm_eps = 1e-6;
    c.rope_theta = 1000000.0;
    c.tie_word_embeddings = true;
    c.window_size = 32768;  // use_sliding_window is false: no layer is local
    c.bos_token_id = 151643;
    c.eos_token_id = 151645;
  } else if (name == "bm3") {
    // meta-llama/Llama-3.2-1B-Instruct
    c = family_config(Family::Llama, 16, 32, 8, 2048, 8192, 128256);
    c.max_positions = 131072;
    c.norm_eps = 1e-5;
    c.rope_theta = 500000.0;
    c.rope_scaling = RopeScaling{"llama3", 32.0, 1.0, 4.0, 8192};
    c.tie_word_embeddings = true;
    c.bos_token_id = 128000;
    c.eos_token_id = 128009;
  } else {
    throw InputError("--preset '" + name + "' is not a preset (bm1, bm2, bm3)");
  }
  return c;
}

}  // namespace teap::model
