#include "eap/evaluate.hpp"

#include <ATen/ATen.h>

#include <algorithm>
#include <map>
#include <numeric>
#include <stdexcept>
#include <string>

#include "eap/runs.hpp"
#include "model/patched.hpp"
#include "util/error.hpp"

namespace teap::eap {
namespace {

// Per-prompt LDs of circuits run together: [C * B] circuit-major.
struct CircuitLds {
  std::vector<double> metric, recorded;
};

// Runs the ablation masks [U, D] (1 = reads the corrupt output) in passes of at most `per_pass`.
CircuitLds run_circuits(const model::Model& m, const BatchInput& in, const PlainRuns& runs,
                        const std::vector<at::Tensor>& ablated, MetricPairing pairing, const MetricPairs& broadcast,
                        int64_t per_pass) {
  at::NoGradGuard no_grad;
  const int64_t B = in.n_prompts;
  const at::Tensor ids = as_tensor(in.clean_ids, B, in.n_positions);
  model::Patch patch;
  patch.corrupt = model::upstream_outputs(m, runs.corrupt);
  patch.clean = &runs.clean;
  patch.clean_out = model::upstream_outputs(m, runs.clean);
  CircuitLds out;
  for (size_t first = 0; first < ablated.size(); first += per_pass) {
    const int64_t C = std::min<int64_t>(per_pass, int64_t(ablated.size() - first));
    patch.ablated = at::stack(at::TensorList(ablated).slice(first, C));
    const at::Tensor hidden = model::patched_forward(m, ids, patch, runs.start, runs.before());
    const LogitDiffs ld =
        logit_diff(m, hidden, runs.clean_tok.repeat({C}), runs.corrupt_tok.repeat({C}), pairing, broadcast);
    for (auto [from, to] : {std::pair{&ld.metric, &out.metric}, std::pair{&ld.recorded, &out.recorded}}) {
      const std::vector<double> v = to_vector(*from);
      to->insert(to->end(), v.begin(), v.end());
    }
  }
  check_finite(m, out.recorded, "patched-run logit difference");
  return out;
}

void check_fits(const model::Model& m, const Graph& g) {
  if (g.n_layers != m.config.n_layers || g.n_heads != m.config.n_heads)
    throw InputError("graph of " + std::to_string(g.n_layers) + " layers x " + std::to_string(g.n_heads) +
                     " heads does not fit the model (" + std::to_string(m.config.n_layers) + " x " +
                     std::to_string(m.config.n_heads) + ")");
}

}  // namespace

int64_t circuits_per_pass(const model::Model& m, int64_t n_rows, double budget) {
  const auto& c = m.config;
  const double elem = m.dtype == at::kDouble ? 8.0 : 4.0;
  // The differences of every upstream node, one slot of per-head copies with its temporaries, and
  // a few residual-sized tensors.
  const double per_circuit = double(model::patch_upstream(c) + 3 * c.n_heads + 8) * double(n_rows) * c.d_model * elem;
  return std::max<int64_t>(1, static_cast<int64_t>(budget / per_circuit));
}

BatchEvaluation evaluate_batch(const model::Model& m, const BatchInput& in, const std::vector<const Circuit*>& circuits,
                               const EvaluateOptions& options) {
  check_batch(m, in);
  ScoreOptions so;
  so.pairing = options.pairing;
  so.broadcast = options.broadcast;
  check_options(m, so);
  const Graph eval = evaluation_graph(m.config.n_layers, m.config.n_heads);
  BatchEvaluation out;
  out.runs.n_upstream = eval.n_upstream();
  out.runs.n_downstream = eval.n_downstream();
  const PlainRuns runs = plain_runs(m, in, options.pairing, options.broadcast, out.runs);

  // Distinct masks to run; a circuit keeping every edge is the clean run itself.
  std::map<std::vector<uint8_t>, int> index;  // keep -> slot in `masks`
  std::vector<at::Tensor> masks;
  std::vector<int> slot_of(circuits.size(), -1);
  const at::Tensor valid = at::tensor(at::ArrayRef<uint8_t>(eval.valid)).view({eval.n_upstream(), eval.n_downstream()});
  for (size_t i = 0; i < circuits.size(); ++i) {
    const auto& keep = circuits[i]->keep;
    if (keep.size() != eval.valid.size()) throw std::logic_error("circuit " + circuits[i]->name + ": mask of another graph");
    if (keep == eval.valid) continue;
    auto [it, fresh] = index.emplace(keep, static_cast<int>(masks.size()));
    if (fresh) {
      const at::Tensor k = at::tensor(at::ArrayRef<uint8_t>(keep)).view_as(valid);
      masks.push_back((valid - k).clamp_min(0).to(at::kFloat));
    }
    slot_of[i] = it->second;
  }
  const int64_t B = in.n_prompts, N = B * (in.n_positions - runs.start);
  const CircuitLds lds = run_circuits(m, in, runs, masks, options.pairing, options.broadcast,
                                      circuits_per_pass(m, N, options.memory_budget));
  for (size_t i = 0; i < circuits.size(); ++i) {
    if (slot_of[i] < 0) {
      out.circuit_ld.push_back(out.runs.clean_ld);
    } else {
      const auto from = lds.recorded.begin() + int64_t(slot_of[i]) * B;
      out.circuit_ld.emplace_back(from, from + B);
    }
  }
  return out;
}

BatchScores exact_batch(const model::Model& m, const Graph& g, const BatchInput& in, const ScoreOptions& options) {
  check_batch(m, in);
  check_options(m, options);
  check_fits(m, g);
  const Graph eval = evaluation_graph(g.n_layers, g.n_heads);
  const NodeMap map = map_nodes(g, eval);
  BatchScores out;
  out.n_upstream = g.n_upstream();
  out.n_downstream = g.n_downstream();
  const PlainRuns runs = plain_runs(m, in, options.pairing, options.broadcast, out);
  const int64_t B = in.n_prompts, N = B * (in.n_positions - runs.start);
  const int64_t Ue = eval.n_upstream(), De = eval.n_downstream(), per_layer = 3 * int64_t(g.n_heads) + 1;

  // One circuit per edge, ordered by the destination's layer so that a pass starts as late as its
  // edges allow (model::Patch::clean).
  std::vector<std::pair<int, int>> edges;
  for (int u = 0; u < g.n_upstream(); ++u)
    for (int v = 0; v < g.n_downstream(); ++v)
      if (g.is_edge(u, v)) edges.push_back({u, v});
  std::stable_sort(edges.begin(), edges.end(),
                   [&](const auto& a, const auto& b) { return map.down[a.second] / per_layer < map.down[b.second] / per_layer; });
  const int64_t per_pass = circuits_per_pass(m, N, EvaluateOptions().memory_budget);
  at::NoGradGuard no_grad;
  const double m_all = runs.clean_ld.metric.mean().item<double>();
  std::vector<double> S(size_t(g.n_upstream()) * g.n_downstream(), 0.0);
  for (size_t first = 0; first < edges.size();) {
    // A pass never mixes destination layers, so each starts at its own layer.
    const int64_t layer = map.down[edges[first].second] / per_layer;
    size_t n = 0;
    while (first + n < edges.size() && int64_t(n) < per_pass && map.down[edges[first + n].second] / per_layer == layer) ++n;
    std::vector<at::Tensor> masks;
    for (size_t e = first; e < first + n; ++e) {
      at::Tensor a = at::zeros({Ue, De}, at::kFloat);
      a[map.up[edges[e].first]][map.down[edges[e].second]] = 1.0;
      masks.push_back(a);
    }
    const CircuitLds lds = run_circuits(m, in, runs, masks, options.pairing, options.broadcast, int64_t(n));
    for (size_t e = 0; e < n; ++e) {
      const double mean = std::accumulate(lds.metric.begin() + e * B, lds.metric.begin() + (e + 1) * B, 0.0) / B;
      S[size_t(edges[first + e].first) * g.n_downstream() + edges[first + e].second] = m_all - mean;
    }
    first += n;
  }
  at::Tensor St = at::tensor(at::ArrayRef<double>(S)).view({g.n_upstream(), g.n_downstream()});
  if (options.weight != 1.0) St.mul_(options.weight);
  if (options.sum_scores) {
    St = St.contiguous();
    options.sum_scores(St.data_ptr(), static_cast<size_t>(St.numel()), true, false);
  }
  const at::Tensor Sf = St.to(at::kFloat).contiguous();
  out.scores.assign(Sf.data_ptr<float>(), Sf.data_ptr<float>() + Sf.numel());
  return out;
}

}  // namespace teap::eap
