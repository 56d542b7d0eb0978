// svfs-versiond's least privilege: once its table, socket and fanotify group are set up, it
// keeps only the capabilities fanotify needs and a seccomp allow-list of its own system calls.
#pragma once

#include <string>

#include "common/result.h"
#include "common/seccomp_filter.h"

namespace svfs::versiond {

// Keeps CAP_SYS_ADMIN (fanotify_mark of each registering daemon's filesystem) and
// CAP_DAC_READ_SEARCH (statfs and marks on shared directories root alone may not search) when
// fanotify is in use, no capability otherwise; the bounding set too, and no_new_privs. Nothing
// to do for a versiond without capabilities. Then installs the filter with `seccomp`, allowing
// TCP connections too when `network` (the NATS client of --federation). Call before any thread
// starts. Returns a log-ready message on failure.
std::expected<void, std::string> LockDown(bool fanotify, bool network, SeccompAction seccomp);

// Whether LockDown installed a seccomp filter (sanitizer builds then skip LeakSanitizer's exit
// check, whose /proc reads the filter does not allow).
bool SeccompInstalled();

}  // namespace svfs::versiond
