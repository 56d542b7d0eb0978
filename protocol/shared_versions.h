// svfs's FUSE extension: shared versions. The exact wire format is in docs/protocol.md
// ("Shared versions"); the guest patches in guest-kmod-patches/ are written against it.
#pragma once

#include <linux/fuse.h>

#include <cstddef>
#include <cstdint>

namespace svfs::protocol {

// INIT flag, in flags2 (bit 30 of flags2 = bit 62 of the combined 64-bit flags). Far above the
// bits upstream has assigned (32..42 as of FUSE 7.43) so the two do not collide for years.
inline constexpr uint64_t kInitSharedVersions = 1ULL << 62;

// Appended after the standard reply body when kInitSharedVersions was negotiated: after
// fuse_entry_out (LOOKUP, MKNOD, MKDIR, SYMLINK, LINK), after fuse_entry_out + fuse_open_out
// (CREATE), after fuse_attr_out (GETATTR, SETATTR), and after each fuse_direntplus record
// including its name padding (READDIRPLUS). version_index == 0: no version; the reply's
// timeouts are then zero and the guest must not cache it beyond them.
struct VersionTrailer {
  uint64_t version_index;
  int64_t version;
};
static_assert(sizeof(VersionTrailer) == 16);

// Table identity in fuse_init_out's reserved words (7.38 layout: `uint32_t unused[7]` at byte
// 36). unused[0] stays zero (upstream took it later for max_stack_depth); the uuid fills
// unused[1..4] and the generation unused[5..6].
inline constexpr size_t kInitOutUuidOffset = 40;
inline constexpr size_t kInitOutGenerationOffset = 56;
static_assert(sizeof(fuse_init_out) == 64);
static_assert(offsetof(fuse_init_out, flags2) == 32);

}  // namespace svfs::protocol
