#include "daemon/fuse/stats.h"

#include <fmt/format.h>

namespace svfs::fuse {

void RequestStats::count(uint32_t opcode, bool failed) {
  requests_[slot(opcode)].fetch_add(1, std::memory_order_relaxed);
  if (failed) errors_[slot(opcode)].fetch_add(1, std::memory_order_relaxed);
}

uint64_t RequestStats::requests(uint32_t opcode) const {
  return requests_[slot(opcode)].load(std::memory_order_relaxed);
}

uint64_t RequestStats::errors(uint32_t opcode) const {
  return errors_[slot(opcode)].load(std::memory_order_relaxed);
}

uint64_t RequestStats::total() const {
  uint64_t sum = 0;
  for (const auto& counter : requests_) sum += counter.load(std::memory_order_relaxed);
  return sum;
}

std::string RequestStats::format_table() const {
  std::string out = fmt::format("{:<16} {:>12} {:>10}\n", "opcode", "requests", "errors");
  for (uint32_t op = 0; op < protocol::kOpcodeSlots; ++op) {
    uint64_t n = requests(op);
    if (n == 0) continue;
    out += fmt::format("{:<16} {:>12} {:>10}\n", protocol::OpcodeName(op), n, errors(op));
  }
  uint64_t failed = 0;
  for (const auto& counter : errors_) failed += counter.load(std::memory_order_relaxed);
  out += fmt::format("{:<16} {:>12} {:>10}\n", "total", total(), failed);
  bool header = false;
  for (uint32_t queue = 0; queue < kQueueSlots; ++queue) {
    uint64_t n = queue_requests(queue);
    if (n == 0) continue;
    if (!header) out += fmt::format("{:<16} {:>12}\n", "queue", "requests");
    header = true;
    std::string name = queue == 0 ? "hiprio" : fmt::format("requests.{}", queue - 1);
    out += fmt::format("{:<16} {:>12}\n", name, n);
  }
  out += fmt::format("{:<16} {:>12}\n", "malformed", malformed());
  return out;
}

}  // namespace svfs::fuse
