// Owns running a job: plan (plan.hpp) -> prepare the folder (folder.hpp, manifest.hpp) -> ranks
// pull units -> run each by its kind (run_unit.hpp) -> publish -> report progress (progress.hpp),
// and stopping cleanly on a pre-emption signal. One work unit = one kind x cell x batch index,
// written as one HDF5 file.
#pragma once

#include <string>
#include <vector>

#include "job/job.hpp"

namespace teap::dist {
class Runtime;
}

namespace teap::runner {

struct RunOptions {
  bool dry_run = false;  // print the cells and which are done; compute nothing
  // Take only the units whose ordinal (cell index in grid order x batches + batch) is
  // shard_index modulo shard_count: disjoint shares for runs that share no MPI world (job arrays).
  int shard_index = 0, shard_count = 1;
};

struct RunSummary {
  int64_t units_total = 0, units_done_before = 0, units_done_now = 0, units_failed = 0;
  int64_t units_failed_input = 0;  // of the failed, those whose cause is bad input (a model's NaN weights)
  int64_t units_deferred = 0;  // waiting for another shard's units (run again once they are published)
  bool interrupted = false;  // stopped by a signal before all work was done
};

// Every rank calls this. Bad input (a sweep folder holding another job's results, a model that
// cannot be found) is an InputError on every rank, before anything is written.
RunSummary run_sweep(const job::Job& job, const dist::Runtime& rt, const RunOptions& options);

// Thread count for one rank: the job's, else SLURM_CPUS_PER_TASK, else the node's cores shared
// among its ranks.
int threads_per_rank(int job_threads, int ranks_on_node);

}  // namespace teap::runner
