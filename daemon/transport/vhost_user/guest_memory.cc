#include "daemon/transport/vhost_user/guest_memory.h"

#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/vfs.h>

#include <algorithm>
#include <limits>
#include <utility>

namespace svfs::transport::vhost_user {
namespace {

// Whether [addr, addr + len) lies inside [start, start + size) without wrapping.
bool Inside(uint64_t start, uint64_t size, uint64_t addr, uint64_t len) {
  if (addr < start) return false;
  uint64_t offset = addr - start;
  return offset <= size && len <= size - offset;
}

bool Overlaps(uint64_t a, uint64_t a_size, uint64_t b, uint64_t b_size) {
  return a < b + b_size && b < a + a_size;  // callers checked that neither range wraps
}

bool Wraps(uint64_t start, uint64_t size) {
  return size > std::numeric_limits<uint64_t>::max() - start;
}

}  // namespace

Result<MappedRegion> MappedRegion::Map(const RegionDesc& desc, int fd) {
  if (desc.memory_size == 0 || Wraps(desc.mmap_offset, desc.memory_size) ||
      desc.mmap_offset + desc.memory_size > std::numeric_limits<size_t>::max()) {
    return Err(EINVAL);
  }
  size_t length = desc.mmap_offset + desc.memory_size;
  void* mapping = ::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
  if (mapping == MAP_FAILED) return ErrnoErr();
  // Guest memory on hugetlbfs is mapped in huge pages: the fault guard must replace whole ones.
  struct statfs st {};
  size_t page_size = ::fstatfs(fd, &st) == 0 && st.f_type == HUGETLBFS_MAGIC ? st.f_bsize : 0;
  return MappedRegion(desc, mapping, length, page_size);
}

MappedRegion::MappedRegion(MappedRegion&& other) noexcept
    : desc_(other.desc_),
      mapping_(std::exchange(other.mapping_, nullptr)),
      length_(std::exchange(other.length_, 0)),
      guard_(std::move(other.guard_)) {}

MappedRegion& MappedRegion::operator=(MappedRegion&& other) noexcept {
  if (this != &other) {
    unmap();
    desc_ = other.desc_;
    mapping_ = std::exchange(other.mapping_, nullptr);
    length_ = std::exchange(other.length_, 0);
    guard_ = std::move(other.guard_);
  }
  return *this;
}

MappedRegion::~MappedRegion() { unmap(); }

void MappedRegion::unmap() {
  guard_ = shm::FaultGuard();  // before the unmap: the range may be reused
  if (mapping_ != nullptr) ::munmap(mapping_, length_);
  mapping_ = nullptr;
  length_ = 0;
}

Status GuestMemory::add(const RegionDesc& desc, int fd) {
  if (desc.memory_size == 0 || Wraps(desc.guest_phys_addr, desc.memory_size) ||
      Wraps(desc.userspace_addr, desc.memory_size)) {
    return Err(EINVAL);
  }
  if (regions_.size() >= kMaxRegions) return Err(ENOSPC);
  for (const auto& region : regions_) {
    const RegionDesc& other = region.desc();
    if (Overlaps(desc.guest_phys_addr, desc.memory_size, other.guest_phys_addr,
                 other.memory_size) ||
        Overlaps(desc.userspace_addr, desc.memory_size, other.userspace_addr,
                 other.memory_size)) {
      return Err(EINVAL);
    }
  }
  auto mapped = MappedRegion::Map(desc, fd);
  if (!mapped) return std::unexpected(mapped.error());
  regions_.push_back(std::move(*mapped));
  return {};
}

Status GuestMemory::remove(const RegionDesc& desc) {
  auto it = std::find_if(regions_.begin(), regions_.end(), [&](const MappedRegion& region) {
    return region.desc().guest_phys_addr == desc.guest_phys_addr &&
           region.desc().memory_size == desc.memory_size &&
           region.desc().userspace_addr == desc.userspace_addr;
  });
  if (it == regions_.end()) return Err(ENOENT);
  regions_.erase(it);
  return {};
}

uint8_t* GuestMemory::guest_to_host(uint64_t addr, uint64_t len) const {
  for (const auto& region : regions_) {
    const RegionDesc& d = region.desc();
    if (Inside(d.guest_phys_addr, d.memory_size, addr, len)) {
      return region.host_base() + (addr - d.guest_phys_addr);
    }
  }
  return nullptr;
}

bool GuestMemory::damaged() const {
  return std::ranges::any_of(regions_, [](const MappedRegion& region) { return region.damaged(); });
}

GuestMemory::Piece GuestMemory::guest_piece(uint64_t addr, uint64_t len) const {
  for (const auto& region : regions_) {
    const RegionDesc& d = region.desc();
    if (addr < d.guest_phys_addr || addr - d.guest_phys_addr >= d.memory_size) continue;
    uint64_t offset = addr - d.guest_phys_addr;
    return {region.host_base() + offset, std::min(len, d.memory_size - offset)};
  }
  return {};
}

uint8_t* GuestMemory::frontend_to_host(uint64_t addr, uint64_t len) const {
  for (const auto& region : regions_) {
    const RegionDesc& d = region.desc();
    if (Inside(d.userspace_addr, d.memory_size, addr, len)) {
      return region.host_base() + (addr - d.userspace_addr);
    }
  }
  return nullptr;
}

}  // namespace svfs::transport::vhost_user
