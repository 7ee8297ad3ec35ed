#include "report/diff.hpp"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <utility>

#include "util/error.hpp"
#include "util/files.hpp"

namespace teap::report {
namespace fs = std::filesystem;

const char* const kDiffBoth = "rgba(120,80,140,0.45)";
const char* const kDiffOnlyA = "rgba(31,119,180,0.6)";
const char* const kDiffOnlyB = "rgba(230,100,20,0.65)";

namespace {

const char* const kArrow = " \xe2\x86\x92 ";  // →

std::string fmt3(double x) {
  char b[64];
  std::snprintf(b, sizeof b, "%.3f", x);
  return b;
}

// A metadata value as text ("" when absent or null): 1 and "1" read alike.
std::string meta_text(const nlohmann::json& doc, const char* key) {
  if (!doc.is_object() || !doc.contains("metadata") || !doc["metadata"].is_object()) return "";
  const auto& m = doc["metadata"];
  if (!m.contains(key) || m[key].is_null()) return "";
  return m[key].is_string() ? m[key].get<std::string>() : m[key].dump();
}

std::string stem_of(const std::string& path) {
  const fs::path p(path);
  return p.extension() == ".json" ? p.stem().string() : p.filename().string();
}

// The edges of a result once each, first score kept (as the Sankey and the summary read them).
std::vector<NamedEdge> unique_edges(const std::vector<NamedEdge>& edges) {
  std::vector<NamedEdge> out;
  std::map<std::pair<std::string, std::string>, bool> seen;
  for (const NamedEdge& e : edges)
    if (seen.emplace(std::make_pair(e.from, e.to), true).second) out.push_back(e);
  return out;
}

}  // namespace

std::string result_arch_text(const nlohmann::json& doc) {
  const std::string m = meta_text(doc, "model"), l = meta_text(doc, "n_layers"), h = meta_text(doc, "n_heads");
  std::string s = m.empty() ? "model unknown" : "BM" + m;
  if (!l.empty() || !h.empty()) s += ", " + (l.empty() ? "?" : l) + " layers x " + (h.empty() ? "?" : h) + " heads";
  return s;
}

void check_same_architecture(const std::string& path_a, const nlohmann::json& a, const std::string& path_b,
                             const nlohmann::json& b) {
  for (const char* key : {"model", "n_layers", "n_heads"}) {
    const std::string x = meta_text(a, key), y = meta_text(b, key);
    if (!x.empty() && !y.empty() && x != y)
      throw InputError(path_a + " (" + result_arch_text(a) + ") and " + path_b + " (" + result_arch_text(b) +
                       "): different architectures (metadata." + key +
                       "); node names compare only within one architecture");
  }
}

DiffSankey build_diff_sankey(const std::vector<NamedEdge>& a_in, const std::vector<NamedEdge>& b_in) {
  const std::vector<NamedEdge> a = unique_edges(a_in), b = unique_edges(b_in);
  std::map<std::pair<std::string, std::string>, double> in_b;
  for (const NamedEdge& e : b) in_b[{e.from, e.to}] = e.score;
  std::map<std::pair<std::string, std::string>, bool> in_a;
  for (const NamedEdge& e : a) in_a[{e.from, e.to}] = true;

  // The union in A's order, then B's own: a shared edge drawn with the mean of its two scores
  // (node sums then add those), recoloured and relabelled below link by link.
  struct Where {
    int side;  // 0 both, 1 only A, 2 only B
    double sa, sb;
  };
  std::vector<NamedEdge> edges;
  std::vector<Where> where;
  for (const NamedEdge& e : a) {
    auto it = in_b.find({e.from, e.to});
    if (it != in_b.end()) {
      edges.push_back({e.from, e.to, (e.score + it->second) / 2});
      where.push_back({0, e.score, it->second});
    } else {
      edges.push_back(e);
      where.push_back({1, e.score, 0});
    }
  }
  for (const NamedEdge& e : b)
    if (!in_a.count({e.from, e.to})) {
      edges.push_back(e);
      where.push_back({2, 0, e.score});
    }

  DiffSankey d;
  d.sankey = build_sankey(edges);
  // build_sankey keeps the edges' order for the real links, ghost links after them.
  for (size_t i = 0; i < edges.size(); ++i) {
    SankeyLink& l = d.sankey.links[i];
    const Where& w = where[i];
    const std::string name = edges[i].from + kArrow + edges[i].to;
    if (w.side == 0) {
      ++d.both;
      l.value = (std::fabs(w.sa) + std::fabs(w.sb)) / 2;
      l.color = kDiffBoth;
      l.label = name + "<br>in both: A " + fmt3(w.sa) + ", B " + fmt3(w.sb);
    } else if (w.side == 1) {
      ++d.only_a;
      l.color = kDiffOnlyA;
      l.label = name + "<br>only in A: " + fmt3(w.sa);
    } else {
      ++d.only_b;
      l.color = kDiffOnlyB;
      l.label = name + "<br>only in B: " + fmt3(w.sb);
    }
    if (!(l.value > 0)) l.value = 1e-6;  // a zero score still draws a hairline
  }
  return d;
}

std::vector<std::string> write_diff(const std::vector<std::string>& files, const std::string& out_dir, bool html,
                                    bool svg, const std::string& plotly_js, const std::string& plotly_src) {
  if (files.size() != 2)
    throw InputError("plot --diff: takes exactly two result JSON files (A then B), got " + std::to_string(files.size()));
  const LoadedResult a = read_result(files[0]), b = read_result(files[1]);
  check_same_architecture(files[0], a.doc, files[1], b.doc);
  const fs::path in(files[0]);
  fs::path dir = out_dir.empty() ? (in.has_parent_path() ? in.parent_path() : fs::path(".")) : fs::path(out_dir);
  if (!out_dir.empty()) {
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec || !fs::is_directory(dir))
      throw InputError("--out " + out_dir + ": cannot be created as a folder (" +
                       (ec ? ec.message() : std::string("a file is in the way")) + ")");
  }
  const DiffSankey d = build_diff_sankey(a.edges, b.edges);
  const std::string sa = stem_of(files[0]), sb = stem_of(files[1]);
  PageInfo info;
  info.title = "Difference: " + sa + " vs " + sb;
  info.lines = {"A: " + files[0] + " (" + std::to_string(a.edges.size()) + " edges; " + result_arch_text(a.doc) + ")",
                "B: " + files[1] + " (" + std::to_string(b.edges.size()) + " edges; " + result_arch_text(b.doc) + ")",
                "Links: purple-grey in both A and B (width the mean |score| of the two, both scores in the label), "
                "blue only in A, orange only in B (width |score|): " + std::to_string(d.both) + " in both, " +
                    std::to_string(d.only_a) + " only in A, " + std::to_string(d.only_b) + " only in B; node sums add "
                    "the drawn scores (the mean of A and B where both)"};
  info.legend = {{kDiffBoth, "in both (" + std::to_string(d.both) + ")"},
                 {kDiffOnlyA, "only in A: " + sa + " (" + std::to_string(d.only_a) + ")"},
                 {kDiffOnlyB, "only in B: " + sb + " (" + std::to_string(d.only_b) + ")"}};
  std::vector<std::string> written;
  const fs::path stem = dir / ("diff-" + sa + "-vs-" + sb);
  if (html) {
    std::string page = sankey_html(d.sankey, info, plotly_js, plotly_src);
    // Marks the page as a difference, with its counts, for tests and readers.
    const size_t at = page.find("<div id=\"sankey\"");
    if (at != std::string::npos)
      page.insert(at + 4, " data-diff=\"1\" data-both=\"" + std::to_string(d.both) + "\" data-only-a=\"" +
                              std::to_string(d.only_a) + "\" data-only-b=\"" + std::to_string(d.only_b) + "\"");
    written.push_back(stem.string() + ".html");
    write_file_atomic(written.back(), page);
  }
  if (svg) {
    written.push_back(stem.string() + ".svg");
    write_file_atomic(written.back(), sankey_svg(d.sankey, info));
  }
  return written;
}

}  // namespace teap::report
