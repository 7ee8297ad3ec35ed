// The attribution graph, ranking and the cell reducer: plain C++, no model.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <set>
#include <string>

#include "eap/graph.hpp"
#include "eap/metric.hpp"
#include "eap/topn.hpp"
#include "runner/unit.hpp"
#include "util/error.hpp"

namespace {

using namespace teap;

// --- Graph ----------------------------------------------------------------------------------------

TEST(EapGraph, Bm1Shape) {
  const eap::Graph g = eap::make_graph(2, 16);
  EXPECT_EQ(g.n_upstream(), 34);
  EXPECT_EQ(g.n_downstream(), 98);
  EXPECT_EQ(g.n_edges(), 865);
  eap::GraphOptions none;
  none.downstream_heads = eap::DownstreamHeads::None;
  const eap::Graph n = eap::make_graph(2, 16, none);
  EXPECT_EQ(n.n_upstream(), 34);
  EXPECT_EQ(n.n_downstream(), 2);
  EXPECT_EQ(n.n_edges(), 49);
  // Optional nodes: input feeds all 98, every one of the 35 upstream nodes feeds logits.
  eap::GraphOptions io;
  io.input_node = io.logits_node = true;
  const eap::Graph x = eap::make_graph(2, 16, io);
  EXPECT_EQ(x.n_upstream(), 35);
  EXPECT_EQ(x.n_downstream(), 99);
  EXPECT_EQ(x.n_edges(), 865 + 98 + 35);
}

TEST(EapGraph, NamesAndIndexRules) {
  const int L = 3, H = 5;
  eap::GraphOptions io;
  io.input_node = io.logits_node = true;
  const eap::Graph g = eap::make_graph(L, H, io);
  for (int l = 0; l < L; ++l) {
    for (int h = 0; h < H; ++h) {
      const std::string p = "head." + std::to_string(l) + "." + std::to_string(h);
      EXPECT_EQ(g.head_up(l, h), l * (H + 1) + h);
      EXPECT_EQ(g.upstream[g.head_up(l, h)], p);
      const int base = l * (3 * H + 1);
      EXPECT_EQ(g.q_down(l, h), base + h);
      EXPECT_EQ(g.k_down(l, h), base + H + h);
      EXPECT_EQ(g.v_down(l, h), base + 2 * H + h);
      EXPECT_EQ(g.downstream[g.q_down(l, h)], p + ".q");
      EXPECT_EQ(g.downstream[g.k_down(l, h)], p + ".k");
      EXPECT_EQ(g.downstream[g.v_down(l, h)], p + ".v");
    }
    EXPECT_EQ(g.mlp_up(l), l * (H + 1) + H);
    EXPECT_EQ(g.upstream[g.mlp_up(l)], "mlp." + std::to_string(l));
    EXPECT_EQ(g.mlp_down(l), l * (3 * H + 1) + 3 * H);
    EXPECT_EQ(g.downstream[g.mlp_down(l)], "mlp." + std::to_string(l));
  }
  EXPECT_EQ(g.input_up(), L * (H + 1));
  EXPECT_EQ(g.upstream.back(), "input");
  EXPECT_EQ(g.logits_down(), L * (3 * H + 1));
  EXPECT_EQ(g.downstream.back(), "logits");

  // Validity, from the rules of the spec.
  for (int u = 0; u < g.n_upstream(); ++u)
    for (int v = 0; v < g.n_downstream(); ++v) {
      bool want;
      if (u == g.input_up() || v == g.logits_down()) {
        want = true;
      } else {
        const int a = u / (H + 1);
        const bool head = u % (H + 1) < H;
        const int b = v / (3 * H + 1);
        const bool mlp = v % (3 * H + 1) == 3 * H;
        want = a < b || (a == b && head && mlp);
      }
      EXPECT_EQ(g.is_edge(u, v), want) << g.upstream[u] << " -> " << g.downstream[v];
    }
  EXPECT_FALSE(g.is_edge(g.mlp_up(1), g.mlp_down(1)));
  EXPECT_TRUE(g.is_edge(g.head_up(1, 2), g.mlp_down(1)));
  EXPECT_FALSE(g.is_edge(g.head_up(1, 2), g.q_down(1, 0)));

  eap::GraphOptions none;
  none.downstream_heads = eap::DownstreamHeads::None;
  const eap::Graph n = eap::make_graph(L, H, none);
  EXPECT_EQ(n.q_down(0, 0), -1);
  EXPECT_EQ(n.mlp_down(2), 2);
  EXPECT_EQ(n.input_up(), -1);
  EXPECT_EQ(n.logits_down(), -1);
  EXPECT_EQ(n.downstream, (std::vector<std::string>{"mlp.0", "mlp.1", "mlp.2"}));
}

TEST(EapGraph, DisplayNamesAndParsing) {
  EXPECT_EQ(eap::display_name("head.1.3.q"), "l1.h3.q");
  EXPECT_EQ(eap::display_name("head.0.11"), "l0.h11");
  EXPECT_EQ(eap::display_name("head.12.15.v"), "l12.h15.v");
  EXPECT_EQ(eap::display_name("mlp.0"), "l0.mlp");
  EXPECT_EQ(eap::display_name("mlp.10"), "l10.mlp");
  EXPECT_EQ(eap::display_name("input"), "input");
  EXPECT_EQ(eap::display_name("logits"), "logits");
  EXPECT_EQ(eap::parse_downstream_heads("qkv", "x"), eap::DownstreamHeads::Qkv);
  EXPECT_EQ(eap::parse_downstream_heads("none", "x"), eap::DownstreamHeads::None);
  EXPECT_THROW(eap::parse_downstream_heads("mlp", "x"), InputError);
  EXPECT_EQ(eap::parse_metric_pairing("own", "x"), eap::MetricPairing::Own);
  EXPECT_EQ(eap::parse_metric_pairing("batch_broadcast", "x"), eap::MetricPairing::BatchBroadcast);
  EXPECT_EQ(eap::parse_metric_pairing("notebook", "x"), eap::MetricPairing::Notebook);
  EXPECT_THROW(eap::parse_metric_pairing("broadcast", "x"), InputError);
  for (auto p : {eap::MetricPairing::Own, eap::MetricPairing::BatchBroadcast, eap::MetricPairing::Notebook})
    EXPECT_EQ(eap::parse_metric_pairing(eap::to_string(p), "x"), p);
}

// --- Top-n and consistent edges -------------------------------------------------------------------

// Random scores, huge on the invalid entries, with repeated values to force ties.
std::vector<float> random_scores(const eap::Graph& g, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> N(0.0f, 1.0f);
  std::vector<float> s(size_t(g.n_upstream()) * g.n_downstream());
  for (int u = 0; u < g.n_upstream(); ++u)
    for (int v = 0; v < g.n_downstream(); ++v) {
      float& x = s[size_t(u) * g.n_downstream() + v];
      if (!g.is_edge(u, v)) x = (rng() % 2 ? 1 : -1) * 1e30f;
      else x = (rng() % 4 == 0) ? std::round(N(rng) * 2) / 2 : N(rng);  // a quarter on a coarse grid
    }
  return s;
}

// Brute force: all valid edges, fully sorted with the spec's rule.
std::vector<eap::Edge> brute_top(const eap::Graph& g, const std::vector<float>& s, double scale, int n, bool signed_rank) {
  std::vector<eap::Edge> all;
  for (int u = 0; u < g.n_upstream(); ++u)
    for (int v = 0; v < g.n_downstream(); ++v)
      if (g.is_edge(u, v)) all.push_back({u, v, s[size_t(u) * g.n_downstream() + v] * scale});
  std::stable_sort(all.begin(), all.end(), [&](const eap::Edge& a, const eap::Edge& b) {
    const double ka = signed_rank ? a.score : std::fabs(a.score), kb = signed_rank ? b.score : std::fabs(b.score);
    if (ka != kb) return ka > kb;
    return std::make_pair(a.up, a.down) < std::make_pair(b.up, b.down);
  });
  if (int(all.size()) > n) all.resize(n);
  return all;
}

void expect_same(const std::vector<eap::Edge>& a, const std::vector<eap::Edge>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].up, b[i].up) << i;
    EXPECT_EQ(a[i].down, b[i].down) << i;
    EXPECT_DOUBLE_EQ(a[i].score, b[i].score) << i;
  }
}

TEST(EapTopN, OnlyValidEdgesRankedWithTies) {
  for (auto heads : {eap::DownstreamHeads::Qkv, eap::DownstreamHeads::None}) {
    eap::GraphOptions go;
    go.downstream_heads = heads;
    const eap::Graph g = eap::make_graph(2, 16, go);
    for (uint64_t seed = 1; seed <= 5; ++seed) {
      const auto s = random_scores(g, seed);
      for (bool signed_rank : {false, true})
        for (int n : {0, 1, 10, 40, 2000}) {
          const auto top = eap::top_n(g, s.data(), -0.5, n, signed_rank);
          EXPECT_EQ(int(top.size()), std::min(n, g.n_edges()));
          for (const auto& e : top) {
            EXPECT_TRUE(g.is_edge(e.up, e.down)) << e.up << "," << e.down;
            EXPECT_LT(std::fabs(e.score), 1e10);
          }
          expect_same(top, brute_top(g, s, -0.5, n, signed_rank));
        }
    }
  }
}

TEST(EapTopN, AllEqualScoresBreakTiesByUpThenDown) {
  const eap::Graph g = eap::make_graph(2, 3);
  std::vector<float> s(size_t(g.n_upstream()) * g.n_downstream(), 1.0f);
  for (int u = 0; u < g.n_upstream(); ++u)
    for (int v = 0; v < g.n_downstream(); ++v)
      if (!g.is_edge(u, v)) s[size_t(u) * g.n_downstream() + v] = 100.0f;
  const auto top = eap::top_n(g, s.data(), 1.0, 1000, false);
  ASSERT_EQ(int(top.size()), g.n_edges());
  for (size_t i = 1; i < top.size(); ++i)
    EXPECT_LT(std::make_pair(top[i - 1].up, top[i - 1].down), std::make_pair(top[i].up, top[i].down));
  // Equal magnitudes of opposite sign tie under |S|; under signed ranking the positive one wins.
  s[size_t(g.head_up(0, 2)) * g.n_downstream() + g.mlp_down(0)] = -3.0f;
  s[size_t(g.head_up(0, 1)) * g.n_downstream() + g.mlp_down(1)] = 3.0f;
  auto abs_top = eap::top_n(g, s.data(), 1.0, 2, false);
  ASSERT_EQ(abs_top.size(), 2u);
  EXPECT_EQ(abs_top[0].up, g.head_up(0, 1));
  EXPECT_EQ(abs_top[1].up, g.head_up(0, 2));
  EXPECT_EQ(abs_top[1].score, -3.0);
  auto signed_top = eap::top_n(g, s.data(), 1.0, 2, true);
  EXPECT_EQ(signed_top[0].up, g.head_up(0, 1));
  EXPECT_EQ(signed_top[1].score, 1.0);  // the most negative is not a top signed edge
  // A negative scale flips signs before signed ranking.
  auto flipped = eap::top_n(g, s.data(), -1.0, 1, true);
  EXPECT_EQ(flipped[0].up, g.head_up(0, 2));
  EXPECT_EQ(flipped[0].score, 3.0);
}

TEST(EapTopN, ConsistentEdgesAreInEveryBatchWithTheMeanScore) {
  const eap::Graph g = eap::make_graph(2, 16);
  const int n = 25;
  for (bool signed_rank : {false, true}) {
    std::vector<std::vector<float>> batches;
    for (uint64_t seed = 11; seed < 15; ++seed) {
      auto s = random_scores(g, seed);
      // Planted edges large in every batch (some negative: consistent under |S| only).
      int k = 0;
      for (int u = 0; u < g.n_upstream() && k < 12; u += 3)
        for (int v = 0; v < g.n_downstream() && k < 12; v += 7)
          if (g.is_edge(u, v)) {
            s[size_t(u) * g.n_downstream() + v] = (k % 3 == 0 ? -1.0f : 1.0f) * (10.0f + k + float(seed));
            ++k;
          }
      batches.push_back(s);
    }
    std::vector<const float*> ptrs;
    for (const auto& s : batches) ptrs.push_back(s.data());
    const double scale = 0.25;
    const auto got = eap::consistent_edges(g, ptrs, scale, n, signed_rank);

    // Brute force: the intersection of the per-batch top-n sets.
    std::vector<std::set<std::pair<int, int>>> sets;
    for (const auto& s : batches) {
      std::set<std::pair<int, int>> set;
      for (const auto& e : brute_top(g, s, scale, n, signed_rank)) set.insert({e.up, e.down});
      sets.push_back(set);
    }
    std::vector<eap::Edge> want;
    for (const auto& key : sets[0]) {
      bool all = true;
      for (const auto& set : sets) all = all && set.count(key);
      if (!all) continue;
      double mean = 0;
      for (const auto& s : batches) mean += s[size_t(key.first) * g.n_downstream() + key.second] * scale;
      want.push_back({key.first, key.second, mean / batches.size()});
    }
    std::sort(want.begin(), want.end(), [&](const eap::Edge& a, const eap::Edge& b) {
      const double ka = signed_rank ? a.score : std::fabs(a.score), kb = signed_rank ? b.score : std::fabs(b.score);
      if (ka != kb) return ka > kb;
      return std::make_pair(a.up, a.down) < std::make_pair(b.up, b.down);
    });
    EXPECT_EQ(want.size(), signed_rank ? 8u : 12u);
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_EQ(got[i].up, want[i].up);
      EXPECT_EQ(got[i].down, want[i].down);
      EXPECT_NEAR(got[i].score, want[i].score, 1e-12);
      EXPECT_TRUE(g.is_edge(got[i].up, got[i].down));
    }
  }
  EXPECT_TRUE(eap::consistent_edges(g, {}, 1.0, 10, false).empty());
}

// --- The cell reducer -----------------------------------------------------------------------------

eap::BatchScores batch(const eap::Graph& g, std::vector<double> clean, std::vector<double> corrupt, float value) {
  eap::BatchScores b;
  b.n_upstream = g.n_upstream();
  b.n_downstream = g.n_downstream();
  b.n_prompts = int(clean.size());
  b.n_positions = 6;
  b.scores.assign(size_t(b.n_upstream) * b.n_downstream, 0.0f);
  for (int u = 0; u < g.n_upstream(); ++u)
    for (int v = 0; v < g.n_downstream(); ++v)
      if (g.is_edge(u, v)) b.scores[size_t(u) * g.n_downstream() + v] = value * float(1 + (u * 31 + v * 7) % 13);
  b.clean_ld = std::move(clean);
  b.corrupt_ld = std::move(corrupt);
  b.clean_correct = 1;
  return b;
}

TEST(EapCell, DegenerateCellIsAnInputErrorWithTheNumbers) {
  const eap::Graph g = eap::make_graph(2, 4);
  // Per prompt the runs differ, but the means agree: LD_clean = LD_corr = 1.2345.
  const auto a = batch(g, {1.2345, 1.0}, {1.0, 1.2345}, 0.5f);
  const auto b = batch(g, {1.2345 * 2 - 1.0}, {1.2345 * 2 - 1.0}, 0.25f);
  try {
    runner::reduce_cell(g, {&a, &b}, 5, false);
    FAIL() << "a degenerate cell was reduced";
  } catch (const InputError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("degenerate"), std::string::npos) << msg;
    EXPECT_NE(msg.find("LD_clean = 1.2345, LD_corr = 1.2345"), std::string::npos) << msg;  // (1.2345+1+1.469)/3
    EXPECT_EQ(msg.find("nan"), std::string::npos) << msg;
  }
  const auto c = batch(g, {-0.75, -0.75}, {-0.75, -0.75}, 0.5f);
  try {
    runner::reduce_cell(g, {&c}, 5, false);
    FAIL() << "a degenerate cell was reduced";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("LD_clean = -0.75, LD_corr = -0.75"), std::string::npos) << e.what();
  }
  // Differences at rounding level, infinite and NaN baselines: degenerate too, never NaN scores.
  const auto d = batch(g, {3.0 + 1e-14}, {3.0}, 0.5f);
  EXPECT_THROW(runner::reduce_cell(g, {&d}, 5, false), InputError);
  const auto e = batch(g, {std::numeric_limits<double>::quiet_NaN()}, {3.0}, 0.5f);
  EXPECT_THROW(runner::reduce_cell(g, {&e}, 5, false), InputError);
  const auto f = batch(g, {std::numeric_limits<double>::infinity()}, {3.0}, 0.5f);
  EXPECT_THROW(runner::reduce_cell(g, {&f}, 5, false), InputError);
  EXPECT_THROW(runner::reduce_cell(g, {}, 5, false), InputError);
}

TEST(EapCell, ReducedCellIsNormalisedAndFinite) {
  const eap::Graph g = eap::make_graph(2, 4);
  const auto a = batch(g, {3.0, 5.0}, {1.0, 1.0}, 0.5f);
  const auto b = batch(g, {4.0}, {1.0}, 0.25f);
  const auto r = runner::reduce_cell(g, {&a, &b}, 5, false);
  EXPECT_DOUBLE_EQ(r.baselines.clean_ld, 4.0);
  EXPECT_DOUBLE_EQ(r.baselines.corrupt_ld, 1.0);
  EXPECT_EQ(r.baselines.n_prompts, 3);
  EXPECT_NEAR(r.clean_metric, 1.0, 1e-12);  // (1 + 1) / 2
  EXPECT_NEAR(r.corrupt_metric, 0.0, 1e-12);
  EXPECT_NEAR(r.clean_accuracy, 2.0 / 3.0, 1e-12);
  ASSERT_FALSE(r.edges.empty());
  for (const auto& e : r.edges) {
    EXPECT_TRUE(std::isfinite(e.score));
    EXPECT_TRUE(g.is_edge(e.up, e.down));
    // Mean over the two batches of the score / (LD_clean - LD_corr).
    const double raw = (a.scores[size_t(e.up) * g.n_downstream() + e.down] + b.scores[size_t(e.up) * g.n_downstream() + e.down]) / 2;
    EXPECT_NEAR(e.score, raw / 3.0, 1e-7);
  }
}

// metric_pairing = notebook: baselines are the mean over batches of each batch's mean (the
// notebook's final_*_logit_diff), and the last batch's means and metrics are kept for its JSON.
TEST(EapCell, NotebookPairingKeepsTheLastBatchAndAveragesBatchMeans) {
  const eap::Graph g = eap::make_graph(2, 4);
  const auto a = batch(g, {3.0, 5.0}, {1.0, 1.0}, 0.5f);  // batch means 4, 1
  const auto b = batch(g, {7.0}, {2.0}, 0.25f);           // batch means 7, 2
  const auto own = runner::reduce_cell(g, {&a, &b}, 5, false);
  EXPECT_DOUBLE_EQ(own.baselines.clean_ld, 5.0);  // (3 + 5 + 7) / 3 prompts
  const auto nb = runner::reduce_cell(g, {&a, &b}, 5, false, eap::MetricPairing::Notebook);
  EXPECT_DOUBLE_EQ(nb.baselines.clean_ld, 5.5);   // (4 + 7) / 2 batches
  EXPECT_DOUBLE_EQ(nb.baselines.corrupt_ld, 1.5);
  EXPECT_EQ(nb.baselines.n_prompts, 3);
  // The last batch (b): its means, normalised with the cell's baselines.
  EXPECT_DOUBLE_EQ(nb.last_batch.clean_ld, 7.0);
  EXPECT_DOUBLE_EQ(nb.last_batch.corrupt_ld, 2.0);
  EXPECT_NEAR(nb.last_batch.clean_metric, (7.0 - 1.5) / 4.0, 1e-12);
  EXPECT_NEAR(nb.last_batch.corrupt_metric, (2.0 - 1.5) / 4.0, 1e-12);
  // The cell's metrics stay the mean over batches.
  EXPECT_NEAR(nb.clean_metric, ((4.0 - 1.5) / 4.0 + (7.0 - 1.5) / 4.0) / 2, 1e-12);
  // Batch order decides which batch is last.
  const auto swapped = runner::reduce_cell(g, {&b, &a}, 5, false, eap::MetricPairing::Notebook);
  EXPECT_DOUBLE_EQ(swapped.last_batch.clean_ld, 4.0);
  ASSERT_FALSE(nb.edges.empty());
  for (const auto& e : nb.edges) {
    const double raw = (a.scores[size_t(e.up) * g.n_downstream() + e.down] + b.scores[size_t(e.up) * g.n_downstream() + e.down]) / 2;
    EXPECT_NEAR(e.score, raw / 4.0, 1e-7);  // normalised by the notebook's LD_clean - LD_corr
  }
}

}  // namespace
