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

#include <gtest/gtest.h>

#include "shm/version_table.h"
#include "tests/support/files.h"

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

TempDir::~TempDir() { svfs_test::RemoveTree(path_); }

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
  ASSERT_TRUE(process_.Start(args, log_path_)) << std::strerror(errno);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, socket_.c_str(), sizeof(addr.sun_path) - 1);
  bool up = WaitUntil(
      [&] {
        if (!process_.Running()) return true;  // died: reported below
        int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
        ::close(fd);
        return ok;
      },
      std::chrono::seconds(5), std::chrono::milliseconds(10));
  ASSERT_TRUE(up && running()) << "svfs-versiond did not come up; log:\n" << log();
}

void VersiondProcess::Kill(int sig) { process_.Kill(sig); }

std::string VersiondProcess::log() const { return svfs_test::ReadWholeFile(log_path_); }

bool VersiondProcess::WaitForLog(const std::string& needle, std::chrono::milliseconds timeout) const {
  return WaitUntil([&] { return log().find(needle) != std::string::npos; }, timeout,
                   std::chrono::milliseconds(10));
}

}  // namespace svfs::versiond::testing
