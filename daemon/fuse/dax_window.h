// The DAX window of one virtio-fs device: the VMM's shared-memory region (its cache-size) into
// which the guest asks, with FUSE_SETUPMAPPING, for chunks of host files to be mapped, and
// unmapped with FUSE_REMOVEMAPPING. svfsd cannot map into the guest itself: the VMM does, on
// request (DaxMapper; vhost-user's backend channel). This class checks every guest value,
// keeps the model of what is mapped, and holds each mapped file's fd while it is mapped.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>

#include "common/result.h"
#include "common/unique_fd.h"

namespace svfs::fuse {

// One chunk to map: `length` bytes of the file from `file_offset` at `window_offset`.
struct DaxMapping {
  uint64_t file_offset = 0;
  uint64_t window_offset = 0;
  uint64_t length = 0;
  bool writable = false;
};
// A range of the window.
struct DaxRange {
  uint64_t window_offset = 0;
  uint64_t length = 0;
};

// The VMM's side: performs mappings in the guest-visible window. Errors are errnos for the
// guest (EIO when the VMM failed or did not answer).
class DaxMapper {
 public:
  virtual ~DaxMapper() = default;
  virtual Status map(int fd, const DaxMapping& mapping) = 0;
  virtual Status unmap(std::span<const DaxRange> ranges) = 0;
};

class DaxWindow {
 public:
  // Offsets, lengths and file offsets must be multiples of this (mmap's unit); INIT advertises
  // it as FUSE_MAP_ALIGNMENT's log2.
  static constexpr uint16_t kAlignmentLog2 = 12;
  static constexpr uint64_t kAlignment = uint64_t{1} << kAlignmentLog2;
  // FUSE_REMOVEMAPPING_MAX_ENTRY as Linux computes it (a page of fuse_removemapping_one).
  static constexpr uint32_t kMaxRemoveEntries = 4096 / 16;

  // `size`: the window's size, equal to the VMM's (a multiple of kAlignment).
  DaxWindow(uint64_t size, DaxMapper& mapper) : size_(size), mapper_(mapper) {}

  uint64_t size() const { return size_; }
  // Whether `mapping` fits the window and the file's offsets: inside, aligned, not overflowing.
  // The server asks before it opens anything for a guest's SETUPMAPPING.
  bool acceptable(const DaxMapping& mapping) const;
  // Maps `mapping` of `file` (kept open until unmapped); replaces whatever it overlaps.
  // EINVAL for a range outside the window, unaligned or overflowing.
  Status map(const DaxMapping& mapping, UniqueFd file);
  // Unmaps each range (nothing mapped there is no error). EINVAL if any range is bad (then
  // nothing is unmapped).
  Status unmap(std::span<const DaxRange> ranges);
  // Forgets every mapping without asking the VMM (its window went with the device reset).
  void clear();

  size_t mapping_count() const;

 private:
  struct Mapped {
    uint64_t length;
    uint64_t file_offset;
    bool writable;
    std::shared_ptr<const UniqueFd> file;  // shared by the pieces of a split mapping
  };
  bool valid(uint64_t window_offset, uint64_t length) const;
  // Removes [offset, offset + length) from the model, keeping the parts of partly covered
  // mappings outside it.
  void cut(uint64_t offset, uint64_t length);

  const uint64_t size_;
  DaxMapper& mapper_;
  // Held across the VMM's call, so the model and the window change in the same order.
  mutable std::mutex mutex_;
  std::map<uint64_t, Mapped> mapped_;  // by window offset; never overlapping
};

}  // namespace svfs::fuse
