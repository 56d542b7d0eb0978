// A seccomp allow-list filter (libseccomp), shared by svfsd and svfs-versiond: each keeps its own
// list of the system calls it makes; any other gets the action.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

#include "common/result.h"

namespace svfs {

enum class SeccompAction { kKill, kLog, kTrap, kNone };

// "kill", "log", "trap" or "none", as virtiofsd's --seccomp.
std::optional<SeccompAction> ParseSeccompAction(std::string_view name);

// Installs the filter on every thread of the process (TSYNC): the named system calls are allowed
// (names unknown on this architecture are skipped); any other kills the whole process, is
// logged by the kernel (audit type 1326), or raises SIGSYS. kNone installs nothing. Sets
// no_new_privs, as seccomp requires of a process without CAP_SYS_ADMIN.
// `allowed_with_arg`: calls allowed only when argument `arg` masked with `mask` equals `value`
// (e.g. unshare(CLONE_FS), clone with CLONE_THREAD); several rules for one call are
// alternatives. `refused_enosys`: calls answered ENOSYS (clone3, whose flags sit behind a
// pointer seccomp cannot read: glibc then falls back to clone, which rules can check).
struct SyscallArgRule {
  const char* name;
  unsigned arg = 0;
  uint64_t value = 0;
  uint64_t mask = ~uint64_t{0};
};
Status InstallSeccompFilter(SeccompAction action, std::span<const char* const> allowed,
                            std::span<const SyscallArgRule> allowed_with_arg = {},
                            std::span<const char* const> refused_enosys = {});

}  // namespace svfs
