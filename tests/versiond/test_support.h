// Helpers for tests that run the real svfs-versiond binary: a child process on a temp socket and
// a unique table (removed afterwards). Stats over RPC, polling and commands come from
// tests/support.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

#include "tests/support/process.h"
#include "tests/support/versiond_stats.h"
#include "tests/support/wait.h"

namespace svfs::versiond::testing {

using svfs_test::ClientRow;
using svfs_test::CommandResult;
using svfs_test::GetStats;
using svfs_test::RunCommand;
using svfs_test::StatsSnapshot;
using svfs_test::WaitUntil;

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
  ~VersiondProcess();  // SIGTERM and reap if running; removes the table

  // The options of the next Start() (a restart with other options).
  void set_extra_args(std::vector<std::string> args) { extra_args_ = std::move(args); }

  // Starts it and waits until the socket accepts (fails the test after 5 s).
  void Start();
  // Sends `sig` and reaps it.
  void Kill(int sig);
  bool running() const { return process_.pid() > 0; }
  pid_t pid() const { return process_.pid(); }
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
  svfs_test::Process process_;
};

}  // namespace svfs::versiond::testing
