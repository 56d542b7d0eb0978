#include "daemon/fs/credentials.h"

#include <fcntl.h>
#include <linux/capability.h>
#include <limits.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <string>

#include <spdlog/spdlog.h>

namespace svfs::fs {
namespace {

bool RunningAsRoot() {
  // geteuid() cannot change while the daemon runs (we never call setuid), so caching is safe.
  static const bool root = ::geteuid() == 0;
  return root;
}

// setfsuid/setfsgid return the previous value and never report errors; read back the current
// value (passing -1 changes nothing) to learn whether the switch took effect.
bool SetFsUid(uid_t uid) {
  ::syscall(SYS_setfsuid, uid);
  return static_cast<uid_t>(::syscall(SYS_setfsuid, -1)) == uid;
}

bool SetFsGid(gid_t gid) {
  ::syscall(SYS_setfsgid, gid);
  return static_cast<gid_t>(::syscall(SYS_setfsgid, -1)) == gid;
}

static_assert(sizeof(gid_t) == sizeof(uint32_t), "setgroups takes the groups as sent");

// A status file with NGROUPS_MAX groups is under 1 MiB; anything longer is not procfs.
constexpr size_t kMaxStatusBytes = 1 << 20;

}  // namespace

std::optional<std::vector<uint32_t>> ParseStatusGroups(std::string_view status) {
  constexpr std::string_view kKey = "Groups:";
  size_t at = status.starts_with(kKey) ? 0 : status.find("\nGroups:");
  if (at == std::string_view::npos) return std::nullopt;
  if (at != 0) ++at;  // past the newline
  std::string_view line = status.substr(at + kKey.size());
  line = line.substr(0, line.find('\n'));
  std::vector<uint32_t> groups;
  const char* p = line.data();
  const char* end = line.data() + line.size();
  for (;;) {
    while (p != end && (*p == ' ' || *p == '\t')) ++p;
    if (p == end) break;
    uint32_t gid = 0;
    auto [next, ec] = std::from_chars(p, end, gid);
    if (ec != std::errc() || (next != end && *next != ' ' && *next != '\t')) return std::nullopt;
    if (groups.size() == NGROUPS_MAX) return std::nullopt;
    groups.push_back(gid);
    p = next;
  }
  return groups;
}

Result<ProcCallerGroups> ProcCallerGroups::Open(const char* proc_path) {
  UniqueFd proc(::open(proc_path, O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!proc) return ErrnoErr();
  return ProcCallerGroups(std::move(proc));
}

std::vector<uint32_t> ProcCallerGroups::of(uint32_t pid) const {
  // pid 0: a request the kernel makes itself, or a caller outside the mount's pid namespace.
  if (pid == 0) return {};
  const std::string name = std::to_string(pid) + "/status";
  UniqueFd fd(::openat(proc_.get(), name.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return {};
  std::string text;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    text.append(buf, static_cast<size_t>(n));
    if (text.size() > kMaxStatusBytes) return {};
  }
  auto groups = ParseStatusGroups(text);
  return groups ? std::move(*groups) : std::vector<uint32_t>{};
}

std::span<const uint32_t> CallerSupplementaryGroups(const Context& ctx) {
  if (!ctx.caller_groups_read) {
    std::vector<uint32_t> groups;
    if (ctx.caller_groups) groups = ctx.caller_groups->of(ctx.pid);
    groups.insert(groups.end(), ctx.request_groups.begin(), ctx.request_groups.end());
    std::erase(groups, ctx.gid);  // the fsgid counts already
    std::sort(groups.begin(), groups.end());
    groups.erase(std::unique(groups.begin(), groups.end()), groups.end());
    ctx.caller_groups_read = std::move(groups);
  }
  return *ctx.caller_groups_read;
}

bool DropSupplementaryGroupsForThread() {
  if (!RunningAsRoot()) return true;
  // Once per thread is enough: nothing in the daemon adds groups back.
  thread_local bool dropped = false;
  if (dropped) return true;
  if (::syscall(SYS_setgroups, 0, nullptr) != 0) {
    spdlog::warn("setgroups(0) for worker thread failed: errno {}", errno);
    return false;
  }
  dropped = true;
  return true;
}

ScopedCredentials::ScopedCredentials(uid_t uid, gid_t gid, std::span<const uint32_t> groups) {
  if (!RunningAsRoot()) return;
  switch_to(uid, gid, groups);
}

ScopedCredentials::ScopedCredentials(const Context& ctx, std::optional<uint32_t> also) {
  // Refused even where the daemon could not switch: the caller may not act at all.
  if (ctx.forbidden_caller) {
    ok_ = false;
    return;
  }
  if (!RunningAsRoot()) return;
  // Root keeps its capabilities, for which groups do not count: no /proc read for it.
  if (ctx.uid == 0) {
    switch_to(0, ctx.gid, {});
    return;
  }
  std::span<const uint32_t> groups = CallerSupplementaryGroups(ctx);
  if (also && *also != ctx.gid && !std::binary_search(groups.begin(), groups.end(), *also)) {
    std::vector<uint32_t> with(groups.begin(), groups.end());
    with.push_back(*also);
    switch_to(ctx.uid, ctx.gid, with);
  } else {
    switch_to(ctx.uid, ctx.gid, groups);
  }
}

void ScopedCredentials::switch_to(uid_t uid, gid_t gid, std::span<const uint32_t> groups) {
  if (uid != 0) DropSupplementaryGroupsForThread();
  // This thread only (raw syscall, see the header); the destructor clears the list again.
  if (!groups.empty()) {
    switched_groups_ = true;
    if (::syscall(SYS_setgroups, groups.size(), groups.data()) != 0) {
      spdlog::error("cannot switch to {} supplementary groups: errno {}", groups.size(), errno);
      ok_ = false;
      return;
    }
  }
  // gid first: once fsuid is non-zero we would still be allowed to change fsgid (setfsgid needs
  // CAP_SETGID, which is not a filesystem capability), but doing it first keeps the window in
  // which the thread has a mixed identity as small as possible.
  // Restore whatever was switched even on partial failure: SetFsUid/SetFsGid(0) are harmless
  // if the value never changed.
  if (gid != 0) {
    switched_gid_ = true;
    ok_ = SetFsGid(gid);
  }
  if (uid != 0 && ok_) {
    switched_uid_ = true;
    ok_ = SetFsUid(uid);
  }
  if (!ok_) spdlog::error("cannot switch to fsuid {} fsgid {}", uid, gid);
}

ScopedCredentials::~ScopedCredentials() {
  if (switched_uid_) SetFsUid(0);
  if (switched_gid_) SetFsGid(0);
  if (switched_groups_ && ::syscall(SYS_setgroups, 0, nullptr) != 0) {
    spdlog::error("cannot clear the supplementary groups of a worker thread: errno {}", errno);
  }
}

namespace {

// The calling thread's capability sets (raw syscalls: per thread, like the credentials above).
bool ThreadCaps(__user_cap_data_struct (&data)[2]) {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  return ::syscall(SYS_capget, &header, data) == 0;
}

bool SetThreadCaps(__user_cap_data_struct (&data)[2]) {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  return ::syscall(SYS_capset, &header, data) == 0;
}

constexpr uint32_t kFsetidBit = 1u << CAP_FSETID;  // CAP_FSETID < 32: in data[0]

}  // namespace

ScopedWithoutFsetid::ScopedWithoutFsetid() {
  __user_cap_data_struct data[2] = {};
  if (!ThreadCaps(data)) {
    ok_ = false;
    return;
  }
  if (!(data[0].effective & kFsetidBit)) return;
  data[0].effective &= ~kFsetidBit;
  if (!SetThreadCaps(data)) {
    spdlog::error("cannot drop CAP_FSETID for a write: errno {}", errno);
    ok_ = false;
    return;
  }
  dropped_ = true;
}

ScopedWithoutFsetid::~ScopedWithoutFsetid() {
  if (!dropped_) return;
  __user_cap_data_struct data[2] = {};
  if (ThreadCaps(data)) {
    data[0].effective |= kFsetidBit;
    if (SetThreadCaps(data)) return;
  }
  spdlog::error("cannot restore CAP_FSETID of a worker thread: errno {}", errno);
}

}  // namespace svfs::fs
