// Benchmark (not a test): forward throughput, checkpoint load time, and the cost of one EAP batch
// against one inference forward pass, for the BM1 shape and small Qwen2- and Llama-shaped models;
// with --real, also the real BM2 (Qwen2.5-0.5B) and BM3 (Llama-3.2-1B) shapes in float32 and
// bfloat16; and a checkpoint that makes the contraction's products denormal, flushed (as the
// engine runs) and not, against the same shape's normal checkpoint. Every ratio is measured within
// this one run.
// Usage: bench_eap [--quick] [--real] [--threads N] [--device cpu|cuda|cuda:N] [--dtype float32|bfloat16]
//                  [--only TEXT] [--micro N|auto] [--reps N] [--upstream-layers N]
// On CUDA the times include the copy of each batch's scores back to the host (as in a sweep); the
// memory columns are host memory only.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "bench_util.hpp"
#include "eap/graph.hpp"
#include "eap/memory.hpp"
#include "eap/micro_batch.hpp"
#include "eap/score.hpp"
#include "model/denormal.hpp"
#include "model/make.hpp"
#include "model/model.hpp"
#include "runner/memory_plan.hpp"

using namespace teap;

namespace {

using bench::best_of;
using bench::now;

// Peak resident memory since the last reset, in MiB (Linux: /proc/self/status VmHWM), and now (VmRSS).
double status_mib(const char* key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(key, 0) == 0) return std::stod(line.substr(std::strlen(key))) / 1024.0;
  return 0;
}
double peak_mib() { return status_mib("VmHWM:"); }
double rss_mib() { return status_mib("VmRSS:"); }
void reset_peak() { std::ofstream("/proc/self/clear_refs") << "5"; }

struct Case {
  std::string name;
  model::ModelConfig config;
  std::string dtype;          // the run's
  bool stored_bf16 = false;   // the checkpoint's
  bool real = false;          // a real shape: no per-prompt column
  bool denormal = false;      // heads 0 and 1 of every layer write denormals (W_O x 1e-38)
};

model::ModelConfig small(model::Family f, int layers, int heads, int kv, int d, int mlp, int vocab) {
  return model::family_config(f, layers, heads, kv, d, mlp, vocab);
}

struct Row {
  int micro = 0;  // prompts per micro-batch (the whole batch when not split)
  double load_s = 0, fwd_s = 0, first_s = 0, eap_s = 0, work_mib = 0, peak_mib = 0, estimate_mib = 0, one_s = 0;
  double paired = 0;  // the median over later batches of (EAP batch / the forward pass right after it)
  eap::ScoreProfile phases;
};

// micro > 0: the EAP batch is scored in micro-batches of at most `micro` prompts (as a rank under a
// memory budget scores it), to see what smaller working sets cost in speed.
Row measure(const Case& k, const model::LoadOptions& base, int reps, bool per_prompt, int B, int P, int micro = 0,
            int upstream_layers = 0) {
  const auto tmp = std::filesystem::temp_directory_path() / ("teap_bench_model_" + std::to_string(::getpid()));
  std::filesystem::remove_all(tmp);
  model::SaveOptions so;
  so.bf16 = k.stored_bf16;
  if (k.denormal) {
    model::Model m = model::random_model(k.config, 1);
    for (auto& l : m.weights.layers) {
      at::Tensor scale = at::ones({l.w_o.size(1)});
      scale.narrow(0, 0, 2 * k.config.d_head).fill_(1e-38f);
      l.w_o = l.w_o * scale;
    }
    model::save_model(m, tmp.string(), so);
  } else {
    model::write_random_model(k.config, 1, tmp.string(), so);  // tensor by tensor: the real shapes fit
  }
  model::LoadOptions lo = base;
  lo.dtype = k.dtype;
  lo.convert_cache.clear();
  Row r;
  model::Model m;
  r.load_s = best_of(1, [&] { m = model::load_model(tmp.string(), lo); });
  if (micro < 0) {  // auto: the micro-batch a one-rank sweep plans for this model (memory_budget "auto")
    job::Settings s;
    s.dtype = k.dtype;
    s.device = base.device.empty() ? "cpu" : base.device;
    const runner::MemoryPlan plan =
        runner::plan_memory_loaded(m.config, double(model::parameter_count(m)) * m.weights.wte.element_size(),
                                   double(m.mapped_bytes), s, B, P, P - 11, 1, at::get_num_threads());
    if (plan.micro == 0) {
      std::fprintf(stderr, "bench_eap: %s: memory_budget \"auto\" (%s per rank) fits not one prompt on this machine\n",
                   k.name.c_str(), eap::format_bytes(plan.budget).c_str());
      std::exit(1);
    }
    micro = static_cast<int>(plan.micro);
    upstream_layers = static_cast<int>(plan.upstream_layers);
  }
  r.micro = micro > 0 && micro < B ? micro : B;
  const eap::BatchInput in = bench::random_batch(B, P, k.config.vocab_size);
  const eap::Graph g = eap::make_graph(m.config.n_layers, m.config.n_heads);
  // Warm-up: allocator, thread pool, the weights' pages.
  eap::logit_diffs(m, in.clean_ids, B, P, in.clean_answer, in.corrupt_answer, eap::MetricPairing::Own);
  // Both terms of the ratio are the best of several runs, taken in turn (a forward pass after each
  // later EAP batch), so that a slow spell of a shared machine, which moves one run by 10-20%, weighs
  // on both alike: the forward pass is the best of reps + 2 (at least 3), the EAP batch of reps.
  auto forward = [&] {
    eap::logit_diffs(m, in.clean_ids, B, P, in.clean_answer, in.corrupt_answer, eap::MetricPairing::Own);
  };
  r.fwd_s = best_of(2, forward);
  reset_peak();
  const double base_mib = rss_mib();
  eap::ScoreOptions opts;
  opts.upstream_layers = upstream_layers;
  opts.workspace = eap::make_workspace();  // kept from batch to batch, as a sweep's score units keep it
  // The first batch of a process touches fresh memory (page faults); a sweep's later batches reuse
  // some of it. Both are shown; the ratio is of the later ones.
  r.first_s = best_of(1, [&] { eap::score_in_micro_batches(m, g, in, opts, micro); });
  r.eap_s = 1e30;
  // A slow spell of the shared machine can last minutes, longer than an EAP batch and the forward
  // pass after it together, and cover every later batch but not the forward passes before them; so
  // beside the best-of terms each batch is also divided by the forward pass that follows it (the
  // same spell weighs on both), and the median of those ratios is shown.
  std::vector<double> ratios;
  for (int i = 0; i < reps; ++i) {
    eap::ScoreProfile phases;
    opts.profile = &phases;
    const double t = best_of(1, [&] { eap::score_in_micro_batches(m, g, in, opts, micro); });
    if (t < r.eap_s) r.eap_s = t, r.phases = phases;  // the phases of the best batch
    const double f = best_of(1, forward);
    r.fwd_s = std::min(r.fwd_s, f);
    ratios.push_back(t / f);
  }
  std::sort(ratios.begin(), ratios.end());
  const size_t n_r = ratios.size();
  r.paired = n_r % 2 ? ratios[n_r / 2] : (ratios[n_r / 2 - 1] + ratios[n_r / 2]) / 2;
  r.peak_mib = peak_mib();
  r.work_mib = r.peak_mib - base_mib;
  job::Settings shape_settings;
  shape_settings.dtype = k.dtype;
  const eap::WorkShape w = runner::work_shape(m.config, shape_settings);
  r.estimate_mib = eap::batch_work_bytes(w, r.micro, P, P - 11, upstream_layers, B) / (1 << 20);
  if (per_prompt) {
    // The notebook's EAP fork ran one prompt per backward pass: the same work, prompt by prompt.
    const int n = reps == 1 ? 3 : 6;
    r.one_s = best_of(1, [&] {
      for (int i = 0; i < n; ++i) {
        eap::BatchInput one;
        one.n_prompts = 1;
        one.n_positions = P;
        one.clean_ids.assign(in.clean_ids.begin() + i * P, in.clean_ids.begin() + (i + 1) * P);
        one.corrupt_ids.assign(in.corrupt_ids.begin() + i * P, in.corrupt_ids.begin() + (i + 1) * P);
        one.clean_answer = {in.clean_answer[i]};
        one.corrupt_answer = {in.corrupt_answer[i]};
        eap::score_batch(m, g, one);
      }
    }) / n * B;
  }
  m = model::Model();
  std::filesystem::remove_all(tmp);
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false, real = false;
  std::string only;  // run only the lines whose name contains it ("denormal", "methods": those sections)
  int micro = 0, reps_arg = 0, upstream_layers = 0;
  model::LoadOptions lo;
  const char* usage_line =
      "usage: bench_eap [--quick] [--real] [--threads N] [--device cpu|cuda|cuda:N] [--dtype float32|bfloat16]\n"
      "  --real: also the real BM2 (Qwen2.5-0.5B) and BM3 (Llama-3.2-1B) shapes, float32 and bfloat16 (BM3 float32\n"
      "          needs about 12 GiB and several minutes), and the denormal case at BM2 shape\n"
      "  --only TEXT: only the model lines whose name (e.g. 'BM3 Llama-3.2-1B bf16') contains TEXT; 'denormal' or\n"
      "          'methods': only that section\n"
      "  --micro N|auto: score each EAP batch in micro-batches of at most N prompts (as under a memory budget);\n"
      "          auto: those a one-rank sweep plans for each model under memory_budget \"auto\"\n"
      "  --upstream-layers N: the contraction holds N upstream layers' differences at a time (streaming)\n"
      "  --reps N: the best of N later EAP batches of every model line (default 3, 1 with --quick)\n";
  auto usage = [&](const std::string& why) {
    std::cerr << "bench_eap: " << why << "\n" << usage_line;
    std::exit(2);
  };
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const bool has_value = i + 1 < argc;
    if (arg == "--quick") {
      quick = true;
    } else if (arg == "--real") {
      real = true;
    } else if (arg == "--threads" && has_value) {
      const int n = std::atoi(argv[++i]);
      if (n < 1) usage(std::string("--threads: not a positive number: '") + argv[i] + "'");
      at::set_num_threads(n);
    } else if (arg == "--device" && has_value) {
      lo.device = argv[++i];
      if (lo.device != "cpu" && lo.device.rfind("cuda", 0) != 0) usage("--device: cpu, cuda or cuda:N, not '" + lo.device + "'");
    } else if (arg == "--dtype" && has_value) {
      lo.dtype = argv[++i];
      if (lo.dtype != "float32" && lo.dtype != "bfloat16") usage("--dtype: float32 or bfloat16, not '" + lo.dtype + "'");
    } else if (arg == "--only" && has_value) {
      only = argv[++i];
    } else if (arg == "--micro" && has_value) {
      micro = std::string(argv[++i]) == "auto" ? -1 : std::atoi(argv[i]);
      if (micro == 0 || micro < -1) usage(std::string("--micro: not a positive number or 'auto': '") + argv[i] + "'");
    } else if (arg == "--upstream-layers" && has_value) {
      upstream_layers = std::atoi(argv[++i]);
      if (upstream_layers < 1) usage(std::string("--upstream-layers: not a positive number: '") + argv[i] + "'");
    } else if (arg == "--reps" && has_value) {
      reps_arg = std::atoi(argv[++i]);
      if (reps_arg < 1) usage(std::string("--reps: not a positive number: '") + argv[i] + "'");
    } else if (arg == "-h" || arg == "--help") {
      std::cout << usage_line;
      return 0;
    } else {
      usage("unknown or incomplete argument '" + arg + "'");
    }
  }
  model::flush_denormals();  // as the engine runs
  const int reps = quick ? 1 : 3;
  const int B = 30, P = 35;
  using model::Family;
  std::vector<Case> cases = {
      {"BM1 (gpt_neo 2x16, d1024)", small(Family::GptNeo, 2, 16, 16, 1024, 4096, 50257), lo.dtype},
      {"qwen2-small (8x8/2, d512)", small(Family::Qwen2, 8, 8, 2, 512, 2816, 151936), lo.dtype},
      {"llama-small (8x8/2, d512)", small(Family::Llama, 8, 8, 2, 512, 2048, 128256), lo.dtype},
  };
  if (real) {
    for (const char* dt : {"float32", "bfloat16"}) {
      const bool bf = std::string(dt) == "bfloat16";
      // Weights stored as the run computes (mapped, as a sweep's ranks share them).
      cases.push_back({std::string("BM2 Qwen2.5-0.5B ") + (bf ? "bf16" : "f32"), model::preset_config("bm2"), dt, bf, true});
      cases.push_back({std::string("BM3 Llama-3.2-1B ") + (bf ? "bf16" : "f32"), model::preset_config("bm3"), dt, bf, true});
    }
  }
  if (!only.empty()) {
    std::vector<Case> kept;
    for (const Case& k : cases)
      if ((k.name + " " + k.dtype).find(only) != std::string::npos) kept.push_back(k);
    cases = kept;
  }
  std::printf("threads: %d (intra-op), batch %d prompts x %d tokens (the last 24 differ), %s%s%s\n", at::get_num_threads(), B, P,
              lo.device.c_str(),
              micro > 0   ? (", micro-batches of at most " + std::to_string(micro) + " prompts").c_str()
              : micro < 0 ? ", micro-batches as a one-rank sweep plans them (column 'micro')"
                          : "",
              upstream_layers > 0 ? (", " + std::to_string(upstream_layers) + " upstream layer(s) a contraction pass").c_str() : "");
  std::printf("%-26s %-8s %7s %10s %8s %5s %8s %8s %6s %6s %9s %9s %9s %11s %8s\n", "model", "dtype", "load s", "fwd tok/s", "fwd s",
              "micro", "1st s", "eap s", "ratio", "paired", "work MiB", "est. MiB", "peak MiB", "per-prompt s", "speed-up");
  std::vector<std::pair<std::string, Row>> rows;
  for (const Case& k : cases) {
    const Row r = measure(k, lo, reps_arg > 0 ? reps_arg : reps, !k.real && micro == 0, B, P, micro, upstream_layers);
    std::printf("%-26s %-8s %7.2f %10.0f %8.3f %5d %8.3f %8.3f %6.2f %6.2f %9.0f %9.0f %9.0f", k.name.c_str(), k.dtype.c_str(), r.load_s,
                B * P / r.fwd_s, r.fwd_s, r.micro, r.first_s, r.eap_s, r.eap_s / r.fwd_s,
                r.paired, r.work_mib, r.estimate_mib, r.peak_mib);
    if (r.one_s > 0) std::printf(" %11.3f %7.1fx", r.one_s, r.one_s / r.eap_s);
    std::printf("\n");
    std::fflush(stdout);
    rows.emplace_back(k.name + " " + k.dtype, r);
  }

  // Denormals: the same shape, a normal checkpoint against one whose products are denormal.
  if (only.empty() || only == "denormal") {
    Case normal{real ? "BM2 Qwen2.5-0.5B" : "qwen2-small (8x8/2, d512)",
                real ? model::preset_config("bm2") : small(Family::Qwen2, 8, 8, 2, 512, 2816, 151936), "float32"};
    Case denormal = normal;
    denormal.denormal = true;
    const int dr = real ? 1 : reps;
    const Row n = measure(normal, lo, dr, false, B, P);
    const Row f = measure(denormal, lo, dr, false, B, P);
    model::flush_denormals(false);
    const Row d = measure(denormal, lo, dr, false, B, P);
    model::flush_denormals(true);
    std::printf("\ndenormal checkpoint (heads 0-1 of every layer: W_O x 1e-38), %s, float32, one EAP batch:\n", normal.name.c_str());
    std::printf("  normal checkpoint %8.3f s (gradients and contraction %.3f s)\n", n.eap_s, n.phases.gradients + n.phases.contraction);
    std::printf("  denormal, flushed %8.3f s (gradients and contraction %.3f s) = %.2fx the normal case (target <= 1.5)\n", f.eap_s,
                f.phases.gradients + f.phases.contraction, f.eap_s / n.eap_s);
    std::printf("  denormal, computed %7.3f s (gradients and contraction %.3f s) = %.2fx (what flushing avoids)\n", d.eap_s, d.phases.gradients + d.phases.contraction,
                d.eap_s / n.eap_s);
  }

  // The gradient methods (issue 12) on the BM1 shape: one batch each, against one inference forward pass.
  if (only.empty() || only == "methods") {
    const model::Model m = model::random_model(small(Family::GptNeo, 2, 16, 16, 1024, 4096, 50257), 1,
                                               lo.dtype == "bfloat16" ? at::kBFloat16 : at::kFloat);
    const eap::BatchInput in = bench::random_batch(B, P, m.config.vocab_size);
    const eap::Graph g = eap::make_graph(m.config.n_layers, m.config.n_heads);
    eap::logit_diffs(m, in.clean_ids, B, P, in.clean_answer, in.corrupt_answer, eap::MetricPairing::Own);
    const double fwd = best_of(reps, [&] {
      eap::logit_diffs(m, in.clean_ids, B, P, in.clean_answer, in.corrupt_answer, eap::MetricPairing::Own);
    });
    std::printf("\nScoring methods, BM1 shape, one batch (s, ratio to one inference forward pass of %.3f s; "
                "eap-ig-inputs m=5: target <= 13):\n", fwd);
    for (auto [me, steps] : {std::pair{eap::Method::Eap, 0}, std::pair{eap::Method::EapIgInputs, 5},
                             std::pair{eap::Method::CleanCorrupted, 0}}) {
      eap::ScoreOptions mo;
      mo.method = me;
      if (steps) mo.ig_steps = steps;
      const double t = best_of(reps, [&] { eap::score_batch(m, g, in, mo); });
      const std::string name = eap::to_string(me) + (steps ? " m=" + std::to_string(steps) : std::string());
      std::printf("  %-22s %8.3f s %7.2f\n", name.c_str(), t, t / fwd);
    }
  }

  std::printf("\nEAP batch phases (s): common prefix, clean forward (from the first corrupted position), backward,\n"
              "accuracy, corrupt forward, activation differences, downstream gradients, contraction\n");
  for (const auto& [name, r] : rows) {
    const auto& p = r.phases;
    std::printf("%-36s %7.3f %7.3f %7.3f %7.3f %7.3f %7.3f %7.3f %7.3f\n", name.c_str(), p.prefix, p.clean_forward, p.backward,
                p.accuracy, p.corrupt_forward, p.differences, p.gradients, p.contraction);
  }
  std::printf("1st s = the process's first EAP batch (fresh memory); eap s = the best of the later ones (memory reused,\n"
              "as a sweep's batches after its first); ratio = eap s / one inference forward pass (target <= 3.5); paired = the\n"
              "median over the later batches of each batch / the forward pass right after it (a slow spell weighs on both);\n"
              "per-prompt s = the same batch scored one prompt per pass, as the notebook's EAP fork did; work MiB =\n"
              "growth of peak RSS during EAP over the resident memory before it (est. MiB: eap::batch_work_bytes, what\n"
              "memory_budget plans with); peak MiB = the process's peak RSS, weights included (mapped read-only from the\n"
              "checkpoint).\n");
  return 0;
}
