#include "eap/topn.hpp"

#include <algorithm>
#include <cmath>
#include <map>

namespace teap::eap {
namespace {

// Strict order: better rank first, then (up, down).
bool ranks_before(const Edge& a, const Edge& b, bool signed_rank) {
  const double ka = signed_rank ? a.score : std::fabs(a.score);
  const double kb = signed_rank ? b.score : std::fabs(b.score);
  if (ka != kb) return ka > kb;
  if (a.up != b.up) return a.up < b.up;
  return a.down < b.down;
}

}  // namespace

std::vector<Edge> top_n(const Graph& g, const float* scores, double scale, int n, bool signed_rank) {
  std::vector<Edge> edges;
  const int D = g.n_downstream();
  for (int u = 0; u < g.n_upstream(); ++u)
    for (int d = 0; d < D; ++d)
      if (g.is_edge(u, d)) edges.push_back({u, d, scores[static_cast<size_t>(u) * D + d] * scale});
  const size_t k = std::min<size_t>(std::max(n, 0), edges.size());
  auto cmp = [&](const Edge& a, const Edge& b) { return ranks_before(a, b, signed_rank); };
  std::partial_sort(edges.begin(), edges.begin() + k, edges.end(), cmp);
  edges.resize(k);
  return edges;
}

std::vector<Edge> consistent_edges(const Graph& g, const std::vector<const float*>& batch_scores, double scale,
                                   int n, bool signed_rank) {
  std::map<std::pair<int, int>, std::pair<int, double>> seen;  // edge -> (appearances, sum)
  for (const float* s : batch_scores)
    for (const Edge& e : top_n(g, s, scale, n, signed_rank)) {
      auto& [count, sum] = seen[{e.up, e.down}];
      ++count;
      sum += e.score;
    }
  std::vector<Edge> out;
  const int batches = static_cast<int>(batch_scores.size());
  for (const auto& [key, v] : seen)
    if (batches > 0 && v.first == batches) out.push_back({key.first, key.second, v.second / batches});
  std::sort(out.begin(), out.end(), [&](const Edge& a, const Edge& b) { return ranks_before(a, b, signed_rank); });
  return out;
}

}  // namespace teap::eap
