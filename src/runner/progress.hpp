// Owns the sweep's progress line on rank 0: units finished of those to do, rate, elapsed and ETA;
// redrawn in place on a terminal, a line every 30 s in a log (SLURM output files).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace teap::runner {

struct Progress {
  int64_t to_do = 0, done_before = 0;
  bool tty = false;
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now(), last_line = start;

  // `finished`: units finished so far by every rank. `final_line`: the last call, always printed.
  void report(int64_t finished, bool final_line);
  double elapsed() const;
};

// "h:mm:ss"
std::string format_duration(double seconds);

}  // namespace teap::runner
