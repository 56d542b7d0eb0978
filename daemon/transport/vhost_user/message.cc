#include "daemon/transport/vhost_user/message.h"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include <spdlog/spdlog.h>

namespace svfs::transport::vhost_user {

const char* RequestName(uint32_t request) {
  switch (request) {
    case msg::kGetFeatures: return "GET_FEATURES";
    case msg::kSetFeatures: return "SET_FEATURES";
    case msg::kSetOwner: return "SET_OWNER";
    case msg::kResetOwner: return "RESET_OWNER";
    case msg::kSetMemTable: return "SET_MEM_TABLE";
    case msg::kSetLogBase: return "SET_LOG_BASE";
    case msg::kSetLogFd: return "SET_LOG_FD";
    case msg::kSetVringNum: return "SET_VRING_NUM";
    case msg::kSetVringAddr: return "SET_VRING_ADDR";
    case msg::kSetVringBase: return "SET_VRING_BASE";
    case msg::kGetVringBase: return "GET_VRING_BASE";
    case msg::kSetVringKick: return "SET_VRING_KICK";
    case msg::kSetVringCall: return "SET_VRING_CALL";
    case msg::kSetVringErr: return "SET_VRING_ERR";
    case msg::kGetProtocolFeatures: return "GET_PROTOCOL_FEATURES";
    case msg::kSetProtocolFeatures: return "SET_PROTOCOL_FEATURES";
    case msg::kGetQueueNum: return "GET_QUEUE_NUM";
    case msg::kSetVringEnable: return "SET_VRING_ENABLE";
    case msg::kSetBackendReqFd: return "SET_BACKEND_REQ_FD";
    case msg::kGetConfig: return "GET_CONFIG";
    case msg::kSetConfig: return "SET_CONFIG";
    case msg::kResetDevice: return "RESET_DEVICE";
    case msg::kGetMaxMemSlots: return "GET_MAX_MEM_SLOTS";
    case msg::kAddMemReg: return "ADD_MEM_REG";
    case msg::kRemMemReg: return "REM_MEM_REG";
    default: return "UNKNOWN";
  }
}

Received ReceiveMessage(int connection, Message& message) {
  // The header, with any fds.
  uint8_t header[Message::kHeaderSize];
  iovec iov{header, sizeof(header)};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * Message::kMaxFds)];
  msghdr mh{};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  mh.msg_control = control;
  mh.msg_controllen = sizeof(control);
  ssize_t n;
  do {
    n = ::recvmsg(connection, &mh, MSG_CMSG_CLOEXEC | MSG_WAITALL);
  } while (n < 0 && errno == EINTR);
  const int recv_errno = errno;
  // Owned before anything else is checked, so no received fd leaks.
  message.fds.clear();
  for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c != nullptr; c = CMSG_NXTHDR(&mh, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      message.fds.emplace_back(fd);
    }
  }
  if (n == 0) {
    spdlog::info("vhost-user: frontend disconnected");
    return Received::kDisconnected;
  }
  if (n < 0) {
    spdlog::error("vhost-user: receiving a message failed: {}", std::strerror(recv_errno));
    return Received::kBroken;
  }
  if (static_cast<size_t>(n) < sizeof(header) || (mh.msg_flags & MSG_CTRUNC)) {
    spdlog::error("vhost-user: truncated message header or too many fds; disconnecting");
    return Received::kBroken;
  }
  std::memcpy(&message.request, header, 4);
  std::memcpy(&message.flags, header + 4, 4);
  std::memcpy(&message.size, header + 8, 4);
  if ((message.flags & msg::kVersionMask) != msg::kVersion) {
    spdlog::error("vhost-user: message with version {} (expected 1); disconnecting",
                  message.flags & msg::kVersionMask);
    return Received::kBroken;
  }
  if (message.size > Message::kMaxPayload) {
    spdlog::error("vhost-user: {} with a {}-byte payload (at most {}); disconnecting",
                  RequestName(message.request), message.size, Message::kMaxPayload);
    return Received::kBroken;
  }
  size_t got = 0;
  while (got < message.size) {
    ssize_t m = ::recv(connection, message.payload + got, message.size - got, MSG_WAITALL);
    if (m < 0 && errno == EINTR) continue;
    if (m <= 0) {
      spdlog::error("vhost-user: connection lost inside a message");
      return Received::kBroken;
    }
    got += static_cast<size_t>(m);
  }
  return Received::kMessage;
}

bool SendReply(int connection, uint32_t request, const void* payload, uint32_t size) {
  uint32_t header[3] = {request, msg::kVersion | msg::kReplyFlag, size};
  iovec iov[2] = {{header, sizeof(header)}, {const_cast<void*>(payload), size}};
  msghdr mh{};
  mh.msg_iov = iov;
  mh.msg_iovlen = size ? 2 : 1;
  ssize_t n;
  do {
    n = ::sendmsg(connection, &mh, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  if (n != static_cast<ssize_t>(sizeof(header) + size)) {
    spdlog::error("vhost-user: sending the {} reply failed: {}", RequestName(request),
                  n < 0 ? std::strerror(errno) : "short write");
    return false;
  }
  return true;
}

}  // namespace svfs::transport::vhost_user
