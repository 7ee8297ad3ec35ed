// Owns where a Sankey's nodes go, for the plotly page and the SVG alike, so that both stay
// readable at any size (100 edges of a 16-layer model included):
// - x: one column per layer part (head inputs, head outputs, MLP) that holds a node, in layer
//   order; each column as wide as its labels, an extra gap between layers, and before the last
//   column room for its labels, which plotly draws on the left of its nodes.
// - y: the nodes of a column stacked in slots at least one two-line label tall ("name<br>sum"),
//   centred; the figure grows with the most crowded column instead of squeezing labels.
// - node heights: |score| x the scale that plotly's layout (d3-sankey) will compute itself,
//   min over its columns of (height - (n - 1) pad) / sum of node values; with the column-chain
//   ghost links those columns are ours, and the pad is one label slot, which is what makes the
//   slots fit (a column's heights plus its slots are at most the plot height plus one label,
//   which the margins hold).
#pragma once

#include <string>
#include <vector>

namespace teap::report {

struct Sankey;

struct SankeyLayout {
  // Plot area in px (plotly: the figure minus its margins) and the margins around it.
  double width = 0, height = 0;
  double margin_top = 0, margin_bottom = 0, margin_left = 0, margin_right = 0;
  double font_px = 12;     // node labels
  double label_h = 0;      // a two-line label's slot
  double thickness = 16;   // node width (plotly node.thickness)
  double pad = 0;          // plotly node.pad
  double scale = 0;        // px per unit of link value (plotly's ky)
  std::vector<double> column_x;    // [columns] left edge of the column's nodes
  std::vector<int> column_layer;   // [columns]
  std::vector<double> y, h;        // [nodes] centre and height in px (y from the plot area's top)
  std::vector<double> value;       // [nodes] plotly's node value: max(sum in, sum out), ghosts included
};

// The layout of a built Sankey (its nodes' columns and its links, ghosts included).
SankeyLayout layout_sankey(const Sankey& s);

// Estimated width in px of a label line at `font_px` (Helvetica/Arial: digits and most letters
// are near 0.6 em; rounded up so that labels never reach the next column).
double label_width(const std::string& text, double font_px);

}  // namespace teap::report
