#include "protocol/fuse_request.h"

#include <cerrno>

namespace svfs::protocol {

std::string_view DecodeErrorName(DecodeError error) {
  switch (error) {
    case DecodeError::kTruncated: return "truncated arguments";
    case DecodeError::kBadName: return "invalid name";
    case DecodeError::kNameTooLong: return "name too long";
    case DecodeError::kTooLarge: return "size beyond negotiated limit";
    case DecodeError::kLengthMismatch: return "header length does not match request";
  }
  return "malformed";
}

std::optional<DecodeError> CheckName(std::string_view name, NameRule rule) {
  switch (rule) {
    case NameRule::kEntry:
      if (name.size() > kMaxNameLength) return DecodeError::kNameTooLong;
      if (name.empty() || name.find('/') != std::string_view::npos || name == "." ||
          name == "..") {
        return DecodeError::kBadName;
      }
      return std::nullopt;
    case NameRule::kXattr:
      if (name.size() > kMaxXattrNameLength) return DecodeError::kNameTooLong;
      if (name.empty()) return DecodeError::kBadName;
      return std::nullopt;
    case NameRule::kSymlink:
      if (name.size() > kMaxSymlinkTarget) return DecodeError::kNameTooLong;
      if (name.empty()) return DecodeError::kBadName;
      return std::nullopt;
    case NameRule::kIgnored:
      return std::nullopt;
  }
  return DecodeError::kBadName;
}

int NameTooLongErrno(NameRule rule) { return rule == NameRule::kXattr ? ERANGE : ENAMETOOLONG; }

Decoded<std::vector<uint32_t>> ParseExtensionGroups(std::span<const uint8_t> extensions) {
  std::vector<uint32_t> groups;
  RequestReader reader(extensions);
  while (reader.remaining() > 0) {
    auto header = reader.read<fuse_ext_header>();
    if (!header) return std::unexpected(header.error());
    if (header->size < sizeof(fuse_ext_header) || header->size % 8 != 0) {
      return std::unexpected(DecodeError::kTruncated);
    }
    auto body = reader.read_bytes(header->size - sizeof(fuse_ext_header));
    if (!body) return std::unexpected(body.error());
    if (header->type != kExtGroups) continue;
    RequestReader record(*body);
    auto count = record.read<uint32_t>();
    if (!count) return std::unexpected(count.error());
    if (*count > kMaxExtGroups || groups.size() + *count > kMaxExtGroups) {
      return std::unexpected(DecodeError::kTooLarge);
    }
    if (record.remaining() / sizeof(uint32_t) < *count) return std::unexpected(DecodeError::kTruncated);
    for (uint32_t i = 0; i < *count; ++i) groups.push_back(*record.read<uint32_t>());
  }
  return groups;
}

Decoded<std::string_view> RequestReader::read_name(NameRule rule) {
  auto rest_bytes = rest();
  const void* nul = std::memchr(rest_bytes.data(), 0, rest_bytes.size());
  if (nul == nullptr) return std::unexpected(DecodeError::kTruncated);
  size_t length = static_cast<const uint8_t*>(nul) - rest_bytes.data();
  std::string_view name(reinterpret_cast<const char*>(rest_bytes.data()), length);
  if (auto refused = CheckName(name, rule)) return std::unexpected(*refused);
  pos_ += length + 1;
  return name;
}

}  // namespace svfs::protocol
