#include "versiond/socket_activation.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include <fmt/format.h>

namespace svfs::versiond {
namespace {

constexpr int kFirstPassedFd = 3;  // SD_LISTEN_FDS_START

std::expected<long, std::string> ParseNumber(const char* name, const char* value) {
  std::string_view text(value);
  long number = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), number);
  if (ec != std::errc() || end != text.data() + text.size() || number < 0) {
    return std::unexpected(fmt::format("svfs-versiond: {}={}: not a number (set by systemd for "
                                       "socket activation; unset it to run by hand)", name, value));
  }
  return number;
}

int SocketOption(int fd, int option) {
  int value = -1;
  socklen_t len = sizeof(value);
  if (::getsockopt(fd, SOL_SOCKET, option, &value, &len) != 0) return -1;
  return value;
}

}  // namespace

std::expected<ActivationSocket, std::string> TakeActivationSocket() {
  const char* pid_text = std::getenv("LISTEN_PID");
  const char* fds_text = std::getenv("LISTEN_FDS");
  std::string pid_value = pid_text ? pid_text : "";
  std::string fds_value = fds_text ? fds_text : "";
  ::unsetenv("LISTEN_PID");
  ::unsetenv("LISTEN_FDS");
  ::unsetenv("LISTEN_FDNAMES");
  if (pid_value.empty() || fds_value.empty()) return ActivationSocket{};

  auto pid = ParseNumber("LISTEN_PID", pid_value.c_str());
  if (!pid) return std::unexpected(pid.error());
  // Inherited from a parent that was activated itself: not for us.
  if (*pid != ::getpid()) return ActivationSocket{};
  auto count = ParseNumber("LISTEN_FDS", fds_value.c_str());
  if (!count) return std::unexpected(count.error());
  if (*count == 0) return ActivationSocket{};
  if (*count != 1) {
    return std::unexpected(fmt::format(
        "svfs-versiond: systemd passed {} sockets (LISTEN_FDS); the socket unit must have exactly "
        "one ListenStream= (a UNIX socket path)", *count));
  }

  UniqueFd fd(kFirstPassedFd);
  sockaddr_un addr{};
  socklen_t addr_len = sizeof(addr);
  if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &addr_len) != 0) {
    return std::unexpected(fmt::format("svfs-versiond: fd {} passed by systemd (LISTEN_FDS=1) is "
                                       "not a socket: {}", kFirstPassedFd, std::strerror(errno)));
  }
  if (addr.sun_family != AF_UNIX || SocketOption(fd.get(), SO_TYPE) != SOCK_STREAM ||
      SocketOption(fd.get(), SO_ACCEPTCONN) != 1) {
    return std::unexpected(fmt::format(
        "svfs-versiond: fd {} passed by systemd is not a listening UNIX stream socket; the socket "
        "unit needs ListenStream=/path (not ListenDatagram=, Accept=no)", kFirstPassedFd));
  }
  int fd_flags = ::fcntl(fd.get(), F_GETFD);
  int fl_flags = ::fcntl(fd.get(), F_GETFL);
  if (fd_flags < 0 || fl_flags < 0 || ::fcntl(fd.get(), F_SETFD, fd_flags | FD_CLOEXEC) != 0 ||
      ::fcntl(fd.get(), F_SETFL, fl_flags | O_NONBLOCK) != 0) {
    return std::unexpected(fmt::format("svfs-versiond: fcntl on the socket passed by systemd: {}",
                                       std::strerror(errno)));
  }
  size_t path_len = addr_len > offsetof(sockaddr_un, sun_path)
                        ? addr_len - offsetof(sockaddr_un, sun_path) : 0;
  std::string path(addr.sun_path, strnlen(addr.sun_path, path_len));
  if (path.empty()) path = "(unnamed socket)";
  return ActivationSocket{.fd = std::move(fd), .path = std::move(path)};
}

}  // namespace svfs::versiond
