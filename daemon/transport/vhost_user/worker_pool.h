// Worker threads that serve request-queue chains when --thread-pool-size is given, so one slow
// request does not stall its whole queue. Jobs run in submission order across the workers.
#pragma once

#include <sys/uio.h>

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace svfs::transport::vhost_user {

class WorkerPool {
 public:
  // A job gets its worker's scratch for WRITE payload iovecs.
  using Job = std::function<void(std::vector<iovec>&)>;

  // `thread_init` runs first in every worker (per-thread credential setup).
  WorkerPool(unsigned threads, const std::function<void()>& thread_init) {
    for (unsigned i = 0; i < threads; ++i) {
      threads_.emplace_back([this, thread_init] {
        if (thread_init) thread_init();
        work();
      });
    }
  }
  // Runs every job already submitted, then joins the workers.
  ~WorkerPool() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    ready_.notify_all();
    for (auto& thread : threads_) thread.join();
  }
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  void submit(Job job) {
    {
      std::lock_guard lock(mutex_);
      jobs_.push_back(std::move(job));
    }
    ready_.notify_one();
  }

 private:
  void work() {
    std::vector<iovec> payload;
    for (;;) {
      Job job;
      {
        std::unique_lock lock(mutex_);
        ready_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
        if (jobs_.empty()) return;  // stopping, and nothing left
        job = std::move(jobs_.front());
        jobs_.pop_front();
      }
      job(payload);
    }
  }

  std::mutex mutex_;  // guards jobs_ and stopping_
  std::condition_variable ready_;
  std::deque<Job> jobs_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace svfs::transport::vhost_user
