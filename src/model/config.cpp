#include "model/config.hpp"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>

#include "model/printable.hpp"
#include "util/error.hpp"
#include "util/files.hpp"

namespace teap::model {

namespace {

using json = nlohmann::json;

std::string type_of(const json& v) {
  switch (v.type()) {
    case json::value_t::null:
      return "null";
    case json::value_t::boolean:
      return "a boolean";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
      return "an integer";
    case json::value_t::number_float:
      return "a number";
    case json::value_t::string:
      return "a string";
    case json::value_t::array:
      return "an array";
    case json::value_t::object:
      return "an object";
    default:
      return "an unexpected value";
  }
}

// Reads typed keys of one JSON object; `prefix` makes nested keys read "rope_scaling.factor".
struct Keys {
  const json& obj;
  const std::string& where;
  std::string prefix;

  std::string name(const std::string& key) const { return prefix + key; }

  [[noreturn]] void bad(const std::string& key, const std::string& what) const {
    fail_input(where, "key '" + name(key) + "' " + what);
  }

  [[noreturn]] void unsupported(const std::string& key, const std::string& value,
                                const std::string& supported) const {
    fail_input(where, name(key) + " '" + printable(value) +
                          "' is not supported (supported: " + supported + ")");
  }

  // Absent and null read the same: Hugging Face's config classes treat both as None.
  const json* find(const std::string& key) const {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return nullptr;
    return &*it;
  }
  const json& need(const std::string& key) const {
    const json* v = find(key);
    if (!v) bad(key, obj.contains(key) ? "is null" : "is missing");
    return *v;
  }

  int as_int(const std::string& key, const json& v) const {
    if (!v.is_number_integer()) bad(key, "must be an integer, got " + type_of(v));
    if (v.is_number_unsigned()) {
      if (v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int>::max()))
        bad(key, "is out of range");
    } else {
      const int64_t x = v.get<int64_t>();
      if (x < std::numeric_limits<int>::min() || x > std::numeric_limits<int>::max())
        bad(key, "is out of range");
    }
    return static_cast<int>(v.get<int64_t>());
  }
  int positive(const std::string& key) const {
    const int x = as_int(key, need(key));
    if (x <= 0) bad(key, "must be positive, got " + std::to_string(x));
    return x;
  }
  int positive_or(const std::string& key, int fallback) const {
    return find(key) ? positive(key) : fallback;
  }
  // A token id: an integer, or the first of a list (Llama-3 instruct lists several eos ids).
  int token_id(const std::string& key) const {
    const json* v = find(key);
    if (!v) return -1;
    if (v->is_array()) {
      if (v->empty()) return -1;
      return as_int(key, v->front());
    }
    return as_int(key, *v);
  }
  double number(const std::string& key) const {
    const json& v = need(key);
    if (!v.is_number()) bad(key, "must be a number, got " + type_of(v));
    return v.get<double>();
  }
  double number_or(const std::string& key, double fallback) const {
    return find(key) ? number(key) : fallback;
  }
  double positive_number_or(const std::string& key, double fallback) const {
    const double x = number_or(key, fallback);
    if (!(x > 0)) bad(key, "must be positive");
    return x;
  }
  bool boolean_or(const std::string& key, bool fallback) const {
    const json* v = find(key);
    if (!v) return fallback;
    if (!v->is_boolean()) bad(key, "must be true or false, got " + type_of(*v));
    return v->get<bool>();
  }
  std::string string(const std::string& key) const {
    const json& v = need(key);
    if (!v.is_string()) bad(key, "must be a string, got " + type_of(v));
    return v.get<std::string>();
  }
  std::string string_or(const std::string& key, const std::string& fallback) const {
    return find(key) ? string(key) : fallback;
  }
};

void check_activation(const Keys& k, const std::string& key, const std::string& act,
                      const std::string& supported) {
  if (act != supported) k.unsupported(key, act, supported);
}

// "global"/"local" list of GPT-Neo. HF expands `attention_types` ([[["global","local"],1]]) in
// the config class, then lets an explicit `attention_layers` override it, so the latter wins.
std::vector<bool> gpt_neo_layers(const Keys& k, int n_layers) {
  std::vector<std::string> kinds;
  if (const json* layers = k.find("attention_layers")) {
    if (!layers->is_array()) k.bad("attention_layers", "must be an array of \"global\"/\"local\"");
    for (const auto& v : *layers) {
      if (!v.is_string()) k.bad("attention_layers", "must be an array of \"global\"/\"local\"");
      kinds.push_back(v.get<std::string>());
    }
  } else if (const json* types = k.find("attention_types")) {
    const std::string form = "must look like [[[\"global\",\"local\"],N], ...]";
    if (!types->is_array()) k.bad("attention_types", form);
    for (const auto& item : *types) {
      if (!item.is_array() || item.size() != 2 || !item[0].is_array() ||
          !item[1].is_number_integer())
        k.bad("attention_types", form);
      const int64_t repeat = item[1].get<int64_t>();
      if (repeat < 0 || repeat > 100000) k.bad("attention_types", form);
      for (int64_t r = 0; r < repeat; ++r)
        for (const auto& v : item[0]) {
          if (!v.is_string()) k.bad("attention_types", form);
          kinds.push_back(v.get<std::string>());
        }
    }
  } else {
    k.bad("attention_types", "is missing (nor is there attention_layers)");
  }
  const std::string key = k.find("attention_layers") ? "attention_layers" : "attention_types";
  if (static_cast<int>(kinds.size()) != n_layers)
    k.bad(key, "gives " + std::to_string(kinds.size()) + " layers, but num_layers is " +
                   std::to_string(n_layers));
  std::vector<bool> local;
  for (const auto& kind : kinds) {
    if (kind != "global" && kind != "local")
      k.bad(key, "has '" + printable(kind) + "'; the layer kinds are \"global\" and \"local\"");
    local.push_back(kind == "local");
  }
  return local;
}

std::optional<RopeScaling> parse_rope_scaling(const Keys& k, const std::string& key) {
  const json* v = k.find(key);
  if (!v) return std::nullopt;
  if (!v->is_object()) k.bad(key, "must be an object or null, got " + type_of(*v));
  Keys r{*v, k.where, k.prefix + key + "."};
  // Transformers writes `rope_type`; older configs say `type`.
  const std::string type = r.find("rope_type") ? r.string("rope_type") : r.string("type");
  if (type == "default") return std::nullopt;
  if (type != "llama3") k.unsupported(key + " type", type, "llama3");
  RopeScaling s;
  s.type = type;
  s.factor = r.number("factor");
  s.low_freq_factor = r.number("low_freq_factor");
  s.high_freq_factor = r.number("high_freq_factor");
  s.original_max_position_embeddings = r.positive("original_max_position_embeddings");
  if (!(s.factor > 0)) r.bad("factor", "must be positive");
  if (!(s.low_freq_factor > 0) || !(s.high_freq_factor > s.low_freq_factor))
    r.bad("high_freq_factor", "must exceed low_freq_factor, and both be positive");
  return s;
}

void check_sizes(const Keys& k, const ModelConfig& c, const std::string& heads_key,
                 const std::string& kv_key, bool explicit_head_dim) {
  if (!explicit_head_dim && c.d_model % c.n_heads != 0)
    k.bad("hidden_size", "(" + std::to_string(c.d_model) + ") is not divisible by " + heads_key +
                             " (" + std::to_string(c.n_heads) + ")");
  if (c.n_heads % c.n_kv_heads != 0)
    k.bad(kv_key, "(" + std::to_string(c.n_kv_heads) + ") does not divide " + heads_key + " (" +
                      std::to_string(c.n_heads) + ")");
}

ModelConfig parse_gpt_neo(const Keys& k) {
  ModelConfig c;
  c.family = Family::GptNeo;
  c.d_model = k.positive("hidden_size");
  c.n_layers = k.positive("num_layers");
  c.n_heads = k.positive("num_heads");
  c.n_kv_heads = c.n_heads;
  c.vocab_size = k.positive("vocab_size");
  c.d_mlp = k.positive_or("intermediate_size", 4 * c.d_model);  // null means 4 * hidden
  c.max_positions = k.positive_or("max_position_embeddings", 2048);
  c.norm_eps = k.positive_number_or("layer_norm_epsilon", 1e-5);
  c.window_size = k.positive_or("window_size", 256);
  c.local_layer = gpt_neo_layers(k, c.n_layers);
  c.activation = k.string_or("activation_function", "gelu_new");
  check_activation(k, "activation_function", c.activation, "gelu_new");
  c.tie_word_embeddings = k.boolean_or("tie_word_embeddings", true);
  c.qkv_bias = false;
  c.rope_theta = 0;
  check_sizes(k, c, "num_heads", "num_heads", false);
  c.d_head = c.d_model / c.n_heads;
  return c;
}

// Qwen2 and Llama share their keys; the differences are the defaults, the biases, sliding
// windows (Qwen2) and rope scaling (Llama; Qwen2 may carry it too).
ModelConfig parse_rotary(const Keys& k, Family family) {
  ModelConfig c;
  c.family = family;
  c.d_model = k.positive("hidden_size");
  c.n_layers = k.positive("num_hidden_layers");
  c.n_heads = k.positive("num_attention_heads");
  c.n_kv_heads = k.positive_or("num_key_value_heads", c.n_heads);
  c.d_mlp = k.positive("intermediate_size");
  c.vocab_size = k.positive("vocab_size");
  c.max_positions =
      k.positive_or("max_position_embeddings", family == Family::Qwen2 ? 32768 : 2048);
  c.norm_eps = k.positive_number_or("rms_norm_eps", 1e-6);
  c.activation = k.string_or("hidden_act", "silu");
  check_activation(k, "hidden_act", c.activation, "silu");
  c.tie_word_embeddings = k.boolean_or("tie_word_embeddings", false);
  // Newer transformers move rope_theta and the scaling into `rope_parameters`.
  if (const json* rp = k.find("rope_parameters"); rp && !k.find("rope_theta")) {
    if (!rp->is_object()) k.bad("rope_parameters", "must be an object");
    Keys r{*rp, k.where, "rope_parameters."};
    c.rope_theta = r.positive_number_or("rope_theta", 10000.0);
    c.rope_scaling = parse_rope_scaling(k, "rope_parameters");
  } else {
    c.rope_theta = k.positive_number_or("rope_theta", 10000.0);
    c.rope_scaling = parse_rope_scaling(k, "rope_scaling");
  }
  const bool explicit_head_dim = k.find("head_dim") != nullptr;
  check_sizes(k, c, "num_attention_heads", "num_key_value_heads", explicit_head_dim);
  c.d_head = explicit_head_dim ? k.positive("head_dim") : c.d_model / c.n_heads;
  c.local_layer.assign(c.n_layers, false);
  if (family == Family::Qwen2) {
    c.qkv_bias = true;
    c.window_size = k.positive_or("sliding_window", 0);
    if (k.boolean_or("use_sliding_window", false)) {
      // As transformers' Qwen2: the layers from max_window_layers on use the window.
      if (c.window_size == 0) k.bad("sliding_window", "is needed when use_sliding_window is true");
      const int from = k.find("max_window_layers")
                           ? k.as_int("max_window_layers", k.need("max_window_layers"))
                           : 28;
      for (int i = std::max(from, 0); i < c.n_layers; ++i) c.local_layer[i] = true;
    }
  } else {
    c.qkv_bias = k.boolean_or("attention_bias", false);
    if (k.boolean_or("mlp_bias", false)) k.bad("mlp_bias", "true is not supported");
    c.window_size = 0;
  }
  return c;
}

const char* architecture(Family f) {
  switch (f) {
    case Family::GptNeo:
      return "GPTNeoForCausalLM";
    case Family::Qwen2:
      return "Qwen2ForCausalLM";
    case Family::Llama:
      return "LlamaForCausalLM";
  }
  return "";
}

json token_or_null(int id) { return id >= 0 ? json(id) : json(nullptr); }

// The shortest period of the layer kinds, so [global, local] is written as HF writes it:
// [[["global","local"],1]].
json attention_types(const std::vector<bool>& local) {
  const size_t n = local.size();
  size_t period = n;
  for (size_t p = 1; p < n; ++p) {
    if (n % p) continue;
    bool repeats = true;
    for (size_t i = p; i < n && repeats; ++i) repeats = local[i] == local[i - p];
    if (repeats) {
      period = p;
      break;
    }
  }
  json kinds = json::array();
  for (size_t i = 0; i < period; ++i) kinds.push_back(local[i] ? "local" : "global");
  return json::array({json::array({kinds, n ? n / period : 0})});
}

}  // namespace

std::string family_name(Family family) {
  switch (family) {
    case Family::GptNeo:
      return "gpt_neo";
    case Family::Qwen2:
      return "qwen2";
    case Family::Llama:
      return "llama";
  }
  return "unknown";
}

bool operator==(const RopeScaling& a, const RopeScaling& b) {
  return a.type == b.type && a.factor == b.factor && a.low_freq_factor == b.low_freq_factor &&
         a.high_freq_factor == b.high_freq_factor &&
         a.original_max_position_embeddings == b.original_max_position_embeddings;
}

bool operator==(const ModelConfig& a, const ModelConfig& b) {
  return a.family == b.family && a.model_type == b.model_type && a.n_layers == b.n_layers &&
         a.n_heads == b.n_heads && a.n_kv_heads == b.n_kv_heads && a.d_model == b.d_model &&
         a.d_head == b.d_head && a.d_mlp == b.d_mlp && a.vocab_size == b.vocab_size &&
         a.max_positions == b.max_positions && a.norm_eps == b.norm_eps &&
         a.local_layer == b.local_layer && a.window_size == b.window_size &&
         a.activation == b.activation && a.tie_word_embeddings == b.tie_word_embeddings &&
         a.qkv_bias == b.qkv_bias && a.rope_theta == b.rope_theta &&
         a.rope_scaling == b.rope_scaling && a.bos_token_id == b.bos_token_id &&
         a.eos_token_id == b.eos_token_id && a.torch_dtype == b.torch_dtype;
}

ModelConfig parse_config_text(const std::string& text, const std::string& where) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::parse_error& e) {
    fail_input(where, "not valid JSON (error at byte " + std::to_string(e.byte) + ")");
  }
  if (!j.is_object()) fail_input(where, "not a JSON object");
  Keys k{j, where, ""};
  const std::string model_type = k.string("model_type");
  ModelConfig c;
  if (model_type == "gpt_neo") {
    c = parse_gpt_neo(k);
  } else if (model_type == "qwen2") {
    c = parse_rotary(k, Family::Qwen2);
  } else if (model_type == "llama") {
    c = parse_rotary(k, Family::Llama);
  } else {
    k.unsupported("model_type", model_type, "gpt_neo, qwen2, llama");
  }
  c.model_type = model_type;
  c.bos_token_id = k.token_id("bos_token_id");
  c.eos_token_id = k.token_id("eos_token_id");
  // Transformers >= 4.56 writes `dtype` in place of `torch_dtype`.
  c.torch_dtype = k.find("torch_dtype") ? k.string("torch_dtype") : k.string_or("dtype", "float32");
  return c;
}

ModelConfig parse_config(const std::string& config_json_path) {
  return parse_config_text(read_file(config_json_path, kMaxSmallFile), config_json_path);
}

std::string config_to_json(const ModelConfig& c) {
  json j;
  j["architectures"] = json::array({architecture(c.family)});
  j["model_type"] = family_name(c.family);
  j["bos_token_id"] = token_or_null(c.bos_token_id);
  j["eos_token_id"] = token_or_null(c.eos_token_id);
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.d_model;
  j["intermediate_size"] = c.d_mlp;
  j["max_position_embeddings"] = c.max_positions;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["torch_dtype"] = c.torch_dtype;
  j["initializer_range"] = 0.02;
  j["use_cache"] = true;
  if (c.family == Family::GptNeo) {
    json layers = json::array();
    for (bool local : c.local_layer) layers.push_back(local ? "local" : "global");
    j["num_layers"] = c.n_layers;
    j["num_heads"] = c.n_heads;
    j["attention_types"] = attention_types(c.local_layer);
    j["attention_layers"] = layers;
    j["window_size"] = c.window_size;
    j["layer_norm_epsilon"] = c.norm_eps;
    j["activation_function"] = c.activation;
    j["attention_dropout"] = 0.0;
    j["embed_dropout"] = 0.0;
    j["resid_dropout"] = 0.0;
    return j.dump(2) + "\n";
  }
  j["num_hidden_layers"] = c.n_layers;
  j["num_attention_heads"] = c.n_heads;
  j["num_key_value_heads"] = c.n_kv_heads;
  j["rms_norm_eps"] = c.norm_eps;
  j["hidden_act"] = c.activation;
  j["rope_theta"] = c.rope_theta;
  j["attention_dropout"] = 0.0;
  if (c.rope_scaling) {
    j["rope_scaling"] = {
        {"rope_type", c.rope_scaling->type},
        {"factor", c.rope_scaling->factor},
        {"low_freq_factor", c.rope_scaling->low_freq_factor},
        {"high_freq_factor", c.rope_scaling->high_freq_factor},
        {"original_max_position_embeddings", c.rope_scaling->original_max_position_embeddings}};
  } else {
    j["rope_scaling"] = nullptr;
  }
  const bool default_head_dim =
      c.n_heads > 0 && c.d_model % c.n_heads == 0 && c.d_head == c.d_model / c.n_heads;
  if (c.family == Family::Qwen2) {
    int first_local = c.n_layers;
    for (int i = 0; i < c.n_layers; ++i)
      if (c.local_layer.size() > static_cast<size_t>(i) && c.local_layer[i]) {
        first_local = i;
        break;
      }
    j["use_sliding_window"] = first_local < c.n_layers;
    j["sliding_window"] = c.window_size > 0 ? json(c.window_size) : json(nullptr);
    j["max_window_layers"] = first_local;
    // Older transformers ignore head_dim for Qwen2, so it is written only when needed.
    if (!default_head_dim) j["head_dim"] = c.d_head;
  } else {
    j["attention_bias"] = c.qkv_bias;
    j["mlp_bias"] = false;
    j["head_dim"] = c.d_head;
    j["pretraining_tp"] = 1;
  }
  return j.dump(2) + "\n";
}

ModelConfig family_config(Family family, int n_layers, int n_heads, int n_kv_heads, int d_model, int d_mlp,
                          int vocab_size) {
  const bool neo = family == Family::GptNeo;
  ModelConfig c;
  c.family = family;
  c.model_type = family_name(family);
  c.n_layers = n_layers;
  c.n_heads = n_heads;
  c.n_kv_heads = n_kv_heads > 0 ? n_kv_heads : (neo ? n_heads : std::max(1, n_heads / 2));
  c.d_model = d_model;
  c.d_head = n_heads > 0 ? d_model / n_heads : 0;
  c.d_mlp = d_mlp;
  c.vocab_size = vocab_size;
  c.max_positions = 2048;
  c.norm_eps = neo ? 1e-5 : 1e-6;
  c.local_layer.assign(static_cast<size_t>(std::max(0, n_layers)), false);
  if (neo)
    for (int l = 1; l < n_layers; l += 2) c.local_layer[static_cast<size_t>(l)] = true;  // as BM1: global, local, ...
  c.window_size = neo ? 256 : 0;
  c.activation = neo ? "gelu_new" : "silu";
  c.tie_word_embeddings = family != Family::Llama;
  c.qkv_bias = family == Family::Qwen2;
  c.rope_theta = neo ? 0.0 : family == Family::Llama ? 500000.0 : 1000000.0;
  if (family == Family::Llama) c.rope_scaling = RopeScaling{"llama3", 32.0, 1.0, 4.0, 8192};
  return c;
}

}  // namespace teap::model
