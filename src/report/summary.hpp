// Owns the sweep's summary page (OUT/index.html): every cell with its status, baselines, clean
// accuracy, number of consistent edges and links to its files; and the comparison across cells (a
// heatmap of edge x cell and the edges that recur most, with the features, command sets, models and
// flags of the cells they recur in); when the sweep evaluates its cells, F columns and a chart of
// F of the consistent circuit per cell, grouped by feature; with `reduce --compare`, the cells of
// another sweep scored by another method side by side. Self-contained HTML (inline CSS, inline
// SVG, no script, no network).
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "report/notebook_json.hpp"

namespace teap::report {

enum class CellStatus { Done, Partial, Missing, Failed, Degenerate };
std::string to_string(CellStatus s);  // "done", "partial", "missing", "failed", "degenerate"

struct CellSummary {
  std::string id;
  int64_t model = 0, commandset = 0;
  // "BM2.24x14" (report/comparison.hpp arch_of): node names compare only within one architecture.
  std::string arch;
  std::string feature;
  bool use_novel_names = false, use_synonyms_field = false, use_synonyms_table = false;
  CellStatus status = CellStatus::Missing;
  int batches_present = 0, n_batches = 0, batches_failed = 0;
  std::vector<std::string> problems;  // one line each: missing batches, failure messages
  bool has_baselines = false;         // done or degenerate: the numbers below are set
  double clean_ld = 0, corrupt_ld = 0, clean_metric = 0, corrupt_metric = 0, clean_accuracy = 0;
  int top_n = 0;
  // Cell quality (eap/quality.hpp), set when the cell's units were all read.
  bool quality_known = false;
  double effect = 0, effect_spread = 0, flip_fraction = 0;  // flip_fraction NaN: not recorded
  std::vector<std::string> flags;  // low_effect, low_accuracy, degenerate
  bool flagged() const { return !flags.empty(); }
  // Faithfulness (../shared/spec/circuits.md), when the sweep evaluates this cell: the numbers
  // are set (NaN where F is undefined) once every batch is evaluated; `no_faithfulness` says why
  // there is no F (evaluation incomplete, degenerate cell).
  bool evaluated = false;
  int batches_evaluated = 0;
  bool has_faithfulness = false;
  static constexpr double kNoF = std::numeric_limits<double>::quiet_NaN();
  double f_consistent = kNoF, f_consistent_spread = kNoF, f_auc = kNoF, f_empty = kNoF;
  int64_t consistent_circuit_edges = -1;  // -1: the consistent circuit was not evaluated
  std::string no_faithfulness;
  std::vector<NamedEdge> edges;                // consistent edges (done cells)
  std::string json_href, html_href, svg_href;  // relative to index.html; empty when not written
};

// One cell scored by two methods (`reduce --compare OTHER`): this sweep's (a) and OTHER's (b).
struct MethodComparisonRow {
  std::string cell_id, method_a, method_b;
  int64_t n_edges = 0;  // valid edges of the cell's graph
  double spearman = 0;  // of the mean normalised edge scores; NaN when either is constant
  int64_t consistent_a = 0, consistent_b = 0, common = 0;
  double jaccard = 0;
  std::vector<std::pair<std::string, std::string>> common_edges;  // (from, to)
  double f_a = CellSummary::kNoF, f_b = CellSummary::kNoF;       // F of each consistent circuit; NaN: none
  int evaluated_a = 0, evaluated_b = 0;                           // evaluated batches averaged
};

struct MethodComparison {
  std::string other;       // OTHER's folder as given
  std::string json_href;   // the comparison's JSON, relative to index.html
  std::vector<MethodComparisonRow> rows;
  std::vector<std::string> not_compared;  // "<cell id>: <reason>"
};

struct SweepSummary {
  std::string title = "tinysql-eap sweep";
  std::vector<std::string> lines;  // header lines (folder, job, settings)
  std::vector<CellSummary> cells;  // in manifest order
  bool include_flagged = false;    // flagged cells join the heatmap, its colour scale and the recurrence table
  int heatmap_rows = 60;           // rows of the heatmap: each cell's strongest edge, then the most recurrent
  int recurrence_rows = 40;        // rows of the recurrence table
  std::vector<MethodComparison> comparisons;  // `reduce --compare`: a "Methods compared" section each
  std::string comparison_href;  // the cross-cell comparison page (report/comparison.hpp), "" for none
};

// An edge across the done cells: where it is consistent and with what score.
struct EdgeRecurrence {
  std::string arch;  // the architecture of its cells (arch_key in report/comparison.hpp)
  std::string from, to;
  std::vector<int> cells;     // indices into SweepSummary::cells
  std::vector<double> scores;  // its score in each of those cells
  double mean_score = 0;
  int n_positive = 0, n_negative = 0;
};

// Every edge consistent in at least one done cell, most recurrent first, then by mean |score|,
// then by name. An edge is one per architecture: l0.h3 of BM1 is not l0.h3 of BM2.
// Flagged cells are left out unless `include_flagged`.
std::vector<EdgeRecurrence> edge_recurrence(const std::vector<CellSummary>& cells, bool include_flagged = false);

// The rows of the summary's heatmap, indices into `rec` in its order: the strongest edge of every
// cell in `cells` (a cell with edges never has a blank column), then the most recurrent edges up to
// `most` rows in all (more when the cells' strongest alone are more).
std::vector<size_t> heatmap_rows(const std::vector<EdgeRecurrence>& rec, const std::vector<int>& cells, int most);

// Whether a cell takes part in the cross-cell comparison: done, and unflagged unless asked.
bool compared(const CellSummary& c, bool include_flagged);

std::string summary_html(const SweepSummary& s);

// The chart of F of the consistent circuit, one dot per cell with F (error bar: its spread over
// batches), cells grouped by feature in the order they first appear, dashed lines at F = 0 and 1:
// <svg id="faithfulness-plot">; "" when no cell has an F. Flagged cells are drawn hollow.
std::string faithfulness_chart_svg(const std::vector<CellSummary>& cells);

}  // namespace teap::report
