// Bounded decoding of FUSE request bytes. Nothing here trusts the sender: every read checks the
// remaining length, and names must be NUL-terminated inside the buffer.
#pragma once

#include <linux/fuse.h>

#include <cstdint>
#include <cstring>
#include <expected>
#include <span>
#include <string_view>
#include <type_traits>

namespace svfs::protocol {

// Why a request was refused before reaching the filesystem.
enum class DecodeError {
  kTruncated,       // fewer bytes than the opcode's arguments need
  kBadName,         // missing NUL, empty, too long, contains '/', or "." / ".." where forbidden
  kTooLarge,        // a size beyond the negotiated limits
  kLengthMismatch,  // header length disagrees with the bytes received
};

std::string_view DecodeErrorName(DecodeError error);

// A decoded field, or what was wrong with the bytes.
template <typename T>
using Decoded = std::expected<T, DecodeError>;

inline constexpr size_t kMaxNameLength = 255;  // NAME_MAX
inline constexpr size_t kMaxSymlinkTarget = 4095;  // PATH_MAX - 1
inline constexpr size_t kMaxXattrNameLength = 255;
inline constexpr size_t kMaxXattrValueSize = 65536;

enum class NameRule {
  kEntry,     // a directory entry: no '/', not "." or "..", 1..NAME_MAX bytes
  kXattr,     // an xattr name: 1..255 bytes, any bytes but NUL
  kSymlink,   // a symlink target: 1..PATH_MAX-1 bytes
  kIgnored,   // present on the wire but unused (TMPFILE's "/"): only NUL-termination checked
};

// Reads consecutive fields from a request, copying fixed structs out (the buffer may be
// unaligned) and returning names as views into the buffer.
class RequestReader {
 public:
  explicit RequestReader(std::span<const uint8_t> bytes) : bytes_(bytes) {}

  size_t remaining() const { return bytes_.size() - pos_; }
  std::span<const uint8_t> rest() const { return bytes_.subspan(pos_); }

  template <typename T>
  Decoded<T> read() {
    static_assert(std::is_trivially_copyable_v<T>);
    if (remaining() < sizeof(T)) return std::unexpected(DecodeError::kTruncated);
    T value;
    std::memcpy(&value, bytes_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return value;
  }

  // Reads `size` bytes of a struct whose wire size may be smaller than sizeof(T) for older
  // protocol minors; the missing tail reads as zero. A size beyond sizeof(T) is kTooLarge.
  template <typename T>
  Decoded<T> read_prefix(size_t size) {
    static_assert(std::is_trivially_copyable_v<T>);
    if (size > sizeof(T)) return std::unexpected(DecodeError::kTooLarge);
    if (remaining() < size) return std::unexpected(DecodeError::kTruncated);
    T value{};
    std::memcpy(&value, bytes_.data() + pos_, size);
    pos_ += size;
    return value;
  }

  Decoded<std::span<const uint8_t>> read_bytes(size_t size) {
    if (remaining() < size) return std::unexpected(DecodeError::kTruncated);
    auto out = bytes_.subspan(pos_, size);
    pos_ += size;
    return out;
  }

  // A NUL-terminated string checked against `rule`. The NUL is consumed, not returned. Nothing is
  // consumed on failure: kTruncated without a NUL, kBadName when the rule refuses it.
  Decoded<std::string_view> read_name(NameRule rule);

 private:
  std::span<const uint8_t> bytes_;
  size_t pos_ = 0;
};

// Whether `name` is acceptable under `rule` (no NUL inside is assumed).
bool IsValidName(std::string_view name, NameRule rule);

}  // namespace svfs::protocol
