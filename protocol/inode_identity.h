// Which version-table slot a host inode has, computed alike by every svfsd (from the inode it
// serves) and by svfs-versiond (from a fanotify FID record), so that no one hands slots out and
// no request waits for one. A slot is a pure function of the inode's identity:
//
//   identity = hash(fsid, handle type, handle bytes)  the file handle name_to_handle_at gives,
//                                                      exactly what fanotify's FID records carry
//   identity = hash(st_dev, st_ino)                    where the filesystem has no handles (host
//                                                      edits there are not tracked: fanotify
//                                                      reports by handle)
//   slot     = 1 + identity mod (slot_count - 1)       slot 0 means "no version"
//
// Two inodes may share a slot: a bump of one only makes guests revalidate the other (a cost,
// never staleness). Slots are never handed out or freed, so versions only grow.
#pragma once

#include <fcntl.h>              // name_to_handle_at
#include <linux/posix_types.h>  // __kernel_fsid_t, the fsid type in fanotify info records
#include <sys/statfs.h>         // fsid_t, the fsid type of statfs

#include <cstdint>
#include <span>

namespace svfs::protocol {

// A filesystem id as one number, val[0] in the low half. statfs's and fanotify's spellings pack
// alike, so svfsd's identities (from fstatfs) match versiond's (from fanotify records).
inline uint64_t PackFsid(const fsid_t& fsid) {
  return uint64_t{static_cast<uint32_t>(fsid.__val[0])} |
         uint64_t{static_cast<uint32_t>(fsid.__val[1])} << 32;
}
inline uint64_t PackFsid(const __kernel_fsid_t& fsid) {
  return uint64_t{static_cast<uint32_t>(fsid.val[0])} |
         uint64_t{static_cast<uint32_t>(fsid.val[1])} << 32;
}

namespace detail {
// splitmix64's finalizer: spreads nearby inputs (sequential handles) over the whole range.
constexpr uint64_t Mix(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}
}  // namespace detail

// The identity of an inode known by file handle. Part of the protocol between svfsd and versiond
// (and of the table's meaning to a running fleet): changing it moves every inode to another slot.
constexpr uint64_t HandleIdentity(uint64_t fsid, int32_t handle_type,
                                  std::span<const unsigned char> handle) {
  uint64_t h = detail::Mix(fsid ^ (uint64_t{static_cast<uint32_t>(handle_type)} << 32) ^
                           0x68616e646c65ULL);  // "handle"
  for (unsigned char byte : handle) h = (h ^ byte) * 0x100000001b3ULL;  // FNV-1a step
  return detail::Mix(h ^ handle.size());
}

// The identity of an inode on a filesystem without file handles.
constexpr uint64_t InodeNumberIdentity(uint64_t dev, uint64_t ino) {
  return detail::Mix(detail::Mix(dev ^ 0x696e6f6465ULL) ^ ino);  // "inode"
}

// The identity of the inode `fd` refers to (O_PATH is enough), as svfsd computes it: by file
// handle where its filesystem (packed id `fsid`) has them, else by (dev, ino).
inline uint64_t IdentityOfFd(int fd, uint64_t fsid, uint64_t dev, uint64_t ino) {
  alignas(struct file_handle) unsigned char buf[sizeof(struct file_handle) + MAX_HANDLE_SZ];
  auto* handle = reinterpret_cast<struct file_handle*>(buf);
  handle->handle_bytes = MAX_HANDLE_SZ;
  int mount_id = 0;
  if (::name_to_handle_at(fd, "", handle, &mount_id, AT_EMPTY_PATH) != 0) {
    return InodeNumberIdentity(dev, ino);
  }
  return HandleIdentity(fsid, handle->handle_type,
                        std::span<const unsigned char>(handle->f_handle, handle->handle_bytes));
}

// The slot of `identity` in a table of `slot_count` slots (slot 0 included); 0 if the table has
// no usable slot.
constexpr uint64_t SlotOf(uint64_t identity, uint64_t slot_count) {
  return slot_count < 2 ? 0 : 1 + identity % (slot_count - 1);
}

}  // namespace svfs::protocol
