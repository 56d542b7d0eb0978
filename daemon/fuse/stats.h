// Per-opcode request counters and latency histograms: lock-free increments on the request path,
// read by the SIGUSR1 dump, the /metrics endpoint, the demo and the benchmarks.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <string>

#include "common/metrics_text.h"
#include "protocol/fuse_opcodes.h"

namespace svfs::fuse {

class RequestStats {
 public:
  // The hiprio queue and 16 request queues (as vhost_user::Device::kMaxQueues).
  static constexpr uint32_t kQueueSlots = 17;

  // One request served, in `ns` nanoseconds (Server::handle: from when the transport took it up,
  // or from decoding, to its reply).
  void count(uint32_t opcode, bool failed, uint64_t ns);
  void count_malformed() { malformed_.fetch_add(1, std::memory_order_relaxed); }
  // A chain taken off virtqueue `queue` (0: hiprio, 1..: request queues) with `waiting` more in
  // its ring behind it (the queue's depth then); the transport counts them, so a test can see
  // which queues a guest uses and an operator how deep they run.
  void count_queue(uint32_t queue, uint32_t waiting) {
    const uint32_t at = queue < kQueueSlots ? queue : kQueueSlots - 1;
    queue_requests_[at].fetch_add(1, std::memory_order_relaxed);
    queue_waiting_[at].fetch_add(waiting, std::memory_order_relaxed);
  }
  // An interrupt sent to the guest for `queue`'s used chains: one per batch of replies.
  void count_signal(uint32_t queue) {
    queue_signals_[queue < kQueueSlots ? queue : kQueueSlots - 1].fetch_add(
        1, std::memory_order_relaxed);
  }

  uint64_t requests(uint32_t opcode) const;
  uint64_t errors(uint32_t opcode) const;
  uint64_t malformed() const { return malformed_.load(std::memory_order_relaxed); }
  uint64_t total() const;
  uint64_t queue_requests(uint32_t queue) const { return load(queue_requests_, queue); }
  uint64_t queue_waiting(uint32_t queue) const { return load(queue_waiting_, queue); }
  uint64_t queue_signals(uint32_t queue) const { return load(queue_signals_, queue); }

  // A table of the opcodes seen so far: "opcode  requests  errors", then a total line; then, if
  // a transport counted them, a "queue  requests" table named as the guest's sysfs names them
  // (hiprio, requests.0, ...); last a "malformed" line.
  std::string format_table() const;
  // The same counters and the latency histograms as Prometheus families (svfsd_requests_total,
  // svfsd_request_errors_total, svfsd_request_duration_seconds, svfsd_malformed_requests_total,
  // and per queue svfsd_queue_requests_total, svfsd_queue_waiting_total,
  // svfsd_queue_signals_total); opcodes and queues not seen yet are left out. Opcodes are
  // labelled by name, "OP_<n>" for one below 63 we have no name for, "OTHER" for 63 and above.
  void write_metrics(metrics::Exposition& out) const;

 private:
  // Opcodes from the last slot on (none that FUSE defines) share it.
  static size_t slot(uint32_t opcode) {
    return opcode < protocol::kOpcodeSlots ? opcode : protocol::kOpcodeSlots - 1;
  }
  std::array<std::atomic<uint64_t>, protocol::kOpcodeSlots> requests_{};
  std::array<std::atomic<uint64_t>, protocol::kOpcodeSlots> errors_{};
  std::array<metrics::Log2Histogram, protocol::kOpcodeSlots> latency_{};
  std::atomic<uint64_t> malformed_{0};
  using QueueCounters = std::array<std::atomic<uint64_t>, kQueueSlots>;
  static uint64_t load(const QueueCounters& counters, uint32_t queue) {
    return queue < kQueueSlots ? counters[queue].load(std::memory_order_relaxed) : 0;
  }
  QueueCounters queue_requests_{};
  QueueCounters queue_waiting_{};
  QueueCounters queue_signals_{};
};

}  // namespace svfs::fuse
