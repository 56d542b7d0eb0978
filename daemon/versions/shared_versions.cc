#include "daemon/versions/shared_versions.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>

#include <cstring>

#include <spdlog/spdlog.h>

namespace svfs::versions {
namespace {

// InodeData::version_ref: epoch in the high bits, slot in the low 40 (a trillion slots).
constexpr unsigned kSlotBits = 40;
constexpr uint64_t kSlotMask = (1ULL << kSlotBits) - 1;
// The inode left the store: a grant arriving late must be returned, not installed.
constexpr uint64_t kGone = ~0ULL;
// Keys per acquire call when re-tracking a whole store after an attach.
constexpr size_t kAttachBatch = 1024;

uint64_t Pack(uint64_t epoch, uint64_t slot) { return (epoch << kSlotBits) | (slot & kSlotMask); }
uint64_t EpochOf(uint64_t ref) { return ref >> kSlotBits; }
uint64_t SlotOf(uint64_t ref) { return ref & kSlotMask; }

// Grants of the batch this thread is between begin_batch and end_batch of, by (dev, ino).
struct BatchGrant {
  uint64_t epoch = 0;
  versiond::Grant grant;
};
struct PairHash {
  size_t operator()(const std::pair<uint64_t, uint64_t>& p) const {
    return std::hash<uint64_t>()(p.first * 0x9e3779b97f4a7c15ULL ^ p.second);
  }
};
thread_local std::unordered_map<std::pair<uint64_t, uint64_t>, BatchGrant, PairHash> t_batch;

// Sets key.handle to the file handle of `name` under `dir_fd` (with AT_EMPTY_PATH: of dir_fd
// itself), the handle versiond matches fanotify's FID records against. Left empty on failure.
void SetHandle(int dir_fd, const char* name, int flags, versiond::Key& key) {
  alignas(struct file_handle) unsigned char buf[sizeof(struct file_handle) + MAX_HANDLE_SZ];
  auto* fh = reinterpret_cast<struct file_handle*>(buf);
  fh->handle_bytes = MAX_HANDLE_SZ;
  int mount_id = 0;
  if (::name_to_handle_at(dir_fd, name, fh, &mount_id, flags) != 0) return;
  key.handle_type = fh->handle_type;
  key.handle.assign(fh->f_handle, fh->f_handle + fh->handle_bytes);
}

}  // namespace

std::unique_ptr<SharedVersions> SharedVersions::Start(Options options) {
  std::unique_ptr<SharedVersions> versions(new SharedVersions(std::move(options)));
  versiond::Client::Options client;
  client.socket_path = versions->options_.socket_path;
  client.name = versions->options_.client_name;
  client.shared_dirs = {versions->options_.shared_dir};
  client.listener = versions.get();
  versions->client_ = versiond::Client::Start(std::move(client));
  {
    std::unique_lock lock(versions->attach_mutex_);
    versions->attach_cv_.wait_for(lock, versions->options_.attach_wait,
                                  [&] { return versions->attached(); });
  }
  if (!versions->attached()) {
    spdlog::warn("shared versions: svfs-versiond at {} not reachable yet; serving unversioned "
                 "(cache=none) until it is (start svfs-versiond, or check --versiond-socket)",
                 versions->options_.socket_path);
  }
  return versions;
}

SharedVersions::SharedVersions(Options options) : options_(std::move(options)) {}

SharedVersions::~SharedVersions() {
  client_.reset();  // no listener call after this
}

void SharedVersions::set_store(const fs::InodeStore* store) {
  std::lock_guard lock(attach_mutex_);
  store_ = store;
}

std::optional<fs::VersionTableId> SharedVersions::table() const {
  shm::VersionTable* table = current_table_.load(std::memory_order_acquire);
  if (!attached() || !table) return std::nullopt;
  fs::VersionTableId id;
  std::memcpy(id.uuid.data(), table->header().uuid, id.uuid.size());
  id.generation = table->header().generation.load(std::memory_order_acquire);
  return id;
}

uint64_t SharedVersions::FsidOf(uint64_t dev, int fd) {
  {
    std::lock_guard lock(fsid_mutex_);
    if (auto it = fsid_by_dev_.find(dev); it != fsid_by_dev_.end()) return it->second;
  }
  struct statfs st {};
  if (::fstatfs(fd, &st) != 0) return 0;
  uint64_t fsid = versiond::PackFsid(st.f_fsid);
  std::lock_guard lock(fsid_mutex_);
  fsid_by_dev_.emplace(dev, fsid);
  return fsid;
}

bool SharedVersions::KeyOf(const fs::InodeData& inode, versiond::Key& key) {
  key.dev = inode.key.dev;
  key.ino = inode.key.ino;
  auto fd = inode.path_fd();
  if (!fd) return false;
  key.fsid = FsidOf(key.dev, fd->get());
  if (inode.handle) {
    const auto* fh = reinterpret_cast<const struct file_handle*>(inode.handle->bytes.data());
    key.handle_type = fh->handle_type;
    key.handle.assign(fh->f_handle, fh->f_handle + fh->handle_bytes);
  } else {
    SetHandle(fd->get(), "", AT_EMPTY_PATH, key);
  }
  return true;
}

bool SharedVersions::Install(const fs::InodeData& inode, uint64_t epoch,
                             const versiond::Grant& grant) {
  if (grant.slot == 0) return false;  // table full: stays unversioned
  uint64_t ref = inode.version_ref.load(std::memory_order_acquire);
  for (;;) {
    // Keep a slot of the same session (a concurrent track won) and never revive a gone inode.
    if (ref == kGone || (ref != 0 && EpochOf(ref) == epoch)) {
      client_->release(epoch, std::span<const uint64_t>(&grant.slot, 1));
      return false;
    }
    if (inode.version_ref.compare_exchange_weak(ref, Pack(epoch, grant.slot),
                                                std::memory_order_acq_rel)) {
      return true;
    }
  }
}

void SharedVersions::track(const fs::InodeData& inode) {
  uint64_t epoch = current_epoch_.load(std::memory_order_acquire);
  if (epoch == 0) return;
  if (!t_batch.empty()) {
    auto it = t_batch.find({inode.key.dev, inode.key.ino});
    if (it != t_batch.end()) {
      BatchGrant granted = it->second;
      t_batch.erase(it);
      Install(inode, granted.epoch, granted.grant);
      return;
    }
  }
  versiond::Key key;
  if (!KeyOf(inode, key)) return;
  auto result = client_->acquire(std::span<const versiond::Key>(&key, 1));
  if (!result || result->grants.size() != 1) return;
  Install(inode, result->epoch, result->grants[0]);
}

void SharedVersions::begin_batch(int dir_fd, std::span<const std::string_view> names) {
  end_batch();  // never nested; be safe
  if (current_epoch_.load(std::memory_order_acquire) == 0 || names.empty()) return;
  std::vector<versiond::Key> keys;
  keys.reserve(names.size());
  for (std::string_view name : names) {
    const std::string cname(name);  // a single component from getdents of a held directory fd
    struct statx stx {};
    if (::statx(dir_fd, cname.c_str(), AT_SYMLINK_NOFOLLOW | AT_STATX_SYNC_AS_STAT,
                STATX_INO | STATX_MNT_ID, &stx) != 0) {
      continue;
    }
    versiond::Key key;
    key.dev = makedev(stx.stx_dev_major, stx.stx_dev_minor);
    key.ino = stx.stx_ino;
    uint64_t mnt_id = (stx.stx_mask & STATX_MNT_ID) ? stx.stx_mnt_id : 0;
    if (store_) {
      // Already versioned in this session: the lookup will not ask for a slot.
      auto known = store_->Find(fs::InodeKey{key.dev, key.ino, mnt_id});
      if (known && CurrentSlot(*known).second != 0) continue;
    }
    key.fsid = FsidOf(key.dev, dir_fd);
    SetHandle(dir_fd, cname.c_str(), 0, key);
    keys.push_back(std::move(key));
  }
  if (keys.empty()) return;
  auto result = client_->acquire(keys);
  if (!result || result->grants.size() != keys.size()) return;
  for (size_t i = 0; i < keys.size(); ++i) {
    if (result->grants[i].slot == 0) continue;
    auto [it, inserted] = t_batch.try_emplace({keys[i].dev, keys[i].ino},
                                              BatchGrant{result->epoch, result->grants[i]});
    // A name listed twice (hard links): versiond counted two references; return the extra one.
    if (!inserted) client_->release(result->epoch, std::span<const uint64_t>(&result->grants[i].slot, 1));
  }
}

void SharedVersions::end_batch() {
  if (t_batch.empty()) return;
  std::unordered_map<uint64_t, std::vector<uint64_t>> unclaimed;  // by epoch
  for (const auto& [id, granted] : t_batch) unclaimed[granted.epoch].push_back(granted.grant.slot);
  t_batch.clear();
  for (const auto& [epoch, slots] : unclaimed) client_->release(epoch, slots);
}

void SharedVersions::untrack(const fs::InodeData& inode) {
  uint64_t ref = inode.version_ref.exchange(kGone, std::memory_order_acq_rel);
  if (ref == 0 || ref == kGone) return;
  uint64_t slot = SlotOf(ref);
  client_->release(EpochOf(ref), std::span<const uint64_t>(&slot, 1));
}

std::pair<shm::VersionTable*, uint64_t> SharedVersions::CurrentSlot(
    const fs::InodeData& inode) const {
  uint64_t ref = inode.version_ref.load(std::memory_order_acquire);
  if (ref == 0 || ref == kGone) return {nullptr, 0};
  if (EpochOf(ref) != current_epoch_.load(std::memory_order_acquire)) return {nullptr, 0};
  return {current_table_.load(std::memory_order_acquire), SlotOf(ref)};
}

fs::Version SharedVersions::sample(const fs::InodeData& inode) const {
  auto [table, slot] = CurrentSlot(inode);
  if (!table || slot == 0) return {};
  return fs::Version{slot, table->sample(slot)};
}

void SharedVersions::bump(const fs::InodeData& inode) {
  auto [table, slot] = CurrentSlot(inode);
  if (table && slot != 0) table->bump(slot);
}

void SharedVersions::attached(const versiond::TableIdentity& identity, uint64_t epoch) {
  std::unique_lock lock(attach_mutex_);
  shm::VersionTable* table = nullptr;
  {
    std::lock_guard tables_lock(tables_mutex_);
    for (auto& mapped : tables_) {
      if (std::memcmp(mapped->header().uuid, identity.uuid.data(), identity.uuid.size()) == 0) {
        table = mapped.get();
      }
    }
  }
  if (!table) {
    auto mapped = shm::VersionTable::Attach(identity.name, shm::Access::kReadWrite);
    if (!mapped) {
      spdlog::error("shared versions: {}; serving unversioned", mapped.error());
      return;
    }
    auto owned = std::make_unique<shm::VersionTable>(std::move(*mapped));
    table = owned.get();
    std::lock_guard tables_lock(tables_mutex_);
    tables_.push_back(std::move(owned));
  }
  if (announced_uuid_ && std::memcmp(announced_uuid_->data(), identity.uuid.data(), 16) != 0) {
    // The guest was told about the first table and reads that one; bumps in another table would
    // never reach it. Staying unversioned keeps it coherent (cache=none behaviour).
    spdlog::error("shared versions: svfs-versiond now serves a different table ({}); replies stay "
                  "unversioned until svfsd restarts",
                  identity.name);
    return;
  }
  announced_uuid_ = identity.uuid;
  current_table_.store(table, std::memory_order_release);
  current_epoch_.store(epoch, std::memory_order_release);

  // Every inode the guest may hold gets a slot in the new session, then one bump: changes made
  // through us between the session's start and this point were bumped nowhere (versiond ignores
  // our own fanotify events once we are attached).
  size_t tracked = 0;
  if (store_) {
    auto inodes = store_->Snapshot();
    for (size_t begin = 0; begin < inodes.size(); begin += kAttachBatch) {
      size_t end = std::min(inodes.size(), begin + kAttachBatch);
      std::vector<const fs::InodeData*> batch;
      std::vector<versiond::Key> keys;
      for (size_t i = begin; i < end; ++i) {
        versiond::Key key;
        uint64_t ref = inodes[i]->version_ref.load(std::memory_order_acquire);
        if (ref == kGone || (ref != 0 && EpochOf(ref) == epoch)) continue;
        if (!KeyOf(*inodes[i], key)) continue;
        batch.push_back(inodes[i].get());
        keys.push_back(std::move(key));
      }
      if (keys.empty()) continue;
      auto result = client_->acquire(keys);
      if (!result || result->epoch != epoch || result->grants.size() != keys.size()) break;
      for (size_t i = 0; i < batch.size(); ++i) {
        if (Install(*batch[i], epoch, result->grants[i])) {
          table->bump(result->grants[i].slot);
          ++tracked;
        }
      }
    }
  }
  spdlog::info("shared versions: attached to svfs-versiond (table {}, generation {}, session {}); "
               "{} inodes versioned",
               identity.name, identity.generation, epoch, tracked);
  lock.unlock();
  attach_cv_.notify_all();
}

void SharedVersions::detached(uint64_t epoch) {
  std::lock_guard lock(attach_mutex_);
  if (current_epoch_.load(std::memory_order_acquire) != epoch) return;
  shm::VersionTable* table = current_table_.load(std::memory_order_acquire);
  current_epoch_.store(0, std::memory_order_release);
  // Without versiond nobody sees host-side changes: make our guest drop what it cached under
  // this session's slots (one bump each), after which it is served unversioned.
  size_t dropped = 0;
  if (store_ && table) {
    for (const auto& inode : store_->Snapshot()) {
      uint64_t ref = inode->version_ref.load(std::memory_order_acquire);
      if (ref == 0 || ref == kGone || EpochOf(ref) != epoch) continue;
      table->bump(SlotOf(ref));
      if (inode->version_ref.compare_exchange_strong(ref, 0, std::memory_order_acq_rel)) ++dropped;
    }
  }
  spdlog::warn("shared versions: lost svfs-versiond (session {}); {} inodes now unversioned, "
               "serving as cache=none until it returns",
               epoch, dropped);
}

}  // namespace svfs::versions
