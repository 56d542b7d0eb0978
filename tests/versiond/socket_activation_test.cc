// svfs-versiond started the way systemd starts it from svfs-versiond.socket: the listening socket
// as fd 3, LISTEN_FDS=1 and LISTEN_PID = versiond's pid (sd_listen_fds(3)). It must serve that
// socket (not bind --socket), leave the socket file alone when it stops, and a versiond started
// again on the same socket must get the waiting clients back.
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "common/unique_fd.h"
#include "shm/version_table.h"
#include "tests/support/files.h"
#include "tests/versiond/test_support.h"
#include "versiond/client.h"

namespace svfs::versiond {
namespace {

using namespace std::chrono_literals;
using testing::WaitUntil;

UniqueFd ListeningSocket(const std::string& path, int type = SOCK_STREAM) {
  UniqueFd fd(::socket(AF_UNIX, type | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  EXPECT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0)
      << path << ": " << std::strerror(errno);
  if (type == SOCK_STREAM) {
    EXPECT_EQ(::listen(fd.get(), 16), 0) << std::strerror(errno);
  }
  return fd;
}

bool IsSocket(const std::string& path) {
  struct stat st{};
  return ::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode);
}

// svfs-versiond with `passed` as fd 3 and the activation variables, as systemd execs it.
// `listen_pid` "$$" names versiond itself (the shell execs it, keeping its pid).
class ActivatedVersiond {
 public:
  ActivatedVersiond(int passed, std::string listen_pid, std::vector<std::string> args,
                    std::string log_path)
      : log_path_(std::move(log_path)) {
    std::vector<std::string> argv = {
        "/bin/sh", "-c", "LISTEN_PID=" + listen_pid + " LISTEN_FDS=1 exec \"$0\" \"$@\"",
        SVFS_VERSIOND_PATH};
    argv.insert(argv.end(), args.begin(), args.end());
    std::vector<char*> c_argv;
    for (auto& a : argv) c_argv.push_back(a.data());
    c_argv.push_back(nullptr);
    pid_ = ::fork();
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      int log = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
      int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
      if (log < 0 || null < 0 || ::dup2(null, 0) < 0 || ::dup2(log, 1) < 0 || ::dup2(log, 2) < 0) {
        _exit(126);
      }
      if (passed != 3 && ::dup2(passed, 3) < 0) _exit(126);
      ::fcntl(3, F_SETFD, 0);  // inherited across exec, as systemd passes it
      sigset_t none;
      sigemptyset(&none);
      ::sigprocmask(SIG_SETMASK, &none, nullptr);
      ::execv(c_argv[0], c_argv.data());
      _exit(127);
    }
  }
  ~ActivatedVersiond() {
    if (pid_ > 0 && !exited_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    ::unlink(log_path_.c_str());
  }

  // Waits up to `timeout` for the exit; true once it exited (status in status()).
  bool WaitExit(std::chrono::milliseconds timeout) {
    return WaitUntil(
        [&] {
          if (!exited_ && ::waitpid(pid_, &status_, WNOHANG) == pid_) exited_ = true;
          return exited_;
        },
        timeout, 5ms);
  }
  void Signal(int sig) { ::kill(pid_, sig); }
  int status() const { return status_; }
  std::string log() const { return svfs_test::ReadWholeFile(log_path_); }
  bool WaitForLog(const std::string& needle) const {
    return WaitUntil([&] { return log().find(needle) != std::string::npos; }, 5s, 10ms);
  }

 private:
  std::string log_path_;
  pid_t pid_ = -1;
  bool exited_ = false;
  int status_ = 0;
};

class SocketActivationTest : public ::testing::Test {
 protected:
  void TearDown() override { shm::VersionTable::Remove(table_); }

  std::vector<std::string> Args() {
    return {"--socket", unused_, "--table", table_, "--capacity", "64", "--log-level", "debug"};
  }

  testing::TempDir dir_;
  std::string socket_ = dir_.path() + "/activated.sock";
  std::string unused_ = dir_.path() + "/unused.sock";
  std::string table_ = testing::UniqueTableName();
};

TEST_F(SocketActivationTest, ServesThePassedSocketAndLeavesItForTheNextStart) {
  UniqueFd listener = ListeningSocket(socket_);
  auto first = std::make_unique<ActivatedVersiond>(listener.get(), "$$", Args(),
                                                   dir_.path() + "/first.log");
  auto client = Client::Start({.socket_path = socket_, .name = "activated", .retry_interval = 20ms});
  ASSERT_TRUE(WaitUntil([&] { return client->attached(); }, 5s, 10ms)) << first->log();
  EXPECT_TRUE(first->WaitForLog("serving " + socket_ + " (socket passed by systemd)")) << first->log();
  EXPECT_TRUE(first->WaitForLog("--socket " + unused_ + " ignored")) << first->log();
  EXPECT_FALSE(IsSocket(unused_)) << "versiond bound --socket although it was given one";
  EXPECT_EQ(testing::GetStats(socket_).clients.size(), 1u);

  first->Signal(SIGTERM);
  ASSERT_TRUE(first->WaitExit(5s)) << first->log();
  EXPECT_TRUE(WIFEXITED(first->status()) && WEXITSTATUS(first->status()) == 0) << first->log();
  EXPECT_TRUE(IsSocket(socket_)) << "versiond removed the socket file systemd owns";
  ASSERT_TRUE(WaitUntil([&] { return !client->attached(); }, 5s, 10ms));

  // systemd restarts the service on the same socket; the client comes back by itself.
  ActivatedVersiond second(listener.get(), "$$", Args(), dir_.path() + "/second.log");
  ASSERT_TRUE(WaitUntil([&] { return client->attached(); }, 5s, 10ms)) << second.log();
  EXPECT_TRUE(second.WaitForLog("took over version table " + table_)) << second.log();
}

// LISTEN_PID of another process (a parent that was activated itself): not for this versiond,
// which binds --socket as usual.
TEST_F(SocketActivationTest, VariablesForAnotherProcessAreIgnored) {
  UniqueFd listener = ListeningSocket(socket_);
  ActivatedVersiond daemon(listener.get(), std::to_string(::getpid()), Args(),
                           dir_.path() + "/other.log");
  auto client = Client::Start({.socket_path = unused_, .name = "bound", .retry_interval = 20ms});
  ASSERT_TRUE(WaitUntil([&] { return client->attached(); }, 5s, 10ms)) << daemon.log();
  EXPECT_TRUE(daemon.WaitForLog("serving " + unused_ + " (table")) << daemon.log();
}

TEST_F(SocketActivationTest, RefusesAPassedFdThatIsNotAListeningStreamSocket) {
  UniqueFd file(::open(dir_.path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  ActivatedVersiond on_file(file.get(), "$$", Args(), dir_.path() + "/file.log");
  ASSERT_TRUE(on_file.WaitExit(5s)) << on_file.log();
  EXPECT_TRUE(WIFEXITED(on_file.status()) && WEXITSTATUS(on_file.status()) == 1);
  EXPECT_NE(on_file.log().find("fd 3 passed by systemd (LISTEN_FDS=1) is not a socket"),
            std::string::npos) << on_file.log();

  UniqueFd datagram = ListeningSocket(socket_, SOCK_DGRAM);
  ActivatedVersiond on_datagram(datagram.get(), "$$", Args(), dir_.path() + "/dgram.log");
  ASSERT_TRUE(on_datagram.WaitExit(5s)) << on_datagram.log();
  EXPECT_TRUE(WIFEXITED(on_datagram.status()) && WEXITSTATUS(on_datagram.status()) == 1);
  EXPECT_NE(on_datagram.log().find("is not a listening UNIX stream socket"), std::string::npos)
      << on_datagram.log();
  EXPECT_FALSE(IsSocket(unused_));
}

}  // namespace
}  // namespace svfs::versiond
