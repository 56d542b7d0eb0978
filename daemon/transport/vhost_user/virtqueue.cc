#include "daemon/transport/vhost_user/virtqueue.h"

#include <fmt/format.h>

#include <atomic>
#include <bit>
#include <cstring>
#include <limits>

namespace svfs::transport::vhost_user {

static_assert(std::endian::native == std::endian::little,
              "the vring is little-endian; svfsd does not byte-swap");

namespace {

size_t DescBytes(uint32_t size) { return 16 * static_cast<size_t>(size); }
size_t AvailBytes(uint32_t size) { return 4 + 2 * static_cast<size_t>(size) + 2; }
size_t UsedBytes(uint32_t size) { return 4 + 8 * static_cast<size_t>(size) + 2; }

// vring_need_event from the virtio spec: whether event_idx lies in (old, new].
bool NeedEvent(uint16_t event_idx, uint16_t new_idx, uint16_t old_idx) {
  return static_cast<uint16_t>(new_idx - event_idx - 1) < static_cast<uint16_t>(new_idx - old_idx);
}

}  // namespace

void Virtqueue::reset() { *this = Virtqueue(); }

bool Virtqueue::set_size(uint32_t size) {
  if (size == 0 || size > kMaxQueueSize || !std::has_single_bit(size)) return false;
  size_ = size;
  desc_ = nullptr;
  return true;
}

void Virtqueue::set_addresses(uint64_t desc, uint64_t avail, uint64_t used) {
  desc_addr_ = desc;
  avail_addr_ = avail;
  used_addr_ = used;
  addresses_set_ = true;
  desc_ = nullptr;
}

void Virtqueue::set_base(uint16_t last_avail) {
  last_avail_ = last_avail;
  signalled_used_valid_ = false;
}

bool Virtqueue::translate_rings(const GuestMemory& memory, RingPointers& rings) {
  if (desc_addr_ % 16 != 0 || avail_addr_ % 2 != 0 || used_addr_ % 4 != 0) {
    broken_reason_ = "misaligned ring address";
    return false;
  }
  rings.desc = memory.frontend_to_host(desc_addr_, DescBytes(size_));
  rings.avail = memory.frontend_to_host(avail_addr_, AvailBytes(size_));
  rings.used = memory.frontend_to_host(used_addr_, UsedBytes(size_));
  if (rings.desc == nullptr || rings.avail == nullptr || rings.used == nullptr) {
    broken_reason_ = fmt::format("ring addresses outside guest memory (desc {:#x} avail {:#x} used {:#x})",
                                 desc_addr_, avail_addr_, used_addr_);
    return false;
  }
  // Aligned addresses can still land misaligned in our mapping when a region's userspace address
  // or mmap offset is not page aligned; the index and used entries are accessed atomically.
  auto misaligned = [](const uint8_t* p, uintptr_t align) {
    return reinterpret_cast<uintptr_t>(p) % align != 0;
  };
  if (misaligned(rings.desc, 16) || misaligned(rings.avail, 2) || misaligned(rings.used, 4)) {
    broken_reason_ = "ring misaligned in the mapped guest memory (a region's userspace address or "
                     "mmap offset is not aligned)";
    return false;
  }
  return true;
}

bool Virtqueue::rings_inside(const GuestMemory& memory) {
  RingPointers rings;
  return size_ == 0 || !addresses_set_ || translate_rings(memory, rings);
}

bool Virtqueue::map(const GuestMemory& memory) {
  desc_ = nullptr;
  avail_ = used_ = nullptr;
  memory_ = &memory;
  if (size_ == 0 || !addresses_set_) {
    broken_reason_ = "ring size or addresses not set";
    return false;
  }
  RingPointers rings;
  if (!translate_rings(memory, rings)) return false;
  map_host(rings.desc, rings.avail, rings.used, memory);
  return true;
}

void Virtqueue::map_host(void* desc, void* avail, void* used, const GuestMemory& memory) {
  memory_ = &memory;
  desc_ = static_cast<VringDesc*>(desc);
  avail_ = static_cast<uint16_t*>(avail);
  used_ = static_cast<uint16_t*>(used);
  // The driver's view of used->idx is what we resume from (after SET_VRING_BASE on reconnect
  // the used index equals last_avail once in-flight requests completed).
  used_idx_ = std::atomic_ref<uint16_t>(used_[1]).load(std::memory_order_acquire);
  broken_reason_.clear();
  // Mapped only with every chain of the ring completed (a stopped queue waits for them).
  in_flight_ = std::make_unique<std::atomic<bool>[]>(size_);
}

uint16_t Virtqueue::load_avail_idx() const {
  return std::atomic_ref<uint16_t>(avail_[1]).load(std::memory_order_acquire);
}

void Virtqueue::set_avail_event(uint16_t value) {
  // avail_event follows the used ring's entries.
  auto* slot = reinterpret_cast<uint16_t*>(reinterpret_cast<uint8_t*>(used_) + 4 + 8 * size_);
  std::atomic_ref<uint16_t>(*slot).store(value, std::memory_order_relaxed);
}

void Virtqueue::suppress_kicks() {
  if (used_ == nullptr) return;
  if (event_idx_) {
    // The driver kicks when its new avail idx passes avail_event; one behind last_avail_ is a
    // point it has already passed.
    set_avail_event(static_cast<uint16_t>(last_avail_ - 1));
  } else {
    std::atomic_ref<uint16_t>(used_[0]).store(kUsedNoNotify, std::memory_order_relaxed);
  }
}

bool Virtqueue::enable_kicks() {
  if (used_ == nullptr) return false;
  if (event_idx_) set_avail_event(last_avail_);
  else std::atomic_ref<uint16_t>(used_[0]).store(0, std::memory_order_relaxed);
  // Order the store before re-reading the avail idx (pairs with the driver's fence between
  // publishing its idx and reading our avail_event / flags).
  std::atomic_thread_fence(std::memory_order_seq_cst);
  return has_available();
}

Virtqueue::Pop Virtqueue::pop(Chain& chain) {
  chain.readable.clear();
  chain.writable.clear();
  chain.readable_bytes = chain.writable_bytes = 0;
  chain.outside.clear();
  chain.error.clear();
  if (desc_ == nullptr) return Pop::kEmpty;
  uint16_t avail_idx = load_avail_idx();
  if (static_cast<uint16_t>(avail_idx - last_avail_) > size_) {
    broken_reason_ = fmt::format("avail idx {} is more than the queue size {} ahead of {}",
                                 avail_idx, size_, last_avail_);
    return Pop::kBroken;
  }
  if (avail_idx == last_avail_) {
    if (!event_idx_) return Pop::kEmpty;
    // Ask for a kick at the next entry, then look again: the driver may have added one before
    // it saw the new avail_event.
    set_avail_event(last_avail_);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    avail_idx = load_avail_idx();
    if (avail_idx == last_avail_) return Pop::kEmpty;
    if (static_cast<uint16_t>(avail_idx - last_avail_) > size_) {
      broken_reason_ = "avail idx jumped more than the queue size";
      return Pop::kBroken;
    }
  }
  uint16_t head = std::atomic_ref<uint16_t>(avail_[2 + last_avail_ % size_])
                      .load(std::memory_order_relaxed);
  if (head >= size_) {
    broken_reason_ = fmt::format("avail ring names descriptor {} of a {}-entry queue", head, size_);
    return Pop::kBroken;
  }
  // avail_event moves only when the ring is found empty (above) or kicks are switched off, as
  // Linux's vhost does: while this thread is busy the driver has no reason to kick it, and each
  // store here would pull a cache line the driver reads on every post.
  // A head the device still holds cannot be posted again: serving it twice would push one
  // descriptor twice, and a guest looping on it could queue work without bound.
  if (in_flight_[head].exchange(true, std::memory_order_relaxed)) {
    broken_reason_ = fmt::format("avail ring names descriptor {}, whose chain is still in flight",
                                 head);
    return Pop::kBroken;
  }
  ++last_avail_;
  chain.head = head;
  walk(chain);
  return Pop::kChain;
}

bool Virtqueue::add_segment(Chain& chain, const VringDesc& desc) {
  size_t total = chain.readable_bytes + chain.writable_bytes;
  if (desc.len > std::numeric_limits<uint32_t>::max() - total) {
    chain.error = "chain length overflows 32 bits";
    return false;
  }
  const bool writable = desc.flags & kDescWrite;
  if (!writable && (!chain.writable.empty() || chain.writable_bytes > 0)) {
    chain.error = "readable descriptor after a writable one";
    return false;
  }
  std::vector<iovec>& segments = writable ? chain.writable : chain.readable;
  // One iovec per region the buffer touches (regions may be adjacent in guest-physical space).
  uint64_t addr = desc.addr;
  for (uint64_t left = desc.len; left > 0;) {
    if (segments.size() >= kMaxSegments) {
      chain.error = fmt::format("descriptor chain of more than {} segments", kMaxSegments);
      return false;
    }
    GuestMemory::Piece piece = memory_->guest_piece(addr, left);
    if (piece.host == nullptr) {
      // The rest of the buffer is the VMM's to reach, if anyone's (Chain::outside).
      chain.outside.push_back({writable, static_cast<uint32_t>(segments.size()), addr});
      segments.push_back({nullptr, left});
      break;
    }
    segments.push_back({piece.host, piece.length});
    addr += piece.length;
    left -= piece.length;
  }
  (writable ? chain.writable_bytes : chain.readable_bytes) += desc.len;
  return true;
}

void Virtqueue::walk(Chain& chain) {
  const VringDesc* table = desc_;
  uint32_t table_size = size_;
  bool indirect = false;
  uint32_t index = chain.head;
  uint32_t count = 0;
  // Zero-length writable descriptors still count for the order check.
  bool seen_writable = false;
  for (;;) {
    if (++count > table_size) {
      chain.error = "descriptor chain longer than its table (loop?)";
      return;
    }
    VringDesc desc;
    std::memcpy(&desc, &table[index], sizeof(desc));
    if (desc.flags & kDescIndirect) {
      if (indirect) {
        chain.error = "nested indirect descriptor table";
        return;
      }
      if (desc.flags & kDescNext) {
        chain.error = "indirect descriptor with NEXT";
        return;
      }
      if (desc.len == 0 || desc.len % sizeof(VringDesc) != 0 ||
          desc.len / sizeof(VringDesc) > kMaxQueueSize) {
        chain.error = fmt::format("indirect table length {} invalid", desc.len);
        return;
      }
      auto* host = memory_->guest_to_host(desc.addr, desc.len);
      if (host == nullptr) {
        chain.error = fmt::format("indirect table {:#x}+{} outside guest memory", desc.addr, desc.len);
        return;
      }
      table = reinterpret_cast<const VringDesc*>(host);
      table_size = desc.len / sizeof(VringDesc);
      indirect = true;
      index = 0;
      count = 0;
      continue;
    }
    if (!(desc.flags & kDescWrite) && seen_writable) {
      chain.error = "readable descriptor after a writable one";
      return;
    }
    if (desc.flags & kDescWrite) seen_writable = true;
    if (!add_segment(chain, desc)) return;
    if (!(desc.flags & kDescNext)) return;
    index = desc.next;
    if (index >= table_size) {
      chain.error = fmt::format("next index {} outside a {}-entry table", index, table_size);
      return;
    }
  }
}

void Virtqueue::push(uint16_t head, uint32_t len) {
  if (used_ == nullptr) return;
  auto* ring = reinterpret_cast<uint32_t*>(used_ + 2);
  if (head < size_) in_flight_[head].store(false, std::memory_order_relaxed);  // before idx
  uint32_t slot = used_idx_ % size_;
  std::atomic_ref<uint32_t>(ring[2 * slot]).store(head, std::memory_order_relaxed);
  std::atomic_ref<uint32_t>(ring[2 * slot + 1]).store(len, std::memory_order_relaxed);
  ++used_idx_;
  // The entry must be visible before the index that publishes it.
  std::atomic_thread_fence(std::memory_order_release);
  std::atomic_ref<uint16_t>(used_[1]).store(used_idx_, std::memory_order_relaxed);
}

bool Virtqueue::should_notify() {
  if (avail_ == nullptr) return false;
  // Order the used idx store before reading the driver's flags / used_event.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (!event_idx_) {
    uint16_t flags = std::atomic_ref<uint16_t>(avail_[0]).load(std::memory_order_relaxed);
    return !(flags & kAvailNoInterrupt);
  }
  bool valid = signalled_used_valid_;
  uint16_t old_idx = signalled_used_;
  signalled_used_valid_ = true;
  signalled_used_ = used_idx_;
  uint16_t used_event = std::atomic_ref<uint16_t>(avail_[2 + size_]).load(std::memory_order_relaxed);
  return !valid || NeedEvent(used_event, used_idx_, old_idx);
}

Virtqueue::Leftover Virtqueue::leftover() const {
  Leftover left;
  if (desc_ == nullptr || used_ == nullptr) return left;
  left.untaken = available();
  if (event_idx_ && signalled_used_valid_) {
    uint16_t used_event =
        std::atomic_ref<uint16_t>(avail_[2 + size_]).load(std::memory_order_relaxed);
    left.signal_owed = NeedEvent(used_event, used_idx_, signalled_used_);
  }
  return left;
}

}  // namespace svfs::transport::vhost_user
