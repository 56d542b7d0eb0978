#include "common/metrics_text.h"

#include <fmt/format.h>

namespace svfs::metrics {

Log2Histogram::Snapshot Log2Histogram::snapshot() const {
  Snapshot out;
  for (size_t i = 0; i < buckets_.size(); ++i) {
    out.buckets[i] = buckets_[i].load(std::memory_order_relaxed);
    out.count += out.buckets[i];
  }
  out.sum_ns = sum_ns_.load(std::memory_order_relaxed);
  return out;
}

void Exposition::family(std::string_view name, Type type, std::string_view help) {
  const char* type_name = type == Type::kCounter ? "counter"
                          : type == Type::kGauge ? "gauge"
                                                 : "histogram";
  // HELP text escapes only backslash and newline; ours has neither.
  fmt::format_to(std::back_inserter(text_), "# HELP {} {}\n# TYPE {} {}\n", name, help, name,
                 type_name);
}

void Exposition::labels(std::string_view key, std::string_view label, std::string_view le) {
  if (key.empty() && le.empty()) return;
  text_ += '{';
  if (!key.empty()) {
    fmt::format_to(std::back_inserter(text_), "{}=\"", key);
    for (char c : label) {
      if (c == '\\') {
        text_ += "\\\\";
      } else if (c == '"') {
        text_ += "\\\"";
      } else if (c == '\n') {
        text_ += "\\n";
      } else {
        text_ += c;
      }
    }
    text_ += '"';
    if (!le.empty()) text_ += ',';
  }
  if (!le.empty()) fmt::format_to(std::back_inserter(text_), "le=\"{}\"", le);
  text_ += '}';
}

void Exposition::sample(std::string_view name, uint64_t value, std::string_view key,
                        std::string_view label) {
  text_ += name;
  labels(key, label);
  fmt::format_to(std::back_inserter(text_), " {}\n", value);
}

void Exposition::histogram(std::string_view name, const Log2Histogram::Snapshot& snapshot,
                           std::string_view key, std::string_view label) {
  uint64_t cumulative = 0;
  for (int k = 0; k <= Log2Histogram::kBuckets; ++k) {
    cumulative += snapshot.buckets[k];
    const std::string le =
        k == Log2Histogram::kBuckets
            ? std::string("+Inf")
            : fmt::format("{}", static_cast<double>(uint64_t{1} << (Log2Histogram::kFirstShift + k)) / 1e9);
    fmt::format_to(std::back_inserter(text_), "{}_bucket", name);
    labels(key, label, le);
    fmt::format_to(std::back_inserter(text_), " {}\n", cumulative);
  }
  fmt::format_to(std::back_inserter(text_), "{}_sum", name);
  labels(key, label);
  fmt::format_to(std::back_inserter(text_), " {:.9f}\n", static_cast<double>(snapshot.sum_ns) / 1e9);
  fmt::format_to(std::back_inserter(text_), "{}_count", name);
  labels(key, label);
  fmt::format_to(std::back_inserter(text_), " {}\n", snapshot.count);
}

}  // namespace svfs::metrics
