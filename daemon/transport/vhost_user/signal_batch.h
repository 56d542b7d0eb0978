// When a queue thread signals the driver (call eventfd) for the chains it has used.
//
// A signal may wake a sleeping driver: an eventfd write that sends an IPI costs the queue thread
// about 3 µs in a VM, more than a GETATTR. So used chains are signalled per batch: when the avail
// ring is drained (the caller's part), or once kMaxChains chains or kMaxDelay have gone by, so a
// reply waits at most for the one request served after it (and the queue thread signals before
// a request that may be slow, such as an fsync).
//
// The driver then takes a while to wake (5-10 µs), and until it reposts, a drained ring leaves
// the queue thread idle. So once kMinEarly chains wait for a signal and no more than kLowWater
// are left in the ring, the batch is signalled early: the driver's wake-up overlaps the serving
// of the chains left instead of following it (kLowWater GETATTRs take a little longer than
// the wake-up). While the driver is awake, EVENT_IDX makes the extra signals free (it has not asked
// for one); a ring fuller than kLowWater needs no early signal. Batches under kMinEarly wait
// for the drain: an early signal there would double the wake-ups.
//
// The constants come from a sweep with tests/bench/run-vhost-bench.sh's driver at depth 16 and
// one queue (docs/benchmarks.md, "Early signalling"), and were not tuned for pools or 2 queues.
//
// Pool workers batch the same way, with their queue's outstanding pooled jobs in place of the
// chains left in the ring; there the queue thread also signals a batch found overdue,
// so a reply does not wait for a slow request that a worker took up after it.
//
// EVENT_IDX still decides whether the driver wants each signal at all.
#pragma once

#include <chrono>

namespace svfs::transport::vhost_user {

class SignalBatch {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr unsigned kMaxChains = 16;
  static constexpr Clock::duration kMaxDelay = std::chrono::microseconds(20);
  static constexpr unsigned kMinEarly = 4;
  static constexpr unsigned kLowWater = 12;

  static_assert(kMinEarly >= 2 && kMinEarly < kMaxChains, "an early signal covers a batch's part");

  // A chain was used at `now`, and `still_available` chains wait in the ring (for pool workers:
  // pooled jobs not yet completed). True: signal now (then call signalled()).
  bool used(Clock::time_point now, unsigned still_available) {
    if (unsignalled_++ == 0) first_unsignalled_ = now;
    return unsignalled_ >= kMaxChains || now - first_unsignalled_ >= kMaxDelay ||
           (unsignalled_ >= kMinEarly && still_available <= kLowWater);
  }
  // Whether used chains wait for a signal.
  bool pending() const { return unsignalled_ > 0; }
  // Whether the first of them has waited kMaxDelay or more by `now`: for a caller that checks
  // from outside the serving thread (which may be stuck in a slow request).
  bool overdue(Clock::time_point now) const {
    return pending() && now - first_unsignalled_ >= kMaxDelay;
  }
  void signalled() { unsignalled_ = 0; }

 private:
  unsigned unsignalled_ = 0;
  Clock::time_point first_unsignalled_;
};

}  // namespace svfs::transport::vhost_user
