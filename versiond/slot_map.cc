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

size_t SlotMap::HandleIdHash::operator()(const HandleId& id) const {
  uint64_t h = Mix(id.fsid ^ static_cast<uint32_t>(id.handle_type));
  for (unsigned char byte : id.bytes) h = (h ^ byte) * 0x100000001b3ULL;  // FNV-1a step
  return Mix(h);
}

SlotMap::SlotMap(uint64_t slot_count, BumpFn bump, SampleFn sample)
    : slot_count_(std::max<uint64_t>(slot_count, 1)), bump_(std::move(bump)),
      sample_(std::move(sample)) {}

SlotGrant SlotMap::acquire(ClientId client_id, const SlotKey& key) {
  uint64_t slot = 0;
  uint64_t version = 0;
  if (auto it = by_inode_.find(InodeId{key.dev, key.ino}); it != by_inode_.end()) {
    slot = it->second;
    slots_[slot].references++;
    version = sample_(slot);
  } else {
    if (!free_.empty()) {
      slot = free_.front();
      free_.pop_front();
    } else if (next_unused_ < slot_count_) {
      slot = next_unused_++;
    } else {
      return {};  // table full: the daemon replies unversioned
    }
    // Bumped on every (re)use: a guest still holding this index from its previous owner must
    // see a number it never cached.
    version = bump_(slot);
    slots_.emplace(slot, Entry{key, 1});
    by_inode_.emplace(InodeId{key.dev, key.ino}, slot);
    if (!key.handle.empty()) {
      // try_emplace: should two inodes ever report the same handle, the first keeps it.
      by_handle_.try_emplace(HandleId{key.fsid, key.handle_type, key.handle}, slot);
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
    auto entry = slots_.find(slot);
    if (entry == slots_.end()) continue;
    entry->second.references -= std::min(entry->second.references, n);
    if (entry->second.references == 0) forget(slot);
  }
}

void SlotMap::drop(Client& client, uint64_t slot, uint64_t n) {
  auto held = client.refs.find(slot);
  if (held == client.refs.end()) return;  // not this client's: a stale or hostile release
  n = std::min(n, held->second);
  held->second -= n;
  client.total -= n;
  if (held->second == 0) client.refs.erase(held);
  auto entry = slots_.find(slot);
  if (entry == slots_.end()) return;
  entry->second.references -= std::min(entry->second.references, n);
  if (entry->second.references == 0) forget(slot);
}

void SlotMap::forget(uint64_t slot) {
  auto entry = slots_.find(slot);
  if (entry == slots_.end()) return;
  const SlotKey& key = entry->second.key;
  if (auto it = by_inode_.find(InodeId{key.dev, key.ino}); it != by_inode_.end() && it->second == slot) {
    by_inode_.erase(it);
  }
  if (!key.handle.empty()) {
    auto it = by_handle_.find(HandleId{key.fsid, key.handle_type, key.handle});
    if (it != by_handle_.end() && it->second == slot) by_handle_.erase(it);
  }
  slots_.erase(entry);
  free_.push_back(slot);  // keeps its count; the next acquire bumps it
}

std::optional<uint64_t> SlotMap::find_handle(uint64_t fsid, int32_t handle_type,
                                             const std::vector<unsigned char>& handle) const {
  if (handle.empty()) return std::nullopt;
  auto it = by_handle_.find(HandleId{fsid, handle_type, handle});
  if (it == by_handle_.end()) return std::nullopt;
  return it->second;
}

std::optional<uint64_t> SlotMap::find_inode(uint64_t dev, uint64_t ino) const {
  auto it = by_inode_.find(InodeId{dev, ino});
  if (it == by_inode_.end()) return std::nullopt;
  return it->second;
}

uint64_t SlotMap::bump_in_use() {
  for (const auto& [slot, entry] : slots_) bump_(slot);
  return slots_.size();
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
  by_version.reserve(slots_.size());
  for (const auto& [slot, entry] : slots_) by_version.emplace_back(sample_(slot), slot);
  n = std::min(n, by_version.size());
  std::partial_sort(by_version.begin(), by_version.begin() + n, by_version.end(),
                    [](const auto& a, const auto& b) {
                      return a.first != b.first ? a.first > b.first : a.second < b.second;
                    });
  std::vector<SlotInfo> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    const Entry& entry = slots_.at(by_version[i].second);
    out.push_back(SlotInfo{by_version[i].second, by_version[i].first, entry.references, entry.key});
  }
  return out;
}

std::optional<SlotInfo> SlotMap::slot_info(uint64_t slot) const {
  auto it = slots_.find(slot);
  if (it == slots_.end()) return std::nullopt;
  return SlotInfo{slot, sample_(slot), it->second.references, it->second.key};
}

}  // namespace svfs::versiond
