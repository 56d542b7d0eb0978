// Per-opcode request counters: lock-free increments on the request path, read by the SIGUSR1
// dump, the demo and the benchmarks.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <string>

#include "protocol/fuse_opcodes.h"

namespace svfs::fuse {

class RequestStats {
 public:
  void count(uint32_t opcode, bool failed);
  void count_malformed() { malformed_.fetch_add(1, std::memory_order_relaxed); }

  uint64_t requests(uint32_t opcode) const;
  uint64_t errors(uint32_t opcode) const;
  uint64_t malformed() const { return malformed_.load(std::memory_order_relaxed); }
  uint64_t total() const;

  // A table of the opcodes seen so far: "opcode  requests  errors", then a total line.
  std::string format_table() const;

 private:
  // Opcodes beyond the array (unknown to us) share the last slot.
  static size_t slot(uint32_t opcode) {
    return opcode < protocol::kOpcodeSlots ? opcode : protocol::kOpcodeSlots - 1;
  }
  std::array<std::atomic<uint64_t>, protocol::kOpcodeSlots> requests_{};
  std::array<std::atomic<uint64_t>, protocol::kOpcodeSlots> errors_{};
  std::atomic<uint64_t> malformed_{0};
};

}  // namespace svfs::fuse
