#include "daemon/fuse/stats.h"

#include <fmt/format.h>

namespace svfs::fuse {

void RequestStats::count(uint32_t opcode, bool failed, uint64_t ns) {
  requests_[slot(opcode)].fetch_add(1, std::memory_order_relaxed);
  if (failed) errors_[slot(opcode)].fetch_add(1, std::memory_order_relaxed);
  latency_[slot(opcode)].observe(ns);
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

namespace {
std::string QueueName(uint32_t queue) {
  return queue == 0 ? "hiprio" : fmt::format("requests.{}", queue - 1);
}

// A distinct label per slot: the opcode's name, "OP_<n>" for a number below the array we have no
// name for, and "OTHER" for the last slot, which every opcode beyond the array shares (one
// series each, never two with the same label).
std::string SlotName(uint32_t slot) {
  if (slot == protocol::kOpcodeSlots - 1) return "OTHER";
  const std::string_view name = protocol::OpcodeName(slot);
  return name == "UNKNOWN" ? fmt::format("OP_{}", slot) : std::string(name);
}
}  // namespace

std::string RequestStats::format_table() const {
  std::string out = fmt::format("{:<16} {:>12} {:>10}\n", "opcode", "requests", "errors");
  for (uint32_t op = 0; op < protocol::kOpcodeSlots; ++op) {
    uint64_t n = requests(op);
    if (n == 0) continue;
    out += fmt::format("{:<16} {:>12} {:>10}\n", SlotName(op), n, errors(op));
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
    out += fmt::format("{:<16} {:>12}\n", QueueName(queue), n);
  }
  out += fmt::format("{:<16} {:>12}\n", "malformed", malformed());
  return out;
}

void RequestStats::write_metrics(metrics::Exposition& out) const {
  using Type = metrics::Exposition::Type;
  out.family("svfsd_requests_total", Type::kCounter, "FUSE requests served, by opcode.");
  for (uint32_t op = 0; op < protocol::kOpcodeSlots; ++op) {
    if (uint64_t n = requests(op)) {
      out.sample("svfsd_requests_total", n, "opcode", SlotName(op));
    }
  }
  out.family("svfsd_request_errors_total", Type::kCounter,
             "FUSE requests answered with an error, by opcode.");
  for (uint32_t op = 0; op < protocol::kOpcodeSlots; ++op) {
    if (requests(op) != 0) {
      out.sample("svfsd_request_errors_total", errors(op), "opcode", SlotName(op));
    }
  }
  out.family("svfsd_request_duration_seconds", Type::kHistogram,
             "Time from taking a FUSE request up to its reply, by opcode.");
  for (uint32_t op = 0; op < protocol::kOpcodeSlots; ++op) {
    if (requests(op) != 0) {
      out.histogram("svfsd_request_duration_seconds", latency_[op].snapshot(), "opcode",
                    SlotName(op));
    }
  }
  out.family("svfsd_malformed_requests_total", Type::kCounter,
             "Requests refused as malformed (they never reach the filesystem).");
  out.sample("svfsd_malformed_requests_total", malformed());
  out.family("svfsd_queue_requests_total", Type::kCounter,
             "Descriptor chains taken off each virtqueue (vhost-user), named as the guest's "
             "sysfs names them.");
  for (uint32_t queue = 0; queue < kQueueSlots; ++queue) {
    if (uint64_t n = queue_requests(queue)) {
      out.sample("svfsd_queue_requests_total", n, "queue", QueueName(queue));
    }
  }
  out.family("svfsd_queue_waiting_total", Type::kCounter,
             "Chains waiting in the ring behind each one taken, summed: divided by "
             "svfsd_queue_requests_total, the queue's mean depth.");
  for (uint32_t queue = 0; queue < kQueueSlots; ++queue) {
    if (queue_requests(queue) != 0) {
      out.sample("svfsd_queue_waiting_total", queue_waiting(queue), "queue", QueueName(queue));
    }
  }
  out.family("svfsd_queue_signals_total", Type::kCounter,
             "Interrupts sent to the guest, one per batch of replies: "
             "svfsd_queue_requests_total divided by it is the mean batch.");
  for (uint32_t queue = 0; queue < kQueueSlots; ++queue) {
    if (queue_requests(queue) != 0) {
      out.sample("svfsd_queue_signals_total", queue_signals(queue), "queue", QueueName(queue));
    }
  }
}

}  // namespace svfs::fuse
