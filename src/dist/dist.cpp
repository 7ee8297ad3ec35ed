#include "dist/dist.hpp"

#include <mpi.h>

#include <stdexcept>
#include <type_traits>

#ifdef TEAP_HAVE_NCCL
#include <cuda_runtime.h>
#include <nccl.h>
#endif

namespace teap::dist {
namespace {

void check(int rc, const char* what) {
  if (rc != MPI_SUCCESS) {
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    throw std::runtime_error(std::string("MPI ") + what + ": " + std::string(msg, len));
  }
}

}  // namespace

Runtime::Runtime(int* argc, char*** argv) {
  int inited = 0;
  MPI_Initialized(&inited);
  if (!inited) check(MPI_Init(argc, argv), "init");
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
  MPI_Comm node;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node);
  MPI_Comm_rank(node, &local_rank_);
  MPI_Comm_size(node, &local_size_);
  MPI_Comm_free(&node);
}

Runtime::~Runtime() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

void Runtime::barrier() const { check(MPI_Barrier(MPI_COMM_WORLD), "barrier"); }

void Runtime::broadcast(std::string& s, int root) const {
  int64_t n = static_cast<int64_t>(s.size());
  check(MPI_Bcast(&n, 1, MPI_INT64_T, root, MPI_COMM_WORLD), "broadcast");
  s.resize(static_cast<size_t>(n));
  if (n) check(MPI_Bcast(s.data(), static_cast<int>(n), MPI_CHAR, root, MPI_COMM_WORLD), "broadcast");
}

bool Runtime::any(bool v) const {
  int in = v ? 1 : 0, out = 0;
  check(MPI_Allreduce(&in, &out, 1, MPI_INT, MPI_LOR, MPI_COMM_WORLD), "allreduce");
  return out != 0;
}

int64_t Runtime::sum(int64_t v) const {
  int64_t out = 0;
  check(MPI_Allreduce(&v, &out, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD), "allreduce");
  return out;
}

void Runtime::abort(int code) const {
  MPI_Abort(MPI_COMM_WORLD, code);
  std::exit(code);
}

struct Counter::State {
  MPI_Win win = MPI_WIN_NULL;
  int64_t* base = nullptr;
  bool local_readable = false;  // rank 0, unified memory model: loads see the window's value
};

Counter::Counter(const Runtime& rt) : s_(std::make_unique<State>()) {
  const MPI_Aint bytes = rt.rank() == 0 ? sizeof(int64_t) : 0;
  check(MPI_Win_allocate(bytes, sizeof(int64_t), MPI_INFO_NULL, MPI_COMM_WORLD, &s_->base, &s_->win), "window");
  if (rt.rank() == 0) {
    MPI_Win_lock(MPI_LOCK_EXCLUSIVE, 0, 0, s_->win);
    *s_->base = 0;
    MPI_Win_unlock(0, s_->win);
    int* model = nullptr;
    int flag = 0;
    MPI_Win_get_attr(s_->win, MPI_WIN_MODEL, &model, &flag);
    s_->local_readable = flag && model && *model == MPI_WIN_UNIFIED;
  }
  rt.barrier();
}

Counter::~Counter() {
  if (s_->win != MPI_WIN_NULL) MPI_Win_free(&s_->win);
}

int64_t Counter::next() {
  const int64_t one = 1;
  int64_t got = 0;
  MPI_Win_lock(MPI_LOCK_SHARED, 0, 0, s_->win);
  check(MPI_Fetch_and_op(&one, &got, MPI_INT64_T, 0, 0, MPI_SUM, s_->win), "fetch-and-add");
  MPI_Win_unlock(0, s_->win);
  return got;
}

int64_t Counter::peek() {
  int64_t got = 0;
  MPI_Win_lock(MPI_LOCK_SHARED, 0, 0, s_->win);
  check(MPI_Fetch_and_op(nullptr, &got, MPI_INT64_T, 0, 0, MPI_NO_OP, s_->win), "fetch");
  MPI_Win_unlock(0, s_->win);
  return got;
}

int64_t Counter::local_value() const {
  if (!s_->local_readable) return -1;
  return __atomic_load_n(s_->base, __ATOMIC_ACQUIRE);
}

struct Group::State {
  MPI_Comm comm = MPI_COMM_NULL;
  void* nccl = nullptr;  // the group's ncclComm_t, made on first use (NCCL builds only)
};

Group::Group(const Runtime& rt, int group_size) : s_(std::make_unique<State>()) {
  if (group_size < 1 || rt.size() % group_size != 0)
    throw std::invalid_argument("group_size " + std::to_string(group_size) + " does not divide the " +
                                std::to_string(rt.size()) + " ranks");
  index_ = rt.rank() / group_size;
  count_ = rt.size() / group_size;
  check(MPI_Comm_split(MPI_COMM_WORLD, index_, rt.rank(), &s_->comm), "split");
  MPI_Comm_rank(s_->comm, &rank_);
  MPI_Comm_size(s_->comm, &size_);
}

Group::~Group() {
#ifdef TEAP_HAVE_NCCL
  if (s_->nccl) ncclCommDestroy(static_cast<ncclComm_t>(s_->nccl));
#endif
  if (s_->comm != MPI_COMM_NULL) MPI_Comm_free(&s_->comm);
}

void Group::broadcast(int64_t& v) const { check(MPI_Bcast(&v, 1, MPI_INT64_T, 0, s_->comm), "broadcast"); }

#ifdef TEAP_HAVE_NCCL
namespace {
void nccl_check(ncclResult_t r, const char* what) {
  if (r != ncclSuccess) throw std::runtime_error(std::string("NCCL ") + what + ": " + ncclGetErrorString(r));
}
// The group's NCCL communicator, made on first use (its id travels over MPI).
ncclComm_t nccl_comm(MPI_Comm comm, void*& cached) {
  if (cached) return static_cast<ncclComm_t>(cached);
  int rank = 0, size = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  ncclUniqueId id;
  if (rank == 0) nccl_check(ncclGetUniqueId(&id), "unique id");
  check(MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, comm), "broadcast");
  ncclComm_t made = nullptr;
  nccl_check(ncclCommInitRank(&made, size, id, rank), "init");
  cached = made;
  return made;
}
}  // namespace
#endif

namespace {

// In-place sum over `comm` (NCCL for device buffers where built with it, MPI on the host).
template <class T>
void group_sum(T* data, size_t n, bool on_cuda, MPI_Comm comm, [[maybe_unused]] void*& nccl) {
  constexpr bool is_double = std::is_same_v<T, double>;
#ifdef TEAP_HAVE_NCCL
  if (on_cuda) {
    cudaDeviceSynchronize();  // the scores were written on the device's streams
    ncclComm_t nc = nccl_comm(comm, nccl);
    nccl_check(ncclAllReduce(data, data, n, is_double ? ncclFloat64 : ncclFloat32, ncclSum, nc, nullptr), "all-reduce");
    cudaStreamSynchronize(nullptr);
    return;
  }
#else
  if (on_cuda) throw std::runtime_error("rank groups on CUDA need NCCL, which this build lacks");
#endif
  check(MPI_Allreduce(MPI_IN_PLACE, data, static_cast<int>(n), is_double ? MPI_DOUBLE : MPI_FLOAT, MPI_SUM, comm),
        "allreduce");
}

}  // namespace

void Group::sum(float* data, size_t n, bool on_cuda) const {
  if (size_ > 1 && n > 0) group_sum(data, n, on_cuda, s_->comm, s_->nccl);
}

void Group::sum(double* data, size_t n, bool on_cuda) const {
  if (size_ > 1 && n > 0) group_sum(data, n, on_cuda, s_->comm, s_->nccl);
}

void Group::sum(int64_t* data, size_t n) const {
  if (size_ == 1 || n == 0) return;
  check(MPI_Allreduce(MPI_IN_PLACE, data, static_cast<int>(n), MPI_INT64_T, MPI_SUM, s_->comm), "allreduce");
}

std::vector<double> Group::gather(const std::vector<double>& mine) const {
  if (size_ == 1) return mine;
  int n = static_cast<int>(mine.size());
  std::vector<int> counts(size_), offsets(size_);
  check(MPI_Allgather(&n, 1, MPI_INT, counts.data(), 1, MPI_INT, s_->comm), "allgather");
  int total = 0;
  for (int r = 0; r < size_; ++r) {
    offsets[r] = total;
    total += counts[r];
  }
  std::vector<double> all(total);
  check(MPI_Allgatherv(mine.data(), n, MPI_DOUBLE, all.data(), counts.data(), offsets.data(), MPI_DOUBLE, s_->comm),
        "allgatherv");
  return all;
}

bool nccl_available() {
#ifdef TEAP_HAVE_NCCL
  return true;
#else
  return false;
#endif
}

}  // namespace teap::dist
