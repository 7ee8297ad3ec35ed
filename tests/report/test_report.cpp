// The reducer's outputs without a model or HDF5: the notebook's JSON (golden text, rounding,
// names, file name, reading notebook-written files), the Sankey data / HTML / SVG, the summary page.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "eap/faithfulness.hpp"
#include "eap/graph.hpp"
#include "report/faithfulness_html.hpp"
#include "report/faithfulness_json.hpp"
#include "report/notebook_json.hpp"
#include "report/sankey.hpp"
#include "report/summary.hpp"
#include "report_test_util.hpp"
#include "util/error.hpp"

namespace {

using namespace teap;
using namespace teap::report;
using namespace teap::report_test;

// Minimal XML well-formedness: balanced tags, quoted attributes, known entities only.
bool well_formed_xml(const std::string& x, std::string* why) {
  std::vector<std::string> stack;
  size_t i = 0;
  auto fail = [&](const std::string& m) {
    *why = m + " at byte " + std::to_string(i);
    return false;
  };
  bool root_seen = false;
  while (i < x.size()) {
    if (x[i] == '&') {
      const size_t e = x.find(';', i);
      if (e == std::string::npos) return fail("bad entity");
      const std::string ent = x.substr(i, e - i + 1);
      if (ent != "&amp;" && ent != "&lt;" && ent != "&gt;" && ent != "&quot;" && ent != "&#39;") return fail("entity " + ent);
      i = e + 1;
      continue;
    }
    if (x[i] != '<') {
      if (x[i] == '>') return fail("stray >");
      ++i;
      continue;
    }
    if (x.compare(i, 5, "<?xml") == 0) {
      i = x.find("?>", i) + 2;
      continue;
    }
    if (x.compare(i, 4, "<!--") == 0) {
      i = x.find("-->", i) + 3;
      continue;
    }
    const size_t e = x.find('>', i);
    if (e == std::string::npos) return fail("unclosed tag");
    std::string tag = x.substr(i + 1, e - i - 1);
    if (count(tag, "\"") % 2) return fail("unbalanced quotes in <" + tag + ">");
    if (tag[0] == '/') {
      const std::string name = tag.substr(1);
      if (stack.empty() || stack.back() != name) return fail("mismatched </" + name + ">");
      stack.pop_back();
    } else {
      const bool self = tag.back() == '/';
      const std::string name = tag.substr(0, tag.find_first_of(" /\n"));
      if (stack.empty() && root_seen) return fail("second root element");
      root_seen = true;
      if (!self) stack.push_back(name);
    }
    i = e + 1;
  }
  if (!stack.empty()) {
    *why = "unclosed <" + stack.back() + ">";
    return false;
  }
  return root_seen;
}

Result golden_result() {
  Result r;
  r.metadata.timestamp = "2026-11-30T10:00:00.123456";
  r.metadata.model = 1;
  r.metadata.commandset = 1;
  r.metadata.hf_model = "withmartian/sql_interp_bm1_cs1_experiment_1.10";
  r.metadata.feature_name = "EngTableName";
  r.metadata.use_synonyms_table = true;
  r.metadata.num_sql_fields = 2;
  r.metadata.batch_size = 30;
  r.metadata.n_batches = 5;
  r.metadata.n_positions = 40;
  r.metadata.n_layers = 2;
  r.metadata.n_heads = 16;
  r.parameters.top_n_edges = 10;
  r.parameters.clean_logit_diff = 3.14159265358979;
  r.parameters.corrupt_logit_diff = -1.0000000049;
  r.parameters.clean_metric = 1.0;
  r.parameters.corrupt_metric = 0.0;
  r.parameters.extra["clean_accuracy"] = 0.9333333333333333;
  r.parameters.extra["downstream_heads"] = "qkv";
  r.parameters.extra["signed_rank"] = false;
  r.parameters.extra["seed"] = 0;
  r.parameters.extra["note"] = "caf\xc3\xa9 \xe2\x86\x92 \xf0\x9f\x98\x80 \"q\"\n";
  r.edges = {{eap::display_name("head.0.3"), eap::display_name("head.1.7.q"), 0.123456785},
             {eap::display_name("mlp.0"), eap::display_name("mlp.1"), -2.5e-09},
             {eap::display_name("head.1.7"), eap::display_name("mlp.1"), 1.5e-05}};
  return r;
}

// --- Notebook JSON ---------------------------------------------------------------------------------

TEST(NotebookJson, FloatReprLikePython) {
  const std::map<double, std::string> cases = {
      {0.1, "0.1"},         {1.0, "1.0"},
      {1e-05, "1e-05"},     {0.0001, "0.0001"},
      {1e16, "1e+16"},      {1e15, "1000000000000000.0"},
      {123456789.0, "123456789.0"}, {-2.5e-07, "-2.5e-07"},
      {0.30000000000000004, "0.30000000000000004"}, {1.2345678901234567e-3, "0.0012345678901234567"},
      {5e-324, "5e-324"},   {1.7976931348623157e308, "1.7976931348623157e+308"},
      {100.0, "100.0"},     {1.0 / 3, "0.3333333333333333"}};
  for (const auto& [x, want] : cases) EXPECT_EQ(python_float_repr(x), want) << x;
  EXPECT_EQ(python_float_repr(-0.0), "-0.0");
}

TEST(NotebookJson, RoundLikePython) {
  // Values from Python 3: round(x, 8).
  EXPECT_EQ(python_round8(0.123456785), 0.12345678);  // the binary value lies below the tie
  EXPECT_EQ(python_round8(0.001953125), 0.00195312);  // an exact tie: half to even
  EXPECT_EQ(python_round8(7.5e-09), 1e-08);
  EXPECT_EQ(python_round8(12345.678901234), 12345.67890123);
  EXPECT_EQ(python_round8(-1.23456789012), -1.23456789);
  EXPECT_EQ(python_round8(0.30000000000000004), 0.3);
  EXPECT_EQ(python_round8(5e-324), 0.0);
  EXPECT_TRUE(std::signbit(python_round8(-4e-09)));  // -0.0, as Python
}

TEST(NotebookJson, GoldenTextAsPythonWritesIt) {
  // golden_result.json is what json.dump(indent=2) writes for the same dict after the notebook's rounding.
  const std::string golden = slurp(std::string(TEAP_REPORT_TEST_DIR) + "/golden_result.json");
  ASSERT_FALSE(golden.empty());
  EXPECT_EQ(dump_python_json(to_json(golden_result())), golden);
}

TEST(NotebookJson, KeysInTheNotebookOrder) {
  const auto doc = to_json(golden_result());
  std::vector<std::string> top, md, pa;
  for (auto it = doc.begin(); it != doc.end(); ++it) top.push_back(it.key());
  for (auto it = doc["metadata"].begin(); it != doc["metadata"].end(); ++it) md.push_back(it.key());
  for (auto it = doc["parameters"].begin(); it != doc["parameters"].end(); ++it) pa.push_back(it.key());
  EXPECT_EQ(top, (std::vector<std::string>{"metadata", "parameters", "edges"}));
  EXPECT_EQ(md, (std::vector<std::string>{"source", "timestamp", "model", "commandset", "hf_model", "feature_name",
                                           "use_novel_names", "use_synonyms_field", "use_synonyms_table", "num_sql_fields",
                                           "batch_size", "n_batches", "n_positions", "n_layers", "n_heads"}));
  EXPECT_EQ(std::vector<std::string>(pa.begin(), pa.begin() + 5),
            (std::vector<std::string>{"top_n_edges", "clean_logit_diff", "corrupt_logit_diff", "clean_metric", "corrupt_metric"}));
  for (const auto& e : doc["edges"]) {
    std::vector<std::string> ek;
    for (auto it = e.begin(); it != e.end(); ++it) ek.push_back(it.key());
    EXPECT_EQ(ek, (std::vector<std::string>{"from_edge", "to_edge", "score"}));
  }
}

TEST(NotebookJson, NamesAsTheNotebook) {
  EXPECT_EQ(eap::display_name("head.0.3"), "l0.h3");
  EXPECT_EQ(eap::display_name("head.1.7.q"), "l1.h7.q");
  EXPECT_EQ(eap::display_name("mlp.0"), "l0.mlp");
  const auto doc = to_json(golden_result());
  EXPECT_EQ(doc["edges"][0]["from_edge"], "l0.h3");
  EXPECT_EQ(doc["edges"][0]["to_edge"], "l1.h7.q");
  EXPECT_EQ(doc["edges"][1]["from_edge"], "l0.mlp");
}

TEST(NotebookJson, FileName) {
  ResultMetadata m;
  m.model = 2;
  m.commandset = 3;
  m.feature_name = "DefFieldName";
  m.use_novel_names = true;
  m.use_synonyms_field = false;
  m.use_synonyms_table = true;
  // {novel}.{syn_table}.{syn_field}: table before field, as the notebook's eap_file_name().
  EXPECT_EQ(result_file_name(m), "eap_results.BM2.CS3_cs1.DefFieldName.True.True.False.json");
  m.use_synonyms_table = false;
  m.use_synonyms_field = true;
  EXPECT_EQ(result_file_name(m), "eap_results.BM2.CS3_cs1.DefFieldName.True.False.True.json");
}

TEST(NotebookJson, TimestampLikeIsoformat) {
  EXPECT_TRUE(std::regex_match(iso_timestamp_now(), std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?)")));
  Result r = golden_result();
  r.metadata.timestamp.clear();
  const auto doc = to_json(r);
  EXPECT_FALSE(doc["metadata"]["timestamp"].get<std::string>().empty());
}

TEST(NotebookJson, NoNaNWritten) {
  Result r = golden_result();
  r.parameters.clean_metric = std::nan("");
  EXPECT_THROW(to_json(r), std::invalid_argument);
  r = golden_result();
  r.edges[0].score = INFINITY;
  EXPECT_THROW(to_json(r), std::invalid_argument);
}

TEST(NotebookJson, ReadsANotebookFile) {
  // As the notebook's save_eap_results wrote it (Python json, a NaN in a parameter, an int score).
  const std::string text = R"({
  "metadata": {"source": "tinysql_EAP_JSON", "timestamp": "2025-01-02T03:04:05.678901", "model": 1,
    "commandset": 1, "hf_model": "withmartian/x", "feature_name": "EngTableName", "use_novel_names": false,
    "use_synonyms_field": false, "use_synonyms_table": false, "num_sql_fields": 2, "batch_size": 30,
    "n_batches": 1, "n_positions": 37, "n_layers": 2, "n_heads": 16},
  "parameters": {"top_n_edges": 10, "clean_logit_diff": 5.12345678, "corrupt_logit_diff": NaN,
    "clean_metric": 1.0, "corrupt_metric": -Infinity},
  "edges": [
    {"from_edge": "l0.h3", "to_edge": "l1.mlp", "score": 0.01234567},
    {"from_edge": "l0.mlp", "to_edge": "l1.mlp", "score": -2},
    {"from_edge": "l1.h7", "to_edge": "l1.mlp", "score": 1e-05}
  ]
})";
  const std::string path = temp_file("eap_results.BM1.CS1_cs1.EngTableName.False.False.False.json", text);
  const auto edges = read_result_edges(path);
  ASSERT_EQ(edges.size(), 3u);
  EXPECT_EQ(edges[0].from, "l0.h3");
  EXPECT_EQ(edges[0].to, "l1.mlp");
  EXPECT_DOUBLE_EQ(edges[0].score, 0.01234567);
  EXPECT_EQ(edges[1].score, -2.0);
  EXPECT_EQ(edges[2].score, 1e-05);
  // Ours reads back to the same edges (rounded).
  const auto ours = parse_result(dump_python_json(to_json(golden_result())), "ours.json");
  ASSERT_EQ(ours.edges.size(), 3u);
  EXPECT_EQ(ours.edges[0].score, 0.12345678);
  EXPECT_EQ(ours.edges[2].to, "l1.mlp");
}

TEST(NotebookJson, BadFilesNameFileAndKey) {
  EXPECT_EQ(input_error([] { read_result("/no/such/x.json"); }), "/no/such/x.json: no such file");
  const std::string empty = temp_file("empty.json", "");
  EXPECT_NE(input_error([&] { read_result(empty); }).find("empty.json: empty file"), std::string::npos);
  const std::string trunc = temp_file("trunc.json", R"({"metadata": {"model": 1}, "edges": [{"from_e)");
  EXPECT_EQ(input_error([&] { read_result(trunc); }), trunc + ": not valid JSON");
  const std::string list = temp_file("list.json", "[1, 2]");
  EXPECT_EQ(input_error([&] { read_result(list); }), list + ": not a result JSON: the top level is not an object");
  const std::string noedges = temp_file("noedges.json", R"({"metadata": {}, "parameters": {}})");
  EXPECT_EQ(input_error([&] { read_result(noedges); }), noedges + ": not a result JSON: key 'edges' missing");
  const std::string nometa = temp_file("nometa.json", R"({"parameters": {}, "edges": []})");
  EXPECT_EQ(input_error([&] { read_result(nometa); }), nometa + ": not a result JSON: key 'metadata' missing");
  const std::string badscore =
      temp_file("badscore.json", R"({"metadata": {}, "parameters": {}, "edges": [{"from_edge": "a", "to_edge": "b", "score": 1},
        {"from_edge": "a", "to_edge": "b", "score": "0.5"}]})");
  EXPECT_EQ(input_error([&] { read_result(badscore); }), badscore + ": edges[1].score: not a number");
  const std::string nanscore =
      temp_file("nanscore.json", R"({"metadata": {}, "parameters": {}, "edges": [{"from_edge": "a", "to_edge": "b", "score": NaN}]})");
  EXPECT_EQ(input_error([&] { read_result(nanscore); }), nanscore + ": edges[0].score: not a number");
  const std::string nofrom = temp_file("nofrom.json", R"({"metadata": {}, "parameters": {}, "edges": [{"to_edge": "b", "score": 1}]})");
  EXPECT_EQ(input_error([&] { read_result(nofrom); }), nofrom + ": edges[0].from_edge: missing");
}

// --- Sankey --------------------------------------------------------------------------------------

std::vector<NamedEdge> sample_edges() {
  return {{"l0.h3", "l1.mlp", 0.5}, {"l0.mlp", "l1.h2.q", -0.25}, {"l1.h2", "l1.mlp", 0.0}, {"l0.h3", "l2.mlp", 0.1}};
}

TEST(Sankey, NodesInLayerOrderWithNotebookLabelsAndColours) {
  const Sankey s = build_sankey(sample_edges());
  ASSERT_EQ(s.nodes.size(), 6u);
  const std::vector<std::string> names = {"l0.h3", "l0.mlp", "l1.h2", "l1.h2.q", "l1.mlp", "l2.mlp"};
  for (size_t i = 0; i < names.size(); ++i) {
    EXPECT_EQ(s.nodes[i].name, names[i]);
    EXPECT_EQ(s.nodes[i].color, kSankeyPalette[i]);
  }
  EXPECT_EQ(s.nodes[0].label, "l0.h3<br>0.600");
  EXPECT_EQ(s.nodes[1].label, "l0.mlp<br>-0.250");
  EXPECT_EQ(s.nodes[4].label, "l1.mlp<br>0.500");
  EXPECT_EQ(s.nodes[5].label, "l2.mlp<br>0.100");
  EXPECT_EQ(s.n_layers, 3);
  // Columns: l0 outputs, l0 MLP, l1 head inputs, l1 outputs, l1 MLP, l2 MLP.
  EXPECT_EQ(s.n_columns, 6);
  const std::vector<int> columns = {0, 1, 3, 2, 4, 5};
  for (size_t i = 0; i < names.size(); ++i) EXPECT_EQ(s.nodes[i].column, columns[i]) << names[i];
  EXPECT_EQ(s.width, static_cast<int>(std::ceil(s.layout.width + s.layout.margin_left + s.layout.margin_right)));
  EXPECT_EQ(s.height, static_cast<int>(std::ceil(s.layout.height + s.layout.margin_top + s.layout.margin_bottom)));
}

TEST(Sankey, PaletteCyclesAndWidthGrowsWithLayers) {
  std::vector<NamedEdge> e;
  for (int l = 0; l < 13; ++l) e.push_back({"l" + std::to_string(l) + ".h0", "l" + std::to_string(l) + ".mlp", 0.1});
  const Sankey s = build_sankey(e);
  ASSERT_EQ(s.nodes.size(), 26u);
  EXPECT_EQ(s.nodes[10].color, kSankeyPalette[0]);
  EXPECT_EQ(s.nodes[25].color, kSankeyPalette[5]);
  EXPECT_EQ(s.n_layers, 13);
  EXPECT_EQ(s.n_columns, 26);
  e.resize(3);
  EXPECT_GT(s.width, build_sankey(e).width + 1000);  // 20 more columns, each at least a label wide
}

TEST(Sankey, LinksWidthsColoursAndHoverLabels) {
  const Sankey s = build_sankey(sample_edges());
  ASSERT_EQ(s.n_real_links(), 4);
  EXPECT_EQ(s.links[0].value, 0.5);
  EXPECT_EQ(s.links[1].value, 0.25);
  EXPECT_EQ(s.links[0].color, "rgba(0,0,255,0.3)");
  EXPECT_EQ(s.links[1].color, "rgba(255,0,0,0.3)");
  EXPECT_EQ(s.links[2].color, "rgba(0,0,0,0.1)");
  EXPECT_EQ(s.links[0].label, "l0.h3 \xe2\x86\x92 l1.mlp<br>0.500");
  EXPECT_EQ(s.links[1].label, "l0.mlp \xe2\x86\x92 l1.h2.q<br>-0.250");
  EXPECT_EQ(s.nodes[s.links[1].source].name, "l0.mlp");
  EXPECT_EQ(s.nodes[s.links[1].target].name, "l1.h2.q");
}

// plotly puts a node in the column of its longest path from a node without inputs (nodes without
// outputs in the last): what the ghost links must make equal to the node's own column.
std::vector<int> plotly_columns(const Sankey& s) {
  const size_t n = s.nodes.size();
  std::vector<int> depth(n, 0);
  std::vector<bool> has_out(n, false);
  for (size_t round = 0; round < n; ++round)
    for (const auto& l : s.links) {
      depth[l.target] = std::max(depth[l.target], depth[l.source] + 1);
      has_out[l.source] = true;
    }
  const int last = *std::max_element(depth.begin(), depth.end());
  for (size_t i = 0; i < n; ++i)
    if (!has_out[i]) depth[i] = last;
  return depth;
}

TEST(Sankey, GhostLinksChainTheColumns) {
  // One node per column: 5 ghost links, one between each pair of neighbouring columns.
  const Sankey s = build_sankey(sample_edges());
  ASSERT_EQ(s.links.size(), 9u);
  int ghosts = 0;
  for (const auto& l : s.links)
    if (l.ghost) {
      ++ghosts;
      EXPECT_EQ(l.value, 1e-6);
      EXPECT_EQ(l.color, "rgba(0,255,0,0.0)");
      EXPECT_EQ(l.label, "");
      EXPECT_EQ(s.nodes[l.target].column, s.nodes[l.source].column + 1);
    }
  EXPECT_EQ(ghosts, 5);
  EXPECT_EQ(build_sankey(sample_edges(), false).links.size(), 4u);
  // One column: no ghost links.
  EXPECT_EQ(build_sankey({{"l0.h1.q", "l0.h2.k", 0.2}}).links.size(), 1u);
  // A head feeding its own layer's MLP (plotly put l1.h3 in l0.mlp's column, and the MLP a layer
  // further): with the ghosts every node's plotly column is its own.
  const Sankey t = build_sankey({{"l0.h3", "l1.mlp", 0.5}, {"l0.mlp", "l1.h2.q", -0.25}, {"l1.h3", "l1.mlp", 0.3},
                                 {"l0.h3", "l2.mlp", 0.1}, {"l0.h1", "l2.h0.v", 0.2}, {"l1.mlp", "l2.h0.v", 0.1}});
  const std::vector<int> plotly = plotly_columns(t);
  for (size_t i = 0; i < t.nodes.size(); ++i) EXPECT_EQ(plotly[i], t.nodes[i].column) << t.nodes[i].name;
  // Columns of 2 and 3 nodes: 2 links to the next column's first node, 2 from the first node to the others.
  const Sankey u = build_sankey({{"l0.h1", "l1.h0.q", 1}, {"l0.h2", "l1.h0.k", 1}, {"l0.h2", "l1.h1.v", 1}});
  EXPECT_EQ(u.links.size(), 3u + 4u);
}

// 100 edges of a Llama-3.2-1B-shaped model (16 layers, 32 heads), deterministic.
std::vector<NamedEdge> large_edges() {
  std::vector<NamedEdge> e;
  std::set<std::pair<std::string, std::string>> seen;
  uint64_t x = 12345;
  auto next = [&](int n) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    return static_cast<int>((x >> 33) % n);
  };
  while (e.size() < 100) {
    const int lu = next(15), kind = next(3);
    const std::string up = next(4) ? "l" + std::to_string(lu) + ".h" + std::to_string(next(32)) : "l" + std::to_string(lu) + ".mlp";
    const int ld = lu + 1 + next(15 - lu);
    const std::string down = kind == 0   ? "l" + std::to_string(ld) + ".mlp"
                             : kind == 1 ? "l" + std::to_string(ld) + ".h" + std::to_string(next(32)) + "." + "qkv"[next(3)]
                                         : (up.find("mlp") == std::string::npos ? "l" + std::to_string(lu) + ".mlp" : "logits");
    if (!seen.insert({up, down}).second) continue;
    e.push_back({up, down, (next(2) ? 1 : -1) * (0.01 + next(1000) / 500.0)});
  }
  return e;
}

TEST(Sankey, ReadableWith100EdgesOf16Layers) {
  const Sankey s = build_sankey(large_edges());
  const SankeyLayout& L = s.layout;
  ASSERT_EQ(s.n_real_links(), 100);
  // plotly lays the nodes out in our columns, so its scale is ours.
  const std::vector<int> plotly = plotly_columns(s);
  for (size_t i = 0; i < s.nodes.size(); ++i) ASSERT_EQ(plotly[i], s.nodes[i].column) << s.nodes[i].name;
  // Every node sits in its layer's band of columns, and the bands follow the layers.
  std::map<int, std::pair<double, double>> band;  // layer -> [min x, max x]
  for (const auto& n : s.nodes) {
    const double x = L.column_x[n.column];
    auto it = band.find(n.layer);
    if (it == band.end()) band[n.layer] = {x, x};
    else it->second = {std::min(it->second.first, x), std::max(it->second.second, x)};
  }
  double previous = -1;
  for (const auto& [layer, b] : band) {
    EXPECT_GT(b.first, previous) << "layer " << layer << " overlaps the layer before";
    previous = b.second;
  }
  // Columns at least a node and its widest label apart; the last column's labels on its left.
  const size_t C = L.column_x.size();
  std::vector<double> widest(C, 0);
  for (const auto& n : s.nodes) {
    const size_t br = n.label.find("<br>");
    widest[n.column] = std::max({widest[n.column], label_width(n.label.substr(0, br), L.font_px),
                                 label_width(n.label.substr(br + 4), L.font_px)});
  }
  for (size_t c = 1; c < C; ++c)
    EXPECT_GE(L.column_x[c] - L.column_x[c - 1], L.thickness + widest[c - 1] + (c + 1 == C ? widest[c] : 0.0)) << c;
  // In a column, label slots do not overlap; nodes do not overlap; all stays inside the figure.
  std::vector<std::vector<int>> members(C);
  for (size_t i = 0; i < s.nodes.size(); ++i) members[s.nodes[i].column].push_back(static_cast<int>(i));
  size_t crowded = 0;
  for (const auto& m : members) {
    crowded = std::max(crowded, m.size());
    for (size_t k = 1; k < m.size(); ++k) {
      const int a = m[k - 1], b = m[k];
      EXPECT_GE(L.y[b] - L.y[a], L.label_h - 1e-9) << s.nodes[a].name << " / " << s.nodes[b].name;
      EXPECT_GE((L.y[b] - L.h[b] / 2) - (L.y[a] + L.h[a] / 2), -1e-9) << s.nodes[a].name << " / " << s.nodes[b].name;
    }
    for (int i : m) {
      EXPECT_GE(L.y[i] - std::max(L.h[i], L.label_h) / 2, -L.margin_top) << s.nodes[i].name;
      EXPECT_LE(L.y[i] + std::max(L.h[i], L.label_h) / 2, L.height + L.margin_bottom) << s.nodes[i].name;
      EXPECT_NEAR(L.h[i], L.value[i] * L.scale, 1e-9);
    }
  }
  // The figure grows with the most crowded column, so plotly never shrinks its node padding.
  EXPECT_GE(L.height, (crowded - 1) * L.pad);
  EXPECT_GT(L.scale, 0);
  EXPECT_GE(s.width, L.column_x.back());
  std::string why;
  EXPECT_TRUE(well_formed_xml(sankey_svg(s, {"large", {}}), &why)) << why;
}

TEST(Sankey, InternalAndSpecialNames) {
  const Sankey s = build_sankey({{"input", "l0.h1.v", 0.2}, {"l1.mlp", "logits", -0.1}, {"head.0.1", "mlp.1", 0.3}});
  std::vector<std::string> names;
  for (const auto& n : s.nodes) names.push_back(n.name);
  EXPECT_EQ(names, (std::vector<std::string>{"input", "head.0.1", "l0.h1.v", "l1.mlp", "mlp.1", "logits"}));
  EXPECT_EQ(s.nodes.front().layer, -1);
  EXPECT_EQ(s.nodes.back().layer, 2);
}

nlohmann::json script_var(const std::string& html, const std::string& var) {
  const std::string key = "var " + var + " = ";
  const size_t a = html.find(key);
  if (a == std::string::npos) return nullptr;
  const size_t b = html.find(";\n", a);
  return nlohmann::json::parse(html.substr(a + key.size(), b - a - key.size()));
}

TEST(Sankey, HtmlCarriesTheNotebookFigure) {
  const Sankey s = build_sankey(sample_edges());
  const std::string html = sankey_html(s, {"BM1.CS1 <test>", {"a & b"}}, "/* Plotly stand-in */ var Plotly;");
  EXPECT_NE(html.find("/* Plotly stand-in */"), std::string::npos);
  EXPECT_NE(html.find("<h1>BM1.CS1 &lt;test&gt;</h1>"), std::string::npos);
  EXPECT_NE(html.find("a &amp; b"), std::string::npos);
  const auto data = script_var(html, "data");
  ASSERT_TRUE(data.is_array());
  const auto& t = data[0];
  EXPECT_EQ(t["type"], "sankey");
  EXPECT_EQ(t["arrangement"], "perpendicular");
  EXPECT_EQ(t["node"]["label"].size(), 6u);
  EXPECT_EQ(t["node"]["label"][0], "l0.h3<br>0.600");
  EXPECT_EQ(t["node"]["color"][1], kSankeyPalette[1]);
  EXPECT_EQ(t["node"]["pad"], s.layout.pad);
  EXPECT_EQ(t["node"]["thickness"], s.layout.thickness);
  // Fixed places: the node's column centre and its y, as fractions of the plot area.
  ASSERT_EQ(t["node"]["x"].size(), 6u);
  for (size_t i = 0; i < 6; ++i) {
    EXPECT_NEAR(t["node"]["x"][i].get<double>(),
                (s.layout.column_x[s.nodes[i].column] + s.layout.thickness / 2) / s.layout.width, 1e-5);
    EXPECT_NEAR(t["node"]["y"][i].get<double>(), s.layout.y[i] / s.layout.height, 1e-5);
    EXPECT_GT(t["node"]["y"][i].get<double>(), 0);  // plotly ignores 0
  }
  EXPECT_EQ(t["node"]["line"]["width"], 0.0);
  EXPECT_EQ(t["link"]["source"].size(), 9u);
  EXPECT_EQ(t["link"]["value"][1], 0.25);
  EXPECT_EQ(t["link"]["value"][8], 1e-6);
  EXPECT_EQ(t["link"]["label"][0], "l0.h3 \xe2\x86\x92 l1.mlp<br>0.500");
  EXPECT_EQ(t["link"]["arrowlen"], 25);
  EXPECT_EQ(t["domain"]["y"], nlohmann::json::array({0, 1}));
  const auto layout = script_var(html, "layout");
  EXPECT_EQ(layout["height"], s.height);
  EXPECT_EQ(layout["width"], s.width);
  EXPECT_EQ(layout["font"]["size"], s.layout.font_px);
  EXPECT_EQ(layout["margin"]["t"], s.layout.margin_top);
  // Headings: layer 0, 1, 2.
  ASSERT_EQ(layout["annotations"].size(), 3u);
  EXPECT_EQ(layout["annotations"][2]["text"], "layer 2");
  EXPECT_EQ(layout["paper_bgcolor"], "white");
  // A node name cannot close the script element.
  const std::string evil = sankey_html(build_sankey({{"</script><b>", "l1.mlp", 1}}), {}, "");
  EXPECT_EQ(count(evil, "</script>"), 2u);  // the (empty) plotly element and the data element
  // Shared plotly file instead of inline.
  const std::string shared = sankey_html(s, {}, "", "../../plotly.min.js");
  EXPECT_NE(shared.find("<script src=\"../../plotly.min.js\"></script>"), std::string::npos);
}

TEST(Sankey, EmptyEdgesSayNothingToDraw) {
  const Sankey s = build_sankey({});
  EXPECT_TRUE(s.nodes.empty());
  EXPECT_NE(sankey_html(s, {}, "").find("id=\"no-edges\""), std::string::npos);
  std::string why;
  EXPECT_TRUE(well_formed_xml(sankey_svg(s, {"empty", {}}), &why)) << why;
}

TEST(Sankey, SvgWellFormedOnePathPerLink) {
  std::vector<NamedEdge> e = sample_edges();
  e.push_back({"l0.h<&>", "l2.mlp", -0.05});  // names are escaped
  const Sankey s = build_sankey(e);
  const std::string svg = sankey_svg(s, {"cell <1>", {}});
  std::string why;
  EXPECT_TRUE(well_formed_xml(svg, &why)) << why;
  EXPECT_EQ(svg.rfind("<?xml", 0), 0u);
  EXPECT_EQ(count(svg, "<path class=\"link\""), 5u);
  EXPECT_EQ(count(svg, "<rect class=\"node\""), s.nodes.size());
  EXPECT_NE(svg.find("fill=\"rgb(0,0,255)\" fill-opacity=\"0.3\""), std::string::npos);
  EXPECT_NE(svg.find("fill=\"rgb(255,0,0)\" fill-opacity=\"0.3\""), std::string::npos);
  EXPECT_NE(svg.find("fill=\"rgb(31,119,180)\" fill-opacity=\"0.8\""), std::string::npos);
  EXPECT_NE(svg.find("l0.h&lt;&amp;&gt;"), std::string::npos);
  EXPECT_NE(svg.find(">layer 2<"), std::string::npos);
  // Band thickness proportional to |score|: "M x,top C ... L x,bottom C ... x,bottom0 Z".
  std::regex band(R"re(<path class="link" d="M[0-9.]+,([0-9.]+) C.* ([0-9.]+),([0-9.]+) Z")re");
  std::vector<double> widths;
  for (auto it = std::sregex_iterator(svg.begin(), svg.end(), band); it != std::sregex_iterator(); ++it)
    widths.push_back(std::stod((*it)[3]) - std::stod((*it)[1]));
  ASSERT_EQ(widths.size(), 5u);
  EXPECT_NEAR(widths[0] / widths[1], 2.0, 0.02);
  EXPECT_NEAR(widths[0] / widths[3], 5.0, 0.05);
  // Labels: name and sum.
  EXPECT_NE(svg.find(">l0.h3</tspan>"), std::string::npos);
  EXPECT_NE(svg.find(">0.600</tspan>"), std::string::npos);
}

TEST(Sankey, PlotlyJsFromEnvOrAClearError) {
  const char* old = std::getenv("TEAP_PLOTLY_JS");
  const std::string saved = old ? old : "";
  setenv("TEAP_PLOTLY_JS", "/no/such/plotly.min.js", 1);
  EXPECT_NE(input_error([] { find_plotly_js(); }).find("/no/such/plotly.min.js: no such file"), std::string::npos);
  const std::string fake = temp_file("plotly.min.js", "x");
  setenv("TEAP_PLOTLY_JS", fake.c_str(), 1);
  EXPECT_EQ(find_plotly_js(), fake);
  if (old) setenv("TEAP_PLOTLY_JS", saved.c_str(), 1);
  else unsetenv("TEAP_PLOTLY_JS");
}

// --- Faithfulness on the pages ------------------------------------------------------------------

// Three batches of a cell evaluated with consistent (12 edges), top-1, top-10, top-100, empty, full.
eap::CellFaithfulness sample_faithfulness(const std::string& no_faithfulness = "") {
  std::vector<eap::BatchFaithfulness> batches(3);
  const double f[3][6] = {{0.80, 0.30, 0.70, 0.95, 0.10, 0.98}, {0.85, 0.40, 0.75, 1.00, 0.12, 1.00}, {0.90, 0.35, 0.80, 1.02, 0.14, 1.02}};
  for (int b = 0; b < 3; ++b) {
    batches[b].circuit = {"consistent", "top-1", "top-10", "top-100", "empty", "full"};
    batches[b].k = {-1, 1, 10, 100, -1, -1};
    batches[b].edges = {12, 1, 10, 100, 0, 140};
    for (double x : f[b]) batches[b].f.push_back(no_faithfulness.empty() ? x : std::nan(""));
  }
  return eap::cell_faithfulness(batches, no_faithfulness, "test");
}

FaithfulnessContext sample_context() {
  FaithfulnessContext c;
  c.top_n = 10;
  c.batches_evaluated = c.n_batches = 3;
  return c;
}

TEST(Faithfulness, CellPageShowsFOfTheConsistentCircuitAndTheCurve) {
  PageInfo info{"cell", {"caption"}};
  info.faithfulness = faithfulness_json(sample_faithfulness(), sample_context());
  const std::string html = sankey_html(build_sankey(sample_edges()), info, "");
  // The headline: F, spread over batches and edge count of the consistent circuit.
  EXPECT_NE(html.find("Faithfulness F of the consistent circuit (edges in the top 10 of every batch): 0.850 \xc2\xb1 0.050 "
                      "(12 edges), mean \xc2\xb1 standard deviation over 3 of 3 batches"),
            std::string::npos)
      << html.substr(0, 3000);
  EXPECT_NE(html.find("F(empty) = 0.120 \xc2\xb1 0.020 (0 edges), F(full) = 1.000 \xc2\xb1 0.020 (140 edges)"), std::string::npos);
  EXPECT_NE(html.find("area under F(k) over log k"), std::string::npos);
  EXPECT_NE(html.find("Scored nodes: heads and MLPs; never ablated (kept in every circuit, as they were never scored): "
                      "edges from input and edges into logits"),
            std::string::npos);
  // The lines come after the page's own caption, the curve after the Sankey.
  EXPECT_LT(html.find("caption</p>"), html.find("id=\"faithfulness\""));
  EXPECT_LT(html.find("Plotly.newPlot('sankey'"), html.find("id=\"faithfulness-curve\" data-points=\"3\""));
  const auto data = script_var(html, "faithfulness_data");
  ASSERT_TRUE(data.is_array());
  ASSERT_EQ(data.size(), 2u);  // the curve, the consistent circuit at its edge count
  EXPECT_EQ(data[0]["x"], nlohmann::json::array({1.0, 10.0, 100.0}));
  EXPECT_NEAR(data[0]["y"][2].get<double>(), 0.99, 1e-12);
  EXPECT_NEAR(data[0]["error_y"]["array"][0].get<double>(), 0.05, 1e-12);
  EXPECT_EQ(data[1]["x"], nlohmann::json::array({12.0}));
  const auto layout = script_var(html, "faithfulness_layout");
  EXPECT_EQ(layout["xaxis"]["type"], "log");
  EXPECT_EQ(layout["shapes"].size(), 2u);  // dashed F(empty) and F(full)
  EXPECT_NEAR(layout["shapes"][0]["y0"].get<double>(), 0.12, 1e-12);
  EXPECT_EQ(count(html, "</script>"), 3u);  // plotly, the Sankey, the curve
  // The SVG says it too, in its description.
  const std::string svg = sankey_svg(build_sankey(sample_edges()), info);
  EXPECT_NE(svg.find("F(consistent) = 0.850 \xc2\xb1 0.050 (12 edges)"), std::string::npos);
  std::string why;
  EXPECT_TRUE(well_formed_xml(svg, &why)) << why;
}

TEST(Faithfulness, NotEvaluatedPageUnchanged) {
  const std::string html = sankey_html(build_sankey(sample_edges()), {"cell", {"caption"}}, "");
  EXPECT_EQ(html.find("faithfulness"), std::string::npos);
  EXPECT_EQ(html.find("Faithfulness"), std::string::npos);
  EXPECT_EQ(sankey_svg(build_sankey(sample_edges()), {"cell", {}}).find("F(consistent)"), std::string::npos);
}

TEST(Faithfulness, DegenerateCellSaysWhyAndDrawsNoCurve) {
  const auto j = faithfulness_json(sample_faithfulness("degenerate cell: LD_clean = 2, LD_corr = 2"), sample_context());
  EXPECT_TRUE(j["circuits"]["consistent"]["F"].is_null());  // null, never NaN
  PageInfo info{"cell", {}};
  info.faithfulness = j;
  const std::string html = sankey_html(build_sankey(sample_edges()), info, "");
  EXPECT_NE(html.find("Faithfulness: no F for this cell (degenerate cell: LD_clean = 2, LD_corr = 2; F divides by "
                      "LD_clean - LD_corr)"),
            std::string::npos);
  EXPECT_EQ(html.find("faithfulness-curve"), std::string::npos);
  EXPECT_EQ(html.find("nan"), std::string::npos);
  EXPECT_EQ(faithfulness_headline(j), "No faithfulness F: degenerate cell: LD_clean = 2, LD_corr = 2");
}

TEST(Faithfulness, IncompleteEvaluationReportsNoF) {
  FaithfulnessContext c = sample_context();
  c.n_batches = 5;
  c.input_node = true;
  c.note = "another top_n";
  const auto j = faithfulness_incomplete_json(c, {3, 4}, {});
  EXPECT_EQ(j["incomplete"], "evaluation: 3 of 5 batches; missing 3-4 (no F until every batch is evaluated: run the job again)");
  EXPECT_EQ(j["missing_batches"], nlohmann::ordered_json::array({3, 4}));
  EXPECT_FALSE(j.contains("circuits"));  // nothing half-computed reads as the cell's F
  EXPECT_FALSE(j.contains("curve"));
  EXPECT_EQ(j["never_ablated"], "edges into logits");
  EXPECT_EQ(j["note"], "another top_n");
  PageInfo info{"cell", {}};
  info.faithfulness = j;
  const std::string html = sankey_html(build_sankey(sample_edges()), info, "");
  EXPECT_NE(html.find("Faithfulness: not yet known: evaluation: 3 of 5 batches; missing 3-4"), std::string::npos);
  EXPECT_NE(html.find("Scored nodes: heads and MLPs, input;"), std::string::npos);
  EXPECT_NE(html.find("Note: another top_n"), std::string::npos);
  EXPECT_EQ(html.find("F of the consistent circuit"), std::string::npos);
  EXPECT_EQ(html.find("faithfulness-curve"), std::string::npos);
}

TEST(Faithfulness, MistypedObjectReadsAsNotAvailable) {
  // A page is drawn from a file: a value of the wrong type is shown as n/a, not thrown.
  const nlohmann::ordered_json j = {{"circuits", {{"consistent", {{"F", "high"}, {"edges", 3}}}}}, {"curve", 7}};
  const auto lines = faithfulness_lines(j);
  ASSERT_FALSE(lines.empty());
  EXPECT_NE(lines[0].find("n/a (3 edges)"), std::string::npos) << lines[0];
  EXPECT_EQ(faithfulness_curve_html(j), "");
}

// --- Summary -------------------------------------------------------------------------------------

std::vector<CellSummary> sample_cells() {
  std::vector<CellSummary> cells(5);
  const char* feats[] = {"EngTableName", "EngFieldName", "DefTableName", "DefFieldName", "EngTableName"};
  for (int i = 0; i < 5; ++i) {
    cells[i].id = "BM1.CS" + std::to_string(i % 2 + 1) + "." + feats[i] + ".novel0.synfield0.syntable0";
    cells[i].model = 1;
    cells[i].commandset = i % 2 + 1;
    cells[i].feature = feats[i];
    cells[i].n_batches = 5;
  }
  cells[0].status = CellStatus::Done;
  cells[0].batches_present = 5;
  cells[0].has_baselines = true;
  cells[0].clean_ld = 4.5;
  cells[0].corrupt_ld = -1.25;
  cells[0].clean_accuracy = 0.9;
  cells[0].edges = {{"l0.h3", "l1.mlp", 0.5}, {"l0.mlp", "l1.mlp", -0.2}};
  cells[0].json_href = "cells/a/x.json";
  cells[0].html_href = "cells/a/sankey.html";
  cells[0].svg_href = "cells/a/sankey.svg";
  cells[1].status = CellStatus::Partial;
  cells[1].batches_present = 2;
  cells[1].problems = {"missing batches 2, 3, 4"};
  cells[2].status = CellStatus::Missing;
  cells[3].status = CellStatus::Failed;
  cells[3].batches_present = 4;
  cells[3].batches_failed = 1;
  cells[3].problems = {"batch 4: CUDA out of memory"};
  cells[4].status = CellStatus::Degenerate;
  cells[4].batches_present = 5;
  cells[4].has_baselines = true;
  cells[4].clean_ld = cells[4].corrupt_ld = 2.0;
  return cells;
}

TEST(Summary, StatusesAndNumbers) {
  SweepSummary s;
  s.cells = sample_cells();
  const std::string html = summary_html(s);
  std::string why;
  EXPECT_NE(html.find("<table id=\"cells\">"), std::string::npos);
  EXPECT_EQ(count(html, "<tr class=\"cell\""), 5u);
  for (const char* st : {"done", "partial", "missing", "failed", "degenerate"})
    EXPECT_EQ(count(html, std::string("data-status=\"") + st + "\""), 1u) << st;
  EXPECT_NE(html.find(">partial 2 of 5<"), std::string::npos);
  EXPECT_NE(html.find(">failed (1)<"), std::string::npos);
  EXPECT_NE(html.find("batch 4: CUDA out of memory"), std::string::npos);
  EXPECT_NE(html.find(">4.500<"), std::string::npos);
  EXPECT_NE(html.find(">-1.250<"), std::string::npos);
  EXPECT_NE(html.find(">90.0%<"), std::string::npos);
  EXPECT_NE(html.find("href=\"cells/a/sankey.html\""), std::string::npos);
  EXPECT_NE(html.find("href=\"cells/a/sankey.svg\""), std::string::npos);
  EXPECT_NE(html.find("href=\"cells/a/x.json\""), std::string::npos);
  EXPECT_EQ(html.find("nan"), std::string::npos);
  EXPECT_EQ(html.find("<script"), std::string::npos);  // self-contained, no script
  EXPECT_EQ(to_string(CellStatus::Degenerate), "degenerate");
}

TEST(Summary, RecurrenceAcrossCells) {
  auto cells = sample_cells();
  cells[1].status = CellStatus::Done;
  cells[1].edges = {{"l0.h3", "l1.mlp", 0.3}, {"l1.h2", "l1.mlp", 0.1}};
  cells[2].status = CellStatus::Done;
  cells[2].edges = {{"l0.h3", "l1.mlp", -0.1}};
  const auto rec = edge_recurrence(cells);
  ASSERT_EQ(rec.size(), 3u);
  EXPECT_EQ(rec[0].from, "l0.h3");
  EXPECT_EQ(rec[0].cells, (std::vector<int>{0, 1, 2}));
  EXPECT_NEAR(rec[0].mean_score, 0.7 / 3, 1e-12);
  EXPECT_EQ(rec[0].n_positive, 2);
  EXPECT_EQ(rec[0].n_negative, 1);
  EXPECT_EQ(rec[1].from, "l0.mlp");  // one cell each: larger |mean| first
  SweepSummary s;
  s.cells = cells;
  const std::string html = summary_html(s);
  EXPECT_NE(html.find("<table class=\"heat\" id=\"heatmap\">"), std::string::npos);
  EXPECT_NE(html.find("<table id=\"recurrence\">"), std::string::npos);
  EXPECT_NE(html.find(">3 / 3<"), std::string::npos);
  EXPECT_NE(html.find("DefTableName, EngFieldName, EngTableName"), std::string::npos);
  EXPECT_NE(html.find(">CS1, CS2<"), std::string::npos);
  // 3 edges x 3 done cells: 5 coloured squares, 4 blanks.
  EXPECT_EQ(count(html, "<td class=\"v\""), 5u);
}

TEST(Summary, HeatmapShowsEveryCellsStrongestEdge) {
  // Two cells share 3 edges; a third has 2 edges of its own, weaker and recurring nowhere: with 3
  // rows allowed, the most recurrent would leave its column blank.
  auto cells = sample_cells();
  cells[0].edges = {{"l0.h1", "l1.mlp", 0.5}, {"l0.h2", "l1.mlp", 0.4}, {"l0.h3", "l1.mlp", 0.3}};
  cells[1].status = CellStatus::Done;
  cells[1].edges = cells[0].edges;
  cells[2].status = CellStatus::Done;
  cells[2].edges = {{"l1.h0", "l1.mlp", -0.05}, {"l1.h1", "l1.mlp", 0.01}};
  const auto rec = edge_recurrence(cells);
  ASSERT_EQ(rec.size(), 5u);
  const std::vector<size_t> rows = heatmap_rows(rec, {0, 1, 2}, 3);
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rec[rows[0]].from, "l0.h1");  // cells 0 and 1's strongest
  EXPECT_EQ(rec[rows[1]].from, "l0.h2");  // the most recurrent after it
  EXPECT_EQ(rec[rows[2]].from, "l1.h0");  // cell 2's strongest, not the third shared edge
  SweepSummary s;
  s.cells = cells;
  s.heatmap_rows = 3;
  const std::string html = summary_html(s);
  EXPECT_EQ(count(html, "<td class=\"v\""), 5u);  // 2 + 2 + 1 coloured
  EXPECT_NE(html.find("l1.h0 \xe2\x86\x92 l1.mlp in BM1.CS1.DefTableName"), std::string::npos);
  // More cells than rows: every cell's strongest is still shown.
  EXPECT_EQ(heatmap_rows(rec, {0, 1, 2}, 1).size(), 2u);
}

TEST(Summary, NothingToCompare) {
  SweepSummary s;
  s.cells = sample_cells();
  s.cells[0].edges.clear();
  EXPECT_NE(summary_html(s).find("id=\"no-comparison\""), std::string::npos);
}

TEST(Summary, FaithfulnessColumnsAndChart) {
  SweepSummary s;
  s.cells = sample_cells();
  for (auto& c : s.cells) c.evaluated = true;
  s.cells[0].has_faithfulness = true;
  s.cells[0].batches_evaluated = 5;
  s.cells[0].f_consistent = 0.834;
  s.cells[0].f_consistent_spread = 0.051;
  s.cells[0].f_auc = 0.7;
  s.cells[0].f_empty = -0.02;
  s.cells[0].consistent_circuit_edges = 12;
  s.cells[1].status = CellStatus::Done;  // scored, its evaluation not finished
  s.cells[1].batches_present = 5;
  s.cells[1].batches_evaluated = 3;
  s.cells[1].no_faithfulness = "evaluation: 3 of 5 batches; missing 3-4";
  s.cells[3].status = CellStatus::Done;
  s.cells[3].feature = s.cells[0].feature;  // a second dot in the first feature's group
  s.cells[3].has_faithfulness = true;
  s.cells[3].f_consistent = 1.4;  // beyond 1: the axis grows to show it
  s.cells[3].f_consistent_spread = 0.2;
  s.cells[3].flags = {"low_effect"};
  s.cells[4].no_faithfulness = "degenerate cell: LD_clean = 2, LD_corr = 2";
  const std::string html = summary_html(s);
  EXPECT_NE(html.find(">F consistent</th>"), std::string::npos);
  EXPECT_NE(html.find(">AUC F(k)</th>"), std::string::npos);
  EXPECT_NE(html.find(">F empty</th>"), std::string::npos);
  EXPECT_NE(html.find("title=\"12 edges\">0.834 &plusmn; 0.051</td><td class=\"num\">0.700</td><td class=\"num\">-0.020</td>"),
            std::string::npos);
  EXPECT_NE(html.find("title=\"evaluation: 3 of 5 batches; missing 3-4\">evaluated 3/5</td>"), std::string::npos);
  EXPECT_NE(html.find("title=\"degenerate cell: LD_clean = 2, LD_corr = 2\">no F</td>"), std::string::npos);
  // Every row has the same number of cells as the header.
  const std::string head = html.substr(html.find("<table id=\"cells\">"), html.find("</thead>") - html.find("<table id=\"cells\">"));
  const size_t header = count(head, "<th>") + count(head, "<th title");
  const std::string body = html.substr(html.find("<tbody>"), html.find("</tbody>") - html.find("<tbody>"));
  EXPECT_EQ(count(body, "<td"), header * s.cells.size());
  // The chart: one dot per cell with F, grouped by feature, the flagged one hollow; no script.
  const size_t a = html.find("<svg id=\"faithfulness-plot\""), b = html.find("</svg>", a);
  ASSERT_NE(a, std::string::npos);
  const std::string svg = html.substr(a, b + 6 - a);
  std::string why;
  EXPECT_TRUE(well_formed_xml(svg, &why)) << why;
  EXPECT_EQ(count(svg, "<circle class=\"fdot\""), 2u);
  EXPECT_NE(svg.find(s.cells[0].id + ": F = 0.834 \xc2\xb1 0.051 (12 edges)"), std::string::npos);
  EXPECT_NE(svg.find("fill=\"white\"><title>" + s.cells[3].id + ": F = 1.400 \xc2\xb1 0.200; flagged low_effect"), std::string::npos);
  EXPECT_NE(svg.find(">EngTableName</text>"), std::string::npos);
  EXPECT_NE(svg.find(">2 cells</text>"), std::string::npos);
  EXPECT_NE(svg.find(">1.5</text>"), std::string::npos);  // the axis reaches 1.4 + 0.2
  EXPECT_NE(html.find("3 evaluated cell(s) have no F yet"), std::string::npos);
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("nan"), std::string::npos);
}

TEST(Summary, NoEvaluationNoFColumns) {
  SweepSummary s;
  s.cells = sample_cells();
  const std::string html = summary_html(s);
  EXPECT_EQ(html.find("F consistent"), std::string::npos);
  EXPECT_EQ(html.find("faithfulness-plot"), std::string::npos);
  EXPECT_EQ(html.find("Faithfulness"), std::string::npos);
  EXPECT_EQ(faithfulness_chart_svg(s.cells), "");
  // Evaluated, but no F anywhere yet: the section says so, with no chart.
  for (auto& c : s.cells) c.evaluated = true;
  const std::string pending = summary_html(s);
  EXPECT_NE(pending.find("id=\"no-faithfulness\""), std::string::npos);
  EXPECT_EQ(pending.find("faithfulness-plot"), std::string::npos);
}

}  // namespace
