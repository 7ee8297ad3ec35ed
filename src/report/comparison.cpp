#include "report/comparison.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <set>
#include <tuple>

#include "report/sankey.hpp"

namespace teap::report {

namespace {

using oj = nlohmann::ordered_json;
using EdgeKey = std::pair<std::string, std::string>;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

std::string fmt(const char* f, double x) {
  char b[64];
  std::snprintf(b, sizeof b, f, x);
  return b;
}

std::string esc(const std::string& s) { return xml_escape(s); }

const char* const kArrow = " \xe2\x86\x92 ";  // →

std::string flags_code(const CellSummary& c) {
  return std::string(c.use_novel_names ? "1" : "0") + (c.use_synonyms_field ? "1" : "0") + (c.use_synonyms_table ? "1" : "0");
}

// The axes a cell is ordered and grouped by.
auto order_key(const CellSummary& c) {
  return std::make_tuple(c.commandset, c.feature, c.use_novel_names, c.use_synonyms_field, c.use_synonyms_table, c.id);
}

// "BM<m>.<L>x<H>" as numbers for sorting; unparsed keys sort after the parsed ones of their model.
std::tuple<long long, long long, long long, std::string> arch_sort_key(const std::string& a) {
  long long m = 0, l = 0, h = 0;
  if (std::sscanf(a.c_str(), "BM%lld.%lldx%lld", &m, &l, &h) == 3) return {m, l, h, a};
  std::sscanf(a.c_str(), "BM%lld", &m);
  return {m, std::numeric_limits<long long>::max(), 0, a};
}

// The short column label: the grid's axes within one architecture (the model is the section's).
std::string cell_label(const CellSummary& c) {
  return "CS" + std::to_string(c.commandset) + " \xc2\xb7 " + c.feature + " \xc2\xb7 " + flags_code(c) +
         (c.flagged() ? " (flagged)" : "");
}

std::set<EdgeKey> edge_set(const CellSummary& c) {
  std::set<EdgeKey> s;
  for (const NamedEdge& e : c.edges) s.insert({e.from, e.to});
  return s;
}

// The first score of each edge of a cell (a cell lists an edge once; a repeat is ignored).
std::map<EdgeKey, double> edge_scores(const CellSummary& c) {
  std::map<EdgeKey, double> m;
  for (const NamedEdge& e : c.edges) m.emplace(EdgeKey{e.from, e.to}, e.score);
  return m;
}

oj number_or_null(double x) { return std::isfinite(x) ? oj(x) : oj(nullptr); }

// Four significant digits: what a colour cell and its hover text can show.
std::string fmt_g4(double x) {
  char b[32];
  std::snprintf(b, sizeof b, "%.4g", x);
  return b;
}

// Thin lines between command sets and the "CSk" label over each group, for a categorical axis
// whose categories are `order` (indices into cells). `both` also draws horizontal lines (Jaccard).
void group_marks(const std::vector<CellSummary>& cells, const std::vector<int>& order, bool both, oj& layout) {
  oj shapes = oj::array(), notes = oj::array();
  size_t start = 0;
  for (size_t i = 1; i <= order.size(); ++i) {
    if (i < order.size() && cells[order[i]].commandset == cells[order[start]].commandset) continue;
    notes.push_back({{"x", (start + i - 1) / 2.0}, {"xref", "x"}, {"y", 1.0}, {"yref", "paper"}, {"yanchor", "bottom"},
                     {"showarrow", false}, {"font", {{"size", 12}}},
                     {"text", "CS" + std::to_string(cells[order[start]].commandset)}});
    if (i < order.size()) {
      const double at = i - 0.5;
      shapes.push_back({{"type", "line"}, {"xref", "x"}, {"yref", "paper"}, {"x0", at}, {"x1", at}, {"y0", 0}, {"y1", 1},
                        {"line", {{"color", "#333"}, {"width", 1}}}});
      if (both)
        shapes.push_back({{"type", "line"}, {"xref", "paper"}, {"yref", "y"}, {"x0", 0}, {"x1", 1}, {"y0", at}, {"y1", at},
                          {"line", {{"color", "#333"}, {"width", 1}}}});
    }
    start = i;
  }
  layout["shapes"] = shapes;
  layout["annotations"] = notes;
}

oj category_axis(const std::vector<CellSummary>& cells, const std::vector<int>& order) {
  oj ids = oj::array(), text = oj::array();
  for (int c : order) {
    ids.push_back(cells[c].id);
    text.push_back(cell_label(cells[c]));
  }
  return {{"type", "category"}, {"tickmode", "array"}, {"tickvals", ids}, {"ticktext", text}, {"tickangle", -60},
          {"automargin", true}};
}

// The edge x cell heatmap's figure.
oj heatmap_figure(const std::vector<CellSummary>& cells, const EdgeCellMatrix& m) {
  oj x = oj::array(), y = oj::array(), z = oj::array();
  for (int c : m.cells) x.push_back(cells[c].id);
  size_t longest = 0;
  for (size_t r = 0; r < m.edges.size(); ++r) {
    const std::string name = m.edges[r].first + kArrow + m.edges[r].second;
    longest = std::max(longest, name.size());
    y.push_back(name);
    // Sparse: most (edge, cell) pairs are empty, and a 128-cell architecture with 100-edge circuits
    // would spend megabytes on nulls; the page fills the matrix before drawing it.
    for (size_t c = 0; c < m.z[r].size(); ++c)
      if (std::isfinite(m.z[r][c])) z.push_back(oj::array({r, c, std::stod(fmt_g4(m.z[r][c]))}));
  }
  oj trace = {{"type", "heatmap"}, {"x", x}, {"y", y}, {"zmin", -m.zmax}, {"zmax", m.zmax},
              // Diverging around 0: red negative, white 0, blue positive (as the summary page).
              {"colorscale", oj::array({oj::array({0, "rgb(178,24,43)"}), oj::array({0.5, "rgb(255,255,255)"}),
                                        oj::array({1, "rgb(33,102,172)"})})},
              {"hoverongaps", false}, {"xgap", 1}, {"ygap", 1},
              {"colorbar", {{"title", {{"text", "score"}}}, {"thickness", 14}}},
              {"hovertemplate", "%{y}<br>%{x}<br>score %{z:.4g}<extra></extra>"}};
  oj yaxis = {{"type", "category"}, {"autorange", "reversed"}, {"automargin", true}, {"tickfont", {{"size", 11}}}};
  const int height = static_cast<int>(160 + 16 * m.edges.size()) + 200;  // rows + the slanted cell labels
  const int width = static_cast<int>(std::max<size_t>(520, 7 * longest + 26 * m.cells.size() + 260));
  oj layout = {{"height", height}, {"width", width}, {"xaxis", category_axis(cells, m.cells)}, {"yaxis", yaxis},
               {"plot_bgcolor", "#eeeeee"}, {"paper_bgcolor", "white"},
               {"margin", {{"t", 30}, {"r", 20}, {"l", 20}, {"b", 20}}}, {"font", {{"size", 12}}}};
  group_marks(cells, m.cells, false, layout);
  return {{"data", oj::array({trace})}, {"layout", layout}, {"z_entries", z},
          {"z_shape", oj::array({m.edges.size(), m.cells.size()})}};
}

oj jaccard_figure(const std::vector<CellSummary>& cells, const std::vector<int>& order,
                  const std::vector<std::vector<double>>& j) {
  oj ids = oj::array(), z = oj::array();
  for (int c : order) ids.push_back(cells[c].id);
  for (const auto& row : j) {
    oj r = oj::array();
    for (double v : row) r.push_back(number_or_null(v));
    z.push_back(r);
  }
  oj trace = {{"type", "heatmap"}, {"x", ids}, {"y", ids}, {"z", z}, {"zmin", 0}, {"zmax", 1},
              {"colorscale", oj::array({oj::array({0, "rgb(255,255,255)"}), oj::array({1, "rgb(8,48,107)"})})},
              {"hoverongaps", false}, {"xgap", 1}, {"ygap", 1},
              {"colorbar", {{"title", {{"text", "Jaccard"}}}, {"thickness", 14}}},
              {"hovertemplate", "%{x}<br>%{y}<br>Jaccard %{z:.3f}<extra></extra>"}};
  if (order.size() <= 16) {  // the values written in the squares while they are big enough to read
    trace["texttemplate"] = "%{z:.2f}";
    trace["textfont"] = {{"size", 10}};
  }
  oj yaxis = category_axis(cells, order);
  yaxis["autorange"] = "reversed";
  yaxis["tickangle"] = 0;
  const int side = static_cast<int>(std::max<size_t>(240, 26 * order.size()));
  oj layout = {{"height", side + 260}, {"width", side + 420}, {"xaxis", category_axis(cells, order)}, {"yaxis", yaxis},
               {"plot_bgcolor", "#eeeeee"}, {"paper_bgcolor", "white"},
               {"margin", {{"t", 30}, {"r", 20}, {"l", 20}, {"b", 20}}}, {"font", {{"size", 12}}}};
  group_marks(cells, order, true, layout);
  return {{"data", oj::array({trace})}, {"layout", layout}};
}

const char* kCss =
    "body{font-family:Helvetica,Arial,sans-serif;margin:20px;color:#222;font-size:14px}"
    "h1{font-size:22px;margin:0 0 8px}h2{font-size:18px;margin:32px 0 8px;border-bottom:2px solid #ccc;padding-bottom:4px}"
    "h3{font-size:15px;margin:20px 0 6px}h4{font-size:14px;margin:14px 0 4px;font-weight:600}"
    "p.meta,p.caption{margin:2px 0;color:#555}"
    "table{border-collapse:collapse}th,td{padding:3px 7px;border-bottom:1px solid #eee;text-align:left;vertical-align:top}"
    "th{background:#f5f5f5;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}"
    ".scroll{overflow:auto;max-width:100%}.arch-section{margin-bottom:30px}code{font-size:13px}"
    ".yes{color:#2e7d32;font-weight:600}.no{color:#999}";

// The recurrence tables of one architecture.
std::string finetune_html(const std::vector<CellSummary>& cells, const std::vector<FineTuneGroup>& groups,
                          const std::string& arch) {
  std::string h = "<h3>Edges recurring across fine-tunes (CS1-CS3) and the base model (CS0)</h3>\n";
  h += "<p class=\"caption\">Per feature and flags (novel / syn field / syn table as 0 or 1) with cells of several command "
       "sets: the edges consistent in every fine-tune cell of the group, and whether the base model's cell has them "
       "too. Mean score: over the fine-tune cells.</p>\n";
  if (groups.empty()) return h + "<p class=\"meta no-finetunes\">No feature has cells of several command sets here.</p>\n";
  for (size_t g = 0; g < groups.size(); ++g) {
    const FineTuneGroup& grp = groups[g];
    std::string css;
    for (int64_t cs : grp.finetune_commandsets) css += (css.empty() ? "CS" : ", CS") + std::to_string(cs);
    const int in_base = static_cast<int>(std::count_if(grp.edges.begin(), grp.edges.end(), [](const FineTuneEdge& e) { return e.in_base; }));
    h += "<h4>" + esc(grp.feature) + ", flags " + esc(flags_code(cells[grp.finetune_cells.front()])) + ": " + esc(css) +
         (grp.base_cells.empty() ? " (no CS0 cell)" : " and CS0") + "</h4>\n";
    const std::string id = "finetunes-" + arch + "-" + std::to_string(g);
    if (grp.edges.empty()) {
      h += "<p class=\"meta\" id=\"" + esc(id) + "\" data-edges=\"0\">No edge is consistent in every fine-tune cell of this group.</p>\n";
      continue;
    }
    h += "<p class=\"meta\">" + std::to_string(grp.edges.size()) + " edge(s) in all " +
         std::to_string(grp.finetune_cells.size()) + " fine-tune cell(s)" +
         (grp.base_cells.empty() ? "" : ", " + std::to_string(in_base) + " of them also in CS0") + ".</p>\n";
    h += "<div class=\"scroll\"><table class=\"finetunes\" id=\"" + esc(id) + "\" data-edges=\"" +
         std::to_string(grp.edges.size()) + "\" data-in-base=\"" + std::to_string(in_base) +
         "\"><thead><tr><th>edge</th><th>in CS1-CS3 cells</th><th>in CS0</th><th>mean score</th></tr></thead><tbody>\n";
    for (const FineTuneEdge& e : grp.edges) {
      const std::string base = grp.base_cells.empty() ? "<td class=\"no\">no CS0 cell</td>"
                               : e.in_base ? "<td class=\"yes\">yes (" + fmt("%.4f", e.base_score) + ")</td>"
                                           : "<td class=\"no\">no</td>";
      h += "<tr data-in-base=\"" + std::string(e.in_base ? "1" : "0") + "\"><td><code>" + esc(e.from + kArrow + e.to) +
           "</code></td><td class=\"num\">" + std::to_string(e.in_finetunes) + " / " +
           std::to_string(grp.finetune_cells.size()) + "</td>" + base + "<td class=\"num\">" + fmt("%.4f", e.mean_score) +
           "</td></tr>\n";
    }
    h += "</tbody></table></div>\n";
  }
  return h;
}

}  // namespace

std::string arch_of(int64_t model, int64_t n_layers, int64_t n_heads) {
  return "BM" + std::to_string(model) + "." + std::to_string(n_layers) + "x" + std::to_string(n_heads);
}

std::string arch_key(const CellSummary& c) { return c.arch.empty() ? "BM" + std::to_string(c.model) : c.arch; }

std::vector<int> arch_cells(const std::vector<CellSummary>& cells, const std::string& arch, bool include_flagged) {
  std::vector<int> out;
  for (size_t i = 0; i < cells.size(); ++i)
    if (compared(cells[i], include_flagged) && arch_key(cells[i]) == arch) out.push_back(static_cast<int>(i));
  std::stable_sort(out.begin(), out.end(), [&](int a, int b) { return order_key(cells[a]) < order_key(cells[b]); });
  return out;
}

std::vector<std::string> compared_architectures(const std::vector<CellSummary>& cells, bool include_flagged) {
  std::set<std::string> seen;
  for (const auto& c : cells)
    if (compared(c, include_flagged)) seen.insert(arch_key(c));
  std::vector<std::string> out(seen.begin(), seen.end());
  std::sort(out.begin(), out.end(), [](const std::string& a, const std::string& b) { return arch_sort_key(a) < arch_sort_key(b); });
  return out;
}

double quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const double pos = std::max(0.0, std::min(1.0, q)) * (v.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos)), hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (pos - lo);
}

EdgeCellMatrix edge_cell_matrix(const std::vector<CellSummary>& cells, const std::vector<int>& order, double percentile) {
  EdgeCellMatrix m;
  m.cells = order;
  struct Row {
    std::vector<double> z;
    int n = 0;
    double sum_abs = 0;
  };
  std::map<EdgeKey, Row> rows;
  for (size_t k = 0; k < order.size(); ++k)
    for (const auto& [key, score] : edge_scores(cells[order[k]])) {
      Row& r = rows[key];
      if (r.z.empty()) r.z.assign(order.size(), kNaN);
      r.z[k] = score;
      ++r.n;
      r.sum_abs += std::fabs(score);
    }
  std::vector<std::pair<EdgeKey, Row>> sorted(rows.begin(), rows.end());
  std::stable_sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) {
    if (a.second.n != b.second.n) return a.second.n > b.second.n;
    return a.second.sum_abs / a.second.n > b.second.sum_abs / b.second.n;  // ties keep name order (map order)
  });
  std::vector<double> mags;
  for (auto& [key, r] : sorted) {
    m.edges.push_back(key);
    for (double v : r.z)
      if (std::isfinite(v)) mags.push_back(std::fabs(v));
    m.z.push_back(std::move(r.z));
  }
  m.non_empty = static_cast<int>(mags.size());
  for (double a : mags) m.max_abs = std::max(m.max_abs, a);
  // A high quantile rather than the maximum: one outlying cell (a tiny effect divides every score)
  // would otherwise wash every other entry out to white.
  m.zmax = quantile(mags, percentile);
  if (!(m.zmax > 0)) m.zmax = m.max_abs > 0 ? m.max_abs : 1;
  m.clipped = static_cast<int>(std::count_if(mags.begin(), mags.end(), [&](double a) { return a > m.zmax; }));
  return m;
}

double jaccard(const std::vector<EdgeKey>& a, const std::vector<EdgeKey>& b) {
  const std::set<EdgeKey> sa(a.begin(), a.end()), sb(b.begin(), b.end());
  if (sa.empty() && sb.empty()) return kNaN;
  size_t common = 0;
  for (const auto& e : sa) common += sb.count(e);
  return double(common) / double(sa.size() + sb.size() - common);
}

std::vector<std::vector<double>> jaccard_matrix(const std::vector<CellSummary>& cells, const std::vector<int>& order) {
  std::vector<std::vector<EdgeKey>> sets;
  for (int c : order) {
    const std::set<EdgeKey> s = edge_set(cells[c]);
    sets.emplace_back(s.begin(), s.end());
  }
  std::vector<std::vector<double>> j(order.size(), std::vector<double>(order.size(), kNaN));
  for (size_t a = 0; a < order.size(); ++a)
    for (size_t b = a; b < order.size(); ++b) j[a][b] = j[b][a] = jaccard(sets[a], sets[b]);
  return j;
}

std::vector<FineTuneGroup> finetune_recurrence(const std::vector<CellSummary>& cells, const std::vector<int>& order) {
  using GroupKey = std::tuple<std::string, bool, bool, bool>;
  std::vector<GroupKey> keys;  // first appearance
  std::map<GroupKey, FineTuneGroup> groups;
  for (int c : order) {
    const CellSummary& cell = cells[c];
    const GroupKey k{cell.feature, cell.use_novel_names, cell.use_synonyms_field, cell.use_synonyms_table};
    if (!groups.count(k)) {
      keys.push_back(k);
      FineTuneGroup& g = groups[k];
      g.feature = cell.feature;
      g.use_novel_names = cell.use_novel_names;
      g.use_synonyms_field = cell.use_synonyms_field;
      g.use_synonyms_table = cell.use_synonyms_table;
    }
    FineTuneGroup& g = groups[k];
    (cell.commandset == 0 ? g.base_cells : g.finetune_cells).push_back(c);
  }
  std::vector<FineTuneGroup> out;
  for (const GroupKey& k : keys) {
    FineTuneGroup& g = groups[k];
    std::set<int64_t> css;
    for (int c : g.finetune_cells) css.insert(cells[c].commandset);
    if (g.finetune_cells.empty() || css.size() + (g.base_cells.empty() ? 0 : 1) < 2) continue;
    g.finetune_commandsets.assign(css.begin(), css.end());
    // Edges consistent in every fine-tune cell: start from the first, keep those every other one has.
    std::map<EdgeKey, double> common = edge_scores(cells[g.finetune_cells.front()]);
    for (size_t i = 1; i < g.finetune_cells.size(); ++i) {
      const std::map<EdgeKey, double> other = edge_scores(cells[g.finetune_cells[i]]);
      for (auto it = common.begin(); it != common.end();) {
        auto o = other.find(it->first);
        if (o == other.end()) {
          it = common.erase(it);
        } else {
          it->second += o->second;
          ++it;
        }
      }
    }
    std::map<EdgeKey, double> base;
    for (auto it = g.base_cells.rbegin(); it != g.base_cells.rend(); ++it)  // the first CS0 cell's score wins
      for (const auto& [key, score] : edge_scores(cells[*it])) base[key] = score;
    for (const auto& [key, sum] : common) {
      FineTuneEdge e;
      e.from = key.first;
      e.to = key.second;
      e.in_finetunes = static_cast<int>(g.finetune_cells.size());
      e.mean_score = sum / g.finetune_cells.size();
      auto b = base.find(key);
      e.in_base = b != base.end();
      if (e.in_base) e.base_score = b->second;
      g.edges.push_back(e);
    }
    std::stable_sort(g.edges.begin(), g.edges.end(),
                     [](const FineTuneEdge& a, const FineTuneEdge& b) { return std::fabs(a.mean_score) > std::fabs(b.mean_score); });
    out.push_back(std::move(g));
  }
  return out;
}

std::string comparison_html(const SweepSummary& s, const std::string& plotly_js, const std::string& plotly_src,
                            const std::string& index_href) {
  const std::string title = s.title + ": cells compared";
  std::string h = "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n";
  h += "<title>" + esc(title) + "</title>\n<style>" + std::string(kCss) + "</style>\n";
  h += plotly_script(plotly_js, plotly_src);
  h += "</head>\n<body>\n<h1>" + esc(title) + "</h1>\n";
  for (const auto& l : s.lines) h += "<p class=\"meta\">" + esc(l) + "</p>\n";
  if (!index_href.empty()) h += "<p class=\"meta\"><a id=\"index-link\" href=\"" + esc(index_href) + "\">All cells (summary page)</a></p>\n";
  h += "<p class=\"meta\">Node names such as <code>l0.h3</code> are compared only within one architecture (model, layers "
       "x heads): each section below is its own, and no heatmap, Jaccard value or table mixes architectures. Cells are "
       "ordered by command set, feature and flags (novel / syn field / syn table as 0 or 1).</p>\n";

  int left_out = 0, not_done = 0;
  for (const auto& c : s.cells) {
    if (c.status != CellStatus::Done) ++not_done;
    else if (!compared(c, s.include_flagged)) ++left_out;
  }
  if (left_out)
    h += "<p class=\"meta\" id=\"flagged-left-out\">" + std::to_string(left_out) +
         " flagged cell(s) left out of every comparison below (reduce --include-flagged puts them back).</p>\n";
  if (not_done) h += "<p class=\"meta\">" + std::to_string(not_done) + " cell(s) not done: not compared.</p>\n";

  const std::vector<std::string> archs = compared_architectures(s.cells, s.include_flagged);
  if (archs.empty()) {
    h += "<p id=\"no-comparison\">No done cell to compare yet.</p>\n</body>\n</html>\n";
    return h;
  }
  h += "<p class=\"meta\">Architectures: ";
  for (size_t a = 0; a < archs.size(); ++a)
    h += std::string(a ? ", " : "") + "<a href=\"#arch-" + esc(archs[a]) + "\">" + esc(archs[a]) + "</a>";
  h += "</p>\n";

  oj figures = oj::array();  // [div id, figure] drawn at the end, once plotly is loaded
  for (const std::string& arch : archs) {
    const std::vector<int> order = arch_cells(s.cells, arch, s.include_flagged);
    const EdgeCellMatrix m = edge_cell_matrix(s.cells, order);
    const std::string a = esc(arch);
    h += "<div class=\"arch-section\" id=\"arch-" + a + "\" data-arch=\"" + a + "\" data-cells=\"" +
         std::to_string(order.size()) + "\">\n<h2>" + a + ": " + std::to_string(order.size()) + " cell(s), " +
         std::to_string(m.edges.size()) + " distinct consistent edge(s)</h2>\n";
    h += "<details><summary>The cells</summary><ul class=\"cells\">\n";
    for (int c : order) {
      const CellSummary& cell = s.cells[c];
      h += "<li><code>" + esc(cell.id) + "</code>: " + esc(cell_label(cell)) + ", " + std::to_string(cell.edges.size()) +
           " edge(s)" + (cell.html_href.empty() ? "" : " <a href=\"" + esc(cell.html_href) + "\">Sankey</a>") + "</li>\n";
    }
    h += "</ul></details>\n<h3>Consistent edges per cell</h3>\n";
    if (m.edges.empty()) {
      h += "<p class=\"meta\" id=\"heatmap-" + a + "\" data-cells=\"" + std::to_string(order.size()) +
           "\" data-edges=\"0\">No cell of this architecture has consistent edges.</p>\n";
    } else {
      h += "<p class=\"caption\">Rows: every edge consistent in at least one of these cells (most cells first, then mean "
           "|score|); columns: the cells. Colour: the edge's mean normalised score in the cell on a symmetric scale "
           "around 0 (red negative, blue positive) clipped at &plusmn;" + fmt("%.3g", m.zmax) +
           ", the 95th percentile of |score| over the " + std::to_string(m.non_empty) + " non-empty entries (largest " +
           fmt("%.3g", m.max_abs) + "; " + std::to_string(m.clipped) +
           " entr" + (m.clipped == 1 ? "y" : "ies") + " beyond it drawn at full colour); grey: not consistent in that cell.</p>\n";
      const std::string id = "heatmap-" + arch;
      h += "<div class=\"scroll\"><div class=\"plot heatmap\" id=\"" + esc(id) + "\" data-cells=\"" +
           std::to_string(order.size()) + "\" data-edges=\"" + std::to_string(m.edges.size()) + "\" data-zmax=\"" +
           fmt("%.6g", m.zmax) + "\"></div></div>\n";
      figures.push_back(oj::array({id, heatmap_figure(s.cells, m)}));

      h += "<h3>Jaccard overlap of the consistent edge sets</h3>\n<p class=\"caption\">|A &cap; B| / |A &cup; B| of two "
           "cells' consistent edges, 0 (none shared) to 1 (the same set); lines separate command sets; blank where both "
           "cells have no edge.</p>\n";
      const std::string jid = "jaccard-" + arch;
      h += "<div class=\"scroll\"><div class=\"plot jaccard\" id=\"" + esc(jid) + "\" data-cells=\"" +
           std::to_string(order.size()) + "\"></div></div>\n";
      figures.push_back(oj::array({jid, jaccard_figure(s.cells, order, jaccard_matrix(s.cells, order))}));
    }
    h += finetune_html(s.cells, finetune_recurrence(s.cells, order), arch);
    h += "</div>\n";
  }
  h += "<script>\nvar figures = " + script_json(figures) + ";\n";
  h += "figures.forEach(function (f) {\n"
       "  var fig = f[1];\n"
       "  if (fig.z_entries) {  // [row, column, value]: the heatmap's non-empty entries\n"
       "    var z = [];\n"
       "    for (var r = 0; r < fig.z_shape[0]; ++r) z.push(new Array(fig.z_shape[1]).fill(null));\n"
       "    fig.z_entries.forEach(function (e) { z[e[0]][e[1]] = e[2]; });\n"
       "    fig.data[0].z = z;\n"
       "  }\n"
       "  Plotly.newPlot(f[0], fig.data, fig.layout, {displaylogo: false, responsive: false});\n"
       "});\n";
  h += "</script>\n</body>\n</html>\n";
  return h;
}

}  // namespace teap::report
