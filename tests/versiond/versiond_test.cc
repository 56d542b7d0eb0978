// svfs-versiond as a real process: table identity, registration and its limits, dead clients,
// peer-credential refusal, host edits bumping the slot every daemon computes, svfsctl.
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <linux/capability.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>

#include "protocol/versiond.capnp.h"
#include "shm/version_table.h"
#include "tests/versiond/test_support.h"
#include "versiond/client.h"

namespace svfs::versiond {
namespace {

using namespace std::chrono_literals;
using testing::GetStats;
using testing::WaitUntil;

class VersiondTest : public ::testing::Test {
 protected:
  void SetUp() override {
    socket_ = dir_.path() + "/versiond.sock";
    daemon_ = std::make_unique<testing::VersiondProcess>(SVFS_VERSIOND_PATH, socket_,
                                                         testing::UniqueTableName(),
                                                         std::vector<std::string>{"--capacity", "4096"});
    daemon_->Start();
  }

  std::unique_ptr<Client> StartClient(const std::string& name, std::vector<std::string> dirs = {}) {
    auto client = Client::Start({.socket_path = socket_, .name = name, .shared_dirs = std::move(dirs),
                                 .retry_interval = 50ms});
    EXPECT_TRUE(WaitUntil([&] { return client->attached(); }, 2s, 10ms)) << daemon_->log();
    return client;
  }

  testing::TempDir dir_;
  std::string socket_;
  std::unique_ptr<testing::VersiondProcess> daemon_;
};

// The fields of /proc/PID/status named `key`, e.g. "CapEff" -> "0000000000200002".
std::string ProcStatusField(pid_t pid, const std::string& key) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind(key + ":", 0) == 0) {
      auto value = line.substr(key.size() + 1);
      value.erase(0, value.find_first_not_of(" \t"));
      return value;
    }
  }
  return "";
}

// Once serving, a root versiond holds only what fanotify needs (sys_admin, dac_read_search), in
// its bounding set too, runs with no_new_privs and under its seccomp filter (mode 2), and still
// serves: a client attaches and a host edit is tracked afterwards (HostChangeBumps... below).
TEST_F(VersiondTest, ServesWithFanotifyCapabilitiesOnlyAndSeccomp) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (capabilities to drop)";
  auto client = StartClient("locked-down", {dir_.path()});
  const uint64_t expected = (uint64_t{1} << CAP_SYS_ADMIN) | (uint64_t{1} << CAP_DAC_READ_SEARCH);
  for (const char* set : {"CapEff", "CapPrm", "CapBnd"}) {
    const std::string value = ProcStatusField(daemon_->pid(), set);
    ASSERT_FALSE(value.empty()) << set;
    EXPECT_EQ(std::stoull(value, nullptr, 16), expected) << set << " " << value;
  }
  EXPECT_EQ(ProcStatusField(daemon_->pid(), "NoNewPrivs"), "1");
  EXPECT_EQ(ProcStatusField(daemon_->pid(), "Seccomp"), "2");
  auto stats = GetStats(socket_);
  EXPECT_EQ(stats.clients.size(), 1u);
  EXPECT_TRUE(daemon_->running()) << daemon_->log();
}

// The filter restricts arguments too: clone only for threads (a fork after the lockdown kills
// versiond), as ioctl and prctl are limited to what versiond calls (the other suites run it).
TEST(VersiondSeccompTest, AForkAfterTheLockdownKills) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (capabilities to drop)";
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "sanitizer builds leave clone unrestricted (LeakSanitizer's own clone)";
#endif
  testing::TempDir dir;
  const std::string socket = dir.path() + "/versiond.sock", table = testing::UniqueTableName();
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::setenv("SVFS_VERSIOND_TEST_FORK", "1", 1);
    const int null = ::open("/dev/null", O_WRONLY);
    ::dup2(null, 2);
    ::execl(SVFS_VERSIOND_PATH, SVFS_VERSIOND_PATH, "--socket", socket.c_str(), "--table",
            table.c_str(), "--capacity", "64", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  int status = 0;
  pid_t reaped = 0;
  for (int i = 0; i < 200 && reaped == 0; ++i) {
    reaped = ::waitpid(pid, &status, WNOHANG);
    if (reaped == 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (reaped == 0) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    ADD_FAILURE() << "versiond forked and went on serving";
  } else {
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS)
        << "status " << status << ": not killed by SIGSYS";
  }
  ::shm_unlink(("/" + table).c_str());
}

// --seccomp none: capabilities are still cut, no filter.
TEST(VersiondSeccompTest, NoneLeavesTheFilterOff) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (capabilities to drop)";
  testing::TempDir dir;
  testing::VersiondProcess daemon(SVFS_VERSIOND_PATH, dir.path() + "/versiond.sock",
                                  testing::UniqueTableName(),
                                  std::vector<std::string>{"--capacity", "64", "--seccomp", "none"});
  daemon.Start();
  EXPECT_EQ(ProcStatusField(daemon.pid(), "Seccomp"), "0");
  EXPECT_EQ(std::stoull(ProcStatusField(daemon.pid(), "CapBnd"), nullptr, 16),
            (uint64_t{1} << CAP_SYS_ADMIN) | (uint64_t{1} << CAP_DAC_READ_SEARCH));
}

TEST_F(VersiondTest, AttachReturnsTableIdentity) {
  auto client = StartClient("identity");
  auto identity = client->table();
  ASSERT_TRUE(identity.has_value());
  auto table = shm::VersionTable::Attach(daemon_->table(), shm::Access::kReadOnly);
  ASSERT_TRUE(table.has_value()) << table.error();
  const shm::TableHeader& header = table->header();
  EXPECT_EQ(identity->name, daemon_->table());
  EXPECT_EQ(0, std::memcmp(identity->uuid.data(), header.uuid, 16));
  EXPECT_EQ(identity->generation, header.generation.load());
  EXPECT_EQ(identity->generation, 1u);  // created by this versiond
  EXPECT_EQ(identity->slot_count, header.slot_count);
  EXPECT_EQ(identity->slot_count, 4096u);
  EXPECT_EQ(identity->slot_stride, header.slot_stride);
  EXPECT_EQ(identity->mapped_bytes, table->mapped_bytes());
}

// A process with write access truncates the table under versiond: versiond's next access used
// to kill it with SIGBUS. Now it stops with an error that says what happened, and removes the
// damaged table so that a restart creates a new one.
TEST_F(VersiondTest, TableShrunkUnderVersiondIsReportedAndReplacedOnRestart) {
  auto first = StartClient("before");
  const std::string path = "/dev/shm/" + daemon_->table();
  ASSERT_EQ(::truncate(path.c_str(), 0), 0) << std::strerror(errno);
  auto second = Client::Start({.socket_path = socket_, .name = "after", .retry_interval = 50ms});
  ASSERT_TRUE(daemon_->WaitForLog("shrank under versiond", 5s)) << daemon_->log();
  EXPECT_EQ(daemon_->log().find("SIGBUS"), std::string::npos);
  EXPECT_TRUE(WaitUntil([&] { return ::access(path.c_str(), F_OK) != 0; }, 2s, 10ms))
      << "the damaged table is still there";
  second.reset();
  first.reset();
  daemon_->Kill(SIGTERM);
  daemon_->Start();
  auto table = shm::VersionTable::Attach(daemon_->table(), shm::Access::kReadOnly);
  ASSERT_TRUE(table.has_value()) << table.error();
  EXPECT_EQ(table->header().generation.load(), 1u) << "not a new table";
}

// A restart applies its --table-mode and group to the table it takes over: the first
// --allow-gid, or versiond's own group without one.
TEST(VersiondRestartTest, TakeOverAppliesTheTableModeAndGroup) {
  if (::geteuid() != 0) GTEST_SKIP() << "the table's group is set by chown (root)";
  testing::TempDir dir;
  testing::VersiondProcess versiond(SVFS_VERSIOND_PATH, dir.path() + "/versiond.sock",
                                    testing::UniqueTableName());
  const std::string path = "/dev/shm/" + versiond.table();
  auto run = [&](std::vector<std::string> args) {
    versiond.set_extra_args(std::move(args));
    versiond.Start();
    versiond.Kill(SIGTERM);
    struct stat st {};
    EXPECT_EQ(::stat(path.c_str(), &st), 0) << versiond.log();
    return std::pair<unsigned, gid_t>{st.st_mode & 0777, st.st_gid};
  };
  using ModeAndGroup = std::pair<unsigned, gid_t>;
  EXPECT_EQ(run({}), ModeAndGroup(0640, ::getegid()));
  EXPECT_EQ(run({"--allow-gid", "65534", "--table-mode", "0660"}),
            ModeAndGroup(0660, 65534));
  EXPECT_NE(versiond.log().find("took over version table"), std::string::npos) << versiond.log();
  EXPECT_EQ(run({"--table-mode", "0644"}), ModeAndGroup(0644, ::getegid()));
}

// One raw connection to versiond with its own event loop, for calls the client library never
// makes (a second attach, too many directories).
struct RawConnection {
  explicit RawConnection(const std::string& socket)
      : io(kj::setupAsyncIo()),
        stream(io.provider->getNetwork()
                   .parseAddress(kj::str("unix:", socket.c_str()))
                   .wait(io.waitScope)
                   ->connect()
                   .wait(io.waitScope)),
        client(*stream),
        versiond(client.bootstrap().castAs<rpc::Versiond>()) {}
  // Whether an attach with `dirs` shared directories is answered (not refused).
  bool Attach(size_t dirs) {
    auto request = versiond.attachRequest();
    auto info = request.initClient();
    info.setName("raw");
    auto list = info.initSharedDirs(dirs);
    for (size_t i = 0; i < dirs; ++i) list.set(i, "/tmp");
    try {
      request.send().wait(io.waitScope);
      return true;
    } catch (const kj::Exception&) {
      return false;
    }
  }
  kj::AsyncIoContext io;
  kj::Own<kj::AsyncIoStream> stream;
  capnp::TwoPartyClient client;
  rpc::Versiond::Client versiond;
};

// What one client can ask for is bounded: one attach per connection, 16 directories per attach.
TEST_F(VersiondTest, AttachIsBoundedPerConnection) {
  {
    RawConnection too_many(socket_);
    EXPECT_FALSE(too_many.Attach(17));
  }
  RawConnection raw(socket_);
  EXPECT_TRUE(raw.Attach(16));
  EXPECT_FALSE(raw.Attach(1)) << "a second attach on one connection";
  // Asked on the same connection: this thread has one event loop, the connection's.
  auto response = raw.versiond.statsRequest().send().wait(raw.io.waitScope);
  auto clients = response.getStats().getClients();
  ASSERT_EQ(clients.size(), 1u);
  EXPECT_EQ(std::string(clients[0].getName().cStr()), "raw");
  EXPECT_EQ(clients[0].getSharedDirs().size(), 16u);
  EXPECT_EQ(clients[0].getPid(), static_cast<uint32_t>(::getpid()));
  EXPECT_LE(response.getStats().getWatchedFilesystems(), 1u)
      << "16 directories on one filesystem: one mark";
}

// A child process attaches, reports, and waits to be killed.
pid_t SpawnHolder(const std::string& socket, int* ready_fd) {
  int fds[2];
  EXPECT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive a failed test
    ::close(fds[0]);
    auto client = Client::Start({.socket_path = socket, .name = "doomed", .retry_interval = 20ms});
    for (int i = 0; i < 200 && !client->attached(); ++i) ::usleep(10'000);
    char ok = client->attached() ? 'y' : 'n';
    (void)!::write(fds[1], &ok, 1);
    ::pause();
    _exit(0);
  }
  ::close(fds[1]);
  *ready_fd = fds[0];
  return pid;
}

TEST_F(VersiondTest, KilledClientIsDeregisteredPromptly) {
  // Forked before this process starts any thread of its own.
  int ready = -1;
  pid_t child = SpawnHolder(socket_, &ready);
  char ok = 0;
  bool read_ok = ::read(ready, &ok, 1) == 1;
  ::close(ready);
  if (!read_ok || ok != 'y') {
    ::kill(child, SIGKILL);  // it would otherwise wait forever, holding our stdout
    ::waitpid(child, nullptr, 0);
    FAIL() << "the child could not attach; log:\n" << daemon_->log();
  }
  auto survivor = StartClient("survivor");
  auto before = GetStats(socket_);
  ASSERT_EQ(before.clients.size(), 2u);
  EXPECT_EQ(before.clients[0].name, "doomed");
  EXPECT_EQ(before.clients[0].pid, static_cast<uint32_t>(child));

  auto killed_at = std::chrono::steady_clock::now();
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  bool gone = WaitUntil([&] { return GetStats(socket_).clients.size() == 1; }, 1s, 10ms);
  auto took = std::chrono::steady_clock::now() - killed_at;
  EXPECT_TRUE(gone) << daemon_->log();
  EXPECT_LT(took, 1s);
  auto after = GetStats(socket_);
  ASSERT_EQ(after.clients.size(), 1u);
  EXPECT_EQ(after.clients[0].name, "survivor");
  EXPECT_TRUE(daemon_->WaitForLog("\"doomed\"", 1s));
}

TEST_F(VersiondTest, RefusesPeersNotAllowed) {
  // Let uid 65534 reach the socket at all, so that SO_PEERCRED is what refuses it.
  ASSERT_EQ(::chmod(dir_.path().c_str(), 0755), 0);
  ASSERT_EQ(::chmod(socket_.c_str(), 0666), 0);
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    if (::setresgid(65534, 65534, 65534) != 0 || ::setresuid(65534, 65534, 65534) != 0) _exit(2);
    try {
      auto io = kj::setupAsyncIo();
      auto addr = io.provider->getNetwork().parseAddress(kj::str("unix:", socket_.c_str())).wait(io.waitScope);
      auto stream = addr->connect().wait(io.waitScope);
      capnp::TwoPartyClient client(*stream);
      auto versiond = client.bootstrap().castAs<rpc::Versiond>();
      auto request = versiond.attachRequest();
      request.initClient().setName("intruder");
      request.send().wait(io.waitScope);
      _exit(1);  // attach succeeded: wrong
    } catch (const kj::Exception&) {
      _exit(0);  // refused
    }
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "1: attach succeeded, 2: could not drop privileges";
  EXPECT_TRUE(daemon_->WaitForLog("refused connection from pid " + std::to_string(child) +
                                      " uid 65534 gid 65534 (not in --allow-uid/--allow-gid)",
                                  1s))
      << daemon_->log();
  // Still serving the allowed.
  auto client = StartClient("after-refusal");
  EXPECT_TRUE(client->attached());
}

TEST(VersiondAllowTest, AllowUidLetsThatUserIn) {
  testing::TempDir dir;
  ASSERT_EQ(::chmod(dir.path().c_str(), 0755), 0);
  std::string socket = dir.path() + "/v.sock";
  testing::VersiondProcess daemon(SVFS_VERSIOND_PATH, socket, testing::UniqueTableName(),
                                  {"--capacity", "64", "--allow-uid", "65534"});
  daemon.Start();
  ASSERT_EQ(::chmod(socket.c_str(), 0666), 0);
  pid_t child = ::fork();
  if (child == 0) {
    if (::setresgid(65534, 65534, 65534) != 0 || ::setresuid(65534, 65534, 65534) != 0) _exit(2);
    auto client = Client::Start({.socket_path = socket, .name = "nobody", .retry_interval = 20ms});
    for (int i = 0; i < 200 && !client->attached(); ++i) ::usleep(10'000);
    _exit(client->attached() ? 0 : 1);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << daemon.log();
}

// --allow-gid by group name (as `--allow-gid kvm` in docs/operations.md) or number: the first
// owns the socket; an unknown name is refused in one line.
TEST(VersiondAllowTest, AllowGidTakesAGroupName) {
  const group* entry = ::getgrnam("daemon");
  if (entry == nullptr) entry = ::getgrgid(1);
  if (entry == nullptr) GTEST_SKIP() << "no group 'daemon' or gid 1";
  const gid_t gid = entry->gr_gid;
  const std::string name = entry->gr_name;
  testing::TempDir dir;
  std::string socket = dir.path() + "/v.sock";
  testing::VersiondProcess daemon(SVFS_VERSIOND_PATH, socket, testing::UniqueTableName(),
                                  {"--capacity", "64", "--allow-gid", name, "--allow-gid", "4242"});
  daemon.Start();
  struct stat st {};
  ASSERT_EQ(::stat(socket.c_str(), &st), 0);
  EXPECT_EQ(st.st_gid, gid) << daemon.log();

  auto refused = testing::RunCommand({SVFS_VERSIOND_PATH, "--socket", dir.path() + "/w.sock",
                                      "--allow-gid", "no-such-group-svfs"});
  EXPECT_EQ(refused.status, 2) << refused.output;
  EXPECT_EQ(refused.output, "svfs-versiond: --allow-gid no-such-group-svfs: no such group (give a "
                            "group name or number)\n");
}

TEST_F(VersiondTest, SvfsctlShowsTableAndClients) {
  auto client = StartClient("smoke-client", {dir_.path()});
  std::string file = dir_.path() + "/f";
  { std::ofstream(file) << "x"; }
  const uint64_t slot = svfs_test::SlotOfPath(file, 4096);
  ASSERT_NE(slot, 0u);
  {
    auto table = shm::VersionTable::Attach(daemon_->table(), shm::Access::kReadWrite);
    ASSERT_TRUE(table) << table.error();
    for (int i = 0; i < 1000; ++i) table->bump(slot);  // the hottest slot by far
  }

  auto status = testing::RunCommand({SVFSCTL_PATH, "--socket", socket_, "status"});
  EXPECT_EQ(status.status, 0) << status.output;
  EXPECT_NE(status.output.find(daemon_->table()), std::string::npos) << status.output;
  EXPECT_NE(status.output.find("clients:"), std::string::npos) << status.output;

  auto clients = testing::RunCommand({SVFSCTL_PATH, "--socket", socket_, "clients"});
  EXPECT_EQ(clients.status, 0) << clients.output;
  EXPECT_NE(clients.output.find("smoke-client"), std::string::npos) << clients.output;
  EXPECT_NE(clients.output.find(std::to_string(::getpid())), std::string::npos) << clients.output;
  EXPECT_NE(clients.output.find(dir_.path()), std::string::npos) << clients.output;

  auto hot = testing::RunCommand({SVFSCTL_PATH, "--socket", socket_, "hot", "-n", "5"});
  EXPECT_EQ(hot.status, 0) << hot.output;
  std::istringstream rows(hot.output);
  std::string header, first_slot;
  std::getline(rows, header);
  rows >> first_slot;
  EXPECT_EQ(first_slot, std::to_string(slot)) << hot.output;

  auto slot_of = testing::RunCommand({SVFSCTL_PATH, "--socket", socket_, "slot", file});
  EXPECT_EQ(slot_of.status, 0) << slot_of.output;
  std::istringstream lines(slot_of.output);
  std::string line, printed;
  while (std::getline(lines, line)) {
    if (line.starts_with("slot:")) printed = line.substr(line.find_last_of(' ') + 1);
  }
  EXPECT_EQ(printed, std::to_string(slot)) << slot_of.output;

  // Sizing: in a table of 2 slots every inode shares slot 1; in a huge one, none of these 2 do.
  auto crowded = testing::RunCommand({SVFSCTL_PATH, "collisions", dir_.path(), "--slots", "2"});
  EXPECT_EQ(crowded.status, 0) << crowded.output;
  EXPECT_NE(crowded.output.find("100.00 %"), std::string::npos) << crowded.output;

  auto missing = testing::RunCommand({SVFSCTL_PATH, "--socket", dir_.path() + "/none.sock", "status"});
  EXPECT_NE(missing.status, 0);
  EXPECT_NE(missing.output.find("cannot connect to " + dir_.path() +
                                "/none.sock: No such file or directory (is svfs-versiond running?)"),
            std::string::npos)
      << missing.output;
}

// A change made on the host by a process that is not an attached daemon bumps the slot of the
// file: the one svfsd computes from the file's handle, which versiond computes from fanotify's
// FID record (no key was ever sent to versiond).
TEST_F(VersiondTest, HostChangeBumpsTheSlotDaemonsCompute) {
  // Other suites run beside this one and change files on the same filesystem, which versiond's
  // fanotify mark sees too: among the fixture's 4,096 slots one of their bumps soon lands on this
  // file's slot. With a million, "our own write does not bump" is this file's alone.
  daemon_.reset();
  daemon_ = std::make_unique<testing::VersiondProcess>(
      SVFS_VERSIOND_PATH, socket_, testing::UniqueTableName(),
      std::vector<std::string>{"--capacity", "1048575"});
  daemon_->Start();
  std::string file = dir_.path() + "/watched";
  { std::ofstream(file) << "x"; }
  struct {
    file_handle fh;
    unsigned char bytes[MAX_HANDLE_SZ];
  } h{};
  h.fh.handle_bytes = MAX_HANDLE_SZ;
  int mount_id = 0;
  if (::name_to_handle_at(AT_FDCWD, file.c_str(), &h.fh, &mount_id, 0) != 0) {
    GTEST_SKIP() << "no file handles on " << dir_.path() << ": " << std::strerror(errno);
  }
  auto client = StartClient("watcher", {dir_.path()});
  if (daemon_->log().find("fanotify unavailable") != std::string::npos ||
      daemon_->log().find("cannot watch") != std::string::npos) {
    GTEST_SKIP() << "no fanotify here:\n" << daemon_->log();
  }
  auto table = shm::VersionTable::Attach(daemon_->table(), shm::Access::kReadOnly);
  ASSERT_TRUE(table);
  const uint64_t slot = svfs_test::SlotOfPath(file, table->slot_count());
  ASSERT_NE(slot, 0u);
  uint64_t before = table->sample(slot);

  // Our own writes are the daemon's (we are an attached client): they must not bump.
  { std::ofstream(file, std::ios::app) << "own"; }
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(table->sample(slot), before);

  // Another process's write does.
  auto touch = testing::RunCommand({"/bin/sh", "-c", "echo host >> " + file});
  ASSERT_EQ(touch.status, 0);
  EXPECT_TRUE(WaitUntil([&] { return table->sample(slot) > before; }, 5s, 10ms)) << daemon_->log();
  EXPECT_GT(GetStats(socket_).host_bumps, 0u);
}

}  // namespace
}  // namespace svfs::versiond
