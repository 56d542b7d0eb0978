// The Prometheus text exposition format (version 0.0.4), and the log2 latency histogram both
// daemons export: what /metrics serves (common/metrics_server.h).
#pragma once

#include <array>
#include <atomic>
#include <bit>
#include <cstdint>
#include <string>
#include <string_view>

namespace svfs::metrics {

// Durations in nanoseconds, in power-of-two buckets: bucket k counts observations below
// 2^(10+k) ns (1.024 µs, 2.048 µs, ... about 8.6 s), the last one everything longer. One relaxed
// increment per observation (plus the sum): cheap enough for every request.
class Log2Histogram {
 public:
  static constexpr int kFirstShift = 10;
  static constexpr int kBuckets = 24;  // finite ones; bucket kBuckets is +Inf

  void observe(uint64_t ns) {
    const int width = std::bit_width(ns);
    const int bucket = width <= kFirstShift ? 0 : width - kFirstShift;
    buckets_[bucket < kBuckets ? bucket : kBuckets].fetch_add(1, std::memory_order_relaxed);
    sum_ns_.fetch_add(ns, std::memory_order_relaxed);
  }

  struct Snapshot {
    std::array<uint64_t, kBuckets + 1> buckets{};  // per bucket, not cumulative
    uint64_t sum_ns = 0;
    uint64_t count = 0;
  };
  Snapshot snapshot() const;

 private:
  std::array<std::atomic<uint64_t>, kBuckets + 1> buckets_{};
  std::atomic<uint64_t> sum_ns_{0};
};

// Builds an exposition: each family starts with family(), then its samples. Label values are
// escaped here; names and label keys are the caller's constants.
class Exposition {
 public:
  enum class Type { kCounter, kGauge, kHistogram };

  void family(std::string_view name, Type type, std::string_view help);
  // `name{key="value"} value`; an empty key writes no labels.
  void sample(std::string_view name, uint64_t value, std::string_view key = {},
              std::string_view label = {});
  // name_bucket{...,le="..."} (cumulative, seconds), name_sum (seconds), name_count.
  void histogram(std::string_view name, const Log2Histogram::Snapshot& snapshot,
                 std::string_view key = {}, std::string_view label = {});

  const std::string& text() const { return text_; }

 private:
  void labels(std::string_view key, std::string_view label, std::string_view le = {});
  std::string text_;
};

}  // namespace svfs::metrics
