#include "tests/versiond/test_support.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <capnp/rpc-twoparty.h>
#include <gtest/gtest.h>
#include <kj/async-io.h>

#include "protocol/versiond.capnp.h"
#include "shm/version_table.h"

namespace svfs::versiond::testing {

TempDir::TempDir() {
  char templ[] = "/tmp/svfs-versiond-test-XXXXXX";
  char* dir = ::mkdtemp(templ);
  if (dir == nullptr) {
    ADD_FAILURE() << "mkdtemp: " << std::strerror(errno);
    return;
  }
  path_ = dir;
}

TempDir::~TempDir() {
  std::error_code ec;
  if (!path_.empty()) std::filesystem::remove_all(path_, ec);
}

std::string UniqueTableName() {
  static std::atomic<int> counter{0};
  return "svfs-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
}

VersiondProcess::VersiondProcess(std::string binary, std::string socket, std::string table,
                                 std::vector<std::string> extra_args)
    : binary_(std::move(binary)), socket_(std::move(socket)), table_(std::move(table)),
      extra_args_(std::move(extra_args)), log_path_(socket_ + ".log") {}

VersiondProcess::~VersiondProcess() {
  if (running()) Kill(SIGTERM);
  shm::VersionTable::Remove(table_);
  ::unlink(log_path_.c_str());
}

void VersiondProcess::Start() {
  ASSERT_FALSE(running());
  std::vector<std::string> args = {binary_, "--socket", socket_, "--table", table_,
                                   "--log-level", "debug"};
  args.insert(args.end(), extra_args_.begin(), extra_args_.end());
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0) << std::strerror(errno);
  if (pid == 0) {
    int log = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log >= 0) {
      ::dup2(log, STDOUT_FILENO);
      ::dup2(log, STDERR_FILENO);
    }
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    // The test may block signals in other threads; start the daemon clean.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execv(argv[0], argv.data());
    _exit(127);
  }
  pid_ = pid;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, socket_.c_str(), sizeof(addr.sun_path) - 1);
  bool up = WaitFor(
      [&] {
        int status = 0;
        if (::waitpid(pid_, &status, WNOHANG) == pid_) {
          pid_ = -1;
          return true;  // died: reported below
        }
        int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
        ::close(fd);
        return ok;
      },
      std::chrono::seconds(5));
  ASSERT_TRUE(up && running()) << "svfs-versiond did not come up; log:\n" << log();
}

void VersiondProcess::Kill(int sig) {
  if (!running()) return;
  ::kill(pid_, sig);
  int status = 0;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
}

std::string VersiondProcess::log() const {
  std::ifstream in(log_path_);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool VersiondProcess::WaitForLog(const std::string& needle, std::chrono::milliseconds timeout) const {
  return WaitFor([&] { return log().find(needle) != std::string::npos; }, timeout);
}

StatsSnapshot GetStats(const std::string& socket) {
  auto io = kj::setupAsyncIo();
  auto address = io.provider->getNetwork().parseAddress(kj::str("unix:", socket.c_str())).wait(io.waitScope);
  auto stream = address->connect().wait(io.waitScope);
  capnp::TwoPartyClient client(*stream);
  auto versiond = client.bootstrap().castAs<rpc::Versiond>();
  auto request = versiond.statsRequest();
  request.setHottest(0);
  auto response = request.send().wait(io.waitScope);
  auto stats = response.getStats();
  StatsSnapshot out;
  out.table = stats.getTable().getName();
  out.generation = stats.getTable().getGeneration();
  out.in_use = stats.getSlotsInUse();
  out.free = stats.getSlotsFree();
  out.high_water = stats.getHighWater();
  out.host_bumps = stats.getHostBumps();
  for (auto c : stats.getClients()) {
    out.clients.push_back({c.getId(), c.getName(), c.getPid(), c.getUid(), c.getReferences(),
                           c.getSlots()});
  }
  return out;
}

CommandResult RunCommand(const std::vector<std::string>& argv) {
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) return {};
  pid_t pid = ::fork();
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

}  // namespace svfs::versiond::testing
