// Owns the sweep folder's layout and its preparation before work: where a unit file and a failure
// note live, creating the folders, writing the manifest and the job, and removing what a killed
// run left half-written. No MPI and no model: rank 0 calls these, tests call them on a temp folder.
#pragma once

#include <string>

#include <nlohmann/json_fwd.hpp>

#include "job/job.hpp"
#include "runner/plan.hpp"

namespace teap::runner {

// The unit file of (cell, batch) of a kind whose files live in `folder`, under `out`.
std::string kind_unit_path(const std::string& out, const std::string& folder, const std::string& cell_id, int batch);
// The score unit file of (cell, batch) under `out`.
std::string unit_path(const std::string& out, const std::string& cell_id, int batch);
// The failure note of (cell, batch) under `out`; kinds after `score` add their name.
std::string failure_path(const std::string& out, const std::string& cell_id, int batch, const std::string& kind = "score");

// Creates the folder's subfolders, writes `manifest` (sweep.json) and the job text, removes this
// shard's temporary files of a killed run and the failure notes of the units about to be redone,
// and moves this shard's damaged and foreign unit files aside to OUT/rejected/ (saying so), so that
// they are recomputed and never read again. A folder that cannot be created or written is an
// InputError naming the job's `output` or the path in the way.
void prepare_folder(const job::Job& job, const nlohmann::json& manifest, const FolderScan& scan, const Plan& plan,
                    const Shard& shard);

// Held by rank 0 while a run works in a folder: a second run into the same folder (or the same
// shard of it) is refused with an InputError naming the first's host and pid. Shards of one job
// array (--shard K/N) share the folder with each other but not with an unsharded run.
class FolderLock {
 public:
  FolderLock(const job::Job& job, const Shard& shard);
  FolderLock(FolderLock&& o) noexcept : fd_(o.fd_), shard_fd_(o.shard_fd_) { o.fd_ = o.shard_fd_ = -1; }
  FolderLock(const FolderLock&) = delete;
  ~FolderLock();

 private:
  int fd_ = -1, shard_fd_ = -1;
};
inline FolderLock lock_folder(const job::Job& job, const Shard& shard) { return FolderLock(job, shard); }

// Where prepare_folder moves a rejected unit file.
std::string rejected_path(const std::string& out, const std::string& unit_file);

}  // namespace teap::runner
