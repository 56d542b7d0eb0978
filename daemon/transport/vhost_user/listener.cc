#include "daemon/transport/vhost_user/listener.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <utility>

#include <spdlog/spdlog.h>

namespace svfs::transport::vhost_user {

Result<Listener> Listener::Create(const ListenerOptions& options) {
  Listener listener;
  if (options.listen_fd >= 0) {
    struct stat st {};
    if (::fstat(options.listen_fd, &st) != 0) return ErrnoErr();
    if (!S_ISSOCK(st.st_mode)) return Err(ENOTSOCK);
    listener.listen_fd_ = UniqueFd(options.listen_fd);
    ::fcntl(listener.listen_fd_.get(), F_SETFD, FD_CLOEXEC);
    return listener;
  }
  if (auto status = listener.listen_at(options); !status) return std::unexpected(status.error());
  return listener;
}

Listener::Listener(Listener&& other) noexcept
    : listen_fd_(std::move(other.listen_fd_)),
      lock_fd_(std::move(other.lock_fd_)),
      lock_path_(std::exchange(other.lock_path_, {})),
      socket_path_(std::exchange(other.socket_path_, {})),
      dir_fd_(std::move(other.dir_fd_)) {}

namespace {
std::string BaseName(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}
}  // namespace

Listener::~Listener() {
  // Through the directory's descriptor: a sandboxed svfsd no longer reaches the path.
  auto remove = [this](const std::string& path) {
    if (path.empty()) return;
    if (dir_fd_) {
      ::unlinkat(dir_fd_.get(), BaseName(path).c_str(), 0);
    } else {
      ::unlink(path.c_str());
    }
  };
  remove(socket_path_);
  remove(lock_path_);
}

Status Listener::listen_at(const ListenerOptions& options) {
  const std::string& path = options.socket_path;
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path.size() >= sizeof(address.sun_path)) return Err(ENAMETOOLONG);
  std::memcpy(address.sun_path, path.data(), path.size());
  {
    auto slash = path.rfind('/');
    std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
    dir_fd_ = UniqueFd(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!dir_fd_) return ErrnoErr();
  }

  // O_NOFOLLOW and the type and owner checks: a planted symlink or someone else's file is
  // refused rather than truncated; O_NONBLOCK so a planted fifo cannot block the open.
  const std::string lock_path = path + ".pid";
  lock_fd_ = UniqueFd(
      ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0600));
  if (!lock_fd_) {
    int error = errno;
    spdlog::error("{}: {} (remove it if it is not this daemon's lock file)", lock_path,
                  std::strerror(error));
    return Err(error);
  }
  struct stat lock_st {};
  if (::fstat(lock_fd_.get(), &lock_st) != 0 || !S_ISREG(lock_st.st_mode) ||
      lock_st.st_uid != ::geteuid() || lock_st.st_nlink != 1) {
    spdlog::error("{}: not a regular file of this user with one link; remove it", lock_path);
    return Err(EEXIST);
  }
  if (::flock(lock_fd_.get(), LOCK_EX | LOCK_NB) != 0) {
    int error = errno == EWOULDBLOCK ? EADDRINUSE : errno;
    spdlog::error("{} is locked: another daemon serves {}", lock_path, path);
    return Err(error);
  }
  lock_path_ = lock_path;  // ours from here on: removed on exit
  std::string pid = std::to_string(options.pid ? options.pid : ::getpid()) + "\n";
  if (::ftruncate(lock_fd_.get(), 0) != 0 ||
      ::pwrite(lock_fd_.get(), pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
    spdlog::warn("could not write {}: {}", lock_path_, std::strerror(errno));
  }

  // Only a stale socket is replaced: any other file at the path is someone's, not ours.
  struct stat old_st {};
  if (::lstat(path.c_str(), &old_st) == 0 && !S_ISSOCK(old_st.st_mode)) {
    spdlog::error("--socket-path {}: exists and is not a socket; remove it", path);
    return Err(EEXIST);
  }
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) return ErrnoErr();
  listen_fd_ = UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!listen_fd_) return ErrnoErr();
  // Whoever connects first acts as root on the share, so the socket is the launcher's only
  // (0600) from the moment it exists: bind makes it 0777 & ~umask (the daemon's umask is 0).
  const mode_t old_umask = ::umask(0177);
  const int bound =
      ::bind(listen_fd_.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address));
  const int bind_errno = errno;
  ::umask(old_umask);
  if (bound != 0) return Err(bind_errno);
  socket_path_ = path;
  if (!options.socket_group.empty()) {
    // A group name, or a number (which need not be in /etc/group).
    gid_t gid = 0;
    if (group* entry = ::getgrnam(options.socket_group.c_str()); entry != nullptr) {
      gid = entry->gr_gid;
    } else {
      char* end = nullptr;
      const unsigned long number = std::strtoul(options.socket_group.c_str(), &end, 10);
      if (options.socket_group.empty() || *end != '\0' || number > UINT32_MAX - 1) {
        spdlog::error("--socket-group {}: no such group", options.socket_group);
        return Err(EINVAL);
      }
      gid = static_cast<gid_t>(number);
    }
    if (::chown(path.c_str(), static_cast<uid_t>(-1), gid) != 0 ||
        ::chmod(path.c_str(), 0660) != 0) {
      return ErrnoErr();
    }
  }
  if (::listen(listen_fd_.get(), 1) != 0) return ErrnoErr();
  return {};
}

Result<UniqueFd> Listener::accept_one(int stop_fd) {
  for (;;) {
    pollfd fds[2] = {{listen_fd_.get(), POLLIN, 0}, {stop_fd, POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return ErrnoErr();
    }
    if (fds[1].revents) return UniqueFd();
    UniqueFd connection(::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!connection) {
      if (errno == EINTR || errno == EAGAIN || errno == ECONNABORTED) continue;
      return ErrnoErr();
    }
    listen_fd_.reset();
    return connection;
  }
}

}  // namespace svfs::transport::vhost_user
