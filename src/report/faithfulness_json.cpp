#include "report/faithfulness_json.hpp"

#include <cmath>
#include <string>
#include <vector>

namespace teap::report {
namespace {

using ojson = nlohmann::ordered_json;

ojson number(double x) { return std::isfinite(x) ? ojson(x) : ojson(nullptr); }

// The keys every faithfulness object starts with: what was scored, what was never ablated, how
// the circuits were made, how many batches.
ojson context_json(const FaithfulnessContext& c) {
  ojson j = ojson::object();
  j["scored_nodes"] = {{"input", c.input_node}, {"logits", c.logits_node}};
  std::vector<std::string> never;  // what the scoring graph did not have (docs/faithfulness.md)
  if (!c.input_node) never.push_back("edges from input");
  if (!c.head_destinations) never.push_back("edges into head q/k/v inputs");
  if (!c.logits_node) never.push_back("edges into logits");
  std::string text;
  for (size_t i = 0; i < never.size(); ++i) text += (i ? (i + 1 == never.size() ? " and " : ", ") : "") + never[i];
  j["never_ablated"] = never.empty() ? std::string("nothing: every edge was scored") : text;
  j["pruned"] = c.pruned;
  j["top_n"] = c.top_n;
  j["batches"] = c.batches_evaluated;
  j["n_batches"] = c.n_batches;
  if (!c.note.empty()) j["note"] = c.note;
  return j;
}


}  // namespace

ojson faithfulness_incomplete_json(const FaithfulnessContext& c, const std::vector<int>& missing,
                                   const std::vector<int>& failed) {
  ojson j = context_json(c);
  std::string why = "evaluation: " + std::to_string(c.batches_evaluated) + " of " + std::to_string(c.n_batches) + " batches";
  if (!missing.empty()) why += "; missing " + ranges(missing);
  if (!failed.empty()) why += "; failed " + ranges(failed);
  j["incomplete"] = why + " (no F until every batch is evaluated: run the job again)";
  j["missing_batches"] = missing;
  j["failed_batches"] = failed;
  return j;
}

ojson faithfulness_json(const eap::CellFaithfulness& f, const FaithfulnessContext& c) {
  ojson j = context_json(c);
  if (!f.no_faithfulness.empty()) j["no_faithfulness"] = f.no_faithfulness;
  ojson circuits = ojson::object();
  for (const auto& x : f.circuits) {
    ojson o = ojson::object();
    o["F"] = number(x.f);
    o["spread"] = number(x.spread);
    o["edges"] = x.edges;
    if (x.k > 0) o["k"] = x.k;
    ojson per = ojson::array();
    for (double v : x.per_batch) per.push_back(number(v));
    o["per_batch"] = std::move(per);
    circuits[x.name] = std::move(o);
  }
  j["circuits"] = std::move(circuits);
  ojson curve = ojson::array();
  for (size_t i = 0; i < f.curve_k.size(); ++i) curve.push_back({{"k", static_cast<int64_t>(f.curve_k[i])}, {"F", number(f.curve_f[i])}});
  j["curve"] = std::move(curve);
  j["auc_log_k"] = number(f.auc);
  return j;
}

std::string ranges(const std::vector<int>& xs) {
  std::string s;
  for (size_t i = 0; i < xs.size();) {
    size_t k = i;
    while (k + 1 < xs.size() && xs[k + 1] == xs[k] + 1) ++k;
    s += (s.empty() ? "" : ", ") + std::to_string(xs[i]) + (k > i ? "-" + std::to_string(xs[k]) : "");
    i = k + 1;
  }
  return s;
}

}  // namespace teap::report
