#include "daemon/fs/inode_store.h"

#include <fcntl.h>

#include <spdlog/spdlog.h>

namespace svfs::fs {

Result<InodeFd> InodeData::path_fd() const {
  if (!handle) {
    if (!fd.valid()) return Err(EBADF);
    return InodeFd(fd.get());
  }
  auto* fh = reinterpret_cast<struct file_handle*>(const_cast<unsigned char*>(handle->bytes.data()));
  // Needs CAP_DAC_READ_SEARCH: callers must reopen before switching to the guest's credentials.
  int opened = ::open_by_handle_at(mount_fd->get(), fh, O_PATH | O_CLOEXEC);
  if (opened < 0) return ErrnoErr();
  return InodeFd(UniqueFd(opened));
}

void InodeStore::set_root(std::shared_ptr<InodeData> root) {
  std::lock_guard lock(mutex_);
  root->id = kRootNodeId;
  held_fds_ = root->fd.valid() ? 1 : 0;
  by_key_[root->key] = kRootNodeId;
  by_id_[kRootNodeId] = Slot{std::move(root), 1};
}

std::shared_ptr<InodeData> InodeStore::get(NodeId id) const {
  std::lock_guard lock(mutex_);
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : it->second.data;
}

std::shared_ptr<InodeData> InodeStore::find(const InodeKey& key) const {
  std::lock_guard lock(mutex_);
  auto it = by_key_.find(key);
  if (it == by_key_.end()) return nullptr;
  return by_id_.at(it->second).data;
}

std::shared_ptr<InodeData> InodeStore::acquire(std::shared_ptr<InodeData> candidate) {
  std::shared_ptr<InodeData> result;
  {
    std::lock_guard lock(mutex_);
    auto key_it = by_key_.find(candidate->key);
    if (key_it != by_key_.end()) {
      Slot& slot = by_id_.at(key_it->second);
      // Inodes known only by file handle are not pinned, so the host may have reused the inode
      // number for a new file: a different handle means a different inode.
      if (slot.data->handle && candidate->handle &&
          slot.data->handle->bytes != candidate->handle->bytes) {
        by_key_.erase(key_it);  // the stale node lives on (by id) until forgotten
        key_it = by_key_.end();
      }
    }
    if (key_it != by_key_.end()) {
      Slot& slot = by_id_.at(key_it->second);
      if (key_it->second != kRootNodeId) ++slot.refs;
      result = slot.data;
    } else {
      NodeId id = next_id_++;
      candidate->id = id;
      by_key_.emplace(candidate->key, id);
      by_id_.emplace(id, Slot{candidate, 1});
      if (candidate->fd.valid()) ++held_fds_;
      return candidate;
    }
  }
  // `candidate` (and its fd) is released here, outside the lock.
  return result;
}

std::shared_ptr<InodeData> InodeStore::acquire_pinned(const InodeKey& key) {
  std::lock_guard lock(mutex_);
  auto key_it = by_key_.find(key);
  if (key_it == by_key_.end()) return nullptr;
  Slot& slot = by_id_.at(key_it->second);
  if (slot.data->handle) return nullptr;
  if (key_it->second != kRootNodeId) ++slot.refs;
  return slot.data;
}

void InodeStore::forget(NodeId id, uint64_t count) {
  if (id == kRootNodeId) return;
  std::shared_ptr<InodeData> freed;  // destroyed after the lock is released
  {
    std::lock_guard lock(mutex_);
    auto it = by_id_.find(id);
    if (it == by_id_.end()) return;
    Slot& slot = it->second;
    slot.refs = count >= slot.refs ? 0 : slot.refs - count;
    if (slot.refs > 0) return;
    freed = std::move(slot.data);
    // The key may already name a newer node (see acquire): erase it only if it is ours.
    if (auto key_it = by_key_.find(freed->key); key_it != by_key_.end() && key_it->second == id) {
      by_key_.erase(key_it);
    }
    by_id_.erase(it);
    if (freed->fd.valid()) --held_fds_;
  }
  spdlog::debug("inode {} freed", id);
}

void InodeStore::clear() {
  std::unordered_map<NodeId, Slot> dropped;  // destroyed after the lock is released
  {
    std::lock_guard lock(mutex_);
    auto root = by_id_.extract(kRootNodeId);
    dropped.swap(by_id_);
    by_key_.clear();
    held_fds_ = 0;
    if (!root.empty()) {
      by_key_[root.mapped().data->key] = kRootNodeId;
      held_fds_ = root.mapped().data->fd.valid() ? 1 : 0;
      by_id_.insert(std::move(root));
    }
  }
}

uint64_t InodeStore::ref_count(NodeId id) const {
  std::lock_guard lock(mutex_);
  auto it = by_id_.find(id);
  return it == by_id_.end() ? 0 : it->second.refs;
}

size_t InodeStore::size() const {
  std::lock_guard lock(mutex_);
  return by_id_.size();
}

size_t InodeStore::held_fds() const {
  std::lock_guard lock(mutex_);
  return held_fds_;
}

Result<std::shared_ptr<const UniqueFd>> MountFds::get(
    int mount_id, const std::function<Result<UniqueFd>()>& open) {
  {
    std::lock_guard lock(mutex_);
    if (auto it = fds_.find(mount_id); it != fds_.end()) return it->second;
  }
  auto fd = std::make_shared<const UniqueFd>(SVFS_TRY(open()));
  std::lock_guard lock(mutex_);
  // A concurrent caller may have won; keep the first one (ours closes when `fd` goes away).
  auto [it, inserted] = fds_.emplace(mount_id, fd);
  return it->second;
}

}  // namespace svfs::fs
