// Circuits as plain data (eap/circuit.hpp): the never-ablated rule, top-k ranking, the cell's
// circuit list, pruning on hand-built graphs, and the area under F(k).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "eap/circuit.hpp"
#include "eap/graph.hpp"

namespace {

using namespace teap::eap;

int up(const Graph& g, const std::string& n) {
  return int(std::find(g.upstream.begin(), g.upstream.end(), n) - g.upstream.begin());
}
int down(const Graph& g, const std::string& n) {
  return int(std::find(g.downstream.begin(), g.downstream.end(), n) - g.downstream.begin());
}
Edge edge(const Graph& g, const std::string& u, const std::string& v) { return {up(g, u), down(g, v), 0.0}; }

std::vector<std::string> names(const Graph& g, const Circuit& c) {
  std::vector<std::string> out;
  for (const Edge& e : c.edges) out.push_back(g.upstream[e.up] + ">" + g.downstream[e.down]);
  std::sort(out.begin(), out.end());
  return out;
}

Graph both_nodes(int L, int H) {
  GraphOptions o;
  o.input_node = o.logits_node = true;
  return make_graph(L, H, o);
}

TEST(CircuitCore, EvaluationGraphHasBothNodesAndQkv) {
  const Graph e = evaluation_graph(2, 3);
  EXPECT_EQ(e.upstream.back(), "input");
  EXPECT_EQ(e.downstream.back(), "logits");
  EXPECT_EQ(e.n_downstream(), 2 * (3 * 3 + 1) + 1);
}

TEST(CircuitCore, NeverScoredEdgesAreKept) {
  GraphOptions none;
  none.downstream_heads = DownstreamHeads::None;  // the notebook's fork: MLP destinations only
  const Graph s = make_graph(2, 2, none), e = evaluation_graph(2, 2);
  const Circuit empty = make_circuit("empty", s, e, map_nodes(s, e), {});
  int kept = 0, ablated = 0;
  for (int u = 0; u < e.n_upstream(); ++u)
    for (int v = 0; v < e.n_downstream(); ++v) {
      if (!e.is_edge(u, v)) {
        EXPECT_EQ(empty.keep[size_t(u) * e.n_downstream() + v], 0);
        continue;
      }
      const bool scored = u != e.input_up() && v != e.logits_down() && e.downstream[v].rfind("mlp.", 0) == 0;
      EXPECT_EQ(empty.keep[size_t(u) * e.n_downstream() + v], scored ? 0 : 1) << e.upstream[u] << " -> " << e.downstream[v];
      (scored ? ablated : kept) += 1;
    }
  EXPECT_EQ(ablated, s.n_edges());
  EXPECT_GT(kept, 0);
  const Circuit one = make_circuit("c", s, e, map_nodes(s, e), {edge(s, "head.0.1", "mlp.1")});
  EXPECT_EQ(one.keep[size_t(up(e, "head.0.1")) * e.n_downstream() + down(e, "mlp.1")], 1);
}

TEST(CircuitCore, TopKRanksByMeanAbsoluteNormalisedScoreWithTies) {
  const Graph s = make_graph(2, 1);  // head.0.0, mlp.0, head.1.0, mlp.1 -> q/k/v/mlp of layers 0, 1
  std::vector<float> b1(s.upstream.size() * s.downstream.size(), 0.0f), b2 = b1;
  const int D = s.n_downstream();
  auto at = [&](std::vector<float>& b, const std::string& u, const std::string& v) -> float& {
    return b[size_t(up(s, u)) * D + down(s, v)];
  };
  at(b1, "head.0.0", "mlp.0") = 4;   // mean 1 (4, -2)
  at(b2, "head.0.0", "mlp.0") = -2;
  at(b1, "mlp.0", "mlp.1") = -3;     // mean -3: first by |mean|
  at(b2, "mlp.0", "mlp.1") = -3;
  at(b1, "head.0.0", "head.1.0.q") = 1;  // mean 1: ties with head.0.0 -> mlp.0, a later downstream index
  at(b2, "head.0.0", "head.1.0.q") = 1;
  const auto top = top_k_edges(s, {b1.data(), b2.data()}, 0.5, 3);
  ASSERT_EQ(top.size(), 3u);
  EXPECT_EQ(s.upstream[top[0].up] + ">" + s.downstream[top[0].down], "mlp.0>mlp.1");
  EXPECT_DOUBLE_EQ(top[0].score, -1.5);
  EXPECT_EQ(s.upstream[top[1].up] + ">" + s.downstream[top[1].down], "head.0.0>mlp.0");
  EXPECT_EQ(s.upstream[top[2].up] + ">" + s.downstream[top[2].down], "head.0.0>head.1.0.q");
  EXPECT_EQ(top_k_edges(s, {b1.data()}, 1.0, kAllEdges).size(), size_t(s.n_edges()));
  EXPECT_EQ(top_k_edges(s, {b1.data()}, 1.0, 100000).size(), size_t(s.n_edges()));
}

TEST(CircuitCore, CellCircuitsCapDedupeAndOrder) {
  const Graph s = make_graph(2, 1);
  std::vector<float> b(s.upstream.size() * s.downstream.size(), 0.0f);
  for (size_t i = 0; i < b.size(); ++i) b[i] = float(i % 7) - 3.0f;
  EvaluateSpec spec;
  spec.top_k = {5, 1, 1000, kAllEdges};
  const std::vector<Edge> consistent = {edge(s, "mlp.0", "mlp.1")};
  const auto cs = cell_circuits(spec, s, consistent, {b.data()}, 1.0);
  std::vector<std::string> n;
  for (const auto& c : cs) n.push_back(c.name);
  const std::string all = top_k_name(s.n_edges());
  EXPECT_EQ(n, (std::vector<std::string>{"consistent", "top-1", "top-5", all, "empty", "full"}));
  EXPECT_EQ(cs[0].n_edges(), 1);
  EXPECT_EQ(cs[2].n_edges(), 5);
  EXPECT_EQ(cs[2].k, 5);
  EXPECT_EQ(cs[4].n_edges(), 0);
  EXPECT_EQ(cs[5].n_edges(), s.n_edges());
  EXPECT_EQ(cs[3].keep, cs[5].keep);  // top-all keeps what full keeps
  spec.circuits = {"empty"};
  EXPECT_EQ(cell_circuits(spec, s, consistent, {b.data()}, 1.0).size(), 1u);
}

TEST(CircuitCore, PruneDropsWhatInputDoesNotReachAndWhatDoesNotReachLogits) {
  const Graph s = both_nodes(2, 2), e = evaluation_graph(2, 2);
  const NodeMap map = map_nodes(s, e);
  // A path input -> head.0.0 -> mlp.1 -> logits stays whole.
  const std::vector<Edge> path = {edge(s, "input", "head.0.0.q"), edge(s, "head.0.0", "mlp.1"), edge(s, "mlp.1", "logits")};
  Circuit c = make_circuit("c", s, e, map, path);
  EXPECT_EQ(prune(c, s, e, map), 0);
  EXPECT_EQ(c.n_edges(), 3);
  // head.0.1 has no kept input: its edge to logits goes. head.1.0 feeds nothing: the edge into its
  // k goes.
  std::vector<Edge> more = path;
  more.push_back(edge(s, "head.0.1", "logits"));
  more.push_back(edge(s, "input", "head.1.0.k"));
  c = make_circuit("c", s, e, map, more);
  EXPECT_EQ(prune(c, s, e, map), 2);
  EXPECT_EQ(names(s, c), names(s, make_circuit("c", s, e, map, path)));
  EXPECT_EQ(c.keep, make_circuit("c", s, e, map, path).keep);
  // A dead end two steps long: input -> head.0.1.v -> head.1.1.q, head.1.1 feeding nothing. Both
  // go, the first only once the second has gone (the fixed point).
  std::vector<Edge> dead = path;
  dead.push_back(edge(s, "input", "head.0.1.v"));
  dead.push_back(edge(s, "head.0.1", "head.1.1.q"));
  c = make_circuit("c", s, e, map, dead);
  EXPECT_EQ(prune(c, s, e, map), 2);
  EXPECT_EQ(c.n_edges(), 3);
  // The empty circuit stays empty; the full one loses nothing.
  Circuit empty = make_circuit("empty", s, e, map, {});
  EXPECT_EQ(prune(empty, s, e, map), 0);
}

TEST(CircuitCore, PruneCountsNeverAblatedEdgesAsKept) {
  // The notebook's graph: every edge from the embedding and into the logits is never ablated, so
  // every node is reached from input and reaches logits; nothing is pruned.
  const Graph s = make_graph(2, 2), e = evaluation_graph(2, 2);
  const NodeMap map = map_nodes(s, e);
  Circuit c = make_circuit("c", s, e, map, {edge(s, "head.0.1", "head.1.0.q"), edge(s, "mlp.0", "mlp.1")});
  EXPECT_EQ(prune(c, s, e, map), 0);
  EXPECT_EQ(c.n_edges(), 2);
}

TEST(CircuitCore, LogKAreaIsNormalised) {
  EXPECT_DOUBLE_EQ(log_k_auc({1, 10, 100}, {0.5, 0.5, 0.5}), 0.5);
  EXPECT_DOUBLE_EQ(log_k_auc({7}, {0.25}), 0.25);
  // F linear in log k from 0 to 1: area one half.
  EXPECT_NEAR(log_k_auc({1, 10, 100}, {0.0, 0.5, 1.0}), 0.5, 1e-12);
  // Uneven steps weigh by their log-length.
  EXPECT_NEAR(log_k_auc({1, 10, 1000}, {0.0, 1.0, 1.0}), (0.5 * 1 + 2.0) / 3.0, 1e-12);
  EXPECT_TRUE(std::isnan(log_k_auc({}, {})));
}

}  // namespace
