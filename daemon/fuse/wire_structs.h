// fs:: values to and from FUSE's wire structs (fuse_attr, fuse_entry_out, fuse_open_out,
// fuse_file_lock, the READDIR/READDIRPLUS record stream), owners translated for the guest.
#pragma once

#include <linux/fuse.h>

#include <cstdint>
#include <span>
#include <vector>

#include "daemon/fs/filesystem.h"
#include "daemon/fs/id_map.h"
#include "protocol/shared_versions.h"

namespace svfs::fuse {

inline constexpr uint64_t kNanosPerSecond = 1'000'000'000ULL;

// Inline: each runs on every entry/attr/open reply.

// Owners go to the guest translated (--translate-uid/--translate-gid).
inline void FillAttr(const fs::Attr& in, const fs::IdTranslation& ids, fuse_attr& out) {
  const struct stat& st = in.st;
  out.ino = st.st_ino;
  out.size = st.st_size;
  out.blocks = st.st_blocks;
  out.atime = st.st_atim.tv_sec;
  out.mtime = st.st_mtim.tv_sec;
  out.ctime = st.st_ctim.tv_sec;
  out.atimensec = st.st_atim.tv_nsec;
  out.mtimensec = st.st_mtim.tv_nsec;
  out.ctimensec = st.st_ctim.tv_nsec;
  out.mode = st.st_mode;
  out.nlink = st.st_nlink;
  out.uid = ids.uids.to_guest(st.st_uid);
  out.gid = ids.gids.to_guest(st.st_gid);
  out.rdev = st.st_rdev;
  out.blksize = st.st_blksize;
  out.flags = in.flags;
}

inline fuse_entry_out EncodeEntry(const fs::Entry& entry, const fs::IdTranslation& ids) {
  fuse_entry_out out{};
  out.nodeid = entry.node;
  out.generation = entry.generation;
  out.entry_valid = entry.entry_timeout_ns / kNanosPerSecond;
  out.entry_valid_nsec = entry.entry_timeout_ns % kNanosPerSecond;
  out.attr_valid = entry.attr.timeout_ns / kNanosPerSecond;
  out.attr_valid_nsec = entry.attr.timeout_ns % kNanosPerSecond;
  FillAttr(entry.attr, ids, out.attr);
  return out;
}

inline protocol::VersionTrailer EncodeVersion(const fs::Version& version) {
  return protocol::VersionTrailer{.version_index = version.index,
                                  .version = static_cast<int64_t>(version.value)};
}

inline fuse_open_out EncodeOpen(const fs::Opened& opened) {
  fuse_open_out out{};
  out.fh = opened.handle;
  out.open_flags = opened.open_flags;
  return out;
}

inline fs::FileLock DecodeLock(const fuse_file_lock& lk) {
  return fs::FileLock{.start = lk.start, .end = lk.end, .type = lk.type, .pid = lk.pid};
}

// Packs READDIR / READDIRPLUS entries into a reply buffer of the size the kernel asked for. With
// shared versions each READDIRPLUS record is followed by its VersionTrailer.
class BufferDirSink final : public fs::DirSink {
 public:
  BufferDirSink(size_t capacity, bool plus, bool versioned, const fs::IdTranslation& ids)
      : plus_(plus), versioned_(plus && versioned), capacity_(capacity), ids_(ids) {
    buffer_.reserve(capacity);
  }

  bool has_room(size_t name_length) const override {
    return buffer_.size() + record_size(name_length) <= capacity_;
  }

  bool add(const fs::DirEntry& dirent, const fs::Entry* entry) override;

  std::span<const uint8_t> bytes() const { return buffer_; }
  // The lookup references the READDIRPLUS entries carry, one per node listed.
  std::span<const fs::NodeId> nodes() const { return nodes_; }

 private:
  size_t record_size(size_t name_length) const {
    size_t dirent = FUSE_DIRENT_ALIGN(FUSE_NAME_OFFSET + name_length);
    if (!plus_) return dirent;
    return sizeof(fuse_entry_out) + dirent + (versioned_ ? sizeof(protocol::VersionTrailer) : 0);
  }

  bool plus_;
  bool versioned_;
  size_t capacity_;
  const fs::IdTranslation& ids_;
  std::vector<uint8_t> buffer_;
  std::vector<fs::NodeId> nodes_;
};

}  // namespace svfs::fuse
