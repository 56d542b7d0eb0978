// Server: the lock opcodes (GETLK, SETLK, SETLKW) and INTERRUPT of a lock wait, whichever of the
// two is served first.
#include "daemon/fuse/server.h"

#include <fcntl.h>
#include <linux/fuse.h>
#include <sys/mman.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "common/unique_fd.h"
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


// ---------------------------------------------------------------------------------------------
// INTERRUPT and the order in which it is served
//
// The kernel sends INTERRUPT as soon as a signal reaches a process whose request is pending, so
// with several workers (or queues) the INTERRUPT can be served before its SETLKW starts waiting,
// or between the waiter's check of its flag and its blocking call. Either way the wait must end
// with EINTR; these tests give a lost interrupt a bounded time, then let the lock go so the wait
// ends and the test fails instead of hanging.

using namespace std::chrono_literals;

// How long a SETLKW may take to answer EINTR once interrupted before the test calls it lost.
constexpr auto kPrompt = 2s;

// A lock someone else holds: a memfd whose whole range another open file description has
// write-locked. SETLKW waits for it in the kernel (F_OFD_SETLKW), each wait on a description of
// its own, and honours Context::interrupted as the passthrough does: checked before blocking and
// when a signal ends the wait.
class HeldLockFs : public FakeFileSystem {
 public:
  HeldLockFs() : file_(::memfd_create("svfs-held-lock", MFD_CLOEXEC)) {
    holder_ = reopen();
    struct flock whole = WholeFile(F_WRLCK);
    held_ = holder_.valid() && ::fcntl(holder_.get(), F_OFD_SETLK, &whole) == 0;
  }
  bool held() const { return held_; }

  // The holder lets go: waiters get the lock in turn, each giving it back at once.
  void release() {
    struct flock whole = WholeFile(F_UNLCK);
    ::fcntl(holder_.get(), F_OFD_SETLK, &whole);
  }

  // Runs in the waiter after its check of the interrupted flag, just before it blocks.
  std::function<void()> before_blocking;

  Status setlk(const fs::Context& ctx, fs::NodeId, fs::HandleId, uint64_t, const fs::FileLock&,
               uint32_t, bool wait) override {
    UniqueFd own = reopen();
    if (!own) return ErrnoErr();
    struct flock lock = WholeFile(F_WRLCK);
    for (;;) {
      if (wait && ctx.is_interrupted()) return Err(EINTR);
      if (before_blocking) before_blocking();
      if (::fcntl(own.get(), wait ? F_OFD_SETLKW : F_OFD_SETLK, &lock) == 0) {
        struct flock unlock = WholeFile(F_UNLCK);
        ::fcntl(own.get(), F_OFD_SETLK, &unlock);
        return {};
      }
      if (errno != EINTR) return ErrnoErr();
    }
  }

 private:
  static struct flock WholeFile(short type) {
    struct flock fl {};
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    return fl;
  }
  UniqueFd reopen() const {
    std::string path = "/proc/self/fd/" + std::to_string(file_.get());
    return UniqueFd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
  }

  UniqueFd file_;
  UniqueFd holder_;
  bool held_ = false;
};

// Serves requests on several threads, as a transport's workers do, and collects the replies by
// unique.
class Workers {
 public:
  Workers(fuse::Server& server, unsigned count) : server_(server) {
    for (unsigned i = 0; i < count; ++i) threads_.emplace_back([this] { serve(); });
  }
  ~Workers() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    changed_.notify_all();
    for (auto& thread : threads_) thread.join();
  }

  void submit(std::vector<uint8_t> request) {
    {
      std::lock_guard lock(mutex_);
      queue_.push_back(std::move(request));
    }
    changed_.notify_all();
  }

  // The reply to `unique` if it comes by `deadline`.
  std::optional<Reply> reply(uint64_t unique, std::chrono::steady_clock::time_point deadline) {
    std::unique_lock lock(mutex_);
    changed_.wait_until(lock, deadline, [&] { return replies_.contains(unique); });
    auto it = replies_.find(unique);
    if (it == replies_.end()) return std::nullopt;
    return it->second;
  }
  // The reply to `unique`, however long it takes (the test has let the lock go).
  Reply eventual_reply(uint64_t unique) {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return replies_.contains(unique); });
    return replies_.at(unique);
  }

 private:
  void serve() {
    std::unique_lock lock(mutex_);
    for (;;) {
      changed_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;
      std::vector<uint8_t> request = std::move(queue_.front());
      queue_.pop_front();
      lock.unlock();
      CapturingChannel channel;
      server_.handle(request, nullptr, channel);
      lock.lock();
      for (Reply& r : channel.replies) replies_.emplace(r.header().unique, std::move(r));
      changed_.notify_all();
    }
  }

  fuse::Server& server_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<std::vector<uint8_t>> queue_;
  std::map<uint64_t, Reply> replies_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

std::vector<uint8_t> Setlkw(uint64_t unique) {
  return RequestBuilder(FUSE_SETLKW, kNode, unique).add(LockIn(F_WRLCK)).build();
}
// The kernel numbers an INTERRUPT after its request, with the low bit set.
std::vector<uint8_t> Interrupt(uint64_t target) {
  return RequestBuilder(FUSE_INTERRUPT, 0, target | 1).add(fuse_interrupt_in{.unique = target})
      .build();
}

void Init(fuse::Server& server) {
  CapturingChannel channel;
  server.handle(RequestBuilder(FUSE_INIT, 0).add(InitIn(7, 38, kKernelFlags)).build(), nullptr,
                channel);
  ASSERT_TRUE(server.initialized());
}

class InterruptOrderTest : public ServerTest {
 protected:
  void SetUp() override {
    ServerTest::SetUp();
    fuse::InstallInterruptSignalHandler();
    ASSERT_TRUE(lock_fs.held()) << std::strerror(errno);
    Init(lock_server);
  }

  // Expects the SETLKW `unique` to end with EINTR within kPrompt of `since`; if it does not,
  // lets the lock go so the wait ends and reports how it ended instead.
  void expect_interrupted(Workers& workers, uint64_t unique,
                          std::chrono::steady_clock::time_point since) {
    auto reply = workers.reply(unique, since + kPrompt);
    if (!reply) {
      lock_fs.release();
      reply = workers.eventual_reply(unique);
      ADD_FAILURE() << "SETLKW " << unique << " still waited " << kPrompt.count()
                    << " s after its INTERRUPT; once the lock was released it answered "
                    << reply->error();
      return;
    }
    EXPECT_EQ(reply->error(), -EINTR) << "SETLKW " << unique;
  }

  HeldLockFs lock_fs;
  fuse::Server lock_server{lock_fs};
};

TEST_F(InterruptOrderTest, InterruptServedBeforeItsSetlkwEndsTheWait) {
  Workers workers(lock_server, 4);
  auto sent = std::chrono::steady_clock::now();
  CapturingChannel channel;
  lock_server.handle(Interrupt(700), nullptr, channel);
  EXPECT_TRUE(channel.replies.empty());
  workers.submit(Setlkw(700));
  expect_interrupted(workers, 700, sent);
}

TEST_F(InterruptOrderTest, InterruptsRacingTheirSetlkwsEndEveryWait) {
  constexpr int kWaits = 40;
  Workers workers(lock_server, 4);
  auto sent = std::chrono::steady_clock::now();
  for (int i = 0; i < kWaits; ++i) {
    uint64_t unique = 1000 + 2 * i;
    // Back to back, in either order: which one a worker serves first is up to the scheduler.
    if (i % 2) {
      workers.submit(Setlkw(unique));
      workers.submit(Interrupt(unique));
    } else {
      workers.submit(Interrupt(unique));
      workers.submit(Setlkw(unique));
    }
  }
  for (int i = 0; i < kWaits; ++i) expect_interrupted(workers, 1000 + 2 * i, sent);
}

// The signal that wakes a waiter can land after the waiter checked its flag but before it
// blocks; the handler runs then and the wait that follows would never see it.
TEST_F(InterruptOrderTest, InterruptLandingJustBeforeTheWaitBlocksEndsIt) {
  std::atomic<bool> checked{false};
  lock_fs.before_blocking = [&] {
    if (checked.exchange(true)) return;
    // Stand for being descheduled between the check and the call: the interrupt lands now.
    std::this_thread::sleep_for(200ms);
  };
  Workers workers(lock_server, 2);
  workers.submit(Setlkw(800));
  while (!checked) std::this_thread::sleep_for(1ms);
  auto sent = std::chrono::steady_clock::now();
  CapturingChannel channel;
  lock_server.handle(Interrupt(800), nullptr, channel);
  expect_interrupted(workers, 800, sent);
}

// Answers SETLKW at once: EINTR if the request is interrupted when it reaches the filesystem.
struct InterruptReportingFs : FakeFileSystem {
  Status setlk(const fs::Context& ctx, fs::NodeId, fs::HandleId, uint64_t, const fs::FileLock&,
               uint32_t, bool) override {
    if (ctx.is_interrupted()) return Err(EINTR);
    return {};
  }
};

class KeptInterruptTest : public ServerTest {
 protected:
  void SetUp() override {
    ServerTest::SetUp();
    Init(reporting_server);
  }
  void interrupt(uint64_t target) {
    CapturingChannel channel;
    reporting_server.handle(Interrupt(target), nullptr, channel);
    EXPECT_TRUE(channel.replies.empty());
  }
  // The error SETLKW `unique` answers: -EINTR when an interrupt for it was kept.
  int setlkw(uint64_t unique) {
    CapturingChannel channel;
    reporting_server.handle(Setlkw(unique), nullptr, channel);
    EXPECT_EQ(channel.replies.size(), 1u);
    return channel.replies.empty() ? 1 : channel.replies[0].error();
  }
  void handle(const std::vector<uint8_t>& request) {
    CapturingChannel channel;
    reporting_server.handle(request, nullptr, channel);
  }

  InterruptReportingFs reporting_fs;
  fuse::Server reporting_server{reporting_fs};
};

TEST_F(KeptInterruptTest, KeptUntilItsRequestWaitsThenUsedOnce) {
  interrupt(900);
  EXPECT_EQ(setlkw(900), -EINTR);
  // Used up: a later wait with the same unique is not interrupted.
  EXPECT_EQ(setlkw(900), 0);
}

// The kernel may give a unique to a new request once the old one is answered, so an interrupt
// for a request that ended without waiting must not reach the next request with its unique.
TEST_F(KeptInterruptTest, DroppedWhenItsRequestEndsWithoutWaiting) {
  interrupt(902);
  handle(RequestBuilder(FUSE_GETATTR, kNode, 902).add(fuse_getattr_in{}).build());
  EXPECT_EQ(setlkw(902), 0) << "an interrupt for an answered GETATTR interrupted a later SETLKW";
  // A SETLK does not wait; its kept interrupt goes with it too.
  interrupt(904);
  handle(RequestBuilder(FUSE_SETLK, kNode, 904).add(LockIn(F_WRLCK)).build());
  EXPECT_EQ(setlkw(904), 0);
}

TEST_F(KeptInterruptTest, OnlyTheNewestAreKept) {
  const uint64_t first = 2000;
  const size_t sent = fuse::kMaxKeptInterrupts + 1;
  for (size_t i = 0; i < sent; ++i) interrupt(first + 2 * i);
  EXPECT_EQ(setlkw(first), 0) << "the oldest interrupt was kept beyond the bound";
  for (size_t i = 1; i < sent; ++i) EXPECT_EQ(setlkw(first + 2 * i), -EINTR) << i;
}

TEST_F(KeptInterruptTest, ANewSessionForgetsThem) {
  interrupt(906);
  handle(RequestBuilder(FUSE_DESTROY, 0, 2).build());
  Init(reporting_server);
  EXPECT_EQ(setlkw(906), 0);
}

TEST_F(ServerTest, KeptInterruptExpires) {
  InterruptReportingFs reporting;
  fuse::Server s(reporting, fuse::ServerOptions{.unmatched_interrupt_lifetime = 50ms});
  Init(s);
  CapturingChannel channel;
  s.handle(Interrupt(910), nullptr, channel);
  s.handle(Interrupt(912), nullptr, channel);
  s.handle(Setlkw(912), nullptr, channel);  // within its lifetime
  std::this_thread::sleep_for(100ms);
  s.handle(Setlkw(910), nullptr, channel);
  ASSERT_EQ(channel.replies.size(), 2u);
  EXPECT_EQ(channel.replies[0].error(), -EINTR);
  EXPECT_EQ(channel.replies[1].error(), 0) << "an interrupt was kept beyond its lifetime";
}

}  // namespace
}  // namespace svfs::testing
