// `make-model`, `inspect` and `complete`: write a checkpoint, describe one, and let it answer a
// prompt, so that a user sees at once whether a model does TinySQL.
#include <ATen/ATen.h>
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>

#include "cli/commands.hpp"
#include "model/hf_cache.hpp"
#include "model/make.hpp"
#include "model/config.hpp"
#include "model/model.hpp"
#include "model/safetensors.hpp"
#include "tokenizer/tokenizer.hpp"
#include "util/error.hpp"

namespace teap::cli {
namespace fs = std::filesystem;

namespace {

// The tokenizer of a model: --tokenizer if given, else the files in the model's folder.
tokenizer::Tokenizer model_tokenizer(const std::string& tokenizer_path, const std::string& model_path) {
  return tokenizer::Tokenizer::load(tokenizer_path.empty() ? model_path : tokenizer_path);
}

}  // namespace

Run add_make_model_command(CLI::App& app) {
  struct Args {
    std::string family, vocab_from, out;
    int layers = 2, heads = 4, kv_heads = 0, d_model = 64, d_mlp = 0, window = 256, max_positions = 2048;
    uint64_t seed = 0;
    bool bf16 = false, pad_row = false, no_rope_scaling = false;
    int64_t shard_bytes = 0;
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand("make-model", "Write a Hugging Face folder with random weights (for tests and demos)");
  sub->add_option("--family", a->family, "gpt_neo, qwen2 or llama")->required()->check(CLI::IsMember({"gpt_neo", "qwen2", "llama"}));
  sub->add_option("--layers", a->layers, "layers")->capture_default_str()->check(CLI::Range(1, 256));
  sub->add_option("--heads", a->heads, "query heads")->capture_default_str()->check(CLI::Range(1, 256));
  sub->add_option("--kv-heads", a->kv_heads, "key/value heads (default: heads for gpt_neo, heads/2 otherwise)")->check(CLI::Range(1, 256));
  sub->add_option("--d-model", a->d_model, "residual width")->capture_default_str()->check(CLI::Range(2, 65536));
  sub->add_option("--d-mlp", a->d_mlp, "MLP width (default 4 x d_model)")->check(CLI::Range(1, 1 << 20));
  sub->add_option("--window", a->window, "gpt_neo: local attention window (odd layers are local)")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  sub->add_option("--max-positions", a->max_positions, "gpt_neo: position embeddings")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  sub->add_flag("--no-rope-scaling", a->no_rope_scaling, "llama: plain rotary frequencies instead of llama3 scaling");
  sub->add_option("--vocab-from", a->vocab_from, "tokenizer whose vocabulary the model gets (its files are copied)")->required();
  sub->add_option("--seed", a->seed, "random seed")->capture_default_str();
  sub->add_option("--out", a->out, "folder to write")->required();
  sub->add_flag("--bf16", a->bf16, "store BF16 weights");
  sub->add_option("--shard-bytes", a->shard_bytes, "write sharded files of at most this many bytes")->check(CLI::Range(int64_t(1), int64_t(1) << 40));
  sub->add_flag("--pad-row", a->pad_row, "one extra embedding row beyond the tokenizer (as BM1 fine-tunes)");
  return [a] {
    const auto tok = tokenizer::Tokenizer::load(a->vocab_from);
    const model::Family family = a->family == "gpt_neo" ? model::Family::GptNeo
                                 : a->family == "qwen2"   ? model::Family::Qwen2
                                                          : model::Family::Llama;
    model::ModelConfig c = model::family_config(family, a->layers, a->heads, a->kv_heads, a->d_model,
                                                a->d_mlp ? a->d_mlp : 4 * a->d_model,
                                                tok.vocab_size() + (a->pad_row ? 1 : 0));
    if (family == model::Family::GptNeo && c.n_kv_heads != c.n_heads)
      throw InputError("--kv-heads: gpt_neo has no grouped-query attention (kv heads must equal heads)");
    if (a->d_model % a->heads) throw InputError("--d-model " + std::to_string(a->d_model) + " is not divisible by --heads " + std::to_string(a->heads));
    if (c.n_heads % c.n_kv_heads) throw InputError("--heads must be a multiple of --kv-heads");
    if (family != model::Family::GptNeo && c.d_head % 2) throw InputError("--d-model / --heads must be even for rotary embeddings");
    c.max_positions = a->max_positions;
    if (family == model::Family::GptNeo) c.window_size = a->window;
    if (a->no_rope_scaling) c.rope_scaling.reset();
    const model::Model m = model::random_model(c, a->seed);
    model::SaveOptions so;
    so.bf16 = a->bf16;
    so.max_shard_bytes = a->shard_bytes;
    model::save_model(m, a->out, so);
    tokenizer::copy_tokenizer_files(a->vocab_from, a->out);
    std::printf("wrote %s: %s, %d layers, %d heads (%d kv), d_model %d, d_mlp %d, vocabulary %d, %lld parameters\n",
                a->out.c_str(), a->family.c_str(), c.n_layers, c.n_heads, c.n_kv_heads, c.d_model, c.d_mlp,
                c.vocab_size, static_cast<long long>(model::parameter_count(m)));
  };
}

Run add_inspect_command(CLI::App& app) {
  struct Args {
    std::string model, tokenizer, revision;
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand("inspect", "Describe a checkpoint: family, sizes, parameters, dtype, tokenizer, trim");
  sub->add_option("MODEL", a->model, "model folder or repository id in the Hugging Face cache")->required();
  sub->add_option("--tokenizer", a->tokenizer, "tokenizer to check against (default: the model's own files)");
  sub->add_option("--revision", a->revision, "revision in the Hugging Face cache");
  return [a] {
    const std::string path = model::resolve_model_path(a->model, a->revision);
    model::check_model(path);  // what a run would refuse, inspect refuses
    const model::ModelConfig c = model::parse_config(path + "/config.json");
    const model::Checkpoint ck = model::Checkpoint::open(path);
    // What `complete` would find wrong (a tensor's shape or dtype, non-finite weights), inspect finds.
    model::load_model(path);
    std::map<std::string, int64_t> by_dtype;
    int64_t params = 0;
    for (const auto& name : ck.names()) {
      const auto& v = ck.get(name);
      int64_t n = 1;
      for (auto s : v.shape) n *= s;
      params += n;
      by_dtype[model::dtype_name(v.dtype)] += n;
    }
    std::printf("model: %s\nfamily: %s\nlayers: %d\nheads: %d (key/value heads %d, d_head %d)\nd_model: %d\nd_mlp: %d\n",
                path.c_str(), c.model_type.c_str(), c.n_layers, c.n_heads, c.n_kv_heads, c.d_head, c.d_model, c.d_mlp);
    if (c.family == model::Family::GptNeo) {
      std::string kinds;
      for (bool local : c.local_layer) kinds += local ? "local " : "global ";
      std::printf("attention: %s(window %d)\n", kinds.c_str(), c.window_size);
    } else {
      std::printf("rope: theta %g%s\n", c.rope_theta, c.rope_scaling ? (", scaling " + c.rope_scaling->type).c_str() : "");
    }
    std::printf("vocabulary: %d\nparameters: %lld stored\n", c.vocab_size, static_cast<long long>(params));
    for (const auto& [dt, n] : by_dtype) std::printf("dtype: %s (%lld parameters)\n", dt.c_str(), static_cast<long long>(n));
    try {
      const auto tok = model_tokenizer(a->tokenizer, path);
      std::printf("tokenizer: %s (%s, %d tokens)\n", tok.source().c_str(), tok.family().c_str(), tok.vocab_size());
      if (c.vocab_size > tok.vocab_size())
        std::printf("trim: the checkpoint has %d more row(s) than the tokenizer; --trim-vocab drops them\n",
                    c.vocab_size - tok.vocab_size());
      else if (c.vocab_size < tok.vocab_size())
        std::printf("warning: the tokenizer has ids beyond the model's vocabulary (%d < %d)\n", c.vocab_size, tok.vocab_size());
      else
        std::printf("trim: none needed\n");
    } catch (const InputError& e) {
      std::printf("tokenizer: none usable (%s)\n", e.what());
    }
  };
}

Run add_complete_command(CLI::App& app) {
  struct Args {
    std::string model, prompt, tokenizer, revision, device = "cpu", dtype = "float32";
    int max_tokens = 32;
    bool trim = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand("complete", "Greedy continuation of PROMPT");
  sub->add_option("MODEL", a->model, "model folder or repository id in the Hugging Face cache")->required();
  sub->add_option("PROMPT", a->prompt, "text to continue")->required();
  sub->add_option("--max-tokens", a->max_tokens, "tokens to generate at most")->capture_default_str()->check(CLI::Range(1, 4096));
  sub->add_option("--tokenizer", a->tokenizer, "tokenizer (default: the model's own files)");
  sub->add_option("--revision", a->revision, "revision in the Hugging Face cache");
  sub->add_option("--device", a->device, "cpu, cuda, cuda:N")->capture_default_str();
  sub->add_option("--dtype", a->dtype, "float32 or bfloat16")->capture_default_str();
  sub->add_flag("--trim-vocab", a->trim, "drop checkpoint rows beyond the tokenizer's vocabulary");
  return [a] {
    model::LoadOptions lo;
    lo.device = a->device;
    lo.dtype = a->dtype;
    const std::string path = model::resolve_model_path(a->model, a->revision);
    const auto tok = model_tokenizer(a->tokenizer, path);
    if (a->trim) lo.trim_vocab_to = tok.vocab_size();
    const model::Model m = model::load_model(path, lo);
    at::NoGradGuard no_grad;
    std::vector<int> ids = tok.encode(a->prompt, true);
    if (ids.empty()) throw InputError("PROMPT: tokenizes to nothing");
    std::vector<int> stops;
    for (const auto& t : tok.added_tokens())
      if (t.special && (t.content == "<|endoftext|>" || t.content == "<|end_of_text|>" || t.content == "<|eot_id|>" ||
                        t.content == "<|im_end|>"))
        stops.push_back(t.id);
    if (m.config.eos_token_id >= 0) stops.push_back(m.config.eos_token_id);
    std::vector<int> out;
    model::check_ids(m, at::tensor(std::vector<int64_t>(ids.begin(), ids.end()), at::kLong));
    for (int step = 0; step < a->max_tokens; ++step) {
      if (static_cast<int64_t>(ids.size()) >= m.config.max_positions) {
        spdlog::warn("stopped at max_position_embeddings ({})", m.config.max_positions);
        break;
      }
      at::Tensor in = at::tensor(std::vector<int64_t>(ids.begin(), ids.end()), at::kLong).view({1, -1});
      const at::Tensor hidden = model::forward(m, in);
      const at::Tensor logits = model::full_logits(m, hidden.narrow(1, hidden.size(1) - 1, 1));
      if (!at::isfinite(logits).all().item<bool>())
        fail_input(m.path, "the model's logits are not finite (NaN or Inf) on this prompt");
      const int next = static_cast<int>(logits.argmax(-1).item<int64_t>());
      if (std::find(stops.begin(), stops.end(), next) != stops.end()) break;
      ids.push_back(next);
      out.push_back(next);
    }
    std::printf("%s%s\n", a->prompt.c_str(), tok.decode(out).c_str());
  };
}

}  // namespace teap::cli
