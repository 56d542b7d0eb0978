// Serves the queues: the loop of each queue thread (pop a chain, copy its request once, serve or
// hand it on, mark it used, signal the driver per batch), the worker pool of
// --thread-pool-size, and the threads of lock waits. What a request may do (block, be slow) is
// fuse::Classify's to say; the runner only acts on it.
//
// Queue 0 (hiprio: FORGET, BATCH_FORGET, INTERRUPT) is served by its thread alone, so an
// INTERRUPT never waits behind requests in the pool. Every SETLKW, on any queue, gets a thread of
// its own (at most LockWaiters::kMax), so no queue or pool thread ever waits on a lock and a
// queue stop is a bounded join.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <list>
#include <mutex>
#include <thread>
#include <memory>

#include "daemon/fuse/server.h"
#include "daemon/transport/vhost_user/queue.h"
#include "daemon/transport/vhost_user/window_io.h"
#include "daemon/transport/vhost_user/worker_pool.h"

namespace svfs::transport::vhost_user {

struct RunnerOptions {
  // Workers shared by the request queues; below 2, each queue thread serves its own requests.
  unsigned pool_threads = 0;
  // Longest a request queue's thread polls its ring before sleeping (adaptive_poll.h); 0: never.
  std::chrono::microseconds poll_max{0};
  // Runs first in every queue, worker and lock-wait thread (per-thread credential setup).
  std::function<void()> thread_init;
  // The device's DAX window, passed with every request (nullptr: no DAX).
  fuse::DaxWindow* dax_window = nullptr;
  // With a window: the VMM's transfers for a READ or WRITE whose buffer lies in it.
  WindowIo* window_io = nullptr;
};

// The threads of lock waits (SETLKW): owned, and joined once done (at the next spawn) or at the
// end of the connection, when every queue is stopped and so every wait has ended.
class LockWaiters {
 public:
  // At most this many at once: beyond, a SETLKW is answered ENOLCK, as for a full lock table.
  static constexpr unsigned kMax = 256;

  ~LockWaiters() { join_all(); }
  // Runs `wait` on a thread of its own; false if kMax are running. Throws std::system_error if
  // no thread can be made.
  bool try_spawn(std::function<void()> wait);
  void join_all();

 private:
  struct Waiter {
    std::thread thread;
    std::atomic<bool> done{false};
  };
  void reap_locked();

  std::mutex mutex_;  // guards threads_
  std::list<Waiter> threads_;  // a list: a running thread holds its Waiter's address
};

class QueueRunner {
 public:
  static constexpr uint32_t kHiprioQueue = 0;

  QueueRunner(fuse::Server& server, RunnerOptions options);
  ~QueueRunner();

  // The worker pool lives while a frontend is connected (queues stopped around both calls).
  void start_pool();
  void stop_pool();

  // The body of `queue`'s thread: returns when the queue is stopped, broken or its kick fd fails.
  void serve(Queue& queue);
  // Ends the lock waits in progress (EINTR to the guest): a queue stop waits for its chains.
  void interrupt_lock_waits() { server_.interrupt_blocked_requests(); }
  fuse::RequestStats& stats() { return server_.stats(); }

 private:
  class QueueThread;
  friend class QueueThread;

  fuse::Server& server_;
  RunnerOptions options_;
  std::unique_ptr<WorkerPool> pool_;
  LockWaiters lock_waiters_;
};

}  // namespace svfs::transport::vhost_user
