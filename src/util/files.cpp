#include "util/files.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/error.hpp"

namespace teap {

namespace {

const char* file_kind(mode_t m) {
  if (S_ISDIR(m)) return "is a directory, expected a file";
  if (S_ISFIFO(m)) return "is a FIFO, expected a regular file";
  if (S_ISCHR(m)) return "is a character device, expected a regular file";
  if (S_ISBLK(m)) return "is a block device, expected a regular file";
  if (S_ISSOCK(m)) return "is a socket, expected a regular file";
  return "is not a regular file";
}

[[noreturn]] void fail_open(const std::string& path, int err) {
  if (err == ENOENT || err == ENOTDIR) fail_input(path, "no such file");
  fail_input(path, std::string("cannot open: ") + std::strerror(err));
}

void check_stat(const std::string& path, const struct stat& st, uint64_t max_bytes) {
  if (!S_ISREG(st.st_mode)) fail_input(path, file_kind(st.st_mode));
  if (static_cast<uint64_t>(st.st_size) > max_bytes)
    fail_input(path, human_bytes(static_cast<uint64_t>(st.st_size)) + ", more than the " + human_bytes(max_bytes) +
                         " a file of this kind may have");
}

}  // namespace

std::string human_bytes(uint64_t n) {
  const char* units[] = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  if (n < 1024) return std::to_string(n) + " bytes";
  double v = static_cast<double>(n);
  int u = 0;
  while (v >= 1024 && u < 6) {
    v /= 1024;
    ++u;
  }
  char b[32];
  std::snprintf(b, sizeof b, v == static_cast<double>(static_cast<uint64_t>(v)) ? "%.0f %s" : "%.1f %s", v, units[u]);
  return b;
}

uint64_t check_regular_file(const std::string& path, uint64_t max_bytes) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) fail_open(path, errno);
  check_stat(path, st, max_bytes);
  return static_cast<uint64_t>(st.st_size);
}

std::string read_file(const std::string& path, uint64_t max_bytes) {
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer, forever.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    const int err = errno;
    struct stat st {};
    if (err == EISDIR || (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)))
      fail_input(path, "is a directory, expected a file");
    fail_open(path, err);
  }
  struct FdCloser {
    int fd;
    ~FdCloser() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) fail_input(path, std::string("cannot stat: ") + std::strerror(errno));
  check_stat(path, st, max_bytes);
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  std::string out;
  out.reserve(static_cast<size_t>(st.st_size));
  char buf[1 << 16];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail_input(path, std::string("read error: ") + std::strerror(errno));
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    // The file may grow while it is read.
    if (out.size() > max_bytes)
      fail_input(path, "more than the " + human_bytes(max_bytes) + " a file of this kind may have");
  }
  return out;
}

std::string read_stream(std::FILE* in, const std::string& name, uint64_t max_bytes) {
  std::string out;
  char buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, in)) > 0) {
    out.append(buf, n);
    if (out.size() > max_bytes) fail_input(name, "more than the " + human_bytes(max_bytes) + " allowed");
  }
  if (std::ferror(in)) fail_input(name, "read error");
  return out;
}

void write_file_atomic(const std::string& path, const std::string& data) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) {
      const int e = errno;
      // A folder that is missing, a file, or not ours is a path the user gave: bad input.
      if (e == ENOTDIR || e == ENOENT || e == EACCES || e == EROFS || e == EISDIR)
        fail_input(path, std::string("cannot be written: ") + std::strerror(e));
      throw std::runtime_error(tmp + ": cannot create: " + std::strerror(e));
    }
    out.write(data.data(), static_cast<std::streamsize>(data.size()));
    out.flush();
    if (!out) {
      std::remove(tmp.c_str());
      throw std::runtime_error(tmp + ": write failed (disk full?)");
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::remove(tmp.c_str());
    if (ec == std::errc::is_a_directory || ec == std::errc::directory_not_empty || ec == std::errc::file_exists)
      fail_input(path, "cannot be written: a folder is in the way");
    throw std::runtime_error(path + ": cannot rename into place: " + ec.message());
  }
}

void write_if_changed(const std::string& path, const std::string& data) {
  std::error_code ec;
  if (std::filesystem::is_regular_file(path, ec) && std::filesystem::file_size(path, ec) == data.size() && !ec) {
    std::ifstream in(path, std::ios::binary);
    std::string old(data.size(), '\0');
    if (in.read(old.data(), static_cast<std::streamsize>(old.size())) && old == data) return;
  }
  write_file_atomic(path, data);
}

}  // namespace teap
