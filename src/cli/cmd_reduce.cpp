// `tinysql-eap reduce OUT`: from a sweep folder's per-batch HDF5 files, per complete cell the
// baselines over all its batches, the consistent edges, the notebook's JSON and the Sankey diagram
// (HTML and SVG) under OUT/cells/<id>/; then the summary page OUT/index.html. When the sweep
// evaluates its cells (OUT/evaluation/), each cell's faithfulness joins its JSON, page and summary
// row. Only the reduction is recomputed, so another --top-n costs seconds. With --compare OTHER,
// the cells of another sweep scored by another method are put side by side on the summary and in
// OUT/compare-<OTHER's name>.json.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "cli/cell_result.hpp"
#include "cli/commands.hpp"
#include "eap/compare.hpp"
#include "eap/faithfulness.hpp"
#include "eap/graph.hpp"
#include "eap/metric.hpp"
#include "io/evaluation_file.hpp"
#include "io/unit_file.hpp"
#include "report/comparison.hpp"
#include "report/faithfulness_json.hpp"
#include "runner/manifest.hpp"
#include "report/notebook_json.hpp"
#include "report/sankey.hpp"
#include "report/summary.hpp"
#include "eap/quality.hpp"
#include "runner/folder.hpp"
#include "runner/plan.hpp"
#include "runner/unit.hpp"
#include "util/error.hpp"
#include "util/files.hpp"
#include "version.hpp"

namespace teap::cli {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Typed access to one manifest cell, errors naming the file and the key.
struct CellJson {
  const json& j;
  std::string where;  // "OUT/sweep.json: cells[3]"

  const json& at(const char* key) const {
    if (!j.contains(key)) throw InputError(where + "." + key + ": missing");
    return j[key];
  }
  std::string str(const char* key) const {
    const json& v = at(key);
    if (!v.is_string()) throw InputError(where + "." + key + ": not a string");
    return v.get<std::string>();
  }
  std::string str_or(const char* key, const std::string& dflt) const { return j.contains(key) ? str(key) : dflt; }
  int64_t integer(const char* key) const {
    const json& v = at(key);
    if (!v.is_number_integer()) throw InputError(where + "." + key + ": not an integer");
    return v.get<int64_t>();
  }
  int64_t integer_or(const char* key, int64_t dflt) const { return j.contains(key) ? integer(key) : dflt; }
  bool boolean(const char* key) const {
    const json& v = at(key);
    if (v.is_boolean()) return v.get<bool>();
    if (v.is_number_integer()) return v.get<int64_t>() != 0;
    throw InputError(where + "." + key + ": not a boolean");
  }
};


std::string first_line(const std::string& path) {
  std::string line;
  try {
    line = read_file(path, kMaxSmallFile);
  } catch (const InputError& e) {
    return e.what();  // a FIFO or huge file in place of a failure note is itself the problem to show
  }
  line = line.substr(0, line.find('\n'));
  if (line.size() > 300) line = line.substr(0, 300) + "...";
  return line.empty() ? "(no message)" : line;
}

std::string fmt(const char* f, double x) {
  char b[64];
  std::snprintf(b, sizeof b, f, x);
  return b;
}

const char* yes_no(bool b) { return b ? "yes" : "no"; }

// The graph the unit files were scored on, from the first batch; the others must agree.
eap::Graph graph_of(const io::UnitRecord& u, const std::string& path, const std::string& downstream_heads) {
  eap::Graph g;
  auto attr = [&](const char* k) -> int {
    auto it = u.int_attrs.find(k);
    if (it == u.int_attrs.end()) fail_input(path, std::string("attribute '") + k + "' is missing");
    return static_cast<int>(it->second);
  };
  g.n_layers = attr("n_layers");
  g.n_heads = attr("n_heads");
  g.options.downstream_heads = eap::parse_downstream_heads(downstream_heads, path);
  g.options.input_node = !u.upstream.empty() && u.upstream.back() == "input";
  g.options.logits_node = !u.downstream.empty() && u.downstream.back() == "logits";
  g.upstream = u.upstream;
  g.downstream = u.downstream;
  g.valid.assign(u.valid.begin(), u.valid.end());
  return g;
}

// What the folder holds of one cell's evaluation units (../shared/spec/circuits.md): the batches
// published, failed (with their notes' first lines) and missing. A damaged or foreign evaluation
// file stops the reduction, as a damaged unit file does: its numbers cannot be trusted or skipped.
struct EvaluationScan {
  bool asked = false;  // the sweep evaluates this cell
  std::string hash;    // the cell's evaluation_hash
  std::vector<int> present, failed, missing;
  std::vector<std::string> failures;  // "evaluation batch 3: <first line of its note>"
  bool complete(int n_batches) const { return asked && static_cast<int>(present.size()) == n_batches; }
};

EvaluationScan scan_evaluation(const std::string& out, const std::string& cell_id, const std::string& settings_hash,
                               const std::string& evaluation_hash, int n_batches) {
  EvaluationScan e;
  e.asked = true;
  e.hash = evaluation_hash;
  for (int b = 0; b < n_batches; ++b) {
    const std::string path = runner::kind_unit_path(out, "evaluation", cell_id, b);
    const runner::UnitCheck check = runner::inspect_evaluation_file(path, cell_id, settings_hash, evaluation_hash, b);
    if (check.state == runner::UnitState::damaged || check.state == runner::UnitState::foreign)
      throw InputError(check.why + " (" + (check.state == runner::UnitState::damaged ? "damaged" : "foreign") +
                       " evaluation file: run the job again, which moves it aside and recomputes it)");
    std::error_code ec;
    const std::string note = runner::failure_path(out, cell_id, b, "evaluate");
    if (check.state == runner::UnitState::published) {
      e.present.push_back(b);
    } else if (fs::exists(note, ec)) {
      e.failed.push_back(b);
      e.failures.push_back("evaluation batch " + std::to_string(b) + ": " + first_line(note));
    } else {
      e.missing.push_back(b);
    }
  }
  return e;
}

// "3 of 5 batches; missing 3-4; failed 2"
std::string evaluation_progress(const EvaluationScan& e, int n_batches) {
  return std::to_string(e.present.size()) + " of " + std::to_string(n_batches) + " batches" +
         (e.missing.empty() ? "" : "; missing " + report::ranges(e.missing)) + (e.failed.empty() ? "" : "; failed " + report::ranges(e.failed));
}

// A complete cell's evaluation read back: its faithfulness and what the files say about how the
// circuits were made (the nodes scored, pruning, the top_n of the consistent circuit).
struct CellEvaluation {
  eap::CellFaithfulness f;
  report::FaithfulnessContext context;
};

CellEvaluation read_cell_evaluation(const std::string& out, const std::string& cell_id, const std::vector<int>& batches,
                                    int n_batches) {
  CellEvaluation ce;
  std::vector<eap::BatchFaithfulness> per_batch;
  std::string first_path, no_faithfulness;
  for (int b : batches) {
    const std::string path = runner::kind_unit_path(out, "evaluation", cell_id, b);
    const io::EvaluationRecord e = io::read_evaluation(path);
    auto attr = [&](const char* key) -> int64_t {
      const auto it = e.int_attrs.find(key);
      if (it == e.int_attrs.end()) fail_input(path, std::string("attribute '") + key + "' is missing");
      return it->second;
    };
    if (first_path.empty()) {
      first_path = path;
      no_faithfulness = e.no_faithfulness;
      ce.context.input_node = attr("input_node") != 0;
      ce.context.logits_node = attr("logits_node") != 0;
      const auto heads = e.text_attrs.find("downstream_heads");
      ce.context.head_destinations = heads == e.text_attrs.end() || heads->second != "none";
      ce.context.pruned = attr("prune") != 0;
      ce.context.top_n = static_cast<int>(attr("top_n"));
    } else if (e.no_faithfulness != no_faithfulness) {
      // Every batch shares the cell's baselines, so F is defined for all of them or for none.
      fail_input(path, "says F is " + std::string(e.no_faithfulness.empty() ? "defined" : "undefined") + ", " + first_path +
                           " says the opposite (files of two different evaluations?)");
    }
    eap::BatchFaithfulness bf;
    bf.circuit = e.circuit;
    bf.k = e.circuit_k;
    bf.edges = e.edge_count;
    bf.f = e.faithfulness;
    per_batch.push_back(std::move(bf));
  }
  ce.f = eap::cell_faithfulness(per_batch, no_faithfulness, out + "/evaluation/" + cell_id);
  ce.context.batches_evaluated = static_cast<int>(batches.size());
  ce.context.n_batches = n_batches;
  return ce;
}

// When the reduction ranks edges otherwise than the sweep did for the circuit it evaluated, the
// edges of the JSON and the page are not the circuit whose F is shown: say so.
std::string circuit_note(int evaluated_top_n, int top_n, bool signed_rank) {
  if (evaluated_top_n == top_n && !signed_rank) return "";
  return "F of the consistent circuit is that of the job's top_n " + std::to_string(evaluated_top_n) +
         " ranked by |score|, as the sweep evaluated it; the edges here were reduced with top_n " + std::to_string(top_n) +
         (signed_rank ? " ranked by signed score (--signed)" : " (reduce --top-n)") + ", so they are another set";
}

// The summary's F numbers of a cell from its faithfulness.
void set_summary_faithfulness(report::CellSummary& s, const eap::CellFaithfulness& f) {
  s.has_faithfulness = true;
  s.no_faithfulness = f.no_faithfulness;
  s.f_auc = f.auc;
  if (const auto* c = f.find("consistent")) {
    s.f_consistent = c->f;
    s.f_consistent_spread = c->spread;
    s.consistent_circuit_edges = c->edges;
  }
  if (const auto* c = f.find("empty")) s.f_empty = c->f;
}

// A done cell's `faithfulness` object and its summary numbers; while its evaluation is not
// complete, what is missing, among its problems too, and no F.
nlohmann::ordered_json faithfulness_of(const std::string& out, report::CellSummary& s, const EvaluationScan& e,
                                       const eap::Graph& g, int job_top_n, int top_n, bool signed_rank, bool prune) {
  if (e.complete(s.n_batches)) {
    CellEvaluation ce = read_cell_evaluation(out, s.id, e.present, s.n_batches);
    ce.context.note = circuit_note(ce.context.top_n, top_n, signed_rank);
    set_summary_faithfulness(s, ce.f);
    return report::faithfulness_json(ce.f, ce.context);
  }
  report::FaithfulnessContext fc;
  fc.input_node = g.options.input_node;
  fc.logits_node = g.options.logits_node;
  fc.head_destinations = g.heads_down();
  fc.pruned = prune;
  fc.top_n = job_top_n;
  fc.batches_evaluated = static_cast<int>(e.present.size());
  fc.n_batches = s.n_batches;
  fc.note = circuit_note(job_top_n, top_n, signed_rank);
  s.no_faithfulness = "evaluation: " + evaluation_progress(e, s.n_batches);
  s.problems.push_back(s.no_faithfulness);
  for (const auto& f : e.failures) s.problems.push_back(f);
  return report::faithfulness_incomplete_json(fc, e.missing, e.failed);
}

// The summary's line on the evaluation: its circuits (the manifest's `evaluate`) and which
// consistent circuit was evaluated.
std::string evaluation_line(const json& e, int top_n_override, bool signed_rank) {
  auto list = [](const json& xs) {
    std::string s;
    if (xs.is_array())
      for (const json& x : xs) s += (s.empty() ? "" : ", ") + (x.is_string() ? x.get<std::string>() : x.dump());
    return s;
  };
  std::string line = "Faithfulness: circuits " + list(e.value("circuits", json::array())) + "; top-k for k in " +
                     list(e.value("top_k", json::array())) + (e.value("prune", false) ? "; pruned" : "") +
                     "; the consistent circuit evaluated is the job's (its top_n, ranked by |score|)";
  if (top_n_override > 0 || signed_rank)
    line += ", not the edges of this reduction (" + std::string(top_n_override > 0 ? "--top-n " + std::to_string(top_n_override) : "") +
            (top_n_override > 0 && signed_rank ? ", " : "") + (signed_rank ? "--signed" : "") + ")";
  return line;
}

// --- reduce --compare OTHER ------------------------------------------------------------------

// A sweep's manifest read for a comparison: OTHER missing or not a sweep is one line naming it.
json read_manifest_for_compare(const std::string& folder) {
  std::error_code ec;
  if (!fs::is_directory(folder, ec)) fail_input(folder, "--compare: not a sweep folder (no such folder)");
  const std::string path = folder + "/sweep.json";
  if (!fs::exists(path, ec)) fail_input(folder, "--compare: not a sweep folder (no sweep.json)");
  const json m = json::parse(read_file(path, kMaxJsonFile), nullptr, false);
  if (m.is_discarded()) fail_input(path, "--compare: not valid JSON");
  if (!m.is_object() || !m.contains("cells") || !m["cells"].is_array())
    fail_input(path, "--compare: not a sweep manifest (no 'cells' list)");
  return m;
}

// The settings string without the keys that only say how the scores were computed.
std::map<std::string, std::string> settings_but_method(const std::string& s) {
  std::map<std::string, std::string> out = runner::split_settings(s);
  out.erase("method");
  out.erase("ig_steps");
  return out;
}

// The keys in which two cells' settings differ, besides the method; "" when none.
std::string settings_difference(const json& a, const json& b) {
  const auto sa = settings_but_method(a.value("settings", "")), sb = settings_but_method(b.value("settings", ""));
  std::set<std::string> keys;
  for (const auto& [k, v] : sa)
    if (!sb.count(k) || sb.at(k) != v) keys.insert(k);
  for (const auto& [k, v] : sb)
    if (!sa.count(k)) keys.insert(k);
  std::string d;
  for (const auto& k : keys) d += (d.empty() ? "" : ", ") + k;
  return d;
}

// A cell's method as a label: "eap", "clean-corrupted", "eap-ig-inputs (m=5)" (methods.method_of).
std::string method_label(const json& c) {
  const std::string m = c.contains("method") && c["method"].is_string() ? c["method"].get<std::string>() : "eap";
  if (m == "eap-ig-inputs" && c.contains("ig_steps") && c["ig_steps"].is_number_integer())
    return m + " (m=" + std::to_string(c["ig_steps"].get<int64_t>()) + ")";
  return m;
}

// One sweep's complete cell read for a comparison.
struct CompareCell {
  std::string why_not;  // set when it cannot be compared
  std::vector<std::string> upstream, downstream;
  std::vector<uint8_t> valid;
  std::vector<double> mean_scores;  // mean over batches of the normalised score, valid edges in graph order
  std::set<std::pair<std::string, std::string>> consistent;
  double f = std::numeric_limits<double>::quiet_NaN();
  int evaluated = 0;
};

CompareCell read_compare_cell(const std::string& out, const json& manifest, const json& cell, int top_n_override,
                              bool signed_rank) {
  CompareCell cc;
  const CellJson c{cell, out + "/sweep.json: cell"};
  const std::string id = c.str("id");
  const int nb = static_cast<int>(c.integer("n_batches"));
  const std::string settings_hash = c.str_or("settings_hash", "");
  std::vector<io::UnitRecord> units;
  std::vector<int> missing;
  for (int b = 0; b < nb; ++b) {
    const std::string path = runner::unit_path(out, id, b);
    const runner::UnitCheck check = runner::inspect_unit_file(path, id, settings_hash, b);
    if (check.state == runner::UnitState::published) {
      units.push_back(io::read_unit(path));
      const io::UnitRecord& u = units.back();
      if (u.upstream != units.front().upstream || u.downstream != units.front().downstream || u.valid != units.front().valid)
        fail_input(path, "its graph (node names or edge mask) differs from batch 0's");
    } else {
      missing.push_back(b);
    }
  }
  if (!missing.empty()) {
    cc.why_not = "not complete in " + out + " (" + std::to_string(nb - missing.size()) + " of " + std::to_string(nb) + " batches)";
    return cc;
  }
  const std::string heads = c.str_or("downstream_heads", "qkv");
  const eap::Graph g = graph_of(units.front(), runner::unit_path(out, id, 0), heads);
  const eap::MetricPairing pairing = eap::parse_metric_pairing(c.str_or("metric_pairing", "own"), out + ": cell " + id);
  std::vector<eap::BatchScores> batches(units.size());
  std::vector<const eap::BatchScores*> ptrs;
  for (size_t k = 0; k < units.size(); ++k) {
    batches[k] = runner::batch_scores_of(std::move(units[k]));
    ptrs.push_back(&batches[k]);
  }
  const eap::Baselines bl = eap::baselines(ptrs, pairing);
  if (bl.degenerate()) {
    cc.why_not = "degenerate in " + out + ": " + bl.describe();
    return cc;
  }
  cc.upstream = g.upstream;
  cc.downstream = g.downstream;
  cc.valid.assign(g.valid.begin(), g.valid.end());
  // As analysis/tinysql_eap/methods.py: the float32 score promoted to double times 1 / (LD_clean -
  // LD_corr), summed over batches in order, divided by their number.
  const double scale = 1.0 / bl.denominator();
  const size_t n = static_cast<size_t>(g.upstream.size()) * g.downstream.size();
  for (size_t e = 0; e < n; ++e) {
    if (!cc.valid[e]) continue;
    double sum = 0;
    for (const auto* s : ptrs) sum += static_cast<double>(s->scores[e]) * scale;
    cc.mean_scores.push_back(sum / static_cast<double>(ptrs.size()));
  }
  const int top_n = top_n_override > 0 ? top_n_override : static_cast<int>(c.integer_or("top_n", 10));
  const runner::CellResult r = runner::reduce_cell(g, ptrs, top_n, signed_rank, pairing);
  for (const eap::Edge& e : r.edges)
    cc.consistent.insert({eap::display_name(g.upstream[e.up]), eap::display_name(g.downstream[e.down])});
  const std::string evaluation_hash = c.str_or("evaluation_hash", "");
  if (manifest.contains("evaluate") && !evaluation_hash.empty()) {
    const EvaluationScan scan = scan_evaluation(out, id, settings_hash, evaluation_hash, nb);
    if (scan.complete(nb)) {
      const CellEvaluation ce = read_cell_evaluation(out, id, scan.present, nb);
      if (const auto* cf = ce.f.find("consistent")) cc.f = cf->f;
      cc.evaluated = static_cast<int>(scan.present.size());
    }
  }
  return cc;
}

// This sweep (out) against OTHER, cell by cell, with the comparison's JSON written beside
// index.html as compare-<OTHER's folder name>.json.
report::MethodComparison compare_sweeps(const std::string& out, const json& manifest, const std::string& other,
                                        const json& other_manifest, int top_n_override, bool signed_rank,
                                        const std::string& dest) {
  report::MethodComparison m;
  m.other = other;
  std::map<std::string, const json*> theirs;
  for (const json& c : other_manifest["cells"])
    if (c.is_object() && c.contains("id") && c["id"].is_string()) theirs[c["id"].get<std::string>()] = &c;
  std::vector<std::pair<std::string, std::string>> skipped;
  for (const json& ca : manifest["cells"]) {
    const std::string id = ca.value("id", "");
    const auto it = theirs.find(id);
    if (it == theirs.end()) {
      skipped.push_back({id, "not in " + other});
      continue;
    }
    const json& cb = *it->second;
    const std::string diff = settings_difference(ca, cb);
    if (!diff.empty()) {
      skipped.push_back({id, "the sweeps differ in " + diff});
      continue;
    }
    const CompareCell a = read_compare_cell(out, manifest, ca, top_n_override, signed_rank);
    if (!a.why_not.empty()) {
      skipped.push_back({id, a.why_not});
      continue;
    }
    const CompareCell b = read_compare_cell(other, other_manifest, cb, top_n_override > 0 ? top_n_override
                                                                                           : static_cast<int>(ca.value("top_n", 10)),
                                            signed_rank);
    if (!b.why_not.empty()) {
      skipped.push_back({id, b.why_not});
      continue;
    }
    if (a.upstream != b.upstream || a.downstream != b.downstream || a.valid != b.valid) {
      skipped.push_back({id, "the graphs differ: " + std::to_string(a.mean_scores.size()) + " and " +
                                 std::to_string(b.mean_scores.size()) + " valid edges"});
      continue;
    }
    report::MethodComparisonRow r;
    r.cell_id = id;
    r.method_a = method_label(ca);
    r.method_b = method_label(cb);
    r.n_edges = static_cast<int64_t>(a.mean_scores.size());
    r.spearman = eap::spearman(a.mean_scores, b.mean_scores);
    r.consistent_a = static_cast<int64_t>(a.consistent.size());
    r.consistent_b = static_cast<int64_t>(b.consistent.size());
    for (const auto& e : a.consistent)
      if (b.consistent.count(e)) r.common_edges.push_back(e);
    r.common = static_cast<int64_t>(r.common_edges.size());
    r.jaccard = eap::jaccard(a.consistent.size(), b.consistent.size(), r.common_edges.size());
    r.f_a = a.f;
    r.f_b = b.f;
    r.evaluated_a = a.evaluated;
    r.evaluated_b = b.evaluated;
    m.rows.push_back(std::move(r));
  }
  for (const auto& [id, why] : skipped) m.not_compared.push_back(id + ": " + why);

  auto number = [](double x) { return std::isfinite(x) ? json(x) : json(nullptr); };
  nlohmann::ordered_json j;
  j["format"] = "tinysql-eap method comparison v1";
  j["a"] = fs::absolute(out).lexically_normal().string();
  j["b"] = fs::absolute(other).lexically_normal().string();
  j["top_n_override"] = top_n_override > 0 ? json(top_n_override) : json(nullptr);  // null: each cell's top_n in a's manifest
  j["signed_rank"] = signed_rank;
  j["cells"] = nlohmann::ordered_json::array();
  for (const auto& r : m.rows) {
    nlohmann::ordered_json c;
    c["cell_id"] = r.cell_id;
    c["method_a"] = r.method_a;
    c["method_b"] = r.method_b;
    c["n_edges"] = r.n_edges;
    c["spearman"] = number(r.spearman);
    c["consistent_a"] = r.consistent_a;
    c["consistent_b"] = r.consistent_b;
    c["common"] = r.common;
    c["jaccard"] = number(r.jaccard);
    c["f_a"] = number(r.f_a);
    c["f_b"] = number(r.f_b);
    c["evaluated_a"] = r.evaluated_a;
    c["evaluated_b"] = r.evaluated_b;
    c["common_edges"] = nlohmann::ordered_json::array();
    for (const auto& [from, to] : r.common_edges) c["common_edges"].push_back({from, to});
    j["cells"].push_back(std::move(c));
  }
  j["not_compared"] = nlohmann::ordered_json::array();
  for (const auto& [id, why] : skipped) j["not_compared"].push_back({{"cell_id", id}, {"reason", why}});
  std::string name = fs::path(fs::absolute(other).lexically_normal()).filename().string();
  if (name.empty() || name == "." || name == "..") name = "other";
  m.json_href = "compare-" + name + ".json";
  write_file_atomic(dest + "/" + m.json_href, j.dump(2) + "\n");
  return m;
}

}  // namespace

// The quality thresholds: the sweep's (the job's [quality], kept in the manifest), then the options.
eap::QualityThresholds quality_thresholds(const json& manifest, const std::string& manifest_path, const QualityOptions& o) {
  eap::QualityThresholds t;
  if (manifest.contains("quality")) {
    const json& q = manifest["quality"];
    auto take = [&](const char* key, double& v) {
      if (!q.contains(key)) return;
      if (!q[key].is_number()) fail_input(manifest_path, std::string("quality.") + key + ": not a number");
      v = q[key].get<double>();
    };
    if (!q.is_object()) fail_input(manifest_path, "quality: not an object");
    take("min_effect_vs_clean", t.min_effect_vs_clean);
    take("min_effect_vs_spread", t.min_effect_vs_spread);
    take("min_accuracy", t.min_accuracy);
  }
  if (o.min_effect_vs_clean) t.min_effect_vs_clean = *o.min_effect_vs_clean;
  if (o.min_effect_vs_spread) t.min_effect_vs_spread = *o.min_effect_vs_spread;
  if (o.min_accuracy) t.min_accuracy = *o.min_accuracy;
  return t;
}

json quality_json(const eap::CellQuality& q, const eap::QualityThresholds& t) {
  json j = {{"effect", q.effect},
            {"effect_spread_over_batches", q.effect_spread},
            {"ld_spread_over_prompts", q.ld_spread},
            {"clean_accuracy", q.clean_accuracy},
            {"flip_fraction", std::isfinite(q.flip_fraction) ? json(q.flip_fraction) : json(nullptr)},
            {"flags", q.flags},
            {"reasons", q.reasons},
            {"thresholds",
             {{"min_effect_vs_clean", t.min_effect_vs_clean},
              {"min_effect_vs_spread", t.min_effect_vs_spread},
              {"min_accuracy", t.min_accuracy}}}};
  return j;
}

// A folder argument without its trailing '/'.
std::string folder_arg(const std::string& s) { return s.size() > 1 && s.back() == '/' ? s.substr(0, s.size() - 1) : s; }

// reduce --out DEST: a folder for the results, not another sweep (whose own results would mix
// with these); checked before any work.
void check_dest(const std::string& dest, const std::string& out) {
  std::error_code ec;
  if (fs::exists(dest, ec) && !fs::is_directory(dest, ec)) throw InputError("--out " + dest + ": not a folder");
  if (fs::equivalent(dest, out, ec)) return;
  if (fs::exists(fs::path(dest) / "sweep.json", ec))
    throw InputError("--out " + dest + ": holds another sweep (sweep.json): give a folder for results only");
  fs::create_directories(dest, ec);
  if (ec || !fs::is_directory(dest)) throw InputError("--out " + dest + ": cannot be created as a folder (" + ec.message() + ")");
}

std::string reduce_sweep(const std::string& out_arg, const ReduceOptions& options) {
  const int top_n_override = options.top_n;
  const bool signed_rank = options.signed_rank;
  const QualityOptions& quality = options.quality;
  const std::string out = folder_arg(out_arg);
  const std::string other = folder_arg(options.compare_with);
  const std::string dest = options.dest.empty() ? out : folder_arg(options.dest);
  // OTHER is checked before any work: a wrong folder is one line naming it.
  const json other_manifest = other.empty() ? json() : read_manifest_for_compare(other);
  const std::string manifest_path = out + "/sweep.json";
  const std::string text = read_file(manifest_path, kMaxJsonFile);
  const json manifest = json::parse(text, nullptr, false);
  if (manifest.is_discarded()) fail_input(manifest_path, "not valid JSON");
  if (!manifest.is_object() || !manifest.contains("cells") || !manifest["cells"].is_array())
    fail_input(manifest_path, "not a sweep manifest (no 'cells' list)");
  const json& cells = manifest["cells"];
  if (cells.empty()) fail_input(manifest_path, "no cells: the sweep is empty");
  const eap::QualityThresholds thresholds = quality_thresholds(manifest, manifest_path, quality);

  // First pass: what is on disk for every cell.
  struct Plan {
    report::CellSummary s;
    std::vector<int> present, failed, missing;
    int top_n = 10;
    std::string hf_model, dtype, device, downstream_heads, metric_pairing, settings_hash;
    json seed;
    int64_t num_fields = 0, batch_size = 0;
    int job_top_n = 10;   // the job's, which made the consistent circuit the sweep evaluated
    EvaluationScan eval;  // asked: false when the sweep does not evaluate
  };
  // The sweep evaluates its cells when the job had an [evaluate] table (kept in the manifest).
  const bool evaluates = manifest.contains("evaluate");
  bool evaluate_prune = false;
  if (evaluates) {
    const json& e = manifest["evaluate"];
    if (!e.is_object()) fail_input(manifest_path, "evaluate: not an object");
    if (e.contains("prune") && !e["prune"].is_boolean()) fail_input(manifest_path, "evaluate.prune: not a boolean");
    evaluate_prune = e.value("prune", false);
  }
  std::vector<Plan> plans;
  int64_t any_file = 0;
  for (size_t i = 0; i < cells.size(); ++i) {
    const CellJson c{cells[i], manifest_path + ": cells[" + std::to_string(i) + "]"};
    if (!cells[i].is_object()) throw InputError(c.where + ": not an object");
    Plan p;
    p.s.id = c.str("id");
    if (p.s.id.empty() || p.s.id.find('/') != std::string::npos || p.s.id[0] == '.')
      throw InputError(c.where + ".id: '" + p.s.id + "' is not a cell id");
    p.s.model = c.integer("model");
    p.s.commandset = c.integer("commandset");
    p.s.feature = c.str("feature");
    p.s.use_novel_names = c.boolean("use_novel_names");
    p.s.use_synonyms_field = c.boolean("use_synonyms_field");
    p.s.use_synonyms_table = c.boolean("use_synonyms_table");
    const int64_t nb = c.integer("n_batches");
    if (nb < 1 || nb > 10000000) throw InputError(c.where + ".n_batches: " + std::to_string(nb) + " is not a batch count");
    p.s.n_batches = static_cast<int>(nb);
    p.job_top_n = static_cast<int>(c.integer_or("top_n", 10));
    p.top_n = top_n_override > 0 ? top_n_override : p.job_top_n;
    if (p.top_n < 1) throw InputError(c.where + ".top_n: must be at least 1");
    p.s.top_n = p.top_n;
    p.hf_model = c.str_or("hf_model", "");
    p.dtype = c.str_or("dtype", "");
    p.device = c.str_or("device", "");
    p.downstream_heads = c.str_or("downstream_heads", "qkv");
    p.metric_pairing = c.str_or("metric_pairing", "own");
    p.settings_hash = c.str_or("settings_hash", "");
    p.seed = cells[i].contains("seed") ? cells[i]["seed"] : json(nullptr);
    p.num_fields = c.integer_or("num_fields", 0);
    p.batch_size = c.integer_or("batch_size", 0);
    for (int b = 0; b < p.s.n_batches; ++b) {
      std::error_code ec;
      const std::string unit = runner::unit_path(out, p.s.id, b);
      const runner::UnitCheck check = runner::inspect_unit_file(unit, p.s.id, p.settings_hash, b);
      if (check.state == runner::UnitState::damaged || check.state == runner::UnitState::foreign)
        throw InputError(check.why + " (" + (check.state == runner::UnitState::damaged ? "damaged" : "foreign") +
                         " unit file: run the job again, which moves it aside and recomputes it)");
      if (check.state == runner::UnitState::published) {
        p.present.push_back(b);
      } else if (fs::exists(runner::failure_path(out, p.s.id, b), ec)) {
        p.failed.push_back(b);
        p.s.problems.push_back("batch " + std::to_string(b) + ": " + first_line(runner::failure_path(out, p.s.id, b)));
      } else {
        p.missing.push_back(b);
      }
    }
    const std::string evaluation_hash = c.str_or("evaluation_hash", "");
    if (evaluates && !evaluation_hash.empty())
      p.eval = scan_evaluation(out, p.s.id, p.settings_hash, evaluation_hash, p.s.n_batches);
    p.s.evaluated = p.eval.asked;
    p.s.batches_evaluated = static_cast<int>(p.eval.present.size());
    any_file += p.present.size() + p.failed.size();
    p.s.batches_present = static_cast<int>(p.present.size());
    p.s.batches_failed = static_cast<int>(p.failed.size());
    if (!p.missing.empty() && !p.present.empty())
      p.s.problems.push_back("missing batch" + std::string(p.missing.size() > 1 ? "es " : " ") + report::ranges(p.missing));
    p.s.status = !p.failed.empty()                   ? report::CellStatus::Failed
                 : p.present.size() == size_t(nb)    ? report::CellStatus::Done
                 : !p.present.empty()                ? report::CellStatus::Partial
                                                     : report::CellStatus::Missing;
    plans.push_back(std::move(p));
  }
  if (!any_file) fail_input(out + "/units", "no unit files: the sweep has not finished any batch yet (run the job first)");

  if (dest != out) check_dest(dest, out);
  // One plotly.js for the folder's pages (cells/<id>/sankey.html load ../../plotly.min.js), unless
  // every page is to open alone. Loaded here either way: a missing file fails before any work.
  std::string plotly_js = report::load_plotly_js(), plotly_src;
  if (!options.self_contained) {
    write_if_changed(dest + "/plotly.min.js", plotly_js);
    plotly_js.clear();
    plotly_src = "../../plotly.min.js";
  }

  // Second pass: reduce the complete cells, one at a time (their units are read, then released).
  int done = 0, degenerate = 0;
  for (Plan& p : plans) {
    if (p.s.status != report::CellStatus::Done) continue;
    std::vector<io::UnitRecord> units;
    std::vector<std::string> paths;
    for (int b : p.present) {
      paths.push_back(runner::unit_path(out, p.s.id, b));
      units.push_back(io::read_unit(paths.back()));
      const io::UnitRecord& u = units.back();
      auto id = u.text_attrs.find("cell_id");
      if (id != u.text_attrs.end() && id->second != p.s.id)
        fail_input(paths.back(), "holds cell " + id->second + ", not " + p.s.id);
      auto bi = u.int_attrs.find("batch_index");
      if (bi != u.int_attrs.end() && bi->second != b)
        fail_input(paths.back(), "holds batch " + std::to_string(bi->second) + ", not " + std::to_string(b));
      if (u.upstream != units.front().upstream || u.downstream != units.front().downstream || u.valid != units.front().valid)
        fail_input(paths.back(), "its graph (node names or edge mask) differs from " + paths.front());
    }
    const eap::Graph g = graph_of(units.front(), paths.front(), p.downstream_heads);
    p.s.arch = report::arch_of(p.s.model, g.n_layers, g.n_heads);
    const eap::MetricPairing pairing = eap::parse_metric_pairing(p.metric_pairing, manifest_path + ": cell " + p.s.id);
    std::vector<eap::BatchScores> batches(units.size());
    std::vector<const eap::BatchScores*> ptrs;
    for (size_t k = 0; k < units.size(); ++k) {
      batches[k] = runner::batch_scores_of(std::move(units[k]));
      ptrs.push_back(&batches[k]);
    }
    const eap::CellQuality q = eap::assess_cell(ptrs, thresholds);
    p.s.quality_known = true;
    p.s.effect = q.effect;
    p.s.effect_spread = q.effect_spread;
    p.s.flip_fraction = q.flip_fraction;
    p.s.flags = q.flags;
    for (const auto& why : q.reasons) p.s.problems.push_back(why);
    const eap::Baselines bl = eap::baselines(ptrs, pairing);
    int correct = 0, prompts = 0;
    for (const auto* s : ptrs) {
      correct += s->clean_correct;
      prompts += s->n_prompts;
    }
    p.s.has_baselines = std::isfinite(bl.clean_ld) && std::isfinite(bl.corrupt_ld);
    p.s.clean_ld = bl.clean_ld;
    p.s.corrupt_ld = bl.corrupt_ld;
    p.s.clean_accuracy = prompts ? double(correct) / prompts : 0.0;
    const fs::path dir = fs::path(dest) / "cells" / p.s.id;
    if (bl.degenerate()) {
      // Its evaluation files hold LDs but no F (F divides by LD_clean - LD_corr).
      if (p.eval.asked) p.s.no_faithfulness = "degenerate cell: " + bl.describe() + " (F divides by their difference)";
      p.s.status = report::CellStatus::Degenerate;
      ++degenerate;
      continue;
    }
    const runner::CellResult r = runner::reduce_cell(g, ptrs, p.top_n, signed_rank, pairing);
    p.s.clean_metric = r.clean_metric;
    p.s.corrupt_metric = r.corrupt_metric;
    p.s.clean_accuracy = r.clean_accuracy;
    for (const eap::Edge& e : r.edges)
      p.s.edges.push_back({eap::display_name(g.upstream[e.up]), eap::display_name(g.downstream[e.down]), e.score});

    report::Result res;
    res.metadata.model = p.s.model;
    res.metadata.commandset = p.s.commandset;
    res.metadata.hf_model = p.hf_model;
    res.metadata.feature_name = p.s.feature;
    res.metadata.use_novel_names = p.s.use_novel_names;
    res.metadata.use_synonyms_field = p.s.use_synonyms_field;
    res.metadata.use_synonyms_table = p.s.use_synonyms_table;
    res.metadata.num_sql_fields = p.num_fields;
    res.metadata.batch_size = p.batch_size;
    res.metadata.n_batches = p.s.n_batches;
    res.metadata.n_positions = r.n_positions;
    res.metadata.n_layers = g.n_layers;
    res.metadata.n_heads = g.n_heads;
    res.edges = p.s.edges;
    set_result_parameters(res.parameters, r, pairing, p.top_n);
    auto& x = res.parameters.extra;
    x["clean_accuracy"] = r.clean_accuracy;
    x["n_prompts"] = bl.n_prompts;
    x["downstream_heads"] = p.downstream_heads;
    x["metric_pairing"] = p.metric_pairing;
    x["signed_rank"] = signed_rank;
    x["seed"] = p.seed;
    x["dtype"] = p.dtype;
    x["device"] = p.device;
    x["cell_id"] = p.s.id;
    x["settings_hash"] = p.settings_hash;
    x["program_version"] = TEAP_VERSION;
    x["quality"] = quality_json(q, thresholds);
    if (p.eval.asked) res.faithfulness = faithfulness_of(out, p.s, p.eval, g, p.job_top_n, p.top_n, signed_rank, evaluate_prune);
    const std::string json_name = report::result_file_name(res.metadata);

    report::PageInfo info;
    info.title = p.s.id;
    info.lines = {"BM" + std::to_string(p.s.model) + " CS" + std::to_string(p.s.commandset) + " " + p.s.feature +
                      ": novel names " + yes_no(p.s.use_novel_names) + ", synonyms field " + yes_no(p.s.use_synonyms_field) +
                      ", synonyms table " + yes_no(p.s.use_synonyms_table) + "; " + p.hf_model,
                  "LD clean " + fmt("%.4f", bl.clean_ld) + ", LD corrupt " + fmt("%.4f", bl.corrupt_ld) +
                      ", clean accuracy " + fmt("%.1f%%", 100 * r.clean_accuracy) + ", " + std::to_string(bl.n_prompts) +
                      " prompts",
                  "Effect LD clean - LD corrupt " + fmt("%.4f", q.effect) + " (spread over batches " +
                      fmt("%.3f", q.effect_spread) + "), top answer flips under corruption for " +
                      (std::isfinite(q.flip_fraction) ? fmt("%.1f%%", 100 * q.flip_fraction) : std::string("(not recorded)")) +
                      " of prompts",
                  std::to_string(r.edges.size()) + " edges in the top " + std::to_string(p.top_n) + " of all " +
                      std::to_string(p.s.n_batches) + " batches (ranked by " + (signed_rank ? "signed score" : "|score|") +
                      "); link width |mean normalised score|, blue positive, red negative"};
    for (const auto& why : q.reasons) info.lines.insert(info.lines.begin(), "FLAGGED " + why);
    info.faithfulness = res.faithfulness;
    const report::Sankey sk = report::build_sankey(p.s.edges);
    fs::create_directories(dir);
    write_file_atomic((dir / json_name).string(), report::dump_python_json(report::to_json(res)));
    write_file_atomic((dir / "sankey.html").string(), report::sankey_html(sk, info, plotly_js, plotly_src));
    write_file_atomic((dir / "sankey.svg").string(), report::sankey_svg(sk, info));
    const std::string rel = "cells/" + p.s.id + "/";
    p.s.json_href = rel + json_name;
    p.s.html_href = rel + "sankey.html";
    p.s.svg_href = rel + "sankey.svg";
    ++done;
  }

  report::SweepSummary sum;
  sum.title = "tinysql-eap sweep: " + fs::path(fs::absolute(out)).lexically_normal().filename().string();
  const std::string job = manifest.contains("job") && manifest["job"].is_string() ? manifest["job"].get<std::string>() : "";
  sum.lines = {"Folder " + fs::absolute(out).lexically_normal().string() + (job.empty() ? "" : "; job " + job) +
                   (dest == out ? "" : "; results in " + fs::absolute(dest).lexically_normal().string()),
               std::string("Top-n per batch: ") +
                   (top_n_override > 0 ? std::to_string(top_n_override) + " (--top-n)" : "the job's") + ", ranked by " +
                   (signed_rank ? "signed score" : "|score|") + "; consistent edges are in the top-n of every batch of the cell",
               std::string("Reduced by tinysql-eap ") + TEAP_VERSION + " at " + report::iso_timestamp_now()};
  sum.include_flagged = quality.include_flagged;
  sum.lines.push_back("Quality flags: low_effect when |LD_clean - LD_corr| < " + fmt("%g", thresholds.min_effect_vs_clean) +
                      " x |LD_clean| or < " + fmt("%g", thresholds.min_effect_vs_spread) +
                      " x the spread of LD over prompts; low_accuracy below " + fmt("%g", 100 * thresholds.min_accuracy) +
                      "% clean accuracy" +
                      (quality.include_flagged ? "; flagged cells are included in the comparisons (--include-flagged)"
                                               : "; flagged cells are left out of the heatmap, its colour scale and the "
                                                 "recurrence table (reduce --include-flagged puts them back)"));
  if (evaluates) sum.lines.push_back(evaluation_line(manifest["evaluate"], top_n_override, signed_rank));
  for (const Plan& p : plans) sum.cells.push_back(p.s);
  if (!other.empty()) {
    sum.comparisons.push_back(compare_sweeps(out, manifest, other, other_manifest, top_n_override, signed_rank, dest));
    const report::MethodComparison& m = sum.comparisons.back();
    if (m.rows.empty())
      spdlog::warn("reduce --compare {}: no cell is comparable ({}{})", other,
                   m.not_compared.empty() ? std::string("no cell") : m.not_compared.front(),
                   m.not_compared.size() > 1 ? "; and " + std::to_string(m.not_compared.size() - 1) + " more" : "");
    std::printf("compared %zu cell(s) with %s: %s/%s\n", m.rows.size(), other.c_str(), out.c_str(), m.json_href.c_str());
  }
  sum.comparison_href = "comparison.html";
  const std::string index = dest + "/index.html";
  write_file_atomic(index, report::summary_html(sum));
  write_file_atomic(dest + "/comparison.html", report::comparison_html(sum, plotly_js, plotly_src.empty() ? "" : "plotly.min.js"));

  // What is not complete, listed; one warning line.
  std::vector<std::string> incomplete;
  for (const Plan& p : plans) {
    const auto st = p.s.status;
    if (st == report::CellStatus::Done) continue;
    std::string line = report::to_string(st) + ": " + p.s.id;
    if (st == report::CellStatus::Partial || st == report::CellStatus::Failed)
      line += " (" + std::to_string(p.present.size()) + " of " + std::to_string(p.s.n_batches) + " batches" +
              (p.missing.empty() ? "" : "; missing " + report::ranges(p.missing)) +
              (p.failed.empty() ? "" : "; failed " + report::ranges(p.failed)) + ")";
    if (st == report::CellStatus::Missing) line += " (no batch yet)";
    if (st == report::CellStatus::Degenerate) line += " (" + p.s.problems.back() + ")";
    incomplete.push_back(line);
  }
  // Reduced cells whose F is not known yet: their evaluation is not complete.
  int unevaluated = 0;
  for (const Plan& p : plans)
    if (p.s.status == report::CellStatus::Done && p.eval.asked && !p.s.has_faithfulness) {
      incomplete.push_back("evaluation incomplete: " + p.s.id + " (" + evaluation_progress(p.eval, p.s.n_batches) + ")");
      ++unevaluated;
    }
  std::printf("reduced %d of %zu cells into %s/cells\n", done, plans.size(), dest.c_str());
  const size_t shown = std::min<size_t>(incomplete.size(), 30);
  for (size_t k = 0; k < shown; ++k) std::printf("  %s\n", incomplete[k].c_str());
  if (incomplete.size() > shown) std::printf("  ... and %zu more (see %s)\n", incomplete.size() - shown, index.c_str());
  const size_t not_reduced = incomplete.size() - unevaluated;
  if (not_reduced)
    spdlog::warn("reduce: {} of {} cells not reduced ({} degenerate, {} incomplete); see the list above", not_reduced,
                 plans.size(), degenerate, not_reduced - degenerate);
  if (unevaluated)
    spdlog::warn("reduce: {} reduced cell(s) without F: their evaluation is incomplete (run the job again)", unevaluated);
  std::printf("%s\n", index.c_str());
  std::fflush(stdout);
  return index;
}

Run add_reduce_command(CLI::App& app) {
  struct Args {
    std::string out, compare, dest;
    int top_n = 0;
    bool signed_rank = false, shared_plotly = false, self_contained = false, include_flagged = false;
    double min_effect_vs_clean = 0, min_effect_vs_spread = 0, min_accuracy = 0;
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand(
      "reduce",
      "Reduce a sweep folder: per cell the notebook's JSON and Sankey (HTML, SVG), with its faithfulness when the sweep "
      "evaluated it, then OUT/index.html");
  sub->add_option("OUT", a->out, "sweep folder (holds sweep.json and units/)")->required();
  sub->add_option("--top-n", a->top_n, "edges kept per batch (default: the job's top_n)")->check(CLI::Range(1, 1 << 24));
  sub->add_flag("--signed", a->signed_rank, "rank by signed score instead of |score|");
  sub->add_option("--compare", a->compare,
                  "another sweep folder of the same cells scored by another method: the summary puts the two side by "
                  "side (Spearman of edge scores, overlap of consistent edges, F of each), also OUT/compare-<name>.json");
  CLI::Option* sub_min_effect_clean =
      sub->add_option("--min-effect-vs-clean", a->min_effect_vs_clean,
                      "low_effect below this fraction of |LD_clean| (default: the job's [quality], else 0.05)")
          ->check(CLI::Range(0.0, 1e9));
  CLI::Option* sub_min_effect_spread =
      sub->add_option("--min-effect-vs-spread", a->min_effect_vs_spread,
                      "low_effect below this fraction of the spread of LD over prompts (default: the job's, else 0.15)")
          ->check(CLI::Range(0.0, 1e9));
  CLI::Option* sub_min_accuracy = sub->add_option("--min-accuracy", a->min_accuracy,
                                                  "low_accuracy below this clean accuracy, 0..1 (default: the job's, else 0.5)")
                                      ->check(CLI::Range(0.0, 1.0));
  sub->add_flag("--include-flagged", a->include_flagged,
                "put flagged cells back into the heatmap, its colour scale and the recurrence table");
  sub->add_option("--out", a->dest,
                  "folder for the results (cells/, index.html, plotly.min.js; default OUT), e.g. OUT/top5 for a second "
                  "reduce with another --top-n beside the first");
  sub->add_flag("--self-contained", a->self_contained,
                "put plotly.js (4.6 MB) into every page so that each opens alone, instead of one plotly.min.js per "
                "folder that the pages load");
  sub->add_flag("--shared-plotly", a->shared_plotly, "(the default now; kept for old scripts)")->group("");
  return [a, sub_min_effect_clean, sub_min_effect_spread, sub_min_accuracy] {
    QualityOptions q;
    if (!sub_min_effect_clean->empty()) q.min_effect_vs_clean = a->min_effect_vs_clean;
    if (!sub_min_effect_spread->empty()) q.min_effect_vs_spread = a->min_effect_vs_spread;
    if (!sub_min_accuracy->empty()) q.min_accuracy = a->min_accuracy;
    q.include_flagged = a->include_flagged;
    ReduceOptions o;
    o.top_n = a->top_n;
    o.signed_rank = a->signed_rank;
    o.self_contained = a->self_contained;
    o.quality = q;
    o.compare_with = a->compare;
    o.dest = a->dest;
    reduce_sweep(a->out, o);
  };
}

}  // namespace teap::cli
