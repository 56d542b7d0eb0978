// The body of one message on svfs.<volume>.bumps: who sent it and which inodes changed (by file
// handle), or that anything on the volume may have changed. Little-endian:
//
//   "SVF1" | origin (16 bytes) | kind (1: 0 handles, 1 all) | { type (int32) | len (1) | bytes }*
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace svfs::versiond {

using OriginId = std::array<unsigned char, 16>;

struct ChangedHandle {
  int32_t type = 0;
  std::vector<unsigned char> bytes;  // at most MAX_HANDLE_SZ (128)
  bool operator==(const ChangedHandle&) const = default;
};

struct BumpMessage {
  OriginId origin{};
  bool all = false;  // every slot: the sender lost track of what changed
  std::vector<ChangedHandle> handles;
  bool operator==(const BumpMessage&) const = default;
};

std::string EncodeBumpMessage(const BumpMessage& message);
// nullopt for anything malformed (the receiver then bumps every slot: it cannot tell what it
// missed).
std::optional<BumpMessage> DecodeBumpMessage(std::span<const unsigned char> body);

}  // namespace svfs::versiond
