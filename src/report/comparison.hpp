// Owns the cross-cell comparison page (OUT/comparison.html, beside index.html): the consistent
// circuits of the sweep's cells side by side, one section per architecture. Node names ("l0.h3")
// mean something only within one architecture (model number, layers x heads), so cells of two
// architectures never share a heatmap, a Jaccard matrix or a recurrence table. Per architecture:
//   - edge x cell heatmap of the mean normalised scores, on a robust symmetric colour scale;
//   - Jaccard overlap of the cells' consistent edge sets;
//   - the edges consistent in every fine-tune (CS1-CS3) of one (feature, flags) group, and whether
//     the base model (CS0) has them too.
// Cells are ordered by command set, feature and the three flags (novel, syn field, syn table).
// Flagged cells follow the summary page's rule (`compared` in summary.hpp). Plain data and free
// functions; plotly.js draws the heatmaps (inline, or loaded from a relative address).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "report/summary.hpp"

namespace teap::report {

// "BM2.24x14": model number, layers x heads (as analysis/tinysql_eap/load.py `arch_of`).
std::string arch_of(int64_t model, int64_t n_layers, int64_t n_heads);

// A cell's architecture key: CellSummary::arch, or "BM<model>" when the caller did not know the
// shape (the model number alone then separates families).
std::string arch_key(const CellSummary& c);

// The compared cells (`compared(c, include_flagged)`) of one architecture, ordered by command set,
// feature, novel, syn field, syn table, then id: indices into `cells`.
std::vector<int> arch_cells(const std::vector<CellSummary>& cells, const std::string& arch, bool include_flagged);

// Every architecture that has a compared cell, sorted by model number, then layers, then heads.
std::vector<std::string> compared_architectures(const std::vector<CellSummary>& cells, bool include_flagged);

// The q-quantile (0..1, linear between order statistics, as numpy's default) of `values`; 0 when empty.
double quantile(std::vector<double> values, double q);

// The edge x cell matrix of one architecture's cells.
struct EdgeCellMatrix {
  std::vector<int> cells;                                   // indices into the cells, columns in order
  std::vector<std::pair<std::string, std::string>> edges;   // rows: most cells first, then mean |score|, then name
  std::vector<std::vector<double>> z;                       // z[edge][cell]; NaN where not consistent there
  int non_empty = 0;                                        // finite entries
  double max_abs = 0;                                       // largest |score|
  double zmax = 1;    // the colour scale's end: the `percentile` quantile of |score| over the finite entries (1 if none)
  int clipped = 0;    // entries with |score| > zmax (drawn at full colour)
};
// `cells_in_order` from arch_cells; every edge consistent in any of them is a row (no cap).
EdgeCellMatrix edge_cell_matrix(const std::vector<CellSummary>& cells, const std::vector<int>& cells_in_order,
                                double percentile = 0.95);

// |A ∩ B| / |A ∪ B| of two edge sets; NaN when both are empty (undefined: drawn blank).
double jaccard(const std::vector<std::pair<std::string, std::string>>& a,
               const std::vector<std::pair<std::string, std::string>>& b);
// The Jaccard matrix of the cells' consistent edge sets, in the given order.
std::vector<std::vector<double>> jaccard_matrix(const std::vector<CellSummary>& cells, const std::vector<int>& order);

// One (feature, novel, syn field, syn table) group of an architecture with cells of several
// command sets, and the edges consistent in every one of its fine-tune cells (CS >= 1).
struct FineTuneEdge {
  std::string from, to;
  int in_finetunes = 0;       // fine-tune cells it is consistent in (all of them)
  bool in_base = false;       // consistent in a CS0 cell of the group
  double mean_score = 0;      // over the fine-tune cells
  double base_score = 0;      // in CS0 (first CS0 cell) when in_base
};
struct FineTuneGroup {
  std::string feature;
  bool use_novel_names = false, use_synonyms_field = false, use_synonyms_table = false;
  std::vector<int> base_cells, finetune_cells;  // indices into the cells: CS0, CS1-CS3
  std::vector<int64_t> finetune_commandsets;    // sorted, distinct
  std::vector<FineTuneEdge> edges;              // by mean |score|, then name
};
// Groups in the order of `cells_in_order` (from arch_cells); only groups with at least one
// fine-tune cell and cells of two or more command sets.
std::vector<FineTuneGroup> finetune_recurrence(const std::vector<CellSummary>& cells,
                                               const std::vector<int>& cells_in_order);

// The page. `plotly_js` is plotly.min.js's text, inlined when `plotly_src` is empty; otherwise the
// page loads `plotly_src` (relative to the page: "plotly.min.js" beside index.html). Elements for
// tests: <div class="arch-section" data-arch="A" data-cells="N">, <div id="heatmap-A" data-cells
// data-edges data-zmax>, <div id="jaccard-A" data-cells>, <table id="finetunes-A-<k>">.
// `index_href` links back to the summary page ("" for none).
std::string comparison_html(const SweepSummary& s, const std::string& plotly_js, const std::string& plotly_src = "",
                            const std::string& index_href = "index.html");

}  // namespace teap::report
