// Survives the shrinking of a shared file under its mapping. A process that can truncate a file
// another process has mapped (a frontend and its guest memory file, a local user with write
// access to the version table) would otherwise kill the mapper with SIGBUS on its next access.
// A guarded range absorbs that: the SIGBUS handler maps a private zero page over the faulting
// page, the access completes (reads see zeros, writes go nowhere shared), and the guard is marked
// tripped so its owner can say so and give up on the mapping in an orderly way.
//
// Thread safety: guards may be created and destroyed from any thread. A guard must outlive every
// access to its range and be destroyed before the range is unmapped (the handler must not map
// over memory that has since been reused).
#pragma once

#include <cstddef>

namespace svfs::shm {

class FaultGuard {
 public:
  // The most ranges guarded at once in a process; beyond it Guard() returns an inactive guard
  // (the range then faults as without one).
  static constexpr size_t kMaxRanges = 128;

  FaultGuard() = default;
  // Guards [base, base + length), a mapping of pages of `page_size` bytes (0: the system page
  // size; a hugetlbfs mapping needs its huge page size). Installs the SIGBUS handler on first use.
  static FaultGuard Guard(const void* base, size_t length, size_t page_size = 0);
  // An eventfd the handler writes to each time any guard trips (async-signal-safe), for an event
  // loop that wants to react at once; -1 if it could not be created.
  static int TripFd();

  FaultGuard(FaultGuard&& other) noexcept;
  FaultGuard& operator=(FaultGuard&& other) noexcept;
  FaultGuard(const FaultGuard&) = delete;
  FaultGuard& operator=(const FaultGuard&) = delete;
  ~FaultGuard();

  bool active() const { return slot_ >= 0; }
  // Whether a SIGBUS in this range was absorbed: the file behind it shrank.
  bool tripped() const;

 private:
  explicit FaultGuard(int slot) : slot_(slot) {}
  void release();
  int slot_ = -1;
};

}  // namespace svfs::shm
