// The listening socket systemd hands a socket-activated svfs-versiond (svfs-versiond.socket), by
// the sd_listen_fds(3) protocol, read without libsystemd: LISTEN_PID names the receiving
// process and LISTEN_FDS counts the descriptors passed from fd 3 on.
#pragma once

#include <expected>
#include <string>

#include "common/unique_fd.h"

namespace svfs::versiond {

struct ActivationSocket {
  UniqueFd fd;       // invalid: not socket-activated
  std::string path;  // the socket's bound path, for logs
};

// Takes the passed socket (set close-on-exec and non-blocking) if LISTEN_PID is this process and
// LISTEN_FDS is 1; an invalid fd if this process was not activated. Unsets LISTEN_PID, LISTEN_FDS
// and LISTEN_FDNAMES either way, so nothing started later mistakes them for its own. An error if
// systemd passed anything but exactly one listening AF_UNIX stream socket.
std::expected<ActivationSocket, std::string> TakeActivationSocket();

}  // namespace svfs::versiond
