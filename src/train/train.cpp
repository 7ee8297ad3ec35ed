// `train`: the optimisation loop. The loss is the cross-entropy of the response tokens only (SQL
// and end-of-text), with logits computed only at those positions; Adam is written out on the
// parameter tensors; everything is seeded, so equal settings and threads give equal bytes.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "model/make.hpp"
#include "model/params.hpp"
#include "tokenizer/tokenizer.hpp"
#include "train/internal.hpp"
#include "train/record.hpp"
#include "train/train.hpp"
#include "util/error.hpp"

namespace teap::train {
namespace fs = std::filesystem;

TrainSettings resolved(const TrainSettings& s0) {
  TrainSettings s = s0;
  if (s.d_mlp == 0) s.d_mlp = 4 * s.d_model;
  if (s.warmup < 0) s.warmup = s.steps / 10;
  return s;
}

void validate(const TrainSettings& s0) {
  const TrainSettings s = resolved(s0);
  auto need = [](bool ok, const std::string& what) {
    if (!ok) throw InputError(what);
  };
  auto num = [](double x) {
    char b[32];
    std::snprintf(b, sizeof b, "%g", x);
    return std::string(b);
  };
  need(s.steps >= 1, "--steps " + std::to_string(s.steps) + ": need at least 1 step");
  need(s.batch_size >= 1, "--batch-size " + std::to_string(s.batch_size) + ": need at least 1");
  need(s.layers >= 1, "--layers " + std::to_string(s.layers) + ": need at least 1");
  need(s.heads >= 1, "--heads " + std::to_string(s.heads) + ": need at least 1");
  need(s.d_model >= 1 && s.d_model % s.heads == 0,
       "--d-model " + std::to_string(s.d_model) + " is not a positive multiple of --heads " + std::to_string(s.heads));
  need(s.d_mlp >= 1, "--d-mlp " + std::to_string(s.d_mlp) + ": need at least 1");
  need(s.window >= 1, "--window " + std::to_string(s.window) + ": need at least 1");
  need(s.max_positions >= 1, "--max-positions " + std::to_string(s.max_positions) + ": need at least 1");
  need(std::isfinite(s.lr) && s.lr > 0, "--lr " + num(s.lr) + ": need a positive learning rate");
  need(s.warmup >= 0 && s.warmup <= s.steps, "--warmup " + std::to_string(s.warmup) + ": need 0 to --steps");
  need(s.min_lr_ratio >= 0 && s.min_lr_ratio <= 1, "--min-lr-ratio " + num(s.min_lr_ratio) + ": need 0 to 1");
  need(s.beta1 >= 0 && s.beta1 < 1 && s.beta2 >= 0 && s.beta2 < 1, "Adam betas must lie in [0, 1)");
  need(s.eps > 0, "Adam eps must be positive");
  need(s.weight_decay >= 0 && std::isfinite(s.weight_decay), "--weight-decay " + num(s.weight_decay) + ": need >= 0");
  need(s.clip >= 0 && std::isfinite(s.clip), "--clip " + num(s.clip) + ": need >= 0 (0: no clipping)");
  validate(s.data);
}

namespace {

model::ModelConfig config_for(const TrainSettings& s, int vocab, int eot) {
  model::ModelConfig c = model::family_config(model::Family::GptNeo, s.layers, s.heads, s.heads, s.d_model, s.d_mlp, vocab);
  c.max_positions = s.max_positions;
  c.window_size = s.window;
  c.bos_token_id = eot;
  c.eos_token_id = eot;
  return c;
}

double lr_at(const TrainSettings& s, int step) {
  if (step < s.warmup) return s.lr * (step + 1) / s.warmup;
  const int span = std::max(1, s.steps - s.warmup - 1);
  const double progress = std::min(1.0, static_cast<double>(step - s.warmup) / span);
  const double low = s.lr * s.min_lr_ratio;
  return low + (s.lr - low) * 0.5 * (1.0 + std::cos(M_PI * progress));
}

std::string clock_text(double seconds) {
  const long t = std::lround(std::max(0.0, seconds));
  char b[32];
  if (t >= 3600)
    std::snprintf(b, sizeof b, "%ldh%02ldm", t / 3600, (t / 60) % 60);
  else
    std::snprintf(b, sizeof b, "%ldm%02lds", t / 60, t % 60);
  return b;
}

// Adam with bias correction and decoupled weight decay. All parameters live end to end in one
// flat tensor (each model weight is a leaf view into it), so the clipping and each update run as a
// handful of operations over one buffer instead of a few per parameter tensor.
struct Adam {
  at::Tensor flat, m, v;
  at::Tensor decay;                // [numel] 1 where weight decay applies (matrices, embeddings)
  std::vector<at::Tensor> params;  // the leaves, in parameter_table order
  int t = 0;

  void bind(model::Model& model) {
    std::vector<model::NamedParam> table;
    int64_t total = 0;
    for (const model::NamedParam& p : model::parameter_table(model)) {
      if (p.optional) continue;  // the tied lm_head is the embedding
      table.push_back(p);
      total += p.slot->numel();
    }
    flat = at::empty({total}, at::kFloat);
    decay = at::zeros({total}, at::kFloat);
    int64_t offset = 0;
    for (const model::NamedParam& p : table) {
      const int64_t n = p.slot->numel();
      flat.narrow(0, offset, n).copy_(p.slot->reshape({-1}));
      if (p.kind == model::ParamKind::Matrix || p.kind == model::ParamKind::Embedding) decay.narrow(0, offset, n).fill_(1);
      *p.slot = flat.narrow(0, offset, n).view(p.slot->sizes()).detach().requires_grad_(true);
      params.push_back(*p.slot);
      offset += n;
    }
    model.weights.lm_head = model.weights.wte;  // tied: one leaf
    m = at::zeros_like(flat);
    v = at::zeros_like(flat);
  }

  // The gradients end to end, scaled to a global L2 norm of at most `clip` (0: no clipping).
  at::Tensor gradients(double clip) {
    std::vector<at::Tensor> parts;
    for (const auto& p : params) parts.push_back(p.grad().reshape({-1}));
    at::Tensor g = at::cat(parts);
    const double norm = g.norm().item<double>();
    if (clip > 0 && norm > clip) g.mul_(clip / (norm + 1e-6));
    return g;
  }

  void step(const TrainSettings& s, const at::Tensor& g, double lr) {
    ++t;
    const double bc1 = 1.0 - std::pow(s.beta1, t), bc2 = 1.0 - std::pow(s.beta2, t);
    if (s.weight_decay > 0) flat.mul_(1.0 - lr * s.weight_decay * decay);
    m.mul_(s.beta1).add_(g, 1.0 - s.beta1);
    v.mul_(s.beta2).addcmul_(g, g, 1.0 - s.beta2);
    flat.addcdiv_(m, (v / bc2).sqrt_().add_(s.eps), -lr / bc1);
  }

  void zero_grad() {
    for (auto& p : params) p.mutable_grad() = at::Tensor();
  }
};

// One `\r` line on a terminal (unless --log-level is above info); log lines at every twentieth of
// the run otherwise.
class Progress {
 public:
  explicit Progress(int steps)
      : steps_(steps),
        tty_(isatty(fileno(stderr)) != 0 && spdlog::default_logger()->should_log(spdlog::level::info)),
        t0_(std::chrono::steady_clock::now()) {}

  void update(int step, double loss, double acc, double lr) {
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
    const int done = step + 1;
    const double eta = elapsed / done * (steps_ - done);
    if (tty_) {
      const int width = 24, filled = static_cast<int>(static_cast<long>(width) * done / steps_);
      std::fprintf(stderr, "\r[%s%s] step %d/%d  loss %.4f  acc %5.1f%%  %.2f s/step  ETA %s   ",
                   std::string(static_cast<size_t>(filled), '#').c_str(),
                   std::string(static_cast<size_t>(width - filled), '.').c_str(), done, steps_, loss, 100 * acc,
                   elapsed / done, clock_text(eta).c_str());
      if (done == steps_) std::fprintf(stderr, "\n");
      std::fflush(stderr);
    } else if (done == 1 || done == steps_ || done % std::max(1, steps_ / 20) == 0) {
      spdlog::info("step {}/{}: loss {:.4f}, token accuracy {:.1f}%, lr {:.2e}, {:.2f} s/step, ETA {}", done, steps_,
                   loss, 100 * acc, lr, elapsed / done, clock_text(eta));
    }
  }

 private:
  int steps_;
  bool tty_;
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace

TrainResult train(const TrainSettings& s0, const tokenizer::Tokenizer& tok, const std::string& out, int threads) {
  validate(s0);
  require_gpt2(tok);
  const TrainSettings s = resolved(s0);
  if (threads > 0) at::set_num_threads(threads);
  const auto t0 = std::chrono::steady_clock::now();
  const int eot = end_of_text_id(tok);

  model::Model m = model::random_model(config_for(s, tok.vocab_size(), eot), s.seed);
  Adam adam;
  adam.bind(m);

  TrainResult r;
  r.steps = s.steps;
  r.threads = at::get_num_threads();
  r.parameters = model::parameter_count(m);
  spdlog::info("training {} layers x {} heads, d_model {}, d_mlp {} ({} parameters): {} steps of {} items, lr {}, "
               "seed {}, {} threads",
               s.layers, s.heads, s.d_model, s.d_mlp, r.parameters, s.steps, s.batch_size, s.lr, s.seed, r.threads);
  Progress progress(s.steps);
  std::vector<double> losses, accs;
  // Seconds spent in data, forward (with the loss), backward, and the optimiser (--log-level debug).
  double t_data = 0, t_forward = 0, t_backward = 0, t_adam = 0;
  auto lap = [clock = std::chrono::steady_clock::now()](double& into) mutable {
    const auto now = std::chrono::steady_clock::now();
    into += std::chrono::duration<double>(now - clock).count();
    clock = now;
  };
  for (int step = 0; step < s.steps; ++step) {
    std::vector<Sequence> seqs;
    seqs.reserve(static_cast<size_t>(s.batch_size));
    for (int i = 0; i < s.batch_size; ++i)
      seqs.push_back(make_sequence(tok, s.data, s.seed, Stream::Train, static_cast<uint64_t>(step), static_cast<uint64_t>(i)));
    const detail::Packed p = detail::pack(seqs, eot);
    if (p.ids.size(1) > s.max_positions)
      throw InputError("--max-positions " + std::to_string(s.max_positions) + " is shorter than a training sequence (" +
                       std::to_string(p.ids.size(1)) + " tokens)");
    const at::Tensor logits = detail::response_logits(m, p);
    const at::Tensor loss = at::nll_loss(at::log_softmax(logits, 1), p.targets);
    double acc;
    {
      at::NoGradGuard no_grad;
      acc = (logits.argmax(1) == p.targets).to(at::kDouble).mean().item<double>();
    }
    lap(t_forward);
    adam.zero_grad();
    loss.backward();
    lap(t_backward);
    const double lr = lr_at(s, step);
    {
      at::NoGradGuard no_grad;
      adam.step(s, adam.gradients(s.clip), lr);
    }
    lap(t_adam);
    losses.push_back(loss.item<double>());
    accs.push_back(acc);
    if (!std::isfinite(losses.back())) throw std::runtime_error("training diverged at step " + std::to_string(step + 1) + " (loss is not finite); try a smaller --lr");
    progress.update(step, losses.back(), acc, lr);
  }
  for (auto& t : adam.params) t.requires_grad_(false);
  spdlog::debug("time: data {:.1f} s, forward {:.1f} s, backward {:.1f} s, optimiser {:.1f} s", t_data, t_forward,
                t_backward, t_adam);

  r.first_loss = losses.front();
  const size_t tail = std::min<size_t>(10, losses.size());
  for (size_t i = losses.size() - tail; i < losses.size(); ++i) {
    r.final_loss += losses[i];
    r.final_token_accuracy += accs[i];
  }
  r.final_loss /= static_cast<double>(tail);
  r.final_token_accuracy /= static_cast<double>(tail);
  r.holdout_items = 500;
  r.holdout_exact_match = detail::exact_match(m, tok, s.data, s.seed, Stream::Holdout, r.holdout_items).exact.rate();
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  model::save_model(m, out);
  tokenizer::copy_tokenizer_files(tok.source(), out);
  write_record(out, s, r);
  return r;
}

}  // namespace teap::train
