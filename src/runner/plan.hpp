// Owns the sweep's plan: which work units exist (kind x cell x batch), which are already published
// in the folder, which this run must do and in what order, and what each waits for. Plain data,
// no MPI and no model: rank 0 builds it and every rank receives the same copy as one message.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "job/job.hpp"

namespace teap::runner {

// A kind of work unit. Every kind has one unit per cell x batch index and its own folder of unit
// files; a kind with `after` set becomes available for a cell only once every unit of kind `after`
// of that cell is published (the evaluation of a circuit needs all of the cell's scores).
struct UnitKind {
  std::string name;     // "score", "evaluate"
  std::string folder;   // under the sweep folder: "units", "evaluation"
  int after = -1;       // index of the kind this one waits for, -1: none
};

// The kinds a job asks for, `score` first (index 0); `evaluate` (waits for `score`) when the job
// has an [evaluate] table that is on.
std::vector<UnitKind> unit_kinds(const job::Job& job);

struct UnitRef {
  int32_t kind = 0, cell = 0, batch = 0;
  bool operator==(const UnitRef& o) const { return kind == o.kind && cell == o.cell && batch == o.batch; }
};

// What the folder holds for one unit. Only a `published` unit is done: a damaged file (cut short,
// not a unit file) or a foreign one (another job's settings hash, cell or batch) is redone.
enum class UnitState : uint8_t { missing, published, damaged, foreign };

struct UnitCheck {
  UnitState state = UnitState::missing;
  std::string why;  // for damaged and foreign: what is wrong
};

// A unit file that is there but cannot be trusted.
struct UnitProblem {
  UnitRef unit;
  std::string path;
  UnitCheck check;
};

// What the folder holds: `state[k][c * n_batches + b]`.
struct FolderScan {
  int n_batches = 0;
  std::vector<std::vector<UnitState>> state;
  std::vector<UnitProblem> problems;  // damaged and foreign files, in scan order
  bool done(const UnitRef& u) const {
    return state[u.kind][static_cast<size_t>(u.cell) * n_batches + u.batch] == UnitState::published;
  }
  int done_in_cell(int kind, int cell) const;
};

// `inspect(kind, path, cell, batch)` says what the file at `path` is (tests give a fake folder;
// `inspect_file` reads the real one).
using Inspect = std::function<UnitCheck(const UnitKind& kind, const std::string& path, const job::Cell& cell, int batch)>;
FolderScan scan_folder(const std::string& out, const job::Job& job, const std::vector<UnitKind>& kinds,
                       const Inspect& inspect);

// The real inspection: missing, or the header of the unit file checked against the cell's id,
// settings hash and the batch index (io::read_unit_header).
UnitCheck inspect_unit_file(const std::string& path, const job::Cell& cell, int batch);
UnitCheck inspect_unit_file(const std::string& path, const std::string& cell_id, const std::string& settings_hash,
                            int batch);
// An evaluation file checked likewise, and against the cell's evaluation hash.
UnitCheck inspect_evaluation_file(const std::string& path, const std::string& cell_id, const std::string& settings_hash,
                                  const std::string& evaluation_hash, int batch);
// The file of a unit of `kind`, inspected by what that kind writes.
UnitCheck inspect_file(const UnitKind& kind, const std::string& path, const job::Cell& cell, int batch);

struct Shard {
  int index = 0, count = 1;
  // Units are dealt to shards by their ordinal within their kind: cell x batches + batch.
  bool has(const UnitRef& u, int n_batches) const {
    return (static_cast<int64_t>(u.cell) * n_batches + u.batch) % count == index;
  }
};

struct PlannedUnit {
  UnitRef unit;
  std::vector<int32_t> needs;  // indices into Plan::pending of units to be published first
};

struct Plan {
  std::vector<UnitKind> kinds;
  std::vector<PlannedUnit> pending;  // to do, in the order ranks pull them: kind by kind, then cell, batch
  int64_t total = 0;                 // units of this shard, every kind
  int64_t done_before = 0;           // of those, published before this run
  // Units of this shard left for a later run: they wait for units of another shard that are not
  // published yet (a job array's tasks do not see each other's progress).
  int64_t deferred = 0;
};

// The plan of a job against what the folder holds. Dependencies are on pending units only: a unit
// whose needs were all published before needs nothing.
Plan make_plan(const job::Job& job, const std::vector<UnitKind>& kinds, const FolderScan& scan, const Shard& shard);

// What rank 0 tells every rank once it has planned: the plan, or the error that stopped it with
// its kind kept (a user's mistake stays an InputError on every rank).
struct PlanOutcome {
  enum class Error { none, input, failure };
  Error error = Error::none;
  std::string message;
  Plan plan;
  std::vector<std::string> weights_ids;  // per cell: what its weights are (job::set_weights_id)
  void rethrow() const;  // throws the error as its kind; nothing when there is none
};

// The outcome as one structured message (MessagePack), and back; decode checks what it reads.
std::string encode_outcome(const PlanOutcome& outcome);
PlanOutcome decode_outcome(const std::string& bytes);

}  // namespace teap::runner
