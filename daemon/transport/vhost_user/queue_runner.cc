#include "daemon/transport/vhost_user/queue_runner.h"

#include <poll.h>

#include <cstring>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include <spdlog/spdlog.h>

#include "daemon/fuse/request_class.h"
#include "daemon/transport/vhost_user/adaptive_poll.h"
#include "daemon/transport/vhost_user/chain_io.h"
#include "daemon/transport/vhost_user/device.h"
#include "daemon/transport/vhost_user/signal_batch.h"
#include "protocol/fuse_opcodes.h"

namespace svfs::transport::vhost_user {
namespace {

static_assert(Device::kMaxQueues <= fuse::RequestStats::kQueueSlots, "a counter per queue");

// Spin-wait hint: lets the sibling hyperthread (or the hypervisor) know we are polling.
inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// A chain served off its queue thread (pool worker, lock wait), with its own request copy.
struct OffThreadChain {
  OffThreadChain(Chain&& chain_in, const CopiedRequest& copy_in)
      : chain(std::move(chain_in)), bytes(copy_in.bytes.begin(), copy_in.bytes.end()),
        copy(copy_in) {
    copy.bytes = bytes;
  }
  Chain chain;
  std::vector<uint8_t> bytes;
  CopiedRequest copy;
};

// Serves a chain from its request copy and marks it used; signals the driver unless
// `defer_notify`. `payload` is scratch for a WRITE's data iovecs; `started`: when the caller
// took the chain up. Returns when the chain was answered.
SignalBatch::Clock::time_point ServeCopy(fuse::Server& server, const RunnerOptions& options,
                                         Queue& queue, const Chain& chain,
                                         const CopiedRequest& copy, std::vector<iovec>& payload,
                                         bool defer_notify, SignalBatch::Clock::time_point started) {
  const ServedChain served = ServeChain(server, options.dax_window, options.window_io, chain,
                                        copy, payload, started);
  queue.push_used(chain.head, static_cast<uint32_t>(served.written), !defer_notify);
  return served.done;
}

// Answers a chain with `error` (no request run), marks it used and signals.
void RefuseChain(Queue& queue, const Chain& chain, const CopiedRequest& copy, int error) {
  ChainReplyChannel channel(chain, copy.unique);
  if (copy.has_header) channel.send_error(error);
  queue.push_used(chain.head, static_cast<uint32_t>(channel.written()), /*notify=*/true);
}

}  // namespace

// One queue thread's loop and its state.
class QueueRunner::QueueThread {
 public:
  QueueThread(QueueRunner& runner, Queue& queue)
      : runner_(runner), queue_(queue), vq_(queue.vq),
        // The hiprio queue is served by its thread alone, and FORGETs are not worth a polling CPU.
        pool_(queue.index == kHiprioQueue ? nullptr : runner.pool_.get()),
        poller_(queue.index == kHiprioQueue ? AdaptivePoll::Duration::zero()
                                            : AdaptivePoll::Duration(runner.options_.poll_max)),
        request_buffer_(protocol::kMaxRequestSize) {}

  void run();

 private:
  void handle_chain();
  void hand_to_lock_waiter(std::shared_ptr<OffThreadChain> job);
  void hand_to_pool(std::shared_ptr<OffThreadChain> job);
  // Chains used on this thread are signalled per batch (SignalBatch) and when the ring is drained.
  void signal_used() {
    if (!batch_.pending()) return;
    batch_.signalled();
    queue_.notify();
    now_ = SignalBatch::Clock::now();  // the signal (maybe an IPI) is no request's time
  }
  // Pool workers signal their own batches; this catches one left waiting while its worker
  // serves a slow request.
  void signal_overdue_pool_batch() {
    if (pool_ == nullptr || queue_.pool_jobs.load(std::memory_order_relaxed) == 0) return;
    std::lock_guard lock(queue_.used_mutex);
    if (!queue_.pool_batch.overdue(SignalBatch::Clock::now())) return;
    queue_.pool_batch.signalled();
    queue_.notify_locked();
  }
  bool stopping() const { return queue_.stopping.load(std::memory_order_relaxed); }

  QueueRunner& runner_;
  Queue& queue_;
  Virtqueue& vq_;
  WorkerPool* pool_;
  AdaptivePoll poller_;
  SignalBatch batch_;
  // When this thread last read the clock: as it finished a chain, woke or signalled. One read
  // per chain served back to back dates both the end of one and the start of the next.
  SignalBatch::Clock::time_point now_;
  std::vector<uint8_t> request_buffer_;
  std::vector<iovec> payload_;
  Chain chain_;
};

void QueueRunner::QueueThread::run() {
  for (;;) {
    // Drain what is available (also on start: kicks may have come while the thread was stopped).
    now_ = SignalBatch::Clock::now();
    for (;;) {
      if (stopping()) {
        signal_used();
        return;
      }
      Virtqueue::Pop result = vq_.pop(chain_);
      if (result == Virtqueue::Pop::kEmpty) break;
      if (result == Virtqueue::Pop::kBroken) {
        signal_used();
        spdlog::error("vhost-user: queue {} is broken and stops: {}", queue_.index,
                      vq_.broken_reason());
        queue_.broken = true;  // read by the control thread only after join
        queue_.signal_error();
        return;
      }
      handle_chain();
    }
    const bool poll = poller_.window() > AdaptivePoll::Duration::zero();
    // Kicks go off before the signal: the woken driver reposts at once and need not kick a
    // thread that is polling.
    if (poll) vq_.suppress_kicks();
    signal_used();
    signal_overdue_pool_batch();
    if (poll) {
      // Poll the ring for a while rather than pay for a wake-up.
      auto until = std::chrono::steady_clock::now() + poller_.window();
      while (!vq_.has_available() && !stopping() && std::chrono::steady_clock::now() < until) {
        CpuRelax();
      }
      if (vq_.enable_kicks()) continue;
    }
    pollfd fds[2] = {{queue_.kick.get(), POLLIN, 0}, {queue_.stop.get(), POLLIN, 0}};
    auto sleep_start = std::chrono::steady_clock::now();
    // With jobs in the pool, wake every millisecond to signal a batch they left overdue.
    int timeout_ms =
        pool_ != nullptr && queue_.pool_jobs.load(std::memory_order_relaxed) > 0 ? 1 : -1;
    if (::poll(fds, 2, timeout_ms) < 0) {
      if (errno == EINTR) continue;
      spdlog::error("vhost-user: queue {}: poll: {}", queue_.index, std::strerror(errno));
      return;
    }
    poller_.slept(std::chrono::steady_clock::now() - sleep_start);
    if (fds[1].revents) return;
    if (fds[0].revents & POLLIN) {
      queue_.kick.drain();
    } else if (fds[0].revents & (POLLERR | POLLHUP | POLLNVAL)) {
      spdlog::error("vhost-user: queue {}: kick fd failed", queue_.index);
      return;
    }
  }
}

void QueueRunner::QueueThread::handle_chain() {
  queue_.stats.count_queue(queue_.index, vq_.available());
  const CopiedRequest copy = CopyRequest(queue_.index, chain_, request_buffer_,
                                         runner_.options_.window_io != nullptr);
  const fuse::Schedule schedule =
      copy.refused ? fuse::Schedule::kQuick : fuse::Classify(copy.bytes);
  if (schedule == fuse::Schedule::kBlocking) {
    queue_.begin_off_thread();
    hand_to_lock_waiter(std::make_shared<OffThreadChain>(std::exchange(chain_, Chain()), copy));
    now_ = SignalBatch::Clock::now();  // a thread was started: no request's time
    return;
  }
  if (pool_ != nullptr) {
    queue_.begin_off_thread();
    hand_to_pool(std::make_shared<OffThreadChain>(std::exchange(chain_, Chain()), copy));
    return;
  }
  // Replies batched before a slow request are signalled first, so they do not wait for it.
  if (schedule == fuse::Schedule::kSlow) signal_used();
  now_ = ServeCopy(runner_.server_, runner_.options_, queue_, chain_, copy, payload_,
                   /*defer_notify=*/true, now_);
  if (batch_.used(now_, vq_.available())) signal_used();
}

void QueueRunner::QueueThread::hand_to_lock_waiter(std::shared_ptr<OffThreadChain> job) {
  QueueRunner& runner = runner_;
  Queue& queue = queue_;
  std::string refusal;
  try {
    bool spawned = runner.lock_waiters_.try_spawn([&runner, &queue, job] {
      if (runner.options_.thread_init) runner.options_.thread_init();
      std::vector<iovec> payload;
      ServeCopy(runner.server_, runner.options_, queue, job->chain, job->copy, payload,
                /*defer_notify=*/false, SignalBatch::Clock::now());
      queue.end_off_thread();
    });
    if (spawned) return;
    refusal = fmt::format("{} lock waits (SETLKW) already pending", LockWaiters::kMax);
  } catch (const std::system_error& error) {
    // Under a task limit: this lock wait fails (as from a full lock table), serving goes on.
    refusal = fmt::format("no thread for a lock wait ({})", error.what());
  }
  // A thread per waiting lock: a guest must not get to make them without bound.
  if (MayLogGuestError()) {
    spdlog::warn("vhost-user: queue {}: {}: ENOLCK", queue.index, refusal);
  }
  signal_used();
  RefuseChain(queue, job->chain, job->copy, ENOLCK);
  queue.end_off_thread();
}

void QueueRunner::QueueThread::hand_to_pool(std::shared_ptr<OffThreadChain> job) {
  fuse::Server& server = runner_.server_;
  const RunnerOptions& options = runner_.options_;
  Queue& queue = queue_;
  queue.pool_jobs.fetch_add(1, std::memory_order_relaxed);
  pool_->submit([&server, &options, &queue, job](std::vector<iovec>& payload) {
    ServeCopy(server, options, queue, job->chain, job->copy, payload, /*defer_notify=*/true,
              SignalBatch::Clock::now());
    {
      // Decremented under the lock: the worker that completes the queue's last pooled job
      // signals for every chain pushed before it.
      std::lock_guard lock(queue.used_mutex);
      unsigned left = queue.pool_jobs.fetch_sub(1, std::memory_order_relaxed) - 1;
      // The clock is read under the lock: a wait for it counts toward the batch's delay.
      if (queue.pool_batch.used(SignalBatch::Clock::now(), left) || left == 0) {
        queue.pool_batch.signalled();
        queue.notify_locked();
      }
    }
    queue.end_off_thread();
  });
}

QueueRunner::QueueRunner(fuse::Server& server, RunnerOptions options)
    : server_(server), options_(std::move(options)) {}

QueueRunner::~QueueRunner() = default;

void QueueRunner::start_pool() {
  if (options_.pool_threads >= 2) {
    pool_ = std::make_unique<WorkerPool>(options_.pool_threads, options_.thread_init);
  } else if (options_.pool_threads == 1) {
    spdlog::info("--thread-pool-size 1: each request queue's thread serves its requests (as 0)");
  }
}

void QueueRunner::stop_pool() {
  pool_.reset();
  lock_waiters_.join_all();
}

bool LockWaiters::try_spawn(std::function<void()> wait) {
  std::lock_guard lock(mutex_);
  reap_locked();
  if (threads_.size() >= kMax) return false;
  Waiter& waiter = threads_.emplace_back();
  try {
    waiter.thread = std::thread([&waiter, wait = std::move(wait)] {
      wait();
      waiter.done.store(true, std::memory_order_release);
    });
  } catch (...) {
    threads_.pop_back();
    throw;
  }
  return true;
}

void LockWaiters::reap_locked() {
  threads_.remove_if([](Waiter& waiter) {
    if (!waiter.done.load(std::memory_order_acquire)) return false;
    waiter.thread.join();  // it has returned or is about to
    return true;
  });
}

void LockWaiters::join_all() {
  std::lock_guard lock(mutex_);
  for (Waiter& waiter : threads_) waiter.thread.join();
  threads_.clear();
}

void QueueRunner::serve(Queue& queue) {
  if (options_.thread_init) options_.thread_init();
  QueueThread(*this, queue).run();
}

}  // namespace svfs::transport::vhost_user
