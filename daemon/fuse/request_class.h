// How a transport should schedule a FUSE request: which requests may wait without bound (a lock
// wait needs a thread of its own), which are likely slow (signal the replies batched before
// them first), and how much of a request to copy before a payload that may stay where the
// client put it. Decided here, from bytes the transport has already copied, so which requests
// block is decided in one place and a guest changing its buffers afterwards changes nothing.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace svfs::fuse {

enum class Schedule {
  kQuick,     // serve where it arrived
  kSlow,      // may keep its thread for long: syncs, allocation, truncation, big transfers
  kBlocking,  // may wait for another request (SETLKW): never on a thread that serves others
};

// `request` holds the header and the arguments (for WRITE only the two headers); an incomplete
// request is kQuick (the server refuses it at once).
Schedule Classify(std::span<const uint8_t> request);

// The bytes of a request with this opcode to copy before its payload: a transport may leave
// the payload in its own memory and hand it to the server as an external payload. 0 when the
// opcode has no such payload (copy the whole request).
size_t HeadersBeforePayload(uint32_t opcode);

}  // namespace svfs::fuse
