#include "daemon/transport/vhost_user/chain_io.h"

#include <limits.h>
#include <sys/uio.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>
#include <utility>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/log_limiter.h"
#include "daemon/fuse/request_class.h"

namespace svfs::transport::vhost_user {

bool MayLogGuestError() {
  static LogLimiter limiter("vhost-user guest errors");
  return limiter.allow();
}

namespace {

// Calls visit(base, length) for each piece of [offset, offset + len) of `iov`, in order; returns
// the bytes visited (fewer than `len` if the iovecs end first).
// Stops at a buffer outside guest memory (a null base).
template <typename Visit>
size_t ForEachPiece(const std::vector<iovec>& iov, size_t offset, size_t len, Visit visit) {
  size_t done = 0;
  for (const auto& seg : iov) {
    if (done == len) break;
    if (offset >= seg.iov_len) {
      offset -= seg.iov_len;
      continue;
    }
    if (seg.iov_base == nullptr) break;
    size_t n = std::min(seg.iov_len - offset, len - done);
    visit(static_cast<uint8_t*>(seg.iov_base) + offset, n);
    done += n;
    offset = 0;
  }
  return done;
}

// Reads `fd` at `offset` into `iov` until it is full or the file ends (a short read); the bytes
// read. An error after some bytes ends the read with those.
Result<size_t> PreadvAll(int fd, uint64_t offset, std::span<const iovec> iov) {
  size_t total = 0;
  size_t first = 0;
  while (first < iov.size()) {
    const int count = static_cast<int>(std::min<size_t>(iov.size() - first, IOV_MAX));
    const ssize_t n = ::preadv(fd, &iov[first], count, static_cast<off_t>(offset + total));
    if (n < 0) {
      if (errno == EINTR) continue;
      if (total > 0) break;
      return ErrnoErr();
    }
    total += static_cast<size_t>(n);
    size_t batch = 0;
    for (int i = 0; i < count; ++i) batch += iov[first + i].iov_len;
    if (static_cast<size_t>(n) < batch) break;  // end of file or short read
    first += static_cast<size_t>(count);
  }
  return total;
}

// Writes all of `iov` to `fd` at `offset`, going on after short writes (it adjusts `iov`); the
// bytes written. An error after some bytes ends the write with those.
Result<size_t> PwritevAll(int fd, uint64_t offset, std::span<iovec> iov) {
  size_t total = 0;
  size_t first = 0;
  while (first < iov.size()) {
    const int count = static_cast<int>(std::min<size_t>(iov.size() - first, IOV_MAX));
    const ssize_t n = ::pwritev(fd, &iov[first], count, static_cast<off_t>(offset + total));
    if (n < 0) {
      if (errno == EINTR) continue;
      if (total > 0) break;
      return ErrnoErr();
    }
    if (n == 0) break;
    total += static_cast<size_t>(n);
    size_t left = static_cast<size_t>(n);
    while (first < iov.size() && left >= iov[first].iov_len) left -= iov[first++].iov_len;
    if (left > 0) {
      iov[first].iov_base = static_cast<uint8_t*>(iov[first].iov_base) + left;
      iov[first].iov_len -= left;
    }
  }
  return total;
}

// Moves [offset, offset + length) of one side of `chain` from or to `fd` at `file_offset`: the
// runs in svfsd's guest memory with preadv/pwritev (through `run`), the buffers outside it
// through the VMM, one request per range of contiguous guest addresses (Linux sends a
// descriptor per page). Stops at the first short transfer; the bytes moved.
Result<size_t> TransferWithWindow(const Chain& chain, bool writable, size_t offset, size_t length,
                                  int fd, uint64_t file_offset, WindowIo::Direction direction,
                                  WindowIo& window_io, std::vector<iovec>& run) {
  const std::vector<iovec>& iov = writable ? chain.writable : chain.readable;
  const bool to_guest = direction == WindowIo::Direction::kFileToGuest;
  size_t done = 0;
  int error = 0;
  // Gathered and not moved yet: a run in guest memory, or a range outside it (one at a time).
  size_t run_bytes = 0;
  uint64_t outside_addr = 0;
  size_t outside_bytes = 0;
  run.clear();
  // Each moves what is pending; false if it came up short or failed.
  auto flush_run = [&]() -> bool {
    if (run.empty()) return true;
    auto n = to_guest ? PreadvAll(fd, file_offset + done, run)
                      : PwritevAll(fd, file_offset + done, run);
    run.clear();
    const size_t wanted = std::exchange(run_bytes, 0);
    if (!n) {
      error = n.error();
      return false;
    }
    done += *n;
    return *n == wanted;
  };
  auto flush_outside = [&]() -> bool {
    if (outside_bytes == 0) return true;
    const size_t wanted = std::exchange(outside_bytes, 0);
    auto moved = window_io.transfer(fd, file_offset + done, outside_addr, wanted, direction);
    if (!moved) {
      error = moved.error();
      return false;
    }
    if (*moved > wanted) {  // not a WindowIo's answer (BackendChannel checks the VMM's)
      error = EIO;
      return false;
    }
    done += *moved;
    return *moved == wanted;
  };
  bool stopped = false;
  for (uint32_t i = 0; i < iov.size() && done + run_bytes + outside_bytes < length; ++i) {
    const iovec& seg = iov[i];
    if (offset >= seg.iov_len) {
      offset -= seg.iov_len;
      continue;
    }
    const size_t n = std::min(seg.iov_len - offset, length - done - run_bytes - outside_bytes);
    if (seg.iov_base != nullptr) {
      if (!flush_outside()) {
        stopped = true;
        break;
      }
      run.push_back({static_cast<uint8_t*>(seg.iov_base) + offset, n});
      run_bytes += n;
      offset = 0;
      continue;
    }
    const auto outside = std::find_if(chain.outside.begin(), chain.outside.end(),
                                      [&](const Chain::OutsideBuffer& b) {
                                        return b.writable == writable && b.segment == i;
                                      });
    if (outside == chain.outside.end()) {  // a chain not from Virtqueue::pop
      error = EIO;
      stopped = true;
      break;
    }
    const uint64_t addr = outside->guest_addr + offset;
    if (!flush_run() || (outside_bytes > 0 && outside_addr + outside_bytes != addr && !flush_outside())) {
      stopped = true;
      break;
    }
    if (outside_bytes == 0) outside_addr = addr;
    outside_bytes += n;
    offset = 0;
  }
  if (!stopped && flush_run()) flush_outside();
  if (done == 0 && error != 0) return Err(error);
  return done;
}

}  // namespace

size_t GatherFrom(const std::vector<iovec>& iov, size_t offset, void* dst, size_t len) {
  auto* out = static_cast<uint8_t*>(dst);
  return ForEachPiece(iov, offset, len, [&](uint8_t* piece, size_t n) {
    std::memcpy(out, piece, n);
    out += n;
  });
}

size_t ScatterTo(const std::vector<iovec>& iov, size_t offset, const void* src, size_t len) {
  auto* in = static_cast<const uint8_t*>(src);
  return ForEachPiece(iov, offset, len, [&](uint8_t* piece, size_t n) {
    std::memcpy(piece, in, n);
    in += n;
  });
}

void SliceIov(const std::vector<iovec>& iov, size_t offset, size_t len, std::vector<iovec>& out) {
  out.clear();
  ForEachPiece(iov, offset, len, [&](uint8_t* piece, size_t n) { out.push_back({piece, n}); });
}

bool InGuestMemory(const Chain& chain, bool writable, size_t bytes) {
  // Outside buffers are listed in chain order: the first of a side is where its reach ends.
  for (const Chain::OutsideBuffer& buffer : chain.outside) {
    if (buffer.writable != writable) continue;
    const std::vector<iovec>& iov = writable ? chain.writable : chain.readable;
    size_t before = 0;
    for (uint32_t i = 0; i < buffer.segment; ++i) before += iov[i].iov_len;
    return bytes <= before;
  }
  return true;
}

namespace {

// Why a chain's buffers outside guest memory are refused, for the log.
std::string OutsideReason(const Chain& chain, bool window_io) {
  const Chain::OutsideBuffer& first = chain.outside.front();
  const iovec& seg = (first.writable ? chain.writable : chain.readable)[first.segment];
  return fmt::format("descriptor buffer {:#x}+{} outside guest memory{}", first.guest_addr,
                     seg.iov_len,
                     window_io ? " (allowed for READ data and WRITE payload only: the DAX window)"
                               : "");
}

// Whether the VMM may move this request's data (`size`: the bytes copied before a WRITE's
// payload): only a READ's data or a WRITE's payload, and only with a window.
bool OutsideAllowed(const Chain& chain, uint32_t opcode, size_t size, bool external_payload,
                    bool window_io) {
  if (!window_io) return false;
  if (opcode == FUSE_WRITE) {
    return external_payload && InGuestMemory(chain, false, size) &&
           InGuestMemory(chain, true, chain.writable_bytes);
  }
  if (opcode == FUSE_READ) {
    return InGuestMemory(chain, false, chain.readable_bytes) &&
           InGuestMemory(chain, true, sizeof(fuse_out_header));
  }
  return false;
}

}  // namespace

CopiedRequest CopyRequest(uint32_t queue_index, const Chain& chain, std::span<uint8_t> buffer,
                          bool window_io) {
  CopiedRequest copy;
  fuse_in_header in{};
  const bool header_reachable = InGuestMemory(chain, false, sizeof(in));
  copy.has_header = chain.readable_bytes >= sizeof(in) && header_reachable;
  if (!copy.has_header) {
    // Too short to answer, or its header out of reach: the server drops it, and the chain is
    // used with nothing written.
    size_t n = chain.error.empty() && header_reachable
                   ? GatherFrom(chain.readable, 0, buffer.data(), chain.readable_bytes)
                   : 0;
    copy.bytes = buffer.first(n);
    copy.refused = !chain.error.empty() || !header_reachable;
    if (copy.refused && MayLogGuestError()) {
      spdlog::warn("vhost-user: queue {}: malformed descriptor chain {}: {}", queue_index,
                   chain.head, chain.error.empty() ? OutsideReason(chain, window_io) : chain.error);
    }
    return copy;
  }
  GatherFrom(chain.readable, 0, buffer.data(), sizeof(in));
  std::memcpy(&in, buffer.data(), sizeof(in));
  copy.unique = in.unique;
  copy.bytes = buffer.first(sizeof(in));
  if (!chain.error.empty()) {
    if (MayLogGuestError()) {
      spdlog::warn("vhost-user: queue {}: malformed descriptor chain {}: {} (EIO reply)",
                   queue_index, chain.head, chain.error);
    }
    copy.refused = true;
    return copy;
  }
  // The rest is copied after the header, never over it: the opcode read above is the one served.
  size_t headers = fuse::HeadersBeforePayload(in.opcode);
  size_t size = headers != 0 && chain.readable_bytes >= headers ? headers : chain.readable_bytes;
  if (size > buffer.size()) {
    if (MayLogGuestError()) {
      spdlog::warn("vhost-user: queue {}: {}-byte request exceeds {} bytes", queue_index, size,
                   buffer.size());
    }
    copy.refused = true;
    return copy;
  }
  // Zero copy: a WRITE's data goes from guest memory to the file.
  const bool external_payload = headers != 0 && size == headers;
  if (!chain.outside.empty() &&
      !OutsideAllowed(chain, in.opcode, size, external_payload, window_io)) {
    if (MayLogGuestError()) {
      spdlog::warn("vhost-user: queue {}: malformed descriptor chain {}: {} (EIO reply)",
                   queue_index, chain.head, OutsideReason(chain, window_io));
    }
    copy.refused = true;
    return copy;
  }
  GatherFrom(chain.readable, sizeof(in), buffer.data() + sizeof(in), size - sizeof(in));
  copy.bytes = buffer.first(size);
  copy.external_payload = external_payload;
  if (copy.external_payload) copy.payload = chain.readable_bytes - headers;
  return copy;
}

Result<size_t> GuestWriteSource::write_to(int fd, uint64_t offset) {
  if (window_io_ != nullptr && !InGuestMemory(chain_, false, offset_ + size_)) {
    return TransferWithWindow(chain_, /*writable=*/false, offset_, size_, fd, offset,
                              WindowIo::Direction::kGuestToFile, *window_io_, scratch_);
  }
  SliceIov(chain_.readable, offset_, size_, scratch_);
  return PwritevAll(fd, offset, scratch_);
}

bool ChainReplyChannel::send(std::span<const iovec> parts) {
  size_t total = 0;
  for (const auto& part : parts) total += part.iov_len;
  if (total > chain_.writable_bytes || !InGuestMemory(chain_, true, total)) {
    too_large(total);
    return false;
  }
  size_t offset = 0;
  for (const auto& part : parts) {
    offset += ScatterTo(chain_.writable, offset, part.iov_base, part.iov_len);
  }
  written_ = offset;
  return true;
}

fs::ReadSink& ChainReplyChannel::data_sink(size_t max_length) {
  size_t room = chain_.writable_bytes > sizeof(fuse_out_header)
                    ? chain_.writable_bytes - sizeof(fuse_out_header)
                    : 0;
  limit_ = std::min(max_length, room);
  filled_ = 0;
  return *this;
}

Result<size_t> ChainReplyChannel::read_from(int fd, uint64_t offset, size_t length) {
  length = std::min(length, limit_ - filled_);
  if (length == 0) return size_t{0};
  const size_t at = sizeof(fuse_out_header) + filled_;
  Result<size_t> n = size_t{0};
  if (window_io_ != nullptr && !InGuestMemory(chain_, true, at + length)) {
    n = TransferWithWindow(chain_, /*writable=*/true, at, length, fd, offset,
                           WindowIo::Direction::kFileToGuest, *window_io_, slice_);
  } else {
    SliceIov(chain_.writable, at, length, slice_);
    n = PreadvAll(fd, offset, slice_);
  }
  if (n) filled_ += *n;
  return n;
}

void ChainReplyChannel::send_data(const fuse_out_header& header) {
  if (header.len > chain_.writable_bytes || header.len < sizeof(header) ||
      header.len - sizeof(header) > filled_ || !InGuestMemory(chain_, true, sizeof(header))) {
    return too_large(header.len);
  }
  ScatterTo(chain_.writable, 0, &header, sizeof(header));
  written_ = header.len;
}

void ChainReplyChannel::send_error(int error) {
  fuse_out_header out{};
  out.len = sizeof(out);
  out.error = -error;
  out.unique = unique_;
  if (chain_.writable_bytes < sizeof(out) || !InGuestMemory(chain_, true, sizeof(out))) {
    written_ = 0;
    return;
  }
  ScatterTo(chain_.writable, 0, &out, sizeof(out));
  written_ = sizeof(out);
}

void ChainReplyChannel::too_large(size_t total) {
  if (MayLogGuestError()) {
    spdlog::warn("vhost-user: reply of {} bytes does not fit the guest's {}-byte buffer (EIO)",
                 total, chain_.writable_bytes);
  }
  send_error(EIO);
}

ServedChain ServeChain(fuse::Server& server, fuse::DaxWindow* dax, WindowIo* window_io,
                       const Chain& chain, const CopiedRequest& copy, std::vector<iovec>& scratch,
                       fuse::Server::Clock::time_point started) {
  ChainReplyChannel channel(chain, copy.unique, window_io);
  fuse::Server::Clock::time_point done = started;
  if (copy.refused) {
    if (copy.has_header) channel.send_error(EIO);
  } else if (copy.external_payload) {
    GuestWriteSource source(chain, copy.bytes.size(), copy.payload, scratch, window_io);
    done = server.handle(copy.bytes, &source, channel, nullptr, dax, started);
  } else {
    done = server.handle(copy.bytes, nullptr, channel, nullptr, dax, started);
  }
  return {.written = channel.written(), .done = done};
}

}  // namespace svfs::transport::vhost_user
