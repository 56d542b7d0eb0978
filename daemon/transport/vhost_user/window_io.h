// Data moved between a file and guest memory svfsd has not mapped: a FUSE READ or WRITE whose
// buffer lies in the DAX window (a guest read() into, or write() from, a DAX mapping of another
// file sends the window's own guest-physical addresses). Only the VMM reaches that memory; it
// does the transfer on request (FS_IO on the backend channel, backend_channel.h).
#pragma once

#include <cstdint>

#include "common/result.h"

namespace svfs::transport::vhost_user {

class WindowIo {
 public:
  enum class Direction { kFileToGuest, kGuestToFile };

  virtual ~WindowIo() = default;
  // Moves up to `length` bytes between `fd` at `file_offset` and guest-physical `guest_addr`:
  // the count moved (fewer at the end of the file), or the errno for the guest (EFAULT when
  // the address is not guest memory, EIO when the VMM did not answer).
  virtual Result<size_t> transfer(int fd, uint64_t file_offset, uint64_t guest_addr,
                                  uint64_t length, Direction direction) = 0;
};

}  // namespace svfs::transport::vhost_user
