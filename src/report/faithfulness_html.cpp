#include "report/faithfulness_html.hpp"

#include <cmath>
#include <cstdio>
#include <limits>
#include <map>

#include "report/sankey.hpp"

namespace teap::report {
namespace {

using ojson = nlohmann::ordered_json;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
const char* const kPlusMinus = "\xc2\xb1";  // ±

// A number of the object, NaN when absent, null (no F) or not a number.
double num(const ojson& j, const char* key) {
  if (!j.is_object() || !j.contains(key) || !j[key].is_number()) return kNaN;
  return j[key].get<double>();
}

std::string text(const ojson& j, const char* key) {
  return j.is_object() && j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : std::string();
}

const ojson& circuit(const ojson& f, const char* name) {
  static const ojson none;
  if (!f.contains("circuits") || !f["circuits"].is_object() || !f["circuits"].contains(name)) return none;
  return f["circuits"][name];
}

std::string fmt(const char* spec, double x) {
  if (!std::isfinite(x)) return "n/a";
  char b[64];
  std::snprintf(b, sizeof b, spec, x);
  return b;
}

std::string count(double x) { return std::isfinite(x) ? std::to_string(static_cast<long long>(x)) : "n/a"; }

// "0.834 ± 0.051 (12 edges)" for one circuit.
std::string circuit_text(const ojson& c) {
  std::string s = fmt("%.3f", num(c, "F"));
  if (std::isfinite(num(c, "spread"))) s += std::string(" ") + kPlusMinus + " " + fmt("%.3f", num(c, "spread"));
  return s + " (" + count(num(c, "edges")) + " edges)";
}

bool flag(const ojson& j, const char* key) { return j.is_object() && j.contains(key) && j[key].is_boolean() && j[key].get<bool>(); }

}  // namespace

std::string faithfulness_headline(const ojson& f) {
  if (f.is_null()) return "";
  if (!text(f, "incomplete").empty()) return "Faithfulness: " + text(f, "incomplete");
  if (!text(f, "no_faithfulness").empty()) return "No faithfulness F: " + text(f, "no_faithfulness");
  const ojson& c = circuit(f, "consistent");
  if (c.is_null()) return "Faithfulness: the consistent circuit was not evaluated";
  return "F(consistent) = " + circuit_text(c);
}

std::vector<std::string> faithfulness_lines(const ojson& f) {
  std::vector<std::string> lines;
  if (f.is_null()) return lines;
  const std::string batches = count(num(f, "batches")) + " of " + count(num(f, "n_batches")) + " batches";
  if (!text(f, "incomplete").empty()) {
    lines.push_back("Faithfulness: not yet known: " + text(f, "incomplete"));
  } else if (!text(f, "no_faithfulness").empty()) {
    // F divides by LD_clean - LD_corr: with no effect to recover there is nothing to be faithful to.
    lines.push_back("Faithfulness: no F for this cell (" + text(f, "no_faithfulness") +
                    "; F divides by LD_clean - LD_corr)");
  } else {
    const ojson& c = circuit(f, "consistent");
    lines.push_back(c.is_null() ? "Faithfulness: the consistent circuit was not evaluated (see [evaluate] circuits)"
                                : "Faithfulness F of the consistent circuit (edges in the top " + count(num(f, "top_n")) +
                                      " of every batch): " + circuit_text(c) + ", mean " + kPlusMinus +
                                      " standard deviation over " + batches);
    std::string base;
    for (const char* name : {"empty", "full"}) {
      const ojson& b = circuit(f, name);
      if (!b.is_null()) base += std::string(base.empty() ? "" : ", ") + "F(" + name + ") = " + circuit_text(b);
    }
    if (std::isfinite(num(f, "auc_log_k"))) base += (base.empty() ? "" : "; ") + std::string("area under F(k) over log k ") + fmt("%.3f", num(f, "auc_log_k"));
    if (!base.empty()) lines.push_back("Baselines: " + base);
    lines.push_back("F = mean over prompts of (LD with the circuit - LD_corr) / (LD_clean - LD_corr): 1 keeps the clean "
                    "run's logit difference, 0 falls to the corrupt run's; every edge outside the circuit reads the "
                    "corrupt run's value");
  }
  const ojson nodes = f.contains("scored_nodes") ? f["scored_nodes"] : ojson();
  std::string scored = std::string("heads and MLPs") + (flag(nodes, "input") ? ", input" : "") + (flag(nodes, "logits") ? ", logits" : "");
  lines.push_back("Scored nodes: " + scored + "; never ablated (kept in every circuit, as they were never scored): " +
                  (text(f, "never_ablated").empty() ? "n/a" : text(f, "never_ablated")) +
                  (flag(f, "pruned") ? "; circuits pruned to edges reachable from input and reaching logits" : ""));
  if (!text(f, "note").empty()) lines.push_back("Note: " + text(f, "note"));
  return lines;
}

std::string faithfulness_caption_html(const ojson& f) {
  if (f.is_null()) return "";
  std::string h = "<div id=\"faithfulness\">\n";
  for (const auto& line : faithfulness_lines(f)) h += "<p class=\"caption\">" + xml_escape(line) + "</p>\n";
  return h + "</div>\n";
}

std::string faithfulness_curve_html(const ojson& f) {
  if (f.is_null() || !f.contains("curve") || !f["curve"].is_array() || !text(f, "no_faithfulness").empty()) return "";
  // The spread of each top-k circuit, by k, for error bars.
  std::map<double, double> spread_of_k;
  if (f.contains("circuits") && f["circuits"].is_object())
    for (const auto& [name, c] : f["circuits"].items())
      if (std::isfinite(num(c, "k"))) spread_of_k[num(c, "k")] = num(c, "spread");
  ojson xs = ojson::array(), ys = ojson::array(), err = ojson::array();
  int finite = 0;
  for (const auto& p : f["curve"]) {
    const double k = num(p, "k"), y = num(p, "F");
    if (!std::isfinite(k) || k <= 0) continue;  // a log axis has no place for k <= 0
    xs.push_back(k);
    ys.push_back(std::isfinite(y) ? ojson(y) : ojson(nullptr));
    const auto it = spread_of_k.find(k);
    err.push_back(it != spread_of_k.end() && std::isfinite(it->second) ? it->second : 0.0);
    finite += std::isfinite(y);
  }
  if (!finite) return "";
  ojson data = ojson::array();
  data.push_back({{"type", "scatter"}, {"mode", "lines+markers"}, {"name", "top-k circuits"}, {"x", xs}, {"y", ys},
                  {"error_y", {{"type", "data"}, {"array", err}, {"visible", true}, {"thickness", 1}, {"width", 3}}},
                  {"line", {{"color", "rgb(31,119,180)"}}},
                  {"hovertemplate", "k = %{x}<br>F = %{y:.3f}<extra></extra>"}});
  const ojson& c = circuit(f, "consistent");
  if (std::isfinite(num(c, "F")) && num(c, "edges") > 0)
    data.push_back({{"type", "scatter"}, {"mode", "markers"}, {"name", "consistent circuit"},
                    {"x", ojson::array({num(c, "edges")})}, {"y", ojson::array({num(c, "F")})},
                    {"marker", {{"symbol", "diamond"}, {"size", 11}, {"color", "rgb(214,39,40)"}}},
                    {"hovertemplate", "consistent: %{x} edges<br>F = %{y:.3f}<extra></extra>"}});
  // The baselines as dashed horizontal lines across the plot.
  ojson shapes = ojson::array(), notes = ojson::array();
  for (const char* name : {"empty", "full"}) {
    const double y = num(circuit(f, name), "F");
    if (!std::isfinite(y)) continue;
    const char* colour = name == std::string("full") ? "#2e7d32" : "#888";
    shapes.push_back({{"type", "line"}, {"xref", "paper"}, {"x0", 0}, {"x1", 1}, {"y0", y}, {"y1", y},
                      {"line", {{"dash", "dash"}, {"width", 1}, {"color", colour}}}});
    notes.push_back({{"xref", "paper"}, {"x", 1}, {"y", y}, {"xanchor", "right"}, {"yanchor", "bottom"}, {"showarrow", false},
                     {"text", std::string("F(") + name + ")"}, {"font", {{"size", 11}, {"color", colour}}}});
  }
  const std::string title = "F(k) of the top-k circuits (bars: standard deviation over batches); area under the curve "
                            "over log k " + fmt("%.3f", num(f, "auc_log_k"));
  const ojson layout = {{"xaxis", {{"type", "log"}, {"title", {{"text", "k, edges kept (log scale)"}}}}},
                        {"yaxis", {{"title", {{"text", "F"}}}, {"zeroline", true}}},
                        {"shapes", shapes}, {"annotations", notes},
                        {"width", 640}, {"height", 360},
                        {"margin", {{"t", 30}, {"l", 60}, {"r", 20}, {"b", 50}}},
                        {"legend", {{"orientation", "h"}, {"y", -0.25}}},
                        {"plot_bgcolor", "white"}, {"paper_bgcolor", "white"}};
  std::string h = "<p class=\"caption\" style=\"margin-top:14px\">" + xml_escape(title) + "</p>\n<div id=\"faithfulness-curve\" data-points=\"" + std::to_string(xs.size()) +
                  "\" style=\"width:640px;height:360px\"></div>\n<script>\n";
  h += "var faithfulness_data = " + script_json(data) + ";\n";
  h += "var faithfulness_layout = " + script_json(layout) + ";\n";
  h += "Plotly.newPlot('faithfulness-curve', faithfulness_data, faithfulness_layout, " +
       script_json({{"displaylogo", false}, {"responsive", false}}) + ");\n</script>\n";
  return h;
}

}  // namespace teap::report
