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

 private:
  CacheMode mode_;
  uint64_t timeout_ns_;
};

}  // namespace svfs::fs
