#include "common/metrics_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <string_view>

namespace svfs::metrics {
namespace {

std::string HttpResponse(std::string_view status, std::string_view body) {
  return fmt::format("HTTP/1.0 {}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                     "Content-Length: {}\r\nConnection: close\r\n\r\n{}",
                     status, body.size(), body);
}

std::string DirectoryOf(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
}

std::expected<UniqueFd, std::string> ListenUnix(const ListenOptions& options, OwnedSocketFile& file) {
  const std::string what = fmt::format("{}: --metrics-socket {}", options.program,
                                       options.socket_path);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (options.socket_path.size() >= sizeof(addr.sun_path)) {
    return std::unexpected(fmt::format("{}: longer than {} bytes; pick a shorter path", what,
                                       sizeof(addr.sun_path) - 1));
  }
  std::memcpy(addr.sun_path, options.socket_path.data(), options.socket_path.size());
  struct stat st {};
  if (::lstat(options.socket_path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return std::unexpected(fmt::format("{}: exists and is not a socket; remove it or pick "
                                         "another path", what));
    }
    // A socket that still accepts is a running daemon's: never take it over. Only one nobody
    // listens on (a previous run's) is replaced.
    UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (probe && ::connect(probe.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
      return std::unexpected(fmt::format("{}: another process serves this socket; stop it or "
                                         "pick another path", what));
    }
    if (errno != ECONNREFUSED && errno != ENOENT) {
      return std::unexpected(fmt::format("{}: connect to the existing socket: {}", what,
                                         std::strerror(errno)));
    }
    if (::unlink(options.socket_path.c_str()) != 0 && errno != ENOENT) {
      return std::unexpected(fmt::format("{}: cannot remove the stale socket: {}", what,
                                         std::strerror(errno)));
    }
  }
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return std::unexpected(fmt::format("{}: socket: {}", what, std::strerror(errno)));
  // Mode 0600 from the moment the file exists (bind applies the umask).
  const mode_t old_umask = ::umask(0177);
  const int bound = ::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  const int bind_errno = errno;
  ::umask(old_umask);
  if (bound != 0 || ::listen(fd.get(), 16) != 0) {
    return std::unexpected(fmt::format("{}: {}", what, std::strerror(bound != 0 ? bind_errno : errno)));
  }
  file.directory = UniqueFd(::open(DirectoryOf(options.socket_path).c_str(),
                                   O_PATH | O_DIRECTORY | O_CLOEXEC));
  const size_t slash = options.socket_path.rfind('/');
  file.name = slash == std::string::npos ? options.socket_path : options.socket_path.substr(slash + 1);
  if (::lstat(options.socket_path.c_str(), &st) == 0) file.inode = st.st_ino;
  return fd;
}

std::expected<UniqueFd, std::string> ListenTcp(const ListenOptions& options, std::string& shown) {
  const std::string what = fmt::format("{}: --metrics-address {}", options.program,
                                       options.address);
  auto address = ParseTcpAddress(options.address);
  if (!address) return std::unexpected(fmt::format("{}: {}", what, address.error()));
  UniqueFd fd(::socket(address->storage.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return std::unexpected(fmt::format("{}: socket: {}", what, std::strerror(errno)));
  const int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&address->storage), address->length) != 0 ||
      ::listen(fd.get(), 16) != 0) {
    return std::unexpected(fmt::format("{}: {}{}", what, std::strerror(errno),
                                       errno == EADDRINUSE ? " (pick another port)" : ""));
  }
  sockaddr_storage bound{};
  socklen_t length = sizeof(bound);
  ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&bound), &length);
  char host[INET6_ADDRSTRLEN] = {};
  uint16_t port = 0;
  if (bound.ss_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&bound);
    ::inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
    port = ntohs(in6->sin6_port);
    shown = fmt::format("[{}]:{}", host, port);
  } else {
    const auto* in4 = reinterpret_cast<const sockaddr_in*>(&bound);
    ::inet_ntop(AF_INET, &in4->sin_addr, host, sizeof(host));
    port = ntohs(in4->sin_port);
    shown = fmt::format("{}:{}", host, port);
  }
  return fd;
}

// Descriptor exhaustion (EMFILE, ENFILE) or memory pressure leaves the connection in the
// backlog, so the listener stays readable: wait this long before trying again rather than spin.
constexpr std::chrono::milliseconds kAcceptBackoff{100};
constexpr std::chrono::seconds kDrainTime{1};

}  // namespace

// One accepted connection: the request as far as received, then the response being written,
// then (the response sent and our side shut down) what the client still sends read and dropped
// until it closes: closing with unread input would reset the connection, and the client could
// lose the end of the response.
struct MetricsServer::Connection {
  UniqueFd fd;
  std::chrono::steady_clock::time_point accepted;
  std::chrono::steady_clock::time_point deadline;  // accepted + kRequestTimeout until answered
  std::string request;
  std::string response;
  size_t written = 0;
  bool draining = false;

  bool reading() const { return response.empty(); }
};

std::expected<TcpAddress, std::string> ParseTcpAddress(const std::string& text) {
  constexpr const char* kExpected =
      "expected a numeric IPv4:PORT or [IPv6]:PORT, e.g. 127.0.0.1:9100 or [::1]:9100";
  const size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0) return std::unexpected(std::string(kExpected));
  std::string host = text.substr(0, colon);
  const std::string_view port_text = std::string_view(text).substr(colon + 1);
  unsigned port = 0;
  auto [end, error] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (port_text.empty() || error != std::errc() || end != port_text.data() + port_text.size() ||
      port > 65535) {
    return std::unexpected(fmt::format("port '{}': {}", port_text, kExpected));
  }
  TcpAddress out;
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&out.storage);
    if (::inet_pton(AF_INET6, host.c_str(), &in6->sin6_addr) != 1) {
      return std::unexpected(fmt::format("'{}' is no IPv6 address: {}", host, kExpected));
    }
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(static_cast<uint16_t>(port));
    out.length = sizeof(sockaddr_in6);
    return out;
  }
  auto* in4 = reinterpret_cast<sockaddr_in*>(&out.storage);
  if (::inet_pton(AF_INET, host.c_str(), &in4->sin_addr) != 1) {
    return std::unexpected(fmt::format("'{}' is no IPv4 address: {}", host, kExpected));
  }
  in4->sin_family = AF_INET;
  in4->sin_port = htons(static_cast<uint16_t>(port));
  out.length = sizeof(sockaddr_in);
  return out;
}

std::string Respond(const std::string& request, const std::function<std::string()>& render) {
  const size_t head_end = std::min(request.find("\r\n\r\n"), request.find("\n\n"));
  if (head_end == std::string::npos) {
    if (request.size() >= kMaxRequestBytes) {
      return HttpResponse("431 Request Header Fields Too Large", "request head too large\n");
    }
    return {};
  }
  const std::string_view line = std::string_view(request).substr(0, request.find_first_of("\r\n"));
  const size_t first_space = line.find(' ');
  const size_t second_space = line.find(' ', first_space == line.npos ? 0 : first_space + 1);
  if (first_space == line.npos || second_space == line.npos ||
      !line.substr(second_space + 1).starts_with("HTTP/1.")) {
    return HttpResponse("400 Bad Request", "expected GET /metrics HTTP/1.x\n");
  }
  if (line.substr(0, first_space) != "GET") {
    return HttpResponse("405 Method Not Allowed", "only GET /metrics is served\n");
  }
  std::string_view target = line.substr(first_space + 1, second_space - first_space - 1);
  target = target.substr(0, target.find('?'));
  if (target != "/metrics") return HttpResponse("404 Not Found", "only /metrics is served\n");
  return HttpResponse("200 OK", render());
}

std::expected<std::unique_ptr<MetricsServer>, std::string> MetricsServer::Listen(
    const ListenOptions& options) {
  std::unique_ptr<MetricsServer> server(new MetricsServer());
  if (!options.socket_path.empty()) {
    auto fd = ListenUnix(options, server->socket_file_);
    if (!fd) return std::unexpected(fd.error());
    server->listeners_.push_back(std::move(*fd));
    server->addresses_.push_back("unix:" + options.socket_path);
  }
  if (!options.address.empty()) {
    std::string shown;
    auto fd = ListenTcp(options, shown);
    if (!fd) return std::unexpected(fd.error());
    server->listeners_.push_back(std::move(*fd));
    server->addresses_.push_back(shown);
  }
  server->stop_ = EventFd::Create();
  if (!server->stop_) {
    return std::unexpected(fmt::format("{}: metrics: eventfd: {}", options.program,
                                       std::strerror(errno)));
  }
  return server;
}

MetricsServer::~MetricsServer() {
  if (thread_.joinable()) {
    stop_.signal();
    thread_.join();
  }
  // The socket file, unless someone has replaced it since.
  OwnedSocketFile& file = socket_file_;
  struct stat st {};
  if (file.directory && file.inode != 0 &&
      ::fstatat(file.directory.get(), file.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
      S_ISSOCK(st.st_mode) && st.st_ino == file.inode) {
    ::unlinkat(file.directory.get(), file.name.c_str(), 0);
  }
}

void MetricsServer::start(std::function<std::string()> render) {
  render_ = std::move(render);
  thread_ = std::thread([this] { serve(); });
}

std::vector<std::string> MetricsServer::addresses() const { return addresses_; }

void MetricsServer::serve() {
  using Clock = std::chrono::steady_clock;
  std::vector<Connection> connections;
  std::vector<pollfd> fds;
  Clock::time_point accept_again{};  // after a failed accept (no descriptors): not before this
  for (;;) {
    // The stop eventfd, the listeners (unless backing off), then each connection.
    const auto now = Clock::now();
    // Room for one more: a free slot, or one waiting for its request that can make way.
    const bool room = connections.size() < kMaxConnections ||
                      std::any_of(connections.begin(), connections.end(),
                                  [](const Connection& c) { return c.reading(); });
    const bool accepting = room && now >= accept_again;
    fds.assign(1, pollfd{stop_.get(), POLLIN, 0});
    for (const UniqueFd& listener : listeners_) {
      fds.push_back({accepting ? listener.get() : -1, POLLIN, 0});
    }
    auto wake = now < accept_again ? accept_again : Clock::time_point::max();
    for (const Connection& c : connections) {
      const bool wants_input = c.reading() || c.draining;
      fds.push_back({c.fd.get(), static_cast<short>(wants_input ? POLLIN : POLLOUT), 0});
      wake = std::min(wake, c.deadline);
    }
    int timeout_ms = -1;
    if (wake != Clock::time_point::max()) {
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(wake - now).count();
      timeout_ms = static_cast<int>(std::clamp<int64_t>(left, 0, 60'000));
    }
    if (::poll(fds.data(), fds.size(), timeout_ms) < 0 && errno != EINTR) {
      spdlog::error("metrics: poll: {}; /metrics is no longer served", std::strerror(errno));
      return;
    }
    if (fds[0].revents != 0) return;
    for (size_t i = 0; i < connections.size(); ++i) {
      serve_connection(connections[i], fds[1 + listeners_.size() + i].revents);
    }
    std::erase_if(connections, [](const Connection& c) { return !c.fd; });
    for (size_t l = 0; l < listeners_.size(); ++l) {
      if (fds[1 + l].revents == 0) continue;
      for (;;) {
        // Full: the connection that has waited longest for its request makes room (answered
        // ones finish by themselves), so clients that connect and send nothing cannot keep a
        // scraper out for longer than it takes others to arrive. All answering: the new one
        // waits in the backlog.
        auto oldest = connections.end();
        if (connections.size() >= kMaxConnections) {
          oldest = std::min_element(
              connections.begin(), connections.end(), [](const Connection& a, const Connection& b) {
                return std::pair(!a.reading(), a.accepted) < std::pair(!b.reading(), b.accepted);
              });
          if (!oldest->reading()) break;
        }
        UniqueFd fd(::accept4(listeners_[l].get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
        if (!fd) {
          if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
            accept_again = Clock::now() + kAcceptBackoff;
          }
          if (errno == ECONNABORTED || errno == EINTR) continue;
          break;
        }
        if (oldest != connections.end()) connections.erase(oldest);
        const auto accepted = Clock::now();
        connections.push_back({.fd = std::move(fd), .accepted = accepted,
                               .deadline = accepted + kRequestTimeout});
      }
    }
  }
}

void MetricsServer::serve_connection(Connection& c, short revents) const {
  const auto now = std::chrono::steady_clock::now();
  if (now >= c.deadline) {
    c.fd.reset();
    return;
  }
  if (revents & (POLLIN | POLLHUP | POLLERR)) {
    if (c.reading() || c.draining) {
      char buffer[2048];
      const ssize_t n = ::read(c.fd.get(), buffer, sizeof(buffer));
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        c.fd.reset();
        return;
      }
      if (n > 0 && c.reading()) {
        c.request.append(buffer, static_cast<size_t>(n));
        c.response = Respond(c.request, render_);
        // Answered: the rest of the connection's time is for writing the response out.
        if (!c.response.empty()) c.deadline = c.accepted + kConnectionTimeout;
      }
    }
  }
  // Written as soon as it exists (the socket is usually writable); POLLOUT for the rest.
  if (!c.reading() && !c.draining) {
    const ssize_t n = ::send(c.fd.get(), c.response.data() + c.written,
                             c.response.size() - c.written, MSG_NOSIGNAL);
    if (n > 0) c.written += static_cast<size_t>(n);
    if (n < 0 && errno != EAGAIN && errno != EINTR) {
      c.fd.reset();
      return;
    }
    if (c.written == c.response.size()) {
      ::shutdown(c.fd.get(), SHUT_WR);
      c.draining = true;
      c.deadline = std::min(c.deadline, now + kDrainTime);
    }
  }
}

}  // namespace svfs::metrics
