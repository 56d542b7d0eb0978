// The vhost-user control protocol on the wire: request codes, flag and feature bits, the
// message payloads svfsd reads, and receiving/sending one message with its fds.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common/unique_fd.h"

namespace svfs::transport::vhost_user {

namespace msg {
enum Request : uint32_t {
  kGetFeatures = 1,
  kSetFeatures = 2,
  kSetOwner = 3,
  kResetOwner = 4,
  kSetMemTable = 5,
  kSetLogBase = 6,
  kSetLogFd = 7,
  kSetVringNum = 8,
  kSetVringAddr = 9,
  kSetVringBase = 10,
  kGetVringBase = 11,
  kSetVringKick = 12,
  kSetVringCall = 13,
  kSetVringErr = 14,
  kGetProtocolFeatures = 15,
  kSetProtocolFeatures = 16,
  kGetQueueNum = 17,
  kSetVringEnable = 18,
  kSetBackendReqFd = 21,
  kGetConfig = 24,
  kSetConfig = 25,
  kResetDevice = 34,
  kGetMaxMemSlots = 36,
  kAddMemReg = 37,
  kRemMemReg = 38,
};
inline constexpr uint32_t kVersion = 0x1;
inline constexpr uint32_t kVersionMask = 0x3;
inline constexpr uint32_t kReplyFlag = 0x4;
inline constexpr uint32_t kNeedReplyFlag = 0x8;
inline constexpr uint64_t kVringIndexMask = 0xff;
inline constexpr uint64_t kVringNoFd = 0x100;

// Virtio feature bits.
inline constexpr uint64_t kFeatureIndirectDesc = 1ull << 28;
inline constexpr uint64_t kFeatureEventIdx = 1ull << 29;
inline constexpr uint64_t kFeatureProtocolFeatures = 1ull << 30;
inline constexpr uint64_t kFeatureVersion1 = 1ull << 32;
// Protocol feature bits.
inline constexpr uint64_t kProtocolMq = 1ull << 0;
inline constexpr uint64_t kProtocolReplyAck = 1ull << 3;
inline constexpr uint64_t kProtocolBackendReq = 1ull << 5;
inline constexpr uint64_t kProtocolConfig = 1ull << 9;
inline constexpr uint64_t kProtocolBackendSendFd = 1ull << 10;
inline constexpr uint64_t kProtocolResetDevice = 1ull << 13;
inline constexpr uint64_t kProtocolConfigureMemSlots = 1ull << 15;
}  // namespace msg

// Payloads (the spec's "vring state", "vring address", "device config space" header).
struct VringState {
  uint32_t index;
  uint32_t num;
};
struct VringAddr {
  uint32_t index;
  uint32_t flags;
  uint64_t desc;
  uint64_t used;
  uint64_t avail;
  uint64_t log;
};
static_assert(sizeof(VringAddr) == 40);
struct ConfigHeader {
  uint32_t offset;
  uint32_t size;
  uint32_t flags;
};

// The request's name in the spec, for logs.
const char* RequestName(uint32_t request);

// One received message. Payloads beyond kMaxPayload are refused (the largest svfsd reads is
// SET_MEM_TABLE's 8 regions, 264 bytes).
struct Message {
  static constexpr size_t kHeaderSize = 12;
  static constexpr uint32_t kMaxPayload = 4096;
  static constexpr size_t kMaxFds = 8;

  uint32_t request = 0;
  uint32_t flags = 0;
  uint32_t size = 0;
  uint8_t payload[kMaxPayload];
  std::vector<UniqueFd> fds;

  bool need_reply() const { return flags & msg::kNeedReplyFlag; }
  // The payload at `offset` as a T (the caller checked `size`).
  template <typename T>
  T read(size_t offset = 0) const {
    T value;
    std::memcpy(&value, payload + offset, sizeof(T));
    return value;
  }
  UniqueFd take_fd() {
    if (fds.empty()) return UniqueFd();
    UniqueFd fd = std::move(fds.front());
    fds.erase(fds.begin());
    return fd;
  }
};

enum class Received {
  kMessage,       // `message` holds the next message
  kDisconnected,  // the frontend closed the connection
  kBroken,        // a read failed or the message broke the protocol (logged): drop the connection
};
// Reads one message (header, fds, payload) from `connection`, which poll() said is readable.
Received ReceiveMessage(int connection, Message& message);

// Sends the reply to `request` with `size` bytes of payload; false (logged) if it failed.
bool SendReply(int connection, uint32_t request, const void* payload, uint32_t size);

}  // namespace svfs::transport::vhost_user
