#include "daemon/transport/vhost_user/virtqueue.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>

namespace svfs::transport::vhost_user {
namespace {

constexpr uint64_t kGpa = 0x100000;          // guest-physical base of the fake memory
constexpr uint64_t kUva = 0x7f0000000000;    // the frontend's virtual address of it
constexpr uint64_t kMemSize = 256 * 1024;
constexpr uint64_t kDescOff = 0x0, kAvailOff = 0x1000, kUsedOff = 0x2000, kIndirectOff = 0x3000;
constexpr uint64_t kBufOff = 0x10000;

// A guest memory (memfd) with a split ring in it, driven from the driver side.
class FakeRing {
 public:
  explicit FakeRing(uint32_t size, bool event_idx = false) : size_(size) {
    fd_ = UniqueFd(::memfd_create("guest", MFD_CLOEXEC));
    EXPECT_EQ(::ftruncate(fd_.get(), kMemSize), 0);
    EXPECT_TRUE(memory_.add({kGpa, kMemSize, kUva, 0}, fd_.get()));
    base_ = memory_.guest_to_host(kGpa, kMemSize);
    EXPECT_TRUE(queue_.set_size(size));
    queue_.set_addresses(kUva + kDescOff, kUva + kAvailOff, kUva + kUsedOff);
    queue_.set_event_idx(event_idx);
    EXPECT_TRUE(queue_.map(memory_));
  }

  VringDesc* desc(uint64_t table_off = kDescOff) {
    return reinterpret_cast<VringDesc*>(base_ + table_off);
  }
  uint16_t* avail() { return reinterpret_cast<uint16_t*>(base_ + kAvailOff); }
  uint16_t* used() { return reinterpret_cast<uint16_t*>(base_ + kUsedOff); }
  uint32_t* used_ring() { return reinterpret_cast<uint32_t*>(base_ + kUsedOff + 4); }
  uint16_t& used_event() { return avail()[2 + size_]; }
  uint16_t avail_event() { return *reinterpret_cast<uint16_t*>(base_ + kUsedOff + 4 + 8 * size_); }
  uint8_t* buf(uint64_t off) { return base_ + kBufOff + off; }

  void set_desc(uint16_t i, uint64_t gpa, uint32_t len, uint16_t flags, uint16_t next = 0,
                uint64_t table_off = kDescOff) {
    desc(table_off)[i] = VringDesc{gpa, len, flags, next};
  }
  void make_available(uint16_t head) {
    avail()[2 + avail()[1] % size_] = head;
    avail()[1]++;
  }
  // Descriptors first..first+n-1 as one-buffer readable chains, made available in that order.
  void make_simple_chains_available(uint16_t first, uint16_t n) {
    for (uint16_t i = first; i < first + n; ++i) {
      set_desc(i, kGpa + kBufOff, 8, 0);
      make_available(i);
    }
  }

  Virtqueue queue_;
  GuestMemory memory_;

 private:
  uint32_t size_;
  UniqueFd fd_;
  uint8_t* base_ = nullptr;
};

TEST(VirtqueueTest, SizeMustBeAPowerOfTwo) {
  Virtqueue queue;
  EXPECT_FALSE(queue.set_size(0));
  EXPECT_FALSE(queue.set_size(3));
  EXPECT_FALSE(queue.set_size(65536));
  EXPECT_TRUE(queue.set_size(256));
}

TEST(VirtqueueTest, EmptyQueue) {
  FakeRing ring(8);
  Chain chain;
  EXPECT_EQ(ring.queue_.pop(chain), Virtqueue::Pop::kEmpty);
}

// A guest that posts a head again before its chain came back (with a pool, the same chain served
// over and over grew memory without bound) breaks the ring; once pushed, the head may come again.
TEST(VirtqueueTest, HeadStillInFlightIsRefused) {
  FakeRing ring(8);
  ring.make_simple_chains_available(0, 1);
  Chain chain;
  ASSERT_EQ(ring.queue_.pop(chain), Virtqueue::Pop::kChain);
  ring.queue_.push(0, 0);
  ring.make_available(0);
  ASSERT_EQ(ring.queue_.pop(chain), Virtqueue::Pop::kChain) << "a completed head is reusable";
  ring.make_available(0);
  EXPECT_EQ(ring.queue_.pop(chain), Virtqueue::Pop::kBroken);
  EXPECT_NE(ring.queue_.broken_reason().find("still in flight"), std::string::npos);
}

TEST(VirtqueueTest, RingOutsideMemoryIsBroken) {
  FakeRing ring(8);
  ring.queue_.set_addresses(kUva + kMemSize - 64, kUva + kAvailOff, kUva + kUsedOff);
  EXPECT_FALSE(ring.queue_.map(ring.memory_));
  EXPECT_FALSE(ring.queue_.broken_reason().empty());
  ring.queue_.set_addresses(kGpa, kGpa + kAvailOff, kGpa + kUsedOff);  // guest-physical: wrong space
  EXPECT_FALSE(ring.queue_.map(ring.memory_));
}

// Found by tests/fuzz/virtqueue_fuzzer: a region whose userspace address (or mmap offset) is not
// aligned turns aligned ring addresses into misaligned pointers, which the rings' atomic index
// accesses must not use.
TEST(VirtqueueTest, RingMisalignedInTheMappingIsRefused) {
  UniqueFd fd(::memfd_create("guest", MFD_CLOEXEC));
  ASSERT_EQ(::ftruncate(fd.get(), 2 * kMemSize), 0);
  for (RegionDesc region : {RegionDesc{kGpa, kMemSize, kUva + 1, 0},
                            RegionDesc{kGpa, kMemSize, kUva, 2}}) {
    GuestMemory memory;
    ASSERT_TRUE(memory.add(region, fd.get()));
    // 16-aligned as addresses; one byte (or two) off in the mapping.
    uint64_t base = (region.userspace_addr + 15) / 16 * 16;
    Virtqueue queue;
    ASSERT_TRUE(queue.set_size(8));
    queue.set_addresses(base + kDescOff, base + kAvailOff, base + kUsedOff);
    EXPECT_FALSE(queue.rings_inside(memory));
    EXPECT_FALSE(queue.map(memory));
    EXPECT_NE(queue.broken_reason().find("misaligned"), std::string::npos) << queue.broken_reason();
    Chain chain;
    EXPECT_EQ(queue.pop(chain), Virtqueue::Pop::kEmpty);
  }
}

TEST(VirtqueueTest, PlainChainAndUsed) {
  FakeRing ring(8);
  ring.set_desc(0, kGpa + kBufOff, 40, kDescNext, 3);
  ring.set_desc(3, kGpa + kBufOff + 100, 20, kDescNext, 5);
  ring.set_desc(5, kGpa + kBufOff + 200, 64, kDescWrite);
  std::memcpy(ring.buf(0), "request", 7);
  ring.make_available(0);
  Chain chain;
  ASSERT_EQ(ring.queue_.pop(chain), Virtqueue::Pop::kChain);
  EXPECT_TRUE(chain.error.empty()) << chain.error;
  EXPECT_EQ(chain.head, 0);
  ASSERT_EQ(chain.readable.size(), 2u);
  ASSERT_EQ(chain.writable.size(), 1u);
  EXPECT_EQ(chain.readable_bytes, 60u);
  EXPECT_EQ(chain.writable_bytes, 64u);
  EXPECT_EQ(std::memcmp(chain.readable[0].iov_base, "request", 7), 0);
  EXPECT_EQ(chain.writable[0].iov_base, ring.buf(200));
  EXPECT_EQ(ring.queue_.pop(chain), Virtqueue::Pop::kEmpty);
  EXPECT_EQ(ring.queue_.last_avail(), 1);

  ring.queue_.push(0, 16);
  EXPECT_EQ(ring.used()[1], 1);
  EXPECT_EQ(ring.used_ring()[0], 0u);
  EXPECT_EQ(ring.used_ring()[1], 16u);
  EXPECT_TRUE(ring.queue_.should_notify());
  ring.avail()[0] = kAvailNoInterrupt;
  EXPECT_FALSE(ring.queue_.should_notify());
}

TEST(VirtqueueTest, IndirectChain) {
  FakeRing ring(8);
  ring.set_desc(0, kGpa + kBufOff, 40, kDescNext, 1, kIndirectOff);
  ring.set_desc(1, kGpa + kBufOff + 64, 100, kDescWrite | kDescNext, 2, kIndirectOff);
  ring.set_desc(2, kGpa + kBufOff + 256, 100, kDescWrite, 0, kIndirectOff);
  ring.set_desc(4, kGpa + kIndirectOff, 3 * 16, kDescIndirect);
  ring.make_available(4);
  Chain chain;
  ASSERT_EQ(ring.queue_.pop(chain), Virtqueue::Pop::kChain);
  EXPECT_TRUE(chain.error.empty()) << chain.error;
  EXPECT_EQ(chain.head, 4);
  EXPECT_EQ(chain.readable_bytes, 40u);
  EXPECT_EQ(chain.writable_bytes, 200u);
  EXPECT_EQ(chain.writable.size(), 2u);
}

TEST(VirtqueueTest, MalformedIndirectTables) {
  FakeRing ring(8);
  Chain chain;
  // Length not a multiple of 16.
  ring.set_desc(0, kGpa + kIndirectOff, 20, kDescIndirect);
  ring.make_available(0);
  ASSERT_EQ(ring.queue_.pop(chain), Virtqueue::Pop::kChain);
  EXPECT_FALSE(chain.error.empty());
  // INDIRECT together with NEXT.
  ring.set_desc(1, kGpa + kIndirectOff, 32, kDescIndirect | kDescNext, 2);
  ring.make_available(1);
  ASSERT_EQ(ring.queue_.pop(chain), Virtqueue::Pop::kChain);
  EXPECT_FALSE(chain.error.empty());
  // Nested indirect.
  ring.set_desc(0, kGpa + kIndirectOff, 32, kDescIndirect, 0, kIndirectOff);
  ring.set_desc(2, kGpa + kIndirectOff, 32, kDescIndirect);
  ring.make_available(2);
  ASSERT_EQ(ring.queue_.pop(chain), Virtqueue::Pop::kChain);
  EXPECT_NE(chain.error.find("nested"), std::string::npos) << chain.error;
  // Table outside memory.
  ring.set_desc(3, kGpa + kMemSize - 16, 32, kDescIndirect);
  ring.make_available(3);
  ASSERT_EQ(ring.queue_.pop(chain), Virtqueue::Pop::kChain);
  EXPECT_FALSE(chain.error.empty());
  // A loop inside an indirect table.
  ring.set_desc(0, kGpa + kBufOff, 8, kDescNext, 1, kIndirectOff);
  ring.set_desc(1, kGpa + kBufOff, 8, kDescNext, 0, kIndirectOff);
  ring.set_desc(4, kGpa + kIndirectOff, 32, kDescIndirect);
  ring.make_available(4);
  ASSERT_EQ(ring.queue_.pop(chain), Virtqueue::Pop::kChain);
  EXPECT_NE(chain.error.find("loop"), std::string::npos) << chain.error;
}

TEST(VirtqueueTest, ChainLoopIsRefused) {
  FakeRing ring(8);
  ring.set_desc(0, kGpa + kBufOff, 40, kDescNext, 1);
  ring.set_desc(1, kGpa + kBufOff, 40, kDescNext, 2);
  ring.set_desc(2, kGpa + kBufOff, 40, kDescNext, 0);
  ring.make_available(0);
  Chain chain;
  ASSERT_EQ(ring.queue_.pop(chain), Virtqueue::Pop::kChain);
  EXPECT_NE(chain.error.find("loop"), std::string::npos) << chain.error;
  // The queue itself still works.
  ring.set_desc(3, kGpa + kBufOff, 40, 0);
  ring.make_available(3);
  ASSERT_EQ(ring.queue_.pop(chain), Virtqueue::Pop::kChain);
  EXPECT_TRUE(chain.error.empty());
}

TEST(VirtqueueTest, NextIndexOutOfRangeIsRefused) {
  FakeRing ring(8);
  ring.set_desc(0, kGpa + kBufOff, 40, kDescNext, 8);
  ring.make_available(0);
  Chain chain;
  ASSERT_EQ(ring.queue_.pop(chain), Virtqueue::Pop::kChain);
  EXPECT_FALSE(chain.error.empty());
}

// A buffer outside the memory table is no ring error: it may lie in the DAX window, which only
// the VMM reaches (chain_io decides). It is a null iovec, its guest address in chain.outside.
TEST(VirtqueueTest, DescriptorOutsideMemoryIsListedAsOutside) {
  FakeRing ring(8);
  ring.set_desc(0, kGpa + kBufOff, 40, kDescNext, 1);
  ring.set_desc(1, kGpa + kBufOff + 64, 16, kDescWrite | kDescNext, 2);
  ring.set_desc(2, kGpa + kMemSize - 8, 16, kDescWrite);  // its second half is outside
  ring.make_available(0);
  Chain chain;
  ASSERT_EQ(ring.queue_.pop(chain), Virtqueue::Pop::kChain);
  EXPECT_TRUE(chain.error.empty()) << chain.error;
  EXPECT_EQ(chain.readable_bytes, 40u);
  EXPECT_EQ(chain.writable_bytes, 32u);
  ASSERT_EQ(chain.writable.size(), 3u);
  EXPECT_NE(chain.writable[1].iov_base, nullptr);
  EXPECT_EQ(chain.writable[1].iov_len, 8u);
  EXPECT_EQ(chain.writable[2].iov_base, nullptr);
  EXPECT_EQ(chain.writable[2].iov_len, 8u);
  ASSERT_EQ(chain.outside.size(), 1u);
  EXPECT_TRUE(chain.outside[0].writable);
  EXPECT_EQ(chain.outside[0].segment, 2u);
  EXPECT_EQ(chain.outside[0].guest_addr, kGpa + kMemSize);

  ring.set_desc(3, kGpa - 16, 8, 0);
  ring.make_available(3);
  ASSERT_EQ(ring.queue_.pop(chain), Virtqueue::Pop::kChain);
  EXPECT_TRUE(chain.error.empty());
  ASSERT_EQ(chain.outside.size(), 1u);  // the previous chain's are gone
  EXPECT_FALSE(chain.outside[0].writable);
  EXPECT_EQ(chain.outside[0].guest_addr, kGpa - 16);
  EXPECT_EQ(chain.readable_bytes, 8u);
}

TEST(VirtqueueTest, WrongDirectionOrderIsRefused) {
  FakeRing ring(8);
  ring.set_desc(0, kGpa + kBufOff, 40, kDescNext, 1);
  ring.set_desc(1, kGpa + kBufOff + 64, 16, kDescWrite | kDescNext, 2);
  ring.set_desc(2, kGpa + kBufOff + 128, 16, 0);
  ring.make_available(0);
  Chain chain;
  ASSERT_EQ(ring.queue_.pop(chain), Virtqueue::Pop::kChain);
  EXPECT_NE(chain.error.find("after a writable"), std::string::npos) << chain.error;
  // Also with a zero-length writable descriptor first.
  ring.set_desc(3, kGpa + kBufOff, 0, kDescWrite | kDescNext, 4);
  ring.set_desc(4, kGpa + kBufOff, 16, 0);
  ring.make_available(3);
  ASSERT_EQ(ring.queue_.pop(chain), Virtqueue::Pop::kChain);
  EXPECT_FALSE(chain.error.empty());
}

TEST(VirtqueueTest, LengthOverflowIsRefused) {
  // Two regions' worth of length cannot fit in one memory, so use many descriptors over the
  // same big-enough buffer: 0x80000000 twice overflows 32 bits. The buffer must be inside
  // memory, so map a sparse 2 GiB + region.
  UniqueFd fd(::memfd_create("big", MFD_CLOEXEC));
  ASSERT_EQ(::ftruncate(fd.get(), 0x90000000LL), 0);
  GuestMemory memory;
  ASSERT_TRUE(memory.add({0, 0x90000000ULL, 0x10000000000ULL, 0}, fd.get()));
  Virtqueue queue;
  ASSERT_TRUE(queue.set_size(4));
  queue.set_addresses(0x10000000000ULL, 0x10000000000ULL + 0x1000, 0x10000000000ULL + 0x2000);
  ASSERT_TRUE(queue.map(memory));
  auto* desc = reinterpret_cast<VringDesc*>(memory.guest_to_host(0, 64));
  auto* avail = reinterpret_cast<uint16_t*>(memory.guest_to_host(0x1000, 16));
  desc[0] = {0x10000, 0x80000000u, kDescNext, 1};
  desc[1] = {0x10000, 0x80000000u, 0, 0};
  avail[2] = 0;
  avail[1] = 1;
  Chain chain;
  ASSERT_EQ(queue.pop(chain), Virtqueue::Pop::kChain);
  EXPECT_NE(chain.error.find("overflow"), std::string::npos) << chain.error;
}

TEST(VirtqueueTest, AvailIndexJumpBreaksTheQueue) {
  FakeRing ring(8);
  ring.avail()[1] = 9;
  Chain chain;
  EXPECT_EQ(ring.queue_.pop(chain), Virtqueue::Pop::kBroken);
  EXPECT_FALSE(ring.queue_.broken_reason().empty());
}

TEST(VirtqueueTest, HeadOutOfRangeBreaksTheQueue) {
  FakeRing ring(8);
  ring.make_available(8);
  Chain chain;
  EXPECT_EQ(ring.queue_.pop(chain), Virtqueue::Pop::kBroken);
}

TEST(VirtqueueTest, SetBaseResumesAndWrapsAround) {
  FakeRing ring(4);
  ring.queue_.set_base(65535);
  ring.avail()[1] = 65535;
  ring.make_simple_chains_available(1, 1);  // slot 65535 % 4 = 3, idx wraps to 0
  EXPECT_EQ(ring.avail()[1], 0);
  Chain chain;
  ASSERT_EQ(ring.queue_.pop(chain), Virtqueue::Pop::kChain);
  EXPECT_EQ(chain.head, 1);
  EXPECT_EQ(ring.queue_.last_avail(), 0);
}

// The driver's vring_need_event(avail_event, new, old) test: whether it kicks after moving its
// avail idx from old_idx to new_idx.
bool DriverWouldKick(uint16_t avail_event, uint16_t new_idx, uint16_t old_idx) {
  return static_cast<uint16_t>(new_idx - avail_event - 1) < static_cast<uint16_t>(new_idx - old_idx);
}

TEST(VirtqueueTest, EventIdxNotification) {
  FakeRing ring(8, /*event_idx=*/true);
  Chain chain;
  ring.make_simple_chains_available(0, 4);
  ASSERT_EQ(ring.queue_.pop(chain), Virtqueue::Pop::kChain);
  ring.queue_.push(chain.head, 0);
  // First notification is always sent.
  EXPECT_TRUE(ring.queue_.should_notify());
  // The driver wants an interrupt only once used idx passes 3 (used_event = 2).
  ring.used_event() = 2;
  ASSERT_EQ(ring.queue_.pop(chain), Virtqueue::Pop::kChain);
  ring.queue_.push(chain.head, 0);  // used idx 2
  EXPECT_FALSE(ring.queue_.should_notify());
  ASSERT_EQ(ring.queue_.pop(chain), Virtqueue::Pop::kChain);
  ring.queue_.push(chain.head, 0);  // used idx 3: crosses used_event 2
  EXPECT_TRUE(ring.queue_.should_notify());
  ASSERT_EQ(ring.queue_.pop(chain), Virtqueue::Pop::kChain);
  ring.queue_.push(chain.head, 0);  // used idx 4
  EXPECT_FALSE(ring.queue_.should_notify());
  // NO_INTERRUPT is ignored with EVENT_IDX.
  ring.avail()[0] = kAvailNoInterrupt;
  ring.used_event() = 4;
  ring.make_simple_chains_available(4, 1);
  ASSERT_EQ(ring.queue_.pop(chain), Virtqueue::Pop::kChain);
  ring.queue_.push(chain.head, 0);
  EXPECT_TRUE(ring.queue_.should_notify());
  // Empty: avail_event is set to last_avail, so the next chain kicks the device.
  EXPECT_EQ(ring.queue_.pop(chain), Virtqueue::Pop::kEmpty);
  EXPECT_EQ(ring.avail_event(), 5);
  EXPECT_TRUE(DriverWouldKick(ring.avail_event(), 6, 5));
}

// What the disconnect log reports: chains posted and never taken, and a signal the driver asked
// for that was not sent.
TEST(VirtqueueTest, LeftoverShowsUntakenChainsAndOwedSignals) {
  FakeRing ring(8, /*event_idx=*/true);
  Chain chain;
  EXPECT_EQ(ring.queue_.leftover().untaken, 0);
  ring.make_simple_chains_available(0, 3);
  ASSERT_EQ(ring.queue_.pop(chain), Virtqueue::Pop::kChain);
  EXPECT_EQ(ring.queue_.leftover().untaken, 2);
  ring.queue_.push(chain.head, 0);
  EXPECT_TRUE(ring.queue_.should_notify());
  EXPECT_FALSE(ring.queue_.leftover().signal_owed);
  ring.used_event() = 1;  // wants a signal once used idx passes 1
  ASSERT_EQ(ring.queue_.pop(chain), Virtqueue::Pop::kChain);
  ring.queue_.push(chain.head, 0);  // used idx 2, not signalled
  EXPECT_TRUE(ring.queue_.leftover().signal_owed);
  EXPECT_TRUE(ring.queue_.should_notify());
  EXPECT_FALSE(ring.queue_.leftover().signal_owed);
  EXPECT_EQ(ring.queue_.leftover().untaken, 1);
}

// A device that has taken every chain but not yet looked for more is still busy: it will find
// the next chain without a kick (Linux vhost leaves avail_event alone until the ring is empty).
TEST(VirtqueueTest, BusyDeviceIsNotKicked) {
  FakeRing ring(8, /*event_idx=*/true);
  Chain chain;
  ring.make_simple_chains_available(0, 3);
  for (uint16_t i = 0; i < 3; ++i) ASSERT_EQ(ring.queue_.pop(chain), Virtqueue::Pop::kChain);
  EXPECT_FALSE(DriverWouldKick(ring.avail_event(), 4, 3));
  ring.make_simple_chains_available(3, 1);
  ASSERT_EQ(ring.queue_.pop(chain), Virtqueue::Pop::kChain);
  EXPECT_EQ(chain.head, 3);
  ASSERT_EQ(ring.queue_.pop(chain), Virtqueue::Pop::kEmpty);
  EXPECT_TRUE(DriverWouldKick(ring.avail_event(), 5, 4));
}

// While the device polls, the driver must not kick for anything it adds; once kicks are back on
// it must kick again.
TEST(VirtqueueTest, SuppressKicksWithEventIdx) {
  FakeRing ring(8, /*event_idx=*/true);
  Chain chain;
  ring.make_simple_chains_available(0, 1);
  ASSERT_EQ(ring.queue_.pop(chain), Virtqueue::Pop::kChain);
  ASSERT_EQ(ring.queue_.pop(chain), Virtqueue::Pop::kEmpty);
  EXPECT_FALSE(ring.queue_.has_available());
  ring.queue_.suppress_kicks();
  EXPECT_FALSE(DriverWouldKick(ring.avail_event(), 2, 1));
  ring.make_simple_chains_available(1, 1);  // added while kicks are off: found by the peek, and by enable_kicks
  EXPECT_TRUE(ring.queue_.has_available());
  EXPECT_TRUE(ring.queue_.enable_kicks());
  ASSERT_EQ(ring.queue_.pop(chain), Virtqueue::Pop::kChain);
  EXPECT_EQ(chain.head, 1);
  ASSERT_EQ(ring.queue_.pop(chain), Virtqueue::Pop::kEmpty);
  ring.queue_.suppress_kicks();
  EXPECT_FALSE(ring.queue_.enable_kicks());  // nothing came
  EXPECT_TRUE(DriverWouldKick(ring.avail_event(), 3, 2));
}

TEST(VirtqueueTest, SuppressKicksWithoutEventIdx) {
  FakeRing ring(8);
  EXPECT_EQ(ring.used()[0], 0);
  ring.queue_.suppress_kicks();
  EXPECT_EQ(ring.used()[0], kUsedNoNotify);
  EXPECT_FALSE(ring.queue_.enable_kicks());
  EXPECT_EQ(ring.used()[0], 0);
}

}  // namespace
}  // namespace svfs::transport::vhost_user
