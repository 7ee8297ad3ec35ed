// Owns the project's error vocabulary: a user's mistake (bad file, key, value, flag) is an
// InputError and exits 2 with its one-line message; anything else exits 1 (see src/cli/main.cpp).
#pragma once

#include <stdexcept>
#include <string>

namespace teap {

struct InputError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// An error another process (MPI rank 0) has already reported: exit with `code`, print nothing,
// so that a job refused on every rank says so once.
struct ReportedElsewhere : std::runtime_error {
  int code;
  explicit ReportedElsewhere(int exit_code) : std::runtime_error("reported by another rank"), code(exit_code) {}
};

// The file named first, then what is wrong with it: "tokenizer.json: not a BPE model".
[[noreturn]] inline void fail_input(const std::string& where, const std::string& what) {
  throw InputError(where + ": " + what);
}

}  // namespace teap
