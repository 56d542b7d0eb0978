// Cache modes: what the guest may cache, expressed as reply timeouts and open flags.
#pragma once

#include <linux/fuse.h>

#include <cstdint>
#include <optional>
#include <string_view>

namespace svfs::fs {

// kShared: shared versions (docs/protocol.md). Its policy here is what a guest that did not
// negotiate them gets, exactly cache=none; PassthroughFs switches to versioned replies when the
// INIT flag is agreed.
enum class CacheMode { kNone, kMetadata, kAuto, kAlways, kShared };

// Accepts the Rust virtiofsd names (never|metadata|auto|always) and the C dialect's "none".
std::optional<CacheMode> ParseCacheMode(std::string_view name);
std::string_view CacheModeName(CacheMode mode);

class CachePolicy {
 public:
  // timeout_override_ns: the C virtiofsd's `-o timeout=S`, replacing the mode's timeouts.
  explicit CachePolicy(CacheMode mode, std::optional<uint64_t> timeout_override_ns = std::nullopt);

  CacheMode mode() const { return mode_; }
  uint64_t entry_timeout_ns() const { return timeout_ns_; }
  uint64_t attr_timeout_ns() const { return timeout_ns_; }
  // Negative entries are cached as long as positive ones, except in none where they are not.
  uint64_t negative_timeout_ns() const { return timeout_ns_; }

  // open_flags for OPEN/CREATE replies. `direct_io_requested`: the guest opened with O_DIRECT
  // and --allow-direct-io is on.
  uint32_t file_open_flags(bool direct_io_requested) const;
  uint32_t dir_open_flags() const;
  // none disables READDIRPLUS (every lookup goes to the daemon anyway).
  bool readdirplus() const { return mode_ != CacheMode::kNone && mode_ != CacheMode::kShared; }
  // The kernel drops cached pages when size or mtime changed (FUSE_AUTO_INVAL_DATA): auto only.
  bool auto_inval_data() const { return mode_ == CacheMode::kAuto; }
  // The INIT flags the mode asks for: READDIRPLUS, AUTO_INVAL_DATA and CACHE_SYMLINKS as above.
  uint64_t init_flags() const;

 private:
  CacheMode mode_;
  uint64_t timeout_ns_;
};

// What one session's replies let the guest cache, chosen at INIT: the cache mode's policy, or,
// once INIT agreed on shared versions, the versioned rules (docs/protocol.md) in its place.
class ReplyPolicy {
 public:
  // How long versioned attributes live: as long as the version, checked by the guest itself.
  static constexpr uint64_t kVersionedTimeoutNs = 86400ULL * 1'000'000'000ULL;
  // INIT flags asked for on top of the cache mode's when the guest offers versions: it validates
  // its caches against the table, so it may cache like cache=always.
  static constexpr uint64_t kVersionedInitFlags =
      FUSE_DO_READDIRPLUS | FUSE_READDIRPLUS_AUTO | FUSE_CACHE_SYMLINKS;

  ReplyPolicy(const CachePolicy& cache, bool versioned) : cache_(cache), versioned_(versioned) {}

  bool versioned() const { return versioned_; }
  // Attributes tagged with slot `version_index` (0: unversioned, which a versioned session must
  // not let the guest cache at all).
  uint64_t attr_timeout_ns(uint64_t version_index) const {
    if (!versioned_) return cache_.attr_timeout_ns();
    return version_index != 0 ? kVersionedTimeoutNs : 0;
  }
  // With versions the guest keeps a dentry while its parent's version is unchanged (it samples
  // the parent's slot itself); the zero timeout binds only a guest that lost track of it.
  uint64_t entry_timeout_ns() const { return versioned_ ? 0 : cache_.entry_timeout_ns(); }
  // A name that does not exist: the timeout of the negative entry to reply, or nullopt to reply
  // ENOENT (cache=none, and shared mode without versions).
  std::optional<uint64_t> negative_entry_timeout_ns() const {
    if (versioned_) return 0;  // kept while the parent's version is unchanged
    if (cache_.mode() == CacheMode::kNone || cache_.mode() == CacheMode::kShared) return std::nullopt;
    return cache_.negative_timeout_ns();
  }
  // Versioned: the guest keeps or drops its pages and listings by comparing versions on open.
  uint32_t file_open_flags(bool direct_io_requested) const {
    if (versioned_) return direct_io_requested ? FOPEN_DIRECT_IO : 0;
    return cache_.file_open_flags(direct_io_requested);
  }
  uint32_t dir_open_flags() const { return versioned_ ? 0 : cache_.dir_open_flags(); }

 private:
  CachePolicy cache_;
  bool versioned_;
};

}  // namespace svfs::fs
