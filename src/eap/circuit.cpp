#include "eap/circuit.hpp"

#include <algorithm>
#include <cmath>
#include <map>
#include <stdexcept>

namespace teap::eap {
namespace {

// The upstream node a downstream node is an input of ("head.1.3.q" -> "head.1.3", "mlp.1" ->
// "mlp.1"), -1 for logits.
std::vector<int> owner_of_downstream(const Graph& eval) {
  std::map<std::string, int> up;
  for (int u = 0; u < eval.n_upstream(); ++u) up[eval.upstream[u]] = u;
  std::vector<int> owner(eval.n_downstream(), -1);
  for (int v = 0; v < eval.n_downstream(); ++v) {
    const std::string& n = eval.downstream[v];
    if (n == "logits") continue;
    const std::string node = n.rfind("head.", 0) == 0 ? n.substr(0, n.rfind('.')) : n;
    owner[v] = up.at(node);
  }
  return owner;
}

// Ranking order of edges by |score|, then (up, down).
bool before(const Edge& a, const Edge& b) {
  const double ka = std::fabs(a.score), kb = std::fabs(b.score);
  if (ka != kb) return ka > kb;
  if (a.up != b.up) return a.up < b.up;
  return a.down < b.down;
}

}  // namespace

Graph evaluation_graph(int n_layers, int n_heads) {
  GraphOptions o;
  o.downstream_heads = DownstreamHeads::Qkv;
  o.input_node = true;
  o.logits_node = true;
  return make_graph(n_layers, n_heads, o);
}

NodeMap map_nodes(const Graph& scoring, const Graph& eval) {
  std::map<std::string, int> up, down;
  for (int u = 0; u < eval.n_upstream(); ++u) up[eval.upstream[u]] = u;
  for (int v = 0; v < eval.n_downstream(); ++v) down[eval.downstream[v]] = v;
  NodeMap m;
  for (const auto& n : scoring.upstream) {
    auto it = up.find(n);
    if (it == up.end()) throw std::logic_error("scoring node " + n + " is not in the evaluation graph");
    m.up.push_back(it->second);
  }
  for (const auto& n : scoring.downstream) {
    auto it = down.find(n);
    if (it == down.end()) throw std::logic_error("scoring node " + n + " is not in the evaluation graph");
    m.down.push_back(it->second);
  }
  return m;
}

Circuit make_circuit(const std::string& name, const Graph& scoring, const Graph& eval, const NodeMap& map,
                     std::vector<Edge> edges) {
  Circuit c;
  c.name = name;
  const size_t De = eval.downstream.size();
  // Start from the edges the scoring graph never had: kept whatever the circuit says.
  c.keep = eval.valid;
  for (int u = 0; u < scoring.n_upstream(); ++u)
    for (int v = 0; v < scoring.n_downstream(); ++v)
      if (scoring.is_edge(u, v)) c.keep[size_t(map.up[u]) * De + map.down[v]] = 0;
  for (const Edge& e : edges) {
    if (!scoring.is_edge(e.up, e.down)) throw std::logic_error("circuit " + name + " names a pair that is not an edge");
    c.keep[size_t(map.up[e.up]) * De + map.down[e.down]] = 1;
  }
  c.edges = std::move(edges);
  return c;
}

std::vector<Edge> top_k_edges(const Graph& scoring, const std::vector<const float*>& batch_scores, double scale,
                              int64_t k) {
  std::vector<Edge> edges;
  const int D = scoring.n_downstream();
  const double n = batch_scores.empty() ? 1.0 : double(batch_scores.size());
  for (int u = 0; u < scoring.n_upstream(); ++u)
    for (int v = 0; v < D; ++v)
      if (scoring.is_edge(u, v)) {
        double sum = 0;
        for (const float* s : batch_scores) sum += s[size_t(u) * D + v];
        edges.push_back({u, v, sum * scale / n});
      }
  const size_t keep = k == kAllEdges ? edges.size() : std::min<size_t>(size_t(std::max<int64_t>(k, 0)), edges.size());
  std::partial_sort(edges.begin(), edges.begin() + keep, edges.end(), before);
  edges.resize(keep);
  return edges;
}

int prune(Circuit& c, const Graph& scoring, const Graph& eval, const NodeMap& map) {
  const std::vector<int> owner = owner_of_downstream(eval);
  const int U = eval.n_upstream(), D = eval.n_downstream();
  const int input = eval.input_up(), logits = eval.logits_down();
  auto kept = [&](int u, int v) { return c.keep[size_t(u) * D + v] != 0; };
  int dropped = 0;
  for (bool changed = true; changed;) {
    changed = false;
    // Reachable from input: upstream nodes in index order are in topological order (a layer's
    // heads before its MLP, layers ascending); input is the source.
    std::vector<char> from_input(U, 0);
    from_input[input] = 1;
    for (int u = 0; u < U; ++u) {
      if (u == input) continue;
      for (int v = 0; v < D && !from_input[u]; ++v) {
        if (owner[v] != u) continue;
        for (int w = 0; w < U; ++w)
          if (from_input[w] && kept(w, v)) {
            from_input[u] = 1;
            break;
          }
      }
    }
    // Reaches logits: in reverse order.
    std::vector<char> to_logits(U, 0);
    auto down_reaches = [&](int v) { return v == logits || (owner[v] >= 0 && to_logits[owner[v]]); };
    for (int u = U - 1; u >= 0; --u) {
      if (u == input) continue;
      for (int v = 0; v < D; ++v)
        if (kept(u, v) && down_reaches(v)) {
          to_logits[u] = 1;
          break;
        }
    }
    // Input's own reach is not needed: only a circuit edge's source and destination are judged.
    std::vector<Edge> still;
    for (const Edge& e : c.edges) {
      const int u = map.up[e.up], v = map.down[e.down];
      if (from_input[u] && down_reaches(v)) {
        still.push_back(e);
      } else {
        c.keep[size_t(u) * D + v] = 0;
        ++dropped;
        changed = true;
      }
    }
    c.edges = std::move(still);
  }
  (void)scoring;
  return dropped;
}

std::vector<std::string> known_circuit_kinds() { return {"consistent", "top-k", "empty", "full"}; }

std::string top_k_name(int64_t k) { return "top-" + std::to_string(k); }

std::vector<Circuit> cell_circuits(const EvaluateSpec& spec, const Graph& scoring, const std::vector<Edge>& consistent,
                                   const std::vector<const float*>& batch_scores, double scale) {
  const Graph eval = evaluation_graph(scoring.n_layers, scoring.n_heads);
  const NodeMap map = map_nodes(scoring, eval);
  auto wanted = [&](const char* kind) {
    return std::find(spec.circuits.begin(), spec.circuits.end(), kind) != spec.circuits.end();
  };
  std::vector<Circuit> out;
  if (wanted("consistent")) out.push_back(make_circuit("consistent", scoring, eval, map, consistent));
  if (wanted("top-k")) {
    const int64_t n_edges = scoring.n_edges();
    std::vector<int64_t> ks;
    for (int64_t k : spec.top_k) ks.push_back(k == kAllEdges ? n_edges : std::min(k, n_edges));
    std::sort(ks.begin(), ks.end());
    ks.erase(std::unique(ks.begin(), ks.end()), ks.end());
    // One ranking serves every k: the top k are the first k of the top max(k).
    const std::vector<Edge> ranked = top_k_edges(scoring, batch_scores, scale, ks.empty() ? 0 : ks.back());
    for (int64_t k : ks) {
      Circuit c = make_circuit(top_k_name(k), scoring, eval, map, std::vector<Edge>(ranked.begin(), ranked.begin() + k));
      c.k = k;
      out.push_back(std::move(c));
    }
  }
  if (wanted("empty")) out.push_back(make_circuit("empty", scoring, eval, map, {}));
  if (wanted("full")) {
    std::vector<Edge> all;
    for (int u = 0; u < scoring.n_upstream(); ++u)
      for (int v = 0; v < scoring.n_downstream(); ++v)
        if (scoring.is_edge(u, v)) all.push_back({u, v, 0.0});
    out.push_back(make_circuit("full", scoring, eval, map, std::move(all)));
  }
  if (spec.prune)
    for (Circuit& c : out) prune(c, scoring, eval, map);
  return out;
}

double log_k_auc(const std::vector<double>& k, const std::vector<double>& f) {
  if (k.empty() || k.size() != f.size()) return std::nan("");
  if (k.size() == 1) return f[0];
  double area = 0;
  for (size_t i = 1; i < k.size(); ++i) area += 0.5 * (f[i] + f[i - 1]) * (std::log(k[i]) - std::log(k[i - 1]));
  const double range = std::log(k.back()) - std::log(k.front());
  return range > 0 ? area / range : f.back();
}

}  // namespace teap::eap
