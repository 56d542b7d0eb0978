#include "tests/support/process.h"

#include <fstream>
#include <string>

#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "tests/support/files.h"
#include "tests/support/wait.h"

namespace svfs_test {

pid_t SpawnLogged(const std::vector<std::string>& argv, const std::string& log_path) {
  int log_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) return -1;
  std::fflush(nullptr);
  const pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) {
    int e = errno;
    ::close(log_fd);
    errno = e;
    return -1;
  }
  if (pid == 0) {
    // If the test binary dies (e.g. its watchdog), the daemon unmounts and exits; if it died
    // already, before the request took effect, so does the child.
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(127);
    ::dup2(log_fd, STDOUT_FILENO);
    ::dup2(log_fd, STDERR_FILENO);
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, STDIN_FILENO);
    // The test may block signals in other threads; start the daemon clean.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    std::vector<std::string> args = argv;
    std::vector<char*> raw;
    for (auto& a : args) raw.push_back(a.data());
    raw.push_back(nullptr);
    ::execv(raw[0], raw.data());
    dprintf(STDERR_FILENO, "execv(%s) failed: %s\n", raw[0], std::strerror(errno));
    ::_exit(127);
  }
  ::close(log_fd);
  return pid;
}

bool Process::Start(const std::vector<std::string>& argv, const std::string& log_path) {
  log_path_ = log_path;
  cmdline_.clear();
  for (const auto& a : argv) cmdline_ += a + " ";
  pid_t pid = SpawnLogged(argv, log_path);
  if (pid < 0) return false;
  pid_ = pid;
  exited_ = false;
  return true;
}

bool Process::Running() {
  if (pid_ <= 0) return false;
  int status = 0;
  if (::waitpid(pid_, &status, WNOHANG) == pid_) {
    pid_ = -1;
    exited_ = true;
    status_ = status;
    return false;
  }
  return true;
}

bool Process::WaitExit(std::chrono::milliseconds timeout) {
  return WaitUntil([&] { return !Running(); }, timeout, std::chrono::milliseconds(10));
}

std::string Process::ExitDescription() {
  if (Running()) return "running";
  if (!exited_) return "not started";
  if (WIFSIGNALED(status_)) return "killed by signal " + std::to_string(WTERMSIG(status_));
  return "exited with status " + std::to_string(WEXITSTATUS(status_));
}

int Process::Kill(int sig, std::chrono::milliseconds timeout) {
  if (pid_ <= 0) return -1;
  ::kill(pid_, sig);
  int status = 0;
  if (!WaitUntil([&] { return ::waitpid(pid_, &status, WNOHANG) == pid_; }, timeout,
                 std::chrono::milliseconds(1))) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, &status, 0);
  }
  pid_ = -1;
  exited_ = true;
  status_ = status;
  return status;
}

std::string Process::Log() const { return ReadWholeFile(log_path_); }

CommandResult RunCommand(const std::vector<std::string>& argv) {
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) return {};
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) {
    ::close(pipefd[0]);
    ::close(pipefd[1]);
    return {};
  }
  if (pid == 0) {
    ::dup2(pipefd[1], STDOUT_FILENO);
    ::dup2(pipefd[1], STDERR_FILENO);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    _exit(127);
  }
  ::close(pipefd[1]);
  CommandResult result;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(pipefd[0], buf, sizeof(buf))) > 0) result.output.append(buf, n);
  ::close(pipefd[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  result.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

pid_t ServingPid(pid_t pid) {
  std::ifstream children("/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) +
                         "/children");
  pid_t child = 0;
  if (children >> child && child > 0) return child;
  return pid;
}

pid_t Process::serving_pid() const { return ServingPid(pid_); }

}  // namespace svfs_test
