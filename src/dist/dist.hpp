// Owns inter-process communication: the MPI runtime, the shared work counter ranks pull units
// from, rank groups that share one unit, and the sums across a group (NCCL for CUDA buffers where
// NCCL was found at build time, MPI otherwise). Nothing else in the project calls MPI or NCCL.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace teap::dist {

// MPI's lifetime. Works under mpirun/srun and alone (a singleton world of one rank).
class Runtime {
 public:
  Runtime(int* argc, char*** argv);
  ~Runtime();
  Runtime(const Runtime&) = delete;
  int rank() const { return rank_; }
  int size() const { return size_; }
  int local_rank() const { return local_rank_; }  // among the ranks of this node
  int local_size() const { return local_size_; }
  void barrier() const;
  // Rank `root`'s string on every rank.
  void broadcast(std::string& s, int root = 0) const;
  // Logical OR / sum over all ranks.
  bool any(bool v) const;
  int64_t sum(int64_t v) const;
  // Ends every rank with this exit code (a fatal error on one rank).
  [[noreturn]] void abort(int code) const;

 private:
  int rank_ = 0, size_ = 1, local_rank_ = 0, local_size_ = 1;
};

// A counter on rank 0 that every rank can take the next value of atomically (MPI one-sided
// fetch-and-add): ranks pull work units without a coordinator, none idles while work is left.
class Counter {
 public:
  explicit Counter(const Runtime& rt);
  ~Counter();
  int64_t next();   // 0, 1, 2, ... in the order the ranks ask
  int64_t peek();   // the current value, without taking one
  // The current value read from rank 0's own memory, without MPI: safe from another thread of
  // rank 0 (a progress line) where the window's memory model is unified; -1 elsewhere.
  int64_t local_value() const;
 private:
  struct State;
  std::unique_ptr<State> s_;
};

// Ranks [g*G, (g+1)*G) of the world share one work unit. The group's rank 0 is its leader.
class Group {
 public:
  Group(const Runtime& rt, int group_size);
  ~Group();
  int rank() const { return rank_; }
  int size() const { return size_; }
  int index() const { return index_; }    // which group
  int count() const { return count_; }    // how many groups
  bool leader() const { return rank_ == 0; }
  void broadcast(int64_t& v) const;       // from the leader
  // In-place sum across the group. `on_cuda`: `data` is device memory (NCCL when built with it).
  void sum(float* data, size_t n, bool on_cuda) const;
  void sum(double* data, size_t n, bool on_cuda) const;
  void sum(int64_t* data, size_t n) const;
  // Concatenation of every member's values, in rank order.
  std::vector<double> gather(const std::vector<double>& mine) const;

 private:
  struct State;
  std::unique_ptr<State> s_;
  int rank_ = 0, size_ = 1, index_ = 0, count_ = 1;
};

// Whether CUDA buffers are summed with NCCL in this build.
bool nccl_available();

}  // namespace teap::dist
