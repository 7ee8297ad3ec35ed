// Owns reading whole files with errors that name the path.
#pragma once

#include <string>

namespace teap {

// Reads a whole file; a missing or unreadable file is an InputError naming the path.
std::string read_file(const std::string& path);

// Writes `data` to `path` atomically: written beside it under a temporary name, then renamed,
// so a crash never leaves a half-written file under the final name.
void write_file_atomic(const std::string& path, const std::string& data);

}  // namespace teap
