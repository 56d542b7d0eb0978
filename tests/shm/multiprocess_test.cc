// Several processes on one table: counts are exact and versions never go backwards. Children
// only attach, bump and _exit (no gtest calls), and report through their exit status.
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "shm/version_table.h"
#include "tests/shm/test_names.h"

namespace svfs::shm {
namespace {

using testing::ScopedTableName;

constexpr int kChildren = 4;
constexpr uint64_t kBumpsPerChild = 100'000;
constexpr uint64_t kSharedSlot = 1;
constexpr uint64_t kFirstOwnSlot = 2;                          // child i owns slot 2 + i
constexpr uint64_t kFirstPatternSlot = 2 + kChildren + 1;      // one unused slot in between
constexpr uint64_t kPatternSlots = 8;                          // iteration k bumps slot k % 8
constexpr uint64_t kSlotCount = kFirstPatternSlot + kPatternSlots + 4;  // a few never touched

// Child exit codes (anything but 0 fails the test; the code says why).
constexpr int kChildOk = 0;
constexpr int kChildAttachFailed = 10;
constexpr int kChildBumpWentBackwards = 11;
constexpr int kChildSampleWentBackwards = 12;
constexpr int kChildTimedOut = 13;

pid_t ForkChild(const std::function<int()>& body) {
  pid_t pid = ::fork();
  if (pid == 0) ::_exit(body());  // no destructors or atexit handlers of the parent's state
  return pid;
}

// Waits for every child; returns their exit codes (or 128 + signal).
std::vector<int> WaitAll(const std::vector<pid_t>& children) {
  std::vector<int> codes;
  for (pid_t child : children) {
    int status = 0;
    pid_t waited;
    do {
      waited = ::waitpid(child, &status, 0);
    } while (waited < 0 && errno == EINTR);
    if (waited != child) {
      codes.push_back(-1);
    } else if (WIFEXITED(status)) {
      codes.push_back(WEXITSTATUS(status));
    } else {
      codes.push_back(WIFSIGNALED(status) ? 128 + WTERMSIG(status) : -2);
    }
  }
  return codes;
}

int BumpInChild(const std::string& name, int index) {
  auto table = VersionTable::Attach(name, Access::kReadWrite);
  if (!table) return kChildAttachFailed;
  uint64_t last_shared = 0;
  for (uint64_t k = 0; k < kBumpsPerChild; ++k) {
    // Others bump the shared slot too, so each new value is larger, not necessarily by one.
    uint64_t shared = table->bump(kSharedSlot);
    if (shared <= last_shared) return kChildBumpWentBackwards;
    last_shared = shared;
    // Nobody else bumps the own slot: exactly one more every time.
    if (table->bump(kFirstOwnSlot + index) != k + 1) return kChildBumpWentBackwards;
    table->bump(kFirstPatternSlot + k % kPatternSlots);
  }
  return kChildOk;
}

TEST(VersionTableMultiProcessTest, ForkedBumpersCountExactly) {
  ScopedTableName name("fork");
  auto table = VersionTable::Create({.name = name.name(), .slot_count = kSlotCount});
  ASSERT_TRUE(table.has_value()) << table.error();

  std::vector<pid_t> children;
  for (int i = 0; i < kChildren; ++i) {
    pid_t pid = ForkChild([&name, i] { return BumpInChild(name.name(), i); });
    ASSERT_GT(pid, 0) << "fork: " << std::strerror(errno);
    children.push_back(pid);
  }
  std::vector<int> codes = WaitAll(children);
  for (int i = 0; i < kChildren; ++i) EXPECT_EQ(codes[i], kChildOk) << "child " << i;

  EXPECT_EQ(table->sample(kSharedSlot), kChildren * kBumpsPerChild);
  for (int i = 0; i < kChildren; ++i) {
    EXPECT_EQ(table->sample(kFirstOwnSlot + i), kBumpsPerChild) << "own slot of child " << i;
  }
  EXPECT_EQ(table->sample(kFirstOwnSlot + kChildren), 0u);
  for (uint64_t p = 0; p < kPatternSlots; ++p) {
    EXPECT_EQ(table->sample(kFirstPatternSlot + p), kChildren * kBumpsPerChild / kPatternSlots)
        << "pattern slot " << p;
  }
  for (uint64_t slot = kFirstPatternSlot + kPatternSlots; slot < kSlotCount; ++slot) {
    EXPECT_EQ(table->sample(slot), 0u) << slot;
  }
  EXPECT_EQ(table->sample(0), 0u);
}

// Reads `slot` until it reaches `final_value`; fails if a read is ever smaller than the previous.
int SampleUntil(const VersionTable& table, uint64_t slot, uint64_t final_value,
                std::chrono::seconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  uint64_t last = 0;
  for (uint64_t reads = 0;; ++reads) {
    uint64_t now = table.sample(slot);
    if (now < last) return kChildSampleWentBackwards;
    last = now;
    if (now == final_value) return kChildOk;
    if (reads % 1024 == 0 && std::chrono::steady_clock::now() > deadline) return kChildTimedOut;
  }
}

TEST(VersionTableMultiProcessTest, VersionsNeverGoBackwards) {
  ScopedTableName name("monotonic");
  auto table = VersionTable::Create({.name = name.name(), .slot_count = kSlotCount});
  ASSERT_TRUE(table.has_value()) << table.error();
  constexpr int kBumpers = 2;
  const uint64_t final_value = kBumpers * kBumpsPerChild;

  // A read-only sampler process, like a guest or svfsctl would be.
  pid_t sampler = ForkChild([&name, final_value] {
    auto reader = VersionTable::Attach(name.name(), Access::kReadOnly);
    if (!reader) return kChildAttachFailed;
    return SampleUntil(*reader, kSharedSlot, final_value, std::chrono::seconds(60));
  });
  ASSERT_GT(sampler, 0);
  // And a sampler thread in this process, on its own mapping.
  auto thread_mapping = VersionTable::Attach(name.name(), Access::kReadOnly);
  ASSERT_TRUE(thread_mapping.has_value()) << thread_mapping.error();
  int thread_result = -1;
  std::thread sampler_thread([&] {
    thread_result = SampleUntil(*thread_mapping, kSharedSlot, final_value, std::chrono::seconds(60));
  });

  std::vector<pid_t> bumpers;
  for (int i = 0; i < kBumpers; ++i) {
    pid_t pid = ForkChild([&name, i] { return BumpInChild(name.name(), i); });
    if (pid > 0) bumpers.push_back(pid);
  }
  std::vector<int> bumper_codes = WaitAll(bumpers);
  std::vector<int> sampler_codes = WaitAll({sampler});
  sampler_thread.join();

  ASSERT_EQ(bumpers.size(), static_cast<size_t>(kBumpers));
  for (int code : bumper_codes) EXPECT_EQ(code, kChildOk);
  EXPECT_EQ(sampler_codes[0], kChildOk) << "sampler process";
  EXPECT_EQ(thread_result, kChildOk) << "sampler thread";
  EXPECT_EQ(table->sample(kSharedSlot), final_value);
}

TEST(VersionTableMultiProcessTest, ThreadsShareOneMapping) {
  ScopedTableName name("threads");
  auto table = VersionTable::Create({.name = name.name(), .slot_count = 8});
  ASSERT_TRUE(table.has_value()) << table.error();
  constexpr int kThreads = 4;
  constexpr uint64_t kBumps = 50'000;
  std::atomic<bool> backwards{false};
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      uint64_t last = 0;
      for (uint64_t k = 0; k < kBumps; ++k) {
        uint64_t now = table->bump(1);
        if (now <= last) backwards = true;
        last = now;
        table->bump(2 + i);  // adjacent slots, one per thread
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_FALSE(backwards.load());
  EXPECT_EQ(table->sample(1), kThreads * kBumps);
  for (int i = 0; i < kThreads; ++i) EXPECT_EQ(table->sample(2 + i), kBumps);
}

}  // namespace
}  // namespace svfs::shm
