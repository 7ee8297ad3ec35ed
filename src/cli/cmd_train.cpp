// `train` and `eval`: train the demo's TinySQL model on the spot (or reuse the folder when its
// settings match), and measure a model folder on fresh items and on the four features' prompts.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <cstdlib>
#include <memory>

#include "cli/cell_options.hpp"
#include "cli/commands.hpp"
#include "tokenizer/tokenizer.hpp"
#include "train/train.hpp"
#include "util/error.hpp"

namespace teap::cli {

namespace {

// --tokenizer, else $TEAP_TOKENIZERS/gpt2.
std::string gpt2_tokenizer_path(const std::string& given) {
  if (!given.empty()) return given;
  if (const char* env = std::getenv("TEAP_TOKENIZERS"); env && *env) return std::string(env) + "/gpt2";
  throw InputError("--tokenizer: not given and TEAP_TOKENIZERS is not set (pass GPT-2's tokenizer files, e.g. .cache/tokenizers/gpt2)");
}

std::string percent(const train::Count& c) {
  char b[64];
  std::snprintf(b, sizeof b, "%d/%d (%.2f%%)", c.correct, c.total, 100 * c.rate());
  return b;
}

}  // namespace

Run add_train_command(CLI::App& app) {
  struct Args {
    train::TrainSettings s;
    std::string out, tokenizer, seed = "0";
    int threads = 0;
    bool force = false;
  };
  auto a = std::make_shared<Args>();
  train::TrainSettings& s = a->s;
  CLI::App* sub = app.add_subcommand(
      "train", "Train a small GPT-Neo (BM1 family, GPT-2 vocabulary) on TinySQL CS1 items; reuse DIR when it holds a model of the same settings");
  sub->add_option("--out", a->out, "model folder to write (config.json, model.safetensors, tokenizer files, training.json)")->required();
  sub->add_option("--tokenizer", a->tokenizer, "GPT-2's tokenizer files (default: $TEAP_TOKENIZERS/gpt2)");
  sub->add_option("--layers", s.layers, "layers (odd ones use local attention, as BM1)")->capture_default_str();
  sub->add_option("--heads", s.heads, "attention heads")->capture_default_str();
  sub->add_option("--d-model", s.d_model, "residual width")->capture_default_str();
  sub->add_option("--d-mlp", s.d_mlp, "MLP width (default 4 x d_model)");
  sub->add_option("--window", s.window, "local attention window")->capture_default_str();
  sub->add_option("--max-positions", s.max_positions, "position embeddings")->capture_default_str();
  sub->add_option("--steps", s.steps, "Adam steps")->capture_default_str();
  sub->add_option("--batch-size", s.batch_size, "items per step")->capture_default_str();
  sub->add_option("--lr", s.lr, "peak learning rate")->capture_default_str();
  sub->add_option("--warmup", s.warmup, "linear warm-up steps (default steps / 10), then cosine decay");
  sub->add_option("--min-lr-ratio", s.min_lr_ratio, "final learning rate / peak")->capture_default_str();
  sub->add_option("--weight-decay", s.weight_decay, "decoupled weight decay of matrices and embeddings")->capture_default_str();
  sub->add_option("--clip", s.clip, "global gradient norm limit (0: none)")->capture_default_str();
  sub->add_option("--syn-table-prob", s.data.p_syn_table, "probability that an item's English shows the table synonym")->capture_default_str();
  sub->add_option("--syn-field-prob", s.data.p_syn_field, "probability that it shows the field synonyms")->capture_default_str();
  sub->add_option("--max-fields", s.data.max_fields, "fields per item: 1 to this")->capture_default_str();
  sub->add_option("--seed", a->seed, "seed of the weights and the data, 0 to 2^64-1")->capture_default_str();
  sub->add_option("--threads", a->threads, "intra-op threads (default: LibTorch's); the checkpoint's bytes depend on it")
      ->check(CLI::Range(0, 1024));
  sub->add_flag("--force", a->force, "replace a model of other settings in --out");
  return [a] {
    a->s.seed = parse_seed(a->seed);
    train::validate(a->s);
    const auto tok = tokenizer::Tokenizer::load(gpt2_tokenizer_path(a->tokenizer));
    train::require_gpt2(tok);
    if (train::check_output(a->out, a->s, a->force) == train::OutputAction::Reuse) {
      std::printf("reusing %s: it holds a model trained with these settings (training.json)\n", a->out.c_str());
      return;
    }
    const train::TrainResult r = train::train(a->s, tok, a->out, a->threads);
    const train::TrainSettings s = train::resolved(a->s);
    std::printf("wrote %s: gpt_neo, %d layers x %d heads, d_model %d, d_mlp %d, %lld parameters\n", a->out.c_str(),
                s.layers, s.heads, s.d_model, s.d_mlp, static_cast<long long>(r.parameters));
    std::printf("%d steps of %d items in %.1f s on %d threads: loss %.4f -> %.4f, token accuracy %.2f%%, "
                "holdout exact match %.2f%% of %d items\n",
                r.steps, s.batch_size, r.seconds, r.threads, r.first_loss, r.final_loss, 100 * r.final_token_accuracy,
                100 * r.holdout_exact_match, r.holdout_items);
  };
}

Run add_eval_command(CLI::App& app) {
  struct Args {
    std::string model, tokenizer, seed = "0";
    int items = 1000, threads = 0;
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand(
      "eval", "Exact match of greedy SQL completions on fresh items, and last-position accuracy per feature");
  sub->add_option("--model", a->model, "model folder (or repository id in the Hugging Face cache)")->required();
  sub->add_option("--items", a->items, "items (and prompts per feature cell)")->capture_default_str();
  sub->add_option("--seed", a->seed, "seed of the items, 0 to 2^64-1 (its stream is disjoint from training's)")->capture_default_str();
  sub->add_option("--tokenizer", a->tokenizer, "tokenizer (default: the model's own files)");
  sub->add_option("--threads", a->threads, "intra-op threads (default: LibTorch's)")->check(CLI::Range(0, 1024));
  return [a] {
    train::EvalOptions o;
    o.items = a->items;
    o.seed = parse_seed(a->seed);
    o.threads = a->threads;
    o.tokenizer = a->tokenizer;
    const train::EvalReport r = train::evaluate(a->model, o);
    std::printf("model %s: %d fresh items (seed %s), %d threads\n", r.model_path.c_str(), r.exact.total, a->seed.c_str(),
                r.threads);
    std::printf("exact match: %s\n", percent(r.exact).c_str());
    for (size_t n = 0; n < r.by_fields.size(); ++n)
      if (r.by_fields[n].total) std::printf("  %zu field%s: %s\n", n + 1, n ? "s" : " ", percent(r.by_fields[n]).c_str());
    const char* syn[4] = {"no synonyms", "table synonym", "field synonyms", "both synonyms"};
    for (int k = 0; k < 4; ++k)
      if (r.by_synonyms[k].total) std::printf("  %s: %s\n", syn[k], percent(r.by_synonyms[k]).c_str());
    std::printf("last-position accuracy on clean prompts:\n");
    for (const auto& f : r.features) std::printf("  %s: %s\n", f.cell.c_str(), percent(f.count).c_str());
    for (const auto& f : r.failures)
      std::printf("failed: %s\n  expected: %s\n  greedy:  %s\n", f.prompt.c_str(), f.expected.c_str(), f.greedy.c_str());
    std::printf("(%.1f s)\n", r.seconds);
  };
}

}  // namespace teap::cli
