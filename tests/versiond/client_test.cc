// The client library against a real svfs-versiond: restarts (epochs, listener order, versions
// only grow), a versiond that is not there yet, and one that stops answering.
#include <signal.h>

#include <gtest/gtest.h>

#include <condition_variable>
#include <mutex>
#include <thread>

#include "shm/version_table.h"
#include "tests/versiond/test_support.h"
#include "versiond/client.h"

namespace svfs::versiond {
namespace {

using namespace std::chrono_literals;
using testing::WaitUntil;

// Records listener calls as "attached N" / "detached N".
class RecordingListener : public Client::Listener {
 public:
  void attached(const TableIdentity& table, uint64_t epoch) override {
    std::lock_guard lock(mu_);
    events_.push_back("attached " + std::to_string(epoch));
    generations_.push_back(table.generation);
  }
  void detached(uint64_t epoch) override {
    std::lock_guard lock(mu_);
    events_.push_back("detached " + std::to_string(epoch));
  }
  std::vector<std::string> events() const {
    std::lock_guard lock(mu_);
    return events_;
  }
  std::vector<uint64_t> generations() const {
    std::lock_guard lock(mu_);
    return generations_;
  }

 private:
  mutable std::mutex mu_;  // leaf lock
  std::vector<std::string> events_;
  std::vector<uint64_t> generations_;
};

TEST(VersiondClientTest, RestartBumpsEverySlotAndClientReattaches) {
  testing::TempDir dir;
  std::string socket = dir.path() + "/v.sock";
  testing::VersiondProcess daemon(SVFS_VERSIOND_PATH, socket, testing::UniqueTableName(),
                                  {"--capacity", "1024"});
  daemon.Start();
  RecordingListener listener;
  auto client = Client::Start({.socket_path = socket, .name = "restart", .retry_interval = 50ms,
                               .listener = &listener});
  ASSERT_TRUE(WaitUntil([&] { return listener.events().size() == 1; }, 2s, 10ms));
  EXPECT_EQ(listener.events(), std::vector<std::string>{"attached 1"});

  auto table = shm::VersionTable::Attach(daemon.table(), shm::Access::kReadWrite);
  ASSERT_TRUE(table) << table.error();
  for (uint64_t s = 1; s < 50; ++s) table->bump(s);  // as daemons would, for their changes
  uint64_t generation = table->header().generation.load();
  std::vector<uint64_t> before(table->slot_count());
  for (uint64_t s = 0; s < before.size(); ++s) before[s] = table->sample(s);

  daemon.Kill(SIGKILL);
  daemon.Start();  // same socket path (stale file) and table

  EXPECT_EQ(table->header().generation.load(), generation + 1);
  for (uint64_t s = 1; s < before.size(); ++s) {
    ASSERT_GE(table->sample(s), before[s] + 1) << "slot " << s << " was not bumped";
  }

  ASSERT_TRUE(WaitUntil([&] { return listener.events().size() == 3; }, 2s, 10ms)) << daemon.log();
  EXPECT_EQ(listener.events(), (std::vector<std::string>{"attached 1", "detached 1", "attached 2"}));
  EXPECT_EQ(listener.generations().back(), generation + 1);
  ASSERT_TRUE(client->table());
  EXPECT_EQ(client->table()->generation, generation + 1);
  EXPECT_EQ(testing::GetStats(socket).clients.size(), 1u);
}

TEST(VersiondClientTest, StartsWithoutVersiondAndAttachesWhenItAppears) {
  testing::TempDir dir;
  std::string socket = dir.path() + "/v.sock";
  RecordingListener listener;
  auto client = Client::Start({.socket_path = socket, .name = "early", .retry_interval = 200ms,
                               .listener = &listener});
  EXPECT_FALSE(client->attached());
  EXPECT_FALSE(client->table());

  testing::VersiondProcess daemon(SVFS_VERSIOND_PATH, socket, testing::UniqueTableName(),
                                  {"--capacity", "64"});
  daemon.Start();
  auto up = std::chrono::steady_clock::now();
  EXPECT_TRUE(WaitUntil([&] { return client->attached(); }, 1s, 10ms));
  EXPECT_LT(std::chrono::steady_clock::now() - up, 1s);
  EXPECT_TRUE(WaitUntil([&] { return listener.events().size() == 1; }, 1s, 10ms));
  EXPECT_EQ(listener.events(), std::vector<std::string>{"attached 1"});
}

// A versiond that is connected but stopped (SIGSTOP, wedged) sees no host edits: the missed
// heartbeat detaches the client, so its daemon stops trusting the table. Destroying the client
// stays prompt whether versiond is down or wedged.
TEST(VersiondClientTest, WedgedVersiondDetachesOnTheHeartbeat) {
  testing::TempDir dir;
  std::string socket = dir.path() + "/v.sock";
  {
    auto client = Client::Start({.socket_path = socket, .name = "down"});
    auto start = std::chrono::steady_clock::now();
    client.reset();
    EXPECT_LT(std::chrono::steady_clock::now() - start, 500ms);
  }
  testing::VersiondProcess daemon(SVFS_VERSIOND_PATH, socket, testing::UniqueTableName(),
                                  {"--capacity", "64"});
  daemon.Start();
  RecordingListener listener;
  auto client = Client::Start({.socket_path = socket, .name = "wedged", .retry_interval = 50ms,
                               .call_timeout = 300ms, .heartbeat_interval = 100ms,
                               .listener = &listener});
  ASSERT_TRUE(WaitUntil([&] { return client->attached(); }, 2s, 10ms));
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(listener.events(), std::vector<std::string>{"attached 1"}) << "heartbeats answered";
  ::kill(daemon.pid(), SIGSTOP);
  auto stopped = std::chrono::steady_clock::now();
  EXPECT_TRUE(WaitUntil([&] { return !client->attached(); }, 2s, 10ms));
  EXPECT_LT(std::chrono::steady_clock::now() - stopped, 1s);  // interval + timeout, not forever
  EXPECT_TRUE(WaitUntil([&] { return listener.events().size() == 2; }, 1s, 10ms));
  ::kill(daemon.pid(), SIGCONT);
  EXPECT_TRUE(WaitUntil([&] { return client->attached(); }, 2s, 10ms)) << "back once it answers";
  ::kill(daemon.pid(), SIGSTOP);
  auto start = std::chrono::steady_clock::now();
  client.reset();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 500ms);
  ::kill(daemon.pid(), SIGCONT);
}

}  // namespace
}  // namespace svfs::versiond
