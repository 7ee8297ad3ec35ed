// Owns the two-cell difference Sankey (`plot --diff A.json B.json`): one diagram of the union of
// two results' edges, each link coloured by where it is (both, only A, only B). Node names compare
// only within one architecture, so two results of different architectures are refused.
#pragma once

#include <string>
#include <vector>

#include "report/notebook_json.hpp"
#include "report/sankey.hpp"

namespace teap::report {

// Link colours of the difference diagram.
extern const char* const kDiffBoth;    // purple-grey
extern const char* const kDiffOnlyA;   // blue
extern const char* const kDiffOnlyB;   // orange

// What a result says of its architecture, from metadata model / n_layers / n_heads, whichever it
// has (a notebook JSON may lack n_layers and n_heads): "BM1, 2 layers x 4 heads", "BM1".
std::string result_arch_text(const nlohmann::json& doc);

// Throws an InputError naming both files when a key both metadata have (model, n_layers, n_heads)
// differs.
void check_same_architecture(const std::string& path_a, const nlohmann::json& a, const std::string& path_b,
                             const nlohmann::json& b);

struct DiffSankey {
  Sankey sankey;  // links of the union (A's order, then B's own), then the ghost links
  int both = 0, only_a = 0, only_b = 0;
};
// The union of A's and B's edges (an edge listed twice in one result counts once). A link in
// both: width the mean of the two |score|, its label both scores; otherwise its own |score|.
DiffSankey build_diff_sankey(const std::vector<NamedEdge>& a, const std::vector<NamedEdge>& b);

// `plot --diff`: reads the two files (`files` must hold exactly two: A then B), checks they share
// an architecture, and writes diff-<stemA>-vs-<stemB>.html / .svg in `out_dir` (created; "" for A's
// folder). plotly is inlined unless `plotly_src` is set (as sankey_html). Returns the paths written.
std::vector<std::string> write_diff(const std::vector<std::string>& files, const std::string& out_dir, bool html,
                                    bool svg, const std::string& plotly_js, const std::string& plotly_src = "");

}  // namespace teap::report
