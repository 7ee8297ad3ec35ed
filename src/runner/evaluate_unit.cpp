// The `evaluate` kind of work unit: one cell x batch index run with each of the cell's circuits
// (../shared/spec/circuits.md). It runs once every score unit of the cell is published: the cell's
// baselines and circuits come from all of them (read once per cell and rank, then kept), the
// batch's prompts are regenerated as the score unit made them, and the group's leader alone runs
// the patched passes (a batch's circuits are not split across ranks).
#include <ATen/Parallel.h>

#include <cmath>
#include <limits>

#include "eap/evaluate.hpp"
#include "eap/topn.hpp"
#include "io/unit_file.hpp"
#include "runner/folder.hpp"
#include "runner/unit.hpp"
#include "runner/workspace.hpp"
#include "dist/dist.hpp"
#include "util/error.hpp"
#include "version.hpp"

namespace teap::runner {
namespace {

eap::EvaluateSpec evaluate_spec(const job::Job& job) {
  eap::EvaluateSpec spec;
  spec.circuits = job.evaluate.circuits;
  spec.top_k = job.evaluate.top_k;
  spec.prune = job.evaluate.prune;
  return spec;
}

// The cell's baselines and circuits from its score units (all published: the plan waited for them).
CellCircuits cell_circuits_of(const job::Job& job, const job::Cell& cell, const eap::Graph& g) {
  const auto& s = job.settings;
  std::vector<io::UnitRecord> units;
  for (int b = 0; b < s.batches; ++b) {
    const std::string path = unit_path(job.output, cell.id, b);
    units.push_back(io::read_unit(path));
    const io::UnitRecord& u = units.back();
    if (u.upstream != g.upstream || u.downstream != g.downstream || u.valid != g.valid)
      fail_input(path, "its graph (node names or edge mask) is not the one the job's settings give");
  }
  std::vector<eap::BatchScores> batches(units.size());
  std::vector<const eap::BatchScores*> ptrs;
  std::vector<const float*> scores;
  for (size_t k = 0; k < units.size(); ++k) {
    batches[k] = batch_scores_of(std::move(units[k]));
    ptrs.push_back(&batches[k]);
    scores.push_back(batches[k].scores.data());
  }
  CellCircuits c;
  c.key = cell.id + "|" + cell.evaluation_hash;
  c.baselines = eap::baselines(ptrs, eap::parse_metric_pairing(s.metric_pairing, job.path));
  // Rankings by |score| do not depend on the normalisation, so a degenerate cell still has its
  // circuits (and their LDs); only F, which divides by LD_clean - LD_corr, is left undefined.
  double scale = 1.0;
  if (c.baselines.degenerate()) c.no_faithfulness = "degenerate cell: " + c.baselines.describe();
  else scale = 1.0 / c.baselines.denominator();
  const std::vector<eap::Edge> consistent = eap::consistent_edges(g, scores, scale, s.top_n, false);
  c.circuits = eap::cell_circuits(evaluate_spec(job), g, consistent, scores, scale);
  return c;
}

io::EvaluationRecord evaluation_record(const job::Job& job, const job::Cell& cell, int batch, const CellCircuits& cc,
                                       const eap::BatchEvaluation& ev, double seconds, int rank, int threads) {
  const auto& s = job.settings;
  io::EvaluationRecord e;
  e.text_attrs = {{"cell_id", cell.id}, {"hf_model", cell.weights}, {"settings", cell.settings},
                  {"settings_hash", cell.hash}, {"evaluation", cell.evaluation}, {"evaluation_hash", cell.evaluation_hash},
                  {"method", s.method}, {"metric_pairing", s.metric_pairing}, {"downstream_heads", s.downstream_heads},
                  {"dtype", s.dtype}, {"device", s.device}, {"program_version", TEAP_VERSION}};
  e.int_attrs = {{"batch_index", batch}, {"n_batches", s.batches}, {"top_n", s.top_n},
                 {"input_node", s.input_node}, {"logits_node", s.logits_node}, {"prune", job.evaluate.prune},
                 {"rank", rank}, {"threads", threads}};
  e.real_attrs = {{"seconds", seconds}, {"baseline_clean_ld", cc.baselines.clean_ld},
                  {"baseline_corrupt_ld", cc.baselines.corrupt_ld}};
  e.n_prompts = ev.runs.n_prompts;
  e.clean_ld = ev.runs.clean_ld;
  e.corrupt_ld = ev.runs.corrupt_ld;
  e.no_faithfulness = cc.no_faithfulness;
  for (size_t i = 0; i < cc.circuits.size(); ++i) {
    const eap::Circuit& c = cc.circuits[i];
    e.circuit.push_back(c.name);
    e.circuit_k.push_back(c.k);
    e.edge_count.push_back(c.n_edges());
    e.logit_diff.insert(e.logit_diff.end(), ev.circuit_ld[i].begin(), ev.circuit_ld[i].end());
    e.faithfulness.push_back(cc.no_faithfulness.empty() ? eap::normalised_metric(ev.circuit_ld[i], cc.baselines)
                                                        : std::numeric_limits<double>::quiet_NaN());
  }
  return e;
}

}  // namespace

UnitOutcome run_evaluate_unit(const UnitEnv& env, Workspace& ws, const UnitRef& unit) {
  const job::Job& job = env.job;
  const auto& s = job.settings;
  const job::Cell& cell = job.cells[unit.cell];
  const auto t0 = std::chrono::steady_clock::now();
  UnitOutcome outcome;
  ws.buffers.reset();  // the score units' buffers: the circuits' runs (or the other ranks') need the memory now
  if (!env.group.leader()) return outcome;  // the leader runs the batch's circuits alone
  try {
    ws.load(cell, s);
    const model::Model& m = *ws.model;
    const eap::Graph g = scoring_graph(job, m);
    if (ws.cell.key != cell.id + "|" + cell.evaluation_hash) ws.cell = cell_circuits_of(job, cell, g);
    const tinysql::Batch batch = tinysql::make_batch(*ws.tok, cell.prompts, s.seed, unit.batch, s.batch_size);
    eap::EvaluateOptions eo;
    eo.pairing = eap::parse_metric_pairing(s.metric_pairing, job.path);
    if (eo.pairing == eap::MetricPairing::Notebook)
      eo.broadcast = notebook_metric_pairs(*ws.tok, cell.prompts, s.seed, s.batches, s.batch_size);
    std::vector<const eap::Circuit*> ptrs;
    for (const auto& c : ws.cell.circuits) ptrs.push_back(&c);
    const eap::BatchEvaluation ev = eap::evaluate_batch(m, batch_input(batch), ptrs, eo);
    outcome.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    outcome.evaluation =
        evaluation_record(job, cell, unit.batch, ws.cell, ev, outcome.seconds, env.rt.rank(), env.threads);
  } catch (const std::exception& e) {
    outcome.fail(e);
  }
  return outcome;
}

}  // namespace teap::runner
