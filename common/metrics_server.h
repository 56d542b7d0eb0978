// The /metrics endpoint of svfsd and svfs-versiond: a minimal HTTP/1.0 server on a UNIX stream
// socket and/or a numeric TCP address, one thread, serving what `render` returns (Prometheus
// text, common/metrics_text.h). Each connection is one request: GET /metrics gets the metrics,
// anything else an error status, and the connection is closed. A request is bounded in size
// (kMaxRequestBytes) and in time (its head within kRequestTimeout of accept, the response
// written within kConnectionTimeout), and at most kMaxConnections are open at once: when full,
// the one waiting longest for its request is closed for a new one. Clients that send garbage or
// nothing so cost a slot for a second and never stop the daemon's work. Rendering runs on this
// server's thread: it reads counters and takes, briefly, the locks `render` needs (svfsd's
// inode store and handle table) and nothing of the request path waits on it.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <expected>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/event_fd.h"
#include "common/unique_fd.h"

namespace svfs::metrics {

inline constexpr size_t kMaxRequestBytes = 8192;
inline constexpr std::chrono::seconds kRequestTimeout{1};
inline constexpr std::chrono::seconds kConnectionTimeout{5};
inline constexpr size_t kMaxConnections = 16;

// A numeric "IPv4:PORT" or "[IPv6]:PORT" (no host names: nothing to resolve, and the address
// bound is exactly the one given).
struct TcpAddress {
  sockaddr_storage storage{};
  socklen_t length = 0;
};
std::expected<TcpAddress, std::string> ParseTcpAddress(const std::string& text);

// The answer to one request (status line, headers, body), from the bytes received so far; an
// empty string while the request head is incomplete. Public for the unit test.
std::string Respond(const std::string& request, const std::function<std::string()>& render);

// A socket file a server made (its directory, its name in it, its inode): removed at exit.
struct OwnedSocketFile {
  UniqueFd directory;
  std::string name;
  ino_t inode = 0;
};

struct ListenOptions {
  std::string program;       // "svfsd": the prefix of error messages
  std::string socket_path;   // --metrics-socket (empty: none)
  std::string address;       // --metrics-address (empty: none)
};

class MetricsServer {
 public:
  // Opens the listeners (before a sandbox closes: the socket file's directory and the host's
  // network namespace are reachable then). A stale socket file at socket_path is replaced, any
  // other file refused, and a socket another process still listens on refused too; the socket is
  // mode 0600 and removed when the server is destroyed. Errors read
  // "PROGRAM: --metrics-... X: why".
  static std::expected<std::unique_ptr<MetricsServer>, std::string> Listen(
      const ListenOptions& options);
  ~MetricsServer();  // stops and joins the thread, removes the socket file

  // Serves on a thread of its own; `render` runs on that thread for each GET /metrics.
  void start(std::function<std::string()> render);
  // Where it listens, for the log: "unix:PATH", "127.0.0.1:9100" (the port bound, if 0 was given).
  std::vector<std::string> addresses() const;

 private:
  struct Connection;
  MetricsServer() = default;
  void serve();
  // One poll round's work on a connection: read, answer, write, drain; closes it when done.
  void serve_connection(Connection& connection, short revents) const;

  std::vector<UniqueFd> listeners_;
  std::vector<std::string> addresses_;
  OwnedSocketFile socket_file_;
  EventFd stop_;
  std::function<std::string()> render_;
  std::thread thread_;
};

}  // namespace svfs::metrics
