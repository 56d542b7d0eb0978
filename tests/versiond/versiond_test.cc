// svfs-versiond as a real process: table identity, slot sharing, release and reuse, dead
// clients, peer-credential refusal, svfsctl.
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <fstream>

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

  static Key K(uint64_t ino) { return Key{.dev = 0x801, .ino = ino}; }

  testing::TempDir dir_;
  std::string socket_;
  std::unique_ptr<testing::VersiondProcess> daemon_;
};

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

TEST_F(VersiondTest, SameKeySameSlotDifferentKeysDifferentSlots) {
  auto a = StartClient("a");
  auto b = StartClient("b");
  std::vector<Key> keys_a = {K(1), K(2), K(3)};
  std::vector<Key> keys_b = {K(2), K(4)};
  auto ga = a->acquire(keys_a);
  auto gb = b->acquire(keys_b);
  ASSERT_TRUE(ga && gb);
  ASSERT_EQ(ga->grants.size(), 3u);
  ASSERT_EQ(gb->grants.size(), 2u);
  EXPECT_EQ(ga->grants[1].slot, gb->grants[0].slot);        // inode 2, both clients
  EXPECT_EQ(ga->grants[1].version, gb->grants[0].version);  // no change in between
  std::vector<uint64_t> slots = {ga->grants[0].slot, ga->grants[1].slot, ga->grants[2].slot,
                                 gb->grants[1].slot};
  for (uint64_t s : slots) EXPECT_NE(s, 0u);
  std::sort(slots.begin(), slots.end());
  EXPECT_EQ(std::unique(slots.begin(), slots.end()), slots.end());

  auto stats = GetStats(socket_);
  EXPECT_EQ(stats.in_use, 4u);
  ASSERT_EQ(stats.clients.size(), 2u);
  EXPECT_EQ(stats.clients[0].name, "a");
  EXPECT_EQ(stats.clients[0].references, 3u);
  EXPECT_EQ(stats.clients[0].pid, static_cast<uint32_t>(::getpid()));
  EXPECT_EQ(stats.clients[1].references, 2u);
}

TEST_F(VersiondTest, ReleaseToZeroFreesAndReuseBumps) {
  auto a = StartClient("a");
  auto b = StartClient("b");
  std::vector<Key> one = {K(10)};
  auto ga = a->acquire(one);
  auto gb = b->acquire(one);
  ASSERT_TRUE(ga && gb);
  uint64_t slot = ga->grants[0].slot;
  uint64_t version = ga->grants[0].version;
  a->release(ga->epoch, std::vector<uint64_t>{slot});
  // Still held by b.
  ASSERT_TRUE(WaitUntil([&] { return GetStats(socket_).clients[0].references == 0; }, 1s, 10ms));
  EXPECT_EQ(GetStats(socket_).in_use, 1u);
  b->release(gb->epoch, std::vector<uint64_t>{slot});
  ASSERT_TRUE(WaitUntil([&] { return GetStats(socket_).in_use == 0; }, 1s, 10ms));

  std::vector<Key> other = {K(11)};
  auto gc = a->acquire(other);
  ASSERT_TRUE(gc);
  EXPECT_EQ(gc->grants[0].slot, slot);  // the freed slot is reused...
  EXPECT_GT(gc->grants[0].version, version);  // ...with a version no guest has cached

  // Releases of another epoch, or of slots not held, are ignored.
  a->release(gc->epoch + 1, std::vector<uint64_t>{slot});
  b->release(gb->epoch, std::vector<uint64_t>{slot});
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(GetStats(socket_).in_use, 1u);
}

// A child process attaches, acquires, reports, and waits to be killed.
pid_t SpawnHolder(const std::string& socket, int count, int* ready_fd) {
  int fds[2];
  EXPECT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive a failed test
    ::close(fds[0]);
    auto client = Client::Start({.socket_path = socket, .name = "doomed", .retry_interval = 20ms});
    for (int i = 0; i < 200 && !client->attached(); ++i) ::usleep(10'000);
    std::vector<Key> keys;
    for (int i = 0; i < count; ++i) keys.push_back(Key{.dev = 0x802, .ino = 1000u + i});
    auto grants = client->acquire(keys);
    char ok = grants ? 'y' : 'n';
    (void)!::write(fds[1], &ok, 1);
    ::pause();
    _exit(0);
  }
  ::close(fds[1]);
  *ready_fd = fds[0];
  return pid;
}

TEST_F(VersiondTest, KilledClientReferencesReleasedPromptly) {
  // Forked before this process starts any thread of its own.
  int ready = -1;
  pid_t child = SpawnHolder(socket_, 10, &ready);
  char ok = 0;
  bool read_ok = ::read(ready, &ok, 1) == 1;
  ::close(ready);
  if (!read_ok || ok != 'y') {
    ::kill(child, SIGKILL);  // it would otherwise wait forever, holding our stdout
    ::waitpid(child, nullptr, 0);
    FAIL() << "the child could not attach and acquire; log:\n" << daemon_->log();
  }
  auto survivor = StartClient("survivor");
  std::vector<Key> shared = {Key{.dev = 0x802, .ino = 1000}};
  ASSERT_TRUE(survivor->acquire(shared));
  auto before = GetStats(socket_);
  EXPECT_EQ(before.in_use, 10u);  // inode 1000 is shared with the survivor
  ASSERT_EQ(before.clients.size(), 2u);
  EXPECT_EQ(before.clients[0].name, "doomed");
  EXPECT_EQ(before.clients[0].pid, static_cast<uint32_t>(child));
  EXPECT_EQ(before.clients[0].references, 10u);

  auto killed_at = std::chrono::steady_clock::now();
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  bool gone = WaitUntil(
      [&] {
        auto s = GetStats(socket_);
        return s.clients.size() == 1 && s.in_use == 1;
      },
      1s, 10ms);
  auto took = std::chrono::steady_clock::now() - killed_at;
  EXPECT_TRUE(gone) << daemon_->log();
  EXPECT_LT(took, 1s);
  auto after = GetStats(socket_);
  ASSERT_EQ(after.clients.size(), 1u);
  EXPECT_EQ(after.clients[0].name, "survivor");
  EXPECT_EQ(after.clients[0].references, 1u);
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
  std::vector<Key> one = {K(1)};
  EXPECT_TRUE(client->acquire(one));
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
    std::vector<Key> one = {Key{.dev = 1, .ino = 1}};
    _exit(client->acquire(one) ? 0 : 1);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << daemon.log();
}

TEST_F(VersiondTest, SvfsctlShowsTableAndClients) {
  auto client = StartClient("smoke-client");
  std::vector<Key> keys = {K(7), K(8)};
  auto grants = client->acquire(keys);
  ASSERT_TRUE(grants);

  auto status = testing::RunCommand({SVFSCTL_PATH, "--socket", socket_, "status"});
  EXPECT_EQ(status.status, 0) << status.output;
  EXPECT_NE(status.output.find(daemon_->table()), std::string::npos) << status.output;
  EXPECT_NE(status.output.find("in use:       2"), std::string::npos) << status.output;

  auto clients = testing::RunCommand({SVFSCTL_PATH, "--socket", socket_, "clients"});
  EXPECT_EQ(clients.status, 0) << clients.output;
  EXPECT_NE(clients.output.find("smoke-client"), std::string::npos) << clients.output;
  EXPECT_NE(clients.output.find(std::to_string(::getpid())), std::string::npos) << clients.output;

  auto hot = testing::RunCommand({SVFSCTL_PATH, "--socket", socket_, "hot", "-n", "5"});
  EXPECT_EQ(hot.status, 0) << hot.output;
  EXPECT_NE(hot.output.find("8:1:7"), std::string::npos) << hot.output;  // dev 0x801 = 8:1

  auto slot = testing::RunCommand(
      {SVFSCTL_PATH, "--socket", socket_, "slot", std::to_string(grants->grants[1].slot)});
  EXPECT_EQ(slot.status, 0) << slot.output;
  EXPECT_NE(slot.output.find("ino:         8"), std::string::npos) << slot.output;

  auto missing = testing::RunCommand({SVFSCTL_PATH, "--socket", dir_.path() + "/none.sock", "status"});
  EXPECT_NE(missing.status, 0);
  EXPECT_NE(missing.output.find("cannot connect to " + dir_.path() +
                                "/none.sock: No such file or directory (is svfs-versiond running?)"),
            std::string::npos)
      << missing.output;
}

// A change made on the host by a process that is not an attached daemon bumps the slot of the
// file (fanotify FID matched against the key's handle).
TEST_F(VersiondTest, HostChangeBumpsSlot) {
  std::string file = dir_.path() + "/watched";
  { std::ofstream(file) << "x"; }
  struct stat st{};
  ASSERT_EQ(::stat(file.c_str(), &st), 0);
  struct statfs sfs{};
  ASSERT_EQ(::statfs(file.c_str(), &sfs), 0);
  struct {
    file_handle fh;
    unsigned char bytes[MAX_HANDLE_SZ];
  } h{};
  h.fh.handle_bytes = MAX_HANDLE_SZ;
  int mount_id = 0;
  if (::name_to_handle_at(AT_FDCWD, file.c_str(), &h.fh, &mount_id, 0) != 0) {
    GTEST_SKIP() << "no file handles on " << dir_.path() << ": " << std::strerror(errno);
  }
  uint32_t fsid_words[2];
  std::memcpy(fsid_words, &sfs.f_fsid, sizeof(fsid_words));
  Key key{.dev = st.st_dev, .ino = st.st_ino,
          .fsid = fsid_words[0] | (uint64_t{fsid_words[1]} << 32),
          .handle_type = h.fh.handle_type,
          .handle = std::vector<unsigned char>(h.fh.f_handle, h.fh.f_handle + h.fh.handle_bytes)};
  auto client = StartClient("watcher", {dir_.path()});
  if (daemon_->log().find("fanotify unavailable") != std::string::npos ||
      daemon_->log().find("cannot watch") != std::string::npos) {
    GTEST_SKIP() << "no fanotify here:\n" << daemon_->log();
  }
  std::vector<Key> keys = {key};
  auto grants = client->acquire(keys);
  ASSERT_TRUE(grants);
  auto table = shm::VersionTable::Attach(daemon_->table(), shm::Access::kReadOnly);
  ASSERT_TRUE(table);
  uint64_t slot = grants->grants[0].slot;
  uint64_t before = table->sample(slot);

  // Our own writes are the daemon's (we are an attached client): they must not bump.
  { std::ofstream(file, std::ios::app) << "own"; }
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(table->sample(slot), before);

  // Another process's write does.
  auto touch = testing::RunCommand({"/bin/sh", "-c", "echo host >> " + file});
  ASSERT_EQ(touch.status, 0);
  EXPECT_TRUE(WaitUntil([&] { return table->sample(slot) > before; }, 1s, 10ms)) << daemon_->log();
  EXPECT_GT(GetStats(socket_).host_bumps, 0u);
}

}  // namespace
}  // namespace svfs::versiond
