// The `score` kind of work unit: one cell x batch index scored by the job's method, split across
// the rank group's members by prompts, with the group's partial scores summed.
#include <ATen/Parallel.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <optional>
#include <set>

#include "dist/dist.hpp"
#include "eap/micro_batch.hpp"
#include "eap/score.hpp"
#include "model/denormal.hpp"
#include "model/hf_cache.hpp"
#include "model/model.hpp"
#include "runner/memory_plan.hpp"
#include "runner/run_unit.hpp"
#include "runner/unit.hpp"
#include "runner/workspace.hpp"
#include "tokenizer/tokenizer.hpp"
#include "util/error.hpp"
#include "version.hpp"

namespace teap::runner {

void WorkspaceDeleter::operator()(Workspace* w) const { delete w; }

WorkspacePtr make_workspace(int threads, int ranks_on_node) {
  at::set_num_threads(threads);
  model::flush_denormals();  // on the pool of the thread count just set
  WorkspacePtr ws(new Workspace);
  ws->ranks_on_node = ranks_on_node;
  node_memory_bytes();  // measured before any weights are loaded (cached)
  return ws;
}

namespace {

// `in` is the batch's model input (batch_input of `b`): its ids and tokens are stored as they were scored.
io::UnitRecord unit_record(const job::Job& job, const job::Cell& cell, int batch, const tinysql::Batch& b,
                           const eap::BatchInput& in, const eap::Graph& g, const eap::BatchScores& r, const model::Model& m,
                           double seconds, int rank, int threads) {
  io::UnitRecord u;
  const auto& s = job.settings;
  u.text_attrs = {{"cell_id", cell.id}, {"hf_model", cell.weights}, {"tokenizer", cell.tokenizer},
                  {"feature", tinysql::feature_name(cell.prompts.feature)}, {"dtype", s.dtype}, {"device", s.device},
                  {"downstream_heads", s.downstream_heads}, {"metric_pairing", s.metric_pairing}, {"method", s.method},
                  {"settings", cell.settings}, {"settings_hash", cell.hash}, {"program_version", TEAP_VERSION},
                  {"seed", std::to_string(s.seed)}};
  u.int_attrs = {{"model", cell.model}, {"commandset", cell.commandset}, {"batch_index", batch},
                 {"use_novel_names", cell.prompts.use_novel_names}, {"use_synonyms_field", cell.prompts.use_synonyms_field},
                 {"use_synonyms_table", cell.prompts.use_synonyms_table}, {"num_fields", s.num_fields},
                 {"batch_size", s.batch_size}, {"n_batches", s.batches}, {"n_layers", m.config.n_layers},
                 {"n_heads", m.config.n_heads}, {"rank", rank}, {"threads", threads}, {"group_size", s.group_size},
                 {"input_node", s.input_node}, {"logits_node", s.logits_node}};
  if (s.method == "eap-ig-inputs") u.int_attrs["ig_steps"] = s.ig_steps;
  u.real_attrs = {{"seconds", seconds}};
  u.n_upstream = r.n_upstream;
  u.n_downstream = r.n_downstream;
  u.n_prompts = r.n_prompts;
  u.n_positions = r.n_positions;
  u.scores = r.scores;
  u.valid = g.valid;
  u.upstream = g.upstream;
  u.downstream = g.downstream;
  u.clean_ld = r.clean_ld;
  u.corrupt_ld = r.corrupt_ld;
  u.clean_correct = r.clean_correct;
  u.clean_top_token = r.clean_top;
  u.corrupt_top_token = r.corrupt_top;
  u.clean_ids = in.clean_ids;
  u.corrupt_ids = in.corrupt_ids;
  u.clean_token = in.clean_answer;
  u.corrupt_token = in.corrupt_answer;
  u.answer_token = in.expected;
  for (const auto& e : b.examples) {
    u.clean_word.push_back(e.clean_word);
    u.corrupt_word.push_back(e.corrupt_word);
  }
  return u;
}

// Token ids from every member, in rank order (exact through doubles: ids are far below 2^53).
std::vector<int64_t> gather_ids(const dist::Group& group, const std::vector<int64_t>& mine) {
  const std::vector<double> all = group.gather(std::vector<double>(mine.begin(), mine.end()));
  return std::vector<int64_t>(all.begin(), all.end());
}

// The first position where some prompt's clean and corrupt ids differ (the scored suffix starts there).
int first_difference(const eap::BatchInput& in) {
  const int P = in.n_positions;
  int first = P - 1;
  for (int i = 0; i < in.n_prompts; ++i)
    for (int p = 0; p < first; ++p)
      if (in.clean_ids[size_t(i) * P + p] != in.corrupt_ids[size_t(i) * P + p]) {
        first = p;
        break;
      }
  return first;
}

// Prompts [lo, hi) of a batch: one group member's share.
eap::BatchInput share_of(const eap::BatchInput& full, int lo, int hi) {
  const int P = full.n_positions;
  eap::BatchInput part;
  part.n_prompts = hi - lo;
  part.n_positions = P;
  part.clean_ids.assign(full.clean_ids.begin() + int64_t(lo) * P, full.clean_ids.begin() + int64_t(hi) * P);
  part.corrupt_ids.assign(full.corrupt_ids.begin() + int64_t(lo) * P, full.corrupt_ids.begin() + int64_t(hi) * P);
  part.clean_answer.assign(full.clean_answer.begin() + lo, full.clean_answer.begin() + hi);
  part.corrupt_answer.assign(full.corrupt_answer.begin() + lo, full.corrupt_answer.begin() + hi);
  part.expected.assign(full.expected.begin() + lo, full.expected.begin() + hi);
  return part;
}

}  // namespace

UnitOutcome run_score_unit(const UnitEnv& env, Workspace& ws, const UnitRef& unit) {
  const job::Job& job = env.job;
  const dist::Group& group = env.group;
  const auto& s = job.settings;
  const job::Cell& cell = job.cells[unit.cell];
  const auto t0 = std::chrono::steady_clock::now();
  UnitOutcome outcome;
  // Group members match their collectives even when one fails: `phase` counts the agreement
  // sums done (1: at the scores' sum, 2: after scoring); a failing member joins the next one
  // with a 1 unless a sum already told everyone the unit failed.
  int phase = 0;
  bool known_failed = false;
  try {
    ws.load(cell, s);
    const model::Model& m = *ws.model;
    const tinysql::Batch batch = tinysql::make_batch(*ws.tok, cell.prompts, s.seed, unit.batch, s.batch_size);
    const eap::BatchInput full = batch_input(batch);
    const int B = full.n_prompts;
    const int lo = static_cast<int>(int64_t(B) * group.rank() / group.size());
    const int hi = static_cast<int>(int64_t(B) * (group.rank() + 1) / group.size());
    const eap::BatchInput part = share_of(full, lo, hi);
    const eap::Graph g = scoring_graph(job, m);
    eap::ScoreOptions so;
    so.method = eap::parse_method(s.method, job.path);
    so.ig_steps = s.ig_steps;
    so.pairing = eap::parse_metric_pairing(s.metric_pairing, job.path);
    // The notebook scored every batch against its cell's last batch's pairs (eap.md).
    if (so.pairing == eap::MetricPairing::Notebook)
      so.broadcast = notebook_metric_pairs(*ws.tok, cell.prompts, s.seed, s.batches, s.batch_size);
    if (group.size() > 1) {
      so.weight = double(part.n_prompts) / B;
      so.sum_scores = [&](void* data, size_t n, bool is_double, bool on_cuda) {
        int64_t failed_members = 0;  // members that failed before this point say so here
        group.sum(&failed_members, 1);
        phase = 1;
        known_failed = failed_members > 0;
        if (known_failed) throw std::runtime_error("another rank of the group failed on this unit");
        if (is_double) group.sum(static_cast<double*>(data), n, on_cuda);
        else group.sum(static_cast<float*>(data), n, on_cuda);
      };
    }
    if (part.n_prompts == 0) throw InputError("group of " + std::to_string(group.size()) + " ranks is larger than the batch");
    // Within the rank's memory budget: micro-batches whose scores add up to the part's (issue 17).
    const MemoryPlan mem = plan_memory_loaded(m.config, double(model::parameter_count(m)) * m.weights.wte.element_size(),
                                              double(m.mapped_bytes), s, part.n_prompts, part.n_positions,
                                              part.n_positions - first_difference(part), ws.ranks_on_node, env.threads);
    if (mem.micro == 0)
      throw InputError(job.path + ": settings.memory_budget: " + eap::format_bytes(mem.budget) + " per rank is less than " +
                       cell.weights + " needs for one prompt");
    if ((mem.micro < part.n_prompts || mem.upstream_layers > 0) && ws.told_micro.insert(cell.weights).second)
      spdlog::info("{}: batches scored in micro-batches of {} of {} prompts within settings.memory_budget ({})", cell.weights,
                   mem.micro, part.n_prompts, describe(mem, ws.ranks_on_node));
    so.upstream_layers = static_cast<int>(mem.upstream_layers);
    if (!ws.buffers) ws.buffers = eap::make_workspace();
    so.workspace = ws.buffers;
    eap::BatchScores r = eap::score_in_micro_batches(m, g, part, so, static_cast<int>(mem.micro));
    if (group.size() > 1) {
      int64_t post_failed = 0;
      group.sum(&post_failed, 1);
      phase = 2;
      known_failed = post_failed > 0;
      if (known_failed) throw std::runtime_error("another rank of the group failed on this unit");
    }
    r.clean_ld = group.gather(r.clean_ld);
    r.corrupt_ld = group.gather(r.corrupt_ld);
    r.clean_top = gather_ids(group, r.clean_top);
    r.corrupt_top = gather_ids(group, r.corrupt_top);
    int64_t correct = r.clean_correct;
    group.sum(&correct, 1);
    r.clean_correct = static_cast<int>(correct);
    r.n_prompts = B;
    outcome.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (group.leader())
      outcome.record = unit_record(job, cell, unit.batch, batch, full, g, r, m, outcome.seconds, env.rt.rank(), env.threads);
  } catch (const std::exception& e) {
    outcome.fail(e);
  }
  if (outcome.error != UnitOutcome::Error::none && group.size() > 1 && !known_failed && phase < 2) {
    int64_t one = 1;
    group.sum(&one, 1);
  }
  return outcome;
}

}  // namespace teap::runner
