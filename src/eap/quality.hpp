// Owns what makes a cell's result trustworthy or not, before anyone reads its circuit: how far the
// corruption moves the metric (effect size, against the spread of LD and against |LD_clean|), how
// often the model's top answer changes, whether the model does the task (clean accuracy), and the
// flags drawn from those with documented thresholds (docs/outputs.md, "Cell quality").
#pragma once

#include <limits>
#include <string>
#include <vector>

#include "eap/metric.hpp"

namespace teap::eap {

struct QualityThresholds {
  // low_effect: |LD_clean - LD_corr| below this fraction of |LD_clean| ...
  double min_effect_vs_clean = 0.05;
  // ... or below this fraction of the spread (standard deviation over prompts) of the clean LD.
  double min_effect_vs_spread = 0.15;
  // low_accuracy: the clean run's top answer is the right one for fewer than this fraction.
  double min_accuracy = 0.5;
};

struct CellQuality {
  double clean_ld = 0, corrupt_ld = 0;
  double effect = 0;            // LD_clean - LD_corr over every prompt of the cell
  double effect_spread = 0;     // standard deviation over batches of each batch's effect (0 for one batch)
  double ld_spread = 0;         // standard deviation over prompts of the clean LD
  double clean_accuracy = 0;
  // Fraction of prompts whose top answer under corruption is not their clean top answer; NaN when
  // the unit files do not record top answers (written before they did).
  double flip_fraction = std::numeric_limits<double>::quiet_NaN();
  std::vector<std::string> flags;    // "degenerate", "low_effect", "low_accuracy", in that order
  std::vector<std::string> reasons;  // one line per flag, with the numbers
  bool flagged() const { return !flags.empty(); }
};

// The quality of a cell from its batches (all of them, in any order).
CellQuality assess_cell(const std::vector<const BatchScores*>& batches, const QualityThresholds& t);

}  // namespace teap::eap
