#include "daemon/fuse/interrupt_registry.h"

#include <signal.h>

#include <algorithm>

namespace svfs::fuse {

namespace {

void NoOpSignalHandler(int) {}

}  // namespace

void InstallInterruptSignalHandler() {
  struct sigaction action {};
  action.sa_handler = NoOpSignalHandler;
  sigemptyset(&action.sa_mask);
  action.sa_flags = 0;  // no SA_RESTART: a blocked fcntl must return EINTR
  sigaction(kInterruptSignal, &action, nullptr);
}

InterruptRegistry::InterruptRegistry(std::chrono::milliseconds kept_lifetime)
    : kept_lifetime_(kept_lifetime) {}

InterruptRegistry::Wait::Wait(InterruptRegistry& registry, uint64_t unique)
    : registry_(registry), unique_(unique), thread_(pthread_self()) {
  registry_.add(*this);
}

InterruptRegistry::Wait::~Wait() { registry_.remove(*this); }

void InterruptRegistry::add(Wait& wait) {
  std::lock_guard lock(mutex_);
  waits_.emplace(wait.unique_, &wait);
  // The interrupt may have been served first; the filesystem checks the flag before it blocks,
  // so no signal is needed.
  if (take_kept(wait.unique_)) wait.interrupted_.store(true, std::memory_order_release);
}

void InterruptRegistry::remove(Wait& wait) {
  {
    std::lock_guard lock(mutex_);
    auto [first, last] = waits_.equal_range(wait.unique_);
    auto it = std::find_if(first, last, [&](const auto& entry) { return entry.second == &wait; });
    if (it != last) waits_.erase(it);
  }
  wait_ended_.notify_all();
}

bool InterruptRegistry::signal_waits(uint64_t unique) {
  auto [first, last] = waits_.equal_range(unique);
  for (auto it = first; it != last; ++it) {
    it->second->interrupted_.store(true, std::memory_order_release);
    pthread_kill(it->second->thread_, kInterruptSignal);
  }
  return first != last;
}

void InterruptRegistry::interrupt(uint64_t unique) {
  std::unique_lock lock(mutex_);
  if (!signal_waits(unique)) {
    auto now = Clock::now();
    drop_expired(now);
    take_kept(unique);  // a resent interrupt replaces the one kept
    if (kept_.size() == kMaxKeptInterrupts) kept_.pop_front();
    kept_.push_back(Kept{.unique = unique, .expires = now + kept_lifetime_});
    kept_count_.store(kept_.size(), std::memory_order_relaxed);
    return;
  }
  auto give_up = Clock::now() + kResendLimit;
  while (Clock::now() < give_up) {
    wait_ended_.wait_for(lock, kResendPeriod);
    if (!signal_waits(unique)) return;
  }
}

void InterruptRegistry::finished(uint64_t unique) {
  // Racy by design: an interrupt kept just now for a request that just ended stays until it
  // expires, as one that arrives after its request ended does.
  if (kept_count_.load(std::memory_order_relaxed) == 0) return;
  std::lock_guard lock(mutex_);
  take_kept(unique);
}

void InterruptRegistry::interrupt_all() {
  std::lock_guard lock(mutex_);
  for (auto& [unique, wait] : waits_) {
    wait->interrupted_.store(true, std::memory_order_release);
    pthread_kill(wait->thread_, kInterruptSignal);
  }
}

void InterruptRegistry::forget_kept() {
  std::lock_guard lock(mutex_);
  kept_.clear();
  kept_count_.store(0, std::memory_order_relaxed);
}

bool InterruptRegistry::take_kept(uint64_t unique) {
  auto it = std::find_if(kept_.begin(), kept_.end(),
                         [&](const Kept& kept) { return kept.unique == unique; });
  if (it == kept_.end()) return false;
  bool live = it->expires > Clock::now();
  kept_.erase(it);
  kept_count_.store(kept_.size(), std::memory_order_relaxed);
  return live;
}

void InterruptRegistry::drop_expired(Clock::time_point now) {
  while (!kept_.empty() && kept_.front().expires <= now) kept_.pop_front();
  kept_count_.store(kept_.size(), std::memory_order_relaxed);
}

}  // namespace svfs::fuse
