// The cross-cell comparison page and the difference Sankey on hand-made cells and results:
// architectures never mixed, the robust colour scale, Jaccard values, the recurrence of edges across
// fine-tunes (CS1-CS3) against the base model (CS0), flagged cells, and `plot --diff`'s union.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "report/comparison.hpp"
#include "report/diff.hpp"
#include "report/sankey.hpp"
#include "report/summary.hpp"
#include "report_test_util.hpp"
#include "util/error.hpp"

namespace {

using namespace teap;
using namespace teap::report;
using namespace teap::report_test;
using Edges = std::vector<std::pair<std::string, std::string>>;

CellSummary cell(const std::string& arch, int64_t model, int64_t cs, const std::string& feature,
                 std::vector<NamedEdge> edges, bool novel = false) {
  CellSummary c;
  c.id = "BM" + std::to_string(model) + ".CS" + std::to_string(cs) + "." + feature + (novel ? ".novel1" : ".novel0") + "." +
         arch;
  c.arch = arch;
  c.model = model;
  c.commandset = cs;
  c.feature = feature;
  c.use_novel_names = novel;
  c.status = CellStatus::Done;
  c.n_batches = c.batches_present = 3;
  c.edges = std::move(edges);
  return c;
}

// A result JSON with the given metadata fields (JSON text) and edges.
std::string result_json(const std::string& metadata, const std::vector<NamedEdge>& edges) {
  std::string e;
  for (const auto& x : edges)
    e += std::string(e.empty() ? "" : ",") + "{\"from_edge\":\"" + x.from + "\",\"to_edge\":\"" + x.to +
         "\",\"score\":" + std::to_string(x.score) + "}";
  return "{\"metadata\":{" + metadata + "},\"parameters\":{},\"edges\":[" + e + "]}";
}

TEST(Comparison, ArchOfAsTheAnalysisPackage) {
  EXPECT_EQ(arch_of(2, 24, 14), "BM2.24x14");
  CellSummary c;
  c.model = 3;
  EXPECT_EQ(arch_key(c), "BM3");  // shape unknown: the model number still separates families
  c.arch = "BM3.16x32";
  EXPECT_EQ(arch_key(c), "BM3.16x32");
}

TEST(Comparison, ArchitecturesNeverMixed) {
  // The same node names in three architectures (two of them the same model number, other shapes).
  const std::vector<NamedEdge> e = {{"l0.h0", "l1.mlp", 0.5}, {"l0.mlp", "l1.h1.q", 0.2}};
  std::vector<CellSummary> cells = {cell("BM1.2x4", 1, 1, "EngTableName", e), cell("BM2.24x14", 2, 1, "EngTableName", e),
                                    cell("BM1.4x4", 1, 2, "EngTableName", e), cell("BM1.2x4", 1, 2, "EngTableName", e)};
  EXPECT_EQ(compared_architectures(cells, false), (std::vector<std::string>{"BM1.2x4", "BM1.4x4", "BM2.24x14"}));
  EXPECT_EQ(arch_cells(cells, "BM1.2x4", false), (std::vector<int>{0, 3}));
  EXPECT_EQ(arch_cells(cells, "BM2.24x14", false), (std::vector<int>{1}));
  const EdgeCellMatrix m = edge_cell_matrix(cells, arch_cells(cells, "BM2.24x14", false));
  EXPECT_EQ(m.cells.size(), 1u);
  EXPECT_EQ(m.edges.size(), 2u);

  SweepSummary s;
  s.cells = cells;
  const std::string h = comparison_html(s, "", "plotly.min.js");
  EXPECT_EQ(count(h, "<div class=\"arch-section\""), 3u);
  // Each section's heatmap and Jaccard matrix hold its own cells only.
  EXPECT_NE(h.find("id=\"heatmap-BM1.2x4\" data-cells=\"2\" data-edges=\"2\""), std::string::npos);
  EXPECT_NE(h.find("id=\"heatmap-BM2.24x14\" data-cells=\"1\" data-edges=\"2\""), std::string::npos);
  EXPECT_NE(h.find("id=\"jaccard-BM1.4x4\" data-cells=\"1\""), std::string::npos);
  // The BM2 cell's id appears in no BM1 figure: the Jaccard z of BM1.2x4 is 2 x 2.
  const std::string bm2_id = cells[1].id;
  const size_t fig = h.find("var figures = ");
  ASSERT_NE(fig, std::string::npos);
  const std::string figs = h.substr(fig);
  const size_t bm1 = figs.find("\"jaccard-BM1.2x4\""), next = figs.find("\"heatmap-", bm1);
  ASSERT_NE(bm1, std::string::npos);
  EXPECT_EQ(figs.substr(bm1, next - bm1).find(bm2_id), std::string::npos);
  // No cross-architecture value anywhere: each matrix is square in its own cells.
  EXPECT_EQ(jaccard_matrix(cells, arch_cells(cells, "BM1.2x4", false)).size(), 2u);
}

TEST(Comparison, QuantileLikeNumpy) {
  EXPECT_DOUBLE_EQ(quantile({4, 1, 3, 2}, 0.5), 2.5);
  std::vector<double> v;
  for (int i = 0; i <= 100; ++i) v.push_back(i);
  EXPECT_DOUBLE_EQ(quantile(v, 0.95), 95);
  EXPECT_DOUBLE_EQ(quantile({7}, 0.95), 7);
  EXPECT_DOUBLE_EQ(quantile({}, 0.95), 0);
}

TEST(Comparison, RobustScaleIgnoresAnOutlier) {
  // 40 entries between 0.1 and 0.3 and one of 50 (a flagged-like cell that divided by a tiny effect).
  std::vector<CellSummary> cells;
  for (int c = 0; c < 4; ++c) {
    std::vector<NamedEdge> e;
    for (int k = 0; k < 10; ++k) e.push_back({"l0.h" + std::to_string(k), "l1.mlp", (k % 2 ? -1 : 1) * (0.1 + 0.02 * k)});
    cells.push_back(cell("BM1.2x16", 1, c, "EngTableName", e));
  }
  cells[2].edges.push_back({"l0.mlp", "l1.h3.q", 50.0});
  const EdgeCellMatrix m = edge_cell_matrix(cells, arch_cells(cells, "BM1.2x16", false));
  EXPECT_EQ(m.non_empty, 41);
  EXPECT_DOUBLE_EQ(m.max_abs, 50.0);
  EXPECT_LT(m.zmax, 0.3 + 1e-12);  // not washed out by the outlier
  EXPECT_GT(m.zmax, 0.25);
  EXPECT_EQ(m.clipped, 1 + 0);     // the outlier, drawn at full colour (0.28 sits at the 95th percentile)
  // Rows: the edges in all four cells first; the outlier's row (one cell) last; blanks are NaN.
  EXPECT_EQ(m.edges.back(), std::make_pair(std::string("l0.mlp"), std::string("l1.h3.q")));
  EXPECT_TRUE(std::isnan(m.z.back()[0]));
  EXPECT_DOUBLE_EQ(m.z.back()[2], 50.0);

  SweepSummary s;
  s.cells = cells;
  const std::string h = comparison_html(s, "", "plotly.min.js");
  char zm[64];
  std::snprintf(zm, sizeof zm, "data-zmax=\"%.6g\"", m.zmax);
  EXPECT_NE(h.find(zm), std::string::npos);
  EXPECT_NE(h.find("95th percentile of |score|"), std::string::npos);
  EXPECT_NE(h.find("\"zmin\":" + nlohmann::json(-m.zmax).dump()), std::string::npos);
  EXPECT_NE(h.find("null"), std::string::npos);  // empty entries are gaps, not zeros
}

TEST(Comparison, JaccardOnHandMadeSets) {
  const Edges a = {{"a", "x"}, {"b", "x"}, {"c", "x"}}, b = {{"b", "x"}, {"c", "x"}, {"d", "x"}};
  EXPECT_DOUBLE_EQ(jaccard(a, b), 0.5);
  EXPECT_DOUBLE_EQ(jaccard(a, a), 1.0);
  EXPECT_DOUBLE_EQ(jaccard(a, {{"z", "x"}}), 0.0);
  EXPECT_DOUBLE_EQ(jaccard(a, {}), 0.0);
  EXPECT_TRUE(std::isnan(jaccard({}, {})));

  std::vector<CellSummary> cells = {
      cell("BM1.2x4", 1, 1, "F", {{"a", "x", 1}, {"b", "x", 1}, {"c", "x", 1}}),
      cell("BM1.2x4", 1, 2, "F", {{"b", "x", 1}, {"c", "x", 1}, {"d", "x", 1}}),
      cell("BM1.2x4", 1, 3, "F", {}),
  };
  const auto j = jaccard_matrix(cells, {0, 1, 2});
  EXPECT_DOUBLE_EQ(j[0][0], 1.0);
  EXPECT_DOUBLE_EQ(j[0][1], 0.5);
  EXPECT_DOUBLE_EQ(j[1][0], 0.5);
  EXPECT_DOUBLE_EQ(j[0][2], 0.0);
  EXPECT_TRUE(std::isnan(j[2][2]));
}

TEST(Comparison, CellsOrderedByCommandSetFeatureFlags) {
  std::vector<CellSummary> cells = {cell("A", 1, 2, "EngTableName", {}), cell("A", 1, 1, "EngTableName", {}, true),
                                    cell("A", 1, 1, "DefFieldName", {}), cell("A", 1, 1, "EngTableName", {}),
                                    cell("A", 1, 0, "EngTableName", {})};
  EXPECT_EQ(arch_cells(cells, "A", false), (std::vector<int>{4, 2, 3, 1, 0}));
}

TEST(Comparison, RecurrenceAcrossFineTunesAgainstTheBase) {
  const NamedEdge e1{"l0.h1", "l1.mlp", 0.4}, e2{"l0.h2", "l1.mlp", 0.3}, e3{"l0.mlp", "l1.h0.q", -0.2},
      e4{"l0.h3", "l1.h2.k", 0.1}, e5{"l0.h0", "logits", 0.05};
  auto with = [](NamedEdge e, double s) { e.score = s; return e; };
  std::vector<CellSummary> cells = {
      cell("BM1.2x4", 1, 0, "EngTableName", {e1, e2}),
      cell("BM1.2x4", 1, 1, "EngTableName", {e1, e3, e4}),
      cell("BM1.2x4", 1, 2, "EngTableName", {with(e1, 0.6), with(e3, -0.4)}),
      cell("BM1.2x4", 1, 3, "EngTableName", {with(e1, 0.2), e3, e5}),
      // Another feature with a single command set: no group.
      cell("BM1.2x4", 1, 1, "DefFieldName", {e1}),
      // The same feature with other flags: its own group (CS1 and CS2, no CS0).
      cell("BM1.2x4", 1, 1, "EngTableName", {e4, e5}, true),
      cell("BM1.2x4", 1, 2, "EngTableName", {e5}, true),
  };
  const auto groups = finetune_recurrence(cells, arch_cells(cells, "BM1.2x4", false));
  ASSERT_EQ(groups.size(), 2u);
  const FineTuneGroup& g = groups[0];
  EXPECT_EQ(g.feature, "EngTableName");
  EXPECT_FALSE(g.use_novel_names);
  EXPECT_EQ(g.base_cells, (std::vector<int>{0}));
  EXPECT_EQ(g.finetune_cells.size(), 3u);
  EXPECT_EQ(g.finetune_commandsets, (std::vector<int64_t>{1, 2, 3}));
  ASSERT_EQ(g.edges.size(), 2u);  // e1 and e3 are in CS1, CS2 and CS3; e4, e5 in one only
  EXPECT_EQ(g.edges[0].from, "l0.h1");  // |mean| 0.4 before 0.2667
  EXPECT_TRUE(g.edges[0].in_base);
  EXPECT_DOUBLE_EQ(g.edges[0].base_score, 0.4);
  EXPECT_NEAR(g.edges[0].mean_score, (0.4 + 0.6 + 0.2) / 3, 1e-12);
  EXPECT_EQ(g.edges[0].in_finetunes, 3);
  EXPECT_EQ(g.edges[1].from, "l0.mlp");
  EXPECT_FALSE(g.edges[1].in_base);
  EXPECT_NEAR(g.edges[1].mean_score, (-0.2 - 0.4 - 0.2) / 3, 1e-12);
  EXPECT_TRUE(groups[1].use_novel_names);
  EXPECT_TRUE(groups[1].base_cells.empty());
  ASSERT_EQ(groups[1].edges.size(), 1u);
  EXPECT_EQ(groups[1].edges[0].from, "l0.h0");

  SweepSummary s;
  s.cells = cells;
  const std::string h = comparison_html(s, "", "plotly.min.js");
  EXPECT_NE(h.find("id=\"finetunes-BM1.2x4-0\" data-edges=\"2\" data-in-base=\"1\""), std::string::npos);
  EXPECT_NE(h.find("id=\"finetunes-BM1.2x4-1\" data-edges=\"1\" data-in-base=\"0\""), std::string::npos);
  EXPECT_NE(h.find("no CS0 cell"), std::string::npos);
}

TEST(Comparison, FlaggedCellsLeftOutUnlessAsked) {
  std::vector<CellSummary> cells = {cell("BM1.2x4", 1, 1, "F", {{"a", "x", 0.1}}),
                                    cell("BM1.2x4", 1, 2, "F", {{"a", "x", 90.0}, {"b", "x", 50.0}}),
                                    cell("BM2.24x14", 2, 1, "F", {{"a", "x", 0.2}})};
  cells[1].flags = {"low_effect"};
  cells[2].flags = {"low_accuracy"};
  EXPECT_EQ(arch_cells(cells, "BM1.2x4", false), (std::vector<int>{0}));
  EXPECT_EQ(arch_cells(cells, "BM1.2x4", true), (std::vector<int>{0, 1}));
  EXPECT_EQ(compared_architectures(cells, false), (std::vector<std::string>{"BM1.2x4"}));
  EXPECT_DOUBLE_EQ(edge_cell_matrix(cells, arch_cells(cells, "BM1.2x4", false)).max_abs, 0.1);

  SweepSummary s;
  s.cells = cells;
  std::string h = comparison_html(s, "", "plotly.min.js");
  EXPECT_NE(h.find("id=\"flagged-left-out\">2 flagged cell(s)"), std::string::npos);
  EXPECT_EQ(h.find("data-arch=\"BM2.24x14\""), std::string::npos);
  EXPECT_EQ(h.find(cells[1].id), std::string::npos);
  s.include_flagged = true;
  h = comparison_html(s, "", "plotly.min.js");
  EXPECT_EQ(h.find("flagged-left-out"), std::string::npos);
  EXPECT_NE(h.find("data-arch=\"BM2.24x14\""), std::string::npos);
  EXPECT_NE(h.find("CS2 \\u00b7 F \\u00b7 000 (flagged)"), std::string::npos);  // a tick label (JSON, ASCII)
}

TEST(Comparison, NothingToCompare) {
  SweepSummary s;
  CellSummary c = cell("BM1.2x4", 1, 1, "F", {});
  c.status = CellStatus::Partial;
  s.cells = {c};
  const std::string h = comparison_html(s, "", "plotly.min.js");
  EXPECT_NE(h.find("id=\"no-comparison\""), std::string::npos);
  EXPECT_EQ(h.find("Plotly.newPlot"), std::string::npos);
  // A section whose cells have no edges says so instead of drawing empty figures.
  s.cells = {cell("BM1.2x4", 1, 1, "F", {})};
  const std::string e = comparison_html(s, "", "plotly.min.js");
  EXPECT_NE(e.find("id=\"heatmap-BM1.2x4\" data-cells=\"1\" data-edges=\"0\""), std::string::npos);
}

TEST(Comparison, PlotlyInlineOrSharedAndTextEscaped) {
  SweepSummary s;
  s.title = "sweep <x>";
  s.cells = {cell("BM1.2x4", 1, 1, "Eng</script><b>", {{"l0.h1", "l1.mlp", 0.3}})};
  const std::string shared = comparison_html(s, "PLOTLY-SOURCE", "plotly.min.js");
  EXPECT_NE(shared.find("<script src=\"plotly.min.js\"></script>"), std::string::npos);
  EXPECT_EQ(shared.find("PLOTLY-SOURCE"), std::string::npos);
  EXPECT_NE(shared.find("sweep &lt;x&gt;"), std::string::npos);
  EXPECT_NE(shared.find("Eng&lt;/script&gt;&lt;b&gt;"), std::string::npos);  // in the text
  EXPECT_EQ(count(shared, "</script>"), 2u);  // the src element's and the figures' only
  const std::string inl = comparison_html(s, "var Plotly = {}; // </script> inside", "");
  EXPECT_NE(inl.find("var Plotly = {}; // <\\/script> inside"), std::string::npos);
  EXPECT_EQ(inl.find("<script src="), std::string::npos);
  EXPECT_NE(inl.find("href=\"index.html\""), std::string::npos);
}

TEST(Comparison, SummaryLinksToTheComparisonPage) {
  SweepSummary s;
  s.cells = {cell("BM1.2x4", 1, 1, "F", {})};
  EXPECT_EQ(summary_html(s).find("comparison-link"), std::string::npos);
  s.comparison_href = "comparison.html";
  EXPECT_NE(summary_html(s).find("<a id=\"comparison-link\" href=\"comparison.html\">"), std::string::npos);
}

TEST(Comparison, SummaryRecurrenceKeepsArchitecturesApart) {
  // The summary page's heatmap and recurrence table: one row per architecture for a shared name.
  const std::vector<NamedEdge> e = {{"l0.h0", "l1.mlp", 0.5}};
  std::vector<CellSummary> cells = {cell("BM1.2x4", 1, 1, "F", e), cell("BM2.24x14", 2, 1, "F", e),
                                    cell("BM1.2x4", 1, 2, "F", e)};
  const auto rec = edge_recurrence(cells);
  ASSERT_EQ(rec.size(), 2u);
  EXPECT_EQ(rec[0].arch, "BM1.2x4");
  EXPECT_EQ(rec[0].cells, (std::vector<int>{0, 2}));
  EXPECT_EQ(rec[1].arch, "BM2.24x14");
  EXPECT_EQ(rec[1].cells, (std::vector<int>{1}));
  SweepSummary s;
  s.cells = cells;
  const std::string h = summary_html(s);
  EXPECT_NE(h.find("<th class=\"edge\">BM1.2x4: l0.h0 \xe2\x86\x92 l1.mlp</th>"), std::string::npos);
  EXPECT_NE(h.find("<code>BM2.24x14: l0.h0 \xe2\x86\x92 l1.mlp</code></td><td class=\"num\">1 / 3<"), std::string::npos);
  // One architecture: the names as before.
  cells.erase(cells.begin() + 1);
  s.cells = cells;
  EXPECT_NE(summary_html(s).find("<th class=\"edge\">l0.h0 \xe2\x86\x92 l1.mlp</th>"), std::string::npos);
}

TEST(Diff, UnionColouredByWhereEachEdgeIs) {
  const std::vector<NamedEdge> a = {{"l0.h1", "l1.mlp", 0.5}, {"l0.mlp", "l1.h0.q", -0.2}, {"l0.h1", "l1.mlp", 9.0}};
  const std::vector<NamedEdge> b = {{"l0.h1", "l1.mlp", 0.3}, {"l0.h2", "l1.mlp", 0.1}};
  const DiffSankey d = build_diff_sankey(a, b);
  EXPECT_EQ(d.both, 1);
  EXPECT_EQ(d.only_a, 1);
  EXPECT_EQ(d.only_b, 1);
  ASSERT_EQ(d.sankey.n_real_links(), 3);
  const SankeyLink& both = d.sankey.links[0];
  EXPECT_EQ(both.color, kDiffBoth);
  EXPECT_DOUBLE_EQ(both.value, 0.4);  // mean |score| (the repeat of 9.0 in A ignored)
  EXPECT_NE(both.label.find("A 0.500, B 0.300"), std::string::npos);
  EXPECT_EQ(d.sankey.links[1].color, kDiffOnlyA);
  EXPECT_DOUBLE_EQ(d.sankey.links[1].value, 0.2);
  EXPECT_NE(d.sankey.links[1].label.find("only in A: -0.200"), std::string::npos);
  EXPECT_EQ(d.sankey.links[2].color, kDiffOnlyB);
  EXPECT_NE(d.sankey.links[2].label.find("only in B: 0.100"), std::string::npos);
  EXPECT_EQ(d.sankey.nodes.size(), 5u);  // l0.h1 l0.h2 l0.mlp l1.h0.q l1.mlp
}

TEST(Diff, RefusesTwoArchitecturesNamingBothFiles) {
  const std::string a = temp_file("diff_a.json", result_json("\"model\":1,\"n_layers\":2,\"n_heads\":4", {{"l0.h1", "l1.mlp", 0.5}}));
  const std::string b = temp_file("diff_b.json", result_json("\"model\":1,\"n_layers\":4,\"n_heads\":4", {{"l0.h1", "l1.mlp", 0.5}}));
  const std::string c = temp_file("diff_c.json", result_json("\"model\":2", {{"l0.h1", "l1.mlp", 0.5}}));
  const std::string nb = temp_file("diff_nb.json", result_json("\"model\":1", {{"l0.h1", "l1.mlp", 0.2}}));
  const std::string out = ::testing::TempDir() + "/diffout";
  std::string why = input_error([&] { write_diff({a, b}, out, true, true, "x"); });
  EXPECT_NE(why.find(a), std::string::npos) << why;
  EXPECT_NE(why.find(b), std::string::npos) << why;
  EXPECT_NE(why.find("different architectures (metadata.n_layers)"), std::string::npos) << why;
  EXPECT_EQ(why.find('\n'), std::string::npos);
  why = input_error([&] { write_diff({a, c}, out, true, true, "x"); });
  EXPECT_NE(why.find("(BM1, 2 layers x 4 heads) and " + c + " (BM2)"), std::string::npos) << why;
  // A notebook JSON without n_layers / n_heads: what both have (the model) agrees.
  EXPECT_EQ(write_diff({a, nb}, out, false, true, "x").size(), 1u);
  EXPECT_NE(input_error([&] { write_diff({a}, out, true, true, "x"); }).find("exactly two"), std::string::npos);
  EXPECT_NE(input_error([&] { write_diff({a, b, c}, out, true, true, "x"); }).find("got 3"), std::string::npos);
}

TEST(Diff, WritesBothPagesNamedAfterAAndB) {
  const std::string a = temp_file("cellA.json", result_json("\"model\":1,\"n_layers\":2,\"n_heads\":4",
                                                            {{"l0.h1", "l1.mlp", 0.5}, {"l0.mlp", "l1.h0.q", -0.2}}));
  const std::string b = temp_file("cellB.json", result_json("\"model\":1,\"n_layers\":2,\"n_heads\":4",
                                                            {{"l0.h1", "l1.mlp", 0.3}, {"l0.h2", "l1.mlp", 0.1}}));
  const std::string out = ::testing::TempDir() + "/diffpages";
  const auto written = write_diff({a, b}, out, true, true, "", "plotly.min.js");
  ASSERT_EQ(written.size(), 2u);
  EXPECT_EQ(written[0], out + "/diff-cellA-vs-cellB.html");
  EXPECT_EQ(written[1], out + "/diff-cellA-vs-cellB.svg");
  const std::string h = slurp(written[0]);
  EXPECT_NE(h.find("<div data-diff=\"1\" data-both=\"1\" data-only-a=\"1\" data-only-b=\"1\" id=\"sankey\""), std::string::npos);
  EXPECT_NE(h.find("blue only in A, orange only in B"), std::string::npos);
  EXPECT_NE(h.find("<p class=\"caption\" id=\"legend\">"), std::string::npos);
  EXPECT_NE(h.find("only in B: cellB (1)"), std::string::npos);
  EXPECT_NE(h.find("A: " + a), std::string::npos);
  EXPECT_NE(h.find("<script src=\"plotly.min.js\">"), std::string::npos);
  const std::string svg = slurp(written[1]);
  EXPECT_NE(svg.find(">only in A: cellA (1)</text>"), std::string::npos);  // the legend
  EXPECT_EQ(svg.find("blue positive, red negative"), std::string::npos);
  EXPECT_EQ(count(svg, "<path class=\"link\""), 3u);
}

}  // namespace
