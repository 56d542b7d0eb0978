#include "protocol/fuse_request.h"

namespace svfs::protocol {

std::string_view DecodeErrorName(DecodeError error) {
  switch (error) {
    case DecodeError::kTruncated: return "truncated arguments";
    case DecodeError::kBadName: return "invalid name";
    case DecodeError::kTooLarge: return "size beyond negotiated limit";
    case DecodeError::kLengthMismatch: return "header length does not match request";
  }
  return "malformed";
}

bool IsValidName(std::string_view name, NameRule rule) {
  switch (rule) {
    case NameRule::kEntry:
      return !name.empty() && name.size() <= kMaxNameLength &&
             name.find('/') == std::string_view::npos && name != "." && name != "..";
    case NameRule::kXattr:
      return !name.empty() && name.size() <= kMaxXattrNameLength;
    case NameRule::kSymlink:
      return !name.empty() && name.size() <= kMaxSymlinkTarget;
    case NameRule::kIgnored:
      return true;
  }
  return false;
}

Decoded<std::string_view> RequestReader::read_name(NameRule rule) {
  auto rest_bytes = rest();
  const void* nul = std::memchr(rest_bytes.data(), 0, rest_bytes.size());
  if (nul == nullptr) return std::unexpected(DecodeError::kTruncated);
  size_t length = static_cast<const uint8_t*>(nul) - rest_bytes.data();
  std::string_view name(reinterpret_cast<const char*>(rest_bytes.data()), length);
  if (!IsValidName(name, rule)) return std::unexpected(DecodeError::kBadName);
  pos_ += length + 1;
  return name;
}

}  // namespace svfs::protocol
