// The client library against a real svfs-versiond: restarts (epochs, listener order, versions
// only grow) and a versiond that is not there yet.
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

  std::vector<Key> keys;
  for (uint64_t i = 0; i < 50; ++i) keys.push_back(Key{.dev = 9, .ino = 100 + i});
  auto grants = client->acquire(keys);
  ASSERT_TRUE(grants);
  EXPECT_EQ(grants->epoch, 1u);
  auto table = shm::VersionTable::Attach(daemon.table(), shm::Access::kReadOnly);
  ASSERT_TRUE(table) << table.error();
  uint64_t generation = table->header().generation.load();
  std::vector<uint64_t> before(table->slot_count());
  for (uint64_t s = 0; s < before.size(); ++s) before[s] = table->sample(s);

  daemon.Kill(SIGKILL);
  daemon.Start();  // same socket path (stale file) and table

  EXPECT_EQ(table->header().generation.load(), generation + 1);
  for (const Grant& g : grants->grants) {
    EXPECT_GE(table->sample(g.slot), g.version + 1) << "slot " << g.slot;
  }
  for (uint64_t s = 1; s < before.size(); ++s) {
    ASSERT_GE(table->sample(s), before[s] + 1) << "slot " << s << " was not bumped";
  }

  ASSERT_TRUE(WaitUntil([&] { return listener.events().size() == 3; }, 2s, 10ms)) << daemon.log();
  EXPECT_EQ(listener.events(), (std::vector<std::string>{"attached 1", "detached 1", "attached 2"}));
  EXPECT_EQ(listener.generations().back(), generation + 1);
  ASSERT_TRUE(client->table());
  EXPECT_EQ(client->table()->generation, generation + 1);

  // Releases of the dead session are dropped; the new session grants again, with versions
  // beyond anything handed out before.
  std::vector<uint64_t> old_slots;
  for (const Grant& g : grants->grants) old_slots.push_back(g.slot);
  client->release(1, old_slots);
  auto again = client->acquire(keys);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->epoch, 2u);
  for (size_t i = 0; i < keys.size(); ++i) {
    EXPECT_GT(again->grants[i].version, grants->grants[i].version);
  }
  EXPECT_EQ(testing::GetStats(socket).in_use, keys.size());
}

TEST(VersiondClientTest, StartsWithoutVersiondAndAttachesWhenItAppears) {
  testing::TempDir dir;
  std::string socket = dir.path() + "/v.sock";
  RecordingListener listener;
  auto client = Client::Start({.socket_path = socket, .name = "early", .retry_interval = 200ms,
                               .listener = &listener});
  EXPECT_FALSE(client->attached());
  EXPECT_FALSE(client->table());
  std::vector<Key> one = {Key{.dev = 1, .ino = 2}};
  auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(client->acquire(one));
  EXPECT_LT(std::chrono::steady_clock::now() - start, 50ms);

  testing::VersiondProcess daemon(SVFS_VERSIOND_PATH, socket, testing::UniqueTableName(),
                                  {"--capacity", "64"});
  daemon.Start();
  auto up = std::chrono::steady_clock::now();
  EXPECT_TRUE(WaitUntil([&] { return client->attached(); }, 1s, 10ms));
  EXPECT_LT(std::chrono::steady_clock::now() - up, 1s);
  EXPECT_TRUE(client->acquire(one));
  EXPECT_TRUE(WaitUntil([&] { return listener.events().size() == 1; }, 1s, 10ms));
  EXPECT_EQ(listener.events(), std::vector<std::string>{"attached 1"});
}

TEST(VersiondClientTest, DestroyIsPromptWhileVersiondIsDownOrWedged) {
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
  auto client = Client::Start({.socket_path = socket, .name = "wedged", .call_timeout = 300ms});
  ASSERT_TRUE(WaitUntil([&] { return client->attached(); }, 2s, 10ms));
  ::kill(daemon.pid(), SIGSTOP);  // stopped, not dead: calls hang
  std::vector<Key> one = {Key{.dev = 1, .ino = 2}};
  auto start = std::chrono::steady_clock::now();
  std::thread caller([&] { EXPECT_FALSE(client->acquire(one)); });
  caller.join();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1s);  // the call timeout, not forever
  start = std::chrono::steady_clock::now();
  client.reset();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 500ms);
  ::kill(daemon.pid(), SIGCONT);
}

}  // namespace
}  // namespace svfs::versiond
