// Owns `tinysql-eap train` and `eval`: training a small GPT-Neo (the BM1 family) on TinySQL
// CS1-style sequences (data.hpp) with a hand-written Adam, and evaluating a model folder on fresh
// items. This header is free of LibTorch; train.cpp and eval.cpp are the library's only ATen units.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.hpp"
#include "train/data.hpp"

namespace teap::train {

// Everything that decides the trained weights, apart from the thread count (which changes only the
// floating-point rounding). training.json records it; equal settings mean a folder can be reused.
struct TrainSettings {
  // The model: GPT-Neo, odd layers local, gelu_new, tied embeddings, GPT-2's vocabulary.
  int layers = 2;
  int heads = 4;
  int d_model = 128;
  int d_mlp = 0;  // 0: 4 * d_model
  int window = 256;
  int max_positions = 2048;
  // The optimisation: Adam (bias-corrected, decoupled weight decay on matrices and embeddings),
  // linear warm-up over `warmup` steps, then cosine decay to min_lr_ratio * lr; gradients clipped
  // to a global L2 norm of `clip` (0: no clipping).
  int steps = 200;
  int batch_size = 32;
  double lr = 3e-3;
  int warmup = -1;  // -1: steps / 10
  double min_lr_ratio = 0.1;
  double beta1 = 0.9, beta2 = 0.98, eps = 1e-8;
  double weight_decay = 0.0;
  double clip = 1.0;
  uint64_t seed = 0;  // weights: model::random_model(config, seed); data: Stream::Train of this seed
  DataOptions data;
};

// The same settings with the defaults that depend on others filled in (d_mlp, warmup).
TrainSettings resolved(const TrainSettings& s);

// InputError naming the option for a value out of range (--steps 0, heads not dividing d_model, ...).
void validate(const TrainSettings& s);

// What `train --out DIR` should do with DIR.
enum class OutputAction { Train, Reuse };

// Reuse when DIR holds config.json, model.safetensors and a training.json whose settings equal
// `s`'s; Train when DIR is absent or holds no model. A folder holding another model (config.json
// or weights, with a training.json of other settings or none) is an InputError naming DIR and the
// first differing settings, unless `force` (then Train, and its old weight files are removed).
// A path that is not a folder is an InputError.
OutputAction check_output(const std::string& out, const TrainSettings& s, bool force);

struct TrainResult {
  int steps = 0;
  int threads = 0;
  int64_t parameters = 0;
  double first_loss = 0;           // the first step's loss
  double final_loss = 0;           // mean loss of the last (up to) 10 steps
  double final_token_accuracy = 0; // mean token accuracy (argmax == target) of the last 10 steps
  int holdout_items = 0;
  double holdout_exact_match = 0;  // fraction of fresh (Stream::Holdout) items completed exactly
  double seconds = 0;              // wall time of the training loop and holdout check
};

// Trains with `s` on `tok` (which must be GPT-2's) using `threads` intra-op threads (0: LibTorch's
// default), then writes `out`: config.json, model.safetensors (F32), the tokenizer's files and
// training.json (written last). A progress bar on a terminal (stderr), periodic log lines otherwise.
// Call check_output first.
TrainResult train(const TrainSettings& s, const tokenizer::Tokenizer& tok, const std::string& out, int threads);

// ---- evaluation --------------------------------------------------------------------------------

struct Count {
  int correct = 0, total = 0;
  double rate() const { return total ? static_cast<double>(correct) / total : 0.0; }
};

struct FeatureCount {
  std::string feature;  // "EngTableName", ...
  std::string cell;     // tinysql::cell_key_string of the cell
  Count count;          // argmax at the last input position == answer token
};

struct Failure {
  std::string prompt, expected, greedy;  // greedy: the model's own greedy completion
};

struct EvalReport {
  std::string model_path;
  int threads = 0;
  Count exact;                        // greedy completion == SQL + end-of-text
  std::vector<Count> by_fields;       // index n-1: items with n fields
  Count by_synonyms[4];               // none, table only, field only, both
  std::vector<FeatureCount> features; // per feature: the plain cell, then the synonym cell
  std::vector<Failure> failures;      // the first few
  double seconds = 0;
};

struct EvalOptions {
  int items = 1000;
  uint64_t seed = 0;
  int threads = 0;  // 0: LibTorch's default
  std::string tokenizer;  // empty: the model folder's own files
  int max_failures = 5;
  DataOptions data;  // the item mix (the training defaults)
};

// Exact match of greedy completions on `items` fresh items (Stream::Eval of `seed`), split by
// number of fields and synonym use, and the last-position accuracy on each of the four features'
// clean prompts (tinysql::make_batch with `items` prompts, 2 fields, plain and with both synonym
// flags). Greedy decoding reproduces the SQL and end-of-text exactly if and only if, with the
// reference as the prefix, the argmax at every response position is the reference's next token;
// so one teacher-forced pass, batched over items of equal length, decides exact match exactly.
EvalReport evaluate(const std::string& model_dir, const EvalOptions& options);

}  // namespace teap::train
