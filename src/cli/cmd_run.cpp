// `tinysql-eap run JOB.toml` (under mpirun, srun or alone) and `tinysql-eap status OUT`.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>

#include "cli/commands.hpp"
#include "dist/dist.hpp"
#include "eap/quality.hpp"
#include "io/unit_file.hpp"
#include "job/job.hpp"
#include "runner/folder.hpp"
#include "runner/plan.hpp"
#include "runner/unit.hpp"
#include "runner/sweep.hpp"
#include "util/error.hpp"
#include "util/files.hpp"

namespace teap::cli {
namespace fs = std::filesystem;

namespace {
// This process's rank as mpirun or srun announce it, before MPI starts; -1 when not launched so.
int launcher_rank() {
  for (const char* v : {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"})
    if (const char* s = std::getenv(v)) return std::atoi(s);
  return -1;
}
}  // namespace

// The message of one failure note of the sweep ("input: MESSAGE"), for the run's last line.
static std::string first_input_failure(const std::string& out) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(out + "/failed", ec)) {
    std::ifstream in(e.path());
    std::string line;
    if (std::getline(in, line) && line.rfind("input: ", 0) == 0) return line.substr(7);
  }
  return "bad input";
}

Run add_run_command(CLI::App& app) {
  struct Args {
    std::string job;
    bool dry_run = false;
    std::string shard;  // "K/N"
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand("run", "Run a job's sweep (under mpirun/srun for many ranks); resumes what is missing");
  sub->add_option("JOB", a->job, "job file (TOML, see docs/jobs.md)")->required();
  sub->add_flag("--dry-run", a->dry_run, "print the cells and which are done; compute nothing");
  sub->add_option("--shard", a->shard,
                  "K/N: take only the units whose ordinal is K modulo N (disjoint shares for job-array tasks "
                  "that share the output folder but no MPI world)");
  return [a] {
    runner::RunOptions o;
    if (!a->shard.empty()) {
      int k = -1, n = 0;
      char rest = 0;
      if (std::sscanf(a->shard.c_str(), "%d/%d%c", &k, &n, &rest) != 2 || n < 1 || k < 0 || k >= n)
        throw InputError("--shard " + a->shard + ": expected K/N with 0 <= K < N");
      o.shard_index = k;
      o.shard_count = n;
    }
    // The job is read before MPI starts, so that a bad file fails alike on every rank; rank 0
    // alone says why.
    job::Job job;
    try {
      job = job::load_job(a->job);
    } catch (const InputError&) {
      if (launcher_rank() > 0) throw ReportedElsewhere(2);
      throw;
    }
    dist::Runtime rt(nullptr, nullptr);
    o.dry_run = a->dry_run;
    const runner::RunSummary s = runner::run_sweep(job, rt, o);
    if (rt.rank() == 0 && !o.dry_run) {
      std::printf("sweep %s: %lld units done now, %lld before, %lld failed, of %lld%s\n", job.output.c_str(),
                  static_cast<long long>(s.units_done_now), static_cast<long long>(s.units_done_before),
                  static_cast<long long>(s.units_failed), static_cast<long long>(s.units_total),
                  s.interrupted ? " (stopped by a signal: run again to resume)" : "");
      if (s.units_deferred)
        std::printf("%lld units wait for other shards' units: run this shard again once those are published\n",
                    static_cast<long long>(s.units_deferred));
      std::fflush(stdout);
    }
    if ((s.interrupted || s.units_failed) && rt.rank() != 0) throw ReportedElsewhere(1);
    if (s.interrupted) throw std::runtime_error("stopped by a signal before the sweep was complete");
    const std::string see = std::to_string(s.units_failed) + " unit(s) failed: see " + job.output + "/failed";
    // When every failure is the input's fault (weights that hold NaN, say), say why: exit 2.
    if (s.units_failed && s.units_failed == s.units_failed_input) throw InputError(first_input_failure(job.output) + " (" + see + ")");
    if (s.units_failed) throw std::runtime_error(see);
  };
}

Run add_status_command(CLI::App& app) {
  auto out = std::make_shared<std::string>();
  CLI::App* sub = app.add_subcommand("status", "Summarise a sweep folder: done, missing, failed, time spent");
  sub->add_option("OUT", *out, "sweep folder")->required();
  return [out] {
    const std::string manifest_path = *out + "/sweep.json";
    nlohmann::json m;
    try {
      m = nlohmann::json::parse(read_file(manifest_path, kMaxJsonFile));
    } catch (const nlohmann::json::exception& e) {
      fail_input(manifest_path, std::string("not a sweep manifest: ") + e.what());
    }
    if (!m.is_object() || !m.contains("cells") || !m["cells"].is_array())
      fail_input(manifest_path, "not a sweep manifest (no 'cells' list)");
    int64_t done = 0, missing = 0, failed = 0, damaged = 0, total = 0, cells_done = 0, flagged = 0;
    eap::QualityThresholds thresholds;  // the sweep's, from the job's [quality]
    if (m.contains("quality") && m["quality"].is_object())
      for (auto [key, slot] : {std::pair{"min_effect_vs_clean", &thresholds.min_effect_vs_clean},
                               std::pair{"min_effect_vs_spread", &thresholds.min_effect_vs_spread},
                               std::pair{"min_accuracy", &thresholds.min_accuracy}})
        if (m["quality"].contains(key) && m["quality"][key].is_number()) *slot = m["quality"][key].get<double>();
    double seconds = 0;
    std::vector<std::string> problems;
    struct Row {
      std::string id;
      int64_t done, failed, damaged, missing;
      int64_t evaluated;  // -1: the cell has no evaluation
    };
    int64_t evaluated = 0, to_evaluate = 0;
    std::vector<Row> rows;
    for (size_t i = 0; i < m["cells"].size(); ++i) {
      const nlohmann::json& c = m["cells"][i];
      const std::string where = manifest_path + ": cells[" + std::to_string(i) + "]";
      if (!c.is_object() || !c.contains("id") || !c["id"].is_string() || !c.contains("n_batches") ||
          !c["n_batches"].is_number_integer())
        fail_input(where, "not a cell (needs a string 'id' and an integer 'n_batches')");
      const std::string id = c["id"].get<std::string>();
      const int64_t n = c["n_batches"].get<int64_t>();
      if (id.empty() || id.find('/') != std::string::npos || id[0] == '.') fail_input(where + ".id", "'" + id + "' is not a cell id");
      if (n < 1 || n > job::kMaxBatches)
        fail_input(where + ".n_batches", std::to_string(n) + " is not a batch count (1.." + std::to_string(job::kMaxBatches) + ")");
      const std::string hash = c.value("settings_hash", "");
      int64_t d = 0, f = 0, bad = 0;
      std::vector<eap::BatchScores> batches;  // the cell's logit differences, for its quality
      for (int b = 0; b < n; ++b) {
        const std::string unit = runner::unit_path(*out, id, b);
        const runner::UnitCheck check = runner::inspect_unit_file(unit, id, hash, b);
        if (check.state == runner::UnitState::published) {
          ++d;
          try {
            auto u = io::read_unit(unit);
            if (u.real_attrs.count("seconds")) seconds += u.real_attrs.at("seconds");
            u.scores.clear();  // status needs the logit differences only
            u.scores.shrink_to_fit();
            batches.push_back(runner::batch_scores_of(std::move(u)));
          } catch (const InputError& e) {
            std::fprintf(stderr, "warning: %s\n", e.what());
          }
        } else if (check.state != runner::UnitState::missing) {
          ++bad;
          problems.push_back(std::string(check.state == runner::UnitState::damaged ? "damaged: " : "foreign: ") + check.why);
        } else if (fs::exists(runner::failure_path(*out, id, b))) {
          ++f;
        }
      }
      // Evaluation units (the job's [evaluate]): published files of the cell's evaluation hash.
      int64_t ev = -1;
      if (c.contains("evaluation_hash") && c["evaluation_hash"].is_string()) {
        ev = 0;
        for (int b = 0; b < n; ++b) {
          const std::string file = runner::kind_unit_path(*out, "evaluation", id, b);
          const runner::UnitCheck check =
              runner::inspect_evaluation_file(file, id, hash, c["evaluation_hash"].get<std::string>(), b);
          if (check.state == runner::UnitState::published) ++ev;
          else if (check.state != runner::UnitState::missing)
            problems.push_back(std::string(check.state == runner::UnitState::damaged ? "damaged: " : "foreign: ") + check.why);
        }
        evaluated += ev;
        to_evaluate += n;
      }
      rows.push_back({id, d, f, bad, n - d - f - bad, ev});
      if (d == n && static_cast<int64_t>(batches.size()) == n) {
        std::vector<const eap::BatchScores*> ptrs;
        for (const auto& b : batches) ptrs.push_back(&b);
        const eap::CellQuality q = eap::assess_cell(ptrs, thresholds);
        for (const auto& why : q.reasons) problems.push_back(id + ": flagged " + why);
        flagged += q.flagged();
      }
      done += d;
      failed += f;
      damaged += bad;
      missing += n - d - f - bad;
      total += n;
      cells_done += d == n;
    }
    // The damaged column appears when there is something to show in it.
    std::printf("%-48s %8s %8s %8s", "cell", "done", "failed", "missing");
    if (damaged) std::printf(" %8s", "damaged");
    if (to_evaluate) std::printf(" %9s", "evaluated");
    std::printf("\n");
    for (const Row& r : rows) {
      std::printf("%-48s %8lld %8lld %8lld", r.id.c_str(), static_cast<long long>(r.done), static_cast<long long>(r.failed),
                  static_cast<long long>(r.missing));
      if (damaged) std::printf(" %8lld", static_cast<long long>(r.damaged));
      if (to_evaluate) std::printf(" %9s", r.evaluated < 0 ? "-" : std::to_string(r.evaluated).c_str());
      std::printf("\n");
    }
    for (const auto& p : problems) std::printf("%s\n", p.c_str());
    const std::string bad =
        damaged ? ", " + std::to_string(damaged) + " damaged or foreign (run the job again to recompute them)" : "";
    std::printf("units: %lld done, %lld failed%s, %lld missing, of %lld; cells complete: %lld of %zu; compute time %.1f s\n",
                static_cast<long long>(done), static_cast<long long>(failed), bad.c_str(), static_cast<long long>(missing), static_cast<long long>(total), static_cast<long long>(cells_done),
                m["cells"].size(), seconds);
    if (to_evaluate)
      std::printf("evaluation units: %lld of %lld done\n", static_cast<long long>(evaluated),
                  static_cast<long long>(to_evaluate));
    if (flagged)
      std::printf("cells flagged: %lld of the complete ones (low_effect, low_accuracy or degenerate: see above)\n",
                  static_cast<long long>(flagged));
  };
}

}  // namespace teap::cli
