#include "common/seccomp_filter.h"

#include <seccomp.h>

#include <cerrno>

namespace svfs {

std::optional<SeccompAction> ParseSeccompAction(std::string_view name) {
  if (name == "kill") return SeccompAction::kKill;
  if (name == "log") return SeccompAction::kLog;
  if (name == "trap") return SeccompAction::kTrap;
  if (name == "none") return SeccompAction::kNone;
  return std::nullopt;
}

Status InstallSeccompFilter(SeccompAction action, std::span<const char* const> allowed,
                            std::span<const SyscallArgRule> allowed_with_arg,
                            std::span<const char* const> refused_enosys) {
  if (action == SeccompAction::kNone) return {};
  const uint32_t default_action = action == SeccompAction::kKill  ? SCMP_ACT_KILL_PROCESS
                                  : action == SeccompAction::kLog ? SCMP_ACT_LOG
                                                                  : SCMP_ACT_TRAP;
  scmp_filter_ctx ctx = seccomp_init(default_action);
  if (ctx == nullptr) return Err(ENOMEM);
  int rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1);
  for (const char* name : allowed) {
    if (rc != 0) break;
    int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR) continue;  // not on this architecture
    rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
  }
  for (const SyscallArgRule& rule : allowed_with_arg) {
    if (rc != 0) break;
    int nr = seccomp_syscall_resolve_name(rule.name);
    if (nr == __NR_SCMP_ERROR) continue;
    const scmp_arg_cmp compare = rule.mask == ~uint64_t{0}
                                     ? SCMP_CMP(rule.arg, SCMP_CMP_EQ, rule.value)
                                     : SCMP_CMP(rule.arg, SCMP_CMP_MASKED_EQ, rule.mask, rule.value);
    rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1, compare);
  }
  for (const char* name : refused_enosys) {
    if (rc != 0) break;
    int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR) continue;
    rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), nr, 0);
  }
  if (rc == 0) rc = seccomp_load(ctx);
  seccomp_release(ctx);
  if (rc != 0) return Err(-rc);
  return {};
}

}  // namespace svfs
