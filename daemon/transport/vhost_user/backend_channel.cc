#include "daemon/transport/vhost_user/backend_channel.h"

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <spdlog/spdlog.h>

#include "daemon/transport/vhost_user/message.h"

namespace svfs::transport::vhost_user {
namespace {

const char* CodeName(uint32_t code) {
  switch (code) {
    case backend_msg::kFsMap: return "FS_MAP";
    case backend_msg::kFsUnmap: return "FS_UNMAP";
    default: return "FS_IO";
  }
}

}  // namespace

void BackendChannel::attach(UniqueFd fd, bool usable) {
  std::lock_guard lock(mutex_);
  fd_ = std::move(fd);
  usable_ = usable;
  if (!usable) {
    spdlog::warn("vhost-user: the frontend set a backend channel without REPLY_ACK and "
                 "BACKEND_SEND_FD; DAX mappings will fail (negotiate both for DAX)");
  }
}

void BackendChannel::detach() {
  std::lock_guard lock(mutex_);
  fd_.reset();
  usable_ = false;
}

Status BackendChannel::map(int fd, const fuse::DaxMapping& mapping) {
  FsBackendMessage m{};
  m.fd_offset[0] = mapping.file_offset;
  m.cache_offset[0] = mapping.window_offset;
  m.len[0] = mapping.length;
  m.flags[0] = backend_msg::kFsFlagRead | (mapping.writable ? backend_msg::kFsFlagWrite : 0);
  return request_ok(backend_msg::kFsMap, m, fd);
}

Status BackendChannel::unmap(std::span<const fuse::DaxRange> ranges) {
  for (size_t at = 0; at < ranges.size(); at += backend_msg::kFsEntries) {
    FsBackendMessage m{};
    const size_t n = std::min(backend_msg::kFsEntries, ranges.size() - at);
    for (size_t i = 0; i < n; ++i) {
      m.cache_offset[i] = ranges[at + i].window_offset;
      m.len[i] = ranges[at + i].length;
    }
    SVFS_TRY(request_ok(backend_msg::kFsUnmap, m, -1));
  }
  return {};
}

Result<size_t> BackendChannel::transfer(int fd, uint64_t file_offset, uint64_t guest_addr,
                                        uint64_t length, Direction direction) {
  FsBackendMessage m{};
  m.fd_offset[0] = file_offset;
  m.cache_offset[0] = guest_addr;
  m.len[0] = length;
  m.flags[0] = direction == Direction::kFileToGuest ? backend_msg::kFsFlagRead
                                                    : backend_msg::kFsFlagWrite;
  const uint64_t answer = SVFS_TRY(request(backend_msg::kFsIo, m, fd));
  const auto value = static_cast<int64_t>(answer);
  if (value < 0 && value >= -4095) return Err(static_cast<int>(-value));
  // Nothing written for a non-empty write would have the guest retry forever.
  const bool stuck = answer == 0 && length > 0 && direction == Direction::kGuestToFile;
  if (value < 0 || answer > length || stuck) {
    if (refused_log_.allow()) {
      spdlog::warn("vhost-user: the frontend answered FS_IO of {} bytes with {:#x}; EIO",
                   length, answer);
    }
    return Err(EIO);
  }
  return static_cast<size_t>(answer);
}

Status BackendChannel::request_ok(uint32_t code, const FsBackendMessage& payload, int fd) {
  const uint64_t answer = SVFS_TRY(request(code, payload, fd));
  if (answer != 0) {
    spdlog::warn("vhost-user: the frontend refused DAX {} (answer {:#x})", CodeName(code), answer);
    return Err(EIO);
  }
  return {};
}

Result<uint64_t> BackendChannel::request(uint32_t code, const FsBackendMessage& payload, int fd) {
  std::lock_guard lock(mutex_);
  if (!fd_ || !usable_) {
    if (refused_log_.allow()) {
      spdlog::warn("vhost-user: DAX {} refused: no backend channel with REPLY_ACK and "
                   "BACKEND_SEND_FD (a VMM without DAX support, or one that stopped answering)",
                   CodeName(code));
    }
    return Err(EIO);
  }
  uint32_t header[3] = {code, msg::kVersion | msg::kNeedReplyFlag, sizeof(payload)};
  iovec iov[2] = {{header, sizeof(header)}, {const_cast<FsBackendMessage*>(&payload), sizeof(payload)}};
  msghdr mh{};
  mh.msg_iov = iov;
  mh.msg_iovlen = 2;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  if (fd >= 0) {
    mh.msg_control = control;
    mh.msg_controllen = sizeof(control);
    cmsghdr* c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &fd, sizeof(int));
  }
  ssize_t n;
  do {
    n = ::sendmsg(fd_.get(), &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n != static_cast<ssize_t>(sizeof(header) + sizeof(payload))) {
    spdlog::error("vhost-user: sending DAX {} on the backend channel failed: {}; closing it",
                  CodeName(code), n < 0 ? std::strerror(errno) : "short write");
    fd_.reset();
    return Err(EIO);
  }
  auto answer = read_answer(code, std::chrono::steady_clock::now() + timeout_);
  if (!answer) return Err(EIO);
  return *answer;
}

std::optional<uint64_t> BackendChannel::read_answer(uint32_t code,
                                                    std::chrono::steady_clock::time_point deadline) {
  uint8_t buffer[Message::kHeaderSize + sizeof(uint64_t)];
  size_t got = 0;
  while (got < sizeof(buffer)) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    pollfd pfd{fd_.get(), POLLIN, 0};
    const int ready = ::poll(&pfd, 1, static_cast<int>(std::max<int64_t>(left.count(), 0)));
    if (ready < 0 && errno == EINTR) continue;
    if (ready == 0) {
      // Answers carry no id: a late one would be taken for the next request's, so the channel
      // is closed and DAX requests fail until the frontend connects again.
      spdlog::error("vhost-user: the frontend did not answer a DAX request within {} ms; the "
                    "guest gets EIO and DAX is off until the frontend reconnects (is the VMM's "
                    "main loop stuck?)",
                    timeout_.count());
      fd_.reset();
      return std::nullopt;
    }
    const ssize_t n = ready < 0 ? -1 : ::recv(fd_.get(), buffer + got, sizeof(buffer) - got, MSG_DONTWAIT);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0) {
      spdlog::error("vhost-user: the backend channel {}; DAX requests fail from now on",
                    n == 0 ? "was closed by the frontend" : std::strerror(errno));
      fd_.reset();
      return std::nullopt;
    }
    got += static_cast<size_t>(n);
  }
  uint32_t answered_code, flags, size;
  std::memcpy(&answered_code, buffer, sizeof(answered_code));
  std::memcpy(&flags, buffer + 4, sizeof(flags));
  std::memcpy(&size, buffer + 8, sizeof(size));
  // Answers carry no id, so one that is not a reply to this request means the two sides no
  // longer agree on which answer is whose.
  if (answered_code != code || (flags & msg::kReplyFlag) == 0 ||
      (flags & msg::kVersionMask) != msg::kVersion) {
    spdlog::error("vhost-user: the backend channel answered {} with request {} flags {:#x} "
                  "(expected a reply to it); closing the channel",
                  CodeName(code), answered_code, flags);
    fd_.reset();
    return std::nullopt;
  }
  if (size != sizeof(uint64_t)) {
    spdlog::error("vhost-user: a backend channel answer with a {}-byte payload (expected 8); "
                  "closing the channel",
                  size);
    fd_.reset();
    return std::nullopt;
  }
  uint64_t value;
  std::memcpy(&value, buffer + Message::kHeaderSize, sizeof(value));
  return value;
}

}  // namespace svfs::transport::vhost_user
