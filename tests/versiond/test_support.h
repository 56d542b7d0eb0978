// Helpers for tests that run the real svfs-versiond binary: a child process on a temp socket and
// a unique table (removed afterwards), and a stats snapshot over raw RPC.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace svfs::versiond::testing {

// A fresh directory under /tmp, removed (recursively) on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// "svfs-test-<pid>-<n>": shm names unique per process and call.
std::string UniqueTableName();

class VersiondProcess {
 public:
  VersiondProcess(std::string binary, std::string socket, std::string table,
                  std::vector<std::string> extra_args = {});
  ~VersiondProcess();  // SIGTERM and reap if running; removes the table unless keep_table()

  // Starts it and waits until the socket accepts (fails the test after 5 s).
  void Start();
  // Sends `sig` and reaps it.
  void Kill(int sig);
  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  std::string log() const;
  // Waits until the log contains `needle`; false after `timeout`.
  bool WaitForLog(const std::string& needle, std::chrono::milliseconds timeout) const;
  const std::string& socket() const { return socket_; }
  const std::string& table() const { return table_; }

 private:
  std::string binary_;
  std::string socket_;
  std::string table_;
  std::vector<std::string> extra_args_;
  std::string log_path_;
  pid_t pid_ = -1;
};

struct ClientSnapshot {
  uint64_t id = 0;
  std::string name;
  uint32_t pid = 0;
  uint32_t uid = 0;
  uint64_t references = 0;
  uint64_t slots = 0;
};

struct StatsSnapshot {
  std::string table;
  uint64_t generation = 0;
  uint64_t in_use = 0;
  uint64_t free = 0;
  uint64_t high_water = 0;
  uint64_t host_bumps = 0;
  std::vector<ClientSnapshot> clients;
};

// One stats() call on a fresh connection (own kj event loop on the calling thread). Throws
// kj::Exception if it fails.
StatsSnapshot GetStats(const std::string& socket);

// Polls `pred` every 10 ms until true or `timeout` passes; returns its last value.
template <typename Pred>
bool WaitFor(Pred pred, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    if (pred()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    struct timespec ts{0, 10'000'000};
    nanosleep(&ts, nullptr);
  }
}

// Runs a command, returns its exit status and stdout+stderr.
struct CommandResult {
  int status = -1;
  std::string output;
};
CommandResult RunCommand(const std::vector<std::string>& argv);

}  // namespace svfs::versiond::testing
