// Owns running one pulled work unit by its kind, and publishing what it gave: the unit file under
// its final name, or a failure note that keeps the error's kind. A new kind of unit is a new case
// of `run_unit` with a file of its own (score_unit.cpp for `score`); the loop does not change.
#pragma once

#include <exception>
#include <memory>
#include <optional>
#include <string>

#include "io/evaluation_file.hpp"
#include "io/unit_file.hpp"
#include "job/job.hpp"
#include "runner/plan.hpp"

namespace teap::dist {
class Runtime;
class Group;
}  // namespace teap::dist

namespace teap::runner {

// What a rank keeps between units: the loaded model and tokenizer (LibTorch inside), reused while
// consecutive units use the same ones.
struct Workspace;
struct WorkspaceDeleter {
  void operator()(Workspace* w) const;
};
using WorkspacePtr = std::unique_ptr<Workspace, WorkspaceDeleter>;
// Sets the rank's intra-op thread count and flushes denormals on its threads. With more than one
// rank on the node, weights stored in another dtype than the run's are converted once per node
// (model::default_convert_cache) and mapped by every rank.
WorkspacePtr make_workspace(int threads, int ranks_on_node = 1);

struct UnitEnv {
  const job::Job& job;
  const dist::Runtime& rt;
  const dist::Group& group;  // the ranks sharing each unit; every member runs it
  int threads = 1;
};

struct UnitOutcome {
  enum class Error { none, input, failure };
  Error error = Error::none;
  std::string message;
  // On the group's leader, when the unit succeeded: what it publishes (one of them, by its kind).
  std::optional<io::UnitRecord> record;
  std::optional<io::EvaluationRecord> evaluation;
  double seconds = 0;
  // Records `e` as the unit's error: `input` for an InputError (a bad file or setting), else `failure`.
  void fail(const std::exception& e);
};

// Runs `unit` (every member of the group calls this; members agree on success or failure).
// Never throws: an error is returned with its kind.
UnitOutcome run_unit(const UnitEnv& env, Workspace& ws, const Plan& plan, const UnitRef& unit);

// The `score` kind: one batch's scores (score_unit.cpp).
UnitOutcome run_score_unit(const UnitEnv& env, Workspace& ws, const UnitRef& unit);
// The `evaluate` kind: one batch run with each of its cell's circuits (evaluate_unit.cpp).
UnitOutcome run_evaluate_unit(const UnitEnv& env, Workspace& ws, const UnitRef& unit);

// The group's leader writes the unit file (atomically, under its kind's folder) or the failure
// note; every member logs the failure.
void publish(const job::Job& job, const Plan& plan, const UnitRef& unit, const UnitOutcome& outcome, bool leader);

}  // namespace teap::runner
