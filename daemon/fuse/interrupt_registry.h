// Matches FUSE_INTERRUPT to the request it names, whichever of the two is served first.
#pragma once

#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <unordered_map>

namespace svfs::fuse {

// The signal that wakes a thread blocked in a lock wait when its request is interrupted. The
// transport installs a no-op handler without SA_RESTART for it.
inline constexpr int kInterruptSignal = SIGUSR2;
void InstallInterruptSignalHandler();

// How many interrupts that named no waiting request are kept at once; the oldest goes first.
inline constexpr size_t kMaxKeptInterrupts = 16;

// The requests waiting in the filesystem (SETLKW) and the interrupts that found no waiting
// request. The rules:
//  - An INTERRUPT for a waiting request sets the request's flag and signals its thread, and
//    signals it again until the wait ends (at most kResendLimit): a signal that lands after the
//    waiter checked its flag but before it blocked is lost.
//  - An INTERRUPT for no waiting request is kept, since the kernel sends it as soon as the caller
//    gets a signal and, with several workers or queues, it may be served before its request. A
//    request that starts waiting with a kept interrupt for its unique starts interrupted. At most
//    kMaxKeptInterrupts are kept, each for at most the lifetime given, so a guest cannot grow it.
//  - A request that ends drops a kept interrupt for its unique: the kernel may give the unique to
//    a later request.
//  - INTERRUPT is never answered. The kernel would resend one answered EAGAIN at once, so the
//    EAGAIN libfuse sends for an unknown unique would, sent right away, loop for as long as the
//    request runs; keeping the interrupt needs no reply.
// Lock order: mutex_ is a leaf. Nothing else is locked while it is held, and it is never held
// while calling into the filesystem or replying.
class InterruptRegistry {
 public:
  explicit InterruptRegistry(std::chrono::milliseconds kept_lifetime);

  // One request waiting, registered for its lifetime. Not movable: the registry holds its address.
  class Wait {
   public:
    Wait(InterruptRegistry& registry, uint64_t unique);
    ~Wait();
    Wait(const Wait&) = delete;
    Wait& operator=(const Wait&) = delete;
    // Set once the request is interrupted; the filesystem polls it (fs::Context::interrupted).
    const std::atomic<bool>& interrupted() const { return interrupted_; }

   private:
    friend class InterruptRegistry;
    InterruptRegistry& registry_;
    uint64_t unique_;
    pthread_t thread_;
    std::atomic<bool> interrupted_{false};
  };

  // FUSE_INTERRUPT for `unique`. Returns once the waits it interrupted have ended, or after
  // kResendLimit if the filesystem ignores the flag.
  void interrupt(uint64_t unique);
  // The request `unique` has been answered (every opcode but INTERRUPT).
  void finished(uint64_t unique);
  // Interrupts every wait once (a queue stop); kept interrupts stay for requests still to come.
  void interrupt_all();
  // A new session: uniques start over, so interrupts kept from the old one name nothing.
  void forget_kept();

  static constexpr std::chrono::milliseconds kResendPeriod{10};
  static constexpr std::chrono::milliseconds kResendLimit{1000};

 private:
  using Clock = std::chrono::steady_clock;
  struct Kept {
    uint64_t unique;
    Clock::time_point expires;
  };

  void add(Wait& wait);
  void remove(Wait& wait);
  // Flags and signals every wait for `unique`; returns whether there was one. Needs mutex_.
  bool signal_waits(uint64_t unique);
  // Removes the kept interrupt for `unique`; returns whether there was one. Needs mutex_.
  bool take_kept(uint64_t unique);
  void drop_expired(Clock::time_point now);  // needs mutex_

  const std::chrono::milliseconds kept_lifetime_;
  std::mutex mutex_;
  std::condition_variable wait_ended_;
  // A multimap: a guest may reuse a unique while a request with it still waits, and each wait
  // must stay interruptible (a queue stop interrupts them all).
  std::unordered_multimap<uint64_t, Wait*> waits_;
  std::deque<Kept> kept_;  // oldest first
  // kept_.size(), read without the lock so that finished() costs nothing when none are kept.
  std::atomic<size_t> kept_count_{0};
};

}  // namespace svfs::fuse
