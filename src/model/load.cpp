// Loads a Hugging Face folder into Model: config, safetensors tensors by their Hugging Face names,
// each checked against the shape the config implies, converted to the run's dtype and device.
#include <ATen/ATen.h>
#include <spdlog/spdlog.h>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <set>

#include "model/denormal.hpp"
#include "model/hf_cache.hpp"
#include "model/model.hpp"
#include "model/params.hpp"
#include "model/products.hpp"
#include "model/safetensors.hpp"
#include "util/error.hpp"

namespace teap::model {
namespace {

namespace fs = std::filesystem;

c10::ScalarType torch_type(DType t, const TensorView& v) {
  switch (t) {
    case DType::F32: return c10::kFloat;
    case DType::F16: return c10::kHalf;
    case DType::BF16: return c10::kBFloat16;
    case DType::F64: return c10::kDouble;
    default: fail_input(v.file, "tensor '" + v.name + "' has dtype " + dtype_name(t) + ", expected a float type");
  }
}

// Whether a stored dtype is the run's dtype, so that the bytes can be used as they are.
bool same_type(DType t, c10::ScalarType st) {
  return (t == DType::F32 && st == c10::kFloat) || (t == DType::BF16 && st == c10::kBFloat16) ||
         (t == DType::F64 && st == c10::kDouble) || (t == DType::F16 && st == c10::kHalf);
}

struct Loader {
  std::shared_ptr<const Checkpoint> ckpt;  // kept alive by every tensor that points into it
  const Model& m;
  bool map = false;  // point into the mapping when the dtype allows (CPU only)
  size_t* mapped_bytes = nullptr;

  // One NaN weight makes every score NaN, which would then pass for a result.
  // Slice by slice: isfinite's temporaries for a whole embedding (a copy of its absolute values and
  // three masks) were the largest memory a rank held while loading (BM2 bfloat16: 1.2 GiB, more than
  // its batches' work), and every rank of a node holds them at once.
  static void check_finite(const at::Tensor& t, const TensorView& v) {
    const at::Tensor flat = t.reshape({-1});
    constexpr int64_t kSlice = int64_t(1) << 22;
    int64_t bad = 0;
    for (int64_t i = 0; i < flat.numel(); i += kSlice) {
      const at::Tensor s = flat.narrow(0, i, std::min(kSlice, flat.numel() - i));
      const at::Tensor finite = at::isfinite(s);
      // all() reduces the mask as it is; sum() first widens it to int64, 8 bytes an element: about
      // 10 GiB of fresh pages over BM3's weights, most of a load's page faults.
      if (!finite.all().item<bool>()) bad += s.numel() - finite.sum().item<int64_t>();
    }
    if (bad > 0)
      fail_input(v.file, "tensor '" + v.name + "' has " + std::to_string(bad) + " non-finite value(s) (NaN or Inf)");
  }

  at::Tensor take(const std::string& name, std::vector<int64_t> shape) const {
    const TensorView& v = ckpt->get(name);
    if (v.shape != shape)
      fail_input(v.file, "tensor '" + name + "' has shape " + shape_string(v.shape) + ", the config implies " +
                             shape_string(shape));
    const c10::ScalarType st = torch_type(v.dtype, v);
    const size_t esize = dtype_size(v.dtype);
    if (map && same_type(v.dtype, m.dtype) && reinterpret_cast<uintptr_t>(v.data) % esize == 0 && v.nbytes > 0) {
      // Read-only pages of the file: shared with every process that maps it, faulting if written.
      std::shared_ptr<const Checkpoint> keep = ckpt;
      at::Tensor t = at::from_blob(const_cast<uint8_t*>(v.data), shape, [keep](void*) {},
                                   at::TensorOptions().dtype(st));
      check_finite(t, v);
      if (mapped_bytes) *mapped_bytes += v.nbytes;
      return t;
    }
    at::Tensor t = at::empty(shape, at::TensorOptions().dtype(st));
    std::memcpy(t.data_ptr(), v.data, v.nbytes);  // the mapping may be unaligned: copy first
    check_finite(t, v);
    return t.to(m.device, m.dtype);
  }
  at::Tensor maybe(const std::string& name, std::vector<int64_t> shape) const {
    return ckpt->find(name) ? take(name, shape) : at::Tensor();
  }
};

c10::ScalarType parse_dtype(const std::string& s) {
  if (s == "float32" || s == "fp32") return c10::kFloat;
  if (s == "bfloat16" || s == "bf16") return c10::kBFloat16;
  if (s == "float64" || s == "fp64") return c10::kDouble;
  throw InputError("dtype '" + s + "' is not supported (float32, bfloat16, float64)");
}

c10::Device parse_device(const std::string& s) {
  c10::Device d = c10::kCPU;
  try {
    d = c10::Device(s);
  } catch (const c10::Error&) {
    throw InputError("device '" + s + "' is not a device name (cpu, cuda, cuda:N)");
  }
  if (!d.is_cpu() && !d.is_cuda()) throw InputError("device '" + s + "' is not supported (cpu, cuda, cuda:N)");
  if (d.is_cuda() && !at::hasCUDA()) throw InputError("device '" + s + "': this LibTorch build or machine has no CUDA");
  if (d.is_cuda() && d.has_index() && (d.index() < 0 || d.index() >= at::detail::getCUDAHooks().getNumGPUs()))
    throw InputError("device '" + s + "': this machine has " + std::to_string(at::detail::getCUDAHooks().getNumGPUs()) +
                     " CUDA device(s)");
  return d;
}

// Tensors a checkpoint may hold that the forward pass does not need: GPT-Neo's causal-mask
// buffers and the rotary frequencies some Llama exports save (recomputed from the config).
bool ignorable_tensor(const ModelConfig& c, const std::string& name) {
  auto ends_with = [&](const char* tail) {
    const size_t n = std::strlen(tail);
    return name.size() >= n && name.compare(name.size() - n, n, tail) == 0;
  };
  if (c.family == Family::GptNeo) return ends_with(".attn.attention.bias") || ends_with(".attn.attention.masked_bias");
  return ends_with(".rotary_emb.inv_freq");
}

// Every parameter the family needs is there with the config's shape and a float dtype, and
// nothing else is: a tensor the family would not read (a qwen2 checkpoint's q/k/v biases under a
// llama config) means the config does not describe these weights.
void check_tensors(const Checkpoint& ckpt, Model& m) {
  std::set<std::string> known;
  for (const NamedParam& p : parameter_table(m)) {
    known.insert(p.name);
    const TensorView* v = ckpt.find(p.name);
    if (!v) {
      if (p.optional) continue;
      ckpt.get(p.name);  // the missing-tensor error
    }
    if (v->shape != p.shape)
      fail_input(v->file, "tensor '" + p.name + "' has shape " + shape_string(v->shape) + ", the config implies " +
                              shape_string(p.shape));
    torch_type(v->dtype, *v);
  }
  for (const std::string& name : ckpt.names())
    if (!known.count(name) && !ignorable_tensor(m.config, name))
      fail_input(ckpt.find(name)->file, "tensor '" + name + "' is not a parameter of a " + family_name(m.config.family) +
                                           " model as config.json describes it (is model_type right?)");
}

const char* dtype_tag(c10::ScalarType st) {
  return st == c10::kFloat ? "float32" : st == c10::kBFloat16 ? "bfloat16" : st == c10::kDouble ? "float64" : "other";
}

// Whether some parameter is stored in another dtype than the run's.
bool needs_conversion(const Checkpoint& ckpt, Model& m) {
  for (const NamedParam& p : parameter_table(m))
    if (const TensorView* v = ckpt.find(p.name); v && !same_type(v->dtype, m.dtype)) return true;
  return false;
}

// Holds an exclusive flock on a file while it lives (released by close, also when the process dies).
struct FileLock {
  int fd = -1;
  explicit FileLock(const std::string& path) {
    fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) throw std::runtime_error(path + ": cannot open: " + std::strerror(errno));
    while (::flock(fd, LOCK_EX) != 0)
      if (errno != EINTR) {
        ::close(fd);
        throw std::runtime_error(path + ": cannot lock: " + std::strerror(errno));
      }
  }
  ~FileLock() {
    if (fd >= 0) ::close(fd);
  }
};

// The checkpoint converted to the run's dtype in the node-local cache, converted here unless
// another process did it already (or is doing it: the lock waits for it). Every tensor of the
// family is checked (shape, finite values) on the original as it is converted.
std::shared_ptr<const Checkpoint> converted(const std::shared_ptr<const Checkpoint>& original, Model& m,
                                            const std::string& cache_root) {
  const std::string key = weights_fingerprint(*original) + "-" + dtype_tag(m.dtype);
  const fs::path dir = fs::path(cache_root) / key;
  fs::create_directories(cache_root);
  const FileLock lock((fs::path(cache_root) / (key + ".lock")).string());
  std::error_code ec;
  if (fs::exists(dir / "model.safetensors", ec)) {
    try {
      auto c = std::make_shared<const Checkpoint>(Checkpoint::open(dir.string()));
      bool ok = true;
      for (const NamedParam& p : parameter_table(m)) {
        const TensorView* v = c->find(p.name);
        const TensorView* o = original->find(p.name);
        if (bool(v) != bool(o) || (v && (v->shape != p.shape || !same_type(v->dtype, m.dtype)))) ok = false;
      }
      if (ok) return c;
    } catch (const InputError&) {
    }
    spdlog::warn("{}: not a conversion of {}: converting again", dir.string(), original->folder);
  }
  const auto t0 = std::chrono::steady_clock::now();
  const Loader copy{original, m, false, nullptr};
  std::vector<TensorSpec> specs;
  std::vector<const NamedParam*> present;
  const std::vector<NamedParam> table = parameter_table(m);
  for (const NamedParam& p : table)
    if (original->find(p.name)) {
      present.push_back(&p);
      specs.push_back({p.name, DType::F32, p.shape});
      specs.back().dtype = m.dtype == c10::kBFloat16 ? DType::BF16 : m.dtype == c10::kDouble ? DType::F64 : DType::F32;
    }
  fs::create_directories(dir);
  {
    CheckpointWriter w((dir / "model.safetensors").string(), specs, 0);
    for (const NamedParam* p : present) {
      const at::Tensor t = copy.take(p->name, p->shape).contiguous();
      w.put(p->name, t.data_ptr(), static_cast<size_t>(t.numel() * t.element_size()));
    }
    w.commit();
  }
  spdlog::info("converted {} to {} for this node in {:.1f} s: {}", original->folder, dtype_tag(m.dtype),
               std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), dir.string());
  return std::make_shared<const Checkpoint>(Checkpoint::open(dir.string()));
}

}  // namespace

std::string default_convert_cache() {
  const char* env = std::getenv("TEAP_WEIGHTS_CACHE");
  if (env && std::string(env) == "off") return "";
  if (env && *env) return env;
  const char* tmp = std::getenv("TMPDIR");
  return (fs::path(tmp && *tmp ? tmp : "/tmp") / ("teap-weights-" + std::to_string(::getuid()))).string();
}

void check_device(const std::string& device) { parse_device(device); }

CheckpointInfo check_model(const std::string& name_or_path, const std::string& revision) {
  Model m;
  m.path = resolve_model_path(name_or_path, revision);
  m.config = parse_config(m.path + "/config.json");
  const Checkpoint ckpt = Checkpoint::open(m.path);
  check_tensors(ckpt, m);
  CheckpointInfo info;
  info.path = m.path;
  info.config = m.config;
  info.bytes = ckpt.total_bytes();
  for (const std::string& name : ckpt.names()) info.parameters += numel(*ckpt.find(name));
  info.fingerprint = weights_fingerprint(ckpt);
  return info;
}

// Llama-3's rescaling of the rotary frequencies (long wavelengths slowed by `factor`, a smooth
// blend between the low and high frequency bounds), as in Hugging Face's _compute_llama3_parameters.
at::Tensor rope_frequencies(const ModelConfig& c) {
  if (c.family == Family::GptNeo) return at::Tensor();
  const int64_t half = c.d_head / 2;
  std::vector<double> inv(half);
  for (int64_t i = 0; i < half; ++i) inv[i] = 1.0 / std::pow(c.rope_theta, (2.0 * i) / c.d_head);
  if (c.rope_scaling && c.rope_scaling->type == "llama3") {
    const auto& r = *c.rope_scaling;
    const double low_wavelen = r.original_max_position_embeddings / r.low_freq_factor;
    const double high_wavelen = r.original_max_position_embeddings / r.high_freq_factor;
    for (auto& f : inv) {
      const double wavelen = 2 * M_PI / f;
      if (wavelen > low_wavelen) {
        f = f / r.factor;
      } else if (wavelen >= high_wavelen) {
        const double smooth = (r.original_max_position_embeddings / wavelen - r.low_freq_factor) /
                              (r.high_freq_factor - r.low_freq_factor);
        f = (1 - smooth) * f / r.factor + smooth * f;
      }
    }
  }
  // Hugging Face computes these in float32; keep that rounding so positions rotate identically.
  at::Tensor t = at::empty({half}, at::kFloat);
  for (int64_t i = 0; i < half; ++i) t[i] = static_cast<float>(inv[i]);
  return t;
}

std::vector<NamedParam> parameter_table(Model& m) {
  const ModelConfig& c = m.config;
  Weights& w = m.weights;
  w.layers.resize(c.n_layers);
  const int64_t d = c.d_model, V = c.vocab_size, qd = int64_t(c.n_heads) * c.d_head,
                kvd = int64_t(c.n_kv_heads) * c.d_head, f = c.d_mlp;
  using K = ParamKind;
  std::vector<NamedParam> t;
  if (c.family == Family::GptNeo) {
    t.push_back({"transformer.wte.weight", &w.wte, {V, d}, K::Embedding});
    t.push_back({"transformer.wpe.weight", &w.wpe, {c.max_positions, d}, K::Embedding});
    for (int l = 0; l < c.n_layers; ++l) {
      const std::string p = "transformer.h." + std::to_string(l) + ".";
      auto& lw = w.layers[l];
      t.push_back({p + "ln_1.weight", &lw.ln1_w, {d}, K::NormWeight});
      t.push_back({p + "ln_1.bias", &lw.ln1_b, {d}, K::NormBias});
      t.push_back({p + "attn.attention.q_proj.weight", &lw.w_q, {qd, d}, K::Matrix});
      t.push_back({p + "attn.attention.k_proj.weight", &lw.w_k, {kvd, d}, K::Matrix});
      t.push_back({p + "attn.attention.v_proj.weight", &lw.w_v, {kvd, d}, K::Matrix});
      t.push_back({p + "attn.attention.out_proj.weight", &lw.w_o, {d, qd}, K::Matrix});
      t.push_back({p + "attn.attention.out_proj.bias", &lw.b_o, {d}, K::Bias});
      t.push_back({p + "ln_2.weight", &lw.ln2_w, {d}, K::NormWeight});
      t.push_back({p + "ln_2.bias", &lw.ln2_b, {d}, K::NormBias});
      t.push_back({p + "mlp.c_fc.weight", &lw.w_fc, {f, d}, K::Matrix});
      t.push_back({p + "mlp.c_fc.bias", &lw.b_fc, {f}, K::Bias});
      t.push_back({p + "mlp.c_proj.weight", &lw.w_proj, {d, f}, K::Matrix});
      t.push_back({p + "mlp.c_proj.bias", &lw.b_proj, {d}, K::Bias});
    }
    t.push_back({"transformer.ln_f.weight", &w.ln_f_w, {d}, K::NormWeight});
    t.push_back({"transformer.ln_f.bias", &w.ln_f_b, {d}, K::NormBias});
  } else {
    t.push_back({"model.embed_tokens.weight", &w.wte, {V, d}, K::Embedding});
    for (int l = 0; l < c.n_layers; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      auto& lw = w.layers[l];
      t.push_back({p + "input_layernorm.weight", &lw.ln1_w, {d}, K::NormWeight});
      t.push_back({p + "self_attn.q_proj.weight", &lw.w_q, {qd, d}, K::Matrix});
      t.push_back({p + "self_attn.k_proj.weight", &lw.w_k, {kvd, d}, K::Matrix});
      t.push_back({p + "self_attn.v_proj.weight", &lw.w_v, {kvd, d}, K::Matrix});
      if (c.qkv_bias) {
        t.push_back({p + "self_attn.q_proj.bias", &lw.b_q, {qd}, K::Bias});
        t.push_back({p + "self_attn.k_proj.bias", &lw.b_k, {kvd}, K::Bias});
        t.push_back({p + "self_attn.v_proj.bias", &lw.b_v, {kvd}, K::Bias});
      }
      t.push_back({p + "self_attn.o_proj.weight", &lw.w_o, {d, qd}, K::Matrix});
      t.push_back({p + "post_attention_layernorm.weight", &lw.ln2_w, {d}, K::NormWeight});
      t.push_back({p + "mlp.gate_proj.weight", &lw.w_gate, {f, d}, K::Matrix});
      t.push_back({p + "mlp.up_proj.weight", &lw.w_up, {f, d}, K::Matrix});
      t.push_back({p + "mlp.down_proj.weight", &lw.w_down, {d, f}, K::Matrix});
    }
    t.push_back({"model.norm.weight", &w.ln_f_w, {d}, K::NormWeight});
  }
  t.push_back({"lm_head.weight", &w.lm_head, {V, d}, K::Embedding, c.tie_word_embeddings});
  return t;
}

Model load_model(const std::string& name_or_path, const LoadOptions& options, const std::string& revision) {
  // Whoever runs a model loads it first: flush denormals there too (on the current thread pool).
  flush_denormals();
  Model m;
  m.path = resolve_model_path(name_or_path, revision);
  m.dtype = parse_dtype(options.dtype);
  m.device = parse_device(options.device);
  m.config = parse_config(m.path + "/config.json");
  const ModelConfig& c = m.config;
  if (c.rope_scaling && c.rope_scaling->type != "llama3" && c.rope_scaling->type != "default")
    fail_input(m.path + "/config.json", "rope_scaling type '" + c.rope_scaling->type + "' is not supported (llama3)");
  const auto ckpt = std::make_shared<const Checkpoint>(Checkpoint::open(m.path));
  check_tensors(*ckpt, m);
  const bool map = m.device.is_cpu() && options.map_weights;
  std::shared_ptr<const Checkpoint> source = ckpt;
  if (map && !options.convert_cache.empty() && needs_conversion(*ckpt, m)) {
    try {
      source = converted(ckpt, m, options.convert_cache);
    } catch (const InputError&) {
      throw;  // the weights' fault (NaN), named as without a cache
    } catch (const std::exception& e) {
      spdlog::warn("cannot share converted weights through {} ({}): converting privately", options.convert_cache, e.what());
    }
  }
  const Loader L{source, m, map, &m.mapped_bytes};
  for (const NamedParam& p : parameter_table(m)) *p.slot = p.optional ? L.maybe(p.name, p.shape) : L.take(p.name, p.shape);
  if (m.mapped_bytes) {
    for (const auto& f : source->files) m.mapped_from += (m.mapped_from.empty() ? "" : ", ") + f.path();
    spdlog::debug("{} MiB of weights mapped read-only from {}", m.mapped_bytes >> 20, m.mapped_from);
  }
  Weights& w = m.weights;
  const int64_t V = c.vocab_size;
  // A checkpoint's own lm_head wins; otherwise the unembedding is the token embedding.
  if (!w.lm_head.defined()) w.lm_head = w.wte;
  if (c.family != Family::GptNeo) w.rope_inv_freq = rope_frequencies(c).to(m.device);

  if (options.trim_vocab_to > 0 && options.trim_vocab_to < V) {
    const bool tied = w.lm_head.is_same(w.wte);
    w.wte = w.wte.narrow(0, 0, options.trim_vocab_to).contiguous();
    w.lm_head = tied ? w.wte : w.lm_head.narrow(0, 0, options.trim_vocab_to).contiguous();
    m.trimmed_rows = static_cast<int>(V - options.trim_vocab_to);
    m.config.vocab_size = options.trim_vocab_to;
    spdlog::info("vocabulary trim: dropped the last {} row(s) of the embedding and unembedding ({} -> {})",
                 m.trimmed_rows, V, options.trim_vocab_to);
  } else if (options.trim_vocab_to > V) {
    fail_input(m.path, "cannot trim the vocabulary to " + std::to_string(options.trim_vocab_to) +
                           " rows: the checkpoint has only " + std::to_string(V));
  }
  if (products_in_float32(m.dtype, m.device)) {
    static std::once_flag said;
    std::call_once(said, [] {
      spdlog::info("bfloat16 on a CPU without AVX-512: matrix products run in float32 and are rounded to bfloat16 "
                   "(LibTorch's own bfloat16 product is about 50x slower here)");
    });
  }
  return m;
}

}  // namespace teap::model
