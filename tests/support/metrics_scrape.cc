#include "tests/support/metrics_scrape.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "tests/support/process.h"

namespace svfs_test {
namespace {

std::optional<std::string> Exchange(int fd, const sockaddr* addr, socklen_t length,
                                    const std::string& request) {
  std::string out;
  // A server that never answers fails the exchange instead of hanging the test.
  const timeval timeout{.tv_sec = 10, .tv_usec = 0};
  if (fd >= 0) ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  if (fd >= 0 && ::connect(fd, addr, length) == 0 &&
      ::send(fd, request.data(), request.size(), MSG_NOSIGNAL) ==
          static_cast<ssize_t>(request.size())) {
    char buffer[65536];
    ssize_t n;
    while ((n = ::read(fd, buffer, sizeof(buffer))) > 0) out.append(buffer, static_cast<size_t>(n));
    ::close(fd);
    if (n < 0) return std::nullopt;
    return out;
  }
  if (fd >= 0) ::close(fd);
  return std::nullopt;
}

// Prints each sample as `name{k="v",...} value`, the labels sorted.
constexpr const char* kParser = R"(
import sys
from prometheus_client.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join('%s="%s"' % (k, v) for k, v in sorted(s.labels.items()))
        print("%s%s %r" % (s.name, "{" + labels + "}" if labels else "", s.value))
)";

}  // namespace

std::optional<std::string> HttpExchange(const std::string& unix_path, const std::string& request) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", unix_path.c_str());
  return Exchange(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0),
                  reinterpret_cast<sockaddr*>(&addr), sizeof(addr), request);
}

std::optional<std::string> HttpExchange(uint16_t tcp_port, const std::string& request) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(tcp_port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return Exchange(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0),
                  reinterpret_cast<sockaddr*>(&addr), sizeof(addr), request);
}

uint16_t FreeTcpPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(addr);
  uint16_t port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &length) == 0) {
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

std::optional<std::map<std::string, double>> ParseMetrics(const std::string& response,
                                                          std::string* error) {
  const size_t head_end = response.find("\r\n\r\n");
  if (response.rfind("HTTP/1.0 200 OK\r\n", 0) != 0 || head_end == std::string::npos ||
      response.find("Content-Type: text/plain; version=0.0.4") >= head_end) {
    *error = "not a 200 text/plain; version=0.0.4 response: " + response.substr(0, 200);
    return std::nullopt;
  }
  char dir[] = "/tmp/svfs-metrics-XXXXXX";
  if (::mkdtemp(dir) == nullptr) {
    *error = "mkdtemp failed";
    return std::nullopt;
  }
  const std::string body_path = std::string(dir) + "/body";
  const std::string script_path = std::string(dir) + "/parse.py";
  std::ofstream(body_path) << response.substr(head_end + 4);
  std::ofstream(script_path) << kParser;
  // /usr/bin/python3: Debian's, which has python3-prometheus-client (not a pyenv shim's).
  CommandResult parsed =
      RunCommand({"/bin/sh", "-c", "/usr/bin/python3 " + script_path + " < " + body_path});
  ::unlink(body_path.c_str());
  ::unlink(script_path.c_str());
  ::rmdir(dir);
  if (parsed.status != 0) {
    *error = "prometheus_client refused the body: " + parsed.output;
    return std::nullopt;
  }
  std::map<std::string, double> samples;
  std::istringstream lines(parsed.output);
  std::string line;
  while (std::getline(lines, line)) {
    const size_t space = line.rfind(' ');
    if (space == std::string::npos) continue;
    samples[line.substr(0, space)] = std::stod(line.substr(space + 1));
  }
  return samples;
}

}  // namespace svfs_test
