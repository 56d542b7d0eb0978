// POSIX (fcntl) and BSD (flock) lock contention between two processes using
// the mount. Process A is the test process, process B a forked child.
#include <sys/file.h>

#include "svfsd_fixture.h"

namespace svfs_it {
namespace {

// Commands sent to the child.
enum Cmd : int {
  kTrySetlk = 1,      // F_SETLK write lock on the overlapping range -> reply 0/errno
  kGetlk = 2,         // F_GETLK on the overlapping range -> reply l_type
  kTryDisjoint = 3,   // F_SETLK write lock on a disjoint range -> reply 0/errno
  kExit = 4,
  kSetlkw = 5,        // reply 1000 ("about to block"), then F_SETLKW -> reply 0/errno
  kTryFlockNb = 6,    // flock(LOCK_EX|LOCK_NB) -> reply 0/errno
  kGetlkPid = 7,      // F_GETLK -> reply l_pid
  kSetlkwSignalled = 8,  // reply 1000, then F_SETLKW with a SIGALRM due in 1 s -> reply 0/errno
};

void NoOpHandler(int) {}

int SetLk(int fd, int cmd, short type, off_t start, off_t len) {
  struct flock fl {};
  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  fl.l_start = start;
  fl.l_len = len;
  return ::fcntl(fd, cmd, &fl) == 0 ? 0 : errno;
}

// Child B: opens the file itself and serves commands.
int LockChild(const std::string& path, const Child::Channel& ch) {
  int fd = ::open(path.c_str(), O_RDWR);
  if (fd < 0) return 100;
  ch.Send(0);  // ready
  for (;;) {
    auto cmd = ch.Recv(20000);
    if (!cmd || *cmd == kExit) return 0;
    switch (*cmd) {
      case kTrySetlk:
        ch.Send(SetLk(fd, F_SETLK, F_WRLCK, 100, 50));
        break;
      case kTryDisjoint:
        ch.Send(SetLk(fd, F_SETLK, F_WRLCK, 1000, 10));
        break;
      case kGetlk:
      case kGetlkPid: {
        struct flock fl {};
        fl.l_type = F_WRLCK;
        fl.l_whence = SEEK_SET;
        fl.l_start = 120;
        fl.l_len = 10;
        if (::fcntl(fd, F_GETLK, &fl) != 0) {
          ch.Send(-errno);
          break;
        }
        ch.Send(*cmd == kGetlk ? fl.l_type : fl.l_pid);
        break;
      }
      case kSetlkw:
        ch.Send(1000);
        ch.Send(SetLk(fd, F_SETLKW, F_WRLCK, 100, 50));
        break;
      case kSetlkwSignalled: {
        struct sigaction action {};
        action.sa_handler = NoOpHandler;
        sigemptyset(&action.sa_mask);
        action.sa_flags = 0;  // no SA_RESTART: the interrupted wait returns EINTR
        ::sigaction(SIGALRM, &action, nullptr);
        ch.Send(1000);
        ::alarm(1);
        ch.Send(SetLk(fd, F_SETLKW, F_WRLCK, 100, 50));
        break;
      }
      case kTryFlockNb:
        ch.Send(::flock(fd, LOCK_EX | LOCK_NB) == 0 ? 0 : errno);
        break;
      default:
        return 99;
    }
  }
}

class LocksTest : public SvfsdCacheFixture {
 protected:
  void SetUp() override {
    SvfsdCacheFixture::SetUp();
    if (HasFatalFailure()) return;
    ASSERT_EQ(WriteFile(M("lockfile"), std::string(4096, 'L')), 0);
  }
};

TEST_P(LocksTest, PosixLockContention) {
  Fd a(::open(M("lockfile").c_str(), O_RDWR));
  ASSERT_TRUE(a.ok());
  // A: write lock on [0, 200).
  ASSERT_EQ(SetLk(a.get(), F_SETLK, F_WRLCK, 0, 200), 0);

  const std::string path = M("lockfile");
  Child b([&](const Child::Channel& ch) { return LockChild(path, ch); });
  ASSERT_EQ(b.Recv(10000), std::optional<int>(0)) << "child B failed to open the file";

  b.Send(kTrySetlk);
  auto r = b.Recv(10000);
  ASSERT_TRUE(r) << "no answer from B";
  EXPECT_TRUE(*r == EAGAIN || *r == EACCES) << "overlapping F_SETLK in B: " << ErrnoName(*r);

  b.Send(kGetlk);
  r = b.Recv(10000);
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, F_WRLCK) << "F_GETLK did not report A's write lock";

  b.Send(kTryDisjoint);
  r = b.Recv(10000);
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, 0) << "non-overlapping range: " << ErrnoName(*r);

  // A unlocks: B's overlapping lock now succeeds, and A is now the one blocked.
  ASSERT_EQ(SetLk(a.get(), F_SETLK, F_UNLCK, 0, 200), 0);
  b.Send(kTrySetlk);
  r = b.Recv(10000);
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, 0) << "after A unlocked: " << ErrnoName(*r);
  int again = SetLk(a.get(), F_SETLK, F_WRLCK, 120, 1);
  EXPECT_TRUE(again == EAGAIN || again == EACCES) << "A could lock a range B holds: " << ErrnoName(again);

  b.Send(kExit);
  EXPECT_EQ(b.Wait(), 0);
  // B exited: its locks are gone.
  EXPECT_EQ(SetLk(a.get(), F_SETLK, F_WRLCK, 0, 2000), 0);
}

TEST_P(LocksTest, PosixGetlkReportsHolderPid) {
  Fd a(::open(M("lockfile").c_str(), O_RDWR));
  ASSERT_TRUE(a.ok());
  ASSERT_EQ(SetLk(a.get(), F_SETLK, F_WRLCK, 0, 200), 0);
  const std::string path = M("lockfile");
  Child b([&](const Child::Channel& ch) { return LockChild(path, ch); });
  ASSERT_EQ(b.Recv(10000), std::optional<int>(0));
  b.Send(kGetlkPid);
  auto r = b.Recv(10000);
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, ::getpid()) << "F_GETLK l_pid is not the lock holder's pid";
  b.Send(kExit);
  EXPECT_EQ(b.Wait(), 0);
}

TEST_P(LocksTest, PosixLockReleasedOnClose) {
  Fd a(::open(M("lockfile").c_str(), O_RDWR));
  ASSERT_TRUE(a.ok());
  ASSERT_EQ(SetLk(a.get(), F_SETLK, F_WRLCK, 100, 10), 0);
  const std::string path = M("lockfile");
  Child b([&](const Child::Channel& ch) { return LockChild(path, ch); });
  ASSERT_EQ(b.Recv(10000), std::optional<int>(0));
  b.Send(kTrySetlk);
  auto r = b.Recv(10000);
  ASSERT_TRUE(r);
  EXPECT_TRUE(*r == EAGAIN || *r == EACCES) << ErrnoName(*r);
  a.reset();  // closing any fd of the file drops A's POSIX locks
  b.Send(kTrySetlk);
  r = b.Recv(10000);
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, 0) << "lock not released by close: " << ErrnoName(*r);
  b.Send(kExit);
  EXPECT_EQ(b.Wait(), 0);
}

TEST_P(LocksTest, BlockingSetlkwWaitsForRelease) {
  Fd a(::open(M("lockfile").c_str(), O_RDWR));
  ASSERT_TRUE(a.ok());
  ASSERT_EQ(SetLk(a.get(), F_SETLK, F_WRLCK, 0, 200), 0);
  const std::string path = M("lockfile");
  Child b([&](const Child::Channel& ch) { return LockChild(path, ch); });
  ASSERT_EQ(b.Recv(10000), std::optional<int>(0));

  b.Send(kSetlkw);
  ASSERT_EQ(b.Recv(10000), std::optional<int>(1000));
  // B must stay blocked while A holds the lock.
  auto early = b.Recv(500);
  EXPECT_FALSE(early) << "F_SETLKW returned while the lock was held: " << (early ? ErrnoName(*early) : "");
  ASSERT_EQ(SetLk(a.get(), F_SETLK, F_UNLCK, 0, 200), 0);
  auto r = b.Recv(10000);
  ASSERT_TRUE(r) << "F_SETLKW did not return within 10 s after A released the lock";
  EXPECT_EQ(*r, 0) << ErrnoName(*r);
  b.Send(kExit);
  EXPECT_EQ(b.Wait(), 0);
}

// A signal to a process waiting in F_SETLKW: the kernel sends FUSE_INTERRUPT, svfsd ends the wait
// and the call fails with EINTR while the lock is still held elsewhere.
TEST_P(LocksTest, SignalEndsABlockedSetlkwWithEintr) {
  Fd a(::open(M("lockfile").c_str(), O_RDWR));
  ASSERT_TRUE(a.ok());
  ASSERT_EQ(SetLk(a.get(), F_SETLK, F_WRLCK, 0, 200), 0);
  const std::string path = M("lockfile");
  Child b([&](const Child::Channel& ch) { return LockChild(path, ch); });
  ASSERT_EQ(b.Recv(10000), std::optional<int>(0));

  b.Send(kSetlkwSignalled);
  ASSERT_EQ(b.Recv(10000), std::optional<int>(1000));
  auto r = b.Recv(10000);
  if (!r) {
    ASSERT_EQ(SetLk(a.get(), F_SETLK, F_UNLCK, 0, 200), 0);
    r = b.Recv(10000);
    ADD_FAILURE() << "F_SETLKW still waited 9 s after its signal; after the unlock it returned "
                  << (r ? ErrnoName(*r) : "nothing");
  } else {
    EXPECT_EQ(*r, EINTR) << ErrnoName(*r);
    // The interrupted wait took nothing: B gets the lock once A lets go.
    ASSERT_EQ(SetLk(a.get(), F_SETLK, F_UNLCK, 0, 200), 0);
    b.Send(kTrySetlk);
    r = b.Recv(10000);
    ASSERT_TRUE(r);
    EXPECT_EQ(*r, 0) << ErrnoName(*r);
  }
  b.Send(kExit);
  EXPECT_EQ(b.Wait(), 0);
}

TEST_P(LocksTest, FlockContention) {
  Fd a(::open(M("lockfile").c_str(), O_RDWR));
  ASSERT_TRUE(a.ok());
  ASSERT_EQ(::flock(a.get(), LOCK_EX), 0) << ErrnoName(errno);
  const std::string path = M("lockfile");
  Child b([&](const Child::Channel& ch) { return LockChild(path, ch); });
  ASSERT_EQ(b.Recv(10000), std::optional<int>(0));
  b.Send(kTryFlockNb);
  auto r = b.Recv(10000);
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, EWOULDBLOCK) << ErrnoName(*r);
  ASSERT_EQ(::flock(a.get(), LOCK_UN), 0);
  b.Send(kTryFlockNb);
  r = b.Recv(10000);
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, 0) << "after LOCK_UN: " << ErrnoName(*r);
  // Now A is locked out.
  EXPECT_EQ(::flock(a.get(), LOCK_EX | LOCK_NB), -1);
  EXPECT_EQ(errno, EWOULDBLOCK);
  b.Send(kExit);
  EXPECT_EQ(b.Wait(), 0);
  // B's fd closed with its exit: A can lock again.
  EXPECT_EQ(::flock(a.get(), LOCK_EX | LOCK_NB), 0) << ErrnoName(errno);
}

INSTANTIATE_TEST_SUITE_P(CacheModes, LocksTest, ::testing::Values("none", "auto"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace svfs_it
