#include "daemon/transport/vhost_user/device.h"

#include <cstring>

#include <spdlog/spdlog.h>

#include "daemon/transport/vhost_user/message.h"
#include "daemon/transport/vhost_user/queue_runner.h"

namespace svfs::transport::vhost_user {

void Queue::notify_locked() {
  if (!call || !vq.should_notify()) return;
  if (!call.signal()) {
    spdlog::warn("vhost-user: queue {}: call eventfd: {}", index, std::strerror(errno));
    return;
  }
  stats.count_signal(index);
}

Device::Device(QueueRunner& runner) : runner_(runner) {
  for (uint32_t i = 0; i < kMaxQueues; ++i) queues_[i] = std::make_unique<Queue>(i, runner.stats());
}

Device::~Device() { stop_all(); }

void Device::stop(Queue& queue) {
  if (!queue.thread.joinable()) return;
  queue.stopping.store(true, std::memory_order_relaxed);
  if (!queue.stop.signal()) {
    spdlog::error("vhost-user: could not signal a queue thread: {}", std::strerror(errno));
  }
  // The join is bounded: the thread itself never serves a lock wait.
  queue.thread.join();
  // Chains still served off the queue thread must be used before the ring or the memory
  // changes. Lock waits among them would never end by themselves: they are interrupted (EINTR to
  // the guest), again in case one had not started waiting yet.
  queue.wait_off_thread([&] { runner_.interrupt_lock_waits(); });
  queue.stop.drain();
  queue.stopping.store(false, std::memory_order_relaxed);
}

void Device::start_if_ready(Queue& queue) {
  stop(queue);
  if (!queue.should_run()) return;
  if (!queue.vq.map(memory_)) {
    // Addresses may be set before the memory table arrives; only a started ring is broken.
    // Not marked broken: a later memory table or address change may make it valid.
    spdlog::error("vhost-user: queue {} cannot start: {}", queue.index, queue.vq.broken_reason());
    queue.signal_error();
    return;
  }
  queue.thread = std::thread([this, &queue] { runner_.serve(queue); });
}

void Device::stop_all() {
  for (auto& queue : queues_) stop(*queue);
}

void Device::start_all_ready() {
  for (auto& queue : queues_) start_if_ready(*queue);
}

void Device::set_features(uint64_t features) {
  stop_all();
  acked_features_ = features;
  for (auto& queue : queues_) queue->vq.set_event_idx(features & msg::kFeatureEventIdx);
  start_all_ready();
}

bool Device::set_memory_table(std::span<const RegionDesc> regions, std::span<const UniqueFd> fds) {
  stop_all();
  release_memory();
  bool ok = true;
  for (size_t i = 0; i < regions.size(); ++i) {
    const RegionDesc& desc = regions[i];
    if (auto status = memory_.add(desc, fds[i].get()); !status) {
      spdlog::error("vhost-user: mapping region {:#x}+{:#x}: {}", desc.guest_phys_addr,
                    desc.memory_size, std::strerror(status.error()));
      ok = false;
    }
  }
  start_all_ready();
  return ok;
}

Status Device::add_region(const RegionDesc& region, int fd) {
  stop_all();
  Status status = memory_.add(region, fd);
  start_all_ready();
  return status;
}

Status Device::remove_region(const RegionDesc& region) {
  stop_all();
  Status status = memory_.remove(region);
  start_all_ready();
  return status;
}

void Device::reset() {
  stop_all();
  for (auto& queue : queues_) {
    queue->vq.reset();
    queue->kick.reset();
    {
      std::lock_guard lock(queue->used_mutex);
      queue->call.reset();
      queue->err.reset();
    }
    queue->started = queue->enabled = queue->broken = false;
  }
  acked_features_ = 0;
}

void Device::disconnect() {
  // Only a ring that was running points into the current memory: a stopped one may still hold
  // addresses into a memory table the frontend has since replaced.
  std::array<bool, kMaxQueues> running{};
  for (size_t i = 0; i < queues_.size(); ++i) running[i] = queues_[i]->thread.joinable();
  stop_all();
  for (size_t i = 0; i < queues_.size(); ++i) {
    if (!running[i]) continue;
    Queue* queue = queues_[i].get();
    Virtqueue::Leftover left = queue->vq.leftover();
    if (left.untaken == 0 && !left.signal_owed) continue;
    spdlog::info("vhost-user: queue {} at disconnect: {} chains posted and not taken, {}",
                 queue->index, left.untaken,
                 left.signal_owed ? "used chains not signalled" : "every used chain signalled");
  }
  reset();
  release_memory();
}

void Device::release_memory() {
  if (memory_.damaged()) {
    spdlog::error("vhost-user: the frontend shrank the guest memory file under svfsd: accesses "
                  "to the lost part completed on private zero pages (their requests read zeros, "
                  "their replies were lost)");
  }
  memory_.clear();
}

}  // namespace svfs::transport::vhost_user
