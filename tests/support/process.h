// Child processes for tests: daemons started with their output in a log file, and short commands
// whose output is captured. No gtest here: failures come back as values, so benchmarks use it too.
#pragma once

#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <chrono>
#include <string>
#include <vector>

namespace svfs_test {

// Forks and execs argv[0] with argv: stdout and stderr appended to `log_path`, stdin from
// /dev/null, no blocked signals, SIGTERM if the test process dies (even if it died before the
// child could ask for that). Returns the pid, or -1 (errno
// set) if the log cannot be opened or fork fails.
pid_t SpawnLogged(const std::vector<std::string>& argv, const std::string& log_path);

// A SpawnLogged child that is killed (SIGKILL) and reaped on destruction.
class Process {
 public:
  Process() = default;
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  ~Process() { Kill(SIGKILL); }

  // Starts argv[0]; the log is appended to, so a restarted process keeps the earlier log.
  bool Start(const std::vector<std::string>& argv, const std::string& log_path);

  pid_t pid() const { return pid_; }
  // The process that serves: a sandboxed svfsd's child (its supervisor's only child), else pid().
  pid_t serving_pid() const;
  // Reaps the child if it exited; true while it runs.
  bool Running();
  // Waits up to `timeout` for the child to exit by itself; true once it has.
  bool WaitExit(std::chrono::milliseconds timeout);
  // "running", "exited with status N" or "killed by signal N", for failure messages.
  std::string ExitDescription();
  // Whether the child has been reaped and a signal ended it.
  bool KilledBySignal() const { return exited_ && WIFSIGNALED(status_); }
  // Sends `sig` and waits up to `timeout` for the exit (then SIGKILL). Returns the wait status,
  // or -1 if the process was not running.
  int Kill(int sig, std::chrono::milliseconds timeout = std::chrono::milliseconds(5000));
  int last_status() const { return status_; }
  const std::string& log_path() const { return log_path_; }
  const std::string& cmdline() const { return cmdline_; }
  std::string Log() const;

 private:
  pid_t pid_ = -1;
  bool exited_ = false;  // reaped since the last Start; status_ holds its wait status
  int status_ = 0;
  std::string log_path_, cmdline_;
};

// Runs a command to completion; its exit status (-1 if it did not exit normally) and
// stdout+stderr.
struct CommandResult {
  int status = -1;
  std::string output;
};
CommandResult RunCommand(const std::vector<std::string>& argv);

// pid's only child if it has one (svfsd --sandbox namespace: the daemon, pid 1 of its pid
// namespace, under the supervisor that was started), else pid.
pid_t ServingPid(pid_t pid);

}  // namespace svfs_test
