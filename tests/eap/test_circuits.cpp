// Running circuits (model/patched.hpp, eap/evaluate.hpp) against the float64 reference forward
// pass with per-destination input copies (reference_forward.hpp): the full circuit is the clean
// run, the empty one (both extra nodes scored) the corrupt run, one ablated edge is the reference
// with that edge's difference put on its destination, patches propagate, the shortcuts (clean
// record, shared prefix, identical circuits) change nothing; `exact` scores against `eap`.
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "eap/circuit.hpp"
#include "eap/evaluate.hpp"
#include "eap/graph.hpp"
#include "eap/score.hpp"
#include "model/make.hpp"
#include "model/model.hpp"
#include "model/patched.hpp"
#include "reference_forward.hpp"
#include "tiny_models.hpp"

namespace {

using namespace teap;
using eap_test::Batch;
using eap_test::Deltas;
using eap_test::downstream_node;
using eap_test::make_batch;
using eap_test::make_model;
using eap_test::Node;
using eap_test::Port;
using eap_test::RefRun;
using eap_test::reference_forward;
using eap_test::scale_layers;
using eap_test::tiny_config;
using eap_test::upstream_act;
using model::Family;

const Family kFamilies[] = {Family::GptNeo, Family::Qwen2, Family::Llama};

std::vector<double> ref_lds(const RefRun& r, const Batch& b) {
  return eap_test::ref_logit_diffs(r, b.in.clean_answer, b.in.corrupt_answer, false);
}

double rel_err(const std::vector<double>& a, const std::vector<double>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num = std::max(num, std::fabs(a[i] - b[i]));
    den = std::max(den, std::fabs(b[i]));
  }
  return num / std::max(den, 1e-30);
}

// A circuit of the evaluation graph given by its ablated edges (everything else kept).
eap::Circuit ablating(const eap::Graph& eval, const std::vector<std::pair<int, int>>& ablated) {
  eap::Circuit c;
  c.name = "test";
  c.keep = eval.valid;
  for (auto [u, v] : ablated) c.keep[size_t(u) * eval.n_downstream() + v] = 0;
  return c;
}

// The per-prompt LDs of circuits on a batch, through evaluate_batch.
std::vector<std::vector<double>> run(const model::Model& m, const Batch& b, const std::vector<eap::Circuit>& cs,
                                     double budget = 2.0 * (1 << 30)) {
  std::vector<const eap::Circuit*> ptrs;
  for (const auto& c : cs) ptrs.push_back(&c);
  eap::EvaluateOptions o;
  o.memory_budget = budget;
  return eap::evaluate_batch(m, b.in, ptrs, o).circuit_ld;
}

// The patched run called directly (no shortcut of evaluate_batch), one circuit, from position 0.
std::vector<double> direct(const model::Model& m, const Batch& b, const eap::Circuit& c, bool with_clean_record) {
  at::NoGradGuard no_grad;
  const eap::Graph eval = eap::evaluation_graph(m.config.n_layers, m.config.n_heads);
  model::ActivationRecord clean, corrupt;
  model::forward(m, b.clean, &clean);
  model::forward(m, b.corrupt, &corrupt);
  model::Patch p;
  p.corrupt = model::upstream_outputs(m, corrupt);
  const at::Tensor valid = at::tensor(at::ArrayRef<uint8_t>(eval.valid)).view({eval.n_upstream(), eval.n_downstream()});
  const at::Tensor keep = at::tensor(at::ArrayRef<uint8_t>(c.keep)).view_as(valid);
  p.ablated = (valid - keep).to(at::kFloat).unsqueeze(0);
  if (with_clean_record) {
    p.clean = &clean;
    p.clean_out = model::upstream_outputs(m, clean);
  }
  const at::Tensor hidden = model::patched_forward(m, b.clean, p);
  const at::Tensor toks = at::stack({at::tensor(at::ArrayRef<int64_t>(b.in.clean_answer), at::kLong),
                                     at::tensor(at::ArrayRef<int64_t>(b.in.corrupt_answer), at::kLong)}, 1);
  const at::Tensor l = model::last_position_logits(m, hidden, toks).to(at::kDouble);
  const at::Tensor ld = (l.select(1, 0) - l.select(1, 1)).contiguous();
  return std::vector<double>(ld.data_ptr<double>(), ld.data_ptr<double>() + ld.numel());
}

// --- Baselines: keeping everything, keeping nothing ---------------------------------------------

TEST(CircuitRun, KeepingEveryEdgeIsTheCleanRunAllFamilies) {
  for (Family f : kFamilies) {
    for (auto dtype : {at::kDouble, at::kFloat}) {
      model::Model m = model::random_model(tiny_config(f), 3, dtype);
      const Batch b = make_batch(4, 8, 5);
      const eap::Graph eval = eap::evaluation_graph(m.config.n_layers, m.config.n_heads);
      const std::vector<double> clean = ref_lds(reference_forward(m, b.clean), b);
      const double tol = dtype == at::kDouble ? 1e-10 : 1e-5;
      EXPECT_LT(rel_err(direct(m, b, ablating(eval, {}), false), clean), tol) << model::family_name(f);
      EXPECT_LT(rel_err(direct(m, b, ablating(eval, {}), true), clean), tol) << model::family_name(f);
    }
  }
}

TEST(CircuitRun, KeepingNoEdgeWithBothNodesScoredIsTheCorruptRunAllFamilies) {
  for (Family f : kFamilies) {
    const model::Model m = make_model(f);
    const Batch b = make_batch(4, 8, 6);
    const eap::Graph eval = eap::evaluation_graph(m.config.n_layers, m.config.n_heads);
    std::vector<std::pair<int, int>> all;
    for (int u = 0; u < eval.n_upstream(); ++u)
      for (int v = 0; v < eval.n_downstream(); ++v)
        if (eval.is_edge(u, v)) all.push_back({u, v});
    const std::vector<double> corrupt = ref_lds(reference_forward(m, b.corrupt), b);
    const std::vector<double> clean = ref_lds(reference_forward(m, b.clean), b);
    EXPECT_GT(rel_err(clean, corrupt), 1e-3) << "the corruption must move the metric";
    EXPECT_LT(rel_err(direct(m, b, ablating(eval, all), false), corrupt), 1e-10) << model::family_name(f);
    // Through evaluate_batch: the circuit `empty` of a graph that scored both nodes.
    const eap::Graph scoring = eval;
    const eap::Circuit empty = eap::make_circuit("empty", scoring, eval, eap::map_nodes(scoring, eval), {});
    EXPECT_LT(rel_err(run(m, b, {empty})[0], corrupt), 1e-10) << model::family_name(f);
  }
}

TEST(CircuitRun, NeverScoredNodesAreNeverAblated) {
  // The notebook's graph (no input, no logits node): its empty circuit keeps every edge from the
  // embedding and into the logits, so it is not the corrupt run, and equals the run that ablates
  // exactly the scored edges.
  const model::Model m = make_model(Family::GptNeo);
  const Batch b = make_batch(3, 8, 7);
  const eap::Graph eval = eap::evaluation_graph(m.config.n_layers, m.config.n_heads);
  const eap::Graph scoring = eap::make_graph(m.config.n_layers, m.config.n_heads);
  const eap::Circuit empty = eap::make_circuit("empty", scoring, eval, eap::map_nodes(scoring, eval), {});
  std::vector<std::pair<int, int>> scored;
  for (int u = 0; u < eval.n_upstream(); ++u)
    for (int v = 0; v < eval.n_downstream(); ++v)
      if (eval.is_edge(u, v) && u != eval.input_up() && v != eval.logits_down()) scored.push_back({u, v});
  const std::vector<double> got = run(m, b, {empty})[0];
  EXPECT_LT(rel_err(got, direct(m, b, ablating(eval, scored), false)), 1e-10);
  EXPECT_GT(rel_err(got, ref_lds(reference_forward(m, b.corrupt), b)), 1e-3);
}

// --- One ablated edge, and patches that propagate -----------------------------------------------

// The reference's M with `deltas`, for comparing with a circuit's LDs.
TEST(CircuitRun, OneAblatedEdgeIsTheReferenceWithThatEdgesDifferenceAllFamilies) {
  for (Family f : kFamilies) {
    const model::Model m = make_model(f);
    const Batch b = make_batch(3, 8, 8);
    const eap::Graph eval = eap::evaluation_graph(m.config.n_layers, m.config.n_heads);
    const RefRun clean = reference_forward(m, b.clean), corrupt = reference_forward(m, b.corrupt);
    std::mt19937 rng(9);
    std::vector<eap::Circuit> circuits;
    std::vector<std::vector<double>> expected;
    // Two random edges into every kind of destination (q, k, v, mlp, logits), input edges included.
    for (Port want : {Port::Q, Port::K, Port::V, Port::Mlp, Port::Logits}) {
      std::vector<std::pair<int, int>> pool;
      for (int u = 0; u < eval.n_upstream(); ++u)
        for (int v = 0; v < eval.n_downstream(); ++v)
          if (eval.is_edge(u, v) && downstream_node(eval, v).port == want) pool.push_back({u, v});
      std::shuffle(pool.begin(), pool.end(), rng);
      for (int i = 0; i < 2; ++i) {
        auto [u, v] = pool[i];
        circuits.push_back(ablating(eval, {{u, v}}));
        Deltas d;
        d[downstream_node(eval, v)] = upstream_act(eval, corrupt, u) - upstream_act(eval, clean, u);
        expected.push_back(ref_lds(reference_forward(m, b.clean, d), b));
      }
    }
    const auto got = run(m, b, circuits);
    for (size_t i = 0; i < circuits.size(); ++i) {
      EXPECT_LT(rel_err(got[i], expected[i]), 1e-10) << model::family_name(f) << " circuit " << i;
      EXPECT_GT(rel_err(expected[i], ref_lds(clean, b)), 1e-8) << "edge " << i << " should matter";
    }
  }
}

TEST(CircuitRun, PatchesPropagateThroughLaterNodesAllFamilies) {
  // Ablate mlp.0 -> head.1.2.q, and head.1.2 -> logits: the second edge must read head.1.2's
  // output *in the patched run* (changed by the first patch), not its clean output.
  for (Family f : kFamilies) {
    const model::Model m = make_model(f);
    const Batch b = make_batch(3, 8, 10);
    const eap::Graph eval = eap::evaluation_graph(m.config.n_layers, m.config.n_heads);
    const RefRun clean = reference_forward(m, b.clean), corrupt = reference_forward(m, b.corrupt);
    const int e1u = eval.mlp_up(0), e1v = eval.q_down(1, 2), e2u = eval.head_up(1, 2), e2v = eval.logits_down();
    Deltas d;
    const Node q{Port::Q, 1, 2}, logits{Port::Logits, 0, 0};
    d[q] = corrupt.mlp[0] - clean.mlp[0];
    const RefRun first = reference_forward(m, b.clean, d);
    d[logits] = corrupt.head[1][2] - first.head[1][2];
    const std::vector<double> expected = ref_lds(reference_forward(m, b.clean, d), b);
    Deltas stale = d;  // what a run that did not propagate would compute
    stale[logits] = corrupt.head[1][2] - clean.head[1][2];
    const std::vector<double> wrong = ref_lds(reference_forward(m, b.clean, stale), b);
    ASSERT_GT(rel_err(wrong, expected), 1e-6) << "the test needs the first patch to change head.1.2";
    const auto got = run(m, b, {ablating(eval, {{e1u, e1v}, {e2u, e2v}})});
    EXPECT_LT(rel_err(got[0], expected), 1e-10) << model::family_name(f);
  }
}

// --- Shortcuts change nothing ---------------------------------------------------------------------

TEST(CircuitRun, StackedCircuitsPrefixAndCleanRecordChangeNothing) {
  for (Family f : kFamilies) {
    const model::Model m = make_model(f);
    const Batch b = make_batch(3, 9, 12, /*first_pos=*/4);  // a shared prefix of at least 4 positions
    const eap::Graph eval = eap::evaluation_graph(m.config.n_layers, m.config.n_heads);
    std::mt19937 rng(13);
    std::vector<std::pair<int, int>> edges;
    for (int u = 0; u < eval.n_upstream(); ++u)
      for (int v = 0; v < eval.n_downstream(); ++v)
        if (eval.is_edge(u, v)) edges.push_back({u, v});
    std::vector<eap::Circuit> cs;
    for (int i = 0; i < 5; ++i) {
      std::shuffle(edges.begin(), edges.end(), rng);
      cs.push_back(ablating(eval, std::vector<std::pair<int, int>>(edges.begin(), edges.begin() + 10 + 20 * i)));
    }
    cs.push_back(cs[1]);  // identical circuits run once
    const auto together = run(m, b, cs);
    const auto one_per_pass = run(m, b, cs, 1.0);  // a budget of one byte: one circuit per pass
    for (size_t i = 0; i < cs.size(); ++i) {
      const std::vector<double> plain = direct(m, b, cs[i], false);  // whole prompts, no record
      EXPECT_LT(rel_err(together[i], plain), 1e-10) << model::family_name(f) << " circuit " << i;
      // Other pass sizes only change the order of float sums.
      EXPECT_LT(rel_err(one_per_pass[i], together[i]), 1e-12) << model::family_name(f) << " circuit " << i;
    }
  }
}

// --- exact scores -----------------------------------------------------------------------------------

TEST(CircuitExact, IsTheReferenceWithOneEdgeAblated) {
  const model::Model m = make_model(Family::Qwen2);
  const Batch b = make_batch(3, 7, 14);
  eap::GraphOptions go;
  go.input_node = go.logits_node = true;
  const eap::Graph g = eap::make_graph(m.config.n_layers, m.config.n_heads, go);
  eap::ScoreOptions so;
  so.method = eap::Method::Exact;
  const eap::BatchScores s = eap::score_batch(m, g, b.in, so);
  const RefRun clean = reference_forward(m, b.clean), corrupt = reference_forward(m, b.corrupt);
  const std::vector<double> c = ref_lds(clean, b);
  const double M0 = std::accumulate(c.begin(), c.end(), 0.0) / c.size();
  std::mt19937 rng(15);
  int checked = 0;
  for (int u = 0; u < g.n_upstream(); ++u)
    for (int v = 0; v < g.n_downstream(); ++v) {
      const float S = s.scores[size_t(u) * g.n_downstream() + v];
      if (!g.is_edge(u, v)) {
        EXPECT_EQ(S, 0.0f);
        continue;
      }
      if (rng() % 8) continue;  // a sample of the edges
      Deltas d;
      d[downstream_node(g, v)] = upstream_act(g, corrupt, u) - upstream_act(g, clean, u);
      const std::vector<double> r = ref_lds(reference_forward(m, b.clean, d), b);
      const double expected = M0 - std::accumulate(r.begin(), r.end(), 0.0) / r.size();
      EXPECT_NEAR(S, expected, 1e-5 * std::max(1.0, std::fabs(expected))) << g.upstream[u] << " -> " << g.downstream[v];
      ++checked;
    }
  EXPECT_GT(checked, 20);
}

TEST(CircuitExact, AgreesWithEapToFirstOrderOnANearLinearModelAllFamilies) {
  for (Family f : kFamilies) {
    model::Model m = model::random_model(tiny_config(f), 31, at::kDouble);
    scale_layers(m, 0.1, 0.1);  // small layer outputs: every block acts almost linearly
    eap::GraphOptions go;
    go.logits_node = true;
    const eap::Graph g = eap::make_graph(m.config.n_layers, m.config.n_heads, go);
    const Batch b = make_batch(4, 8, 32);
    eap::ScoreOptions so;
    const eap::BatchScores first_order = eap::score_batch(m, g, b.in, so);
    so.method = eap::Method::Exact;
    const eap::BatchScores exact = eap::score_batch(m, g, b.in, so);
    EXPECT_EQ(exact.clean_ld, first_order.clean_ld);
    // Sign convention: exact S = M(all) - M(all but e) ~ the first-order restore effect.
    std::vector<std::pair<double, int>> ranked;
    for (size_t i = 0; i < first_order.scores.size(); ++i) ranked.push_back({-std::fabs(first_order.scores[i]), int(i)});
    std::sort(ranked.begin(), ranked.end());
    for (int k = 0; k < 20; ++k) {
      const int i = ranked[k].second;
      EXPECT_NEAR(exact.scores[i], first_order.scores[i], 0.05 * std::fabs(first_order.scores[i]))
          << model::family_name(f) << " " << g.upstream[i / g.n_downstream()] << " -> " << g.downstream[i % g.n_downstream()];
    }
  }
}

}  // namespace
