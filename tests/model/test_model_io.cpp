// Unit tests of the torch-free checkpoint layer: config.json of the three families (real Hugging
// Face configs and round trips), the offline Hugging Face cache, safetensors reading/writing
// (single and sharded), the F16/BF16 conversions, and bad files, each an InputError whose one-line
// message names the file and the tensor or key.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "model/config.hpp"
#include "model/hf_cache.hpp"
#include "model/safetensors.hpp"
#include "util/error.hpp"

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace teap::model;

namespace {

// A fresh folder under the temporary directory, removed with everything in it.
struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "teap_model_io_XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string operator/(const std::string& rel) const { return (path / rel).string(); }
};

void write_text(const std::string& path, const std::string& text) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Runs `f`, which must throw an InputError with a one-line message containing every `parts`.
void expect_input_error(const std::function<void()>& f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "no InputError; expected one containing '" << parts.front() << "'";
  } catch (const teap::InputError& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "not one line: " << msg;
    for (const auto& p : parts)
      EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "not an InputError: " << e.what();
  }
}

// Sets an environment variable for one scope and restores it afterwards.
struct ScopedEnv {
  std::string name;
  std::optional<std::string> old;
  ScopedEnv(const std::string& n, const char* value) : name(n) {
    if (const char* v = std::getenv(n.c_str())) old = v;
    if (value)
      ::setenv(n.c_str(), value, 1);
    else
      ::unsetenv(n.c_str());
  }
  ~ScopedEnv() {
    if (old)
      ::setenv(name.c_str(), old->c_str(), 1);
    else
      ::unsetenv(name.c_str());
  }
};

// --- config.json ------------------------------------------------------------------------------

// roneneldan/TinyStories-Instruct-2Layers-33M, as published.
const char* kTinyStoriesConfig = R"({
  "_name_or_path": "EleutherAI/gpt-neo-125M",
  "activation_function": "gelu_new",
  "architectures": ["GPTNeoForCausalLM"],
  "attention_dropout": 0,
  "attention_layers": ["global", "local"],
  "attention_types": [[["global", "local"], 1]],
  "bos_token_id": 50256,
  "embed_dropout": 0,
  "eos_token_id": 50256,
  "gradient_checkpointing": false,
  "hidden_size": 1024,
  "initializer_range": 0.02,
  "intermediate_size": null,
  "layer_norm_epsilon": 1e-05,
  "max_position_embeddings": 2048,
  "model_type": "gpt_neo",
  "num_heads": 16,
  "num_layers": 2,
  "resid_dropout": 0,
  "summary_activation": null,
  "summary_first_dropout": 0.1,
  "summary_proj_to_labels": true,
  "summary_type": "cls_index",
  "summary_use_proj": true,
  "torch_dtype": "float32",
  "transformers_version": "4.28.1",
  "use_cache": true,
  "vocab_size": 50257,
  "window_size": 256
})";

// Qwen/Qwen2.5-0.5B.
const char* kQwenConfig = R"({
  "architectures": ["Qwen2ForCausalLM"],
  "attention_dropout": 0.0,
  "bos_token_id": 151643,
  "eos_token_id": 151643,
  "hidden_act": "silu",
  "hidden_size": 896,
  "initializer_range": 0.02,
  "intermediate_size": 4864,
  "max_position_embeddings": 32768,
  "max_window_layers": 24,
  "model_type": "qwen2",
  "num_attention_heads": 14,
  "num_hidden_layers": 24,
  "num_key_value_heads": 2,
  "rms_norm_eps": 1e-06,
  "rope_theta": 1000000.0,
  "sliding_window": 32768,
  "tie_word_embeddings": true,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.40.1",
  "use_cache": true,
  "use_mrope": false,
  "use_sliding_window": false,
  "vocab_size": 151936
})";

// meta-llama/Llama-3.2-1B.
const char* kLlamaConfig = R"({
  "architectures": ["LlamaForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 128000,
  "eos_token_id": 128001,
  "head_dim": 64,
  "hidden_act": "silu",
  "hidden_size": 2048,
  "initializer_range": 0.02,
  "intermediate_size": 8192,
  "max_position_embeddings": 131072,
  "mlp_bias": false,
  "model_type": "llama",
  "num_attention_heads": 32,
  "num_hidden_layers": 16,
  "num_key_value_heads": 8,
  "pretraining_tp": 1,
  "rms_norm_eps": 1e-05,
  "rope_scaling": {
    "factor": 32.0,
    "high_freq_factor": 4.0,
    "low_freq_factor": 1.0,
    "original_max_position_embeddings": 8192,
    "rope_type": "llama3"
  },
  "rope_theta": 500000.0,
  "tie_word_embeddings": true,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.45.0.dev0",
  "use_cache": true,
  "vocab_size": 128256
})";

ModelConfig parse_written(const TempDir& dir, const std::string& text) {
  const std::string path = dir / "config.json";
  write_text(path, text);
  return parse_config(path);
}

void expect_round_trip(const ModelConfig& c) {
  const std::string text = config_to_json(c);
  const ModelConfig back = parse_config_text(text, "roundtrip/config.json");
  EXPECT_TRUE(back == c) << text;
  EXPECT_EQ(config_to_json(back), text);
}

TEST(Config, TinyStoriesGptNeo) {
  TempDir dir;
  const ModelConfig c = parse_written(dir, kTinyStoriesConfig);
  EXPECT_EQ(c.family, Family::GptNeo);
  EXPECT_EQ(c.model_type, "gpt_neo");
  EXPECT_EQ(c.n_layers, 2);
  EXPECT_EQ(c.n_heads, 16);
  EXPECT_EQ(c.n_kv_heads, 16);
  EXPECT_EQ(c.d_model, 1024);
  EXPECT_EQ(c.d_head, 64);
  EXPECT_EQ(c.d_mlp, 4096);  // intermediate_size null
  EXPECT_EQ(c.vocab_size, 50257);
  EXPECT_EQ(c.max_positions, 2048);
  EXPECT_EQ(c.norm_eps, 1e-5);
  EXPECT_EQ(c.local_layer, (std::vector<bool>{false, true}));
  EXPECT_EQ(c.window_size, 256);
  EXPECT_EQ(c.activation, "gelu_new");
  EXPECT_TRUE(c.tie_word_embeddings);  // absent: GPT-Neo's default
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_FALSE(c.rope_scaling);
  EXPECT_EQ(c.bos_token_id, 50256);
  EXPECT_EQ(c.eos_token_id, 50256);
  EXPECT_EQ(c.torch_dtype, "float32");
  expect_round_trip(c);

  const json j = json::parse(config_to_json(c));
  EXPECT_EQ(j["architectures"], json::array({"GPTNeoForCausalLM"}));
  EXPECT_EQ(j["attention_types"], json::parse(R"([[["global","local"],1]])"));
  EXPECT_EQ(j["attention_layers"], json::parse(R"(["global","local"])"));
  EXPECT_EQ(j["num_layers"], 2);
  EXPECT_EQ(j["hidden_size"], 1024);
}

TEST(Config, GptNeoAttentionTypesOnlyAndRepeats) {
  TempDir dir;
  json j = json::parse(kTinyStoriesConfig);
  j.erase("attention_layers");
  j["num_layers"] = 6;
  j["attention_types"] = json::parse(R"([[["global","local"],2],[["local"],2]])");
  j["intermediate_size"] = 3000;
  const ModelConfig c = parse_written(dir, j.dump());
  EXPECT_EQ(c.local_layer, (std::vector<bool>{false, true, false, true, true, true}));
  EXPECT_EQ(c.d_mlp, 3000);
  expect_round_trip(c);
}

TEST(Config, Qwen25) {
  TempDir dir;
  const ModelConfig c = parse_written(dir, kQwenConfig);
  EXPECT_EQ(c.family, Family::Qwen2);
  EXPECT_EQ(c.n_layers, 24);
  EXPECT_EQ(c.n_heads, 14);
  EXPECT_EQ(c.n_kv_heads, 2);
  EXPECT_EQ(c.d_model, 896);
  EXPECT_EQ(c.d_head, 64);
  EXPECT_EQ(c.d_mlp, 4864);
  EXPECT_EQ(c.vocab_size, 151936);
  EXPECT_EQ(c.max_positions, 32768);
  EXPECT_EQ(c.norm_eps, 1e-6);
  EXPECT_EQ(c.local_layer, std::vector<bool>(24, false));  // use_sliding_window false
  EXPECT_EQ(c.window_size, 32768);
  EXPECT_EQ(c.activation, "silu");
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_EQ(c.rope_theta, 1e6);
  EXPECT_FALSE(c.rope_scaling);
  EXPECT_EQ(c.bos_token_id, 151643);
  EXPECT_EQ(c.torch_dtype, "bfloat16");
  expect_round_trip(c);
  EXPECT_EQ(json::parse(config_to_json(c))["architectures"], json::array({"Qwen2ForCausalLM"}));
}

TEST(Config, Qwen2SlidingWindowLayers) {
  TempDir dir;
  json j = json::parse(kQwenConfig);
  j["num_hidden_layers"] = 4;
  j["use_sliding_window"] = true;
  j["sliding_window"] = 8;
  j["max_window_layers"] = 2;
  const ModelConfig c = parse_written(dir, j.dump());
  EXPECT_EQ(c.local_layer, (std::vector<bool>{false, false, true, true}));
  EXPECT_EQ(c.window_size, 8);
  expect_round_trip(c);
}

TEST(Config, Llama32) {
  TempDir dir;
  const ModelConfig c = parse_written(dir, kLlamaConfig);
  EXPECT_EQ(c.family, Family::Llama);
  EXPECT_EQ(c.n_layers, 16);
  EXPECT_EQ(c.n_heads, 32);
  EXPECT_EQ(c.n_kv_heads, 8);
  EXPECT_EQ(c.d_model, 2048);
  EXPECT_EQ(c.d_head, 64);
  EXPECT_EQ(c.d_mlp, 8192);
  EXPECT_EQ(c.vocab_size, 128256);
  EXPECT_EQ(c.norm_eps, 1e-5);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_EQ(c.rope_theta, 500000.0);
  ASSERT_TRUE(c.rope_scaling);
  EXPECT_EQ(c.rope_scaling->type, "llama3");
  EXPECT_EQ(c.rope_scaling->factor, 32.0);
  EXPECT_EQ(c.rope_scaling->low_freq_factor, 1.0);
  EXPECT_EQ(c.rope_scaling->high_freq_factor, 4.0);
  EXPECT_EQ(c.rope_scaling->original_max_position_embeddings, 8192);
  EXPECT_EQ(c.local_layer, std::vector<bool>(16, false));
  EXPECT_EQ(c.window_size, 0);
  EXPECT_EQ(c.bos_token_id, 128000);
  EXPECT_EQ(c.eos_token_id, 128001);
  expect_round_trip(c);
  const json j = json::parse(config_to_json(c));
  EXPECT_EQ(j["architectures"], json::array({"LlamaForCausalLM"}));
  EXPECT_EQ(j["rope_scaling"]["rope_type"], "llama3");
}

TEST(Config, LlamaVariants) {
  TempDir dir;
  json j = json::parse(kLlamaConfig);
  // Older configs: "type" in place of "rope_type"; instruct models list several eos ids.
  j["rope_scaling"].erase("rope_type");
  j["rope_scaling"]["type"] = "llama3";
  j["eos_token_id"] = json::array({128001, 128008, 128009});
  j["attention_bias"] = true;
  j.erase("head_dim");
  ModelConfig c = parse_written(dir, j.dump());
  EXPECT_EQ(c.rope_scaling->type, "llama3");
  EXPECT_EQ(c.eos_token_id, 128001);
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_EQ(c.d_head, 64);
  expect_round_trip(c);
  // A head_dim that is not hidden/heads, and no rope scaling.
  j["head_dim"] = 32;
  j["rope_scaling"] = nullptr;
  c = parse_written(dir, j.dump());
  EXPECT_EQ(c.d_head, 32);
  EXPECT_FALSE(c.rope_scaling);
  expect_round_trip(c);
}

TEST(Config, HandBuiltRoundTrips) {
  ModelConfig g;
  g.family = Family::GptNeo;
  g.model_type = "gpt_neo";
  g.n_layers = 3;
  g.n_heads = 4;
  g.n_kv_heads = 4;
  g.d_model = 64;
  g.d_head = 16;
  g.d_mlp = 256;
  g.vocab_size = 50258;
  g.max_positions = 128;
  g.norm_eps = 1e-5;
  g.local_layer = {false, true, true};
  g.window_size = 4;
  g.activation = "gelu_new";
  g.tie_word_embeddings = false;
  g.bos_token_id = 50256;
  g.eos_token_id = 50256;
  expect_round_trip(g);

  ModelConfig q = g;
  q.family = Family::Qwen2;
  q.model_type = "qwen2";
  q.n_kv_heads = 2;
  q.local_layer.assign(3, false);
  q.window_size = 0;  // sliding_window null
  q.activation = "silu";
  q.qkv_bias = true;
  q.rope_theta = 10000;
  q.norm_eps = 1e-6;
  q.torch_dtype = "bfloat16";
  q.bos_token_id = -1;
  expect_round_trip(q);

  ModelConfig l = q;
  l.family = Family::Llama;
  l.model_type = "llama";
  l.qkv_bias = false;
  l.n_kv_heads = 1;
  l.rope_theta = 500000;
  l.rope_scaling = RopeScaling{"llama3", 8.0, 1.0, 4.0, 64};
  expect_round_trip(l);
  EXPECT_EQ(family_name(Family::GptNeo), "gpt_neo");
  EXPECT_EQ(family_name(Family::Qwen2), "qwen2");
  EXPECT_EQ(family_name(Family::Llama), "llama");
}

TEST(Config, Errors) {
  TempDir dir;
  const std::string path = dir / "config.json";
  auto bad = [&](json j, std::vector<std::string> parts) {
    write_text(path, j.dump());
    parts.insert(parts.begin(), path);
    expect_input_error([&] { parse_config(path); }, parts);
  };
  const json neo = json::parse(kTinyStoriesConfig);
  const json qwen = json::parse(kQwenConfig);
  const json llama = json::parse(kLlamaConfig);

  json j = neo;
  j["model_type"] = "bert";
  bad(j, {"model_type", "'bert'", "gpt_neo, qwen2, llama"});
  j = neo;
  j.erase("model_type");
  bad(j, {"model_type", "missing"});
  j = neo;
  j.erase("hidden_size");
  bad(j, {"'hidden_size'", "missing"});
  j = neo;
  j["num_heads"] = "16";
  bad(j, {"'num_heads'", "integer"});
  j = neo;
  j["num_heads"] = 15;
  bad(j, {"hidden_size", "divisible", "num_heads"});
  j = neo;
  j["num_layers"] = 3;
  bad(j, {"attention_layers", "3"});
  j = neo;
  j.erase("attention_layers");
  j.erase("attention_types");
  bad(j, {"attention_types", "missing"});
  j = neo;
  j["activation_function"] = "relu";
  bad(j, {"activation_function", "relu", "gelu_new"});
  j = neo;
  j["layer_norm_epsilon"] = "small";
  bad(j, {"layer_norm_epsilon", "number"});
  j = qwen;
  j["num_key_value_heads"] = 4;
  bad(j, {"num_key_value_heads", "num_attention_heads"});
  j = qwen;
  j["num_hidden_layers"] = -2;
  bad(j, {"num_hidden_layers", "positive"});
  j = qwen;
  j["tie_word_embeddings"] = 1;
  bad(j, {"tie_word_embeddings", "true or false"});
  j = llama;
  j["rope_scaling"]["rope_type"] = "yarn";
  bad(j, {"rope_scaling", "yarn", "llama3"});
  j = llama;
  j["rope_scaling"].erase("factor");
  bad(j, {"rope_scaling.factor", "missing"});
  j = llama;
  j.erase("intermediate_size");
  bad(j, {"intermediate_size", "missing"});
  j = llama;
  j["mlp_bias"] = true;
  bad(j, {"mlp_bias"});

  write_text(path, "{\"model_type\": ");
  expect_input_error([&] { parse_config(path); }, {path, "not valid JSON"});
  write_text(path, "[1, 2]");
  expect_input_error([&] { parse_config(path); }, {path, "not a JSON object"});
  expect_input_error([&] { parse_config(dir / "absent.json"); }, {"absent.json", "no such file"});
}

// --- Hugging Face cache -----------------------------------------------------------------------

const std::string kMain = "0123456789abcdef0123456789abcdef01234567";
const std::string kOther = "fedcba9876543210fedcba9876543210fedcba98";

TEST(HfCache, Resolution) {
  TempDir dir;
  const fs::path repo = dir.path / "hub" / "models--withmartian--sql_interp_bm1";
  fs::create_directories(repo / "snapshots" / kMain);
  fs::create_directories(repo / "snapshots" / kOther);
  write_text((repo / "refs" / "main").string(), kMain + "\n");
  write_text((repo / "refs" / "v1").string(), kOther);
  ScopedEnv hub("HF_HUB_CACHE", (dir / "hub").c_str());

  EXPECT_EQ(hf_hub_cache_dir(), dir / "hub");
  EXPECT_EQ(resolve_model_path("withmartian/sql_interp_bm1"),
            (repo / "snapshots" / kMain).string());
  EXPECT_EQ(resolve_model_path("withmartian/sql_interp_bm1", "v1"),
            (repo / "snapshots" / kOther).string());
  EXPECT_EQ(resolve_model_path("withmartian/sql_interp_bm1", kOther),
            (repo / "snapshots" / kOther).string());

  // An existing folder wins and is returned as given.
  EXPECT_EQ(resolve_model_path(dir.path.string()), dir.path.string());

  expect_input_error([&] { resolve_model_path("withmartian/absent"); },
                     {"withmartian/absent", "not in the Hugging Face cache",
                      "models--withmartian--absent", "nothing is downloaded"});
  expect_input_error([&] { resolve_model_path("withmartian/sql_interp_bm1", "v2"); },
                     {"withmartian/sql_interp_bm1", "'v2'", "nothing is downloaded"});
  expect_input_error(
      [&] { resolve_model_path("withmartian/sql_interp_bm1", std::string(40, 'a')); },
      {"not in the Hugging Face cache"});
  expect_input_error([&] { resolve_model_path("no/such/folder"); }, {"no/such/folder", "org/name"});
  expect_input_error([&] { resolve_model_path("justaname"); }, {"justaname", "org/name"});
  const std::string file = dir / "file.txt";
  write_text(file, "x");
  expect_input_error([&] { resolve_model_path(file); }, {file, "is a file"});

  // A ref whose snapshot folder is gone.
  write_text((repo / "refs" / "broken").string(), std::string(40, 'b'));
  expect_input_error([&] { resolve_model_path("withmartian/sql_interp_bm1", "broken"); },
                     {"cache entry without a snapshot", std::string(40, 'b')});
  fs::remove_all(repo / "snapshots" / kMain);
  expect_input_error([&] { resolve_model_path("withmartian/sql_interp_bm1"); },
                     {"refs/main", "cache entry without a snapshot"});
  write_text((repo / "refs" / "junk").string(), "not a hash");
  expect_input_error([&] { resolve_model_path("withmartian/sql_interp_bm1", "junk"); },
                     {"refs/junk", "not a commit hash"});
}

TEST(HfCache, CacheFolderFromEnvironment) {
  ScopedEnv a("HF_HUB_CACHE", nullptr);
  ScopedEnv b("HUGGINGFACE_HUB_CACHE", nullptr);
  ScopedEnv c("XDG_CACHE_HOME", nullptr);
  {
    ScopedEnv home("HF_HOME", "/x/hf");
    EXPECT_EQ(hf_hub_cache_dir(), "/x/hf/hub");
  }
  ScopedEnv hf_home("HF_HOME", nullptr);
  ScopedEnv home("HOME", "/home/someone");
  EXPECT_EQ(hf_hub_cache_dir(), "/home/someone/.cache/huggingface/hub");
  ScopedEnv xdg("XDG_CACHE_HOME", "/xdg");
  EXPECT_EQ(hf_hub_cache_dir(), "/xdg/huggingface/hub");
  ScopedEnv hub("HF_HUB_CACHE", "~/hub");
  EXPECT_EQ(hf_hub_cache_dir(), "/home/someone/hub");
}

// --- safetensors: writing and reading ---------------------------------------------------------

struct Owned {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
  TensorView view() const { return {name, dtype, shape, bytes.data(), bytes.size(), ""}; }
};

Owned f32_tensor(const std::string& name, std::vector<int64_t> shape, float start) {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  std::vector<float> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = start + 0.25f * i;
  Owned o{name, DType::F32, shape, std::vector<uint8_t>(n * 4)};
  if (n) std::memcpy(o.bytes.data(), v.data(), n * 4);
  return o;
}

Owned u16_tensor(const std::string& name, DType dtype, std::vector<int64_t> shape,
                 const std::vector<uint16_t>& v) {
  Owned o{name, dtype, shape, std::vector<uint8_t>(v.size() * 2)};
  if (!v.empty()) std::memcpy(o.bytes.data(), v.data(), v.size() * 2);
  return o;
}

std::vector<Owned> sample_tensors() {
  const std::vector<float> vals = {1.0f, -2.5f, 0.1f, 65504.0f, 3.0e-6f, -0.0f};
  return {
      f32_tensor("transformer.wte.weight", {3, 4}, -1.0f),
      u16_tensor("transformer.h.0.attn.bias", DType::BF16, {6}, f32_to_bf16(vals.data(), 6)),
      u16_tensor("transformer.h.0.mlp.c_fc.weight", DType::F16, {2, 3}, f32_to_f16(vals.data(), 6)),
      f32_tensor("a.scalar", {}, 7.0f),
      f32_tensor("empty", {0, 5}, 0.0f),
      u16_tensor("z.odd", DType::BF16, {3}, f32_to_bf16(vals.data(), 3)),
      f32_tensor("z.last", {5}, 3.0f),
  };
}

std::vector<TensorView> views_of(const std::vector<Owned>& owned) {
  std::vector<TensorView> v;
  for (const auto& o : owned) v.push_back(o.view());
  return v;
}

void expect_same(const TensorView& got, const Owned& want) {
  EXPECT_EQ(got.name, want.name);
  EXPECT_EQ(got.dtype, want.dtype) << want.name;
  EXPECT_EQ(got.shape, want.shape) << want.name;
  ASSERT_EQ(got.nbytes, want.bytes.size()) << want.name;
  if (got.nbytes) {
    EXPECT_EQ(std::memcmp(got.data, want.bytes.data(), got.nbytes), 0) << want.name;
  }
}

TEST(Safetensors, SingleFileRoundTrip) {
  TempDir dir;
  const auto owned = sample_tensors();
  const std::string path = dir / "model.safetensors";
  write_safetensors(path, views_of(owned));

  // No temporary is left beside it, and the header is padded to a multiple of 8.
  int files = 0;
  for (const auto& e : fs::directory_iterator(dir.path)) files += e.is_regular_file();
  EXPECT_EQ(files, 1);
  const std::string raw = read_bytes(path);
  uint64_t n = 0;
  std::memcpy(&n, raw.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(raw.size(), 8 + n + 4 * 12 + 2 * 6 + 2 * 6 + 4 + 2 * 3 + 4 * 5);
  const json header = json::parse(raw.substr(8, n));
  EXPECT_EQ(header["__metadata__"]["format"], "pt");
  EXPECT_EQ(header["transformer.wte.weight"]["dtype"], "F32");
  EXPECT_EQ(header["transformer.wte.weight"]["shape"], json::array({3, 4}));

  SafetensorsFile f(path);
  EXPECT_EQ(f.tensors().size(), owned.size());
  EXPECT_EQ(f.metadata().at("format"), "pt");
  for (const auto& o : owned) {
    const TensorView* t = f.find(o.name);
    ASSERT_NE(t, nullptr) << o.name;
    expect_same(*t, o);
    EXPECT_EQ(t->file, path);
    // Largest elements first, so each tensor's data is aligned to its element size.
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t->data) % dtype_size(t->dtype), 0u) << o.name;
  }
  EXPECT_EQ(f.find("absent"), nullptr);
  EXPECT_TRUE(
      std::is_sorted(f.tensors().begin(), f.tensors().end(),
                     [](const TensorView& a, const TensorView& b) { return a.name < b.name; }));

  // Moving keeps the mapping and the views.
  const TensorView* before = f.find("z.last");
  SafetensorsFile g(std::move(f));
  EXPECT_EQ(g.find("z.last"), before);
  expect_same(*g.find("z.last"), owned.back());

  Checkpoint c = Checkpoint::open(dir.path.string());
  EXPECT_TRUE(c.index_file.empty());
  EXPECT_EQ(c.files.size(), 1u);
  std::vector<std::string> names;
  for (const auto& o : owned) names.push_back(o.name);
  std::sort(names.begin(), names.end());
  EXPECT_EQ(c.names(), names);
  expect_same(c.get("transformer.h.0.attn.bias"), owned[1]);
  EXPECT_EQ(c.find("nope"), nullptr);
  expect_input_error([&] { c.get("lm_head.weight"); },
                     {dir.path.string(), "missing tensor 'lm_head.weight'"});
  EXPECT_EQ(c.total_bytes(), raw.size() - 8 - n);

  // Writing again over the file replaces it.
  write_safetensors(path, {owned[0].view()}, {});
  SafetensorsFile h(path);
  EXPECT_EQ(h.tensors().size(), 1u);
  EXPECT_TRUE(h.metadata().empty());
}

TEST(Safetensors, ShardedRoundTrip) {
  TempDir dir;
  std::vector<Owned> owned;
  for (int i = 0; i < 5; ++i)
    owned.push_back(f32_tensor("layer." + std::to_string(i), {10, 10}, i));
  owned.push_back(f32_tensor("big", {30, 10}, 9));  // larger than a shard: alone
  const std::string folder = dir / "model";
  write_sharded(folder, views_of(owned), 1000);

  // Name order: big | layer.0 layer.1 | layer.2 layer.3 | layer.4
  const json index = json::parse(read_bytes(folder + "/model.safetensors.index.json"));
  EXPECT_EQ(index["metadata"]["total_size"], 5 * 400 + 1200);
  EXPECT_EQ(index["weight_map"]["big"], "model-00001-of-00004.safetensors");
  EXPECT_EQ(index["weight_map"]["layer.1"], "model-00002-of-00004.safetensors");
  EXPECT_EQ(index["weight_map"]["layer.2"], "model-00003-of-00004.safetensors");
  EXPECT_EQ(index["weight_map"]["layer.4"], "model-00004-of-00004.safetensors");
  for (int i = 1; i <= 4; ++i)
    EXPECT_TRUE(fs::exists(folder + "/model-0000" + std::to_string(i) + "-of-00004.safetensors"));

  const Checkpoint c = open_checkpoint(folder);
  EXPECT_EQ(c.index_file, folder + "/model.safetensors.index.json");
  EXPECT_EQ(c.files.size(), 4u);
  EXPECT_EQ(c.names().size(), owned.size());
  for (const auto& o : owned) expect_same(c.get(o.name), o);
  EXPECT_EQ(c.get("layer.3").file, folder + "/model-00003-of-00004.safetensors");
  EXPECT_EQ(c.total_bytes(), 5u * 400 + 1200);
}

TEST(Safetensors, WriterRejectsInconsistentViews) {
  TempDir dir;
  Owned a = f32_tensor("a", {2, 2}, 0);
  TensorView v = a.view();
  v.shape = {3};
  EXPECT_THROW(write_safetensors(dir / "x.safetensors", {v}), std::invalid_argument);
  EXPECT_THROW(write_safetensors(dir / "x.safetensors", {a.view(), a.view()}),
               std::invalid_argument);
  EXPECT_FALSE(fs::exists(dir / "x.safetensors"));
}

// --- conversions ------------------------------------------------------------------------------

float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t bf16(float f) { return f32_to_bf16(&f, 1)[0]; }
uint16_t f16(float f) { return f32_to_f16(&f, 1)[0]; }

TEST(Convert, BF16KnownValues) {
  EXPECT_EQ(bf16(1.0f), 0x3f80);
  EXPECT_EQ(bf16(-2.0f), 0xc000);
  EXPECT_EQ(bf16(0.0f), 0x0000);
  EXPECT_EQ(bf16(-0.0f), 0x8000);
  EXPECT_EQ(bf16(std::numeric_limits<float>::infinity()), 0x7f80);
  EXPECT_EQ(bf16(-std::numeric_limits<float>::infinity()), 0xff80);
  EXPECT_EQ(bf16(std::nanf("")), 0x7fc0);
  EXPECT_EQ(bf16(from_bits(0x3f808000)), 0x3f80);  // tie, even below
  EXPECT_EQ(bf16(from_bits(0x3f818000)), 0x3f82);  // tie, even above
  EXPECT_EQ(bf16(from_bits(0x3f808001)), 0x3f81);  // just above the tie
  EXPECT_EQ(bf16(from_bits(0x3f807fff)), 0x3f80);
  EXPECT_EQ(bf16(from_bits(0x7f7fffff)), 0x7f80);  // float max rounds to infinity
  EXPECT_EQ(bf16(from_bits(0x00010000)), 0x0001);  // subnormal kept
  EXPECT_EQ(bf16_to_f32(0x3f80), 1.0f);
  EXPECT_EQ(bf16_to_f32(0x4049), 3.140625f);
  EXPECT_TRUE(std::isnan(bf16_to_f32(0x7fc1)));
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = bf16_to_f32(static_cast<uint16_t>(h));
    if (!std::isnan(f)) {
      ASSERT_EQ(bf16(f), h);
    }
  }
}

TEST(Convert, F16KnownValues) {
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(f16(1.0f), 0x3c00);
  EXPECT_EQ(f16(-2.0f), 0xc000);
  EXPECT_EQ(f16(-0.0f), 0x8000);
  EXPECT_EQ(f16(65504.0f), 0x7bff);
  EXPECT_EQ(f16(65519.0f), 0x7bff);
  EXPECT_EQ(f16(65520.0f), 0x7c00);  // tie above the largest half: rounds to infinity
  EXPECT_EQ(f16(1e10f), 0x7c00);
  EXPECT_EQ(f16(inf), 0x7c00);
  EXPECT_EQ(f16(-inf), 0xfc00);
  EXPECT_EQ(f16(std::nanf("")), 0x7e00);
  EXPECT_EQ(f16(-std::nanf("")), 0xfe00);
  EXPECT_EQ(f16(std::ldexp(1.0f, -14)), 0x0400);     // smallest normal
  EXPECT_EQ(f16(std::ldexp(1023.0f, -24)), 0x03ff);  // largest subnormal
  EXPECT_EQ(f16(std::ldexp(1.0f, -24)), 0x0001);     // smallest subnormal
  EXPECT_EQ(f16(std::ldexp(1.0f, -25)), 0x0000);     // tie with zero: even
  EXPECT_EQ(f16(std::ldexp(1.5f, -25)), 0x0001);
  EXPECT_EQ(f16(std::ldexp(3.0f, -25)), 0x0002);  // 1.5 units: tie, even above
  EXPECT_EQ(f16(std::ldexp(5.0f, -25)), 0x0002);  // 2.5 units: tie, even below
  EXPECT_EQ(f16(-std::ldexp(1.0f, -24)), 0x8001);
  EXPECT_EQ(f16(std::ldexp(2047.0f, -25)), 0x0400);      // rounds up into the normals
  EXPECT_EQ(f16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);  // tie, even below
  EXPECT_EQ(f16(1.0f + std::ldexp(3.0f, -11)), 0x3c02);  // tie, even above
  EXPECT_EQ(f16(std::ldexp(1.0f, -30)), 0x0000);

  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(f16_to_f32(0x03ff), std::ldexp(1023.0f, -24));
  EXPECT_EQ(f16_to_f32(0x0400), std::ldexp(1.0f, -14));
  EXPECT_EQ(f16_to_f32(0x7bff), 65504.0f);
  EXPECT_EQ(f16_to_f32(0x3555), 0.333251953125f);
  EXPECT_EQ(f16_to_f32(0x7c00), inf);
  EXPECT_EQ(f16_to_f32(0xfc00), -inf);
  EXPECT_TRUE(std::isnan(f16_to_f32(0x7e00)));
  EXPECT_TRUE(std::isnan(f16_to_f32(0x7c01)));
  EXPECT_TRUE(std::signbit(f16_to_f32(0x8000)));
  EXPECT_TRUE(std::signbit(f16_to_f32(0x8001)));
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = f16_to_f32(static_cast<uint16_t>(h));
    if (!std::isnan(f)) {
      ASSERT_EQ(f16(f), h);
    }
  }
}

#ifdef __FLT16_MAX__
// GCC's _Float16 converts with IEEE round-to-nearest-even: an independent reference.
TEST(Convert, F16MatchesCompiler) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<uint32_t> bits;
  for (int i = 0; i < 2000000; ++i) {
    uint32_t u = bits(rng);
    if (i % 2) u = (u & 0x807fffffu) | ((96u + bits(rng) % 64u) << 23);  // exponent 2^-31..2^32
    const float f = from_bits(u);
    if (std::isnan(f)) continue;
    const _Float16 h = static_cast<_Float16>(f);
    uint16_t want;
    std::memcpy(&want, &h, 2);
    ASSERT_EQ(f16(f), want) << std::hex << u;
    ASSERT_EQ(f16_to_f32(want), static_cast<float>(h));
  }
}
#endif

TEST(Convert, TensorsToFloat) {
  const std::vector<float> vals = {1.0f, -2.5f, 0.1f, 65504.0f, std::ldexp(1.0f, -24), -0.0f};
  const Owned h = u16_tensor("h", DType::F16, {6}, f32_to_f16(vals.data(), 6));
  const Owned b = u16_tensor("b", DType::BF16, {6}, f32_to_bf16(vals.data(), 6));
  const Owned f = f32_tensor("f", {6}, 0.5f);
  std::vector<float> out(6);
  std::vector<double> out64(6);
  convert_to_f32(h.view(), out.data());
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], -2.5f);
  EXPECT_EQ(out[2], 0.0999755859375f);
  EXPECT_EQ(out[3], 65504.0f);
  EXPECT_EQ(out[4], std::ldexp(1.0f, -24));
  EXPECT_TRUE(std::signbit(out[5]));
  convert_to_f64(h.view(), out64.data());
  EXPECT_EQ(out64[2], 0.0999755859375);
  convert_to_f32(b.view(), out.data());
  EXPECT_EQ(out[2], 0.10009765625f);
  convert_to_f32(f.view(), out.data());
  EXPECT_EQ(out[5], 1.75f);
  convert_to_f64(f.view(), out64.data());
  EXPECT_EQ(out64[1], 0.75);

  Owned ints{"ids", DType::I64, {2}, std::vector<uint8_t>(16)};
  TensorView v = ints.view();
  v.file = "/m/model.safetensors";
  expect_input_error([&] { convert_to_f32(v, out.data()); },
                     {"/m/model.safetensors", "'ids'", "I64"});
}

// --- bad files --------------------------------------------------------------------------------

// A safetensors file from a header text (padded to 8), data bytes, and optionally a forged length.
std::string raw_file(const std::string& header, size_t data_bytes,
                     std::optional<uint64_t> length = std::nullopt) {
  std::string h = header;
  h.append((8 - h.size() % 8) % 8, ' ');
  const uint64_t n = length ? *length : h.size();
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + h + std::string(data_bytes, '\x01');
}

TEST(BadFiles, EachIsAOneLineInputError) {
  TempDir dir;
  const std::string p = dir / "bad.safetensors";
  auto bad = [&](const std::string& bytes, std::vector<std::string> parts) {
    write_text(p, bytes);
    parts.insert(parts.begin(), p);
    expect_input_error([&] { SafetensorsFile f(p); }, parts);
  };
  const std::string ok = R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})";

  bad("", {"truncated"});
  bad("abcde", {"truncated"});
  bad(raw_file(ok, 16, uint64_t(1) << 60), {"header length 1152921504606846976", "past the end"});
  bad(raw_file(ok, 16, 1000), {"past the end"});
  bad(raw_file("{not json", 0), {"not valid JSON"});
  bad(raw_file("[1,2]", 0), {"not a JSON object"});
  bad(raw_file(ok, 12), {"'w'", "outside the data", "12 bytes"});  // data cut short
  bad(raw_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", 8),
      {"'w'", "outside the data"});
  bad(raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
               R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
               12),
      {"'a' and 'b' overlap"});
  bad(raw_file(R"({"w":{"dtype":"Q4_K","shape":[2],"data_offsets":[0,8]}})", 8),
      {"'w'", "unknown dtype 'Q4_K'"});
  bad(raw_file(R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,16]}})", 16),
      {"'w'", "shape [2, 3]", "24 bytes", "16"});
  bad(raw_file(R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8),
      {"'w'", "non-negative"});
  bad(raw_file(R"({"w":{"dtype":"F32","shape":[4611686018427387904,4611686018427387904],)"
               R"("data_offsets":[0,16]}})",
               16),
      {"'w'", "too large"});
  bad(raw_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8),
      {"'w'", "begin <= end"});
  bad(raw_file(R"({"w":{"dtype":"F32","shape":[2]}})", 8), {"'w'", "data_offsets"});
  bad(raw_file(R"({"w":{"shape":[2],"data_offsets":[0,8]}})", 8), {"'w'", "dtype"});
  bad(raw_file(R"({"w":[1]})", 8), {"'w'"});
  bad(raw_file(R"({"__metadata__":{"format":1}})", 0), {"__metadata__", "'format'"});
  // A tensor name with a newline stays on one line in the message.
  bad(raw_file("{\"a\\nb\":{\"dtype\":\"X\",\"shape\":[],\"data_offsets\":[0,0]}}", 0),
      {"a\\x0ab", "unknown dtype"});

  // Legal corner cases: a zero-size tensor inside another's bytes, a huge dimension times zero,
  // gaps between tensors, and an empty header.
  write_text(p,
             raw_file(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                      R"("e":{"dtype":"F32","shape":[0,4611686018427387904],"data_offsets":[4,4]},)"
                      R"("g":{"dtype":"BF16","shape":[1],"data_offsets":[20,22]}})",
                      24));
  SafetensorsFile f(p);
  EXPECT_EQ(f.tensors().size(), 3u);
  EXPECT_EQ(f.find("e")->nbytes, 0u);
  write_text(p, raw_file("{}", 0));
  EXPECT_TRUE(SafetensorsFile(p).tensors().empty());

  expect_input_error([&] { SafetensorsFile f2(dir / "absent.safetensors"); },
                     {"absent.safetensors", "no such file"});
}

TEST(BadFiles, Checkpoints) {
  TempDir dir;
  const std::string folder = dir / "m";
  fs::create_directories(folder);
  expect_input_error([&] { open_checkpoint(folder); },
                     {folder, "no model.safetensors or model.safetensors.index.json"});
  write_text(folder + "/pytorch_model.bin", "x");
  expect_input_error([&] { open_checkpoint(folder); }, {folder, "pytorch_model.bin"});
  expect_input_error([&] { open_checkpoint(dir / "absent"); }, {"absent", "not a model folder"});

  // An index naming a shard that is not there.
  std::vector<Owned> owned = {f32_tensor("a", {100}, 0), f32_tensor("b", {100}, 1)};
  write_sharded(folder, views_of(owned), 400);
  ASSERT_TRUE(fs::exists(folder + "/model-00002-of-00002.safetensors"));
  EXPECT_EQ(open_checkpoint(folder).files.size(), 2u);
  fs::rename(folder + "/model-00002-of-00002.safetensors", folder + "/moved.safetensors");
  const std::string index = folder + "/model.safetensors.index.json";
  expect_input_error([&] { open_checkpoint(folder); },
                     {index, "shard 'model-00002-of-00002.safetensors'", "'b'", "does not exist"});

  // A tensor in two shards.
  write_safetensors(folder + "/model-00002-of-00002.safetensors", views_of(owned));
  expect_input_error([&] { open_checkpoint(folder); }, {index, "'a'", "is in both"});

  // A tensor that the index places in a shard that lacks it.
  write_safetensors(folder + "/model-00002-of-00002.safetensors", {owned[0].view()});
  write_safetensors(folder + "/model-00001-of-00002.safetensors", {owned[1].view()});
  expect_input_error([&] { open_checkpoint(folder); }, {index, "not in its shard"});

  // An index whose shard name leaves the folder, and an index that is not JSON.
  write_text(index, R"({"weight_map":{"a":"../x.safetensors"}})");
  expect_input_error([&] { open_checkpoint(folder); }, {index, "'a'", "not a file name"});
  write_text(index, R"({"weight_map":)");
  expect_input_error([&] { open_checkpoint(folder); }, {index, "not valid JSON"});
  write_text(index, R"({"metadata":{}})");
  expect_input_error([&] { open_checkpoint(folder); }, {index, "weight_map"});

  // A bad shard is reported under its own name.
  write_text(index, R"({"weight_map":{"a":"model-00001-of-00002.safetensors"}})");
  write_text(folder + "/model-00001-of-00002.safetensors", "short");
  expect_input_error([&] { open_checkpoint(folder); },
                     {"model-00001-of-00002.safetensors", "truncated"});

  // model.safetensors wins over an index.
  write_safetensors(folder + "/model.safetensors", views_of(owned));
  const Checkpoint c = open_checkpoint(folder);
  EXPECT_TRUE(c.index_file.empty());
  expect_same(c.get("b"), owned[1]);
}

}  // namespace
