#include "runner/folder.hpp"

#include <nlohmann/json.hpp>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>

#include <cstdio>
#include <filesystem>
#include <map>

#include "util/error.hpp"
#include "util/files.hpp"

namespace teap::runner {
namespace fs = std::filesystem;

namespace {
std::string batch_name(const char* pattern, int batch) {
  char name[32];
  std::snprintf(name, sizeof name, pattern, batch);
  return name;
}
}  // namespace

std::string kind_unit_path(const std::string& out, const std::string& folder, const std::string& cell_id, int batch) {
  return out + "/" + folder + "/" + cell_id + "/" + batch_name("b%05d.h5", batch);
}

std::string unit_path(const std::string& out, const std::string& cell_id, int batch) {
  return kind_unit_path(out, "units", cell_id, batch);
}

std::string failure_path(const std::string& out, const std::string& cell_id, int batch, const std::string& kind) {
  return out + "/failed/" + cell_id + (kind == "score" ? "" : "." + kind) + batch_name(".b%05d.txt", batch);
}

namespace {

// "host pid" of this process.
std::string holder_text() {
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  return std::string(host) + " " + std::to_string(getpid()) + "\n";
}

// Opens `path` and takes `how` without waiting; -1 when another process holds it.
int try_lock(const std::string& path, int how, const std::string& origin) {
  const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) throw InputError(origin + ": " + path + ": cannot be created (" + std::strerror(errno) + ")");
  if (flock(fd, how | LOCK_NB) == 0) return fd;
  close(fd);
  return -1;
}

std::string who_holds(const std::string& path) {
  std::ifstream in(path);
  std::string host, pid;
  if (in >> host >> pid) return "a run on host " + host + ", pid " + pid;
  return "the tasks of a job array (--shard)";
}

void write_holder(int fd) {
  const std::string text = holder_text();
  if (ftruncate(fd, 0) == 0 && pwrite(fd, text.data(), text.size(), 0) < 0) { /* the lock holds without it */ }
}

}  // namespace

FolderLock::FolderLock(const job::Job& job, const Shard& shard) {
  const std::string& out = job.output;
  std::error_code ec;
  fs::create_directories(out, ec);
  if (ec || !fs::is_directory(out))
    throw InputError(job.output_origin + ": " + out + ": the output folder cannot be created or written (" +
                     (ec ? ec.message() : std::string("not a folder")) + ")");
  const std::string main_lock = out + "/.lock";
  const std::string busy = ": this folder is in use by ";
  const std::string advice = "; wait for it to finish, or write to another output folder";
  if (shard.count == 1) {
    fd_ = try_lock(main_lock, LOCK_EX, job.output_origin);
    if (fd_ < 0) throw InputError(job.output_origin + ": " + out + busy + who_holds(main_lock) + advice);
    write_holder(fd_);
    return;
  }
  fd_ = try_lock(main_lock, LOCK_SH, job.output_origin);
  if (fd_ < 0) throw InputError(job.output_origin + ": " + out + busy + who_holds(main_lock) + advice);
  const std::string shard_lock = main_lock + ".shard-" + std::to_string(shard.index) + "-of-" + std::to_string(shard.count);
  shard_fd_ = try_lock(shard_lock, LOCK_EX, job.output_origin);
  if (shard_fd_ < 0) {
    close(fd_);
    fd_ = -1;
    throw InputError(job.output_origin + ": " + out + ": shard " + std::to_string(shard.index) + "/" +
                     std::to_string(shard.count) + " is already being run by " + who_holds(shard_lock) + advice);
  }
  write_holder(shard_fd_);
}

FolderLock::~FolderLock() {
  for (int fd : {shard_fd_, fd_})
    if (fd >= 0) {
      if (ftruncate(fd, 0) != 0) { /* a stale holder line only makes a later message less exact */ }
      close(fd);  // releases the lock
    }
}

std::string rejected_path(const std::string& out, const std::string& unit_file) {
  const fs::path rel = fs::path(unit_file).lexically_relative(out);
  return (fs::path(out) / "rejected" / rel).string();
}

void prepare_folder(const job::Job& job, const nlohmann::json& manifest, const FolderScan& scan, const Plan& plan,
                    const Shard& shard) {
  const std::string& out = job.output;
  std::error_code ec;
  std::vector<std::string> subs = {"", "units", "failed", "logs", "cells"};
  for (const auto& k : plan.kinds) subs.push_back(k.folder);
  // Every path in the way is found before anything is created.
  for (const auto& sub : subs) {
    const fs::path p = fs::path(out) / sub;
    if (fs::exists(p, ec) && !fs::is_directory(p, ec))
      throw InputError(job.output_origin + ": " + out + ": the output folder cannot be created or written (" +
                       p.lexically_normal().string() + " is a file, not a folder)");
  }
  for (const auto& sub : subs) {
    const fs::path p = fs::path(out) / sub;
    fs::create_directories(p, ec);
    if (!ec && !fs::is_directory(p)) ec = std::make_error_code(std::errc::not_a_directory);
    if (ec)
      throw InputError(job.output_origin + ": " + out + ": the output folder cannot be created or written (" +
                       p.lexically_normal().string() + ": " + ec.message() + ")");
  }
  if (access(out.c_str(), W_OK) != 0)
    throw InputError(job.output_origin + ": " + out + ": the output folder cannot be created or written (not writable)");
  write_file_atomic(out + "/sweep.json", manifest.dump(2) + "\n");
  write_file_atomic(out + "/job.toml", job.text);

  // Half-written files of a killed run never carry a final name; remove them (this shard's only:
  // another shard may be writing its own right now).
  std::map<std::string, int> cell_index;
  for (size_t c = 0; c < job.cells.size(); ++c) cell_index[job.cells[c].id] = static_cast<int>(c);
  for (const auto& k : plan.kinds) {
    for (const auto& e : fs::recursive_directory_iterator(fs::path(out) / k.folder)) {
      const std::string name = e.path().filename().string();
      if (!e.is_regular_file() || name.find(".tmp.") == std::string::npos) continue;
      if (shard.count > 1) {
        const auto it = cell_index.find(e.path().parent_path().filename().string());
        int b = -1;
        if (it == cell_index.end() || std::sscanf(name.c_str(), "b%d.h5", &b) != 1 ||
            !shard.has(UnitRef{0, it->second, b}, job.settings.batches))
          continue;
      }
      fs::remove(e.path());
    }
  }
  for (const auto& p : plan.pending)
    fs::remove(failure_path(out, job.cells[p.unit.cell].id, p.unit.batch, plan.kinds[p.unit.kind].name));

  for (const auto& problem : scan.problems) {
    if (!shard.has(problem.unit, job.settings.batches)) continue;
    std::string to = rejected_path(out, problem.path);
    fs::create_directories(fs::path(to).parent_path());
    for (int n = 1; fs::exists(to); ++n) to = rejected_path(out, problem.path) + "." + std::to_string(n);
    fs::rename(problem.path, to);
    std::fprintf(stderr, "tinysql-eap: %s unit file moved aside to %s, to be recomputed: %s\n",
                 problem.check.state == UnitState::damaged ? "damaged" : "foreign", to.c_str(), problem.check.why.c_str());
  }
}

}  // namespace teap::runner
