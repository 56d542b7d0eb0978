// The guest memory table of a vhost-user backend: the regions the frontend shares with
// SET_MEM_TABLE or ADD_MEM_REG, each mmapped from its fd, and the translation of guest-physical
// addresses (descriptor buffers) and frontend-virtual addresses (vring addresses) to host pointers.
//
// Thread safety: none inside. The Device stops every queue thread (joins it) before it changes
// the table and restarts them afterwards, so queue threads only ever read a table that does not
// change under them (device.h).
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "common/result.h"
#include "shm/fault_guard.h"
#include "common/unique_fd.h"

namespace svfs::transport::vhost_user {

// A region as vhost-user describes it (VhostUserMemoryRegion).
struct RegionDesc {
  uint64_t guest_phys_addr = 0;
  uint64_t memory_size = 0;
  uint64_t userspace_addr = 0;  // the frontend's virtual address of the region
  uint64_t mmap_offset = 0;     // where the region starts in the fd
};
static_assert(sizeof(RegionDesc) == 32);

// One mmapped region; move-only, unmapped in the destructor.
class MappedRegion {
 public:
  // Maps `fd` from offset 0 to mmap_offset + memory_size (as libvhost-user does).
  static Result<MappedRegion> Map(const RegionDesc& desc, int fd);
  MappedRegion(MappedRegion&& other) noexcept;
  MappedRegion& operator=(MappedRegion&& other) noexcept;
  MappedRegion(const MappedRegion&) = delete;
  MappedRegion& operator=(const MappedRegion&) = delete;
  ~MappedRegion();

  const RegionDesc& desc() const { return desc_; }
  uint8_t* host_base() const { return static_cast<uint8_t*>(mapping_) + desc_.mmap_offset; }
  // Whether the file shrank under the mapping (see guard_).
  bool damaged() const { return guard_.tripped(); }

 private:
  MappedRegion(const RegionDesc& desc, void* mapping, size_t length, size_t page_size)
      : desc_(desc), mapping_(mapping), length_(length),
        guard_(shm::FaultGuard::Guard(mapping, length, page_size)) {}
  void unmap();

  RegionDesc desc_;
  void* mapping_ = nullptr;
  size_t length_ = 0;
  // A frontend that shrinks the file under the mapping makes our accesses fault: they complete
  // on private zero pages instead of killing svfsd (the guest's I/O then is garbage).
  shm::FaultGuard guard_;
};

class GuestMemory {
 public:
  // The most regions accepted (GET_MAX_MEM_SLOTS; SET_MEM_TABLE carries at most 8).
  static constexpr size_t kMaxRegions = 32;

  // Maps and adds a region. EINVAL: empty, wrapping, or overlapping an existing region (in guest
  // physical or frontend virtual space); ENOSPC: table full; else the mmap error.
  Status add(const RegionDesc& desc, int fd);
  // Removes the region with this guest address, size and userspace address. ENOENT if none.
  Status remove(const RegionDesc& desc);
  void clear() { regions_.clear(); }
  size_t size() const { return regions_.size(); }
  // Whether the frontend shrank a region's file under its mapping.
  bool damaged() const;

  // Host pointer for [addr, addr + len) in guest-physical space, or nullptr unless the whole
  // range lies inside one region (addr + len must not wrap). len 0 needs addr inside or at the
  // end of a region.
  uint8_t* guest_to_host(uint64_t addr, uint64_t len) const;
  // The same in the frontend's virtual address space (SET_VRING_ADDR).
  uint8_t* frontend_to_host(uint64_t addr, uint64_t len) const;
  // The start of [addr, addr + len) that lies in one region: its host pointer and length (at
  // most len; nullptr and 0 if addr is in no region). A buffer that spans regions adjacent in
  // guest-physical space is walked piece by piece, as Linux's vhost does.
  struct Piece {
    uint8_t* host = nullptr;
    uint64_t length = 0;
  };
  Piece guest_piece(uint64_t addr, uint64_t len) const;

 private:
  std::vector<MappedRegion> regions_;
};

}  // namespace svfs::transport::vhost_user
