#include "versiond/slot_map.h"

#include <gtest/gtest.h>

#include <vector>

namespace svfs::versiond {
namespace {

// A stand-in for the shared table: plain counters.
class SlotMapTest : public ::testing::Test {
 protected:
  explicit SlotMapTest(uint64_t slot_count = 8)
      : counters_(slot_count, 0),
        map_(slot_count, [this](uint64_t slot) { return ++counters_.at(slot); },
             [this](uint64_t slot) { return counters_.at(slot); }) {}

  static SlotKey Key(uint64_t ino, std::vector<unsigned char> handle = {}) {
    return SlotKey{.dev = 42, .ino = ino, .fsid = 7, .handle_type = 1, .handle = std::move(handle)};
  }

  std::vector<uint64_t> counters_;
  SlotMap map_;
};

TEST_F(SlotMapTest, SameKeySameSlotAcrossClients) {
  SlotGrant a = map_.acquire(1, Key(100));
  SlotGrant b = map_.acquire(2, Key(100));
  EXPECT_NE(a.slot, 0u);
  EXPECT_EQ(a.slot, b.slot);
  EXPECT_EQ(a.version, b.version);  // the second acquire samples, it does not bump
  EXPECT_EQ(map_.slot_info(a.slot)->references, 2u);
  EXPECT_EQ(map_.in_use(), 1u);
}

TEST_F(SlotMapTest, DifferentKeysDifferentSlots) {
  SlotGrant a = map_.acquire(1, Key(100));
  SlotGrant b = map_.acquire(1, Key(101));
  SlotGrant c = map_.acquire(1, SlotKey{.dev = 43, .ino = 100});  // same ino, other device
  EXPECT_NE(a.slot, b.slot);
  EXPECT_NE(a.slot, c.slot);
  EXPECT_NE(b.slot, c.slot);
  EXPECT_EQ(map_.in_use(), 3u);
}

TEST_F(SlotMapTest, NewSlotIsBumped) {
  SlotGrant a = map_.acquire(1, Key(100));
  EXPECT_EQ(a.version, 1u);
  EXPECT_EQ(counters_[a.slot], 1u);
  EXPECT_EQ(counters_[0], 0u);  // slot 0 is never handed out
}

TEST_F(SlotMapTest, ReleaseToZeroFreesAndForgetsKey) {
  SlotGrant a = map_.acquire(1, Key(100, {1, 2, 3}));
  map_.acquire(2, Key(100));
  map_.release(1, a.slot);
  EXPECT_EQ(map_.in_use(), 1u);
  EXPECT_TRUE(map_.find_inode(42, 100).has_value());
  map_.release(2, a.slot);
  EXPECT_EQ(map_.in_use(), 0u);
  EXPECT_FALSE(map_.find_inode(42, 100).has_value());
  EXPECT_FALSE(map_.find_handle(7, 1, {1, 2, 3}).has_value());
  EXPECT_FALSE(map_.slot_info(a.slot).has_value());
  EXPECT_EQ(counters_[a.slot], 1u);  // freeing does not reset (or bump) the count
}

TEST_F(SlotMapTest, SlotReuseKeepsMonotonicity) {
  SlotGrant a = map_.acquire(1, Key(100));
  map_.acquire(2, Key(100));
  map_.acquire(1, Key(101));
  map_.release(1, a.slot);
  map_.release(2, a.slot);
  SlotGrant b = map_.acquire(3, Key(999));  // another inode: gets the freed slot
  EXPECT_EQ(b.slot, a.slot);
  EXPECT_GT(b.version, a.version);
  EXPECT_EQ(map_.slot_info(b.slot)->key.ino, 999u);
  // And again, through a full table: versions only grow.
  map_.release(3, b.slot);
  for (uint64_t ino = 200; map_.free() > 0; ++ino) {
    SlotGrant g = map_.acquire(4, Key(ino));
    if (g.slot == a.slot) {
      EXPECT_GT(g.version, b.version);
    }
  }
}

TEST_F(SlotMapTest, FreeListBeforeNeverUsed) {
  SlotGrant a = map_.acquire(1, Key(100));
  map_.release(1, a.slot);
  SlotGrant b = map_.acquire(1, Key(101));
  EXPECT_EQ(b.slot, a.slot);
  EXPECT_EQ(b.version, 2u);
  EXPECT_EQ(map_.high_water(), 2u);
}

TEST_F(SlotMapTest, TableFullGivesSlotZero) {
  // 8 slots: 1..7 usable.
  for (uint64_t ino = 1; ino <= 7; ++ino) EXPECT_NE(map_.acquire(1, Key(ino)).slot, 0u);
  EXPECT_EQ(map_.free(), 0u);
  SlotGrant full = map_.acquire(1, Key(8));
  EXPECT_EQ(full.slot, 0u);
  EXPECT_EQ(full.version, 0u);
  EXPECT_EQ(map_.client_refs(1).references, 7u);  // the failed acquire took no reference
  // An existing key still works when full.
  EXPECT_NE(map_.acquire(2, Key(3)).slot, 0u);
  map_.release(1, map_.find_inode(42, 5).value());
  EXPECT_NE(map_.acquire(1, Key(8)).slot, 0u);
}

TEST_F(SlotMapTest, ReleaseIgnoresSlotsNotHeld) {
  SlotGrant a = map_.acquire(1, Key(100));
  map_.release(2, a.slot);     // client 2 holds nothing
  map_.release(1, a.slot + 1); // not in use
  map_.release(1, 0);
  EXPECT_EQ(map_.slot_info(a.slot)->references, 1u);
  map_.acquire(2, Key(101));
  map_.release(2, a.slot);  // client 2 holds a reference, but not to this slot
  EXPECT_EQ(map_.slot_info(a.slot)->references, 1u);
  map_.release(1, a.slot);
  map_.release(1, a.slot);  // already dropped: no underflow
  EXPECT_FALSE(map_.slot_info(a.slot).has_value());
  EXPECT_EQ(map_.client_refs(1).references, 0u);
}

TEST_F(SlotMapTest, RepeatedAcquireCountsReferences) {
  SlotGrant a = map_.acquire(1, Key(100));
  map_.acquire(1, Key(100));
  map_.acquire(1, Key(100));
  EXPECT_EQ(map_.client_refs(1).references, 3u);
  EXPECT_EQ(map_.client_refs(1).slots, 1u);
  map_.release(1, a.slot);
  map_.release(1, a.slot);
  EXPECT_TRUE(map_.slot_info(a.slot).has_value());
  map_.release(1, a.slot);
  EXPECT_FALSE(map_.slot_info(a.slot).has_value());
}

TEST_F(SlotMapTest, DropClientReleasesAllItsReferences) {
  SlotGrant a = map_.acquire(1, Key(100));
  map_.acquire(1, Key(100));
  SlotGrant b = map_.acquire(1, Key(101));
  map_.acquire(2, Key(101));
  map_.drop_client(1);
  EXPECT_FALSE(map_.slot_info(a.slot).has_value());
  EXPECT_EQ(map_.slot_info(b.slot)->references, 1u);
  EXPECT_EQ(map_.client_refs(1).references, 0u);
  EXPECT_EQ(map_.clients(), std::vector<ClientId>{2});
  EXPECT_EQ(map_.in_use(), 1u);
  map_.drop_client(1);  // idempotent
  map_.drop_client(2);
  EXPECT_EQ(map_.in_use(), 0u);
  EXPECT_TRUE(map_.clients().empty());
}

TEST_F(SlotMapTest, HandleIndex) {
  SlotGrant a = map_.acquire(1, Key(100, {0xaa, 0xbb}));
  SlotGrant b = map_.acquire(1, Key(101));  // no handle: only in the (dev, ino) index
  EXPECT_EQ(map_.find_handle(7, 1, {0xaa, 0xbb}), a.slot);
  EXPECT_FALSE(map_.find_handle(7, 2, {0xaa, 0xbb}).has_value());  // other handle type
  EXPECT_FALSE(map_.find_handle(8, 1, {0xaa, 0xbb}).has_value());  // other filesystem
  EXPECT_FALSE(map_.find_handle(7, 1, {}).has_value());
  EXPECT_EQ(map_.find_inode(42, 101), b.slot);
}

TEST_F(SlotMapTest, SameInodeKeepsFirstHandle) {
  SlotGrant a = map_.acquire(1, Key(100));  // first without a handle
  SlotGrant b = map_.acquire(2, Key(100, {1, 2}));
  EXPECT_EQ(a.slot, b.slot);
  EXPECT_TRUE(map_.slot_info(a.slot)->key.handle.empty());
  EXPECT_FALSE(map_.find_handle(7, 1, {1, 2}).has_value());

  SlotGrant c = map_.acquire(1, Key(200, {9}));
  SlotGrant d = map_.acquire(2, Key(200, {8}));
  EXPECT_EQ(c.slot, d.slot);
  EXPECT_EQ(map_.find_handle(7, 1, {9}), c.slot);
  EXPECT_FALSE(map_.find_handle(7, 1, {8}).has_value());
}

TEST_F(SlotMapTest, DuplicateHandleOnOtherInodeDoesNotStealIndex) {
  SlotGrant a = map_.acquire(1, Key(100, {5}));
  SlotGrant b = map_.acquire(1, Key(101, {5}));  // a buggy or lying client
  EXPECT_NE(a.slot, b.slot);
  map_.release(1, b.slot);
  EXPECT_EQ(map_.find_handle(7, 1, {5}), a.slot);  // b's release must not erase a's entry
}

TEST_F(SlotMapTest, BumpInUse) {
  SlotGrant a = map_.acquire(1, Key(100));
  SlotGrant b = map_.acquire(1, Key(101));
  SlotGrant c = map_.acquire(1, Key(102));
  map_.release(1, c.slot);
  EXPECT_EQ(map_.bump_in_use(), 2u);
  EXPECT_EQ(counters_[a.slot], 2u);
  EXPECT_EQ(counters_[b.slot], 2u);
  EXPECT_EQ(counters_[c.slot], 1u);
}

TEST_F(SlotMapTest, Stats) {
  EXPECT_EQ(map_.free(), 7u);
  EXPECT_EQ(map_.high_water(), 1u);
  SlotGrant a = map_.acquire(1, Key(100));
  SlotGrant b = map_.acquire(2, Key(101));
  map_.acquire(2, Key(101));
  map_.acquire(2, Key(102));
  EXPECT_EQ(map_.in_use(), 3u);
  EXPECT_EQ(map_.free(), 4u);
  EXPECT_EQ(map_.high_water(), 4u);
  EXPECT_EQ(map_.client_refs(2).references, 3u);
  EXPECT_EQ(map_.client_refs(2).slots, 2u);
  EXPECT_EQ(map_.client_refs(1).references, 1u);
  map_.release(1, a.slot);
  EXPECT_EQ(map_.in_use(), 2u);
  EXPECT_EQ(map_.free(), 5u);
  EXPECT_EQ(map_.high_water(), 4u);  // high water does not come down

  auto info = map_.slot_info(b.slot);
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->key.dev, 42u);
  EXPECT_EQ(info->key.ino, 101u);
  EXPECT_EQ(info->references, 2u);
  EXPECT_EQ(info->version, counters_[b.slot]);
}

TEST_F(SlotMapTest, HottestOrdersByVersion) {
  SlotGrant a = map_.acquire(1, Key(100));
  SlotGrant b = map_.acquire(1, Key(101));
  SlotGrant c = map_.acquire(1, Key(102));
  counters_[b.slot] = 50;
  counters_[c.slot] = 20;
  auto hot = map_.hottest(2);
  ASSERT_EQ(hot.size(), 2u);
  EXPECT_EQ(hot[0].slot, b.slot);
  EXPECT_EQ(hot[0].version, 50u);
  EXPECT_EQ(hot[1].slot, c.slot);
  EXPECT_EQ(map_.hottest(10).size(), 3u);
  EXPECT_EQ(map_.hottest(10).back().slot, a.slot);
  map_.release(1, b.slot);
  EXPECT_EQ(map_.hottest(1).front().slot, c.slot);  // only in-use slots
}

}  // namespace
}  // namespace svfs::versiond
