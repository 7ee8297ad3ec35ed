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

void Progress::report(int64_t done, bool final_line) {
  const double secs = elapsed();
  const double rate = secs > 0 ? done / secs * 60.0 : 0;
  const int64_t left = to_do - done;
  const std::string eta = rate > 0 ? format_duration(left / rate * 60.0) : "?";
  char line[256];
  std::snprintf(line, sizeof line, "units %lld/%lld (%lld done before), %.1f units/min, elapsed %s, ETA %s",
                static_cast<long long>(done), static_cast<long long>(to_do), static_cast<long long>(done_before), rate,
                format_duration(secs).c_str(), eta.c_str());
  const auto now = std::chrono::steady_clock::now();
  if (tty) {
    std::fprintf(stderr, "\r%s\033[K%s", line, final_line ? "\n" : "");
  } else if (final_line || std::chrono::duration<double>(now - last_line).count() >= 30) {
    std::fprintf(stderr, "[progress] %s\n", line);
    last_line = now;
  }
  std::fflush(stderr);
}

}  // namespace teap::runner
