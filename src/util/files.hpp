// Owns reading whole files with errors that name the path.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

namespace teap {

// What may be read whole, by kind of file: far above any real file of that kind, far below the
// memory of a machine, so that a wrong path (a disk image, /dev/zero) fails at once instead of
// filling memory.
inline constexpr uint64_t kMaxSmallFile = uint64_t{1} << 20;  // config.json, a job file, a hub ref
inline constexpr uint64_t kMaxJsonFile = uint64_t{16} << 20;   // a manifest, a shard index, training.json
inline constexpr uint64_t kMaxDataFile = uint64_t{256} << 20;  // tokenizer.json, a result JSON, text
inline constexpr uint64_t kMaxHeader = uint64_t{100} << 20;    // a safetensors JSON header (as HF)

// Reads a whole regular file of at most `max_bytes`. A missing or unreadable file, a directory,
// a FIFO or device (which could block forever or never end), or a larger file is an InputError
// naming the path; nothing is read before the checks.
std::string read_file(const std::string& path, uint64_t max_bytes = kMaxDataFile);

// The size of `path` after checking that it is a regular file of at most `max_bytes` (an
// InputError naming it otherwise), for files that another library opens (HDF5, mmap).
uint64_t check_regular_file(const std::string& path, uint64_t max_bytes);

// Reads all of `in` (standard input), at most `max_bytes`; `name` is used in the error.
std::string read_stream(std::FILE* in, const std::string& name, uint64_t max_bytes);

// "1 MiB", "3.2 GiB": for messages about sizes.
std::string human_bytes(uint64_t n);

// Writes `data` to `path` atomically: written beside it under a temporary name, then renamed,
// so a crash never leaves a half-written file under the final name.
void write_file_atomic(const std::string& path, const std::string& data);

// write_file_atomic unless `path` is a regular file holding `data` already (a shared asset that
// every run would otherwise rewrite).
void write_if_changed(const std::string& path, const std::string& data);

}  // namespace teap
