// A minimal vhost-user frontend (the role QEMU plays for a vhost-user-fs device), for tests and
// benchmarks of virtio-fs backends. It owns the guest memory (one memfd shared with the backend),
// lays out split virtqueues inside it, performs the vhost-user handshake and moves descriptor chains
// through the rings. It deliberately also exposes raw ring access so tests can hand the backend
// malformed chains. Single-threaded: one thread drives the frontend and all its queues.
//
// Facts used: QEMU docs/interop/vhost-user.rst (message ids, payload layouts, SCM_RIGHTS) and the
// virtio 1.x split ring layout (as in linux/virtio_ring.h, whose helpers are C-only).
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

namespace svfs::vhost {

// Owns a file descriptor; closes it on destruction.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept;
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void reset(int fd = -1);

 private:
  int fd_ = -1;
};

// Guest memory: a memfd mapped MAP_SHARED into this process and handed to the backend with
// SET_MEM_TABLE. Guest physical address 0 is offset 0 of the memfd. Buffers are handed out by a bump
// allocator; callers release everything allocated after a mark() in one go, which fits the
// submit-a-batch/collect-the-batch pattern of the tests and benchmarks.
class GuestMemory {
 public:
  explicit GuestMemory(std::size_t size);
  GuestMemory(const GuestMemory&) = delete;
  GuestMemory& operator=(const GuestMemory&) = delete;
  ~GuestMemory();

  int fd() const { return fd_.get(); }
  std::size_t size() const { return size_; }
  std::uint8_t* base() const { return base_; }
  // Frontend ("QEMU") virtual address of guest physical address `gpa`, as sent in SET_VRING_ADDR
  // and SET_MEM_TABLE's userspace_addr.
  std::uint64_t user_addr(std::uint64_t gpa) const {
    return reinterpret_cast<std::uintptr_t>(base_) + gpa;
  }
  // Pointer to guest physical address `gpa`; throws if [gpa, gpa+len) is not inside the memory.
  std::uint8_t* ptr(std::uint64_t gpa, std::size_t len = 0) const;

  // Allocates `size` bytes aligned to `align` (a power of two) and returns the guest physical
  // address. Throws std::bad_alloc when the memory is exhausted.
  std::uint64_t alloc(std::size_t size, std::size_t align = 64);
  std::size_t mark() const { return next_; }
  void release(std::size_t mark) { next_ = mark; }

 private:
  UniqueFd fd_;
  std::size_t size_;
  std::uint8_t* base_ = nullptr;
  std::size_t next_ = 0;
};

// Split ring layout (little-endian; we only run on little-endian hosts).
struct VirtqDesc {
  std::uint64_t addr;
  std::uint32_t len;
  std::uint16_t flags;
  std::uint16_t next;
};
static_assert(sizeof(VirtqDesc) == 16);
inline constexpr std::uint16_t kDescNext = 1, kDescWrite = 2, kDescIndirect = 4;

// One buffer of a descriptor chain, in guest physical addresses.
struct Buffer {
  std::uint64_t gpa;
  std::uint32_t len;
};

struct UsedElem {
  std::uint32_t id;   // head descriptor index of the chain
  std::uint32_t len;  // bytes the device says it wrote into the writable buffers
};

// A split virtqueue whose rings live in guest memory. The frontend side of the driver: it puts
// chains into the avail ring, kicks, waits on the call eventfd and reads the used ring.
class Virtqueue {
 public:
  Virtqueue(GuestMemory& mem, unsigned index, std::uint16_t size, bool event_idx);

  unsigned index() const { return index_; }
  std::uint16_t size() const { return size_; }
  int kick_fd() const { return kick_.get(); }
  int call_fd() const { return call_.get(); }
  std::uint64_t desc_gpa() const { return desc_gpa_; }
  std::uint64_t avail_gpa() const { return avail_gpa_; }
  std::uint64_t used_gpa() const { return used_gpa_; }
  std::size_t free_descriptors() const { return free_.size(); }
  std::size_t in_flight() const { return size_ - free_.size(); }

  // Builds a chain: readable buffers first, then writable ones (the order virtio requires), makes it
  // available and returns its head. Does not kick. Throws if not enough descriptors are free.
  // With publish = false the chain is built but not made available (post it later with repost).
  std::uint16_t add_chain(std::span<const Buffer> readable, std::span<const Buffer> writable,
                          bool publish = true);
  // Same, but the chain goes into an indirect table allocated in guest memory; the ring holds one
  // descriptor (needs VIRTIO_RING_F_INDIRECT_DESC).
  std::uint16_t add_indirect_chain(std::span<const Buffer> readable, std::span<const Buffer> writable);
  // Notifies the backend through the kick eventfd.
  void kick();
  // Returns used entries that appeared since the last call, waiting on the call eventfd until at
  // least `min_count` were collected or `timeout` passed. Descriptors of chains built by add_chain
  // are returned to the free list.
  std::vector<UsedElem> collect(std::size_t min_count, std::chrono::milliseconds timeout);

  // ---- Pipelined use (benchmarks): the caller builds each chain once with add_chain and posts it
  // again after every completion, the way a driver reuses its request buffers.
  // Calls on_used(UsedElem) for each entry used since the last reap or collect, without returning
  // descriptors to the free list (the caller still owns those chains). Returns how many.
  template <typename OnUsed>
  std::size_t reap(OnUsed&& on_used) {
    std::size_t n = 0;
    for (std::uint16_t end = used_idx(); last_used_idx_ != end; ++n) {
      on_used(used_ring_[last_used_idx_ % size_]);
      ++last_used_idx_;
      if (last_used_idx_ == end) end = used_idx();
    }
    return n;
  }
  // Makes chain `head` available again (descriptors as they are; adjust them with desc() first).
  void repost(std::uint16_t head) { push_avail(head); }
  // Returns the descriptors of chain `head` (built by add_chain, not in flight) to the free list.
  void release_chain(std::uint16_t head);
  // Whether the backend wants a kick for what was made available since avail index `old`:
  // always without EVENT_IDX, else the avail_event test (virtio 1.x 2.7.10, vring_need_event).
  bool kick_needed(std::uint16_t old) const;
  // Asks for the next interrupt once `after` + 1 more entries are used (EVENT_IDX used_event; a
  // no-op without it), then returns whether an entry is already waiting (so the caller must not
  // sleep). `after` > 0 delays the interrupt as Linux's virtqueue_enable_cb_delayed does.
  bool arm_interrupt(std::uint16_t after);
  // For a driver that polls the used ring: asks for no interrupts (VRING_AVAIL_F_NO_INTERRUPT;
  // with EVENT_IDX, a used_event just behind what is used, so none until the index wraps).
  void disable_interrupts();

  // ---- Raw access for hostile tests. These bypass every check; the queue is likely unusable for
  // normal traffic afterwards, which is the point.
  // Takes `n` descriptors out of the free list so raw chains do not collide with normal ones.
  std::vector<std::uint16_t> reserve(std::size_t n);
  VirtqDesc& desc(std::uint16_t i);
  void set_desc(std::uint16_t i, std::uint64_t addr, std::uint32_t len, std::uint16_t flags,
                std::uint16_t next = 0);
  // Writes `head` (any value, also out of range) into the next avail slot and publishes it.
  void push_avail(std::uint16_t head);
  // Publishes an arbitrary avail index (e.g. one that jumps more than size() entries).
  void set_avail_idx(std::uint16_t idx);
  std::uint16_t avail_idx() const { return avail_idx_; }
  std::uint16_t used_idx() const;

 private:
  GuestMemory& mem_;
  unsigned index_;
  std::uint16_t size_;
  bool event_idx_;
  std::uint64_t desc_gpa_ = 0, avail_gpa_ = 0, used_gpa_ = 0;
  VirtqDesc* desc_ = nullptr;
  // avail: u16 flags, u16 idx, u16 ring[size], u16 used_event.
  std::uint16_t* avail_ = nullptr;
  // used: u16 flags, u16 idx, UsedElem ring[size], u16 avail_event.
  std::uint16_t* used_hdr_ = nullptr;
  UsedElem* used_ring_ = nullptr;
  UniqueFd kick_, call_;
  std::uint16_t avail_idx_ = 0;      // our shadow of avail->idx
  std::uint16_t last_used_idx_ = 0;  // next used entry to read
  std::vector<std::uint16_t> free_;
  // For each head built by add_chain, the descriptors of its chain (empty for raw chains).
  std::vector<std::vector<std::uint16_t>> chains_;
};

// The VMM's side of DAX (what QEMU's virtio-fs-dev branch does for its cache): a window
// reserved in this process, PROT_NONE where nothing is mapped, and a thread answering the
// backend's FS_MAP / FS_UNMAP requests on the backend channel (SET_BACKEND_REQ_FD): FS_MAP
// mmaps the fd it carries MAP_SHARED at the entry's window offset, FS_UNMAP puts PROT_NONE
// back, and FS_IO preads or pwrites the fd at guest-physical addresses inside the window
// (kGuestAddr on). Wire layout: the virtio-fs-dev branch's VhostUserFSSlaveMsg (8 entries of
// fd_offset, c_offset, len, flags; request 6 FS_MAP, 7 FS_UNMAP, 9 FS_IO).
class DaxWindowHost {
 public:
  // Where the window sits in guest-physical space, as a PCI BAR would: outside the memory table.
  static constexpr std::uint64_t kGuestAddr = std::uint64_t{1} << 40;

  // `channel`: this side of the backend channel's socket pair.
  DaxWindowHost(std::size_t size, UniqueFd channel);
  ~DaxWindowHost();
  DaxWindowHost(const DaxWindowHost&) = delete;
  DaxWindowHost& operator=(const DaxWindowHost&) = delete;

  std::size_t size() const { return size_; }
  // The window's bytes at `offset` (only where something is mapped: elsewhere a read faults).
  const std::uint8_t* at(std::uint64_t offset) const { return base_ + offset; }
  // Whether the page at `offset` is mapped now.
  bool mapped(std::uint64_t offset) const;
  // false: requests are read but never answered (a VMM whose main loop is stuck).
  void set_answering(bool answering) { answering_ = answering; }
  // Answers name this request code instead of the one they answer (0: the right one).
  void set_answer_code(std::uint32_t code) { answer_code_ = code; }
  // Requests handled so far (answered or not).
  unsigned requests() const { return requests_; }

 private:
  void serve();
  // One request's answer: FS_MAP/FS_UNMAP 0 success, 1 failure; FS_IO the bytes moved or a
  // negative errno.
  std::uint64_t handle(std::uint32_t request, std::span<const std::uint8_t> payload, int fd);

  std::size_t size_;
  std::uint8_t* base_ = nullptr;
  UniqueFd channel_, stop_;
  std::atomic<bool> answering_{true};
  std::atomic<std::uint32_t> answer_code_{0};
  std::atomic<unsigned> requests_{0};
  mutable std::mutex mutex_;
  std::vector<bool> page_mapped_;  // guarded by mutex_
  std::thread thread_;
};

struct FrontendOptions {
  std::size_t memory_size = 128u << 20;
  // SET_MEM_TABLE describes the memory as this many equal regions, adjacent in guest-physical
  // space (as with hot-plugged DIMMs): buffers then may span two regions.
  unsigned memory_regions = 1;
  std::uint16_t queue_size = 256;
  unsigned request_queues = 1;  // clamped to what the backend reports
  bool event_idx = false;       // negotiate VIRTIO_RING_F_EVENT_IDX when offered
  std::chrono::milliseconds reply_timeout{5000};
  // > 0: play a DAX-capable VMM with a window (cache) of this size: negotiate BACKEND_REQ,
  // BACKEND_SEND_FD and REPLY_ACK and hand the backend its channel (dax_window()).
  std::size_t dax_window_size = 0;
};

// The vhost-user connection and the device it drives: guest memory plus hiprio queue 0 and request
// queues 1..N.
class VhostUserFrontend {
 public:
  // Connects to the backend's UNIX socket (retrying until `connect_timeout`) and runs the whole
  // handshake; throws std::runtime_error on any failure.
  VhostUserFrontend(const std::string& socket_path, FrontendOptions options = {},
                    std::chrono::milliseconds connect_timeout = std::chrono::seconds(5));
  ~VhostUserFrontend();
  VhostUserFrontend(const VhostUserFrontend&) = delete;
  VhostUserFrontend& operator=(const VhostUserFrontend&) = delete;

  GuestMemory& memory() { return *mem_; }
  const FrontendOptions& options() const { return options_; }
  std::size_t queue_count() const { return queues_.size(); }  // hiprio + request queues
  Virtqueue& queue(unsigned i) { return *queues_.at(i); }

  std::uint64_t backend_features() const { return backend_features_; }
  std::uint64_t acked_features() const { return acked_features_; }
  std::uint64_t backend_protocol_features() const { return backend_protocol_features_; }
  std::uint64_t acked_protocol_features() const { return acked_protocol_features_; }
  // GET_QUEUE_NUM's answer, or 0 if the backend did not offer the MQ protocol feature.
  std::uint64_t backend_queue_num() const { return backend_queue_num_; }

  // virtio-fs device configuration space (virtio spec 5.11.4), read with GET_CONFIG; only
  // available when the backend offered the CONFIG protocol feature (Rust virtiofsd: with --tag).
  struct FsConfig {
    std::string tag;
    std::uint32_t num_request_queues;
  };
  std::optional<FsConfig> fs_config() const { return fs_config_; }
  // The DAX window (options.dax_window_size > 0), else nullptr.
  DaxWindowHost* dax_window() { return dax_window_.get(); }

  // ---- Raw control messages for hostile tests. send_raw sends a header {request, flags,
  // declared_size} followed by `payload` (declared_size defaults to payload.size() but may lie)
  // with `fds` attached. wait_reply returns the payload of the next reply, or nullopt if none
  // arrived within `timeout` or the backend closed the connection (see connection_closed()).
  void send_raw(std::uint32_t request, std::uint32_t flags, std::span<const std::uint8_t> payload,
                std::span<const int> fds = {}, std::optional<std::uint32_t> declared_size = {});
  std::optional<std::vector<std::uint8_t>> wait_reply(std::uint32_t request,
                                                      std::chrono::milliseconds timeout);
  // True once the backend has closed its end (waits up to `timeout` for that to happen).
  bool connection_closed(std::chrono::milliseconds timeout);

 private:
  struct Reply {
    std::uint32_t request, flags;
    std::vector<std::uint8_t> payload;
  };
  void send_message(std::uint32_t request, std::span<const std::uint8_t> payload,
                    std::span<const int> fds = {}, bool need_reply = false);
  void send_header(std::uint32_t request, std::uint32_t flags, std::uint32_t size,
                   std::span<const std::uint8_t> payload, std::span<const int> fds);
  Reply receive_reply(std::uint32_t request);
  std::uint64_t get_u64(std::uint32_t request);
  // Sends a "set" message and, when REPLY_ACK was negotiated, waits for its ack so the backend has
  // applied it before we continue (e.g. before the first kick).
  void set(std::uint32_t request, std::span<const std::uint8_t> payload, std::span<const int> fds = {});
  void set_u64(std::uint32_t request, std::uint64_t value, std::span<const int> fds = {});
  void handshake();
  void setup_queue(Virtqueue& q);

  FrontendOptions options_;
  UniqueFd sock_;
  std::unique_ptr<GuestMemory> mem_;
  std::vector<std::unique_ptr<Virtqueue>> queues_;
  std::uint64_t backend_features_ = 0, acked_features_ = 0;
  std::uint64_t backend_protocol_features_ = 0, acked_protocol_features_ = 0;
  std::uint64_t backend_queue_num_ = 0;
  std::optional<FsConfig> fs_config_;
  std::unique_ptr<DaxWindowHost> dax_window_;
};

// vhost-user message ids (front-end → back-end) and feature bits used here.
namespace msg {
inline constexpr std::uint32_t kGetFeatures = 1, kSetFeatures = 2, kSetOwner = 3, kResetOwner = 4,
                               kSetMemTable = 5, kSetVringNum = 8, kSetVringAddr = 9,
                               kSetVringBase = 10, kGetVringBase = 11, kSetVringKick = 12,
                               kSetVringCall = 13, kSetVringErr = 14, kGetProtocolFeatures = 15,
                               kSetProtocolFeatures = 16, kGetQueueNum = 17, kSetVringEnable = 18,
                               kSetBackendReqFd = 21, kGetConfig = 24;
inline constexpr std::uint32_t kFlagVersion = 0x1, kFlagReply = 0x4, kFlagNeedReply = 0x8;
}  // namespace msg
namespace feature {
inline constexpr std::uint64_t kIndirectDesc = 1ull << 28, kEventIdx = 1ull << 29,
                               kProtocolFeatures = 1ull << 30, kVersion1 = 1ull << 32;
}
namespace protocol_feature {
inline constexpr std::uint64_t kMq = 1ull << 0, kReplyAck = 1ull << 3, kBackendReq = 1ull << 5,
                               kConfig = 1ull << 9, kBackendSendFd = 1ull << 10;
}

}  // namespace svfs::vhost
