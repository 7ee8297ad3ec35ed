// Owns the per-cell result JSON in the notebook's schema (`collect_eap_results` +
// `save_eap_results`): building it, writing it byte for byte as Python's json.dump(indent=2) would
// (floats rounded like round(x, 8), printed like repr), its file name, and reading one back (ours or
// the notebook's) into (from, to, score) edges. Plain data; no LibTorch.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace teap::report {

// One edge with the notebook's display names ("l0.h3", "l1.h7.q", "l0.mlp").
struct NamedEdge {
  std::string from, to;
  double score = 0;
};

// metadata{} of the notebook, key for key.
struct ResultMetadata {
  std::string source = "tinysql-eap";
  std::string timestamp;  // empty: now, as datetime.now().isoformat()
  int64_t model = 0, commandset = 0;
  std::string hf_model, feature_name;
  bool use_novel_names = false, use_synonyms_field = false, use_synonyms_table = false;
  int64_t num_sql_fields = 0, batch_size = 0, n_batches = 0, n_positions = 0, n_layers = 0, n_heads = 0;
};

// parameters{}: the notebook's five keys, then `extra` appended in its order (the notebook's
// additional_params). Extra values may be any JSON; their floats are rounded like the rest.
struct ResultParameters {
  int64_t top_n_edges = 0;
  double clean_logit_diff = 0, corrupt_logit_diff = 0, clean_metric = 0, corrupt_metric = 0;
  nlohmann::ordered_json extra = nlohmann::ordered_json::object();
};

struct Result {
  ResultMetadata metadata;
  ResultParameters parameters;
  std::vector<NamedEdge> edges;
  // Appended after the notebook's keys when not null: the cell's `faithfulness` object
  // (report/faithfulness_json.hpp). Undefined values in it are null.
  nlohmann::ordered_json faithfulness;
};

// The document, keys in the notebook's order. A non-finite float anywhere is a std::invalid_argument
// (no NaN is ever written; a degenerate cell has no result file).
nlohmann::ordered_json to_json(const Result& r);

// Text as Python's json.dump(obj, f, indent=2) writes it after save_eap_results' rounding: every
// float rounded to 8 decimals like round(x, 8) and printed like repr(float); ensure_ascii escaping;
// no trailing newline.
std::string dump_python_json(const nlohmann::ordered_json& doc, int indent = 2);

// round(x, 8) as Python computes it: the exact binary value rounded half-even to 8 decimals, back
// to the nearest double.
double python_round8(double x);

// repr(float) as Python 3 prints it: shortest round-trip digits, "1.0", "1e-05", "1e+16".
std::string python_float_repr(double x);

// `eap_results.BM{m}.CS{c}_cs1.{feature}.{novel}.{syn_table}.{syn_field}.json` with True/False.
std::string result_file_name(const ResultMetadata& m);

// datetime.now().isoformat(): local time, microseconds unless zero.
std::string iso_timestamp_now();

// A result JSON read back: the edges (`results_to_edges`) and the whole document for titles.
struct LoadedResult {
  nlohmann::json doc;
  std::vector<NamedEdge> edges;
};

// Reads any result JSON (ours or the notebook's). Missing file, invalid JSON, a missing or
// mistyped key: an InputError naming the file and the key ("x.json: edges[2].score: not a number").
LoadedResult read_result(const std::string& path);
std::vector<NamedEdge> read_result_edges(const std::string& path);
// The same on text already in memory; `where` names it in errors.
LoadedResult parse_result(const std::string& text, const std::string& where);

}  // namespace teap::report
