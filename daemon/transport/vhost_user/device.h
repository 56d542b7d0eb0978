// The device state one frontend configures: guest memory, the queues, the negotiated features,
// and the rule between them: nothing a queue's threads read changes while they run. A change
// stops the queue(s) concerned (thread joined, chains served off-thread all used), applies, and
// starts again each queue that should run; the queue and pool threads therefore need no lock
// per request to read the rings or the memory.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>

#include "daemon/transport/vhost_user/guest_memory.h"
#include "daemon/transport/vhost_user/queue.h"
#include "common/result.h"
#include "common/unique_fd.h"

namespace svfs::transport::vhost_user {

class QueueRunner;

class Device {
 public:
  // Queues accepted: hiprio + 16 request queues (GET_QUEUE_NUM).
  static constexpr uint32_t kMaxQueues = 17;

  explicit Device(QueueRunner& runner);
  ~Device();  // stops every queue
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;

  // Queue `index`, or nullptr past kMaxQueues.
  Queue* queue(uint64_t index) { return index < kMaxQueues ? queues_[index].get() : nullptr; }
  const GuestMemory& memory() const { return memory_; }
  uint64_t acked_features() const { return acked_features_; }

  // Applies `change` (returning whether it succeeded) to `queue` while the queue is stopped, then
  // starts the queue if it should run.
  template <typename Change>
  bool reconfigure(Queue& queue, Change change) {
    stop(queue);
    const bool ok = change();
    start_if_ready(queue);
    return ok;
  }
  // Stops `queue` and leaves it stopped (GET_VRING_BASE).
  void stop(Queue& queue);

  // Changes with every queue stopped.
  void set_features(uint64_t features);
  // Replaces the memory table (SET_MEM_TABLE); false if a region could not be mapped (logged).
  bool set_memory_table(std::span<const RegionDesc> regions, std::span<const UniqueFd> fds);
  Status add_region(const RegionDesc& region, int fd);
  Status remove_region(const RegionDesc& region);
  // Queues stopped and unconfigured, their fds closed, features cleared (RESET_OWNER,
  // RESET_DEVICE); the memory table stays.
  void reset();
  // As reset(), and guest memory unmapped (the frontend went away).
  void disconnect();

 private:
  void stop_all();
  void start_if_ready(Queue& queue);
  void start_all_ready();
  void release_memory();

  QueueRunner& runner_;
  GuestMemory memory_;
  std::array<std::unique_ptr<Queue>, kMaxQueues> queues_;
  uint64_t acked_features_ = 0;
};

}  // namespace svfs::transport::vhost_user
