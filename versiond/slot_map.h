// versiond's bookkeeping of which host inode owns which version-table slot, and who holds it.
//
// Pure logic: the table itself is reached through two callbacks (bump, sample), so the map can be
// tested without shared memory. Not thread-safe: versiond calls it only from its event-loop thread.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace svfs::versiond {

using ClientId = uint64_t;

// Identity of a host inode. Two keys are the same inode iff (dev, ino) are equal; the handle is
// extra information for matching fanotify records and is kept from the first key seen.
struct SlotKey {
  uint64_t dev = 0;
  uint64_t ino = 0;
  uint64_t fsid = 0;
  int32_t handle_type = 0;
  std::vector<unsigned char> handle;  // empty: the filesystem has no handles; (dev, ino) only
};

struct SlotGrant {
  uint64_t slot = 0;     // 0: table full, no version
  uint64_t version = 0;  // the slot's version when granted
};

struct SlotInfo {
  uint64_t slot = 0;
  uint64_t version = 0;
  uint64_t references = 0;  // over all clients
  SlotKey key;
};

struct ClientRefs {
  uint64_t references = 0;  // acquire references held
  uint64_t slots = 0;       // distinct slots held
};

class SlotMap {
 public:
  // Returns the slot's new version after incrementing it (VersionTable::bump).
  using BumpFn = std::function<uint64_t(uint64_t slot)>;
  // Returns the slot's current version (VersionTable::sample).
  using SampleFn = std::function<uint64_t(uint64_t slot)>;

  // `slot_count` includes slot 0, which is never handed out.
  SlotMap(uint64_t slot_count, BumpFn bump, SampleFn sample);

  // Takes one reference for `client` on the slot of `key`. A key already mapped keeps its slot;
  // a new key gets a free slot (free list first, then never-used slots), bumped so that a guest
  // still holding a stale index to it reads a larger number than it cached. Table full: {0, 0}.
  SlotGrant acquire(ClientId client, const SlotKey& key);
  // Drops one of `client`'s references to `slot`; ignored if it holds none. When the last
  // reference goes, the key is forgotten and the slot goes to the free list (keeping its count).
  void release(ClientId client, uint64_t slot);
  // Releases every reference `client` holds (it disconnected or died).
  void drop_client(ClientId client);

  // Slot holding the inode with this file handle, for fanotify FID records.
  std::optional<uint64_t> find_handle(uint64_t fsid, int32_t handle_type,
                                      const std::vector<unsigned char>& handle) const;
  std::optional<uint64_t> find_inode(uint64_t dev, uint64_t ino) const;
  // Bumps every in-use slot once (events were lost); returns how many.
  uint64_t bump_in_use();

  uint64_t slot_count() const { return slot_count_; }
  uint64_t in_use() const { return in_use_; }
  // Slots that can still be handed out: the free list plus the never-used ones.
  uint64_t free() const { return free_.size() + (slot_count_ - next_unused_); }
  // Slots ever handed out by this map, + 1 (the first never-used slot).
  uint64_t high_water() const { return next_unused_; }
  ClientRefs client_refs(ClientId client) const;
  std::vector<ClientId> clients() const;
  // In-use slots with the highest versions, highest first, at most `n`.
  std::vector<SlotInfo> hottest(size_t n) const;
  std::optional<SlotInfo> slot_info(uint64_t slot) const;

 private:
  struct InodeId {
    uint64_t dev;
    uint64_t ino;
    bool operator==(const InodeId&) const = default;
  };
  struct InodeIdHash {
    size_t operator()(const InodeId& id) const;
  };
  struct Entry {
    SlotKey key;
    uint64_t references = 0;  // 0: free or never used
  };
  struct Client {
    std::unordered_map<uint64_t, uint64_t> refs;  // slot -> references
    uint64_t total = 0;
  };

  // Drops up to `n` of `client`'s references on `slot`.
  void drop(Client& client, uint64_t slot, uint64_t n);
  void forget(uint64_t slot);
  static uint64_t HandleHash(uint64_t fsid, int32_t handle_type,
                             const std::vector<unsigned char>& handle);
  bool SameHandle(uint64_t slot, uint64_t fsid, int32_t handle_type,
                  const std::vector<unsigned char>& handle) const;

  uint64_t slot_count_;
  BumpFn bump_;
  SampleFn sample_;
  // Indexed by slot, grown up to the high water mark (never to the full table size, which may be
  // millions of slots nobody uses). The hot path then costs one hash lookup per index.
  std::vector<Entry> entries_;
  uint64_t in_use_ = 0;
  std::unordered_map<InodeId, uint64_t, InodeIdHash> by_inode_;
  // Handle hash -> slot; the handle itself is compared against entries_[slot].key, so that it is
  // stored once and not copied into the index.
  std::unordered_multimap<uint64_t, uint64_t> by_handle_;
  std::unordered_map<ClientId, Client> clients_;
  // FIFO, so a freed slot rests as long as possible before it is reused (a guest that held it
  // revalidates either way, but fewer do).
  std::deque<uint64_t> free_;
  uint64_t next_unused_ = 1;
};

}  // namespace svfs::versiond
