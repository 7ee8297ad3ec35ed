// `tinysql-eap reduce OUT`: from a sweep folder's per-batch HDF5 files, per complete cell the
// baselines over all its batches, the consistent edges, the notebook's JSON and the Sankey diagram
// (HTML and SVG) under OUT/cells/<id>/; then the summary page OUT/index.html. When the sweep
// evaluates its cells (OUT/evaluation/), each cell's faithfulness joins its JSON, page and summary
// row. Only the reduction is recomputed, so another --top-n costs seconds.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "cli/cell_result.hpp"
#include "cli/commands.hpp"
#include "eap/faithfulness.hpp"
#include "eap/graph.hpp"
#include "eap/metric.hpp"
#include "io/evaluation_file.hpp"
#include "io/unit_file.hpp"
#include "report/faithfulness_json.hpp"
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

// "2, 3-5, 9"
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
         (e.missing.empty() ? "" : "; missing " + ranges(e.missing)) + (e.failed.empty() ? "" : "; failed " + ranges(e.failed));
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

std::string reduce_sweep(const std::string& out_arg, int top_n_override, bool signed_rank, bool shared_plotly,
                         const QualityOptions& quality) {
  const std::string out = out_arg.size() > 1 && out_arg.back() == '/' ? out_arg.substr(0, out_arg.size() - 1) : out_arg;
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
      p.s.problems.push_back("missing batch" + std::string(p.missing.size() > 1 ? "es " : " ") + ranges(p.missing));
    p.s.status = !p.failed.empty()                   ? report::CellStatus::Failed
                 : p.present.size() == size_t(nb)    ? report::CellStatus::Done
                 : !p.present.empty()                ? report::CellStatus::Partial
                                                     : report::CellStatus::Missing;
    plans.push_back(std::move(p));
  }
  if (!any_file) fail_input(out + "/units", "no unit files: the sweep has not finished any batch yet (run the job first)");

  std::string plotly_js, plotly_src;
  if (shared_plotly) {
    write_file_atomic(out + "/plotly.min.js", report::load_plotly_js());
    plotly_src = "../../plotly.min.js";
  } else {
    plotly_js = report::load_plotly_js();  // fails early, before any work, when it is missing
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
    const eap::MetricPairing pairing = eap::parse_metric_pairing(p.metric_pairing, manifest_path + ": cell " + p.s.id);
    std::vector<eap::BatchScores> batches(units.size());
    std::vector<const eap::BatchScores*> ptrs;
    for (size_t k = 0; k < units.size(); ++k) {
      io::UnitRecord& u = units[k];
      eap::BatchScores& s = batches[k];
      s.n_upstream = u.n_upstream;
      s.n_downstream = u.n_downstream;
      s.n_prompts = u.n_prompts;
      s.n_positions = u.n_positions;
      s.scores = std::move(u.scores);
      s.clean_ld = std::move(u.clean_ld);
      s.corrupt_ld = std::move(u.corrupt_ld);
      s.clean_correct = static_cast<int>(u.clean_correct);
      s.clean_top = std::move(u.clean_top_token);
      s.corrupt_top = std::move(u.corrupt_top_token);
      ptrs.push_back(&s);
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
    const fs::path dir = fs::path(out) / "cells" / p.s.id;
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
  sum.lines = {"Folder " + fs::absolute(out).lexically_normal().string() + (job.empty() ? "" : "; job " + job),
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
  const std::string index = out + "/index.html";
  write_file_atomic(index, report::summary_html(sum));

  // What is not complete, listed; one warning line.
  std::vector<std::string> incomplete;
  for (const Plan& p : plans) {
    const auto st = p.s.status;
    if (st == report::CellStatus::Done) continue;
    std::string line = report::to_string(st) + ": " + p.s.id;
    if (st == report::CellStatus::Partial || st == report::CellStatus::Failed)
      line += " (" + std::to_string(p.present.size()) + " of " + std::to_string(p.s.n_batches) + " batches" +
              (p.missing.empty() ? "" : "; missing " + ranges(p.missing)) +
              (p.failed.empty() ? "" : "; failed " + ranges(p.failed)) + ")";
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
  std::printf("reduced %d of %zu cells into %s/cells\n", done, plans.size(), out.c_str());
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
    std::string out;
    int top_n = 0;
    bool signed_rank = false, shared_plotly = false, include_flagged = false;
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
  sub->add_flag("--shared-plotly", a->shared_plotly,
                "write plotly.min.js once as OUT/plotly.min.js and load it from there (pages then need that file "
                "beside them) instead of putting 4.5 MB into every page");
  return [a, sub_min_effect_clean, sub_min_effect_spread, sub_min_accuracy] {
    QualityOptions q;
    if (!sub_min_effect_clean->empty()) q.min_effect_vs_clean = a->min_effect_vs_clean;
    if (!sub_min_effect_spread->empty()) q.min_effect_vs_spread = a->min_effect_vs_spread;
    if (!sub_min_accuracy->empty()) q.min_accuracy = a->min_accuracy;
    q.include_flagged = a->include_flagged;
    reduce_sweep(a->out, a->top_n, a->signed_rank, a->shared_plotly, q);
  };
}

}  // namespace teap::cli
