// Owns training.json: the settings a model was trained with and what training measured, and the
// decision whether an output folder may be reused, written over, or must be refused (internal to
// train/; no LibTorch).
#pragma once

#include <string>

#include "train/train.hpp"

namespace teap::train {

// Bumped whenever the data or the optimisation change in a way the settings do not show, so that
// a folder trained by an older recipe is not reused.
inline constexpr int kRecipeVersion = 1;

// The settings as the JSON object training.json stores under "settings" (resolved first).
std::string settings_json(const TrainSettings& s);

// Writes DIR/training.json atomically.
void write_record(const std::string& out, const TrainSettings& s, const TrainResult& r);

}  // namespace teap::train
