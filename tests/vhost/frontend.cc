#include "tests/vhost/frontend.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <new>
#include <stdexcept>
#include <system_error>
#include <thread>

namespace svfs::vhost {
namespace {

[[noreturn]] void ThrowErrno(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}

// Rings are shared with another process: index fields are accessed atomically so the compiler
// neither tears nor caches them, and fences order them against the ring entries.
std::uint16_t LoadAcquire(const std::uint16_t& v) {
  return std::atomic_ref<const std::uint16_t>(v).load(std::memory_order_acquire);
}
void StoreRelease(std::uint16_t& v, std::uint16_t value) {
  std::atomic_ref<std::uint16_t>(v).store(value, std::memory_order_release);
}

template <typename T>
void Append(std::vector<std::uint8_t>& out, const T& value) {
  const auto* p = reinterpret_cast<const std::uint8_t*>(&value);
  out.insert(out.end(), p, p + sizeof(T));
}

// Payload layouts from vhost-user.rst.
struct VringState {
  std::uint32_t index, num;
};
struct VringAddr {
  std::uint32_t index, flags;
  std::uint64_t desc_user_addr, used_user_addr, avail_user_addr, log_guest_addr;
};
struct MemoryRegion {
  std::uint64_t guest_phys_addr, memory_size, userspace_addr, mmap_offset;
};
struct MessageHeader {
  std::uint32_t request, flags, size;
};
static_assert(sizeof(VringAddr) == 40 && sizeof(MemoryRegion) == 32 && sizeof(MessageHeader) == 12);

}  // namespace

UniqueFd& UniqueFd::operator=(UniqueFd&& other) noexcept {
  if (this != &other) reset(other.release());
  return *this;
}

void UniqueFd::reset(int fd) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

// ---------------------------------------------------------------------------------------------
// GuestMemory

GuestMemory::GuestMemory(std::size_t size) : size_(size) {
  fd_.reset(::memfd_create("svfs-vhost-guest", MFD_CLOEXEC));
  if (!fd_) ThrowErrno("memfd_create");
  if (::ftruncate(fd_.get(), static_cast<off_t>(size)) != 0) ThrowErrno("ftruncate guest memory");
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd_.get(), 0);
  if (p == MAP_FAILED) ThrowErrno("mmap guest memory");
  base_ = static_cast<std::uint8_t*>(p);
}

GuestMemory::~GuestMemory() {
  if (base_ != nullptr) ::munmap(base_, size_);
}

std::uint8_t* GuestMemory::ptr(std::uint64_t gpa, std::size_t len) const {
  if (gpa > size_ || len > size_ - gpa) throw std::out_of_range("guest address outside memory");
  return base_ + gpa;
}

std::uint64_t GuestMemory::alloc(std::size_t size, std::size_t align) {
  std::size_t start = (next_ + align - 1) & ~(align - 1);
  if (start > size_ || size > size_ - start) throw std::bad_alloc();
  next_ = start + size;
  return start;
}

// ---------------------------------------------------------------------------------------------
// Virtqueue

Virtqueue::Virtqueue(GuestMemory& mem, unsigned index, std::uint16_t size, bool event_idx)
    : mem_(mem), index_(index), size_(size), event_idx_(event_idx), chains_(size) {
  if (size == 0 || (size & (size - 1)) != 0) throw std::invalid_argument("queue size not 2^n");
  // Each ring gets its own page-aligned block: more than the alignment virtio needs (16/2/4), and
  // keeps rings away from request buffers so a stray buffer overrun is easy to spot.
  desc_gpa_ = mem.alloc(sizeof(VirtqDesc) * size, 4096);
  avail_gpa_ = mem.alloc(sizeof(std::uint16_t) * (3 + size), 4096);
  used_gpa_ = mem.alloc(4 + sizeof(UsedElem) * size + 2, 4096);
  desc_ = reinterpret_cast<VirtqDesc*>(mem.ptr(desc_gpa_));
  avail_ = reinterpret_cast<std::uint16_t*>(mem.ptr(avail_gpa_));
  used_hdr_ = reinterpret_cast<std::uint16_t*>(mem.ptr(used_gpa_));
  used_ring_ = reinterpret_cast<UsedElem*>(mem.ptr(used_gpa_ + 4));
  // Request an interrupt for every used entry (no VRING_AVAIL_F_NO_INTERRUPT); with EVENT_IDX the
  // used_event field plays that role and collect() keeps it current.
  avail_[0] = 0;  // flags
  avail_[1] = 0;  // idx
  kick_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  call_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!kick_ || !call_) ThrowErrno("eventfd");
  free_.reserve(size);
  for (int i = size - 1; i >= 0; --i) free_.push_back(static_cast<std::uint16_t>(i));
}

std::uint16_t Virtqueue::add_chain(std::span<const Buffer> readable, std::span<const Buffer> writable,
                                   bool publish) {
  std::size_t n = readable.size() + writable.size();
  if (n == 0 || n > free_.size()) throw std::runtime_error("virtqueue: not enough free descriptors");
  std::vector<std::uint16_t> ids(free_.end() - n, free_.end());
  free_.resize(free_.size() - n);
  for (std::size_t i = 0; i < n; ++i) {
    const Buffer& b = i < readable.size() ? readable[i] : writable[i - readable.size()];
    std::uint16_t flags = i < readable.size() ? 0 : kDescWrite;
    if (i + 1 < n) flags |= kDescNext;
    set_desc(ids[i], b.gpa, b.len, flags, i + 1 < n ? ids[i + 1] : 0);
  }
  std::uint16_t head = ids[0];
  chains_[head] = std::move(ids);
  if (publish) push_avail(head);
  return head;
}

std::uint16_t Virtqueue::add_indirect_chain(std::span<const Buffer> readable,
                                            std::span<const Buffer> writable) {
  std::size_t n = readable.size() + writable.size();
  if (n == 0 || free_.empty()) throw std::runtime_error("virtqueue: no free descriptor");
  std::uint64_t table_gpa = mem_.alloc(sizeof(VirtqDesc) * n, 16);
  auto* table = reinterpret_cast<VirtqDesc*>(mem_.ptr(table_gpa, sizeof(VirtqDesc) * n));
  for (std::size_t i = 0; i < n; ++i) {
    const Buffer& b = i < readable.size() ? readable[i] : writable[i - readable.size()];
    std::uint16_t flags = i < readable.size() ? 0 : kDescWrite;
    if (i + 1 < n) flags |= kDescNext;
    table[i] = VirtqDesc{b.gpa, b.len, flags, static_cast<std::uint16_t>(i + 1 < n ? i + 1 : 0)};
  }
  std::uint16_t head = free_.back();
  free_.pop_back();
  set_desc(head, table_gpa, static_cast<std::uint32_t>(sizeof(VirtqDesc) * n), kDescIndirect);
  chains_[head] = {head};
  push_avail(head);
  return head;
}

void Virtqueue::kick() {
  std::uint64_t one = 1;
  if (::write(kick_.get(), &one, sizeof(one)) != sizeof(one)) ThrowErrno("kick");
}

std::vector<UsedElem> Virtqueue::collect(std::size_t min_count, std::chrono::milliseconds timeout) {
  std::vector<UsedElem> out;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    reap([&](const UsedElem& u) {
      out.push_back(u);
      // A misbehaving backend may return ids we never made available; keep them in `out` for the
      // test to judge but only recycle descriptors of chains we built.
      if (u.id < size_ && !chains_[u.id].empty()) {
        free_.insert(free_.end(), chains_[u.id].begin(), chains_[u.id].end());
        chains_[u.id].clear();
      }
    });
    if (out.size() >= min_count) return out;
    if (event_idx_) {
      // Ask for an interrupt as soon as the next entry is used, then re-check to close the race
      // with an entry added between the scan above and this store.
      // used_event lives right after the avail ring entries.
      StoreRelease(avail_[2 + size_], last_used_idx_);
      std::atomic_thread_fence(std::memory_order_seq_cst);
      if (last_used_idx_ != LoadAcquire(used_hdr_[1])) continue;
    }
    auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return out;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count();
    pollfd pfd{call_.get(), POLLIN, 0};
    int r = ::poll(&pfd, 1, static_cast<int>(std::max<long long>(left, 1)));
    if (r < 0 && errno != EINTR) ThrowErrno("poll call fd");
    if (r > 0) {
      std::uint64_t count;
      (void)!::read(call_.get(), &count, sizeof(count));  // non-blocking; just clears the counter
    }
  }
}

void Virtqueue::release_chain(std::uint16_t head) {
  if (head >= size_ || chains_[head].empty()) throw std::runtime_error("virtqueue: no such chain");
  free_.insert(free_.end(), chains_[head].begin(), chains_[head].end());
  chains_[head].clear();
}

bool Virtqueue::kick_needed(std::uint16_t old) const {
  if (!event_idx_) return true;
  // Order our avail idx store before reading the backend's avail_event.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  // avail_event lives right after the used ring entries.
  std::uint16_t event = LoadAcquire(*reinterpret_cast<const std::uint16_t*>(used_ring_ + size_));
  return static_cast<std::uint16_t>(avail_idx_ - event - 1) < static_cast<std::uint16_t>(avail_idx_ - old);
}

bool Virtqueue::arm_interrupt(std::uint16_t after) {
  if (event_idx_) {
    StoreRelease(avail_[2 + size_], static_cast<std::uint16_t>(last_used_idx_ + after));
    std::atomic_thread_fence(std::memory_order_seq_cst);
  }
  return last_used_idx_ != LoadAcquire(used_hdr_[1]);
}

void Virtqueue::disable_interrupts() {
  constexpr std::uint16_t kNoInterrupt = 1;  // VRING_AVAIL_F_NO_INTERRUPT
  StoreRelease(avail_[0], static_cast<std::uint16_t>(LoadAcquire(avail_[0]) | kNoInterrupt));
  if (event_idx_) StoreRelease(avail_[2 + size_], static_cast<std::uint16_t>(last_used_idx_ - 1));
}

std::vector<std::uint16_t> Virtqueue::reserve(std::size_t n) {
  if (n > free_.size()) throw std::runtime_error("virtqueue: not enough free descriptors");
  std::vector<std::uint16_t> ids(free_.end() - n, free_.end());
  free_.resize(free_.size() - n);
  std::reverse(ids.begin(), ids.end());
  return ids;
}

VirtqDesc& Virtqueue::desc(std::uint16_t i) { return desc_[i % size_]; }

void Virtqueue::set_desc(std::uint16_t i, std::uint64_t addr, std::uint32_t len, std::uint16_t flags,
                         std::uint16_t next) {
  VirtqDesc& d = desc(i);
  d.addr = addr;
  d.len = len;
  d.flags = flags;
  d.next = next;
}

void Virtqueue::push_avail(std::uint16_t head) {
  avail_[2 + avail_idx_ % size_] = head;
  ++avail_idx_;
  // Release: the descriptors and the ring slot must be visible before the new index.
  StoreRelease(avail_[1], avail_idx_);
}

void Virtqueue::set_avail_idx(std::uint16_t idx) {
  avail_idx_ = idx;
  StoreRelease(avail_[1], idx);
}

std::uint16_t Virtqueue::used_idx() const { return LoadAcquire(used_hdr_[1]); }

// ---------------------------------------------------------------------------------------------
// DaxWindowHost

namespace {
constexpr std::uint32_t kFsMap = 6, kFsUnmap = 7, kFsIo = 9;
constexpr std::size_t kFsEntries = 8;
constexpr std::uint64_t kFsFlagRead = 1, kFsFlagWrite = 2;
constexpr std::size_t kPage = 4096;
}  // namespace

DaxWindowHost::DaxWindowHost(std::size_t size, UniqueFd channel)
    : size_(size), channel_(std::move(channel)), page_mapped_(size / kPage) {
  void* p = ::mmap(nullptr, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) ThrowErrno("mmap DAX window");
  base_ = static_cast<std::uint8_t*>(p);
  stop_.reset(::eventfd(0, EFD_CLOEXEC));
  if (!stop_) ThrowErrno("eventfd");
  thread_ = std::thread([this] { serve(); });
}

DaxWindowHost::~DaxWindowHost() {
  std::uint64_t one = 1;
  if (::write(stop_.get(), &one, sizeof(one)) != sizeof(one)) std::terminate();
  thread_.join();
  ::munmap(base_, size_);
}

bool DaxWindowHost::mapped(std::uint64_t offset) const {
  std::lock_guard lock(mutex_);
  return offset < size_ && page_mapped_[offset / kPage];
}

void DaxWindowHost::serve() {
  for (;;) {
    pollfd fds[2] = {{channel_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[1].revents) return;
    MessageHeader hdr;
    iovec iov{&hdr, sizeof(hdr)};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 8)];
    msghdr mh{};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = control;
    mh.msg_controllen = sizeof(control);
    ssize_t n = ::recvmsg(channel_.get(), &mh, MSG_CMSG_CLOEXEC | MSG_WAITALL);
    if (n != sizeof(hdr)) return;  // the backend closed its end
    UniqueFd fd;
    for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c != nullptr; c = CMSG_NXTHDR(&mh, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (std::size_t i = 0; i < count; ++i) {
        int received;
        std::memcpy(&received, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        if (!fd) fd.reset(received); else ::close(received);
      }
    }
    if (hdr.size > 4096) return;
    std::vector<std::uint8_t> payload(hdr.size);
    if (hdr.size != 0 && ::recv(channel_.get(), payload.data(), hdr.size, MSG_WAITALL) !=
                             static_cast<ssize_t>(hdr.size)) {
      return;
    }
    const std::uint64_t result = handle(hdr.request, payload, fd.get());
    ++requests_;
    if (!answering_ || !(hdr.flags & msg::kFlagNeedReply)) continue;
    struct {
      MessageHeader hdr;
      std::uint64_t value;
    } __attribute__((packed)) answer{{answer_code_ != 0 ? answer_code_.load() : hdr.request,
                                       msg::kFlagVersion | msg::kFlagReply, 8},
                                      result};
    if (::send(channel_.get(), &answer, sizeof(answer), MSG_NOSIGNAL) != sizeof(answer)) return;
  }
}

std::uint64_t DaxWindowHost::handle(std::uint32_t request, std::span<const std::uint8_t> payload,
                                    int fd) {
  // The four arrays of VhostUserFSSlaveMsg, entry by entry.
  if ((request != kFsMap && request != kFsUnmap && request != kFsIo) ||
      payload.size() != 4 * kFsEntries * 8) {
    return 1;
  }
  auto field = [&](std::size_t array, std::size_t i) {
    std::uint64_t v;
    std::memcpy(&v, payload.data() + (array * kFsEntries + i) * 8, sizeof(v));
    return v;
  };
  if (request == kFsIo) {
    auto fail = [](int error) { return static_cast<std::uint64_t>(-static_cast<std::int64_t>(error)); };
    if (fd < 0) return fail(EBADF);
    std::uint64_t done = 0;
    for (std::size_t i = 0; i < kFsEntries; ++i) {
      const std::uint64_t fd_offset = field(0, i), gpa = field(1, i), len = field(2, i),
                          flags = field(3, i);
      if (len == 0) continue;
      if (gpa < kGuestAddr || gpa - kGuestAddr > size_ || len > size_ - (gpa - kGuestAddr)) {
        return done != 0 ? done : fail(EFAULT);
      }
      std::uint8_t* at = base_ + (gpa - kGuestAddr);
      const ssize_t n = (flags & kFsFlagRead) ? ::pread(fd, at, len, static_cast<off_t>(fd_offset))
                                              : ::pwrite(fd, at, len, static_cast<off_t>(fd_offset));
      if (n < 0) return done != 0 ? done : fail(errno);
      done += static_cast<std::uint64_t>(n);
      if (static_cast<std::uint64_t>(n) < len) break;
    }
    return done;
  }
  if (request == kFsMap && fd < 0) return 1;
  std::lock_guard lock(mutex_);
  for (std::size_t i = 0; i < kFsEntries; ++i) {
    const std::uint64_t fd_offset = field(0, i), offset = field(1, i), len = field(2, i),
                        flags = field(3, i);
    if (len == 0) continue;
    if (offset > size_ || len > size_ - offset || offset % kPage || len % kPage) return 1;
    void* at = base_ + offset;
    void* p;
    if (request == kFsMap) {
      const int prot = ((flags & kFsFlagRead) ? PROT_READ : 0) |
                       ((flags & kFsFlagWrite) ? PROT_WRITE : 0);
      p = ::mmap(at, len, prot, MAP_SHARED | MAP_FIXED, fd, static_cast<off_t>(fd_offset));
    } else {
      p = ::mmap(at, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1,
                 0);
    }
    if (p == MAP_FAILED) return 1;
    for (std::uint64_t page = offset / kPage; page < (offset + len) / kPage; ++page) {
      page_mapped_[page] = request == kFsMap;
    }
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------
// VhostUserFrontend

VhostUserFrontend::VhostUserFrontend(const std::string& socket_path, FrontendOptions options,
                                     std::chrono::milliseconds connect_timeout)
    : options_(options) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof(addr.sun_path)) throw std::invalid_argument("socket path too long");
  std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size() + 1);
  // The backend creates its socket asynchronously after being spawned: retry until it listens.
  auto deadline = std::chrono::steady_clock::now() + connect_timeout;
  for (;;) {
    sock_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!sock_) ThrowErrno("socket");
    if (::connect(sock_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) break;
    if (std::chrono::steady_clock::now() >= deadline) ThrowErrno("connect " + socket_path);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  // A hung backend must fail the test, not hang it.
  timeval tv{static_cast<time_t>(options_.reply_timeout.count() / 1000),
             static_cast<suseconds_t>(options_.reply_timeout.count() % 1000 * 1000)};
  ::setsockopt(sock_.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  handshake();
}

VhostUserFrontend::~VhostUserFrontend() = default;

void VhostUserFrontend::send_message(std::uint32_t request, std::span<const std::uint8_t> payload,
                                     std::span<const int> fds, bool need_reply) {
  send_header(request, msg::kFlagVersion | (need_reply ? msg::kFlagNeedReply : 0u),
              static_cast<std::uint32_t>(payload.size()), payload, fds);
}

void VhostUserFrontend::send_raw(std::uint32_t request, std::uint32_t flags,
                                 std::span<const std::uint8_t> payload, std::span<const int> fds,
                                 std::optional<std::uint32_t> declared_size) {
  send_header(request, flags, declared_size.value_or(static_cast<std::uint32_t>(payload.size())),
              payload, fds);
}

std::optional<std::vector<std::uint8_t>> VhostUserFrontend::wait_reply(
    std::uint32_t request, std::chrono::milliseconds timeout) {
  pollfd pfd{sock_.get(), POLLIN, 0};
  if (::poll(&pfd, 1, static_cast<int>(timeout.count())) <= 0) return std::nullopt;
  char probe;
  if (::recv(sock_.get(), &probe, 1, MSG_PEEK | MSG_DONTWAIT) <= 0) return std::nullopt;  // closed
  try {
    return receive_reply(request).payload;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

bool VhostUserFrontend::connection_closed(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    pollfd pfd{sock_.get(), POLLIN, 0};
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (::poll(&pfd, 1, static_cast<int>(std::max<long long>(left.count(), 0))) <= 0) return false;
    if (pfd.revents & (POLLHUP | POLLERR)) return true;
    char buf[256];
    ssize_t n = ::recv(sock_.get(), buf, sizeof(buf), MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) return true;
    // Unexpected bytes (a stray reply) are discarded; keep waiting for EOF.
  }
}

void VhostUserFrontend::send_header(std::uint32_t request, std::uint32_t flags, std::uint32_t size,
                                    std::span<const std::uint8_t> payload, std::span<const int> fds) {
  MessageHeader hdr{request, flags, size};
  iovec iov[2] = {{&hdr, sizeof(hdr)},
                  {const_cast<std::uint8_t*>(payload.data()), payload.size()}};
  msghdr mh{};
  mh.msg_iov = iov;
  mh.msg_iovlen = payload.empty() ? 1 : 2;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 8)]{};
  if (!fds.empty()) {
    if (fds.size() > 8) throw std::invalid_argument("vhost-user: at most 8 fds per message");
    mh.msg_control = control;
    mh.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  ssize_t want = sizeof(hdr) + payload.size();
  ssize_t n = ::sendmsg(sock_.get(), &mh, MSG_NOSIGNAL);
  if (n != want) ThrowErrno("vhost-user sendmsg request " + std::to_string(request));
}

VhostUserFrontend::Reply VhostUserFrontend::receive_reply(std::uint32_t request) {
  auto read_exact = [&](void* buf, std::size_t len) {
    std::size_t got = 0;
    while (got < len) {
      ssize_t n = ::recv(sock_.get(), static_cast<char*>(buf) + got, len - got, 0);
      if (n == 0) throw std::runtime_error("vhost-user: backend closed the connection");
      if (n < 0) {
        if (errno == EINTR) continue;
        ThrowErrno("vhost-user recv reply to request " + std::to_string(request));
      }
      got += static_cast<std::size_t>(n);
    }
  };
  MessageHeader hdr;
  read_exact(&hdr, sizeof(hdr));
  if (hdr.request != request || !(hdr.flags & msg::kFlagReply) || hdr.size > 4096)
    throw std::runtime_error("vhost-user: malformed reply to request " + std::to_string(request));
  Reply r{hdr.request, hdr.flags, std::vector<std::uint8_t>(hdr.size)};
  read_exact(r.payload.data(), r.payload.size());
  return r;
}

std::uint64_t VhostUserFrontend::get_u64(std::uint32_t request) {
  send_message(request, {});
  Reply r = receive_reply(request);
  if (r.payload.size() != sizeof(std::uint64_t))
    throw std::runtime_error("vhost-user: reply to " + std::to_string(request) + " is not a u64");
  std::uint64_t v;
  std::memcpy(&v, r.payload.data(), sizeof(v));
  return v;
}

void VhostUserFrontend::set(std::uint32_t request, std::span<const std::uint8_t> payload,
                            std::span<const int> fds) {
  bool ack = (acked_protocol_features_ & protocol_feature::kReplyAck) != 0;
  send_message(request, payload, fds, ack);
  if (!ack) return;
  Reply r = receive_reply(request);
  std::uint64_t status = 1;
  if (r.payload.size() == sizeof(status)) std::memcpy(&status, r.payload.data(), sizeof(status));
  if (status != 0)
    throw std::runtime_error("vhost-user: backend refused request " + std::to_string(request));
}

void VhostUserFrontend::set_u64(std::uint32_t request, std::uint64_t value, std::span<const int> fds) {
  std::vector<std::uint8_t> p;
  Append(p, value);
  set(request, p, fds);
}

void VhostUserFrontend::handshake() {
  // Order follows QEMU: owner, features, protocol features, queue count, then the device start
  // sequence (SET_FEATURES, memory table, per-ring setup).
  send_message(msg::kSetOwner, {});
  backend_features_ = get_u64(msg::kGetFeatures);
  if (!(backend_features_ & feature::kVersion1))
    throw std::runtime_error("vhost-user: backend does not offer VIRTIO_F_VERSION_1");
  acked_features_ = backend_features_ &
                    (feature::kVersion1 | feature::kIndirectDesc | feature::kProtocolFeatures |
                     (options_.event_idx ? feature::kEventIdx : 0));

  if (acked_features_ & feature::kProtocolFeatures) {
    backend_protocol_features_ = get_u64(msg::kGetProtocolFeatures);
    const std::uint64_t dax = options_.dax_window_size
                                  ? protocol_feature::kBackendReq | protocol_feature::kBackendSendFd
                                  : 0;
    acked_protocol_features_ =
        backend_protocol_features_ &
        (protocol_feature::kReplyAck | protocol_feature::kMq | protocol_feature::kConfig | dax);
    // SET_PROTOCOL_FEATURES itself is sent without NEED_REPLY: REPLY_ACK is not in force until
    // the backend has processed it.
    std::uint64_t acked = acked_protocol_features_;
    acked_protocol_features_ = 0;
    set_u64(msg::kSetProtocolFeatures, acked);
    acked_protocol_features_ = acked;
  }
  if (options_.dax_window_size) {
    // As QEMU: the backend channel right after the protocol features.
    if (!(acked_protocol_features_ & protocol_feature::kBackendReq))
      throw std::runtime_error("vhost-user: backend does not offer BACKEND_REQ (needed for DAX)");
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) ThrowErrno("socketpair");
    UniqueFd ours(pair[0]), theirs(pair[1]);
    int fd = theirs.get();
    set(msg::kSetBackendReqFd, {}, std::span<const int>(&fd, 1));
    dax_window_ = std::make_unique<DaxWindowHost>(options_.dax_window_size, std::move(ours));
  }
  if (acked_protocol_features_ & protocol_feature::kConfig) {
    // GET_CONFIG payload: u32 offset, u32 size, u32 flags, then `size` bytes (the reply carries the
    // same header with the bytes filled in). virtio-fs config: char tag[36]; le32
    // num_request_queues.
    constexpr std::uint32_t kConfigSize = 40;
    std::vector<std::uint8_t> p;
    Append(p, std::uint32_t{0});
    Append(p, kConfigSize);
    Append(p, std::uint32_t{0});
    p.resize(p.size() + kConfigSize);
    send_message(msg::kGetConfig, p);
    Reply r = receive_reply(msg::kGetConfig);
    if (r.payload.size() >= 12 + kConfigSize) {
      const char* tag = reinterpret_cast<const char*>(r.payload.data() + 12);
      FsConfig c{std::string(tag, strnlen(tag, 36)), 0};
      std::memcpy(&c.num_request_queues, r.payload.data() + 12 + 36, sizeof(std::uint32_t));
      fs_config_ = c;
    }
  }
  unsigned request_queues = std::max(1u, options_.request_queues);
  if (acked_protocol_features_ & protocol_feature::kMq) {
    backend_queue_num_ = get_u64(msg::kGetQueueNum);
    if (backend_queue_num_ >= 2)
      request_queues = std::min<std::uint64_t>(request_queues, backend_queue_num_ - 1);
    else
      request_queues = 1;
  } else if (fs_config_ && fs_config_->num_request_queues >= 1) {
    request_queues = std::min(request_queues, fs_config_->num_request_queues);
  } else {
    request_queues = 1;  // without MQ or config only the single request queue can be assumed
  }

  set_u64(msg::kSetFeatures, acked_features_);

  mem_ = std::make_unique<GuestMemory>(options_.memory_size);
  std::vector<std::uint8_t> p;
  const unsigned regions = std::max(1u, options_.memory_regions);
  if (mem_->size() % (std::uint64_t{regions} * 4096) != 0) {
    throw std::invalid_argument("memory_size must split into page-aligned regions");
  }
  Append(p, std::uint32_t{regions});  // nregions
  Append(p, std::uint32_t{0});        // padding
  const std::uint64_t region_size = mem_->size() / regions;
  std::vector<int> fds;
  for (unsigned i = 0; i < regions; ++i) {
    std::uint64_t gpa = i * region_size;
    Append(p, MemoryRegion{gpa, region_size, mem_->user_addr(gpa), gpa});
    fds.push_back(mem_->fd());  // one fd per region, all the same memfd at different offsets
  }
  set(msg::kSetMemTable, p, fds);

  bool event_idx = (acked_features_ & feature::kEventIdx) != 0;
  for (unsigned i = 0; i <= request_queues; ++i) {
    queues_.push_back(std::make_unique<Virtqueue>(*mem_, i, options_.queue_size, event_idx));
    setup_queue(*queues_.back());
  }
}

void VhostUserFrontend::setup_queue(Virtqueue& q) {
  std::vector<std::uint8_t> p;
  auto state = [&](std::uint32_t num) {
    p.clear();
    Append(p, VringState{q.index(), num});
    return std::span<const std::uint8_t>(p);
  };
  set(msg::kSetVringNum, state(q.size()));
  set(msg::kSetVringBase, state(0));
  p.clear();
  Append(p, VringAddr{q.index(), 0, mem_->user_addr(q.desc_gpa()), mem_->user_addr(q.used_gpa()),
                      mem_->user_addr(q.avail_gpa()), 0});
  set(msg::kSetVringAddr, p);
  // Call before kick: some backends start the ring as soon as the kick fd arrives.
  int call = q.call_fd(), kick = q.kick_fd();
  set_u64(msg::kSetVringCall, q.index(), std::span<const int>(&call, 1));
  set_u64(msg::kSetVringKick, q.index(), std::span<const int>(&kick, 1));
  // With PROTOCOL_FEATURES negotiated rings start disabled (vhost-user.rst, "Ring states").
  if (acked_features_ & feature::kProtocolFeatures) set(msg::kSetVringEnable, state(1));
}

}  // namespace svfs::vhost
