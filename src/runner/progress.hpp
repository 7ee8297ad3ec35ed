// Owns the sweep's progress line on rank 0: units finished of those to do, rate, elapsed and ETA;
// redrawn in place on a terminal, a line at least every 5 s in a log (mpirun's output, SLURM output files).
// A ticker thread keeps the line coming while rank 0 is busy in a long unit of its own.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace teap::runner {

struct Progress {
  int64_t to_do = 0, done_before = 0;
  bool tty = false;
  // Seconds between lines in a log (not a terminal): 4.5, and the ticker looks every 0.5 s, so a
  // line comes at least every 5 s.
  double interval = 4.5;
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now(), last_line = start;

  // `finished`: units finished so far by every rank. `final_line`: the last call, always printed.
  // Thread-safe (the ticker and rank 0's loop both call it).
  void report(int64_t finished, bool final_line);
  double elapsed() const;
  // The line's text: "units 3/24 (2 done before), 4.1 units/min, elapsed 0:00:44, ETA 0:05:07";
  // "units 0/24, elapsed 0:00:05, no unit finished yet" before the first; "nothing to do: 24 units
  // done before" when there was nothing to do.
  std::string line(int64_t finished, double seconds) const;

 private:
  std::mutex mutex_;
  int64_t last_count_ = -1;
  bool printed_once_ = false;
};

// Calls progress.report(count()) twice a second from a thread of its own until destroyed (the
// progress prints what its interval allows). `count` must be safe to call from that thread.
class ProgressTicker {
 public:
  ProgressTicker(Progress& progress, std::function<int64_t()> count);
  ~ProgressTicker();
  ProgressTicker(const ProgressTicker&) = delete;
  ProgressTicker& operator=(const ProgressTicker&) = delete;

 private:
  Progress& progress_;
  std::function<int64_t()> count_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stop_ = false;
  std::thread thread_;
};

// "h:mm:ss"
std::string format_duration(double seconds);

}  // namespace teap::runner
