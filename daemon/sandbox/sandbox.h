// svfsd's sandbox, as the Rust virtiofsd's: namespaces (or chroot) around the shared directory,
// capabilities dropped to what passthrough needs. See docs/security.md ("The sandbox").
#pragma once

#include <cstdint>
#include <expected>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "common/seccomp_filter.h"

namespace svfs::sandbox {

enum class Mode { kNamespace, kChroot, kNone };
std::optional<Mode> ParseMode(std::string_view name);

// One --uid-map/--gid-map range: IDs [inside, inside + count) in svfsd's user namespace are the
// host's [outside, outside + count).
struct NamespaceIdRange {
  uint32_t inside = 0;
  uint32_t outside = 0;
  uint32_t count = 0;
};

// The user namespace an unprivileged svfsd creates. Empty: its own uid and gid only.
struct UserNamespaceMap {
  std::vector<NamespaceIdRange> uids;
  std::vector<NamespaceIdRange> gids;
};

// What a supervisor (the parent outside the sandbox) must do for the daemon: in --mount mode,
// unmount the FUSE mount, whose path the sandboxed daemon cannot reach.
struct Supervision {
  std::string mountpoint;  // empty: no mount to remove
  int fuse_fd = -1;        // the supervisor's copy of /dev/fuse, closed after fork
};

// The daemon's pid as the host sees it: the supervisor's when there is one, else getpid().
int DaemonPid();

// Unprivileged --sandbox namespace, before Enter: moves svfsd into a user namespace of its own,
// in which it holds the capabilities Enter and Close need. Without ranges it maps only its own
// uid and gid (setgroups denied, as the kernel requires); with them a helper forked before the
// unshare runs newuidmap and newgidmap on svfsd (setuid programs only work from outside).
// A sentence saying what failed and what to do otherwise (newuidmap's own message precedes it).
std::expected<void, std::string> EnterUserNamespace(const UserNamespaceMap& map);

// Opens the sandbox, before the daemon opens anything of the shared directory.
// kNamespace: forks. The parent stays outside, forwards SIGTERM/SIGINT/SIGHUP/SIGUSR1, unmounts
// the --mount mount and exits with the child's status; it never returns from here. The child
// returns: pid 1 of new pid, mount, net and ipc namespaces, every mount private, the shared
// directory bind-mounted on itself and a fresh /proc mounted (for /proc/self/fd).
// kChroot: forks such a supervisor only for a mount (no namespaces); else nothing yet.
// Blocked signals: the caller has SIGTERM, SIGINT, SIGHUP and SIGUSR1 blocked.
Status Enter(Mode mode, const std::string& shared_dir, const Supervision& supervision);

// Closes it, once everything from outside is open: kNamespace pivots into the shared directory
// and detaches the old root; kChroot chroots into it. The working directory is then "/".
Status Close(Mode mode, const std::string& shared_dir);

// Whether Close has put the daemon in a namespace or chroot sandbox.
bool Closed();

// Keeps only the capabilities passthrough needs (chown, dac_override, fowner, fsetid, setgid,
// setuid, mknod, setfcap; dac_read_search with file handles), changed by `modcaps`
// ("+cap:-cap", virtiofsd's syntax), in the effective, permitted and bounding sets. Nothing to
// do for a daemon without capabilities. The caller must not have started threads yet.
// keep_sys_admin: a --mount daemon without a supervisor, which unmounts at exit itself.
Status DropCapabilities(const std::string& modcaps, bool file_handles, bool keep_sys_admin);

// Installs svfsd's seccomp filter (all threads): the system calls svfsd makes are allowed, any
// other is killed (the whole process), logged, or raises SIGSYS. Last step of the setup.
Status InstallSeccomp(SeccompAction action);

// Checks a --modcaps value (for the command line).
bool ValidModcaps(const std::string& modcaps, std::string* error);

}  // namespace svfs::sandbox
