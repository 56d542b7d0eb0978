#include "versiond/slot_map.h"

#include <algorithm>
#include <utility>

namespace svfs::versiond {

namespace {

// 64-bit mix (splitmix64 finalizer): inode numbers are often sequential, and std::hash of an
// integer is the identity, which would cluster buckets.
uint64_t Mix(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

}  // namespace

size_t SlotMap::InodeIdHash::operator()(const InodeId& id) const {
  return Mix(id.ino ^ Mix(id.dev));
}

uint64_t SlotMap::HandleHash(uint64_t fsid, int32_t handle_type,
                             const std::vector<unsigned char>& handle) {
  uint64_t h = Mix(fsid ^ (uint64_t{static_cast<uint32_t>(handle_type)} << 32));
  for (unsigned char byte : handle) h = (h ^ byte) * 0x100000001b3ULL;  // FNV-1a step
  return Mix(h);
}

bool SlotMap::SameHandle(uint64_t slot, uint64_t fsid, int32_t handle_type,
                         const std::vector<unsigned char>& handle) const {
  const SlotKey& key = entries_[slot].key;
  return key.fsid == fsid && key.handle_type == handle_type && key.handle == handle;
}

SlotMap::SlotMap(uint64_t slot_count, BumpFn bump, SampleFn sample)
    : slot_count_(std::max<uint64_t>(slot_count, 1)), bump_(std::move(bump)),
      sample_(std::move(sample)) {
  entries_.resize(1);  // slot 0, never used
}

SlotGrant SlotMap::acquire(ClientId client_id, const SlotKey& key) {
  uint64_t slot = 0;
  uint64_t version = 0;
  auto [it, inserted] = by_inode_.try_emplace(InodeId{key.dev, key.ino}, 0);
  if (!inserted) {
    slot = it->second;
    entries_[slot].references++;
    version = sample_(slot);
  } else {
    if (!free_.empty()) {
      slot = free_.front();
      free_.pop_front();
    } else if (next_unused_ < slot_count_) {
      slot = next_unused_++;
      entries_.emplace_back();
    } else {
      by_inode_.erase(it);
      return {};  // table full: the daemon replies unversioned
    }
    it->second = slot;
    // Bumped on every (re)use: a guest still holding this index from its previous owner must
    // see a number it never cached.
    version = bump_(slot);
    Entry& entry = entries_[slot];
    entry.key = key;
    entry.references = 1;
    in_use_++;
    if (!key.handle.empty()) {
      // Should two inodes ever report the same handle, the first keeps the index entry.
      uint64_t h = HandleHash(key.fsid, key.handle_type, key.handle);
      auto [first, last] = by_handle_.equal_range(h);
      bool taken = false;
      for (auto i = first; i != last && !taken; ++i) {
        taken = i->second != slot && SameHandle(i->second, key.fsid, key.handle_type, key.handle);
      }
      if (!taken) by_handle_.emplace(h, slot);
    }
  }
  Client& client = clients_[client_id];
  client.refs[slot]++;
  client.total++;
  return {slot, version};
}

void SlotMap::release(ClientId client_id, uint64_t slot) {
  auto it = clients_.find(client_id);
  if (it == clients_.end()) return;
  drop(it->second, slot, 1);
  if (it->second.total == 0) clients_.erase(it);
}

void SlotMap::drop_client(ClientId client_id) {
  auto it = clients_.find(client_id);
  if (it == clients_.end()) return;
  Client client = std::move(it->second);
  clients_.erase(it);
  for (auto [slot, n] : client.refs) {
    if (slot >= entries_.size() || entries_[slot].references == 0) continue;
    Entry& entry = entries_[slot];
    entry.references -= std::min(entry.references, n);
    if (entry.references == 0) forget(slot);
  }
}

void SlotMap::drop(Client& client, uint64_t slot, uint64_t n) {
  auto held = client.refs.find(slot);
  if (held == client.refs.end()) return;  // not this client's: a stale or hostile release
  n = std::min(n, held->second);
  held->second -= n;
  client.total -= n;
  if (held->second == 0) client.refs.erase(held);
  if (slot >= entries_.size() || entries_[slot].references == 0) return;
  Entry& entry = entries_[slot];
  entry.references -= std::min(entry.references, n);
  if (entry.references == 0) forget(slot);
}

// The entry's references just reached 0.
void SlotMap::forget(uint64_t slot) {
  Entry& entry = entries_[slot];
  const SlotKey& key = entry.key;
  if (auto it = by_inode_.find(InodeId{key.dev, key.ino}); it != by_inode_.end() && it->second == slot) {
    by_inode_.erase(it);
  }
  if (!key.handle.empty()) {
    auto [first, last] = by_handle_.equal_range(HandleHash(key.fsid, key.handle_type, key.handle));
    for (auto it = first; it != last; ++it) {
      if (it->second == slot) {
        by_handle_.erase(it);
        break;
      }
    }
  }
  entry.key.handle.clear();  // keeps its capacity for the next owner
  in_use_--;
  free_.push_back(slot);  // keeps its count; the next acquire bumps it
}

std::optional<uint64_t> SlotMap::find_handle(uint64_t fsid, int32_t handle_type,
                                             const std::vector<unsigned char>& handle) const {
  if (handle.empty()) return std::nullopt;
  auto [first, last] = by_handle_.equal_range(HandleHash(fsid, handle_type, handle));
  for (auto it = first; it != last; ++it) {
    if (SameHandle(it->second, fsid, handle_type, handle)) return it->second;
  }
  return std::nullopt;
}

std::optional<uint64_t> SlotMap::find_inode(uint64_t dev, uint64_t ino) const {
  auto it = by_inode_.find(InodeId{dev, ino});
  if (it == by_inode_.end()) return std::nullopt;
  return it->second;
}

uint64_t SlotMap::bump_in_use() {
  for (uint64_t slot = 1; slot < entries_.size(); ++slot) {
    if (entries_[slot].references > 0) bump_(slot);
  }
  return in_use_;
}

ClientRefs SlotMap::client_refs(ClientId client_id) const {
  auto it = clients_.find(client_id);
  if (it == clients_.end()) return {};
  return {it->second.total, it->second.refs.size()};
}

std::vector<ClientId> SlotMap::clients() const {
  std::vector<ClientId> ids;
  ids.reserve(clients_.size());
  for (const auto& [id, client] : clients_) ids.push_back(id);
  std::sort(ids.begin(), ids.end());
  return ids;
}

std::vector<SlotInfo> SlotMap::hottest(size_t n) const {
  std::vector<std::pair<uint64_t, uint64_t>> by_version;  // (version, slot)
  by_version.reserve(in_use_);
  for (uint64_t slot = 1; slot < entries_.size(); ++slot) {
    if (entries_[slot].references > 0) by_version.emplace_back(sample_(slot), slot);
  }
  n = std::min(n, by_version.size());
  std::partial_sort(by_version.begin(), by_version.begin() + n, by_version.end(),
                    [](const auto& a, const auto& b) {
                      return a.first != b.first ? a.first > b.first : a.second < b.second;
                    });
  std::vector<SlotInfo> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    const Entry& entry = entries_[by_version[i].second];
    out.push_back(SlotInfo{by_version[i].second, by_version[i].first, entry.references, entry.key});
  }
  return out;
}

std::optional<SlotInfo> SlotMap::slot_info(uint64_t slot) const {
  if (slot == 0 || slot >= entries_.size() || entries_[slot].references == 0) return std::nullopt;
  const Entry& entry = entries_[slot];
  return SlotInfo{slot, sample_(slot), entry.references, entry.key};
}

}  // namespace svfs::versiond
