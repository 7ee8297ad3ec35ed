#include "eap/metric.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "util/error.hpp"

namespace teap::eap {

MetricPairing parse_metric_pairing(const std::string& s, const std::string& where) {
  if (s == "own") return MetricPairing::Own;
  if (s == "batch_broadcast") return MetricPairing::BatchBroadcast;
  if (s == "notebook") return MetricPairing::Notebook;
  fail_input(where, "metric_pairing '" + s + "' is not one of own, batch_broadcast, notebook");
}

std::string to_string(MetricPairing p) {
  switch (p) {
    case MetricPairing::Own: return "own";
    case MetricPairing::BatchBroadcast: return "batch_broadcast";
    case MetricPairing::Notebook: return "notebook";
  }
  return "own";
}

bool Baselines::degenerate() const {
  const double scale = std::max({1.0, std::fabs(clean_ld), std::fabs(corrupt_ld)});
  return !std::isfinite(clean_ld) || !std::isfinite(corrupt_ld) || std::fabs(denominator()) <= 1e-9 * scale;
}

std::string Baselines::describe() const {
  char buf[160];
  std::snprintf(buf, sizeof buf, "LD_clean = %.9g, LD_corr = %.9g over %d prompts", clean_ld, corrupt_ld, n_prompts);
  return buf;
}

Baselines baselines(const std::vector<const BatchScores*>& batches) {
  Baselines b;
  double c = 0, r = 0;
  for (const BatchScores* s : batches) {
    for (double x : s->clean_ld) c += x;
    for (double x : s->corrupt_ld) r += x;
    b.n_prompts += static_cast<int>(s->clean_ld.size());
  }
  if (b.n_prompts) {
    b.clean_ld = c / b.n_prompts;
    b.corrupt_ld = r / b.n_prompts;
  }
  return b;
}

Baselines baselines(const std::vector<const BatchScores*>& batches, MetricPairing pairing) {
  if (pairing != MetricPairing::Notebook) return baselines(batches);
  Baselines b;
  int n = 0;
  double c = 0, r = 0;
  for (const BatchScores* s : batches) {
    b.n_prompts += static_cast<int>(s->clean_ld.size());
    if (s->clean_ld.empty()) continue;
    double cs = 0, rs = 0;
    for (double x : s->clean_ld) cs += x;
    for (double x : s->corrupt_ld) rs += x;
    c += cs / s->clean_ld.size();
    r += rs / s->corrupt_ld.size();
    ++n;
  }
  if (n) {
    b.clean_ld = c / n;
    b.corrupt_ld = r / n;
  }
  return b;
}

double normalised_metric(const std::vector<double>& ld, const Baselines& b) {
  if (ld.empty()) return 0.0;
  double s = 0;
  for (double x : ld) s += x;
  return (s / ld.size() - b.corrupt_ld) / b.denominator();
}

}  // namespace teap::eap
