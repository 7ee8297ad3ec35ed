#include "report/summary.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>
#include <tuple>

#include "report/comparison.hpp"
#include "report/sankey.hpp"

namespace teap::report {

std::string to_string(CellStatus s) {
  switch (s) {
    case CellStatus::Done: return "done";
    case CellStatus::Partial: return "partial";
    case CellStatus::Missing: return "missing";
    case CellStatus::Failed: return "failed";
    case CellStatus::Degenerate: return "degenerate";
  }
  return "?";
}

namespace {
std::string join_flags(const std::vector<std::string>& flags) {
  std::string s;
  for (const auto& f : flags) s += (s.empty() ? "" : " ") + f;
  return s;
}
}  // namespace

bool compared(const CellSummary& c, bool include_flagged) {
  return c.status == CellStatus::Done && (include_flagged || !c.flagged());
}

std::vector<EdgeRecurrence> edge_recurrence(const std::vector<CellSummary>& cells, bool include_flagged) {
  std::map<std::tuple<std::string, std::string, std::string>, EdgeRecurrence> by_edge;
  for (size_t c = 0; c < cells.size(); ++c) {
    if (!compared(cells[c], include_flagged)) continue;
    const std::string arch = arch_key(cells[c]);
    for (const NamedEdge& e : cells[c].edges) {
      EdgeRecurrence& r = by_edge[{arch, e.from, e.to}];
      r.arch = arch;
      r.from = e.from;
      r.to = e.to;
      if (!r.cells.empty() && r.cells.back() == static_cast<int>(c)) continue;  // listed twice in one cell
      r.cells.push_back(static_cast<int>(c));
      r.scores.push_back(e.score);
      r.n_positive += e.score > 0;
      r.n_negative += e.score < 0;
    }
  }
  std::vector<EdgeRecurrence> out;
  for (auto& [key, r] : by_edge) {
    double sum = 0;
    for (double x : r.scores) sum += x;
    r.mean_score = sum / r.scores.size();
    out.push_back(std::move(r));
  }
  std::sort(out.begin(), out.end(), [](const EdgeRecurrence& a, const EdgeRecurrence& b) {
    if (a.cells.size() != b.cells.size()) return a.cells.size() > b.cells.size();
    const double ma = std::fabs(a.mean_score), mb = std::fabs(b.mean_score);
    if (ma != mb) return ma > mb;
    return std::tie(a.from, a.to, a.arch) < std::tie(b.from, b.to, b.arch);
  });
  return out;
}

namespace {

std::string fmt(const char* f, double x) {
  char b[64];
  std::snprintf(b, sizeof b, f, x);
  return b;
}

std::string esc(const std::string& s) { return xml_escape(s); }

// White to blue for positive, white to red for negative, by |t| in [0, 1].
std::string heat_colour(double t) {
  t = std::max(-1.0, std::min(1.0, t));
  const double a = std::sqrt(std::fabs(t));  // perceptually closer for small values
  const int base[3] = {t >= 0 ? 33 : 178, t >= 0 ? 102 : 24, t >= 0 ? 172 : 43};
  char b[16];
  std::snprintf(b, sizeof b, "#%02x%02x%02x", static_cast<int>(std::lround(255 + (base[0] - 255) * a)),
                static_cast<int>(std::lround(255 + (base[1] - 255) * a)),
                static_cast<int>(std::lround(255 + (base[2] - 255) * a)));
  return b;
}

std::string join(const std::set<std::string>& xs) {
  std::string s;
  for (const auto& x : xs) s += (s.empty() ? "" : ", ") + x;
  return s;
}

std::string flags_code(const CellSummary& c) {
  return std::string(c.use_novel_names ? "1" : "0") + (c.use_synonyms_field ? "1" : "0") + (c.use_synonyms_table ? "1" : "0");
}

// "Methods compared": per cell of both sweeps, the two methods, Spearman of their mean normalised
// edge scores, their consistent edges, the overlap and F of each consistent circuit.
std::string comparison_section(const MethodComparison& m) {
  auto num = [](double x, const char* f) { return std::isfinite(x) ? fmt(f, x) : std::string("&ndash;"); };
  std::string h = "<h2>Methods compared</h2>\n<p class=\"meta\">This sweep (a) against " + esc(m.other) +
                  " (b), cell by cell: Spearman's rank correlation of the two methods' mean normalised edge scores "
                  "over every valid edge (average ranks for ties), their consistent edges, the edges common to both and "
                  "their Jaccard overlap, and F of each method's consistent circuit (when both sweeps evaluated it)." +
                  (m.json_href.empty() ? "" : " <a href=\"" + esc(m.json_href) + "\">JSON</a>") + "</p>\n";
  if (m.rows.empty()) {
    h += "<p id=\"no-method-comparison\">No cell is comparable between the two sweeps.</p>\n";
  } else {
    h += "<div class=\"scroll\"><table id=\"methods-compared\"><thead><tr><th>Cell</th><th>Method a</th><th>Method "
         "b</th><th>Edges</th><th>Spearman</th><th>Consistent a</th><th>Consistent b</th><th>Common</th><th>Jaccard</th>"
         "<th>F a</th><th>F b</th><th>Common edges</th></tr></thead><tbody>\n";
    for (const auto& r : m.rows) {
      std::string common_html;
      for (const auto& [from, to] : r.common_edges)
        common_html += (common_html.empty() ? "" : ", ") + esc(from) + " &rarr; " + esc(to);
      h += "<tr><td>" + esc(r.cell_id) + "</td><td>" + esc(r.method_a) + "</td><td>" + esc(r.method_b) +
           "</td><td class=\"num\">" + std::to_string(r.n_edges) + "</td><td class=\"num\">" + num(r.spearman, "%.3f") +
           "</td><td class=\"num\">" + std::to_string(r.consistent_a) + "</td><td class=\"num\">" +
           std::to_string(r.consistent_b) + "</td><td class=\"num\">" + std::to_string(r.common) +
           "</td><td class=\"num\">" + num(r.jaccard, "%.3f") + "</td><td class=\"num\">" + num(r.f_a, "%.3f") +
           "</td><td class=\"num\">" + num(r.f_b, "%.3f") + "</td><td>" + common_html + "</td></tr>\n";
    }
    h += "</tbody></table></div>\n";
  }
  if (!m.not_compared.empty()) {
    h += "<p class=\"meta\">Not compared:</p>\n<ul id=\"not-compared\">\n";
    for (const auto& why : m.not_compared) h += "<li>" + esc(why) + "</li>\n";
    h += "</ul>\n";
  }
  return h;
}

// The three F cells of a row: F of the consistent circuit with its spread, the area under F(k), F
// of the empty circuit; why not, where there is no F.
std::string faithfulness_cells(const CellSummary& c) {
  if (!c.evaluated) return "<td></td><td></td><td></td>";
  if (!c.has_faithfulness) {
    const std::string what = c.status == CellStatus::Degenerate ? "no F"
                             : c.status == CellStatus::Done
                                 ? "evaluated " + std::to_string(c.batches_evaluated) + "/" + std::to_string(c.n_batches)
                                 : "";
    return "<td class=\"nw\" title=\"" + esc(c.no_faithfulness) + "\">" + esc(what) + "</td><td></td><td></td>";
  }
  auto number = [](double x, const char* f) { return std::isfinite(x) ? fmt(f, x) : std::string("n/a"); };
  std::string consistent = "n/a";
  if (std::isfinite(c.f_consistent))
    consistent = fmt("%.3f", c.f_consistent) + (std::isfinite(c.f_consistent_spread) ? " &plusmn; " + fmt("%.3f", c.f_consistent_spread) : "");
  const std::string title = !c.no_faithfulness.empty()     ? c.no_faithfulness
                            : c.consistent_circuit_edges >= 0 ? std::to_string(c.consistent_circuit_edges) + " edges"
                                                               : "the consistent circuit was not evaluated";
  return "<td class=\"num nw fc\" title=\"" + esc(title) + "\">" + consistent + "</td><td class=\"num\">" +
         number(c.f_auc, "%.3f") + "</td><td class=\"num\">" + number(c.f_empty, "%.3f") + "</td>";
}

// A step of 1, 2, 2.5 or 5 x 10^n giving about five ticks over [lo, hi].
double tick_step(double lo, double hi) {
  const double raw = (hi - lo) / 5, p = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 2.5, 5.0})
    if (m * p >= raw) return m * p;
  return 10 * p;
}

const char* const kFeatureColours[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"};

// The heading, what the chart shows, the chart.
std::string faithfulness_section(const std::vector<CellSummary>& cells) {
  int with_f = 0, without = 0;
  for (const auto& c : cells) {
    if (!c.evaluated) continue;
    if (c.has_faithfulness && std::isfinite(c.f_consistent)) ++with_f;
    else ++without;
  }
  std::string h = "<h2>Faithfulness of the consistent circuits</h2>\n<p class=\"meta\">F = mean over prompts of (LD "
                  "with only the circuit's edges - LD_corr) / (LD_clean - LD_corr): 1 keeps the clean run's logit "
                  "difference, 0 falls to the corrupt run's. One dot per cell (bar: standard deviation over batches), "
                  "grouped by feature; hollow dots are flagged cells." +
                  (without ? " " + std::to_string(without) + " evaluated cell(s) have no F yet (evaluation incomplete, "
                             "or degenerate): see the table." : std::string()) + "</p>\n";
  const std::string svg = faithfulness_chart_svg(cells);
  if (svg.empty()) return h + "<p id=\"no-faithfulness\">No cell has an F yet.</p>\n";
  return h + "<div class=\"scroll\">" + svg + "</div>\n";
}

const char* kCss =
    "body{font-family:Helvetica,Arial,sans-serif;margin:20px;color:#222;font-size:14px}"
    "h1{font-size:22px;margin:0 0 8px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}"
    "p.meta{margin:2px 0;color:#555}"
    "table{border-collapse:collapse}th,td{padding:3px 7px;border-bottom:1px solid #eee;text-align:left;vertical-align:top}"
    "th{background:#f5f5f5;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}"
    ".nw{white-space:nowrap}.st{white-space:nowrap;display:inline-block;padding:1px 7px;border-radius:9px;font-size:12px;color:#fff}"
    ".st-done{background:#2e7d32}.st-partial{background:#ef6c00}.st-missing{background:#9e9e9e}"
    ".st-failed{background:#c62828}.st-degenerate{background:#6a1b9a}"
    ".counts span{margin-right:14px}.problems{font-size:12px;color:#a33;min-width:260px;max-width:420px}"
    ".scroll{overflow:auto;max-width:100%;border:1px solid #eee}"
    "table.heat td{width:14px;height:14px;padding:0;border:1px solid #fff}"
    "table.heat th.edge{white-space:nowrap;font-family:monospace;font-size:12px;background:#fff;position:sticky;left:0}"
    "table.heat th.cell{writing-mode:vertical-rl;transform:rotate(180deg);font-weight:normal;font-size:11px;"
    "background:#fff;padding:4px 0;white-space:nowrap}"
    ".legend{display:flex;align-items:center;gap:6px;font-size:12px;margin:6px 0}"
    ".legend .bar{width:220px;height:12px;border:1px solid #ccc}"
    "code{font-size:13px}"
    ".flag{white-space:nowrap;display:inline-block;padding:1px 6px;border-radius:9px;font-size:12px;color:#fff;"
    "background:#c0392b}tr[data-flags]:not([data-flags=\"\"]) td{background:#fff6f4}";

}  // namespace

std::vector<size_t> heatmap_rows(const std::vector<EdgeRecurrence>& rec, const std::vector<int>& cells, int most) {
  std::vector<bool> take(rec.size(), false);
  // Every cell's strongest edge, so that no column with edges is blank.
  for (int c : cells) {
    size_t best = rec.size();
    double best_abs = -1;
    for (size_t r = 0; r < rec.size(); ++r)
      for (size_t k = 0; k < rec[r].cells.size(); ++k)
        if (rec[r].cells[k] == c && std::fabs(rec[r].scores[k]) > best_abs) {
          best = r;
          best_abs = std::fabs(rec[r].scores[k]);
        }
    if (best < rec.size()) take[best] = true;
  }
  // Then the most recurrent, up to `most` rows in all.
  size_t n = static_cast<size_t>(std::count(take.begin(), take.end(), true));
  for (size_t r = 0; r < rec.size() && n < static_cast<size_t>(std::max(1, most)); ++r)
    if (!take[r]) {
      take[r] = true;
      ++n;
    }
  std::vector<size_t> rows;
  for (size_t r = 0; r < rec.size(); ++r)
    if (take[r]) rows.push_back(r);
  return rows;
}

std::string summary_html(const SweepSummary& s) {
  const bool evaluated = std::any_of(s.cells.begin(), s.cells.end(), [](const CellSummary& c) { return c.evaluated; });
  std::string h = "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n";
  h += "<title>" + esc(s.title) + "</title>\n<style>" + std::string(kCss) + "</style>\n</head>\n<body>\n";
  h += "<h1>" + esc(s.title) + "</h1>\n";
  for (const auto& l : s.lines) h += "<p class=\"meta\">" + esc(l) + "</p>\n";
  if (!s.comparison_href.empty())
    h += "<p class=\"meta\"><a id=\"comparison-link\" href=\"" + esc(s.comparison_href) +
         "\">Cells compared per architecture</a> (edge x cell heatmap, Jaccard, recurrence across fine-tunes)</p>\n";

  std::map<CellStatus, int> counts;
  for (const auto& c : s.cells) ++counts[c.status];
  h += "<p class=\"counts\" id=\"counts\">";
  h += "<span>" + std::to_string(s.cells.size()) + " cells</span>";
  for (CellStatus st : {CellStatus::Done, CellStatus::Partial, CellStatus::Failed, CellStatus::Missing, CellStatus::Degenerate})
    if (counts[st])
      h += "<span><span class=\"st st-" + to_string(st) + "\">" + to_string(st) + "</span> " + std::to_string(counts[st]) +
           "</span>";
  h += "</p>\n";

  // --- Cells ------------------------------------------------------------------------------------
  h += "<h2>Cells</h2>\n<div class=\"scroll\"><table id=\"cells\">\n<thead><tr><th>#</th><th>cell</th><th>model</th>"
       "<th>CS</th><th>feature</th><th>novel</th><th>syn field</th><th>syn table</th><th>status</th><th>batches</th>"
       "<th>LD clean</th><th>LD corrupt</th><th>effect (spread)</th><th>flips</th><th>clean acc.</th><th>flags</th>"
       "<th>edges</th>" +
       std::string(evaluated ? "<th title=\"F of the consistent circuit, mean &plusmn; standard deviation over batches\">F "
                               "consistent</th><th title=\"area under F(k) of the top-k circuits over log k\">AUC F(k)</th>"
                               "<th title=\"F with every scored edge ablated\">F empty</th>"
                             : "") +
       "<th>files</th></tr></thead>\n<tbody>\n";
  for (size_t i = 0; i < s.cells.size(); ++i) {
    const CellSummary& c = s.cells[i];
    const std::string st = to_string(c.status);
    h += "<tr class=\"cell\" data-status=\"" + st + "\" id=\"cell-" + esc(c.id) + "\" data-flags=\"" +
         esc(join_flags(c.flags)) + "\">";
    h += "<td class=\"num\">" + std::to_string(i + 1) + "</td><td class=\"nw\"><code>" + esc(c.id) + "</code></td>";
    h += "<td>BM" + std::to_string(c.model) + "</td><td>CS" + std::to_string(c.commandset) + "</td><td>" + esc(c.feature) +
         "</td>";
    for (bool f : {c.use_novel_names, c.use_synonyms_field, c.use_synonyms_table}) h += std::string("<td>") + (f ? "yes" : "") + "</td>";
    std::string label = st;
    if (c.status == CellStatus::Partial) label += " " + std::to_string(c.batches_present) + " of " + std::to_string(c.n_batches);
    if (c.status == CellStatus::Failed) label += " (" + std::to_string(c.batches_failed) + ")";
    h += "<td><span class=\"st st-" + st + "\">" + esc(label) + "</span>";
    if (!c.problems.empty()) {
      h += "<div class=\"problems\">";
      const size_t shown = std::min<size_t>(c.problems.size(), 4);
      for (size_t k = 0; k < shown; ++k) h += esc(c.problems[k]) + "<br>";
      if (c.problems.size() > shown) h += "... and " + std::to_string(c.problems.size() - shown) + " more";
      h += "</div>";
    }
    h += "</td><td class=\"num\">" + std::to_string(c.batches_present) + "/" + std::to_string(c.n_batches) + "</td>";
    if (c.has_baselines) {
      h += "<td class=\"num\">" + fmt("%.3f", c.clean_ld) + "</td><td class=\"num\">" + fmt("%.3f", c.corrupt_ld) + "</td>";
      h += "<td class=\"num\">" + (c.quality_known ? fmt("%.3f", c.effect) + " (" + fmt("%.3f", c.effect_spread) + ")" : "") +
           "</td><td class=\"num\">" +
           (c.quality_known && std::isfinite(c.flip_fraction) ? fmt("%.0f%%", 100 * c.flip_fraction) : std::string()) + "</td>";
      h += "<td class=\"num\">" + fmt("%.1f%%", 100 * c.clean_accuracy) + "</td>";
    } else {
      h += "<td></td><td></td><td></td><td></td><td></td>";
    }
    h += "<td>";
    for (const auto& f : c.flags) h += "<span class=\"flag\">" + esc(f) + "</span> ";
    h += "</td>";
    h += "<td class=\"num\">" + (c.status == CellStatus::Done ? std::to_string(c.edges.size()) : std::string()) + "</td>";
    if (evaluated) h += faithfulness_cells(c);
    h += "<td class=\"nw\">";
    std::string links;
    auto link = [&](const std::string& href, const char* text) {
      if (!href.empty()) links += (links.empty() ? "" : " · ") + std::string("<a href=\"") + esc(href) + "\">" + text + "</a>";
    };
    link(c.html_href, "Sankey");
    link(c.svg_href, "SVG");
    link(c.json_href, "JSON");
    h += links + "</td></tr>\n";
  }
  h += "</tbody></table></div>\n";

  // --- Comparison -------------------------------------------------------------------------------
  // Flagged cells stay out of the comparison unless asked: their scores divide by a tiny effect
  // and would set the colour scale for everyone.
  const std::vector<EdgeRecurrence> rec = edge_recurrence(s.cells, s.include_flagged);
  std::vector<int> done;
  int left_out = 0;
  for (size_t i = 0; i < s.cells.size(); ++i) {
    if (compared(s.cells[i], s.include_flagged)) done.push_back(static_cast<int>(i));
    else left_out += s.cells[i].status == CellStatus::Done;
  }
  if (evaluated) h += faithfulness_section(s.cells);
  for (const auto& m : s.comparisons) h += comparison_section(m);
  h += "<h2>Edges across cells</h2>\n";
  if (left_out)
    h += "<p class=\"meta\" id=\"flagged-left-out\">" + std::to_string(left_out) +
         " flagged cell(s) left out of the heatmap, its colour scale and the recurrence table (reduce "
         "--include-flagged puts them back).</p>\n";
  if (rec.empty()) {
    h += "<p id=\"no-comparison\">No done cell has consistent edges yet: nothing to compare.</p>\n";
  } else {
    const std::vector<size_t> shown = heatmap_rows(rec, done, s.heatmap_rows);
    const size_t rows = shown.size();
    // Several architectures: each row names its own, as their node names are not the same nodes.
    const bool several = std::any_of(rec.begin(), rec.end(), [&](const EdgeRecurrence& e) { return e.arch != rec[0].arch; });
    auto edge_name = [&](const EdgeRecurrence& e) {
      return (several ? e.arch + ": " : std::string()) + e.from + " \xe2\x86\x92 " + e.to;
    };
    double vmax = 0;
    for (size_t r : shown)
      for (double x : rec[r].scores) vmax = std::max(vmax, std::fabs(x));
    if (vmax == 0) vmax = 1;
    h += "<p class=\"meta\">Heatmap: " + std::to_string(rows) + " of " + std::to_string(rec.size()) +
         " edges (rows), the most recurrent and every cell's strongest (all of them: comparison.html), in the " +
         std::to_string(done.size()) +
         " done cells (columns); colour is the edge's mean normalised score in the cell, blank where the edge is not "
         "consistent there.</p>\n";
    h += "<div class=\"legend\"><span>" + fmt("%.3g", -vmax) + "</span><span class=\"bar\" style=\"background:linear-gradient(to right," +
         heat_colour(-1) + "," + heat_colour(-0.25) + ",#ffffff," + heat_colour(0.25) + "," + heat_colour(1) +
         ")\"></span><span>" + fmt("%.3g", vmax) + "</span></div>\n";
    h += "<div class=\"scroll\"><table class=\"heat\" id=\"heatmap\">\n<thead><tr><th class=\"edge\">edge \\ cell</th>";
    for (int c : done) h += "<th class=\"cell\" title=\"" + esc(s.cells[c].id) + "\">" + esc(s.cells[c].id) + "</th>";
    h += "</tr></thead>\n<tbody>\n";
    for (size_t r : shown) {
      const EdgeRecurrence& e = rec[r];
      const std::string name = edge_name(e);
      h += "<tr><th class=\"edge\">" + esc(name) + "</th>";
      std::map<int, double> at;
      for (size_t k = 0; k < e.cells.size(); ++k) at[e.cells[k]] = e.scores[k];
      for (int c : done) {
        auto it = at.find(c);
        if (it == at.end()) {
          h += "<td></td>";
        } else {
          h += "<td class=\"v\" style=\"background:" + heat_colour(it->second / vmax) + "\" title=\"" +
               esc(name + " in " + s.cells[c].id + ": " + fmt("%.6g", it->second)) + "\"></td>";
        }
      }
      h += "</tr>\n";
    }
    h += "</tbody></table></div>\n";

    const size_t trows = std::min<size_t>(rec.size(), std::max(1, s.recurrence_rows));
    h += "<h2>Most recurrent edges</h2>\n<p class=\"meta\">Of " + std::to_string(done.size()) +
         " done cells; flags are novel / syn field / syn table as 0 or 1.</p>\n";
    h += "<div class=\"scroll\"><table id=\"recurrence\">\n<thead><tr><th>edge</th><th>cells</th><th>mean score</th>"
         "<th>sign (+/&minus;)</th><th>features</th><th>command sets</th><th>models</th><th>flags</th></tr></thead>\n<tbody>\n";
    for (size_t r = 0; r < trows; ++r) {
      const EdgeRecurrence& e = rec[r];
      std::set<std::string> feats, css, models, flags;
      for (int c : e.cells) {
        feats.insert(s.cells[c].feature);
        css.insert("CS" + std::to_string(s.cells[c].commandset));
        models.insert("BM" + std::to_string(s.cells[c].model));
        flags.insert(flags_code(s.cells[c]));
      }
      h += "<tr><td><code>" + esc(edge_name(e)) + "</code></td><td class=\"num\">" +
           std::to_string(e.cells.size()) + " / " + std::to_string(done.size()) + "</td><td class=\"num\">" +
           fmt("%.4f", e.mean_score) + "</td><td class=\"num\">" + std::to_string(e.n_positive) + " / " +
           std::to_string(e.n_negative) + "</td><td>" + esc(join(feats)) + "</td><td>" + esc(join(css)) + "</td><td>" +
           esc(join(models)) + "</td><td>" + esc(join(flags)) + "</td></tr>\n";
    }
    h += "</tbody></table></div>\n";
  }
  h += "</body>\n</html>\n";
  return h;
}

std::string faithfulness_chart_svg(const std::vector<CellSummary>& cells) {
  // Cells with an F, grouped by feature in order of first appearance.
  std::vector<std::string> features;
  std::map<std::string, std::vector<const CellSummary*>> groups;
  double lo = 0, hi = 1;  // F = 0 and 1 always in view: they are what F is read against
  for (const auto& c : cells) {
    if (!c.evaluated || !c.has_faithfulness || !std::isfinite(c.f_consistent)) continue;
    if (!groups.count(c.feature)) features.push_back(c.feature);
    groups[c.feature].push_back(&c);
    const double sp = std::isfinite(c.f_consistent_spread) ? c.f_consistent_spread : 0;
    lo = std::min(lo, c.f_consistent - sp);
    hi = std::max(hi, c.f_consistent + sp);
  }
  if (features.empty()) return "";
  const double pad = 0.05 * (hi - lo);
  lo -= pad;
  hi += pad;
  const double step = tick_step(lo, hi);
  const double left = 56, right = 16, top = 16, plot_h = 240, bottom = 64, dot_gap = 18, group_gap = 28;
  // A group is as wide as its dots or its label (about 6.5 px a character at 11 px), whichever is wider.
  auto group_width = [&](const std::string& f) { return std::max(dot_gap * groups[f].size(), 6.5 * f.size() + 4); };
  double width = left;
  for (const auto& f : features) width += group_gap + group_width(f);
  width = std::max(360.0, width + group_gap + right);
  const double height = top + plot_h + bottom;
  auto y_of = [&](double f) { return top + plot_h * (hi - f) / (hi - lo); };

  std::string o = "<svg id=\"faithfulness-plot\" xmlns=\"http://www.w3.org/2000/svg\" width=\"" + fmt("%.0f", width) +
                  "\" height=\"" + fmt("%.0f", height) + "\" viewBox=\"0 0 " + fmt("%.0f", width) + " " +
                  fmt("%.0f", height) + "\" font-family=\"Helvetica, Arial, sans-serif\" font-size=\"11\">\n";
  o += "<title>F of the consistent circuit per cell</title>\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  // Grid and y ticks.
  for (double t = std::ceil(lo / step) * step; t <= hi + 1e-12; t += step) {
    const double y = y_of(t);
    o += "<line x1=\"" + fmt("%.1f", left) + "\" x2=\"" + fmt("%.1f", width - right) + "\" y1=\"" + fmt("%.1f", y) +
         "\" y2=\"" + fmt("%.1f", y) + "\" stroke=\"#eee\"/><text x=\"" + fmt("%.1f", left - 6) + "\" y=\"" +
         fmt("%.1f", y + 4) + "\" text-anchor=\"end\" fill=\"#555\">" + fmt("%g", std::fabs(t) < 1e-12 ? 0.0 : t) + "</text>\n";
  }
  for (double ref : {0.0, 1.0})
    o += "<line class=\"ref\" x1=\"" + fmt("%.1f", left) + "\" x2=\"" + fmt("%.1f", width - right) + "\" y1=\"" +
         fmt("%.1f", y_of(ref)) + "\" y2=\"" + fmt("%.1f", y_of(ref)) + "\" stroke=\"" + (ref ? "#2e7d32" : "#888") +
         "\" stroke-dasharray=\"5 4\"/>\n";
  o += "<text x=\"14\" y=\"" + fmt("%.1f", top + plot_h / 2) + "\" transform=\"rotate(-90 14 " + fmt("%.1f", top + plot_h / 2) +
       ")\" text-anchor=\"middle\" fill=\"#333\">F (consistent circuit)</text>\n";
  // Dots with their spread, feature by feature.
  double x = left + group_gap;
  for (size_t g = 0; g < features.size(); ++g) {
    const auto& members = groups[features[g]];
    const std::string colour = kFeatureColours[g % (sizeof kFeatureColours / sizeof *kFeatureColours)];
    const double x0 = x, gw = group_width(features[g]);
    x += (gw - dot_gap * members.size()) / 2;  // the dots centred in their group
    for (const CellSummary* c : members) {
      const double cx = x + dot_gap / 2, cy = y_of(c->f_consistent);
      std::string tip = c->id + ": F = " + fmt("%.3f", c->f_consistent);
      if (std::isfinite(c->f_consistent_spread)) {
        tip += " \xc2\xb1 " + fmt("%.3f", c->f_consistent_spread);
        const double a = y_of(c->f_consistent - c->f_consistent_spread), b = y_of(c->f_consistent + c->f_consistent_spread);
        o += "<line x1=\"" + fmt("%.1f", cx) + "\" x2=\"" + fmt("%.1f", cx) + "\" y1=\"" + fmt("%.1f", a) + "\" y2=\"" +
             fmt("%.1f", b) + "\" stroke=\"" + colour + "\"/>\n";
      }
      if (c->consistent_circuit_edges >= 0) tip += " (" + std::to_string(c->consistent_circuit_edges) + " edges)";
      if (c->flagged()) tip += "; flagged " + join_flags(c->flags);
      o += "<circle class=\"fdot\" data-cell=\"" + esc(c->id) + "\" cx=\"" + fmt("%.1f", cx) + "\" cy=\"" + fmt("%.1f", cy) +
           "\" r=\"4.5\" stroke=\"" + colour + "\" stroke-width=\"1.5\" fill=\"" + (c->flagged() ? "white" : colour) +
           "\"><title>" + esc(tip) + "</title></circle>\n";
      x += dot_gap;
    }
    x = x0 + gw;
    const double mid = x0 + gw / 2;
    o += "<text x=\"" + fmt("%.1f", mid) + "\" y=\"" + fmt("%.1f", top + plot_h + 16) +
         "\" text-anchor=\"middle\" fill=\"" + colour + "\">" + esc(features[g]) + "</text>\n";
    o += "<text x=\"" + fmt("%.1f", mid) + "\" y=\"" + fmt("%.1f", top + plot_h + 30) +
         "\" text-anchor=\"middle\" fill=\"#888\">" + std::to_string(members.size()) + " cell" + (members.size() > 1 ? "s" : "") +
         "</text>\n";
    x += group_gap;
  }
  o += "<line x1=\"" + fmt("%.1f", left) + "\" x2=\"" + fmt("%.1f", left) + "\" y1=\"" + fmt("%.1f", top) + "\" y2=\"" +
       fmt("%.1f", top + plot_h) + "\" stroke=\"#999\"/>\n</svg>\n";
  return o;
}

}  // namespace teap::report
