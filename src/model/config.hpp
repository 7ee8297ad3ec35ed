// Owns a model's `config.json`: the sizes and options of the three TinySQL families (GPT-Neo,
// Qwen2, Llama), read from and written to the Hugging Face format. Knows nothing of weights.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace teap::model {

enum class Family { GptNeo, Qwen2, Llama };

// "gpt_neo", "qwen2", "llama": the `model_type` of config.json.
std::string family_name(Family family);

// Hugging Face's `rope_scaling`; only the `llama3` type exists here (others are rejected on parse).
struct RopeScaling {
  std::string type;  // "llama3"
  double factor = 1;
  double low_freq_factor = 1;
  double high_freq_factor = 4;
  int original_max_position_embeddings = 8192;
};

struct ModelConfig {
  Family family = Family::GptNeo;
  std::string model_type;  // family_name(family)
  int n_layers = 0;
  int n_heads = 0;     // query heads
  int n_kv_heads = 0;  // key/value heads; == n_heads for gpt_neo, divides n_heads
  int d_model = 0;
  int d_head = 0;  // d_model / n_heads unless config.json gives `head_dim`
  int d_mlp = 0;
  int vocab_size = 0;  // rows of the embedding as configured (before any vocabulary trim)
  int max_positions = 0;
  double norm_eps = 1e-5;  // LayerNorm eps (gpt_neo) or RMSNorm eps (qwen2, llama)
  // [n_layers], for every family: true where position i sees key j only when 0 <= i-j <
  // window_size. gpt_neo: the "local" layers; qwen2: the layers >= max_window_layers when
  // use_sliding_window is true (all false in the TinySQL checkpoints); llama: all false.
  std::vector<bool> local_layer;
  int window_size = 0;     // gpt_neo window_size, qwen2 sliding_window (0 when null), llama 0
  std::string activation;  // "gelu_new" (gpt_neo) or "silu" (qwen2, llama)
  bool tie_word_embeddings = false;
  bool qkv_bias = false;  // Q/K/V projections have biases: qwen2 true, llama attention_bias
  double rope_theta = 0;  // rotary base; 0 for gpt_neo, which has learned positions
  std::optional<RopeScaling> rope_scaling;
  int bos_token_id = -1;  // -1 when config.json has none
  int eos_token_id = -1;  // -1 when none; the first one when config.json lists several
  std::string torch_dtype = "float32";  // dtype the checkpoint was saved in, as HF names it
};

bool operator==(const RopeScaling& a, const RopeScaling& b);
bool operator==(const ModelConfig& a, const ModelConfig& b);
inline bool operator!=(const ModelConfig& a, const ModelConfig& b) { return !(a == b); }

// A config of the family with the sizes given and that family's usual options, as the TinySQL
// models have them: gpt_neo with alternating global/local layers (window 256), LayerNorm eps 1e-5,
// gelu_new, tied embeddings; qwen2 with Q/K/V biases, RMSNorm eps 1e-6, rope theta 1e6, tied;
// llama with rope theta 5e5 and llama3 scaling (factor 32, 1, 4, 8192), untied. max_positions 2048.
// n_kv_heads = 0 means n_heads for gpt_neo and n_heads / 2 otherwise. Sizes are not checked here.
ModelConfig family_config(Family family, int n_layers, int n_heads, int n_kv_heads, int d_model, int d_mlp,
                          int vocab_size);

// Reads config.json. An unknown model_type, a missing or ill-typed key, an unsupported option
// (activation, rope_scaling type, mlp_bias) or sizes that do not divide are InputErrors naming the
// file and the key.
ModelConfig parse_config(const std::string& config_json_path);

// The same from text already read; `where` names the file in messages.
ModelConfig parse_config_text(const std::string& text, const std::string& where);

// A complete Hugging Face config.json of the family (architectures, torch_dtype and every key the
// HF config class reads), such that parse_config_text(config_to_json(c)) == c for any config that
// the family can express. Ends with a newline.
std::string config_to_json(const ModelConfig& config);

}  // namespace teap::model
