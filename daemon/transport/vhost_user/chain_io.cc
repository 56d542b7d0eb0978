#include "daemon/transport/vhost_user/chain_io.h"

#include <limits.h>
#include <sys/uio.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>

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
template <typename Visit>
size_t ForEachPiece(const std::vector<iovec>& iov, size_t offset, size_t len, Visit visit) {
  size_t done = 0;
  for (const auto& seg : iov) {
    if (done == len) break;
    if (offset >= seg.iov_len) {
      offset -= seg.iov_len;
      continue;
    }
    size_t n = std::min(seg.iov_len - offset, len - done);
    visit(static_cast<uint8_t*>(seg.iov_base) + offset, n);
    done += n;
    offset = 0;
  }
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

CopiedRequest CopyRequest(uint32_t queue_index, const Chain& chain, std::span<uint8_t> buffer) {
  CopiedRequest copy;
  fuse_in_header in{};
  copy.has_header = chain.readable_bytes >= sizeof(in);
  if (!copy.has_header) {
    // Too short to answer: the server drops it, and the chain is used with nothing written.
    size_t n = chain.error.empty() ? GatherFrom(chain.readable, 0, buffer.data(), chain.readable_bytes) : 0;
    copy.bytes = buffer.first(n);
    copy.refused = !chain.error.empty();
    if (copy.refused && MayLogGuestError()) {
      spdlog::warn("vhost-user: queue {}: malformed descriptor chain {}: {}", queue_index,
                   chain.head, chain.error);
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
  GatherFrom(chain.readable, sizeof(in), buffer.data() + sizeof(in), size - sizeof(in));
  copy.bytes = buffer.first(size);
  // Zero copy: a WRITE's data goes from guest memory to the file.
  copy.external_payload = headers != 0 && size == headers;
  if (copy.external_payload) copy.payload = chain.readable_bytes - headers;
  return copy;
}

Result<size_t> GuestWriteSource::write_to(int fd, uint64_t offset) {
  size_t total = 0;
  size_t first = 0;
  std::vector<iovec> iov(iov_.begin(), iov_.end());  // adjusted on short writes
  while (first < iov.size()) {
    int count = static_cast<int>(std::min<size_t>(iov.size() - first, IOV_MAX));
    ssize_t n = ::pwritev(fd, &iov[first], count, static_cast<off_t>(offset + total));
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

bool ChainReplyChannel::send(std::span<const iovec> parts) {
  size_t total = 0;
  for (const auto& part : parts) total += part.iov_len;
  if (total > chain_.writable_bytes) {
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
  SliceIov(chain_.writable, sizeof(fuse_out_header) + filled_, length, slice_);
  size_t total = 0;
  size_t first = 0;
  while (first < slice_.size()) {
    int count = static_cast<int>(std::min<size_t>(slice_.size() - first, IOV_MAX));
    ssize_t n = ::preadv(fd, &slice_[first], count, static_cast<off_t>(offset + total));
    if (n < 0) {
      if (errno == EINTR) continue;
      if (total > 0) break;
      return ErrnoErr();
    }
    total += static_cast<size_t>(n);
    size_t batch = 0;
    for (int i = 0; i < count; ++i) batch += slice_[first + i].iov_len;
    if (static_cast<size_t>(n) < batch) break;  // end of file or short read
    first += static_cast<size_t>(count);
  }
  filled_ += total;
  return total;
}

void ChainReplyChannel::send_data(const fuse_out_header& header) {
  if (header.len > chain_.writable_bytes || header.len < sizeof(header) ||
      header.len - sizeof(header) > filled_) {
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
  if (chain_.writable_bytes < sizeof(out)) {
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

}  // namespace svfs::transport::vhost_user
