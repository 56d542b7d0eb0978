// Move-only owner of an eventfd: the counter wakes a poll()er; signal() adds one, drain() reads
// the counter back to zero. Also wraps eventfds received from a vhost-user frontend (kick, call,
// err), so every write of the 8-byte counter is here.
#pragma once

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

#include "common/unique_fd.h"

namespace svfs {

class EventFd {
 public:
  EventFd() = default;
  explicit EventFd(UniqueFd fd) : fd_(std::move(fd)) {}
  // A new non-blocking eventfd, or an empty one (errno set) if the kernel refused.
  static EventFd Create() { return EventFd(UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK))); }

  int get() const { return fd_.get(); }
  explicit operator bool() const { return fd_.valid(); }
  void reset() { fd_.reset(); }

  // Adds one to the counter. A full counter (EAGAIN) is already signalled; false with errno set
  // on any other failure. An empty EventFd is nothing to signal: true.
  bool signal() const {
    if (!fd_) return true;
    uint64_t one = 1;
    ssize_t n;
    do {
      n = ::write(fd_.get(), &one, sizeof(one));
    } while (n < 0 && errno == EINTR);
    return n == sizeof(one) || errno == EAGAIN;
  }
  // Reads the counter back to zero (one read does it without EFD_SEMAPHORE). Blocks on a
  // blocking eventfd at zero: call it on a frontend's fd only after poll() said POLLIN.
  void drain() const {
    uint64_t count;
    (void)!::read(fd_.get(), &count, sizeof(count));
  }

 private:
  UniqueFd fd_;
};

}  // namespace svfs
