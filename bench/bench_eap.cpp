// Benchmark (not a test): forward throughput, checkpoint load time, and the cost of one EAP batch
// against one inference forward pass, for the BM1 shape and small Qwen2- and Llama-shaped models.
// Every ratio is measured within this one run.
// Usage: bench_eap [--quick] [--threads N] [--device cpu|cuda|cuda:N] [--dtype float32|bfloat16]
// On CUDA the times include the copy of each batch's scores back to the host (as in a sweep); the
// peak MiB column is host memory only.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <utility>
#include <vector>

#include "eap/graph.hpp"
#include "eap/score.hpp"
#include "model/make.hpp"
#include "model/model.hpp"

using namespace teap;

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// Peak resident memory since the last reset, in MiB (Linux: /proc/self/status VmHWM).
double peak_mib() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  return 0;
}
void reset_peak() { std::ofstream("/proc/self/clear_refs") << "5"; }

template <class F>
double best_of(int reps, F&& f) {
  double best = 1e30;
  for (int i = 0; i < reps; ++i) {
    const double t0 = now();
    f();
    best = std::min(best, now() - t0);
  }
  return best;
}

struct Shape {
  const char* name;
  model::Family family;
  int layers, heads, kv_heads, d_model, d_mlp, vocab;
};

model::ModelConfig config_of(const Shape& s) {
  return model::family_config(s.family, s.layers, s.heads, s.kv_heads, s.d_model, s.d_mlp, s.vocab);
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  model::LoadOptions lo;
  auto usage = [](const std::string& why) {
    std::cerr << "bench_eap: " << why
              << "\nusage: bench_eap [--quick] [--threads N] [--device cpu|cuda|cuda:N] [--dtype float32|bfloat16]\n";
    std::exit(2);
  };
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const bool has_value = i + 1 < argc;
    if (arg == "--quick") {
      quick = true;
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
    } else if (arg == "-h" || arg == "--help") {
      std::cout << "usage: bench_eap [--quick] [--threads N] [--device cpu|cuda|cuda:N] [--dtype float32|bfloat16]\n";
      return 0;
    } else {
      usage("unknown or incomplete argument '" + arg + "'");
    }
  }
  const int reps = quick ? 1 : 3;
  const int B = 30, P = 35;
  const Shape shapes[] = {
      {"BM1 (gpt_neo 2x16, d1024)", model::Family::GptNeo, 2, 16, 16, 1024, 4096, 50257},
      {"qwen2-small (8x8/2, d512)", model::Family::Qwen2, 8, 8, 2, 512, 2816, 151936},
      {"llama-small (8x8/2, d512)", model::Family::Llama, 8, 8, 2, 512, 2048, 128256},
  };
  std::printf("threads: %d (intra-op), batch %d prompts x %d tokens, %s, %s\n", at::get_num_threads(), B, P,
              lo.dtype.c_str(), lo.device.c_str());
  std::printf("%-28s %9s %12s %10s %10s %7s %9s %11s %9s\n", "model", "load s", "fwd tok/s", "fwd s", "eap s", "ratio",
              "peak MiB", "per-prompt s", "speed-up");
  const auto tmp = std::filesystem::temp_directory_path() / "teap_bench_model";
  std::vector<eap::ScoreProfile> phases;
  // The other gradient methods on the first shape (BM1): name, seconds, ratio, profile.
  struct MethodLine {
    std::string name;
    double s, ratio;
    eap::ScoreProfile prof;
  };
  std::vector<MethodLine> methods;
  for (const Shape& s : shapes) {
    const model::ModelConfig c = config_of(s);
    std::filesystem::remove_all(tmp);
    model::save_model(model::random_model(c, 1), tmp.string());
    model::Model m;
    const double load_s = best_of(1, [&] { m = model::load_model(tmp.string(), lo); });

    at::Generator gen = at::detail::createCPUGenerator(7);
    const at::Tensor ids = at::randint(0, s.vocab, {B, P}, gen, at::kLong);
    eap::BatchInput in;
    in.n_prompts = B;
    in.n_positions = P;
    in.clean_ids.assign(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + B * P);
    in.corrupt_ids = in.clean_ids;
    for (int i = 0; i < B; ++i) {
      in.corrupt_ids[i * P + 11] = (in.corrupt_ids[i * P + 11] + 1) % s.vocab;  // one word differs
      in.clean_answer.push_back((i * 7919) % s.vocab);
      in.corrupt_answer.push_back((i * 104729 + 13) % s.vocab);
    }
    const eap::Graph g = eap::make_graph(c.n_layers, c.n_heads);
    // Warm-up: allocator and thread pool.
    eap::logit_diffs(m, in.clean_ids, B, P, in.clean_answer, in.corrupt_answer, eap::MetricPairing::Own);
    const double fwd_s = best_of(reps, [&] {
      eap::logit_diffs(m, in.clean_ids, B, P, in.clean_answer, in.corrupt_answer, eap::MetricPairing::Own);
    });
    reset_peak();
    const double base_mib = peak_mib();
    eap::ScoreProfile prof;
    eap::ScoreOptions opts;
    opts.profile = &prof;
    const double eap_s = best_of(reps, [&] {
      prof = {};
      eap::score_batch(m, g, in, opts);
    });
    const double eap_mib = peak_mib() - base_mib;
    // The notebook's EAP fork ran one prompt per backward pass: the same work, prompt by prompt.
    const int per_prompt_n = quick ? 3 : 6;
    const double one_s = best_of(1, [&] {
      for (int i = 0; i < per_prompt_n; ++i) {
        eap::BatchInput one;
        one.n_prompts = 1;
        one.n_positions = P;
        one.clean_ids.assign(in.clean_ids.begin() + i * P, in.clean_ids.begin() + (i + 1) * P);
        one.corrupt_ids.assign(in.corrupt_ids.begin() + i * P, in.corrupt_ids.begin() + (i + 1) * P);
        one.clean_answer = {in.clean_answer[i]};
        one.corrupt_answer = {in.corrupt_answer[i]};
        eap::score_batch(m, g, one);
      }
    }) / per_prompt_n * B;
    std::printf("%-28s %9.2f %12.0f %10.3f %10.3f %7.2f %9.0f %11.3f %8.1fx\n", s.name, load_s, B * P / fwd_s, fwd_s,
                eap_s, eap_s / fwd_s, eap_mib, one_s, one_s / eap_s);
    phases.push_back(prof);
    if (&s == &shapes[0]) {
      methods.push_back({"eap", eap_s, eap_s / fwd_s, prof});
      for (auto [me, steps] : {std::pair{eap::Method::EapIgInputs, 5}, std::pair{eap::Method::CleanCorrupted, 0}}) {
        eap::ScoreOptions mo;
        mo.method = me;
        if (steps) mo.ig_steps = steps;
        eap::ScoreProfile mp;
        mo.profile = &mp;
        const double t = best_of(reps, [&] {
          mp = {};
          eap::score_batch(m, g, in, mo);
        });
        methods.push_back({eap::to_string(me) + (steps ? " m=" + std::to_string(steps) : std::string()), t, t / fwd_s, mp});
      }
    }
  }
  std::filesystem::remove_all(tmp);
  std::printf("\nEAP batch phases (s): clean forward, backward, accuracy, corrupt forward (from the first corrupted\n"
              "position), activation differences, contraction\n");
  for (size_t i = 0; i < phases.size(); ++i) {
    const auto& p = phases[i];
    std::printf("%-28s %7.3f %7.3f %7.3f %7.3f %7.3f %7.3f\n", shapes[i].name, p.clean_forward, p.backward, p.accuracy,
                p.corrupt_forward, p.differences, p.contraction);
  }
  std::printf("\nScoring methods, %s, one batch (s, ratio to one inference forward pass; eap-ig-inputs m=5: target\n"
              "<= 2m+3 = 13), and phases: clean forward, corrupt forward, interpolated forwards, backward passes\n"
              "(with the gradients' sums), differences, contraction\n", shapes[0].name);
  for (const auto& ml : methods)
    std::printf("%-22s %7.3f s  ratio %6.2f   %7.3f %7.3f %7.3f %7.3f %7.3f %7.3f\n", ml.name.c_str(), ml.s, ml.ratio,
                ml.prof.clean_forward, ml.prof.corrupt_forward, ml.prof.interpolated_forward, ml.prof.backward,
                ml.prof.differences, ml.prof.contraction);
  std::printf("ratio = EAP batch / one inference forward pass (target <= 3.5); per-prompt s = the same batch scored\n"
              "one prompt per pass, as the notebook's EAP fork did; peak MiB = growth of peak RSS during EAP.\n");
  return 0;
}
