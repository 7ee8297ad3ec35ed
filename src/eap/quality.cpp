#include "eap/quality.hpp"

#include <cmath>
#include <cstdio>

namespace teap::eap {
namespace {

double sample_sd(const std::vector<double>& x) {
  if (x.size() < 2) return 0;
  double mean = 0;
  for (double v : x) mean += v / x.size();
  double ss = 0;
  for (double v : x) ss += (v - mean) * (v - mean);
  return std::sqrt(ss / (x.size() - 1));
}

std::string fmt(const char* f, double a, double b = 0, double c = 0) {
  char buf[256];
  std::snprintf(buf, sizeof buf, f, a, b, c);
  return buf;
}

}  // namespace

CellQuality assess_cell(const std::vector<const BatchScores*>& batches, const QualityThresholds& t) {
  CellQuality q;
  std::vector<double> clean, batch_effects;
  double corrupt_sum = 0;
  int correct = 0, prompts = 0, flips = 0, with_tops = 0;
  for (const BatchScores* b : batches) {
    double bc = 0, br = 0;
    for (double v : b->clean_ld) clean.push_back(v), bc += v;
    for (double v : b->corrupt_ld) corrupt_sum += v, br += v;
    const size_t n = b->clean_ld.size();
    if (n) batch_effects.push_back((bc - br) / n);
    correct += b->clean_correct;
    prompts += b->n_prompts;
    if (b->clean_top.size() == n && b->corrupt_top.size() == n) {
      for (size_t i = 0; i < n; ++i) flips += b->clean_top[i] != b->corrupt_top[i];
      with_tops += static_cast<int>(n);
    }
  }
  const Baselines bl = baselines(batches);
  q.clean_ld = bl.clean_ld;
  q.corrupt_ld = bl.corrupt_ld;
  q.effect = bl.clean_ld - bl.corrupt_ld;
  q.effect_spread = sample_sd(batch_effects);
  q.ld_spread = sample_sd(clean);
  q.clean_accuracy = prompts ? double(correct) / prompts : 0.0;
  if (with_tops == prompts && prompts > 0) q.flip_fraction = double(flips) / prompts;

  const double e = std::fabs(q.effect);
  if (bl.degenerate()) {
    q.flags.push_back("degenerate");
    q.reasons.push_back("degenerate: " + bl.describe() + ", so no normalised score exists");
  } else if (e < t.min_effect_vs_clean * std::fabs(q.clean_ld) || e < t.min_effect_vs_spread * q.ld_spread) {
    q.flags.push_back("low_effect");
    q.reasons.push_back(fmt("low_effect: |LD_clean - LD_corr| = %.4g is small against |LD_clean| = %.4g", e,
                            std::fabs(q.clean_ld)) +
                        fmt(" and the spread of LD over prompts %.4g: the corruption barely moves the metric, and the "
                            "normalised scores divide by this small number",
                            q.ld_spread));
  }
  if (q.clean_accuracy < t.min_accuracy) {
    q.flags.push_back("low_accuracy");
    q.reasons.push_back(fmt("low_accuracy: the clean run's top answer is right for %.1f%% of prompts (threshold %.0f%%): "
                            "the model does not do this task",
                            100 * q.clean_accuracy, 100 * t.min_accuracy));
  }
  return q;
}

}  // namespace teap::eap
