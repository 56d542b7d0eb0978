#include "daemon/fuse/wire_structs.h"

#include <cstring>

namespace svfs::fuse {

bool BufferDirSink::add(const fs::DirEntry& dirent, const fs::Entry* entry) {
  size_t record = record_size(dirent.name.size());
  if (buffer_.size() + record > capacity_) return false;
  size_t at = buffer_.size();
  buffer_.resize(at + record, 0);  // zero padding between records
  uint8_t* out = buffer_.data() + at;
  if (plus_) {
    fuse_entry_out encoded = entry ? EncodeEntry(*entry, ids_) : fuse_entry_out{};
    std::memcpy(out, &encoded, sizeof(encoded));
    out += sizeof(encoded);
  }
  fuse_dirent header{};
  header.ino = dirent.ino;
  header.off = dirent.offset;
  header.namelen = static_cast<uint32_t>(dirent.name.size());
  header.type = dirent.type;
  std::memcpy(out, &header, FUSE_NAME_OFFSET);
  std::memcpy(out + FUSE_NAME_OFFSET, dirent.name.data(), dirent.name.size());
  if (versioned_) {
    auto trailer = EncodeVersion(entry ? entry->attr.version : fs::Version{});
    std::memcpy(buffer_.data() + at + record - sizeof(trailer), &trailer, sizeof(trailer));
  }
  if (entry && entry->node != 0) nodes_.push_back(entry->node);
  return true;
}

}  // namespace svfs::fuse
