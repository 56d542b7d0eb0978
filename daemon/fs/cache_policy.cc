#include "daemon/fs/cache_policy.h"

namespace svfs::fs {
namespace {

constexpr uint64_t kSecond = 1'000'000'000ULL;

uint64_t DefaultTimeoutNs(CacheMode mode) {
  switch (mode) {
    case CacheMode::kNone:
    case CacheMode::kShared: return 0;
    case CacheMode::kAuto: return 1 * kSecond;
    case CacheMode::kMetadata:
    case CacheMode::kAlways: return 86400 * kSecond;
  }
  return 0;
}

}  // namespace

std::optional<CacheMode> ParseCacheMode(std::string_view name) {
  if (name == "none" || name == "never") return CacheMode::kNone;
  if (name == "metadata") return CacheMode::kMetadata;
  if (name == "auto") return CacheMode::kAuto;
  if (name == "always") return CacheMode::kAlways;
  if (name == "shared") return CacheMode::kShared;
  return std::nullopt;
}

std::string_view CacheModeName(CacheMode mode) {
  switch (mode) {
    case CacheMode::kNone: return "none";
    case CacheMode::kMetadata: return "metadata";
    case CacheMode::kAuto: return "auto";
    case CacheMode::kAlways: return "always";
    case CacheMode::kShared: return "shared";
  }
  return "?";
}

CachePolicy::CachePolicy(CacheMode mode, std::optional<uint64_t> timeout_override_ns)
    : mode_(mode),
      // An unnegotiated shared-mode session must stay exactly cache=none, whatever -o timeout says.
      timeout_ns_(mode == CacheMode::kShared ? 0
                                             : timeout_override_ns.value_or(DefaultTimeoutNs(mode))) {}

uint64_t CachePolicy::init_flags() const {
  uint64_t flags = 0;
  if (readdirplus()) flags |= FUSE_DO_READDIRPLUS | FUSE_READDIRPLUS_AUTO;
  if (auto_inval_data()) flags |= FUSE_AUTO_INVAL_DATA;
  if (mode_ != CacheMode::kNone) flags |= FUSE_CACHE_SYMLINKS;
  return flags;
}

uint32_t CachePolicy::file_open_flags(bool direct_io_requested) const {
  switch (mode_) {
    case CacheMode::kNone:
    case CacheMode::kShared:
    case CacheMode::kMetadata: return FOPEN_DIRECT_IO;
    case CacheMode::kAuto: return direct_io_requested ? FOPEN_DIRECT_IO : 0;
    case CacheMode::kAlways: return direct_io_requested ? FOPEN_DIRECT_IO : FOPEN_KEEP_CACHE;
  }
  return 0;
}

uint32_t CachePolicy::dir_open_flags() const {
  switch (mode_) {
    case CacheMode::kMetadata:
    case CacheMode::kAlways: return FOPEN_CACHE_DIR | FOPEN_KEEP_CACHE;
    case CacheMode::kNone:
    case CacheMode::kShared:
    case CacheMode::kAuto: return 0;
  }
  return 0;
}

}  // namespace svfs::fs
