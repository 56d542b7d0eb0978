// A limit on log lines a hostile peer can cause: at most kBurst per second; the count of lines
// dropped in a second is logged once the next second begins. Lock-free, for any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

#include <spdlog/spdlog.h>

namespace svfs {

class LogLimiter {
 public:
  static constexpr uint32_t kBurst = 10;

  // `what` names the lines in the "not logged" summary (e.g. "malformed requests").
  explicit LogLimiter(const char* what) : what_(what) {}

  // Whether this line may be logged.
  bool allow() {
    const int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                            std::chrono::steady_clock::now().time_since_epoch())
                            .count();
    int64_t start = window_.load(std::memory_order_relaxed);
    if (now != start && window_.compare_exchange_strong(start, now, std::memory_order_relaxed)) {
      const uint32_t seen = count_.exchange(0, std::memory_order_relaxed);
      if (seen > kBurst) spdlog::warn("{} {} not logged", seen - kBurst, what_);
    }
    return count_.fetch_add(1, std::memory_order_relaxed) < kBurst;
  }

 private:
  const char* what_;
  std::atomic<int64_t> window_{0};
  std::atomic<uint32_t> count_{0};
};

}  // namespace svfs
