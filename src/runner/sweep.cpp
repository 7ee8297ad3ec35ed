// The sweep as one short story: rank 0 plans and prepares the folder, every rank receives the
// plan, then ranks pull units, run each by its kind, publish it, and report progress.
#include "runner/sweep.hpp"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <set>
#include <thread>

#include "dist/dist.hpp"
#include "runner/folder.hpp"
#include "runner/manifest.hpp"
#include "runner/plan.hpp"
#include "runner/preflight.hpp"
#include "runner/progress.hpp"
#include "runner/run_unit.hpp"
#include "util/error.hpp"
#include "version.hpp"

namespace teap::runner {
namespace fs = std::filesystem;

namespace {

std::atomic<int> g_stop_signal{0};
extern "C" void on_stop_signal(int sig) { g_stop_signal.store(sig); }

Shard shard_of(const RunOptions& o) {
  if (o.shard_count < 1 || o.shard_index < 0 || o.shard_index >= o.shard_count)
    throw InputError("--shard " + std::to_string(o.shard_index) + "/" + std::to_string(o.shard_count) +
                     ": expected K/N with 0 <= K < N");
  return Shard{o.shard_index, o.shard_count};
}

// Before any work (dry or not): every problem of the job against this machine, one line each.
// Returns what each cell's weights are.
std::vector<std::string> check_before_work(const job::Job& job, const dist::Runtime& rt, bool dry_run) {
  const PreflightContext context{rt.local_size(), threads_per_rank(job.settings.threads, rt.local_size())};
  const PreflightResult checked = preflight(job, context);
  const std::vector<std::string>& problems = checked.problems;
  if (problems.empty()) {
    if (dry_run)  // the estimated peak per rank of each model (issue 17)
      for (const auto& line : checked.memory) std::printf("memory: %s\n", line.c_str());
    std::vector<std::string> ids;
    for (const auto& c : job.cells) ids.push_back(checked.weights_id.at(c.weights));
    return ids;
  }
  for (size_t i = 0; i + 1 < problems.size(); ++i) std::fprintf(stderr, "tinysql-eap: error: %s\n", problems[i].c_str());
  throw InputError(problems.back() + (problems.size() > 1 ? " (" + std::to_string(problems.size()) + " problems: nothing was run)" : ""));
}

void print_dry_run_cells(const job::Job& job, const FolderScan& scan) {
  for (size_t c = 0; c < job.cells.size(); ++c) {
    std::printf("%-48s %d/%d batches done", job.cells[c].id.c_str(), scan.done_in_cell(0, static_cast<int>(c)),
                scan.n_batches);
    if (scan.state.size() > 1) std::printf(", %d/%d evaluated", scan.done_in_cell(1, static_cast<int>(c)), scan.n_batches);
    std::printf("\n");
  }
  for (const auto& p : scan.problems)
    std::printf("%s unit file, to be moved aside and recomputed: %s\n",
                p.check.state == UnitState::damaged ? "damaged" : "foreign", p.check.why.c_str());
}

// Rank 0's part of planning: check the job against the machine and the folder, plan, and (unless
// dry) prepare the folder. Throws on bad input or failure.
// The job with what its weights are in every cell's settings and hash.
job::Job with_weights_ids(job::Job job, const std::vector<std::string>& ids) {
  for (size_t c = 0; c < job.cells.size(); ++c) job::set_weights_id(job.cells[c], ids.at(c));
  return job;
}

Plan plan_on_rank0(const job::Job& job_as_read, const dist::Runtime& rt, const RunOptions& options, const Shard& shard,
                   std::optional<FolderLock>& lock, std::vector<std::string>& weights_ids) {
  if (rt.size() % job_as_read.settings.group_size != 0)
    throw InputError(job_as_read.path + ": settings.group_size " + std::to_string(job_as_read.settings.group_size) +
                     " does not divide the " + std::to_string(rt.size()) + " ranks");
  weights_ids = check_before_work(job_as_read, rt, options.dry_run);
  const job::Job job = with_weights_ids(job_as_read, weights_ids);
  if (!options.dry_run) lock.emplace(lock_folder(job, shard));
  const nlohmann::json manifest = merge_manifest(job.output + "/sweep.json", manifest_of(job));
  const std::vector<UnitKind> kinds = unit_kinds(job);
  const FolderScan scan = scan_folder(job.output, job, kinds, inspect_file);
  Plan plan = make_plan(job, kinds, scan, shard);
  if (options.dry_run) print_dry_run_cells(job, scan);
  else prepare_folder(job, manifest, scan, plan, shard);
  return plan;
}

// Every rank gets rank 0's plan and what each cell's weights are, or its error with the error's
// kind, so all fail alike or work alike (and only rank 0 says why).
PlanOutcome agree_on_plan(const job::Job& job, const dist::Runtime& rt, const RunOptions& options, const Shard& shard,
                          std::optional<FolderLock>& lock) {
  std::string message;
  if (rt.rank() == 0) {
    PlanOutcome o;
    try {
      o.plan = plan_on_rank0(job, rt, options, shard, lock, o.weights_ids);
    } catch (const InputError& e) {
      o = PlanOutcome{PlanOutcome::Error::input, e.what(), {}, {}};
    } catch (const std::exception& e) {
      o = PlanOutcome{PlanOutcome::Error::failure, e.what(), {}, {}};
    }
    message = encode_outcome(o);
  }
  rt.broadcast(message);
  const PlanOutcome o = decode_outcome(message);
  if (rt.rank() != 0 && o.error != PlanOutcome::Error::none)
    throw ReportedElsewhere(o.error == PlanOutcome::Error::input ? 2 : 1);
  o.rethrow();
  return o;
}

// The rank's log file (every line carrying the rank) for as long as this lives.
struct RankLog {
  std::shared_ptr<spdlog::logger> console = spdlog::default_logger();
  RankLog(const std::string& out, int rank, const Shard& shard) {
    auto sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(
        out + "/logs/rank-" + std::to_string(rank) +
            (shard.count > 1 ? ".shard-" + std::to_string(shard.index) : std::string()) + ".log",
        false);
    sink->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [rank " + std::to_string(rank) + "] [%l] %v");
    auto logger = std::make_shared<spdlog::logger>("teap-rank", sink);
    logger->set_level(spdlog::get_level());
    logger->flush_on(spdlog::level::info);
    spdlog::set_default_logger(logger);
  }
  ~RankLog() { spdlog::set_default_logger(console); }
};

// The next unit for this group, or nothing when the plan is exhausted or a stop signal came (a
// signal ends the loop between units: the unit in flight was finished).
std::optional<int64_t> pull(const Plan& plan, const dist::Group& group, dist::Counter& next, bool& stopped) {
  int64_t stop = g_stop_signal.load() ? 1 : 0;
  group.sum(&stop, 1);
  if (stop) {
    stopped = true;
    return std::nullopt;
  }
  int64_t idx = group.leader() ? next.next() : -1;
  group.broadcast(idx);
  if (idx < 0 || idx >= static_cast<int64_t>(plan.pending.size())) return std::nullopt;
  return idx;
}

enum class Needs : int64_t { ready = 0, failed = 1, stopped = 2 };

// Waits until every unit `p` needs is published (another rank may still be running it). The
// leader looks at the folder and tells the group.
Needs wait_for_needs(const job::Job& job, const Plan& plan, const PlannedUnit& p, const dist::Group& group,
                     std::string& failed_unit) {
  if (p.needs.empty()) return Needs::ready;  // every member knows: no collective needed
  int64_t state = static_cast<int64_t>(Needs::ready);
  if (group.leader()) {
    for (const int32_t n : p.needs) {
      const UnitRef& u = plan.pending[n].unit;
      const std::string& cell = job.cells[u.cell].id;
      const std::string file = kind_unit_path(job.output, plan.kinds[u.kind].folder, cell, u.batch);
      const std::string note = failure_path(job.output, cell, u.batch, plan.kinds[u.kind].name);
      while (!fs::exists(file) && !fs::exists(note) && !g_stop_signal.load())
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
      if (g_stop_signal.load()) state = static_cast<int64_t>(Needs::stopped);
      else if (!fs::exists(file)) state = static_cast<int64_t>(Needs::failed), failed_unit = file;
      if (state != static_cast<int64_t>(Needs::ready)) break;
    }
  }
  group.broadcast(state);
  return static_cast<Needs>(state);
}

}  // namespace

int threads_per_rank(int job_threads, int ranks_on_node) {
  if (job_threads > 0) return job_threads;
  if (const char* s = std::getenv("SLURM_CPUS_PER_TASK")) {
    const int n = std::atoi(s);
    if (n > 0) return n;
  }
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return std::max(1, cores / std::max(1, ranks_on_node));
}

RunSummary run_sweep(const job::Job& job_as_read, const dist::Runtime& rt, const RunOptions& options) {
  const Shard shard = shard_of(options);
  std::optional<FolderLock> lock;  // rank 0's, for the whole run
  const PlanOutcome agreed = agree_on_plan(job_as_read, rt, options, shard, lock);
  const Plan& plan = agreed.plan;
  const job::Job job = with_weights_ids(job_as_read, agreed.weights_ids);
  RunSummary summary;
  summary.units_total = plan.total;
  summary.units_done_before = plan.done_before;
  summary.units_deferred = plan.deferred;
  const auto to_do = static_cast<int64_t>(plan.pending.size());
  if (options.dry_run) {
    if (rt.rank() == 0)
      std::printf("%zu cells, %lld of %lld units done, %lld to do\n", job.cells.size(),
                  static_cast<long long>(plan.done_before), static_cast<long long>(plan.total),
                  static_cast<long long>(to_do));
    return summary;
  }

  RankLog log(job.output, rt.rank(), shard);
  const int threads = threads_per_rank(job.settings.threads, rt.local_size());
  WorkspacePtr ws = make_workspace(threads, rt.local_size());
  spdlog::info("tinysql-eap {}: rank {} of {}, {} intra-op threads, group size {}, {} units pending of {}{}", TEAP_VERSION,
               rt.rank(), rt.size(), threads, job.settings.group_size, to_do, plan.total,
               shard.count > 1 ? " (shard " + std::to_string(shard.index) + "/" + std::to_string(shard.count) + ")"
                               : std::string());
  if (rt.rank() == 0)
    log.console->info("{} cells, {} units to do ({} done before), {} ranks x {} threads, log files in {}/logs",
                      job.cells.size(), to_do, plan.done_before, rt.size(), threads, job.output);
  for (int sig : {SIGTERM, SIGUSR1, SIGINT}) std::signal(sig, on_stop_signal);

  const dist::Group group(rt, job.settings.group_size);
  dist::Counter next(rt), finished(rt);
  const UnitEnv env{job, rt, group, threads};
  Progress progress;
  progress.to_do = to_do;
  progress.done_before = plan.done_before;
  progress.tty = isatty(fileno(stderr)) != 0;
  // Rank 0's progress line comes at least every 5 s, also while rank 0 runs a long unit itself.
  std::optional<ProgressTicker> ticker;
  if (rt.rank() == 0 && to_do > 0) {
    progress.report(0, false);
    ticker.emplace(progress, [&finished] { return finished.local_value(); });
  }
  int64_t my_done = 0, my_failed = 0, my_failed_input = 0;
  bool stopped = false;
  double seconds_waiting = 0, seconds_running = 0, seconds_publishing = 0;
  using Clock = std::chrono::steady_clock;
  const auto since = [](Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); };
  while (const auto idx = pull(plan, group, next, stopped)) {
    const PlannedUnit& p = plan.pending[*idx];
    const std::string& kind = plan.kinds[p.unit.kind].name;
    const std::string& cell = job.cells[p.unit.cell].id;
    spdlog::debug("takes unit {} of {}: {} {} batch {}{}", *idx + 1, to_do, kind, cell, p.unit.batch,
                  p.needs.empty() ? std::string() : ", needs " + std::to_string(p.needs.size()) + " units");
    std::string failed_unit;
    auto t0 = Clock::now();
    const Needs needs = wait_for_needs(job, plan, p, group, failed_unit);
    if (!p.needs.empty()) {
      seconds_waiting += since(t0);
      spdlog::debug("{} {} batch {}: waited {:.2f} s for the units it needs ({})", kind, cell, p.unit.batch, since(t0),
                    needs == Needs::ready ? "ready" : needs == Needs::failed ? "one failed" : "stopped");
    }
    if (needs == Needs::stopped) {
      stopped = true;
      break;
    }
    UnitOutcome outcome;
    t0 = Clock::now();
    if (needs == Needs::failed) outcome = UnitOutcome{UnitOutcome::Error::failure, "needs " + failed_unit + ", which failed", {}, {}, 0};
    else outcome = run_unit(env, *ws, plan, p.unit);
    seconds_running += since(t0);
    t0 = Clock::now();
    publish(job, plan, p.unit, outcome, group.leader());
    seconds_publishing += since(t0);
    spdlog::debug("{} {} batch {}: ran {:.3f} s, published {:.3f} s{}", kind, cell, p.unit.batch, outcome.seconds,
                  since(t0), group.leader() ? "" : " (not the group's leader: nothing written)");
    (outcome.error == UnitOutcome::Error::none ? my_done : my_failed) += 1;
    my_failed_input += outcome.error == UnitOutcome::Error::input;
    if (group.leader()) finished.next();
    if (rt.rank() == 0) progress.report(finished.peek(), false);
  }
  ticker.reset();
  spdlog::debug("rank {} time: {:.2f} s running units, {:.2f} s writing them, {:.2f} s waiting for units they need",
                rt.rank(), seconds_running, seconds_publishing, seconds_waiting);
  summary.units_done_now = rt.sum(group.leader() ? my_done : 0);
  summary.units_failed = rt.sum(group.leader() ? my_failed : 0);
  summary.units_failed_input = rt.sum(group.leader() ? my_failed_input : 0);
  // A signal that came after the last unit was taken stopped nothing.
  summary.interrupted = rt.any(stopped) && summary.units_done_now + summary.units_failed < to_do;
  if (rt.rank() == 0) progress.report(finished.peek(), true);  // every rank has finished: the count is final
  spdlog::info("rank {} finished: {} units done, {} failed{}", rt.rank(), my_done, my_failed,
               summary.interrupted ? " (stopped by a signal)" : "");
  return summary;
}

}  // namespace teap::runner
