// A split virtqueue as the device side sees it (virtio 1.x, 2.7), with INDIRECT_DESC and
// EVENT_IDX. Pure ring logic over guest memory: no threads and no file descriptors except the
// call eventfd written by notify(), so it can be tested over a fake guest memory.
//
// Not thread safe: one queue thread uses it while the queue runs; the control thread configures
// it only while the queue thread is stopped.
#pragma once

#include <sys/uio.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "daemon/transport/vhost_user/guest_memory.h"

namespace svfs::transport::vhost_user {

// Ring layout (little-endian; svfsd only builds for little-endian hosts).
struct VringDesc {
  uint64_t addr;
  uint32_t len;
  uint16_t flags;
  uint16_t next;
};
static_assert(sizeof(VringDesc) == 16);
inline constexpr uint16_t kDescNext = 1;
inline constexpr uint16_t kDescWrite = 2;
inline constexpr uint16_t kDescIndirect = 4;
inline constexpr uint16_t kAvailNoInterrupt = 1;
inline constexpr uint16_t kUsedNoNotify = 1;
inline constexpr uint32_t kMaxQueueSize = 32768;
// Most iovecs one chain translates to: a descriptor per queue entry, a few more where buffers
// cross regions. Bounds what a guest can make the device allocate per chain.
inline constexpr size_t kMaxSegments = 2 * kMaxQueueSize;

// One descriptor chain popped from the avail ring, translated to host memory.
struct Chain {
  uint16_t head = 0;
  std::vector<iovec> readable;  // driver → device, in order
  std::vector<iovec> writable;  // device → driver, in order
  size_t readable_bytes = 0;
  size_t writable_bytes = 0;
  // Buffers outside the guest memory svfsd was given: each is a {nullptr, length} iovec in
  // readable or writable, its guest address here. They may lie in the DAX window, which only the
  // VMM can reach (chain_io.h: a READ's data or a WRITE's payload goes through FS_IO); every
  // other use of such a chain is refused.
  struct OutsideBuffer {
    bool writable;
    uint32_t segment;  // index into readable or writable
    uint64_t guest_addr;
  };
  std::vector<OutsideBuffer> outside;
  // Set when the chain is malformed; readable/writable then hold the valid prefix walked so far
  // (the transport may still answer EIO through it, or return the chain used with length 0).
  std::string error;
};

class Virtqueue {
 public:
  enum class Pop { kEmpty, kChain, kBroken };

  // Configuration (SET_VRING_NUM / ADDR / BASE, features). Call reset() for a fresh queue.
  void reset();
  // Queue size: a power of two, 1..32768. Returns false otherwise.
  bool set_size(uint32_t size);
  uint32_t size() const { return size_; }
  // Frontend-virtual addresses of the three rings.
  void set_addresses(uint64_t desc, uint64_t avail, uint64_t used);
  bool has_addresses() const { return addresses_set_; }
  void set_base(uint16_t last_avail);
  uint16_t last_avail() const { return last_avail_; }
  void set_event_idx(bool on) { event_idx_ = on; }

  // Translates the ring addresses through `memory` (after any memory table change). False, with
  // the reason in broken_reason(), if a ring is not inside one region or misaligned.
  bool map(const GuestMemory& memory);
  bool mapped() const { return desc_ != nullptr; }
  // Whether the rings, as configured, lie inside `memory` and are aligned (no change to the
  // queue). False, with the reason in broken_reason(), if not; true while the size or addresses
  // are unset.
  bool rings_inside(const GuestMemory& memory);
  // The same, for tests: rings given as host pointers.
  void map_host(void* desc, void* avail, void* used, const GuestMemory& memory);

  // Pops the next available chain into `chain`. kBroken: the avail index or a head index is
  // impossible; the queue must stop (broken_reason() says why). A malformed chain is still
  // kChain, with chain.error set.
  Pop pop(Chain& chain);
  // Whether the driver has made chains available that pop() has not taken yet: a cheap peek for
  // polling the ring instead of sleeping on the kick eventfd.
  bool has_available() const { return desc_ != nullptr && load_avail_idx() != last_avail_; }
  // How many chains wait in the ring: a hint for batching signals and a depth for the metrics,
  // at most the queue's size (a hostile driver can move its index anywhere; pop() is what checks
  // the ring).
  uint16_t available() const {
    if (desc_ == nullptr) return 0;
    const auto waiting = static_cast<uint16_t>(load_avail_idx() - last_avail_);
    return static_cast<uint16_t>(std::min<uint32_t>(waiting, size_));
  }
  // While the device polls the ring, tells the driver it need not kick (EVENT_IDX: avail_event
  // just behind what was taken; otherwise VRING_USED_F_NO_NOTIFY).
  void suppress_kicks();
  // Asks for kicks again (as pop() does on an empty ring), then looks once more, closing the race
  // with a chain added while kicks were off. Returns has_available().
  bool enable_kicks();
  // Marks chain `head` used with `len` bytes written.
  void push(uint16_t head, uint32_t len);
  // Whether the driver wants an interrupt for what was pushed since the last notification
  // (EVENT_IDX used_event, or VRING_AVAIL_F_NO_INTERRUPT). Updates the notification state.
  bool should_notify();

  const std::string& broken_reason() const { return broken_reason_; }
  uint16_t used_idx() const { return used_idx_; }

  // What a queue left undone, for the log when the frontend goes away: chains the driver posted
  // that were never taken (a lost kick) and used chains it asked to be signalled for but was not
  // (a lost signal). Either one hangs the guest, so it is worth a line.
  struct Leftover {
    uint16_t untaken = 0;       // avail idx - last_avail
    bool signal_owed = false;   // EVENT_IDX: used_event lies in (last signalled, used idx]
  };
  Leftover leftover() const;

 private:
  struct RingPointers {
    uint8_t* desc = nullptr;
    uint8_t* avail = nullptr;
    uint8_t* used = nullptr;
  };
  // The host addresses of the configured rings (set, aligned, inside `memory`), or false with
  // broken_reason() set. map() and rings_inside() share it.
  bool translate_rings(const GuestMemory& memory, RingPointers& rings);
  uint16_t load_avail_idx() const;
  void set_avail_event(uint16_t value);
  void walk(Chain& chain);
  bool add_segment(Chain& chain, const VringDesc& desc);

  const GuestMemory* memory_ = nullptr;
  uint32_t size_ = 0;
  bool addresses_set_ = false;
  uint64_t desc_addr_ = 0, avail_addr_ = 0, used_addr_ = 0;
  bool event_idx_ = false;

  // Host pointers into guest memory once mapped.
  VringDesc* desc_ = nullptr;
  uint16_t* avail_ = nullptr;  // flags, idx, ring[size], used_event
  uint16_t* used_ = nullptr;   // flags, idx, then {u32 id, u32 len}[size], avail_event

  // Per descriptor head: popped and not yet pushed. Set by the popping thread, cleared by the
  // pushing one (under the queue's used lock) before the used index publishes the entry.
  std::unique_ptr<std::atomic<bool>[]> in_flight_;
  uint16_t last_avail_ = 0;
  uint16_t used_idx_ = 0;
  uint16_t signalled_used_ = 0;
  bool signalled_used_valid_ = false;
  std::string broken_reason_;
};

}  // namespace svfs::transport::vhost_user
