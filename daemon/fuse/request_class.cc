#include "daemon/fuse/request_class.h"

#include <fcntl.h>
#include <linux/fuse.h>

#include <cstring>

namespace svfs::fuse {
namespace {

// Transfers from this size on count as slow.
constexpr uint32_t kLargeTransfer = 128 * 1024;

template <typename T>
bool ReadArgs(std::span<const uint8_t> request, T& out) {
  if (request.size() < sizeof(fuse_in_header) + sizeof(T)) return false;
  std::memcpy(&out, request.data() + sizeof(fuse_in_header), sizeof(T));
  return true;
}

}  // namespace

Schedule Classify(std::span<const uint8_t> request) {
  fuse_in_header header;
  if (request.size() < sizeof(header)) return Schedule::kQuick;
  std::memcpy(&header, request.data(), sizeof(header));
  switch (header.opcode) {
    case FUSE_SETLKW:
      return Schedule::kBlocking;
    case FUSE_FSYNC:
    case FUSE_FSYNCDIR:
    case FUSE_FALLOCATE:
    case FUSE_COPY_FILE_RANGE:
    case FUSE_SYNCFS:
    case FUSE_FLUSH:  // close() on the host: NFS writes back
    case FUSE_READDIR:
    case FUSE_READDIRPLUS:
    case FUSE_SETUPMAPPING:  // waits for the VMM's answer on the backend channel
    case FUSE_REMOVEMAPPING:
      return Schedule::kSlow;
    case FUSE_SETATTR: {
      fuse_setattr_in in;
      return ReadArgs(request, in) && (in.valid & FATTR_SIZE) ? Schedule::kSlow : Schedule::kQuick;
    }
    case FUSE_OPEN: {
      fuse_open_in in;
      return ReadArgs(request, in) && (in.flags & O_TRUNC) ? Schedule::kSlow : Schedule::kQuick;
    }
    case FUSE_CREATE: {
      fuse_create_in in;
      return ReadArgs(request, in) && (in.flags & O_TRUNC) ? Schedule::kSlow : Schedule::kQuick;
    }
    case FUSE_READ: {
      fuse_read_in in;
      return ReadArgs(request, in) && in.size >= kLargeTransfer ? Schedule::kSlow : Schedule::kQuick;
    }
    case FUSE_WRITE: {
      fuse_write_in in;
      return ReadArgs(request, in) && in.size >= kLargeTransfer ? Schedule::kSlow : Schedule::kQuick;
    }
    default:
      return Schedule::kQuick;
  }
}

size_t HeadersBeforePayload(uint32_t opcode) {
  return opcode == FUSE_WRITE ? sizeof(fuse_in_header) + sizeof(fuse_write_in) : 0;
}

}  // namespace svfs::fuse
