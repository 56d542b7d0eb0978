// How long a queue thread polls its avail ring before sleeping on the kick eventfd.
//
// A wake-up through the kick eventfd costs several microseconds on each side (more in a VM), which
// is most of a request's round trip at queue depth 1. Polling for a short while after a batch
// catches the driver's next request without that wake-up. The window adapts, like KVM's halt
// polling: it grows (10 µs, then doubling up to the maximum) when the thread slept and was woken
// within the maximum (a longer window would have caught that request), stays while polling
// succeeds, and halves when the thread slept longer than the maximum (the queue went idle), so an
// idle queue costs no CPU. A maximum of 0 disables polling.
#pragma once

#include <algorithm>
#include <chrono>

namespace svfs::transport::vhost_user {

class AdaptivePoll {
 public:
  using Duration = std::chrono::nanoseconds;
  static constexpr Duration kFirstWindow = std::chrono::microseconds(10);

  explicit AdaptivePoll(Duration max) : max_(max) {}

  // How long to poll before the next sleep (0: sleep at once).
  Duration window() const { return window_; }
  Duration max() const { return max_; }

  // The poll window passed without work, and the thread then slept for `slept` before its
  // wake-up. (A poll that finds work changes nothing: the window stays.)
  void slept(Duration slept) {
    if (max_ <= Duration::zero()) return;
    if (window_ + slept <= max_) {
      window_ = window_ == Duration::zero() ? std::min(kFirstWindow, max_) : std::min(window_ * 2, max_);
    } else {
      window_ /= 2;
      if (window_ < kFirstWindow) window_ = Duration::zero();
    }
  }

 private:
  Duration max_;
  Duration window_{0};
};

}  // namespace svfs::transport::vhost_user
