#include "runner/progress.hpp"

#include <cstdio>

namespace teap::runner {

std::string format_duration(double s) {
  char buf[32];
  const long t = static_cast<long>(s + 0.5);
  std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
  return buf;
}

double Progress::elapsed() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

std::string Progress::line(int64_t done, double secs) const {
  char buf[256];
  const auto ll = [](int64_t v) { return static_cast<long long>(v); };
  if (to_do <= 0) {
    std::snprintf(buf, sizeof buf, "nothing to do: %lld unit%s done before, elapsed %s", ll(done_before),
                  done_before == 1 ? "" : "s", format_duration(secs).c_str());
    return buf;
  }
  const std::string before = done_before > 0 ? " (" + std::to_string(done_before) + " done before)" : "";
  if (done <= 0) {
    std::snprintf(buf, sizeof buf, "units 0/%lld%s, elapsed %s, no unit finished yet", ll(to_do), before.c_str(),
                  format_duration(secs).c_str());
    return buf;
  }
  const double rate = secs > 0 ? done / secs * 60.0 : 0;
  const int64_t left = to_do - done;
  std::string eta = left <= 0 ? "0:00:00" : rate > 0 ? format_duration(left / rate * 60.0) : "-";
  std::snprintf(buf, sizeof buf, "units %lld/%lld%s, %.1f units/min, elapsed %s, ETA %s", ll(done), ll(to_do),
                before.c_str(), rate, format_duration(secs).c_str(), eta.c_str());
  return buf;
}

void Progress::report(int64_t done, bool final_line) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (done < last_count_) done = last_count_;  // a stale read (the ticker's) never goes back
  last_count_ = done;
  const std::string text = line(done, elapsed());
  const auto now = std::chrono::steady_clock::now();
  if (tty) {
    if (!final_line && std::chrono::duration<double>(now - last_line).count() < 0.5) return;
    std::fprintf(stderr, "\r%s\033[K%s", text.c_str(), final_line ? "\n" : "");
    last_line = now;
  } else if (final_line || !printed_once_ || std::chrono::duration<double>(now - last_line).count() >= interval) {
    std::fprintf(stderr, "[progress] %s\n", text.c_str());
    last_line = now;
    printed_once_ = true;
  }
  std::fflush(stderr);
}

ProgressTicker::ProgressTicker(Progress& progress, std::function<int64_t()> count)
    : progress_(progress), count_(std::move(count)) {
  const auto period = std::chrono::milliseconds(500);
  thread_ = std::thread([this, period] {
    std::unique_lock<std::mutex> lock(mutex_);
    while (!wake_.wait_for(lock, period, [this] { return stop_; })) {
      lock.unlock();
      progress_.report(count_(), false);
      lock.lock();
    }
  });
}

ProgressTicker::~ProgressTicker() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

}  // namespace teap::runner
