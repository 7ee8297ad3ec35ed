// EAP scores against an independent float64 reference with per-head residual copies
// (reference_forward.hpp): directional derivatives, edge patching, sum rules, grouped-query sums,
// batch-size invariance, downstream_heads = none, exact zeros off the graph, accuracy.
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <random>
#include <set>
#include <string>
#include <unistd.h>

#include "eap/graph.hpp"
#include "eap/micro_batch.hpp"
#include "eap/score.hpp"
#include "model/config.hpp"
#include "model/make.hpp"
#include "model/model.hpp"
#include "reference_forward.hpp"
#include "tiny_models.hpp"
#include "util/error.hpp"

namespace {

using namespace teap;
using eap_test::Deltas;
using eap_test::Node;
using eap_test::Port;
using eap_test::RefRun;
using eap_test::reference_forward;
using model::Family;

using eap_test::Batch;
using eap_test::downstream_node;
using eap_test::kVocab;
using eap_test::make_batch;
using eap_test::make_model;
using eap_test::scale_layers;
using eap_test::tiny_config;
using eap_test::upstream_act;

// The clean-minus-corrupt difference of the residual stream that node v reads (biases cancel).
at::Tensor stream_diff(const eap::Graph& g, const RefRun& c, const RefRun& r, int v) {
  const Node n = downstream_node(g, v);
  if (n.port == Port::Logits) return c.resid_final - r.resid_final;
  at::Tensor d = c.resid_pre[n.layer] - r.resid_pre[n.layer];
  if (n.port == Port::Mlp)
    for (int h = 0; h < g.n_heads; ++h) d = d + (c.head[n.layer][h] - r.head[n.layer][h]);
  return d;
}

double score(const eap::BatchScores& s, int u, int v) { return s.scores[size_t(u) * s.n_downstream + v]; }

double max_abs_score(const eap::BatchScores& s) {
  double m = 0;
  for (float x : s.scores) m = std::max(m, double(std::fabs(x)));
  return m;
}

std::string edge_name(const eap::Graph& g, int u, int v) { return g.upstream[u] + " -> " + g.downstream[v]; }

// The notebook's metric on a reference run: mean over prompts i and broadcast pairs j of
// L_i[clean_j] - L_i[corrupt_j] at the last position.
double ref_notebook_mean_ld(const RefRun& r, const eap::MetricPairs& pairs) {
  const at::Tensor last = r.logits.select(1, r.logits.size(1) - 1);  // [B,V]
  double s = 0;
  for (size_t j = 0; j < pairs.clean.size(); ++j)
    s += (last.select(1, pairs.clean[j]) - last.select(1, pairs.corrupt[j])).mean().item<double>();
  return s / pairs.clean.size();
}

// Everything one batch needs: the model's scores and the reference's clean and corrupt runs.
struct Fixture {
  model::Model m;
  eap::Graph g;
  Batch b;
  bool broadcast = false;
  eap::MetricPairing pairing;
  eap::MetricPairs pairs;  // notebook pairing: the broadcast pairs
  eap::BatchScores s;
  RefRun clean, corrupt;
  double M0 = 0;

  Fixture(model::Model model, eap::GraphOptions go, Batch batch, eap::MetricPairing pairing_ = eap::MetricPairing::Own,
          eap::MetricPairs pairs_ = {})
      : m(std::move(model)), b(std::move(batch)), pairing(pairing_), pairs(std::move(pairs_)) {
    g = eap::make_graph(m.config.n_layers, m.config.n_heads, go);
    broadcast = pairing == eap::MetricPairing::BatchBroadcast;
    eap::ScoreOptions so;
    so.pairing = pairing;
    so.broadcast = pairs;
    s = eap::score_batch(m, g, b.in, so);
    clean = reference_forward(m, b.clean);
    corrupt = reference_forward(m, b.corrupt);
    M0 = mean_ld(clean);
  }
  double mean_ld(const RefRun& r) const {
    if (pairing == eap::MetricPairing::Notebook) return ref_notebook_mean_ld(r, pairs);
    return eap_test::ref_mean_ld(r, b.in.clean_answer, b.in.corrupt_answer, broadcast);
  }
  // M on the clean prompts with `dir` added to every node of `nodes`.
  double perturbed(const std::vector<Node>& nodes, const at::Tensor& dir) const {
    Deltas ds;
    for (const Node& n : nodes) ds[n] = dir;
    return mean_ld(reference_forward(m, b.clean, ds));
  }
  at::Tensor diff_up(int u) const { return upstream_act(g, clean, u) - upstream_act(g, corrupt, u); }
  // Central difference of M along `dir` at `nodes`: O(eps^2).
  double central(const std::vector<Node>& nodes, const at::Tensor& dir, double eps = 1e-4) const {
    return (perturbed(nodes, eps * dir) - perturbed(nodes, -eps * dir)) / (2 * eps);
  }
};

// --- The reference itself ---------------------------------------------------------------------

TEST(EapReference, MatchesModelForwardAllFamilies) {
  for (Family f : {Family::GptNeo, Family::Qwen2, Family::Llama}) {
    const model::Model m = make_model(f);
    const Batch b = make_batch(4, 8, 11);
    const at::Tensor mine = model::full_logits(m, model::forward(m, b.clean));
    const RefRun r = reference_forward(m, b.clean);
    const double err = (mine.to(at::kDouble) - r.logits).abs().max().item<double>();
    EXPECT_LT(err, 1e-10) << model::family_name(f);
    EXPECT_GT(r.logits.abs().max().item<double>(), 1e-3) << "logits too small to mean anything";
    // The residual stream is the embedding plus every head and MLP output plus the output biases.
    at::Tensor sum = r.embed.clone();
    for (int l = 0; l < m.config.n_layers; ++l) {
      for (const auto& h : r.head[l]) sum = sum + h;
      sum = sum + r.mlp[l];
      if (m.weights.layers[l].b_o.defined()) sum = sum + m.weights.layers[l].b_o;
    }
    EXPECT_LT((sum - r.resid_final).abs().max().item<double>(), 1e-12) << model::family_name(f);
  }
}

TEST(EapReference, LocalWindowMatters) {
  // The local layer must differ from a global one for these prompts.
  model::Model m = make_model(Family::GptNeo);
  const Batch b = make_batch(3, 8, 5);
  const RefRun local = reference_forward(m, b.clean);
  m.config.local_layer = {false, false, false};
  const RefRun global = reference_forward(m, b.clean);
  EXPECT_GT((local.logits - global.logits).abs().max().item<double>(), 1e-6);
}

TEST(EapScores, LogitDiffsMatchReference) {
  for (Family f : {Family::GptNeo, Family::Qwen2, Family::Llama})
    for (auto pairing : {eap::MetricPairing::Own, eap::MetricPairing::BatchBroadcast}) {
      const Fixture fx(make_model(f), {}, make_batch(4, 7, 3), pairing);
      const bool bc = pairing == eap::MetricPairing::BatchBroadcast;
      const auto c = eap_test::ref_logit_diffs(fx.clean, fx.b.in.clean_answer, fx.b.in.corrupt_answer, bc);
      const auto r = eap_test::ref_logit_diffs(fx.corrupt, fx.b.in.clean_answer, fx.b.in.corrupt_answer, bc);
      ASSERT_EQ(fx.s.clean_ld.size(), c.size());
      for (size_t i = 0; i < c.size(); ++i) {
        EXPECT_NEAR(fx.s.clean_ld[i], c[i], 1e-10) << model::family_name(f);
        EXPECT_NEAR(fx.s.corrupt_ld[i], r[i], 1e-10) << model::family_name(f);
      }
      const auto inf = eap::logit_diffs(fx.m, fx.b.in.clean_ids, 4, 7, fx.b.in.clean_answer, fx.b.in.corrupt_answer, pairing);
      for (size_t i = 0; i < c.size(); ++i) EXPECT_NEAR(inf[i], c[i], 1e-10);
    }
}

// --- Directional derivatives ------------------------------------------------------------------

// Category of an edge, for sampling a few of each kind.
std::string category(const eap::Graph& g, int u, int v) {
  const Node n = downstream_node(g, v);
  std::string up = u == g.input_up() ? "input" : (u % (g.n_heads + 1) == g.n_heads ? "mlp" : "head");
  const int ul = u == g.input_up() ? -1 : u / (g.n_heads + 1);
  std::string down = n.port == Port::Q ? "q" : n.port == Port::K ? "k" : n.port == Port::V ? "v"
                   : n.port == Port::Mlp ? "mlp" : "logits";
  std::string rel = n.port == Port::Logits || ul < 0 ? "" : ul == n.layer ? " same layer" : " later layer";
  return up + "->" + down + rel;
}

// For every category: the edge of largest |S| and one random edge.
std::vector<std::pair<int, int>> sample_edges(const Fixture& fx, uint64_t seed) {
  std::map<std::string, std::vector<std::pair<int, int>>> by;
  for (int u = 0; u < fx.g.n_upstream(); ++u)
    for (int v = 0; v < fx.g.n_downstream(); ++v)
      if (fx.g.is_edge(u, v)) by[category(fx.g, u, v)].push_back({u, v});
  std::mt19937_64 rng(seed);
  std::vector<std::pair<int, int>> out;
  for (auto& [cat, edges] : by) {
    auto best = *std::max_element(edges.begin(), edges.end(), [&](auto a, auto b) {
      return std::fabs(score(fx.s, a.first, a.second)) < std::fabs(score(fx.s, b.first, b.second));
    });
    out.push_back(best);
    auto other = edges[std::uniform_int_distribution<size_t>(0, edges.size() - 1)(rng)];
    if (other != best) out.push_back(other);
  }
  return out;
}

// (M(eps) - M(0)) / eps with edge (u,v) moved by -eps * (a_u_clean - a_u_corrupt) is -S + O(eps).
void check_directional(const Fixture& fx, const std::vector<std::pair<int, int>>& edges, const std::string& label) {
  const double smax = max_abs_score(fx.s);
  ASSERT_GT(smax, 1e-6) << label << ": scores too small to test";
  std::set<std::string> categories;
  for (auto [u, v] : edges) {
    categories.insert(category(fx.g, u, v));
    const double S = score(fx.s, u, v);
    const at::Tensor diff = fx.diff_up(u);
    const Node n = downstream_node(fx.g, v);
    double err[2];
    const double eps[2] = {1e-3, 1e-4};
    for (int k = 0; k < 2; ++k) {
      const double fd = (fx.perturbed({n}, -eps[k] * diff) - fx.M0) / eps[k];
      err[k] = std::fabs(fd + S);
    }
    char nums[120];
    std::snprintf(nums, sizeof nums, " S=%.4e err(1e-3)=%.3e err(1e-4)=%.3e", S, err[0], err[1]);
    const std::string what = label + " " + edge_name(fx.g, u, v) + nums;
    if (std::getenv("TEAP_EAP_VERBOSE")) std::printf("%s\n", what.c_str());
    // First order: within 3% at eps = 1e-3 (plus a floor far below the batch's scale; the input
    // node's difference is a whole token's embedding, so its second-order term is the largest) ...
    EXPECT_LT(err[0], 3e-2 * std::fabs(S) + 1e-5 * smax) << what;
    // ... and the discrepancy shrinks like eps (a tenth, up to float storage of S).
    EXPECT_LT(err[1], 0.2 * err[0] + 1e-6 * std::fabs(S) + 1e-12) << what;
  }
  EXPECT_GE(categories.size(), 8u) << label;
}

eap::GraphOptions with_io() {
  eap::GraphOptions go;
  go.input_node = true;
  go.logits_node = true;
  return go;
}

TEST(EapDirectional, GptNeoWithLocalLayer) {
  const Fixture fx(make_model(Family::GptNeo), with_io(), make_batch(4, 8, 21));
  check_directional(fx, sample_edges(fx, 1), "gpt_neo");
}

TEST(EapDirectional, Qwen2GroupedQueryWithBiases) {
  const Fixture fx(make_model(Family::Qwen2), with_io(), make_batch(3, 9, 22));
  check_directional(fx, sample_edges(fx, 2), "qwen2");
}

TEST(EapDirectional, LlamaWithRopeScaling) {
  const Fixture fx(make_model(Family::Llama), with_io(), make_batch(5, 6, 23));
  check_directional(fx, sample_edges(fx, 3), "llama");
}

TEST(EapDirectional, BatchBroadcastPairing) {
  const Fixture fx(make_model(Family::Qwen2, 9), with_io(), make_batch(4, 7, 24), eap::MetricPairing::BatchBroadcast);
  check_directional(fx, sample_edges(fx, 4), "qwen2 batch_broadcast");
}

// metric_pairing = notebook: the gradient is that of the broadcast over another batch's pairs
// (here 5 pairs for a batch of 4, as the cell's last batch would give), every edge kind.
TEST(EapDirectional, NotebookPairingAgainstAnotherBatchsPairs) {
  const Batch last = make_batch(5, 8, 26);
  const eap::MetricPairs pairs{last.in.clean_answer, last.in.corrupt_answer};
  const Fixture fx(make_model(Family::GptNeo, 3), with_io(), make_batch(4, 8, 25), eap::MetricPairing::Notebook, pairs);
  check_directional(fx, sample_edges(fx, 5), "gpt_neo notebook");
  // What it records is own-paired (the notebook's baselines), not the broadcast it differentiates.
  const auto own_c = eap_test::ref_logit_diffs(fx.clean, fx.b.in.clean_answer, fx.b.in.corrupt_answer, false);
  const auto own_r = eap_test::ref_logit_diffs(fx.corrupt, fx.b.in.clean_answer, fx.b.in.corrupt_answer, false);
  ASSERT_EQ(fx.s.clean_ld.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_NEAR(fx.s.clean_ld[i], own_c[i], 1e-10);
    EXPECT_NEAR(fx.s.corrupt_ld[i], own_r[i], 1e-10);
  }
  EXPECT_GT(std::fabs(ref_notebook_mean_ld(fx.clean, pairs) - eap_test::ref_mean_ld(fx.clean, fx.b.in.clean_answer,
                                                                                      fx.b.in.corrupt_answer, false)),
            1e-6)
      << "the broadcast must differ from the own pairing, or this test could not tell them apart";
}

TEST(EapDirectional, InputAndLogitsNodesDoNotChangeOtherScores) {
  const model::Model m = make_model(Family::Llama);
  const Batch b = make_batch(3, 7, 25);
  const Fixture with(m, with_io(), b), plain(m, {}, b);
  for (int u = 0; u < plain.g.n_upstream(); ++u)
    for (int v = 0; v < plain.g.n_downstream(); ++v)
      EXPECT_EQ(score(plain.s, u, v), score(with.s, u, v)) << edge_name(plain.g, u, v);
}

// --- Edge patching on a near-linear model -----------------------------------------------------

TEST(EapPatching, RestoringOneEdgeMovesTheMetricByMinusS) {
  for (Family f : {Family::GptNeo, Family::Qwen2, Family::Llama}) {
    model::Model m = model::random_model(tiny_config(f), 31, at::kDouble);
      scale_layers(m, 0.1, 0.1);  // small layer outputs: every block acts almost linearly
    const Fixture fx(std::move(m), with_io(), make_batch(4, 8, 32));
    // Per kind of destination (q, k, v, mlp, logits), the 3 edges of largest |S|, where first order
    // must dominate. Not from the input node: its difference is a whole token's embedding, which no
    // weight scaling makes small.
    std::map<Port, std::vector<std::pair<double, std::pair<int, int>>>> ranked;
    for (int u = 0; u < fx.g.n_upstream(); ++u)
      for (int v = 0; v < fx.g.n_downstream(); ++v)
        if (u != fx.g.input_up() && fx.g.is_edge(u, v))
          ranked[downstream_node(fx.g, v).port].push_back({-std::fabs(score(fx.s, u, v)), {u, v}});
    ASSERT_EQ(ranked.size(), 5u);
    for (auto& [port, edges] : ranked) {
      std::sort(edges.begin(), edges.end());
      for (int i = 0; i < 3; ++i) {
        auto [u, v] = edges[i].second;
        const double S = score(fx.s, u, v);
        const double dM = fx.perturbed({downstream_node(fx.g, v)}, -fx.diff_up(u)) - fx.M0;
        if (std::getenv("TEAP_EAP_VERBOSE"))
          std::printf("%s %s S=%.4e dM=%.4e\n", model::family_name(f).c_str(), edge_name(fx.g, u, v).c_str(), S, dM);
        EXPECT_GT(std::fabs(S), 0.0);
        EXPECT_LT(std::fabs(dM + S), 0.05 * std::fabs(S))
            << model::family_name(f) << " " << edge_name(fx.g, u, v) << " S=" << S << " dM=" << dM;
      }
    }
  }
}

// --- Sum rules --------------------------------------------------------------------------------

// sum_u S[u, logits] = (resid_clean - resid_corrupt) . dM/d(resid_final), and likewise at every
// downstream node: the upstream differences feeding a node add up to its stream's difference.
TEST(EapSumRule, EveryDownstreamNodeAllFamilies) {
  for (Family f : {Family::GptNeo, Family::Qwen2, Family::Llama}) {
    const Fixture fx(make_model(f), with_io(), make_batch(3, 8, 41));
    const double smax = max_abs_score(fx.s);
    for (int v = 0; v < fx.g.n_downstream(); ++v) {
      double sum = 0, abs_sum = 0;
      for (int u = 0; u < fx.g.n_upstream(); ++u)
        if (fx.g.is_edge(u, v)) {
          sum += score(fx.s, u, v);
          abs_sum += std::fabs(score(fx.s, u, v));
        }
      const double rhs = fx.central({downstream_node(fx.g, v)}, stream_diff(fx.g, fx.clean, fx.corrupt, v));
      EXPECT_NEAR(sum, rhs, 1e-6 * abs_sum + 1e-7 * smax + 1e-12)
          << model::family_name(f) << " " << fx.g.downstream[v];
    }
    // The logits column of the sum rule, stated as the spec states it.
    const int lv = fx.g.logits_down();
    double sum = 0;
    for (int u = 0; u < fx.g.n_upstream(); ++u) sum += score(fx.s, u, lv);
    const double rhs = fx.central({{Port::Logits, 0, 0}}, fx.clean.resid_final - fx.corrupt.resid_final);
    EXPECT_NEAR(sum, rhs, 1e-6 * std::fabs(rhs) + 1e-12) << model::family_name(f);
    EXPECT_GT(std::fabs(rhs), 1e-6) << model::family_name(f);
  }
}

// --- Grouped-query attention ------------------------------------------------------------------

TEST(EapGroupedQuery, PerHeadKVGradientsSumToTheSharedOne) {
  const Fixture fx(make_model(Family::Qwen2), with_io(), make_batch(4, 8, 51));
  const int H = fx.m.config.n_heads, group = H / fx.m.config.n_kv_heads;
  ASSERT_EQ(group, 2);
  for (int l = 1; l < fx.g.n_layers; ++l)
    for (int kv = 0; kv < fx.m.config.n_kv_heads; ++kv)
      for (Port port : {Port::K, Port::V})
        for (int u : {fx.g.head_up(l - 1, kv), fx.g.mlp_up(0), fx.g.input_up()}) {
          double sum = 0, abs_sum = 0;
          std::vector<Node> shared;
          for (int h = kv * group; h < (kv + 1) * group; ++h) {
            const double s = score(fx.s, u, port == Port::K ? fx.g.k_down(l, h) : fx.g.v_down(l, h));
            sum += s;
            abs_sum += std::fabs(s);  // scores are stored in float: each carries a rounding of 2^-24
            shared.push_back({port, l, h});  // the same delta on every copy = the shared projection's input
          }
          const double rhs = fx.central(shared, fx.diff_up(u));
          EXPECT_NEAR(sum, rhs, 1e-6 * (std::fabs(rhs) + abs_sum) + 1e-12)
              << fx.g.upstream[u] << " -> layer " << l << " kv head " << kv << (port == Port::K ? " K" : " V");
          EXPECT_GT(std::fabs(rhs), 0.0);
        }
}

// --- Invariance ---------------------------------------------------------------------------------

Batch slice(const Batch& b, int from, int n) {
  Batch s;
  const int P = b.in.n_positions;
  s.in.n_prompts = n;
  s.in.n_positions = P;
  auto cut = [&](const std::vector<int64_t>& v, int per) {
    return std::vector<int64_t>(v.begin() + size_t(from) * per, v.begin() + size_t(from + n) * per);
  };
  s.in.clean_ids = cut(b.in.clean_ids, P);
  s.in.corrupt_ids = cut(b.in.corrupt_ids, P);
  s.in.clean_answer = cut(b.in.clean_answer, 1);
  s.in.corrupt_answer = cut(b.in.corrupt_answer, 1);
  return s;
}

TEST(EapInvariance, BatchesOf1And7And30GiveTheSamePerPromptContributions) {
  const model::Model m = make_model(Family::GptNeo);
  const Batch all = make_batch(30, 8, 61);
  const eap::Graph g = eap::make_graph(m.config.n_layers, m.config.n_heads, with_io());
  struct Split {
    std::vector<double> total, abs_total, clean_ld, corrupt_ld;
  };
  auto run = [&](int size) {
    Split s;
    s.total.assign(size_t(g.n_upstream()) * g.n_downstream(), 0.0);
    s.abs_total = s.total;
    for (int from = 0; from < 30; from += size) {
      const int n = std::min(size, 30 - from);
      const eap::BatchScores bs = eap::score_batch(m, g, slice(all, from, n).in);
      for (size_t e = 0; e < s.total.size(); ++e) {
        s.total[e] += n * double(bs.scores[e]);  // S_b is a mean over the batch's prompts
        s.abs_total[e] += n * std::fabs(double(bs.scores[e]));
      }
      s.clean_ld.insert(s.clean_ld.end(), bs.clean_ld.begin(), bs.clean_ld.end());
      s.corrupt_ld.insert(s.corrupt_ld.end(), bs.corrupt_ld.begin(), bs.corrupt_ld.end());
    }
    return s;
  };
  const Split one = run(1), seven = run(7), thirty = run(30);
  double scale = 0;
  for (double x : thirty.abs_total) scale = std::max(scale, x);
  ASSERT_GT(scale, 1e-6);
  for (const Split* s : {&one, &seven}) {
    for (size_t e = 0; e < s->total.size(); ++e) {
      // BatchScores stores float: each batch's entry carries a relative rounding of 2^-24.
      const double tol = 2e-7 * (s->abs_total[e] + thirty.abs_total[e]) + 1e-12 * scale;
      EXPECT_NEAR(s->total[e], thirty.total[e], tol) << edge_name(g, int(e / g.n_downstream()), int(e % g.n_downstream()));
    }
    for (int i = 0; i < 30; ++i) {
      EXPECT_NEAR(s->clean_ld[i], thirty.clean_ld[i], 1e-12);
      EXPECT_NEAR(s->corrupt_ld[i], thirty.corrupt_ld[i], 1e-12);
    }
  }
}

// --- Options and the graph ----------------------------------------------------------------------

TEST(EapOptions, DownstreamHeadsNoneIsTheMlpColumnsOfQkv) {
  for (Family f : {Family::GptNeo, Family::Qwen2}) {
    const model::Model m = make_model(f);
    const Batch b = make_batch(4, 7, 71);
    eap::GraphOptions none;
    none.downstream_heads = eap::DownstreamHeads::None;
    const Fixture qkv(m, {}, b), mlp_only(m, none, b);
    ASSERT_EQ(mlp_only.g.n_downstream(), m.config.n_layers);
    for (int u = 0; u < qkv.g.n_upstream(); ++u)
      for (int l = 0; l < m.config.n_layers; ++l)
        EXPECT_EQ(score(mlp_only.s, u, mlp_only.g.mlp_down(l)), score(qkv.s, u, qkv.g.mlp_down(l)))
            << model::family_name(f) << " " << qkv.g.upstream[u] << " -> mlp." << l;
    EXPECT_EQ(mlp_only.s.clean_ld, qkv.s.clean_ld);
  }
}

// Scored against its own pairs (a cell of one batch: the batch is the last one), notebook is
// batch_broadcast's gradient with own-paired records; against another batch's pairs it differs.
TEST(EapOptions, NotebookPairingOnItsOwnPairsIsBatchBroadcast) {
  const model::Model m = make_model(Family::Qwen2);
  const Batch b = make_batch(4, 7, 77);
  const eap::MetricPairs own{b.in.clean_answer, b.in.corrupt_answer};
  const Fixture nb(m, {}, b, eap::MetricPairing::Notebook, own), bb(m, {}, b, eap::MetricPairing::BatchBroadcast),
      ow(m, {}, b);
  const double smax = max_abs_score(bb.s);
  ASSERT_GT(smax, 1e-6);
  for (size_t e = 0; e < bb.s.scores.size(); ++e) EXPECT_NEAR(nb.s.scores[e], bb.s.scores[e], 1e-6 * smax);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_DOUBLE_EQ(nb.s.clean_ld[i], ow.s.clean_ld[i]);
    EXPECT_DOUBLE_EQ(nb.s.corrupt_ld[i], ow.s.corrupt_ld[i]);
  }
  const Batch other = make_batch(4, 7, 78);
  const Fixture nb2(m, {}, b, eap::MetricPairing::Notebook, {other.in.clean_answer, other.in.corrupt_answer});
  double moved = 0;
  for (size_t e = 0; e < bb.s.scores.size(); ++e) moved = std::max(moved, double(std::fabs(nb2.s.scores[e] - bb.s.scores[e])));
  EXPECT_GT(moved, 1e-3 * smax);
}

TEST(EapOptions, NotebookPairingWithoutPairsIsAnInputError) {
  const model::Model m = make_model(Family::GptNeo);
  const Batch b = make_batch(2, 5, 79);
  const eap::Graph g = eap::make_graph(m.config.n_layers, m.config.n_heads);
  eap::ScoreOptions so;
  so.pairing = eap::MetricPairing::Notebook;
  EXPECT_THROW(eap::score_batch(m, g, b.in, so), InputError);
  so.broadcast = {{1, 2}, {3}};
  EXPECT_THROW(eap::score_batch(m, g, b.in, so), InputError);
  so.broadcast = {{1, kVocab}, {3, 4}};
  EXPECT_THROW(eap::score_batch(m, g, b.in, so), InputError);
  // The same through micro-batches, which run the batch's shared prefix and corrupt run first.
  EXPECT_THROW(eap::score_in_micro_batches(m, g, b.in, so, 1), InputError);
  so.broadcast = {{-1, 2}, {3, 4}};
  EXPECT_THROW(eap::score_in_micro_batches(m, g, b.in, so, 1), InputError);
  so.broadcast = {{1, 2}, {3, 4}};
  EXPECT_NO_THROW(eap::score_batch(m, g, b.in, so));
  EXPECT_NO_THROW(eap::score_in_micro_batches(m, g, b.in, so, 1));
}

// The same weights run in float32 and float64 give the same scores to float32 accuracy.
TEST(EapOptions, Float32AgreesWithFloat64) {
  for (Family f : {Family::GptNeo, Family::Qwen2, Family::Llama}) {
    const model::Model m64 = make_model(f);
    model::Model m32 = m64;
    m32.dtype = at::kFloat;
    auto& w = m32.weights;
    for (at::Tensor* t : {&w.wte, &w.wpe, &w.ln_f_w, &w.ln_f_b})
      if (t->defined()) *t = t->to(at::kFloat);
    w.lm_head = m64.weights.lm_head.is_same(m64.weights.wte) ? w.wte : w.lm_head.to(at::kFloat);
    for (auto& l : w.layers)
      for (at::Tensor* t : {&l.ln1_w, &l.ln1_b, &l.w_q, &l.w_k, &l.w_v, &l.b_q, &l.b_k, &l.b_v, &l.w_o, &l.b_o,
                            &l.ln2_w, &l.ln2_b, &l.w_fc, &l.b_fc, &l.w_proj, &l.b_proj, &l.w_gate, &l.w_up, &l.w_down})
        if (t->defined()) *t = t->to(at::kFloat);
    const Batch b = make_batch(4, 8, 75);
    const eap::Graph g = eap::make_graph(m64.config.n_layers, m64.config.n_heads, with_io());
    const eap::BatchScores s64 = eap::score_batch(m64, g, b.in), s32 = eap::score_batch(m32, g, b.in);
    const double smax = max_abs_score(s64);
    for (size_t e = 0; e < s64.scores.size(); ++e)
      EXPECT_NEAR(s32.scores[e], s64.scores[e], 1e-4 * smax + 1e-3 * std::fabs(s64.scores[e]))
          << model::family_name(f) << " " << edge_name(g, int(e / g.n_downstream()), int(e % g.n_downstream()));
    for (int i = 0; i < 4; ++i) EXPECT_NEAR(s32.clean_ld[i], s64.clean_ld[i], 1e-5);
  }
}

// Intra-op threads split the long contraction products (score.cpp's long_product); the scores
// must not depend on it beyond rounding.
TEST(EapOptions, ThreadCountDoesNotChangeScores) {
  const int before = at::get_num_threads();
  for (Family f : {Family::GptNeo, Family::Llama}) {
    const model::Model m = make_model(f);
    const Batch b = make_batch(64, 9, 81);  // B*P*d_model past the split threshold (2 x 4096)
    const eap::Graph g = eap::make_graph(m.config.n_layers, m.config.n_heads, with_io());
    at::set_num_threads(1);
    const eap::BatchScores one = eap::score_batch(m, g, b.in);
    at::set_num_threads(2);
    const eap::BatchScores two = eap::score_batch(m, g, b.in);
    const double smax = max_abs_score(one);
    for (size_t e = 0; e < one.scores.size(); ++e) EXPECT_NEAR(one.scores[e], two.scores[e], 1e-6 * smax);
  }
  at::set_num_threads(before);
}

TEST(EapOptions, ScoresAreExactlyZeroOffTheGraph) {
  for (Family f : {Family::GptNeo, Family::Qwen2, Family::Llama})
    for (eap::GraphOptions go : {eap::GraphOptions{}, with_io(),
                                 eap::GraphOptions{eap::DownstreamHeads::None, true, false}}) {
      const Fixture fx(make_model(f), go, make_batch(3, 6, 81));
      ASSERT_EQ(fx.s.scores.size(), size_t(fx.g.n_upstream()) * fx.g.n_downstream());
      int nonzero = 0;
      for (int u = 0; u < fx.g.n_upstream(); ++u)
        for (int v = 0; v < fx.g.n_downstream(); ++v) {
          if (!fx.g.is_edge(u, v)) EXPECT_EQ(score(fx.s, u, v), 0.0) << edge_name(fx.g, u, v);
          else nonzero += score(fx.s, u, v) != 0.0;
          EXPECT_TRUE(std::isfinite(score(fx.s, u, v)));
        }
      EXPECT_GT(nonzero, fx.g.n_edges() / 2) << model::family_name(f);
    }
}

// --- Accuracy -----------------------------------------------------------------------------------

TEST(EapAccuracy, CleanCorrectCountsTheReferenceArgmax) {
  for (Family f : {Family::GptNeo, Family::Llama}) {
    const model::Model m = make_model(f);
    Batch b = make_batch(5, 7, 91);
    const RefRun r = reference_forward(m, b.clean);
    const at::Tensor top = r.logits.select(1, 6).argmax(-1);  // [B]
    // Half of the prompts expect the model's own top token, the rest something else.
    b.in.expected.clear();
    for (int i = 0; i < 5; ++i) {
      const int64_t t = top[i].item<int64_t>();
      b.in.expected.push_back(i % 2 == 0 ? t : (t + 1) % kVocab);
    }
    int want = 0;
    for (int i = 0; i < 5; ++i) want += top[i].item<int64_t>() == b.in.expected[i];
    const eap::Graph g = eap::make_graph(m.config.n_layers, m.config.n_heads);
    const eap::BatchScores s = eap::score_batch(m, g, b.in);
    EXPECT_EQ(want, 3);
    EXPECT_EQ(s.clean_correct, want) << model::family_name(f);
    EXPECT_DOUBLE_EQ(s.clean_accuracy(), want / 5.0);
    // Without `expected`, the clean answer token is what counts.
    b.in.expected.clear();
    for (int i = 0; i < 5; ++i)
      if (i < 2) {
        b.in.clean_answer[i] = top[i].item<int64_t>();
        if (b.in.corrupt_answer[i] == b.in.clean_answer[i]) b.in.corrupt_answer[i] = (b.in.clean_answer[i] + 1) % kVocab;
      }
    int want2 = 0;
    for (int i = 0; i < 5; ++i) want2 += top[i].item<int64_t>() == b.in.clean_answer[i];
    EXPECT_EQ(eap::score_batch(m, g, b.in).clean_correct, want2) << model::family_name(f);
  }
}

// A random qwen2/llama model has its rotary frequencies without a save/load round trip.
TEST(EapModelSetup, RandomModelCanRunQwen2Forward) {
  const model::Model m = model::random_model(tiny_config(Family::Qwen2), 1, at::kDouble);
  EXPECT_TRUE(m.weights.rope_inv_freq.defined());
  EXPECT_NO_THROW(model::forward(m, make_batch(2, 4, 1).clean));
}

}  // namespace
