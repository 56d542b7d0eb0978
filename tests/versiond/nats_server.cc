#include "tests/versiond/nats_server.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tests/support/wait.h"

namespace svfs::versiond::testing {

int FreeLoopbackPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

NatsServer::NatsServer(std::string binary, std::string store_dir, std::string name,
                       int client_port, int cluster_port, std::vector<std::string> routes)
    : binary_(std::move(binary)), store_dir_(std::move(store_dir)), name_(std::move(name)),
      client_port_(client_port), cluster_port_(cluster_port), routes_(std::move(routes)) {}

bool NatsServer::Start(std::chrono::milliseconds timeout) {
  std::vector<std::string> args = {binary_, "-a", "127.0.0.1", "-p", std::to_string(client_port_),
                                   "-js", "-sd", store_dir_, "--server_name", name_};
  if (cluster_port_ != 0) {
    std::string routes;
    for (const std::string& route : routes_) routes += (routes.empty() ? "" : ",") + route;
    args.insert(args.end(), {"--cluster_name", "svfs-test", "--cluster",
                             "nats://127.0.0.1:" + std::to_string(cluster_port_), "--routes",
                             routes});
  }
  args.insert(args.end(), extra_args_.begin(), extra_args_.end());
  const size_t ready_before = CountReady();
  if (!process_.Start(args, store_dir_ + ".log")) return false;
  return svfs_test::WaitUntil(
      [&] { return !process_.Running() || CountReady() > ready_before; }, timeout,
      std::chrono::milliseconds(20)) &&
         process_.Running();
}

size_t NatsServer::CountReady() const {
  const std::string text = process_.Log();
  size_t count = 0;
  for (size_t at = text.find("Server is ready"); at != std::string::npos;
       at = text.find("Server is ready", at + 1)) {
    ++count;
  }
  return count;
}

}  // namespace svfs::versiond::testing
