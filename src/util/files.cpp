#include "util/files.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <unistd.h>

#include "util/error.hpp"

namespace teap {

std::string read_file(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) fail_input(path, "no such file");
  if (std::filesystem::is_directory(path, ec)) fail_input(path, "is a directory, expected a file");
  std::ifstream in(path, std::ios::binary);
  if (!in) fail_input(path, std::string("cannot open: ") + std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) fail_input(path, "read error");
  return ss.str();
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

}  // namespace teap
