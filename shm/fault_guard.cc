#include "shm/fault_guard.h"

#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <bit>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <span>
#include <utility>

namespace svfs::shm {
namespace {

static_assert(std::atomic<uintptr_t>::is_always_lock_free && std::atomic<bool>::is_always_lock_free,
              "the SIGBUS handler reads the ranges without locks");

struct Range {
  std::atomic<uintptr_t> begin{0};  // 0: slot free
  std::atomic<uintptr_t> end{0};
  std::atomic<uintptr_t> page_size{0};
  std::atomic<bool> tripped{false};
};

// Fixed storage, never freed: the handler may run at any time on any thread.
Range g_ranges[FaultGuard::kMaxRanges];
std::mutex g_register_mutex;  // serializes slot allocation only; the handler never takes it
struct sigaction g_previous {};
uintptr_t g_page_size = 4096;
int g_trip_fd = -1;

void ChainToPrevious(int signal, siginfo_t* info, void* context) {
  if ((g_previous.sa_flags & SA_SIGINFO) && g_previous.sa_sigaction != nullptr) {
    g_previous.sa_sigaction(signal, info, context);
    return;
  }
  if (g_previous.sa_handler != SIG_DFL && g_previous.sa_handler != SIG_IGN &&
      g_previous.sa_handler != nullptr) {
    g_previous.sa_handler(signal);
    return;
  }
  // Not ours and no one else's: die of it as without the handler (the access faults again).
  ::signal(SIGBUS, SIG_DFL);
}

void OnSigbus(int signal, siginfo_t* info, void* context) {
  const uintptr_t address = reinterpret_cast<uintptr_t>(info->si_addr);
  // Only a fault the kernel raised (si_code > 0) names a real address: a SIGBUS queued by
  // another process (sigqueue, si_code <= 0) must not get pages replaced.
  for (Range& range : info->si_code > 0 ? g_ranges : std::span<Range>()) {
    uintptr_t begin = range.begin.load(std::memory_order_acquire);
    if (begin == 0 || address < begin || address >= range.end.load(std::memory_order_acquire)) {
      continue;
    }
    const int saved_errno = errno;
    const uintptr_t page_size = range.page_size.load(std::memory_order_acquire);
    void* page = reinterpret_cast<void*>(address & ~(page_size - 1));
    int flags = MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS;
    if (page_size > g_page_size) flags |= MAP_HUGETLB | (std::countr_zero(page_size) << MAP_HUGE_SHIFT);
    void* mapped = ::mmap(page, page_size, PROT_READ | PROT_WRITE, flags, -1, 0);
    if (mapped != MAP_FAILED) {
      range.tripped.store(true, std::memory_order_release);
      if (g_trip_fd >= 0) {
        uint64_t one = 1;
        (void)!::write(g_trip_fd, &one, sizeof(one));
      }
    }
    errno = saved_errno;
    if (mapped != MAP_FAILED) return;  // the access is retried and now succeeds
    break;
  }
  ChainToPrevious(signal, info, context);
}

void InstallOnce() {
  static std::once_flag installed;
  std::call_once(installed, [] {
    long page = ::sysconf(_SC_PAGESIZE);
    if (page > 0) g_page_size = static_cast<uintptr_t>(page);
    g_trip_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    struct sigaction action {};
    action.sa_sigaction = OnSigbus;
    action.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&action.sa_mask);
    ::sigaction(SIGBUS, &action, &g_previous);
  });
}

}  // namespace

FaultGuard FaultGuard::Guard(const void* base, size_t length, size_t page_size) {
  if (base == nullptr || length == 0) return FaultGuard();
  InstallOnce();
  std::lock_guard lock(g_register_mutex);
  for (size_t i = 0; i < kMaxRanges; ++i) {
    Range& range = g_ranges[i];
    if (range.begin.load(std::memory_order_relaxed) != 0) continue;
    const uintptr_t begin = reinterpret_cast<uintptr_t>(base);
    range.tripped.store(false, std::memory_order_relaxed);
    range.end.store(begin + length, std::memory_order_relaxed);
    range.page_size.store(page_size != 0 ? page_size : g_page_size, std::memory_order_relaxed);
    range.begin.store(begin, std::memory_order_release);  // publishes end and tripped
    return FaultGuard(static_cast<int>(i));
  }
  return FaultGuard();
}

int FaultGuard::TripFd() {
  InstallOnce();
  return g_trip_fd;
}

FaultGuard::FaultGuard(FaultGuard&& other) noexcept : slot_(std::exchange(other.slot_, -1)) {}

FaultGuard& FaultGuard::operator=(FaultGuard&& other) noexcept {
  if (this != &other) {
    release();
    slot_ = std::exchange(other.slot_, -1);
  }
  return *this;
}

FaultGuard::~FaultGuard() { release(); }

bool FaultGuard::tripped() const {
  return slot_ >= 0 && g_ranges[slot_].tripped.load(std::memory_order_acquire);
}

void FaultGuard::release() {
  if (slot_ < 0) return;
  std::lock_guard lock(g_register_mutex);
  g_ranges[slot_].begin.store(0, std::memory_order_release);
  g_ranges[slot_].end.store(0, std::memory_order_release);
  slot_ = -1;
}

}  // namespace svfs::shm
