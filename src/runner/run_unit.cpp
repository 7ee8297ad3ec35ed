#include "runner/run_unit.hpp"

#include <spdlog/spdlog.h>

#include <chrono>
#include <filesystem>

#include "runner/folder.hpp"
#include "util/error.hpp"
#include "util/files.hpp"

namespace teap::runner {

void UnitOutcome::fail(const std::exception& e) {
  error = dynamic_cast<const InputError*>(&e) ? Error::input : Error::failure;
  message = e.what();
}
namespace fs = std::filesystem;

UnitOutcome run_unit(const UnitEnv& env, Workspace& ws, const Plan& plan, const UnitRef& unit) {
  const std::string& kind = plan.kinds.at(unit.kind).name;
  if (kind == "score") return run_score_unit(env, ws, unit);
  if (kind == "evaluate") return run_evaluate_unit(env, ws, unit);
  UnitOutcome o;
  o.error = UnitOutcome::Error::failure;
  o.message = "no runner for units of kind '" + kind + "'";
  return o;
}

void publish(const job::Job& job, const Plan& plan, const UnitRef& unit, const UnitOutcome& outcome, bool leader) {
  const std::string& cell = job.cells[unit.cell].id;
  const UnitKind& kind = plan.kinds[unit.kind];
  if (outcome.error == UnitOutcome::Error::none) {
    if (!outcome.record && !outcome.evaluation) return;  // not the group's leader
    const auto t0 = std::chrono::steady_clock::now();
    const std::string path = kind_unit_path(job.output, kind.folder, cell, unit.batch);
    fs::create_directories(fs::path(path).parent_path());
    auto write_seconds = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
    if (outcome.record) {
      io::write_unit(path, *outcome.record);
      const auto& r = *outcome.record;
      spdlog::info("unit {} batch {} done in {:.2f} s (write {:.3f} s), clean accuracy {:.3f}", cell, unit.batch,
                   outcome.seconds, write_seconds(), r.n_prompts ? double(r.clean_correct) / r.n_prompts : 0.0);
    } else {
      io::write_evaluation(path, *outcome.evaluation);
      const auto& e = *outcome.evaluation;
      spdlog::info("evaluation {} batch {} done in {:.2f} s (write {:.3f} s): {} circuits{}", cell, unit.batch,
                   outcome.seconds, write_seconds(), e.n_circuits(),
                   e.no_faithfulness.empty() ? std::string() : " (no F: " + e.no_faithfulness + ")");
    }
    return;
  }
  spdlog::error("{} unit {} batch {} failed: {}", kind.name, cell, unit.batch, outcome.message);
  if (!leader) return;
  std::error_code ec;
  fs::create_directories(job.output + "/failed", ec);
  write_file_atomic(failure_path(job.output, cell, unit.batch, kind.name),
                    std::string(outcome.error == UnitOutcome::Error::input ? "input: " : "failure: ") + outcome.message +
                        "\n");
}

}  // namespace teap::runner
