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
  return tokenizer::Tokenizer::load(tokenizer_path.empty() ? model_path : model::resolve_tokenizer_path(tokenizer_path));
}

}  // namespace

Run add_make_model_command(CLI::App& app) {
  struct Args {
    std::string family, vocab_from, out, preset;
    int layers = 2, heads = 4, kv_heads = 0, d_model = 64, d_mlp = 0, window = 256, max_positions = 2048, vocab_size = 0;
    uint64_t seed = 0;
    bool bf16 = false, pad_row = false, no_rope_scaling = false, tied = false, untied = false;
    int64_t shard_bytes = 0;
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand("make-model", "Write a Hugging Face folder with random weights (for tests and demos)");
  sub->add_option("--preset", a->preset,
                  "bm1, bm2 or bm3: the real configuration of the base model (TinyStories-Instruct-2Layers-33M, "
                  "Qwen2.5-0.5B-Instruct, Llama-3.2-1B-Instruct); the size options below override it")
      ->check(CLI::IsMember({"bm1", "bm2", "bm3"}));
  sub->add_option("--family", a->family, "gpt_neo, qwen2 or llama (required without --preset)")->check(CLI::IsMember({"gpt_neo", "qwen2", "llama"}));
  auto* o_layers = sub->add_option("--layers", a->layers, "layers")->capture_default_str()->check(CLI::Range(1, 256));
  auto* o_heads = sub->add_option("--heads", a->heads, "query heads")->capture_default_str()->check(CLI::Range(1, 256));
  auto* o_kv = sub->add_option("--kv-heads", a->kv_heads, "key/value heads (default: heads for gpt_neo, heads/2 otherwise)")->check(CLI::Range(1, 256));
  auto* o_d = sub->add_option("--d-model", a->d_model, "residual width")->capture_default_str()->check(CLI::Range(2, 65536));
  auto* o_mlp = sub->add_option("--d-mlp", a->d_mlp, "MLP width (default 4 x d_model)")->check(CLI::Range(1, 1 << 20));
  auto* o_window = sub->add_option("--window", a->window, "gpt_neo: local attention window (odd layers are local)")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  auto* o_pos = sub->add_option("--max-positions", a->max_positions, "max_position_embeddings (gpt_neo: position embeddings)")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  sub->add_option("--vocab-size", a->vocab_size,
                  "rows of the embedding (default: the preset's, else the tokenizer's vocabulary; may exceed it, as "
                  "Qwen2.5's 151936 exceeds its tokenizer's 151669)")
      ->check(CLI::Range(1, 1 << 24));
  sub->add_flag("--tied", a->tied, "tie the unembedding to the embedding (no lm_head tensor)");
  sub->add_flag("--untied", a->untied, "write a separate lm_head (default for --family llama without a preset)");
  sub->add_flag("--no-rope-scaling", a->no_rope_scaling, "llama: plain rotary frequencies instead of llama3 scaling");
  sub->add_option("--vocab-from", a->vocab_from,
                  "tokenizer whose files are copied (a folder, a tokenizer file, or a repository id in the Hugging Face cache)")
      ->required();
  sub->add_option("--seed", a->seed, "random seed")->capture_default_str();
  sub->add_option("--out", a->out, "folder to write")->required();
  sub->add_flag("--bf16", a->bf16, "store BF16 weights (config.json's torch_dtype says bfloat16)");
  sub->add_option("--shard-bytes", a->shard_bytes, "write sharded files of at most this many bytes")->check(CLI::Range(int64_t(1), int64_t(1) << 40));
  sub->add_flag("--pad-row", a->pad_row, "one extra embedding row beyond the tokenizer (as BM1 fine-tunes)");
  return [a, sub, o_layers, o_heads, o_kv, o_d, o_mlp, o_window, o_pos] {
    if (a->tied && a->untied) throw InputError("--tied and --untied: give one of them");
    if (a->preset.empty() && a->family.empty()) throw InputError("make-model: give --family or --preset");
    const auto tok = tokenizer::Tokenizer::load(model::resolve_tokenizer_path(a->vocab_from));
    model::ModelConfig c;
    if (!a->preset.empty()) {
      c = model::preset_config(a->preset);
      if (!a->family.empty() && a->family != model::family_name(c.family))
        throw InputError("--family " + a->family + ": --preset " + a->preset + " is a " + model::family_name(c.family) + " model");
    }
    const model::Family family = !a->preset.empty()     ? c.family
                                 : a->family == "gpt_neo" ? model::Family::GptNeo
                                 : a->family == "qwen2"   ? model::Family::Qwen2
                                                          : model::Family::Llama;
    if (a->preset.empty()) {
      c = model::family_config(family, a->layers, a->heads, a->kv_heads, a->d_model, a->d_mlp ? a->d_mlp : 4 * a->d_model,
                               tok.vocab_size() + (a->pad_row ? 1 : 0));
      c.max_positions = a->max_positions;
      if (family == model::Family::GptNeo) c.window_size = a->window;
    } else {
      // Explicit sizes override the preset's.
      const bool heads_given = o_heads->count() > 0;
      if (o_layers->count()) c.n_layers = a->layers, c.local_layer = model::family_config(family, a->layers, 1, 1, 2, 1, 1).local_layer;
      if (heads_given) c.n_heads = a->heads;
      if (o_kv->count()) c.n_kv_heads = a->kv_heads;
      else if (heads_given) c.n_kv_heads = family == model::Family::GptNeo ? a->heads : std::max(1, a->heads / 2);
      if (o_d->count()) c.d_model = a->d_model;
      if (o_d->count() || heads_given) c.d_head = c.d_model / c.n_heads;
      if (o_mlp->count()) c.d_mlp = a->d_mlp;
      if (o_pos->count()) c.max_positions = a->max_positions;
      if (o_window->count() && family == model::Family::GptNeo) c.window_size = a->window;
      if (a->pad_row) c.vocab_size += 1;
    }
    if (a->vocab_size) c.vocab_size = a->vocab_size;
    if (a->tied) c.tie_word_embeddings = true;
    if (a->untied) c.tie_word_embeddings = false;
    if (family == model::Family::GptNeo && c.n_kv_heads != c.n_heads)
      throw InputError("--kv-heads: gpt_neo has no grouped-query attention (kv heads must equal heads)");
    if (c.d_model % c.n_heads) throw InputError("--d-model " + std::to_string(c.d_model) + " is not divisible by --heads " + std::to_string(c.n_heads));
    if (c.n_heads % c.n_kv_heads) throw InputError("--heads must be a multiple of --kv-heads");
    if (family != model::Family::GptNeo && c.d_head % 2) throw InputError("--d-model / --heads must be even for rotary embeddings");
    if (a->no_rope_scaling) c.rope_scaling.reset();
    if (c.vocab_size < tok.vocab_size())
      spdlog::warn("vocabulary {} is smaller than the tokenizer's {}: ids beyond it cannot be used", c.vocab_size, tok.vocab_size());
    model::SaveOptions so;
    so.bf16 = a->bf16;
    so.max_shard_bytes = a->shard_bytes;
    const int64_t params = model::write_random_model(c, a->seed, a->out, so);
    tokenizer::copy_tokenizer_files(model::resolve_tokenizer_path(a->vocab_from), a->out);
    std::printf("wrote %s: %s, %d layers, %d heads (%d kv), d_model %d, d_mlp %d, vocabulary %d, %s, %lld parameters\n",
                a->out.c_str(), model::family_name(family).c_str(), c.n_layers, c.n_heads, c.n_kv_heads, c.d_model, c.d_mlp,
                c.vocab_size, c.tie_word_embeddings ? "tied" : "untied", static_cast<long long>(params));
  };
}

Run add_inspect_command(CLI::App& app) {
  struct Args {
    std::string model, tokenizer, revision;
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand("inspect", "Describe a checkpoint: family, sizes, parameters, dtype, tokenizer, trim");
  sub->add_option("MODEL", a->model, "model folder or repository id in the Hugging Face cache")->required();
  sub->add_option("--tokenizer", a->tokenizer, "tokenizer to check against: a folder, a file or a repository id in the Hugging Face cache (default: the model's own files)");
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
  sub->add_option("--tokenizer", a->tokenizer,
                  "tokenizer: a folder, a file or a repository id in the Hugging Face cache (default: the model's own files)");
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
