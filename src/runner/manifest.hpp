// Owns the sweep manifest (sweep.json): the cells of every job run into a folder, with their
// settings and settings hash, and the refusal of a folder that holds other settings for a cell.
#pragma once

#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "job/job.hpp"

namespace teap::runner {

// The manifest of one job's cells.
nlohmann::json manifest_of(const job::Job& job);

// The manifest to write: the sweep's existing cells (at `path`, if any) plus `fresh`'s, this job's
// first. A cell present in both with other result-changing settings is an InputError naming what
// differs.
nlohmann::json merge_manifest(const std::string& path, const nlohmann::json& fresh);

// A cell's settings string "a=1;b=2" as {a: 1, b: 2}.
std::map<std::string, std::string> split_settings(const std::string& s);

}  // namespace teap::runner
