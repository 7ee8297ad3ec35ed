// `tinysql-eap run JOB.toml` (under mpirun, srun or alone) and `tinysql-eap status OUT`.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>

#include "cli/commands.hpp"
#include "dist/dist.hpp"
#include "io/unit_file.hpp"
#include "job/job.hpp"
#include "runner/sweep.hpp"
#include "util/error.hpp"
#include "util/files.hpp"

namespace teap::cli {
namespace fs = std::filesystem;

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
    // The job is read before MPI starts, so that a bad file fails alike on every rank.
    const job::Job job = job::load_job(a->job);
    dist::Runtime rt(nullptr, nullptr);
    o.dry_run = a->dry_run;
    const runner::RunSummary s = runner::run_sweep(job, rt, o);
    if (rt.rank() == 0 && !o.dry_run) {
      std::printf("sweep %s: %lld units done now, %lld before, %lld failed, of %lld%s\n", job.output.c_str(),
                  static_cast<long long>(s.units_done_now), static_cast<long long>(s.units_done_before),
                  static_cast<long long>(s.units_failed), static_cast<long long>(s.units_total),
                  s.interrupted ? " (stopped by a signal: run again to resume)" : "");
      std::fflush(stdout);
    }
    if (s.interrupted) throw std::runtime_error("stopped by a signal before the sweep was complete");
    if (s.units_failed) throw std::runtime_error(std::to_string(s.units_failed) + " unit(s) failed: see " + job.output + "/failed");
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
    int64_t done = 0, missing = 0, failed = 0, total = 0, cells_done = 0;
    double seconds = 0;
    std::printf("%-48s %8s %8s %8s\n", "cell", "done", "failed", "missing");
    for (const auto& c : m.value("cells", nlohmann::json::array())) {
      const std::string id = c.value("id", "");
      const int n = c.value("n_batches", 0);
      int d = 0, f = 0;
      for (int b = 0; b < n; ++b) {
        const std::string unit = runner::unit_path(*out, id, b);
        if (fs::exists(unit)) {
          ++d;
          try {
            const auto u = io::read_unit(unit);
            if (u.real_attrs.count("seconds")) seconds += u.real_attrs.at("seconds");
          } catch (const InputError& e) {
            std::fprintf(stderr, "warning: %s\n", e.what());
          }
        } else if (fs::exists(runner::failure_path(*out, id, b))) {
          ++f;
        }
      }
      std::printf("%-48s %8d %8d %8d\n", id.c_str(), d, f, n - d - f);
      done += d;
      failed += f;
      missing += n - d - f;
      total += n;
      cells_done += d == n;
    }
    std::printf("units: %lld done, %lld failed, %lld missing, of %lld; cells complete: %lld of %zu; compute time %.1f s\n",
                static_cast<long long>(done), static_cast<long long>(failed), static_cast<long long>(missing),
                static_cast<long long>(total), static_cast<long long>(cells_done), m.value("cells", nlohmann::json::array()).size(),
                seconds);
  };
}

}  // namespace teap::cli
