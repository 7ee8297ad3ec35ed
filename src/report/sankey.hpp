// Owns the Sankey diagram of a cell's edges: the notebook's `plot_eap_sankey(..., layer_spacing=True)`
// as data (nodes, labels, colours, links, ghost links, size), as an HTML page drawn by plotly.js
// inlined from disk (opens offline), and as an SVG the program draws itself for papers.
//
// Node order: the notebook used Python set order (arbitrary per run); here nodes are ordered by
// layer (input first, logits last), then head number, then "", q, k, v, then the layer's MLP, then
// by name. Colours cycle through the palette in that order. Layers come from "l<L>." names (also
// "head.<L>."/"mlp.<L>"); `input` is layer -1 and `logits` follows the last layer, where the
// notebook would put both in layer 0.
//
// Columns: the notebook meant one column per layer (`layer_spacing`), but plotly places nodes by
// their longest path, so a head feeding its own layer's MLP pushed the MLP into the next layer's
// column. Here every node has a fixed place (report/sankey_layout.hpp): a layer is up to three
// columns (head inputs q/k/v, head outputs, MLP), and the ghost links chain those columns so
// that plotly's own column of every node is its column here.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "report/notebook_json.hpp"
#include "report/sankey_layout.hpp"

namespace teap::report {

// The notebook's ten node colours.
extern const char* const kSankeyPalette[10];

struct SankeyNode {
  std::string name;
  int layer = 0;
  int part = 1;       // within the layer: 0 head inputs (q/k/v), 1 head outputs (and input, logits, others), 2 MLP
  int column = 0;     // index of (layer, part) among the columns that hold a node
  double sum = 0;     // sum of the scores of its edges (in and out)
  std::string label;  // "name<br>sum" (3 decimals)
  std::string color;  // palette[i % 10]
};

struct SankeyLink {
  int source = 0, target = 0;  // node indices
  double score = 0;            // signed (0 for ghost links)
  double value = 0;            // |score|, or 1e-6 for a ghost link
  std::string label;           // "from → to<br>score" (3 decimals), "" for ghosts
  std::string color;           // blue / red / grey, transparent green for ghosts
  bool ghost = false;
};

struct Sankey {
  std::vector<SankeyNode> nodes;
  std::vector<SankeyLink> links;  // the edges in their order, then the ghost links
  int n_layers = 0;               // layers that hold a node (the notebook's len(included_layer_nodes))
  int n_columns = 0;
  SankeyLayout layout;            // where everything goes (both the page and the SVG)
  int width = 600, height = 400;  // the page's figure in px, margins included
  int n_real_links() const;
};

// What plot_eap_sankey builds from (from, to, score) edges, laid out. With `layer_spacing` the
// ghost links chain consecutive columns (every node of a column to the first of the next, the
// first of a column to every node of the next), as the notebook chained layers.
Sankey build_sankey(const std::vector<NamedEdge>& edges, bool layer_spacing = true);

// Text around the plot: a heading and caption lines (plain text, escaped here).
struct PageInfo {
  // A constructor rather than an aggregate, so that {title, lines} leaves `faithfulness` null without a warning.
  PageInfo(std::string t = "", std::vector<std::string> l = {}) : title(std::move(t)), lines(std::move(l)) {}
  std::string title;
  std::vector<std::string> lines;
  // Link colours and what they mean, for a diagram whose colours are not the default (blue
  // positive, red negative): (colour, text) swatches above the page's diagram and in the SVG.
  std::vector<std::pair<std::string, std::string>> legend;
  // The result JSON's `faithfulness` object (report/faithfulness_json.hpp), null when the cell was
  // not evaluated: its lines under the caption, its F(k) curve under the Sankey.
  nlohmann::ordered_json faithfulness;
};

// The page: plotly.js inline (`plotly_js` is its source) or, when `plotly_src` is set, loaded from
// that relative address instead. The figure is the notebook's go.Sankey + update_layout.
std::string sankey_html(const Sankey& s, const PageInfo& info, const std::string& plotly_js,
                        const std::string& plotly_src = "");

// The same diagram drawn here: nodes in layer columns (sub-columns for head inputs, head outputs
// and the MLP), one <path class="link"> per edge with stroke width proportional to |score| in the
// link colour, node rectangles in the node colours, labels "name" and "sum" beside each node.
std::string sankey_svg(const Sankey& s, const PageInfo& info);

// plotly.min.js: $TEAP_PLOTLY_JS, else .cache/npm/node_modules/plotly.js-dist-min/plotly.min.js
// in a folder above the executable (the repository) or share/tinysql-eap/plotly.min.js beside it,
// else the source tree this was built from. Not found: an InputError saying how to get it.
std::string find_plotly_js();
// The page's <script> element for plotly: loading `plotly_src` (a relative address) when set, else
// `plotly_js` inline.
std::string plotly_script(const std::string& plotly_js, const std::string& plotly_src);
std::string load_plotly_js();  // the file's text, cached after the first call

// Escapes & < > " ' for HTML/XML text and attributes.
std::string xml_escape(const std::string& s);

// JSON for a <script> element: ASCII only, and no "</" that could close the element.
std::string script_json(const nlohmann::ordered_json& j);

}  // namespace teap::report
