#include "common/metrics_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <fmt/format.h>

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

std::expected<UniqueFd, std::string> ListenUnix(const ListenOptions& options) {
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
    ::unlink(options.socket_path.c_str());  // a previous run's
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

// One accepted connection: the request as far as received, then the response being written.
struct Connection {
  UniqueFd fd;
  std::chrono::steady_clock::time_point deadline;
  std::string request;
  std::string response;
  size_t written = 0;
};

}  // namespace

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
    auto fd = ListenUnix(options);
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
  if (!thread_.joinable()) return;
  stop_.signal();
  thread_.join();
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
  for (;;) {
    // The stop eventfd, the listeners while a slot is free, then each connection.
    fds.assign(1, pollfd{stop_.get(), POLLIN, 0});
    const bool accepting = connections.size() < kMaxConnections;
    for (const UniqueFd& listener : listeners_) {
      fds.push_back({accepting ? listener.get() : -1, POLLIN, 0});
    }
    int timeout_ms = -1;
    const auto now = Clock::now();
    for (const Connection& c : connections) {
      fds.push_back({c.fd.get(), static_cast<short>(c.response.empty() ? POLLIN : POLLOUT), 0});
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(c.deadline - now).count();
      const int left_ms = static_cast<int>(std::max<int64_t>(left, 0));
      timeout_ms = timeout_ms < 0 ? left_ms : std::min(timeout_ms, left_ms);
    }
    if (::poll(fds.data(), fds.size(), timeout_ms) < 0 && errno != EINTR) return;
    if (fds[0].revents != 0) return;
    for (size_t i = 0; i < connections.size(); ++i) {
      Connection& c = connections[i];
      const short revents = fds[1 + listeners_.size() + i].revents;
      bool done = Clock::now() >= c.deadline;
      if (!done && c.response.empty() && (revents & (POLLIN | POLLHUP | POLLERR))) {
        char buffer[2048];
        const ssize_t n = ::read(c.fd.get(), buffer, sizeof(buffer));
        if (n > 0) {
          c.request.append(buffer, static_cast<size_t>(n));
          c.response = Respond(c.request, render_);
        } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
          done = true;
        }
      }
      // Written as soon as it exists (the socket is usually writable); POLLOUT for the rest.
      if (!done && !c.response.empty()) {
        const ssize_t n = ::send(c.fd.get(), c.response.data() + c.written,
                                 c.response.size() - c.written, MSG_NOSIGNAL);
        if (n > 0) c.written += static_cast<size_t>(n);
        done = (n < 0 && errno != EAGAIN && errno != EINTR) || c.written == c.response.size();
      }
      if (done) c.fd.reset();
    }
    std::erase_if(connections, [](const Connection& c) { return !c.fd; });
    for (size_t l = 0; l < listeners_.size(); ++l) {
      if (fds[1 + l].revents == 0) continue;
      while (connections.size() < kMaxConnections) {
        UniqueFd fd(::accept4(listeners_[l].get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
        if (!fd) break;
        connections.push_back({std::move(fd), Clock::now() + kConnectionTimeout, {}, {}, 0});
      }
    }
  }
}

}  // namespace svfs::metrics
