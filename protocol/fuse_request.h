// Bounded decoding of FUSE request bytes. Nothing here trusts the sender: every read checks the
// remaining length, and names must be NUL-terminated inside the buffer.
#pragma once

#include <linux/fuse.h>

#include <cstdint>
#include <cstring>
#include <expected>
#include <optional>
#include <span>
#include <string_view>
#include <type_traits>
#include <vector>

namespace svfs::protocol {

// Why a request was refused before reaching the filesystem.
enum class DecodeError {
  kTruncated,       // fewer bytes than the opcode's arguments need
  kBadName,         // empty, contains '/', or "." / ".." where forbidden
  kNameTooLong,     // longer than the rule allows: the host's error for it, not a malformed request
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

// The supplementary-group extension, a later addition to protocol 7.38 (upstream Linux 6.3) that
// Debian 12's <linux/fuse.h> (Linux 6.1's 7.38) lacks; the
// values are the upstream kernel's (include/uapi/linux/fuse.h). INIT's FUSE_CREATE_SUPP_GROUP, a
// flags2 bit (hence shifted by 32), asks the kernel to append to CREATE, MKNOD, MKDIR, SYMLINK
// (and TMPFILE) the parent directory's group when the caller is in it but it is not the
// caller's fsgid: a fuse_ext_header of type FUSE_EXT_GROUPS, then struct fuse_supp_groups
// { uint32_t nr_groups; uint32_t groups[]; }. Extensions are the request's last
// fuse_in_header.total_extlen * 8 bytes.
#ifdef FUSE_CREATE_SUPP_GROUP
inline constexpr uint64_t kInitCreateSuppGroup = FUSE_CREATE_SUPP_GROUP;
#else
inline constexpr uint64_t kInitCreateSuppGroup = 1ULL << 34;  // flags2 bit 2
#endif
#ifdef FUSE_HAS_INODE_DAX
static_assert(kInitCreateSuppGroup != FUSE_HAS_INODE_DAX && kInitCreateSuppGroup != FUSE_SECURITY_CTX);
#endif
inline constexpr uint32_t kExtGroups = 32;  // enum fuse_ext_type: FUSE_EXT_GROUPS
// More groups than a process may have (NGROUPS_MAX) is malformed.
inline constexpr uint32_t kMaxExtGroups = 65536;

// The groups of every FUSE_EXT_GROUPS record in `extensions` (the request's extension area);
// other extension types are skipped. kTruncated for a record that overruns the area or is not
// 8-byte aligned, kTooLarge beyond kMaxExtGroups.
Decoded<std::vector<uint32_t>> ParseExtensionGroups(std::span<const uint8_t> extensions);

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

  // Detaches the last `size` bytes (the extension area): later reads stop before them.
  Decoded<std::span<const uint8_t>> take_tail(size_t size) {
    if (remaining() < size) return std::unexpected(DecodeError::kTruncated);
    auto tail = bytes_.subspan(bytes_.size() - size);
    bytes_ = bytes_.first(bytes_.size() - size);
    return tail;
  }

  Decoded<std::span<const uint8_t>> read_bytes(size_t size) {
    if (remaining() < size) return std::unexpected(DecodeError::kTruncated);
    auto out = bytes_.subspan(pos_, size);
    pos_ += size;
    return out;
  }

  // A NUL-terminated string checked against `rule`. The NUL is consumed, not returned. Nothing is
  // consumed on failure: kTruncated without a NUL, kNameTooLong beyond the rule's length,
  // kBadName when the rule refuses it otherwise.
  Decoded<std::string_view> read_name(NameRule rule);

 private:
  std::span<const uint8_t> bytes_;
  size_t pos_ = 0;
};

// Whether `name` is acceptable under `rule` (no NUL inside is assumed): nullopt if it is, else why
// not (kNameTooLong or kBadName).
std::optional<DecodeError> CheckName(std::string_view name, NameRule rule);

// The errno the host gives for a name `rule` refuses as too long: ENAMETOOLONG for entry names
// and symlink targets, ERANGE for xattr names (as setxattr(2) & co. on Linux).
int NameTooLongErrno(NameRule rule);

}  // namespace svfs::protocol
