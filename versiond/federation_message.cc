#include "versiond/federation_message.h"

#include <cstring>

namespace svfs::versiond {
namespace {

constexpr char kMagic[4] = {'S', 'V', 'F', '1'};
constexpr size_t kHeader = sizeof(kMagic) + sizeof(OriginId) + 1;
constexpr size_t kMaxHandleBytes = 128;  // MAX_HANDLE_SZ

}  // namespace

std::string EncodeBumpMessage(const BumpMessage& message) {
  std::string out(kMagic, sizeof(kMagic));
  out.append(reinterpret_cast<const char*>(message.origin.data()), message.origin.size());
  out.push_back(message.all ? 1 : 0);
  if (message.all) return out;
  for (const ChangedHandle& handle : message.handles) {
    const auto type = static_cast<uint32_t>(handle.type);
    for (int shift = 0; shift < 32; shift += 8) out.push_back(static_cast<char>(type >> shift));
    out.push_back(static_cast<char>(handle.bytes.size()));
    out.append(reinterpret_cast<const char*>(handle.bytes.data()), handle.bytes.size());
  }
  return out;
}

std::optional<BumpMessage> DecodeBumpMessage(std::span<const unsigned char> body) {
  if (body.size() < kHeader || std::memcmp(body.data(), kMagic, sizeof(kMagic)) != 0) {
    return std::nullopt;
  }
  BumpMessage message;
  std::memcpy(message.origin.data(), body.data() + sizeof(kMagic), message.origin.size());
  const unsigned char kind = body[kHeader - 1];
  if (kind > 1) return std::nullopt;
  message.all = kind == 1;
  std::span<const unsigned char> rest = body.subspan(kHeader);
  if (message.all) return rest.empty() ? std::optional(message) : std::nullopt;
  while (!rest.empty()) {
    if (rest.size() < 5) return std::nullopt;
    uint32_t type = 0;
    for (int i = 0; i < 4; ++i) type |= uint32_t{rest[i]} << (8 * i);
    const size_t len = rest[4];
    if (len == 0 || len > kMaxHandleBytes || rest.size() < 5 + len) return std::nullopt;
    message.handles.push_back({static_cast<int32_t>(type), {rest.begin() + 5, rest.begin() + 5 + len}});
    rest = rest.subspan(5 + len);
  }
  return message;
}

}  // namespace svfs::versiond
