// A real nats-server for federation tests: JetStream on, its own store directory and loopback
// ports, optionally one node of a cluster. Restartable on the same ports and store.
#pragma once

#include <chrono>
#include <cstddef>
#include <string>
#include <vector>

#include "tests/support/process.h"

namespace svfs::versiond::testing {

// A loopback TCP port nothing listens on right now.
int FreeLoopbackPort();

class NatsServer {
 public:
  // `cluster_port` and `routes` (nats://127.0.0.1:PORT of the other nodes) make it a cluster node.
  NatsServer(std::string binary, std::string store_dir, std::string name, int client_port,
             int cluster_port = 0, std::vector<std::string> routes = {});

  // Options of the next Start() beyond the ports and the store (--user, --tls, ...).
  void set_extra_args(std::vector<std::string> args) { extra_args_ = std::move(args); }
  // Starts it and waits until it says it is ready (false after `timeout`; the log says why).
  bool Start(std::chrono::milliseconds timeout = std::chrono::seconds(10));
  void Kill(int sig) { process_.Kill(sig); }
  std::string url() const { return "nats://127.0.0.1:" + std::to_string(client_port_); }
  std::string log() const { return process_.Log(); }

 private:
  size_t CountReady() const;  // "Server is ready" lines in the (appended) log

  std::string binary_, store_dir_, name_;
  int client_port_, cluster_port_;
  std::vector<std::string> routes_;
  std::vector<std::string> extra_args_;
  svfs_test::Process process_;
};

}  // namespace svfs::versiond::testing
