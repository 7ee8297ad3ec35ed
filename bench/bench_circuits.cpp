// Benchmark (not a test): the cost of running circuits (model/patched.hpp) against one inference
// forward pass, BM1 shape, 30 prompts, and `exact` scores in edges per second. Every ratio is
// measured within this one run.
// Usage: bench_circuits [--quick] [--no-exact] [--threads N]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "bench_util.hpp"
#include "eap/circuit.hpp"
#include "eap/evaluate.hpp"
#include "eap/graph.hpp"
#include "eap/score.hpp"
#include "model/make.hpp"
#include "model/model.hpp"
#include "model/patched.hpp"

using namespace teap;

namespace {

using bench::best_of;
using bench::now;

// Circuits of the notebook's graph that keep `k` random scored edges each (what `top-k` and
// `consistent` look like to the patched run: most edges ablated).
std::vector<eap::Circuit> random_circuits(const eap::Graph& scoring, int n, int k, uint64_t seed) {
  const eap::Graph eval = eap::evaluation_graph(scoring.n_layers, scoring.n_heads);
  const eap::NodeMap map = eap::map_nodes(scoring, eval);
  std::vector<eap::Edge> all;
  for (int u = 0; u < scoring.n_upstream(); ++u)
    for (int v = 0; v < scoring.n_downstream(); ++v)
      if (scoring.is_edge(u, v)) all.push_back({u, v, 0.0});
  std::mt19937_64 rng(seed);
  std::vector<eap::Circuit> out;
  for (int i = 0; i < n; ++i) {
    std::shuffle(all.begin(), all.end(), rng);
    out.push_back(eap::make_circuit("c" + std::to_string(i), scoring, eval, map,
                                    std::vector<eap::Edge>(all.begin(), all.begin() + k * (i + 1))));
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false, exact = true;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--quick") {
      quick = true;
    } else if (arg == "--no-exact") {
      exact = false;
    } else if (arg == "--threads" && i + 1 < argc) {
      const int n = std::atoi(argv[++i]);
      if (n < 1) {
        std::cerr << "bench_circuits: --threads: not a positive number\n";
        return 2;
      }
      at::set_num_threads(n);
    } else {
      std::cerr << "bench_circuits: unknown argument '" << arg << "'\nusage: bench_circuits [--quick] [--no-exact] [--threads N]\n";
      return 2;
    }
  }
  at::NoGradGuard no_grad;
  const int reps = quick ? 1 : 3, B = 30, P = 35, corrupt_at = 11;
  const model::ModelConfig c = model::family_config(model::Family::GptNeo, 2, 16, 16, 1024, 4096, 50257);
  const model::Model m = model::random_model(c, 1);
  const eap::BatchInput in = bench::random_batch(B, P, c.vocab_size, corrupt_at);
  std::printf("BM1 shape (gpt_neo 2 layers x 16 heads, d 1024), %d prompts x %d tokens (first difference at %d), "
              "%d threads\n", B, P, corrupt_at, at::get_num_threads());
  eap::logit_diffs(m, in.clean_ids, B, P, in.clean_answer, in.corrupt_answer, eap::MetricPairing::Own);  // warm-up
  const double fwd = best_of(reps, [&] {
    eap::logit_diffs(m, in.clean_ids, B, P, in.clean_answer, in.corrupt_answer, eap::MetricPairing::Own);
  });

  // The patched passes alone, after the clean and corrupt runs every evaluation shares.
  model::ActivationRecord prefix, clean, corrupt;
  const at::Tensor clean_ids = at::tensor(at::ArrayRef<int64_t>(in.clean_ids)).view({B, P}),
                   corrupt_ids = at::tensor(at::ArrayRef<int64_t>(in.corrupt_ids)).view({B, P});
  model::forward(m, clean_ids.narrow(1, 0, corrupt_at), &prefix);
  model::forward(m, clean_ids, &clean, corrupt_at, &prefix);
  model::forward(m, corrupt_ids, &corrupt, corrupt_at, &prefix);
  const eap::Graph scoring = eap::make_graph(c.n_layers, c.n_heads);
  const eap::Graph eval = eap::evaluation_graph(c.n_layers, c.n_heads);
  model::Patch patch;
  patch.corrupt = model::upstream_outputs(m, corrupt);
  patch.clean = &clean;
  patch.clean_out = model::upstream_outputs(m, clean);
  const at::Tensor valid = at::tensor(at::ArrayRef<uint8_t>(eval.valid)).view({eval.n_upstream(), eval.n_downstream()});
  auto masks = [&](const std::vector<eap::Circuit>& cs) {
    std::vector<at::Tensor> t;
    for (const auto& x : cs) t.push_back((valid - at::tensor(at::ArrayRef<uint8_t>(x.keep)).view_as(valid)).to(at::kFloat));
    return at::stack(t);
  };
  const std::vector<eap::Circuit> ten = random_circuits(scoring, 10, 10, 3);
  patch.ablated = masks({ten[0]});
  const double one = best_of(reps, [&] { model::patched_forward(m, clean_ids, patch, corrupt_at, &prefix); });
  patch.ablated = masks(ten);
  const double ten_s = best_of(reps, [&] { model::patched_forward(m, clean_ids, patch, corrupt_at, &prefix); });
  // What an evaluation unit does: both runs, then the ten circuits.
  std::vector<const eap::Circuit*> ptrs;
  for (const auto& x : ten) ptrs.push_back(&x);
  const double unit_s = best_of(reps, [&] { eap::evaluate_batch(m, in, ptrs); });
  const double runs_s = best_of(reps, [&] { eap::evaluate_batch(m, in, {}); });

  // exact: one patched run per edge of the BM1 graph (fewer prompts with --quick).
  eap::BatchInput small = in;
  const int Bx = quick ? 4 : B;
  small.n_prompts = Bx;
  small.clean_ids.resize(size_t(Bx) * P);
  small.corrupt_ids.resize(size_t(Bx) * P);
  small.clean_answer.resize(Bx);
  small.corrupt_answer.resize(Bx);
  eap::ScoreOptions so;
  so.method = eap::Method::Exact;
  const double exact_s = exact ? best_of(1, [&] { eap::score_batch(m, scoring, small, so); }) : 0.0;

  std::printf("%-52s %9s %7s %7s\n", "", "s", "ratio", "target");
  std::printf("%-52s %9.3f %7.2f\n", "inference forward pass (the unit of the ratios)", fwd, 1.0);
  std::printf("%-52s %9.3f %7.2f %7s\n", "one circuit, one patched pass", one, one / fwd, "<= 1.5");
  std::printf("%-52s %9.3f %7.2f %7s\n", "ten circuits, one patched pass", ten_s, ten_s / fwd, "<= 8");
  std::printf("%-52s %9.3f %7.2f\n", "evaluation unit: clean + corrupt runs + ten circuits", unit_s, unit_s / fwd);
  std::printf("%-52s %9.3f %7.2f\n", "  of which the clean and corrupt runs", runs_s, runs_s / fwd);
  if (exact)
    std::printf("exact on the BM1 graph: %d edges x %d prompts in %.2f s = %.1f edges/s\n", scoring.n_edges(), Bx, exact_s,
                scoring.n_edges() / exact_s);
  std::printf("Circuits keep 10, 20, ..., 100 random edges of the notebook's graph (input and logits never ablated);\n"
              "the patched pass starts at the first corrupted position (the prefix is shared with the clean run).\n");
  return 0;
}
