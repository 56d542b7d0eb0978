// Server: the lock opcodes (GETLK, SETLK, SETLKW) and INTERRUPT of a blocked lock wait.
#include "daemon/fuse/server.h"

#include <fcntl.h>
#include <linux/fuse.h>

#include <atomic>
#include <chrono>
#include <thread>

#include <gtest/gtest.h>

#include "tests/unit/server_test_support.h"

namespace svfs::testing {
namespace {

fuse_lk_in LockIn(uint32_t type, uint32_t lk_flags = 0) {
  fuse_lk_in in{};
  in.fh = 30;
  in.owner = 0xdeadbeefcafe;
  in.lk.start = 100;
  in.lk.end = 199;
  in.lk.type = type;
  in.lk.pid = 321;
  in.lk_flags = lk_flags;
  return in;
}

TEST_F(OpTest, Getlk) {
  Reply r = send(RequestBuilder(FUSE_GETLK, kNode).add(LockIn(F_RDLCK)));
  ASSERT_EQ(r.error(), 0);
  const FakeCall& c = fake.last();
  EXPECT_EQ(c.op, "getlk");
  EXPECT_EQ(c.handle, 30u);
  EXPECT_EQ(c.owner, 0xdeadbeefcafeu);
  EXPECT_EQ(c.lock.start, 100u);
  EXPECT_EQ(c.lock.end, 199u);
  EXPECT_EQ(c.lock.type, static_cast<uint32_t>(F_RDLCK));
  EXPECT_EQ(c.lock.pid, 321u);
  ASSERT_EQ(r.payload_size(), sizeof(fuse_lk_out));
  auto lk = r.as<fuse_lk_out>().lk;
  EXPECT_EQ(lk.start, 5u);
  EXPECT_EQ(lk.end, 15u);
  EXPECT_EQ(lk.type, static_cast<uint32_t>(F_WRLCK));
  EXPECT_EQ(lk.pid, 777u);
}

TEST_F(OpTest, SetlkAndSetlkw) {
  Reply r = send(RequestBuilder(FUSE_SETLK, kNode).add(LockIn(F_WRLCK)));
  EXPECT_EQ(r.error(), 0);
  EXPECT_EQ(r.payload_size(), 0u);
  EXPECT_EQ(fake.last().op, "setlk");
  EXPECT_FALSE(fake.last().wait);
  EXPECT_EQ(fake.last().lock.type, static_cast<uint32_t>(F_WRLCK));
  EXPECT_EQ(fake.last().lock.start, 100u);
  EXPECT_EQ(fake.last().lock.end, 199u);
  EXPECT_EQ(fake.last().owner, 0xdeadbeefcafeu);

  r = send(RequestBuilder(FUSE_SETLKW, kNode).add(LockIn(F_UNLCK, FUSE_LK_FLOCK)));
  EXPECT_EQ(r.error(), 0);
  EXPECT_TRUE(fake.last().wait);
  EXPECT_EQ(fake.last().lock.type, static_cast<uint32_t>(F_UNLCK));
  EXPECT_EQ(fake.last().flags2, static_cast<uint32_t>(FUSE_LK_FLOCK));
}
TEST_F(OpTest, InterruptHasNoReply) {
  send_expect_no_reply(RequestBuilder(FUSE_INTERRUPT, 0).add(fuse_interrupt_in{.unique = 12345}));
  EXPECT_TRUE(fake.calls.empty());
  // Truncated: still no reply.
  send_expect_no_reply(RequestBuilder(FUSE_INTERRUPT, 0).raw("abc"));
}

TEST_F(OpTest, InterruptWakesBlockedSetlkw) {
  fuse::InstallInterruptSignalHandler();
  struct BlockingFs : FakeFileSystem {
    std::atomic<bool> entered{false};
    Status setlk(const fs::Context& ctx, fs::NodeId, fs::HandleId, uint64_t, const fs::FileLock&,
                 uint32_t, bool wait) override {
      entered = true;
      auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (wait && std::chrono::steady_clock::now() < deadline) {
        if (ctx.is_interrupted()) return Err(EINTR);
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      return Err(EDEADLK);
    }
  } blocking;
  fuse::Server s(blocking);
  CapturingChannel init_channel;
  s.handle(RequestBuilder(FUSE_INIT, 0).add(InitIn(7, 38, kKernelFlags)).build(), nullptr,
           init_channel);
  ASSERT_TRUE(s.initialized());

  CapturingChannel lock_channel;
  std::thread locker([&] {
    s.handle(RequestBuilder(FUSE_SETLKW, kNode, 500).add(LockIn(F_WRLCK)).build(), nullptr,
             lock_channel);
  });
  while (!blocking.entered) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  CapturingChannel interrupt_channel;
  s.handle(RequestBuilder(FUSE_INTERRUPT, 0, 501).add(fuse_interrupt_in{.unique = 500}).build(),
           nullptr, interrupt_channel);
  locker.join();
  EXPECT_TRUE(interrupt_channel.replies.empty());
  ASSERT_EQ(lock_channel.replies.size(), 1u);
  EXPECT_EQ(lock_channel.replies[0].error(), -EINTR);
  EXPECT_EQ(lock_channel.replies[0].header().unique, 500u);
}

}  // namespace
}  // namespace svfs::testing
