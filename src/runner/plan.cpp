#include "runner/plan.hpp"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <stdexcept>

#include "io/evaluation_file.hpp"
#include "io/unit_file.hpp"

#include "runner/folder.hpp"
#include "util/error.hpp"

namespace teap::runner {
using nlohmann::json;

std::vector<UnitKind> unit_kinds(const job::Job& job) {
  std::vector<UnitKind> kinds = {UnitKind{"score", "units", -1}};
  if (job.evaluate.enabled) kinds.push_back(UnitKind{"evaluate", "evaluation", 0});
  return kinds;
}

int FolderScan::done_in_cell(int kind, int cell) const {
  int n = 0;
  for (int b = 0; b < n_batches; ++b) n += done(UnitRef{kind, cell, b});
  return n;
}

FolderScan scan_folder(const std::string& out, const job::Job& job, const std::vector<UnitKind>& kinds,
                       const Inspect& inspect) {
  FolderScan scan;
  scan.n_batches = job.settings.batches;
  for (int k = 0; k < static_cast<int>(kinds.size()); ++k) {
    std::vector<UnitState> state(job.cells.size() * static_cast<size_t>(scan.n_batches));
    for (size_t c = 0; c < job.cells.size(); ++c) {
      for (int b = 0; b < scan.n_batches; ++b) {
        const std::string path = kind_unit_path(out, kinds[k].folder, job.cells[c].id, b);
        UnitCheck check = inspect(kinds[k], path, job.cells[c], b);
        state[c * scan.n_batches + b] = check.state;
        if (check.state == UnitState::damaged || check.state == UnitState::foreign)
          scan.problems.push_back(UnitProblem{UnitRef{k, static_cast<int32_t>(c), b}, path, std::move(check)});
      }
    }
    scan.state.push_back(std::move(state));
  }
  return scan;
}

UnitCheck inspect_unit_file(const std::string& path, const std::string& cell_id, const std::string& settings_hash,
                            int batch) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return {};
  io::UnitHeader h;
  try {
    h = io::read_unit_header(path);
  } catch (const InputError& e) {
    return UnitCheck{UnitState::damaged, e.what()};
  }
  if (h.cell_id != cell_id)
    return UnitCheck{UnitState::foreign, path + ": holds cell " + h.cell_id + ", not " + cell_id};
  if (h.batch_index != batch)
    return UnitCheck{UnitState::foreign,
                     path + ": holds batch " + std::to_string(h.batch_index) + ", not " + std::to_string(batch)};
  if (!settings_hash.empty() && h.settings_hash != settings_hash)  // a manifest older than the hash cannot tell
    return UnitCheck{UnitState::foreign, path + ": settings_hash " + h.settings_hash + " is not the sweep's " +
                                             settings_hash + " (a unit of another job)"};
  return UnitCheck{UnitState::published, ""};
}

UnitCheck inspect_unit_file(const std::string& path, const job::Cell& cell, int batch) {
  return inspect_unit_file(path, cell.id, cell.hash, batch);
}

UnitCheck inspect_evaluation_file(const std::string& path, const std::string& cell_id, const std::string& settings_hash,
                                  const std::string& evaluation_hash, int batch) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return {};
  io::EvaluationHeader h;
  try {
    h = io::read_evaluation_header(path);
  } catch (const InputError& e) {
    return UnitCheck{UnitState::damaged, e.what()};
  }
  if (h.cell_id != cell_id) return UnitCheck{UnitState::foreign, path + ": holds cell " + h.cell_id + ", not " + cell_id};
  if (h.batch_index != batch)
    return UnitCheck{UnitState::foreign,
                     path + ": holds batch " + std::to_string(h.batch_index) + ", not " + std::to_string(batch)};
  if (h.settings_hash != settings_hash)
    return UnitCheck{UnitState::foreign, path + ": settings_hash " + h.settings_hash + " is not the sweep's " + settings_hash};
  if (!evaluation_hash.empty() && h.evaluation_hash != evaluation_hash)
    return UnitCheck{UnitState::foreign, path + ": evaluation_hash " + h.evaluation_hash + " is not the job's " +
                                             evaluation_hash + " (another [evaluate] table)"};
  return UnitCheck{UnitState::published, ""};
}

UnitCheck inspect_file(const UnitKind& kind, const std::string& path, const job::Cell& cell, int batch) {
  if (kind.name == "evaluate") return inspect_evaluation_file(path, cell.id, cell.hash, cell.evaluation_hash, batch);
  return inspect_unit_file(path, cell, batch);
}

Plan make_plan(const job::Job& job, const std::vector<UnitKind>& kinds, const FolderScan& scan, const Shard& shard) {
  Plan plan;
  plan.kinds = kinds;
  const int n_cells = static_cast<int>(job.cells.size()), n_batches = job.settings.batches;
  // Where each pending unit sits in `pending`, -1 when it is not pending.
  std::vector<std::vector<int32_t>> slot(kinds.size(), std::vector<int32_t>(size_t(n_cells) * n_batches, -1));
  for (int k = 0; k < static_cast<int>(kinds.size()); ++k) {
    const int after = kinds[k].after;
    if (after >= k) throw std::logic_error("unit kind " + kinds[k].name + " waits for a kind planned after it");
    for (int c = 0; c < n_cells; ++c) {
      // A dependent kind needs every unit of `after` in the cell, whichever shard it belongs to.
      std::vector<int32_t> needs;
      bool blocked = false;
      if (after >= 0)
        for (int b = 0; b < n_batches; ++b) {
          const UnitRef dep{after, c, b};
          if (scan.done(dep)) continue;
          const int32_t s = slot[after][size_t(c) * n_batches + b];
          if (s < 0) blocked = true;  // another shard's, not published yet
          else needs.push_back(s);
        }
      for (int b = 0; b < n_batches; ++b) {
        const UnitRef u{k, c, b};
        if (!shard.has(u, n_batches)) continue;
        ++plan.total;
        if (scan.done(u)) {
          ++plan.done_before;
          continue;
        }
        if (blocked) {
          ++plan.deferred;
          continue;
        }
        slot[k][size_t(c) * n_batches + b] = static_cast<int32_t>(plan.pending.size());
        plan.pending.push_back(PlannedUnit{u, needs});
      }
    }
  }
  return plan;
}

void PlanOutcome::rethrow() const {
  if (error == Error::input) throw InputError(message);
  if (error == Error::failure) throw std::runtime_error(message);
}

std::string encode_outcome(const PlanOutcome& o) {
  json kinds = json::array(), units = json::array();
  for (const auto& k : o.plan.kinds) kinds.push_back({k.name, k.folder, k.after});
  for (const auto& p : o.plan.pending) units.push_back({p.unit.kind, p.unit.cell, p.unit.batch, p.needs});
  const json j = {{"error", static_cast<int>(o.error)},
                  {"message", o.message},
                  {"kinds", kinds},
                  {"pending", units},
                  {"total", o.plan.total},
                  {"done_before", o.plan.done_before},
                  {"deferred", o.plan.deferred},
                  {"weights_ids", o.weights_ids}};
  const std::vector<std::uint8_t> bytes = json::to_msgpack(j);
  return std::string(bytes.begin(), bytes.end());
}

PlanOutcome decode_outcome(const std::string& bytes) {
  PlanOutcome o;
  try {
    const json j = json::from_msgpack(bytes);
    const int error = j.at("error").get<int>();
    if (error < 0 || error > 2) throw std::runtime_error("unknown error kind");
    o.error = static_cast<PlanOutcome::Error>(error);
    o.message = j.at("message").get<std::string>();
    for (const auto& k : j.at("kinds")) o.plan.kinds.push_back(UnitKind{k.at(0), k.at(1), k.at(2)});
    for (const auto& u : j.at("pending")) {
      PlannedUnit p{UnitRef{u.at(0), u.at(1), u.at(2)}, u.at(3).get<std::vector<int32_t>>()};
      if (p.unit.kind < 0 || p.unit.kind >= static_cast<int32_t>(o.plan.kinds.size()))
        throw std::runtime_error("unit of unknown kind");
      o.plan.pending.push_back(std::move(p));
    }
    o.plan.total = j.at("total");
    o.plan.done_before = j.at("done_before");
    o.plan.deferred = j.at("deferred");
    o.weights_ids = j.at("weights_ids").get<std::vector<std::string>>();
  } catch (const json::exception& e) {
    throw std::runtime_error(std::string("plan message from rank 0 is malformed: ") + e.what());
  }
  return o;
}

}  // namespace teap::runner
