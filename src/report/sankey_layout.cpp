#include "report/sankey_layout.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "report/sankey.hpp"

namespace teap::report {

namespace {

constexpr double kGap = 6;          // between two label slots
constexpr double kValueRoom = 240;  // px the most crowded column has for its scores beyond its labels
constexpr double kMinPlotHeight = 300;
constexpr double kColumnGap = 12;   // after a column's labels
constexpr double kLayerGap = 14;    // more between layers

// d3-sankey's columns, as plotly computes them: a node's depth is its longest path from a node
// without inputs; with "justify" alignment a node without outputs goes to the last column.
// A cycle (which layered names cannot make) falls back to the nodes' own columns.
std::vector<int> d3_columns(const Sankey& s) {
  const size_t n = s.nodes.size();
  std::vector<int> indegree(n, 0), depth(n, 0);
  std::vector<std::vector<int>> out(n);
  for (const SankeyLink& l : s.links) {
    out[l.source].push_back(l.target);
    ++indegree[l.target];
  }
  std::vector<int> order;
  for (size_t i = 0; i < n; ++i)
    if (!indegree[i]) order.push_back(static_cast<int>(i));
  for (size_t k = 0; k < order.size(); ++k)
    for (int t : out[order[k]]) {
      depth[t] = std::max(depth[t], depth[order[k]] + 1);
      if (--indegree[t] == 0) order.push_back(t);
    }
  std::vector<int> column(n);
  if (order.size() != n) {
    for (size_t i = 0; i < n; ++i) column[i] = s.nodes[i].column;
    return column;
  }
  const int last = n ? *std::max_element(depth.begin(), depth.end()) : 0;
  for (size_t i = 0; i < n; ++i) column[i] = out[i].empty() ? last : depth[i];
  return column;
}

// Nodes per column and the sums of their values.
struct Columns {
  std::vector<std::vector<int>> members;
  std::vector<double> sum;
};

Columns group(const std::vector<int>& column, const std::vector<double>& value) {
  Columns c;
  const int n = column.empty() ? 0 : *std::max_element(column.begin(), column.end()) + 1;
  c.members.resize(n);
  c.sum.assign(n, 0.0);
  for (size_t i = 0; i < column.size(); ++i) {
    c.members[column[i]].push_back(static_cast<int>(i));
    c.sum[column[i]] += value[i];
  }
  return c;
}

}  // namespace

double label_width(const std::string& text, double font_px) {
  double w = 0;
  for (unsigned char ch : text) {
    if ((ch & 0xC0) == 0x80) continue;  // UTF-8 continuation byte
    w += ch == '.' || ch == 'l' || ch == 'i' ? 0.3 : ch == 'm' || ch == 'w' ? 0.9 : 0.62;
  }
  return std::ceil(w * font_px) + 2;
}

SankeyLayout layout_sankey(const Sankey& s) {
  SankeyLayout L;
  const size_t n = s.nodes.size();
  L.label_h = std::ceil(2 * 1.3 * L.font_px) + 2;
  L.pad = L.label_h + kGap;
  L.value.assign(n, 0.0);
  if (!n) return L;

  std::vector<double> in(n, 0), out(n, 0);
  for (const SankeyLink& l : s.links) {
    out[l.source] += l.value;
    in[l.target] += l.value;
  }
  for (size_t i = 0; i < n; ++i) L.value[i] = std::max(in[i], out[i]);

  std::vector<int> own(n);
  for (size_t i = 0; i < n; ++i) own[i] = s.nodes[i].column;
  const Columns mine = group(own, L.value), theirs = group(d3_columns(s), L.value);

  // Height: the most crowded column's label slots, plus room for the scores.
  double need = 0;
  for (const Columns* c : {&mine, &theirs})
    for (const auto& m : c->members)
      if (!m.empty()) need = std::max(need, (m.size() - 1) * L.pad + L.label_h);
  L.height = std::max(kMinPlotHeight, need + kValueRoom);
  double ky = std::numeric_limits<double>::infinity();
  for (size_t c = 0; c < theirs.members.size(); ++c)
    if (!theirs.members[c].empty() && theirs.sum[c] > 0)
      ky = std::min(ky, (L.height - (theirs.members[c].size() - 1) * L.pad) / theirs.sum[c]);
  L.scale = std::isfinite(ky) ? ky : 0.0;

  L.y.assign(n, 0.0);
  L.h.assign(n, 0.0);
  for (const auto& m : mine.members) {
    double total = kGap * (m.size() ? m.size() - 1 : 0);
    for (int i : m) total += std::max(L.value[i] * L.scale, L.label_h);
    double y = (L.height - total) / 2;
    for (int i : m) {
      const double slot = std::max(L.value[i] * L.scale, L.label_h);
      L.h[i] = L.value[i] * L.scale;
      L.y[i] = std::max(0.5, y + slot / 2);  // plotly ignores a position of exactly 0
      y += slot + kGap;
    }
  }

  // Width: each column as wide as its widest label line.
  const size_t C = mine.members.size();
  std::vector<double> labels(C, 0.0);
  for (size_t i = 0; i < n; ++i) {
    const std::string& lab = s.nodes[i].label;
    const size_t br = lab.find("<br>");
    const double w = br == std::string::npos ? label_width(lab, L.font_px)
                                             : std::max(label_width(lab.substr(0, br), L.font_px),
                                                        label_width(lab.substr(br + 4), L.font_px));
    labels[s.nodes[i].column] = std::max(labels[s.nodes[i].column], w);
  }
  L.column_x.assign(C, 0.0);
  L.column_layer.assign(C, 0);
  for (size_t i = 0; i < n; ++i) L.column_layer[s.nodes[i].column] = s.nodes[i].layer;
  for (size_t c = 1; c < C; ++c) {
    L.column_x[c] = L.column_x[c - 1] + L.thickness + labels[c - 1] + kColumnGap +
                    (L.column_layer[c] != L.column_layer[c - 1] ? kLayerGap : 0);
    if (c + 1 == C) L.column_x[c] += labels[c] + kColumnGap;  // the last column's labels are on its left
  }
  L.width = L.column_x.back() + L.thickness + (C == 1 ? labels[0] + kColumnGap : 0);
  L.margin_left = L.margin_right = 20;
  L.margin_top = 30 + L.label_h / 2;  // layer headings; a small first node's label reaches above it
  L.margin_bottom = 8 + L.label_h / 2;
  return L;
}

}  // namespace teap::report
