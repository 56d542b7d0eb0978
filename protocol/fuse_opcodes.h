// FUSE protocol constants svfs negotiates, and opcode names for logs and counters.
#pragma once

#include <linux/fuse.h>

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace svfs::protocol {

inline constexpr uint32_t kFuseMajor = 7;
// The protocol minor svfsd speaks (Linux 6.1's), and the oldest guest minor it serves.
inline constexpr uint32_t kFuseMinor = 38;
inline constexpr uint32_t kFuseMinMinor = 31;

inline constexpr uint32_t kPageSize = 4096;
inline constexpr uint32_t kMaxPages = 256;
inline constexpr uint32_t kMaxWrite = kMaxPages * kPageSize;  // 1 MiB, as virtiofsd
// Largest READ/READDIR reply payload accepted in a request's size field.
inline constexpr uint32_t kMaxReadSize = kMaxWrite;
// Room for the request header and arguments in front of a WRITE payload.
inline constexpr size_t kRequestHeaderRoom = 4096;
inline constexpr size_t kMaxRequestSize = kMaxWrite + kRequestHeaderRoom;

// Opcodes are small integers; counters index an array of this size.
inline constexpr size_t kOpcodeSlots = 64;

// "LOOKUP", "GETATTR", ...; "OP_<n>" is never returned: unknown opcodes give "UNKNOWN".
std::string_view OpcodeName(uint32_t opcode);

}  // namespace svfs::protocol
