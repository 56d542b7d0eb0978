// Per-thread credential switching for requests made on behalf of a guest user.
//
// The daemon runs as root; each request's host syscalls run with the guest's fsuid/fsgid so the
// host kernel checks permissions (and assigns ownership of new files) as it would for that user.
// Changing fsuid from 0 to non-0 also drops the filesystem capabilities (CAP_DAC_OVERRIDE,
// CAP_FOWNER, CAP_CHOWN, CAP_DAC_READ_SEARCH, CAP_FSETID, ...) from the effective set, and
// restoring 0 raises them again.
//
// Raw syscalls are used on purpose: glibc's setfsuid/setgroups wrappers are fine for fsuid, but
// glibc's setgroups (like setuid & co.) is broadcast to every thread of the process, while the
// kernel's credentials are per thread. We want per-thread changes only.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "daemon/fs/filesystem.h"
#include "common/result.h"
#include "common/unique_fd.h"

namespace svfs::fs {

// Clears the calling thread's supplementary group list (raw syscall, this thread only) so a
// request from an unprivileged user does not carry root's supplementary groups. Idempotent;
// does nothing unless the daemon runs as root. Returns false if the kernel refused.
bool DropSupplementaryGroupsForThread();

// The supplementary groups `ctx`'s request runs with: the caller's own (read once per request
// from ctx.caller_groups) and those the request carries, without duplicates or ctx.gid.
std::span<const uint32_t> CallerSupplementaryGroups(const Context& ctx);

// Parses the "Groups:" line of a /proc/PID/status text. nullopt if there is none or it is
// malformed; at most NGROUPS_MAX groups.
std::optional<std::vector<uint32_t>> ParseStatusGroups(std::string_view status);

// The callers' groups from a procfs (the host's: opened before any sandbox hides it), read from
// <pid>/status at each request that switches credentials.
class ProcCallerGroups final : public CallerGroups {
 public:
  // Opens `proc_path` (normally /proc) as a directory handle.
  static Result<ProcCallerGroups> Open(const char* proc_path = "/proc");
  std::vector<uint32_t> of(uint32_t pid) const override;

 private:
  explicit ProcCallerGroups(UniqueFd proc) : proc_(std::move(proc)) {}
  UniqueFd proc_;
};

// Switches the calling thread's fsuid/fsgid to (uid, gid) and its supplementary groups to
// `groups` for its lifetime and restores 0/0 and no groups in the destructor. No-op when the
// daemon is not root (an unprivileged daemon cannot switch, and the host then checks
// permissions as the daemon's own user).
class ScopedCredentials {
 public:
  ScopedCredentials(uid_t uid, gid_t gid, std::span<const uint32_t> groups = {});
  // As the caller of `ctx`, with its supplementary groups (CallerSupplementaryGroups) plus
  // `also` (a group the kernel already found the caller in, e.g. a chgrp's target). Not ok()
  // for a caller the ID translation forbids.
  explicit ScopedCredentials(const Context& ctx, std::optional<uint32_t> also = std::nullopt);
  ~ScopedCredentials();
  // False if the switch did not take effect: the caller must not proceed with root's rights.
  bool ok() const { return ok_; }
  ScopedCredentials(const ScopedCredentials&) = delete;
  ScopedCredentials& operator=(const ScopedCredentials&) = delete;

 private:
  void switch_to(uid_t uid, gid_t gid, std::span<const uint32_t> groups);

  bool switched_uid_ = false;
  bool switched_gid_ = false;
  bool switched_groups_ = false;
  bool ok_ = true;
};

// Takes CAP_FSETID out of the calling thread's effective set for its lifetime (if it is there:
// a thread switched to a non-zero fsuid has lost it already) and puts it back after. The host
// then clears setuid/setgid on a write or truncate, as for a writer without it (killpriv_v2).
class ScopedWithoutFsetid {
 public:
  ScopedWithoutFsetid();
  ~ScopedWithoutFsetid();
  bool ok() const { return ok_; }
  ScopedWithoutFsetid(const ScopedWithoutFsetid&) = delete;
  ScopedWithoutFsetid& operator=(const ScopedWithoutFsetid&) = delete;

 private:
  bool dropped_ = false;
  bool ok_ = true;
};

// Runs `call` (a libc call returning < 0 on error) with the guest's credentials and returns
// its result or errno, captured before the credentials are restored.
template <typename F>
auto AsGuest(const Context& ctx, F&& call) -> Result<decltype(call())> {
  ScopedCredentials creds(ctx);
  if (!creds.ok()) return Err(EPERM);
  auto r = call();
  if (r < 0) return ErrnoErr();
  return r;
}

}  // namespace svfs::fs
