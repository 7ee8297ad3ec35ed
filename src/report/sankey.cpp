#include "report/sankey.hpp"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <tuple>
#include <unistd.h>

#include "report/faithfulness_html.hpp"
#include "util/error.hpp"
#include "util/files.hpp"

namespace teap::report {

const char* const kSankeyPalette[10] = {
    "rgba(31, 119, 180, 0.8)",   // blue
    "rgba(255, 127, 14, 0.8)",   // orange
    "rgba(44, 160, 44, 0.8)",    // green
    "rgba(214, 39, 40, 0.8)",    // red
    "rgba(148, 103, 189, 0.8)",  // purple
    "rgba(140, 86, 75, 0.8)",    // brown
    "rgba(227, 119, 194, 0.8)",  // pink
    "rgba(127, 127, 127, 0.8)",  // gray
    "rgba(188, 189, 34, 0.8)",   // yellow
    "rgba(23, 190, 207, 0.8)",   // cyan
};

namespace {

constexpr int kLogitsLayer = INT_MAX / 2;  // placeholder until the last real layer is known

// Where a node sits: its layer, then the order inside the layer.
struct NodeKey {
  int layer = 0;
  int kind = 3;  // 0 input/logits, 1 head (input or output), 2 mlp, 3 other
  int head = 0;
  int sub = 0;   // head: 0 output, 1 q, 2 k, 3 v, 4 other suffix
  std::string name;
  bool operator<(const NodeKey& o) const {
    return std::tie(layer, kind, head, sub, name) < std::tie(o.layer, o.kind, o.head, o.sub, o.name);
  }
};

bool all_digits(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

int to_int(const std::string& s) { return static_cast<int>(std::min<long>(std::strtol(s.c_str(), nullptr, 10), 1 << 20)); }

std::vector<std::string> split_dots(const std::string& s) {
  std::vector<std::string> parts;
  size_t a = 0;
  for (;;) {
    const size_t b = s.find('.', a);
    parts.push_back(s.substr(a, b == std::string::npos ? std::string::npos : b - a));
    if (b == std::string::npos) break;
    a = b + 1;
  }
  return parts;
}

NodeKey parse_node(const std::string& name) {
  NodeKey k;
  k.name = name;
  if (name == "input") {
    k.layer = -1;
    k.kind = 0;
    return k;
  }
  if (name == "logits") {
    k.layer = kLogitsLayer;
    k.kind = 0;
    return k;
  }
  std::vector<std::string> p = split_dots(name);
  // Internal names: head.L.H[.x] -> lL.hH[.x], mlp.L -> lL.mlp.
  if (p.size() >= 3 && p[0] == "head" && all_digits(p[1]) && all_digits(p[2])) {
    std::vector<std::string> q = {"l" + p[1], "h" + p[2]};
    q.insert(q.end(), p.begin() + 3, p.end());
    p = q;
  } else if (p.size() == 2 && p[0] == "mlp" && all_digits(p[1])) {
    p = {"l" + p[1], "mlp"};
  }
  if (p.size() >= 2 && p[0].size() > 1 && p[0][0] == 'l' && all_digits(p[0].substr(1))) {
    k.layer = to_int(p[0].substr(1));
    if (p.size() == 2 && p[1] == "mlp") {
      k.kind = 2;
    } else if (p[1].size() > 1 && p[1][0] == 'h' && all_digits(p[1].substr(1)) && p.size() <= 3) {
      k.kind = 1;
      k.head = to_int(p[1].substr(1));
      if (p.size() == 3) k.sub = p[2] == "q" ? 1 : p[2] == "k" ? 2 : p[2] == "v" ? 3 : 4;
    }
  }
  return k;
}

std::string fmt3(double x) {
  char b[64];
  std::snprintf(b, sizeof b, "%.3f", x);
  return b;
}

double round_to(double x, double step) { return std::round(x / step) * step; }

std::string fmt2(double x) {
  char b[64];
  std::snprintf(b, sizeof b, "%.2f", x);
  return b;
}

const char* const kArrow = "\xe2\x86\x92";  // →

// "rgba(r, g, b, a)" -> ("rgb(r,g,b)", a) for SVG consumers that do not read CSS colours.
std::pair<std::string, std::string> svg_colour(const std::string& rgba) {
  int r = 0, g = 0, b = 0;
  double a = 1;
  if (std::sscanf(rgba.c_str(), "rgba(%d ,%d ,%d ,%lf)", &r, &g, &b, &a) == 4 ||
      std::sscanf(rgba.c_str(), "rgba(%d,%d,%d,%lf)", &r, &g, &b, &a) == 4) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "rgb(%d,%d,%d)", r, g, b);
    char ab[32];
    std::snprintf(ab, sizeof ab, "%g", a);
    return {buf, ab};
  }
  return {rgba, "1"};
}

// The heading over a layer's first column: "input", "layer N", or "logits" for the column after the
// last layer that holds `logits`.
std::string column_heading(const Sankey& s, size_t c) {
  for (const SankeyNode& n : s.nodes)
    if (n.column == static_cast<int>(c) && n.name == "logits") return "logits";
  const int layer = s.layout.column_layer[c];
  return layer < 0 ? "input" : "layer " + std::to_string(layer);
}

}  // namespace

std::string script_json(const nlohmann::ordered_json& j) {
  std::string s = j.dump(-1, ' ', true);
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '<' && i + 1 < s.size() && s[i + 1] == '/') {
      out += "<\\/";
      ++i;
    } else {
      out += s[i];
    }
  }
  return out;
}

std::string xml_escape(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

int Sankey::n_real_links() const {
  return static_cast<int>(std::count_if(links.begin(), links.end(), [](const SankeyLink& l) { return !l.ghost; }));
}

Sankey build_sankey(const std::vector<NamedEdge>& edges, bool layer_spacing) {
  Sankey s;
  // Nodes in a fixed order (the notebook: set order).
  std::map<std::string, NodeKey> keys;
  for (const NamedEdge& e : edges)
    for (const std::string* n : {&e.from, &e.to})
      if (!keys.count(*n)) keys[*n] = parse_node(*n);
  int last_layer = -1;
  for (const auto& [name, k] : keys)
    if (k.layer != kLogitsLayer) last_layer = std::max(last_layer, k.layer);
  std::vector<NodeKey> order;
  for (auto& [name, k] : keys) {
    if (k.layer == kLogitsLayer) k.layer = last_layer + 1;
    order.push_back(k);
  }
  std::sort(order.begin(), order.end());
  std::map<std::string, int> idx;
  for (size_t i = 0; i < order.size(); ++i) {
    SankeyNode n;
    n.name = order[i].name;
    n.layer = order[i].layer;
    n.part = order[i].kind == 2 ? 2 : (order[i].kind == 1 && order[i].sub > 0) ? 0 : 1;
    n.color = kSankeyPalette[i % 10];
    idx[n.name] = static_cast<int>(i);
    s.nodes.push_back(std::move(n));
  }
  // Columns: (layer, part) pairs that hold a node, in order; nodes are sorted by layer, and by part
  // within it except the "other" names, hence the sort.
  std::vector<std::pair<int, int>> cols;
  for (const SankeyNode& n : s.nodes) cols.push_back({n.layer, n.part});
  std::sort(cols.begin(), cols.end());
  cols.erase(std::unique(cols.begin(), cols.end()), cols.end());
  for (SankeyNode& n : s.nodes)
    n.column = static_cast<int>(std::lower_bound(cols.begin(), cols.end(), std::make_pair(n.layer, n.part)) - cols.begin());
  s.n_columns = static_cast<int>(cols.size());
  for (const NamedEdge& e : edges) {
    s.nodes[idx[e.from]].sum += e.score;
    s.nodes[idx[e.to]].sum += e.score;
  }
  for (SankeyNode& n : s.nodes) n.label = n.name + "<br>" + fmt3(n.sum);

  std::set<int> layers;
  for (const NamedEdge& e : edges) {
    SankeyLink l;
    l.source = idx[e.from];
    l.target = idx[e.to];
    l.score = e.score;
    l.value = std::fabs(e.score);
    l.label = e.from + " " + kArrow + " " + e.to + "<br>" + fmt3(e.score);
    l.color = e.score == 0 ? "rgba(0,0,0,0.1)" : e.score > 0 ? "rgba(0,0,255,0.3)" : "rgba(255,0,0,0.3)";
    s.links.push_back(std::move(l));
  }
  for (const SankeyNode& n : s.nodes) layers.insert(n.layer);
  if (layer_spacing && s.n_columns > 1) {
    std::vector<std::vector<int>> members(s.n_columns);
    for (size_t i = 0; i < s.nodes.size(); ++i) members[s.nodes[i].column].push_back(static_cast<int>(i));
    auto ghost = [&](int a, int b) {
      SankeyLink l;
      l.source = a;
      l.target = b;
      l.value = 1e-6;
      l.color = "rgba(0,255,0,0.0)";
      l.ghost = true;
      s.links.push_back(std::move(l));
    };
    for (int c = 0; c + 1 < s.n_columns; ++c) {
      const std::vector<int>& a = members[c];
      const std::vector<int>& b = members[c + 1];
      for (int n : a) ghost(n, b.front());
      for (size_t k = 1; k < b.size(); ++k) ghost(a.front(), b[k]);
    }
  }
  s.n_layers = static_cast<int>(layers.size());
  s.layout = layout_sankey(s);
  const SankeyLayout& L = s.layout;
  s.width = static_cast<int>(std::ceil(L.width + L.margin_left + L.margin_right));
  s.height = static_cast<int>(std::ceil(L.height + L.margin_top + L.margin_bottom));
  if (s.nodes.empty()) s.width = 600, s.height = 400;
  return s;
}

std::string sankey_html(const Sankey& s, const PageInfo& info, const std::string& plotly_js,
                        const std::string& plotly_src) {
  using oj = nlohmann::ordered_json;
  const SankeyLayout& L = s.layout;
  // Fixed places (fractions of the plot area; plotly reads them as node centres).
  oj labels = oj::array(), ncolors = oj::array(), nx = oj::array(), ny = oj::array();
  for (size_t i = 0; i < s.nodes.size(); ++i) {
    const SankeyNode& n = s.nodes[i];
    labels.push_back(n.label);
    ncolors.push_back(n.color);
    nx.push_back(round_to((L.column_x[n.column] + L.thickness / 2) / L.width, 1e-6));
    ny.push_back(round_to(L.y[i] / L.height, 1e-6));
  }
  oj src = oj::array(), tgt = oj::array(), val = oj::array(), lab = oj::array(), col = oj::array();
  for (const SankeyLink& l : s.links) {
    src.push_back(l.source);
    tgt.push_back(l.target);
    val.push_back(l.value);
    lab.push_back(l.label);
    col.push_back(l.color);
  }
  oj trace = {{"type", "sankey"},
              {"arrangement", "perpendicular"},
              {"node",
               {{"label", labels},
                {"color", ncolors},
                {"x", nx},
                {"y", ny},
                {"line", {{"width", 0.0}}},
                {"pad", L.pad},
                {"thickness", L.thickness}}},
              {"link", {{"source", src}, {"target", tgt}, {"value", val}, {"label", lab}, {"color", col}, {"arrowlen", 25}}},
              {"domain", {{"y", {0, 1}}}}};
  // Layer headings above the columns, dashed lines between layers.
  oj notes = oj::array(), lines = oj::array();
  for (size_t c = 0; c < L.column_x.size(); ++c) {
    if (c > 0 && L.column_layer[c] == L.column_layer[c - 1]) continue;
    const bool last = c + 1 == L.column_x.size() && c > 0;
    const std::string name = column_heading(s, c);
    const double x = last ? (L.column_x[c] + L.thickness) / L.width : L.column_x[c] / L.width;
    notes.push_back({{"text", name}, {"x", round_to(x, 1e-6)}, {"y", 1}, {"xref", "paper"}, {"yref", "paper"},
                     {"xanchor", last ? "right" : "left"}, {"yanchor", "bottom"}, {"yshift", L.label_h / 2 + 4},
                     {"showarrow", false}, {"font", {{"size", 12}, {"color", "#555"}}}});
    if (c > 0) {
      const double sx = round_to((L.column_x[c] - 10) / L.width, 1e-6);
      lines.push_back({{"type", "line"}, {"xref", "paper"}, {"yref", "paper"}, {"x0", sx}, {"x1", sx}, {"y0", 0}, {"y1", 1},
                       {"layer", "below"}, {"line", {{"color", "#ddd"}, {"width", 1}, {"dash", "dash"}}}});
    }
  }
  oj layout = {{"font", {{"size", L.font_px}}},
               {"height", s.height},
               {"width", s.width},
               {"plot_bgcolor", "white"},
               {"paper_bgcolor", "white"},
               {"margin", {{"t", L.margin_top}, {"l", L.margin_left}, {"r", L.margin_right}, {"b", L.margin_bottom}}},
               {"hoverlabel", {{"font", {{"size", 14}}}}},
               {"annotations", notes},
               {"shapes", lines}};
  // No mode bar: it would cover the layer headings; sankey.svg beside the page is the picture to keep.
  oj config = {{"displaylogo", false}, {"responsive", false}, {"displayModeBar", false}};

  std::string h;
  h += "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n";
  h += "<title>" + xml_escape(info.title.empty() ? "EAP Sankey" : info.title) + "</title>\n";
  h += "<style>body{font-family:Helvetica,Arial,sans-serif;margin:16px;color:#222}"
       "h1{font-size:18px;margin:0 0 6px}p.caption{font-size:13px;color:#555;margin:2px 0}"
       "#sankey{margin-top:10px}p.empty{font-size:14px;color:#a00}</style>\n";
  h += plotly_script(plotly_js, plotly_src);
  h += "</head>\n<body>\n";
  if (!info.title.empty()) h += "<h1>" + xml_escape(info.title) + "</h1>\n";
  for (const std::string& line : info.lines) h += "<p class=\"caption\">" + xml_escape(line) + "</p>\n";
  h += faithfulness_caption_html(info.faithfulness);
  if (!info.legend.empty()) {
    h += "<p class=\"caption\" id=\"legend\">";
    for (const auto& [colour, text] : info.legend)
      h += "<span style=\"display:inline-block;width:26px;height:10px;margin:0 5px 0 12px;background:" + xml_escape(colour) +
           "\"></span>" + xml_escape(text);
    h += "</p>\n";
  }
  if (s.nodes.empty()) {
    h += "<p class=\"empty\" id=\"no-edges\">No edges: nothing to draw.</p>\n";
  } else {
    h += "<div id=\"sankey\" data-nodes=\"" + std::to_string(s.nodes.size()) + "\" data-links=\"" +
         std::to_string(s.links.size()) + "\" style=\"width:" + std::to_string(s.width) +
         "px;height:" + std::to_string(s.height) + "px\"></div>\n";
    h += "<script>\n";
    h += "var data = [" + script_json(trace) + "];\n";
    h += "var layout = " + script_json(layout) + ";\n";
    h += "Plotly.newPlot('sankey', data, layout, " + script_json(config) + ");\n";
    h += "</script>\n";
  }
  h += faithfulness_curve_html(info.faithfulness);
  h += "</body>\n</html>\n";
  return h;
}

std::string sankey_svg(const Sankey& s, const PageInfo& info) {
  const std::string font = "font-family=\"Helvetica, Arial, sans-serif\"";
  std::string o = "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"no\"?>\n";
  if (s.nodes.empty()) {
    o += "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"600\" height=\"120\" viewBox=\"0 0 600 120\">\n";
    o += "<title>" + xml_escape(info.title) + "</title>\n";
    o += "<rect width=\"600\" height=\"120\" fill=\"white\"/>\n";
    o += "<text x=\"20\" y=\"30\" " + font + " font-size=\"15\" font-weight=\"bold\" fill=\"#222\">" + xml_escape(info.title) + "</text>\n";
    o += "<text x=\"20\" y=\"70\" " + font + " font-size=\"14\" fill=\"#a00\">No edges: nothing to draw.</text>\n";
    o += "</svg>\n";
    return o;
  }
  const SankeyLayout& L = s.layout;
  const size_t N = s.nodes.size();
  const double header = 50;  // title and legend
  const double ox = L.margin_left, oy = header + L.margin_top, min_link_w = 0.75;
  const double width = std::max(L.width + L.margin_left + L.margin_right, 560.0);
  const double height = oy + L.height + L.margin_bottom;
  auto left = [&](int i) { return ox + L.column_x[s.nodes[i].column]; };
  auto top = [&](int i) { return oy + L.y[i] - std::max(L.h[i], 1.0) / 2; };
  auto nh = [&](int i) { return std::max(L.h[i], 1.0); };

  // Link ends, stacked at each node in the order of the height of the node at the other end.
  std::vector<int> real;
  for (size_t j = 0; j < s.links.size(); ++j)
    if (!s.links[j].ghost) real.push_back(static_cast<int>(j));
  auto lw = [&](const SankeyLink& l) { return std::max(l.value * L.scale, min_link_w); };
  std::vector<double> y0(s.links.size()), y1(s.links.size());
  {
    std::vector<int> by_target(real), by_source(real);
    std::stable_sort(by_target.begin(), by_target.end(),
                     [&](int a, int b) { return L.y[s.links[a].target] < L.y[s.links[b].target]; });
    std::stable_sort(by_source.begin(), by_source.end(),
                     [&](int a, int b) { return L.y[s.links[a].source] < L.y[s.links[b].source]; });
    auto stack = [&](const std::vector<int>& order, bool at_source, std::vector<double>& y) {
      std::vector<double> total(N, 0), used(N, 0);
      for (int j : order) total[at_source ? s.links[j].source : s.links[j].target] += lw(s.links[j]);
      for (int j : order) {
        const int n = at_source ? s.links[j].source : s.links[j].target;
        const double w = lw(s.links[j]);
        y[j] = oy + L.y[n] - total[n] / 2 + used[n] + w / 2;
        used[n] += w;
      }
    };
    stack(by_target, true, y0);
    stack(by_source, false, y1);
  }

  const std::string W = fmt2(width), H = fmt2(height);
  o += "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"" + W + "\" height=\"" + H +
       "\" viewBox=\"0 0 " + W + " " + H + "\">\n";
  o += "<title>" + xml_escape(info.title) + "</title>\n";
  std::vector<std::pair<std::string, std::string>> legend = info.legend;
  if (legend.empty()) legend = {{"rgba(0,0,255,0.3)", "positive score"}, {"rgba(255,0,0,0.3)", "negative score"}};
  std::string colours;
  for (const auto& [colour, text] : legend) colours += (colours.empty() ? "" : ", ") + text + " " + colour;
  o += "<desc>" + xml_escape("EAP Sankey: " + std::to_string(N) + " nodes, " + std::to_string(real.size()) +
                             " edges; link width proportional to |score|; " +
                             (info.legend.empty() ? std::string("blue positive, red negative") : colours) +
                             (info.faithfulness.is_null() ? "" : "; " + faithfulness_headline(info.faithfulness))) +
       "</desc>\n";
  o += "<rect width=\"" + W + "\" height=\"" + H + "\" fill=\"white\"/>\n";

  // Title and legend.
  o += "<g class=\"heading\" " + font + ">\n";
  o += "<text class=\"title\" x=\"" + fmt2(ox) + "\" y=\"20\" font-size=\"15\" font-weight=\"bold\" fill=\"#222\">" +
       xml_escape(info.title.empty() ? "EAP Sankey" : info.title) + "</text>\n";
  o += "<g class=\"legend\" font-size=\"11\" fill=\"#444\">\n";
  double lx = ox;
  for (const auto& [colour, text] : legend) {
    const auto [rgb, alpha] = svg_colour(colour);
    o += "<rect x=\"" + fmt2(lx) + "\" y=\"32\" width=\"22\" height=\"8\" fill=\"" + rgb + "\" fill-opacity=\"" + alpha + "\"/>";
    o += "<text x=\"" + fmt2(lx + 27) + "\" y=\"40\">" + xml_escape(text) + "</text>\n";
    lx += 27 + label_width(text, 11) + 14;
  }
  o += "<text x=\"" + fmt2(lx) + "\" y=\"40\">" + xml_escape("link width \xe2\x88\x9d |score|; node: name and the sum of its edges' scores; " +
                                                              std::to_string(N) + " nodes, " + std::to_string(real.size()) + " edges") +
       "</text>\n</g>\n</g>\n";

  // Layer headings and separators.
  o += "<g class=\"layers\" " + font + " font-size=\"12\" fill=\"#555\">\n";
  const size_t C = L.column_x.size();
  for (size_t c = 0; c < C; ++c) {
    if (c > 0 && L.column_layer[c] == L.column_layer[c - 1]) continue;
    const std::string name = column_heading(s, c);
    const bool last = c + 1 == C && C > 1;  // right-aligned: stays inside
    o += "<text x=\"" + fmt2(ox + L.column_x[c] + (last ? L.thickness : 0)) + "\" y=\"" + fmt2(oy - L.label_h / 2 - 8) + "\"" +
         (last ? " text-anchor=\"end\"" : "") + ">" + xml_escape(name) + "</text>\n";
    if (c > 0) {
      const double sx = ox + L.column_x[c] - 10;
      o += "<line x1=\"" + fmt2(sx) + "\" y1=\"" + fmt2(oy - L.label_h / 2 - 4) + "\" x2=\"" + fmt2(sx) + "\" y2=\"" +
           fmt2(height - 4) + "\" stroke=\"#ddd\" stroke-dasharray=\"4 4\"/>\n";
    }
  }
  o += "</g>\n";

  o += "<g class=\"links\">\n";
  for (int j : real) {
    const SankeyLink& l = s.links[j];
    const double xa = left(l.source) + L.thickness, xb = left(l.target);
    const double xm = (xa + xb) / 2;
    const auto [rgb, alpha] = svg_colour(l.color);
    // A filled band of constant vertical thickness |score| x scale, as plotly draws links.
    const double h2 = lw(l) / 2;
    const std::string a0 = fmt2(y0[j] - h2), a1 = fmt2(y1[j] - h2), b0 = fmt2(y0[j] + h2), b1 = fmt2(y1[j] + h2);
    o += "<path class=\"link\" d=\"M" + fmt2(xa) + "," + a0 + " C" + fmt2(xm) + "," + a0 + " " + fmt2(xm) + "," + a1 +
         " " + fmt2(xb) + "," + a1 + " L" + fmt2(xb) + "," + b1 + " C" + fmt2(xm) + "," + b1 + " " + fmt2(xm) + "," + b0 +
         " " + fmt2(xa) + "," + b0 + " Z\" fill=\"" + rgb + "\" fill-opacity=\"" + alpha + "\"><title>" +
         xml_escape(s.nodes[l.source].name + " " + kArrow + " " + s.nodes[l.target].name + ": " + fmt3(l.score)) +
         "</title></path>\n";
  }
  o += "</g>\n";

  o += "<g class=\"nodes\">\n";
  for (size_t i = 0; i < N; ++i) {
    const auto [rgb, alpha] = svg_colour(s.nodes[i].color);
    o += "<rect class=\"node\" data-layer=\"" + std::to_string(s.nodes[i].layer) + "\" x=\"" + fmt2(left(i)) + "\" y=\"" +
         fmt2(top(i)) + "\" width=\"" + fmt2(L.thickness) + "\" height=\"" + fmt2(nh(i)) + "\" fill=\"" + rgb +
         "\" fill-opacity=\"" + alpha + "\"><title>" + xml_escape(s.nodes[i].name + ": " + fmt3(s.nodes[i].sum)) +
         "</title></rect>\n";
  }
  o += "</g>\n";

  // Labels beside the node (left of it in the last column), drawn twice: a white outline, then the text.
  o += "<g class=\"labels\" " + font + " font-size=\"" + fmt2(L.font_px) + "\">\n";
  for (const bool halo : {true, false}) {
    for (size_t i = 0; i < N; ++i) {
      const bool last = s.nodes[i].column == static_cast<int>(C) - 1 && C > 1;
      const double tx = last ? left(i) - 4 : left(i) + L.thickness + 4;
      const double cy = oy + L.y[i];
      o += "<text x=\"" + fmt2(tx) + "\" y=\"" + fmt2(cy - 2) + "\" text-anchor=\"" + (last ? "end" : "start") + "\"";
      o += halo ? " fill=\"white\" stroke=\"white\" stroke-width=\"3\" stroke-linejoin=\"round\"" : " fill=\"#222\"";
      o += "><tspan font-weight=\"bold\">" + xml_escape(s.nodes[i].name) + "</tspan><tspan x=\"" + fmt2(tx) +
           "\" dy=\"" + fmt2(L.font_px + 1) + "\">" + fmt3(s.nodes[i].sum) + "</tspan></text>\n";
    }
  }
  o += "</g>\n</svg>\n";
  return o;
}

std::string plotly_script(const std::string& plotly_js, const std::string& plotly_src) {
  if (!plotly_src.empty()) return "<script src=\"" + xml_escape(plotly_src) + "\"></script>\n";
  // Inline so the page opens from disk with no network; "</script" cannot occur inside.
  std::string js = plotly_js;
  for (size_t p = 0; (p = js.find("</script", p)) != std::string::npos; p += 3) js.replace(p, 2, "<\\/");
  return "<script>\n" + js + "\n</script>\n";
}

std::string find_plotly_js() {
  namespace fs = std::filesystem;
  const char* env = std::getenv("TEAP_PLOTLY_JS");
  if (env && *env) {
    std::error_code ec;
    if (!fs::is_regular_file(env, ec)) fail_input(env, "no such file (TEAP_PLOTLY_JS names plotly.min.js)");
    return env;
  }
  const fs::path rel = fs::path(".cache") / "npm" / "node_modules" / "plotly.js-dist-min" / "plotly.min.js";
  std::vector<fs::path> tried;
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    fs::path dir = exe.parent_path();
    tried.push_back(dir / ".." / "share" / "tinysql-eap" / "plotly.min.js");
    for (int up = 0; up < 6 && !dir.empty(); ++up) {
      tried.push_back(dir / rel);
      if (dir == dir.root_path()) break;
      dir = dir.parent_path();
    }
  }
#ifdef TEAP_SOURCE_DIR
  tried.push_back(fs::path(TEAP_SOURCE_DIR) / rel);
#endif
  for (const fs::path& p : tried)
    if (fs::is_regular_file(p, ec)) return fs::weakly_canonical(p, ec).string();
  throw InputError("plotly.min.js not found (looked for " + rel.string() +
                   " above the executable and in the source tree): run scripts/setup.sh, or set TEAP_PLOTLY_JS to the file");
}

std::string load_plotly_js() {
  static std::mutex mu;
  static std::string cached;
  std::lock_guard<std::mutex> lock(mu);
  if (cached.empty()) {
    const std::string path = find_plotly_js();
    std::string js = read_file(path);
    if (js.size() < 1000 || js.find("Plotly") == std::string::npos) fail_input(path, "does not look like plotly.min.js");
    cached = std::move(js);
  }
  return cached;
}

}  // namespace teap::report
