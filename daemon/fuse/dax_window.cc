#include "daemon/fuse/dax_window.h"

#include <cerrno>
#include <limits>
#include <vector>

namespace svfs::fuse {

bool DaxWindow::valid(uint64_t window_offset, uint64_t length) const {
  return length != 0 && window_offset % kAlignment == 0 && length % kAlignment == 0 &&
         window_offset <= size_ && length <= size_ - window_offset;
}

bool DaxWindow::acceptable(const DaxMapping& mapping) const {
  // The file range must be a valid off_t range too (the VMM mmaps it).
  constexpr uint64_t kMaxOffset = std::numeric_limits<int64_t>::max();
  return valid(mapping.window_offset, mapping.length) && mapping.file_offset % kAlignment == 0 &&
         mapping.length <= kMaxOffset && mapping.file_offset <= kMaxOffset - mapping.length;
}

Status DaxWindow::map(const DaxMapping& mapping, UniqueFd file) {
  if (!acceptable(mapping) || !file) return Err(EINVAL);
  std::lock_guard lock(mutex_);
  SVFS_TRY(mapper_.map(file.get(), mapping));
  cut(mapping.window_offset, mapping.length);
  mapped_.emplace(mapping.window_offset,
                  Mapped{mapping.length, mapping.file_offset, mapping.writable,
                         std::make_shared<const UniqueFd>(std::move(file))});
  return {};
}

Status DaxWindow::unmap(std::span<const DaxRange> ranges) {
  for (const DaxRange& range : ranges) {
    if (!valid(range.window_offset, range.length)) return Err(EINVAL);
  }
  std::lock_guard lock(mutex_);
  SVFS_TRY(mapper_.unmap(ranges));
  for (const DaxRange& range : ranges) cut(range.window_offset, range.length);
  return {};
}

void DaxWindow::cut(uint64_t offset, uint64_t length) {
  const uint64_t end = offset + length;
  // The first mapping that may reach into the range starts before it.
  auto it = mapped_.lower_bound(offset);
  if (it != mapped_.begin()) --it;
  std::vector<std::pair<uint64_t, Mapped>> kept;
  while (it != mapped_.end() && it->first < end) {
    const uint64_t start = it->first;
    const Mapped& m = it->second;
    const uint64_t stop = start + m.length;
    if (stop <= offset) {
      ++it;
      continue;
    }
    if (start < offset) kept.emplace_back(start, Mapped{offset - start, m.file_offset, m.writable, m.file});
    if (stop > end) {
      kept.emplace_back(end, Mapped{stop - end, m.file_offset + (end - start), m.writable, m.file});
    }
    it = mapped_.erase(it);
  }
  for (auto& [start, m] : kept) mapped_.emplace(start, std::move(m));
}

void DaxWindow::clear() {
  std::lock_guard lock(mutex_);
  mapped_.clear();
}

size_t DaxWindow::mapping_count() const {
  std::lock_guard lock(mutex_);
  return mapped_.size();
}

}  // namespace svfs::fuse
