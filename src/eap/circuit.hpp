// Owns circuits as plain data (../shared/spec/circuits.md): the evaluation graph, a circuit as the
// set of its edges there (with the never-ablated rule for edges the scoring graph did not have),
// the circuits a cell is evaluated on (consistent, top-k, empty, full), pruning, and the
// faithfulness curve's area. No LibTorch: eap/evaluate.hpp runs them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "eap/graph.hpp"
#include "eap/topn.hpp"

namespace teap::eap {

// The graph circuits are run on: the scoring graph's shape with q/k/v destinations and both extra
// nodes (input last upstream, logits last downstream), whatever the scoring graph had.
Graph evaluation_graph(int n_layers, int n_heads);

// Where each node of `scoring` sits in `eval` (by name): up[u], down[v].
struct NodeMap {
  std::vector<int> up, down;
};
NodeMap map_nodes(const Graph& scoring, const Graph& eval);

struct Circuit {
  std::string name;            // "consistent", "top-10", "empty", "full"
  int64_t k = -1;              // top-k: the k asked for (kAllEdges: every edge); -1 for the others
  std::vector<Edge> edges;     // the circuit's edges in the scoring graph (after pruning)
  // [eval.n_upstream() * eval.n_downstream()]: 1 where the edge is kept (a circuit edge, or an edge
  // the scoring graph never had: what was never scored is never ablated), 0 where it reads the
  // corrupt run; 0 off-edge.
  std::vector<uint8_t> keep;
  int n_edges() const { return static_cast<int>(edges.size()); }
};

inline constexpr int64_t kAllEdges = -1;  // top_k = "all" in a job

// A circuit of `edges` (scoring-graph indices). The full circuit keeps every edge of `eval`.
Circuit make_circuit(const std::string& name, const Graph& scoring, const Graph& eval, const NodeMap& map,
                     std::vector<Edge> edges);

// The k valid edges of largest |mean normalised score| over the batches (ties by (up, down)); k
// capped at the number of valid edges, kAllEdges for all. `scale` is 1 / (LD_clean - LD_corr).
std::vector<Edge> top_k_edges(const Graph& scoring, const std::vector<const float*>& batch_scores, double scale,
                              int64_t k);

// EAP-IG's prune: drops circuit edges whose source is not reachable from `input` through kept
// edges, or whose destination's node does not reach `logits` through kept edges, to a fixed point.
// Edges kept by the never-ablated rule count as kept and stay. Returns how many edges it dropped.
int prune(Circuit& c, const Graph& scoring, const Graph& eval, const NodeMap& map);

// What a cell is evaluated on, by name: "consistent", "top-k", "empty", "full".
struct EvaluateSpec {
  std::vector<std::string> circuits = {"consistent", "top-k", "empty", "full"};
  std::vector<int64_t> top_k = {1, 2, 5, 10, 20, 50, 100, 200, 500, kAllEdges};
  bool prune = false;
};
std::vector<std::string> known_circuit_kinds();

// The cell's circuits in a fixed order: consistent, top-k (one per distinct capped k, ascending),
// empty, full; pruned when the spec says so.
std::vector<Circuit> cell_circuits(const EvaluateSpec& spec, const Graph& scoring, const std::vector<Edge>& consistent,
                                   const std::vector<const float*>& batch_scores, double scale);

// Area under F(k) over log k, normalised by the log-k range (the trapezoid rule; a single point's
// area is its F). `k` ascending and positive.
double log_k_auc(const std::vector<double>& k, const std::vector<double>& f);

// "top-k" -> name of one top-k circuit: "top-10".
std::string top_k_name(int64_t k);

}  // namespace teap::eap
