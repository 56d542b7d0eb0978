// One virtqueue of the device: its configuration as the frontend set it, its serving thread,
// and the used side shared by everything that completes its chains.
//
// Who touches what:
// - Configuration (`vq`'s rings and size, `kick`, the state flags) changes on the control thread
//   only, and only while the queue is stopped (Device::reconfigure); the serving threads read it
//   while running, without a lock.
// - The used side (`vq.push`, should_notify, `call`, `err`) is shared by the queue thread, pool
//   workers and lock-wait threads, and the control thread swaps `call`/`err` while the queue
//   runs (the frontend does so when the guest masks the queue's interrupt): all under
//   `used_mutex`. vq.pop() runs concurrently on the queue thread but touches none of it.
// - Off-thread chains (pool, lock waits) are counted so a stop can wait until they are all used.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>

#include "daemon/fuse/stats.h"
#include "daemon/transport/vhost_user/signal_batch.h"
#include "daemon/transport/vhost_user/virtqueue.h"
#include "common/event_fd.h"

namespace svfs::transport::vhost_user {

struct Queue {
  Queue(uint32_t index_in, fuse::RequestStats& stats_in) : index(index_in), stats(stats_in) {}

  const uint32_t index;
  fuse::RequestStats& stats;  // the server's: chains taken and interrupts sent, per queue

  // Configuration (control thread, queue stopped).
  Virtqueue vq;
  EventFd kick;
  bool started = false;  // kick fd received, not stopped by GET_VRING_BASE
  bool enabled = false;
  bool broken = false;   // set by the queue thread before it exits; read after join
  // Whether the queue thread should run with this configuration.
  bool should_run() const { return started && enabled && !broken; }

  // The serving thread, and how the control thread stops it: `stop` wakes it from poll(), and
  // `stopping` is checked between chains by a thread kept busy by the guest (or polling).
  std::thread thread;
  EventFd stop = EventFd::Create();
  std::atomic<bool> stopping{false};
  std::atomic<uint64_t> served{0};

  // The used side (under used_mutex).
  std::mutex used_mutex;
  EventFd call;
  EventFd err;
  // Pool jobs of this queue not yet completed (incremented by the queue thread, decremented by
  // workers under used_mutex) and their used chains not yet signalled (pool_batch, guarded by
  // used_mutex). An atomic so the queue thread need not wait for used_mutex to read it.
  std::atomic<unsigned> pool_jobs{0};
  SignalBatch pool_batch;

  // Marks chain `head` used with `len` bytes written, and signals the driver if `notify`.
  void push_used(uint16_t head, uint32_t len, bool notify) {
    std::lock_guard lock(used_mutex);
    vq.push(head, len);
    served.fetch_add(1, std::memory_order_relaxed);
    if (notify) notify_locked();
  }
  // Signals the driver if it wants a signal (EVENT_IDX); used_mutex held.
  void notify_locked();
  void notify() {
    std::lock_guard lock(used_mutex);
    notify_locked();
  }
  // Tells the frontend the queue failed (its err eventfd, if it gave one).
  void signal_error() {
    std::lock_guard lock(used_mutex);
    err.signal();
  }

  // Chains served off the queue thread (pool, lock waits) and not yet used.
  void begin_off_thread() {
    std::lock_guard lock(inflight_mutex_);
    ++inflight_;
  }
  void end_off_thread() {
    std::lock_guard lock(inflight_mutex_);
    if (--inflight_ == 0) inflight_cv_.notify_all();
  }
  // Waits until none is left, calling `nudge` every 50 ms meanwhile (to interrupt lock waits).
  template <typename Nudge>
  void wait_off_thread(Nudge nudge) {
    std::unique_lock lock(inflight_mutex_);
    while (!inflight_cv_.wait_for(lock, std::chrono::milliseconds(50),
                                  [&] { return inflight_ == 0; })) {
      nudge();
    }
  }

 private:
  std::mutex inflight_mutex_;
  std::condition_variable inflight_cv_;
  unsigned inflight_ = 0;
};

}  // namespace svfs::transport::vhost_user
