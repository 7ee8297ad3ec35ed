#include "runner/manifest.hpp"

#include <filesystem>
#include <map>
#include <set>

#include "util/error.hpp"
#include "util/files.hpp"
#include "version.hpp"

namespace teap::runner {
namespace fs = std::filesystem;
using nlohmann::json;

json manifest_of(const job::Job& job) {
  json cells = json::array();
  for (const auto& c : job.cells) {
    const auto& s = job.settings;
    cells.push_back({{"id", c.id}, {"model", c.model}, {"commandset", c.commandset}, {"hf_model", c.weights},
                     {"tokenizer", c.tokenizer}, {"trim_vocab", c.trim_vocab},
                     {"feature", tinysql::feature_name(c.prompts.feature)}, {"use_novel_names", c.prompts.use_novel_names},
                     {"use_synonyms_field", c.prompts.use_synonyms_field},
                     {"use_synonyms_table", c.prompts.use_synonyms_table}, {"num_fields", s.num_fields},
                     {"batch_size", s.batch_size}, {"n_batches", s.batches}, {"seed", s.seed}, {"dtype", s.dtype},
                     {"device", s.device}, {"downstream_heads", s.downstream_heads}, {"metric_pairing", s.metric_pairing},
                     {"top_n", s.top_n}, {"method", s.method}, {"input_node", s.input_node},
                     {"logits_node", s.logits_node}, {"settings", c.settings}, {"settings_hash", c.hash}});
    if (s.method == "eap-ig-inputs") cells.back()["ig_steps"] = s.ig_steps;
    if (!c.evaluation.empty()) {
      cells.back()["evaluation"] = c.evaluation;
      cells.back()["evaluation_hash"] = c.evaluation_hash;
    }
  }
  const json quality = {{"min_effect_vs_clean", job.quality.min_effect_vs_clean},
                        {"min_effect_vs_spread", job.quality.min_effect_vs_spread},
                        {"min_accuracy", job.quality.min_accuracy}};
  json m = {{"version", TEAP_VERSION}, {"job", job.path}, {"quality", quality}, {"cells", cells}};
  if (job.evaluate.enabled) {
    json top_k = json::array();
    for (int64_t k : job.evaluate.top_k) top_k.push_back(k < 0 ? json("all") : json(k));
    m["evaluate"] = {{"circuits", job.evaluate.circuits}, {"top_k", top_k}, {"prune", job.evaluate.prune}};
  }
  return m;
}


// The manifest to write: the existing sweep's cells plus this job's; a cell present in both with
// other result-changing settings is refused, naming what differs.
json merge_manifest(const std::string& path, const json& fresh) {
  if (!fs::exists(path)) return fresh;
  json old;
  try {
    old = json::parse(read_file(path));
  } catch (const json::exception& e) {
    fail_input(path, std::string("not a sweep manifest: ") + e.what());
  }
  std::map<std::string, json> by_id;
  for (const auto& c : old.value("cells", json::array())) by_id[c.value("id", "")] = c;
  for (const auto& c : fresh["cells"]) {
    auto it = by_id.find(c["id"]);
    if (it == by_id.end()) continue;
    if (it->second.value("settings_hash", "") == c["settings_hash"]) continue;
    const auto a = split_settings(it->second.value("settings", "")), b = split_settings(c["settings"]);
    std::string diff;
    for (const auto& [k, v] : b)
      if (!a.count(k) || a.at(k) != v) diff += (diff.empty() ? "" : ", ") + k + " '" + (a.count(k) ? a.at(k) : "") + "' -> '" + v + "'";
    for (const auto& [k, v] : a)
      if (!b.count(k)) diff += (diff.empty() ? "" : ", ") + k + " '" + v + "' -> ''";
    if (diff.empty())  // same settings, another hash: written by another version of this program
      diff = "settings_hash '" + it->second.value("settings_hash", "") + "' -> '" + c["settings_hash"].get<std::string>() +
             "', written by another version of tinysql-eap";
    const auto wa = a.find("weights_id"), wb = b.find("weights_id");
    if (wa != a.end() && wb != b.end() && wa->second != wb->second && a.at("weights") == b.at("weights"))
      fail_input(path, "the checkpoint " + b.at("weights") + " has changed since this folder's units of cell " +
                           c["id"].get<std::string>() + " were computed (weights_id '" + wa->second + "' -> '" +
                           wb->second + "'): its results would mix two models; use another output folder");
    fail_input(path, "this folder holds results of other settings for cell " + c["id"].get<std::string>() + " (" +
                         diff + "); use another output folder");
  }
  json merged = old;
  for (const auto& c : fresh["cells"]) by_id[c["id"]] = c;
  merged["cells"] = json::array();
  for (const auto& c : fresh["cells"]) merged["cells"].push_back(c);  // this job's order first
  std::set<std::string> seen;
  for (const auto& c : fresh["cells"]) seen.insert(c["id"]);
  for (const auto& c : old.value("cells", json::array()))
    if (!seen.count(c.value("id", ""))) merged["cells"].push_back(c);
  merged["version"] = TEAP_VERSION;
  merged["job"] = fresh["job"];
  merged["quality"] = fresh["quality"];  // the latest job's thresholds
  if (fresh.contains("evaluate")) merged["evaluate"] = fresh["evaluate"];
  else merged.erase("evaluate");
  return merged;
}

std::map<std::string, std::string> split_settings(const std::string& s) {
  std::map<std::string, std::string> out;
  size_t pos = 0;
  while (pos < s.size()) {
    size_t end = s.find(';', pos);
    if (end == std::string::npos) end = s.size();
    const std::string kv = s.substr(pos, end - pos);
    const size_t eq = kv.find('=');
    if (eq != std::string::npos) out[kv.substr(0, eq)] = kv.substr(eq + 1);
    pos = end + 1;
  }
  return out;
}

}  // namespace teap::runner
