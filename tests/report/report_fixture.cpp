// report_fixture OUTDIR: writes, with the report library alone, what the browser and Python tests
// open: a result JSON in the notebook's schema and name, its Sankey as HTML (plotly.js inline) and
// SVG with the cell's faithfulness (F(k) curve), and a summary page over six cells of every status
// with F columns and the chart of F per cell; the cross-cell comparison page (comparison.html) over
// cells of two architectures, and a difference Sankey of two results (diff-*.html / .svg).
#include <cstdio>
#include <filesystem>
#include <string>

#include "eap/faithfulness.hpp"
#include "eap/graph.hpp"
#include "report/comparison.hpp"
#include "report/diff.hpp"
#include "report/faithfulness_json.hpp"
#include "report/notebook_json.hpp"
#include "report/sankey.hpp"
#include "report/summary.hpp"
#include "util/error.hpp"
#include "util/files.hpp"

using namespace teap;
using namespace teap::report;

namespace {

// Five batches of a cell evaluated with consistent (9 edges), top-k for k = 1..100 and all (140),
// empty and full: an F(k) curve rising from 0.3 to 1.
eap::CellFaithfulness fixture_faithfulness() {
  const std::vector<int64_t> ks = {1, 2, 5, 10, 20, 50, 100, 140};
  std::vector<eap::BatchFaithfulness> batches(5);
  for (int b = 0; b < 5; ++b) {
    auto& x = batches[b];
    const double wobble = 0.02 * (b - 2);
    x.circuit = {"consistent"};
    x.k = {-1};
    x.edges = {9};
    x.f = {0.82 + wobble};
    for (int64_t k : ks) {
      x.circuit.push_back("top-" + std::to_string(k));
      x.k.push_back(k);
      x.edges.push_back(k);
      x.f.push_back(k == 140 ? 1.0 + wobble : 1.0 - 0.7 / (1.0 + 0.3 * double(k)) + wobble);
    }
    x.circuit.insert(x.circuit.end(), {"empty", "full"});
    x.k.insert(x.k.end(), {-1, -1});
    x.edges.insert(x.edges.end(), {0, 140});
    x.f.insert(x.f.end(), {0.05 + wobble, 1.0 + wobble});
  }
  return eap::cell_faithfulness(batches, "", "fixture");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: report_fixture OUTDIR\n");
    return 2;
  }
  try {
    const std::string out = argv[1];
    std::filesystem::create_directories(out);
    Result r;
    r.metadata.model = 1;
    r.metadata.commandset = 1;
    r.metadata.hf_model = "withmartian/sql_interp_bm1_cs1_experiment_1.10";
    r.metadata.feature_name = "EngTableName";
    r.metadata.use_synonyms_table = true;
    r.metadata.num_sql_fields = 2;
    r.metadata.batch_size = 30;
    r.metadata.n_batches = 5;
    r.metadata.n_positions = 41;
    r.metadata.n_layers = 2;
    r.metadata.n_heads = 16;
    r.parameters.top_n_edges = 10;
    r.parameters.clean_logit_diff = 4.123456789123;
    r.parameters.corrupt_logit_diff = -0.987654321987;
    r.parameters.clean_metric = 1.0;
    r.parameters.corrupt_metric = 0.0;
    r.parameters.extra["clean_accuracy"] = 29.0 / 30;
    r.parameters.extra["downstream_heads"] = "qkv";
    r.parameters.extra["metric_pairing"] = "own";
    r.parameters.extra["signed_rank"] = false;
    r.parameters.extra["seed"] = 0;
    r.parameters.extra["dtype"] = "float32";
    r.parameters.extra["program_version"] = "fixture";
    const char* up[] = {"head.0.3", "mlp.0", "head.0.11", "head.1.7", "head.0.3", "mlp.0", "head.1.2", "head.0.5"};
    const char* down[] = {"head.1.7.q", "mlp.1", "mlp.0", "mlp.1", "mlp.1", "head.1.2.k", "mlp.1", "head.1.7.v"};
    const double score[] = {0.312345678912, -0.2234567891, 0.15, 0.1123456789, -0.0623456789, 0.0412345678, 0.0301234567,
                            -1.2e-09};
    for (int i = 0; i < 8; ++i) r.edges.push_back({eap::display_name(up[i]), eap::display_name(down[i]), score[i]});
    const std::string json_name = result_file_name(r.metadata);
    write_file_atomic(out + "/" + json_name, dump_python_json(to_json(r)));

    const Sankey s = build_sankey(r.edges);
    PageInfo info{"BM1.CS1.EngTableName.novel0.synfield0.syntable1", {"fixture: 8 consistent edges"}};
    const eap::CellFaithfulness f = fixture_faithfulness();
    FaithfulnessContext fc;
    fc.top_n = 10;
    fc.batches_evaluated = fc.n_batches = 5;
    info.faithfulness = faithfulness_json(f, fc);
    write_file_atomic(out + "/sankey.html", sankey_html(s, info, load_plotly_js()));
    write_file_atomic(out + "/sankey.svg", sankey_svg(s, info));

    SweepSummary sum;
    sum.lines = {"fixture sweep"};
    const char* feats[] = {"EngTableName", "EngFieldName", "DefTableName", "DefFieldName", "EngTableName", "EngFieldName"};
    const CellStatus st[] = {CellStatus::Done, CellStatus::Done, CellStatus::Partial, CellStatus::Missing, CellStatus::Failed,
                             CellStatus::Degenerate};
    for (int i = 0; i < 6; ++i) {
      CellSummary c;
      c.id = std::string("BM1.CS") + std::to_string(1 + i % 2) + "." + feats[i] + ".novel0.synfield0.syntable0";
      c.model = 1;
      c.arch = arch_of(1, 2, 16);
      c.commandset = 1 + i % 2;
      c.feature = feats[i];
      c.status = st[i];
      c.n_batches = 5;
      c.batches_present = st[i] == CellStatus::Done || st[i] == CellStatus::Degenerate ? 5 : st[i] == CellStatus::Missing ? 0 : 3;
      if (st[i] == CellStatus::Failed) {
        c.batches_failed = 1;
        c.problems = {"batch 3: out of memory"};
      }
      if (st[i] == CellStatus::Partial) c.problems = {"missing batches 3, 4"};
      if (st[i] == CellStatus::Done || st[i] == CellStatus::Degenerate) {
        c.has_baselines = true;
        c.clean_ld = st[i] == CellStatus::Done ? 4.1 + i : 2.0;
        c.corrupt_ld = st[i] == CellStatus::Done ? -1.0 : 2.0;
        c.clean_accuracy = 0.95;
      }
      c.evaluated = true;
      if (st[i] == CellStatus::Degenerate) c.no_faithfulness = "degenerate cell: LD_clean = 2, LD_corr = 2";
      if (st[i] == CellStatus::Done) {
        c.has_faithfulness = true;
        c.batches_evaluated = 5;
        c.f_consistent = f.find("consistent")->f - 0.1 * i;
        c.f_consistent_spread = f.find("consistent")->spread;
        c.f_auc = f.auc;
        c.f_empty = f.find("empty")->f;
        c.consistent_circuit_edges = 9;
        c.edges = r.edges;
        if (i == 1) c.edges.resize(4);
        c.json_href = json_name;
        c.html_href = "sankey.html";
        c.svg_href = "sankey.svg";
      }
      sum.cells.push_back(c);
    }
    sum.comparison_href = "comparison.html";
    write_file_atomic(out + "/index.html", summary_html(sum));

    // The comparison page: the summary's cells (BM1.2x16) with a base-model cell, a flagged one, and
    // a second architecture (BM2.24x14) whose node names repeat BM1's: two separate sections.
    SweepSummary cmp = sum;
    CellSummary base = cmp.cells[0];
    base.id = "BM1.CS0.EngTableName.novel0.synfield0.syntable0";
    base.commandset = 0;
    base.edges = {r.edges[0], r.edges[2], r.edges[5]};
    cmp.cells.push_back(base);
    CellSummary flagged = cmp.cells[0];
    flagged.id = "BM1.CS3.EngTableName.novel0.synfield0.syntable0";
    flagged.commandset = 3;
    flagged.flags = {"low_effect"};
    for (auto& e : flagged.edges) e.score *= 100;  // would wash the scale out were it compared
    cmp.cells.push_back(flagged);
    for (int cs = 0; cs < 4; ++cs) {
      CellSummary c = cmp.cells[0];
      c.id = "BM2.CS" + std::to_string(cs) + ".EngTableName.novel0.synfield0.syntable0";
      c.model = 2;
      c.arch = arch_of(2, 24, 14);
      c.commandset = cs;
      c.edges = {{"l0.h3", "l1.h7.q", 0.2 + 0.05 * cs}, {"l5.mlp", "l20.h3.k", -0.1}, {"l23.h13", "logits", 0.3}};
      if (cs == 2) c.edges.pop_back();
      c.html_href.clear();
      cmp.cells.push_back(c);
    }
    write_file_atomic(out + "/comparison.html", comparison_html(cmp, load_plotly_js()));

    // A difference Sankey: the result above (A) against a second cell's (B) sharing some edges.
    Result rb = r;
    rb.metadata.commandset = 2;
    rb.edges = {r.edges[0], r.edges[1], {"l0.h9", "l1.mlp", 0.21}, {"l0.mlp", "l1.h4.v", -0.08}};
    rb.edges[0].score = 0.25;
    const std::string b_name = result_file_name(rb.metadata);
    std::filesystem::create_directories(out + "/diff");
    write_file_atomic(out + "/diff/" + b_name, dump_python_json(to_json(rb)));
    write_diff({out + "/" + json_name, out + "/diff/" + b_name}, out, true, true, load_plotly_js());
    std::printf("%s\n", (out + "/" + json_name).c_str());
    return 0;
  } catch (const InputError& e) {
    std::fprintf(stderr, "report_fixture: error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "report_fixture: failure: %s\n", e.what());
    return 1;
  }
}
