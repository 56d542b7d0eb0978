// Shared versions with real processes: one svfs-versiond (temp socket, unique table) and two svfsd
// daemons in --cache shared serving the SAME host directory (on /var/tmp, ext4, so fanotify file
// handles work), each mounted through the host's /dev/fuse.
//
// The host kernel's FUSE client does not negotiate versions, so the daemons serve it as
// cache=none (every operation reaches svfsd); they still bump the slots of the inodes they
// change, because other daemons' guests depend on that. A slot is computed from the inode's
// identity (protocol/inode_identity.h), here as in svfsd and versiond; these tests watch how the
// counters in the table move (read-only mapping of the table) and who versiond has registered.
#include <gtest/gtest.h>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/time.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cinttypes>
#include <iostream>
#include <set>

#include "tests/shared/shared_support.h"

#ifndef SVFSD_PATH
#error "SVFSD_PATH must name the svfsd binary"
#endif
#ifndef SVFS_VERSIOND_PATH
#error "SVFS_VERSIOND_PATH must name the svfs-versiond binary"
#endif

namespace svfs_shared {
namespace {

using svfs::shm::Access;
using svfs::shm::VersionTable;

// The binaries under test; SVFS_SHARED_SVFSD / SVFS_SHARED_VERSIOND override them (e.g. to try a
// locally patched build without touching the tree).
std::string SvfsdPath() {
  const char* p = std::getenv("SVFS_SHARED_SVFSD");
  return p && *p ? p : SVFSD_PATH;
}
std::string VersiondPath() {
  const char* p = std::getenv("SVFS_SHARED_VERSIOND");
  return p && *p ? p : SVFS_VERSIOND_PATH;
}

std::string Ms(Clock::duration d) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2f ms", std::chrono::duration<double, std::milli>(d).count());
  return buf;
}

// A world with helpers; tests start the processes they need.
class SharedWorldTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ::alarm(280);  // last resort: the daemons get SIGTERM through PDEATHSIG
    std::string error;
    ASSERT_TRUE(world_.Create("t", &error)) << error;
  }

  void TearDown() override {
    if (HasFailure()) std::cerr << world_.Logs();
    world_.Destroy();
    ::alarm(0);
  }

  void StartVersiond() {
    std::string error;
    ASSERT_TRUE(world_.StartVersiond(VersiondPath(), &error)) << error;
    AttachTable();
  }
  void AttachTable() {
    auto table = VersionTable::Attach(world_.table(), Access::kReadOnly);
    ASSERT_TRUE(table.has_value()) << table.error();
    table_ = std::make_unique<VersionTable>(std::move(*table));
  }
  World::Mount* StartSvfsd(const std::string& name, DaemonSpec spec = {}) {
    std::string error;
    World::Mount* m = world_.StartSvfsd(SvfsdPath(), name, spec, &error);
    EXPECT_NE(m, nullptr) << error;
    return m;
  }

  StatsSnapshot Stats() {
    std::string error;
    auto stats = QueryStats(world_.socket(), &error);
    if (!stats) {
      ADD_FAILURE() << "versiond stats: " << error;
      return {};
    }
    return *stats;
  }

  std::string H(const std::string& rel) const { return world_.H(rel); }

  // The slot of the host inode at `rel`, computed as every daemon and versiond compute it.
  uint64_t SlotOf(const std::string& rel) {
    uint64_t slot = svfs_test::SlotOfPath(H(rel), table_->slot_count());
    EXPECT_NE(slot, 0u) << "no slot for " << H(rel) << ": " << std::strerror(errno);
    return slot;
  }

  uint64_t Sample(uint64_t slot) const { return table_->sample(slot); }

  // The versions of the slots of `rels`, read from the table.
  std::map<uint64_t, uint64_t> Snapshot(const std::vector<std::string>& rels) {
    std::map<uint64_t, uint64_t> out;
    for (const auto& rel : rels) {
      if (uint64_t slot = SlotOf(rel)) out[slot] = Sample(slot);
    }
    return out;
  }

  // versiond lists a daemon a moment before the daemon has mapped the table (and logs so):
  // tests that expect a bump by the time an operation returns wait for that.
  static bool WaitTableMapped(World::Mount* m) {
    return WaitUntil([&] { return m->process->Log().find("shared versions: attached") != std::string::npos; },
                     5000ms);
  }

  static void LstatOk(const std::string& path) {
    struct stat st {};
    ASSERT_EQ(::lstat(path.c_str(), &st), 0) << path << ": " << std::strerror(errno);
  }

  World world_;
  std::unique_ptr<VersionTable> table_;
};

// versiond plus two daemons (m1, m2) on the same directory, with --xattr.
class SharedVersionsTest : public SharedWorldTest {
 protected:
  void SetUp() override {
    SharedWorldTest::SetUp();
    if (HasFatalFailure()) return;
    StartVersiond();
    if (HasFatalFailure()) return;
    m1_ = StartSvfsd("m1");
    ASSERT_NE(m1_, nullptr);
    m2_ = StartSvfsd("m2");
    ASSERT_NE(m2_, nullptr);
    ASSERT_TRUE(WaitUntil([&] { return Stats().clients.size() == 2; }, 5000ms))
        << "both daemons should attach to versiond";
    ASSERT_TRUE(WaitTableMapped(m1_) && WaitTableMapped(m2_));
    // A sentinel that only the test process changes on the host: waiting for its bump proves
    // versiond has handled every fanotify event queued before it.
    ASSERT_EQ(::mkdir(M1("by").c_str(), 0755), 0);
    ASSERT_EQ(WriteHostFile(M1("by/file"), "bystander"), 0);
    ASSERT_EQ(::mkdir(M1("zz").c_str(), 0755), 0);
    ASSERT_EQ(WriteHostFile(M1("zz/sentinel"), "s"), 0);
    LookupBoth("zz/sentinel");
    sentinel_slot_ = SlotOf("zz/sentinel");
    sentinel_dir_slot_ = SlotOf("zz");
  }

  std::string M1(const std::string& rel) const { return m1_->path + "/" + rel; }
  std::string M2(const std::string& rel) const { return m2_->path + "/" + rel; }

  // Looks `rel` (and so every ancestor) up through both mounts, so both daemons hold its inode.
  void LookupBoth(const std::string& rel) {
    LstatOk(M1(rel));
    LstatOk(M2(rel));
  }

  // Changes the sentinel on the host and waits until versiond has bumped it: every fanotify event
  // queued before has been handled then.
  void FlushHostEvents() {
    uint64_t before = Sample(sentinel_slot_);
    static int mode_flip = 0;
    ASSERT_EQ(::chmod(H("zz/sentinel").c_str(), (mode_flip++ % 2) ? 0644 : 0640), 0);
    ASSERT_TRUE(WaitUntil([&] { return Sample(sentinel_slot_) > before; }, 2000ms, 200us))
        << "versiond did not bump the sentinel within 2 s of a host chmod";
  }

  // Looks up `involved` through both mounts, runs `op` through m1 and checks the bump set: every
  // slot of `expected` moved up by the time `op` returned (svfsd bumps before replying), and
  // no other slot of the involved inodes, the root and a bystander moved; no version decreased.
  void ExpectBumps(const std::vector<std::string>& involved, const std::vector<std::string>& expected,
                   const std::function<void()>& op) {
    for (const auto& rel : {"by", "by/file"}) LookupBoth(rel);
    for (const auto& rel : involved) LookupBoth(rel);
    std::map<uint64_t, std::string> expected_slots;
    for (const auto& rel : expected) {
      uint64_t slot = SlotOf(rel);
      ASSERT_NE(slot, 0u);
      expected_slots[slot] = rel.empty() ? "(root)" : rel;
    }
    ASSERT_NO_FATAL_FAILURE(FlushHostEvents());
    std::vector<std::string> watched = {"", "by", "by/file"};
    watched.insert(watched.end(), involved.begin(), involved.end());
    watched.insert(watched.end(), expected.begin(), expected.end());
    std::map<uint64_t, uint64_t> before = Snapshot(watched);

    op();
    if (HasFatalFailure()) return;
    // Bumped before the reply: no waiting for the expected ones.
    std::map<uint64_t, uint64_t> right_after;
    for (const auto& [slot, rel] : expected_slots) right_after[slot] = Sample(slot);

    ASSERT_NO_FATAL_FAILURE(FlushHostEvents());
    std::map<uint64_t, uint64_t> after;
    for (const auto& [slot, version] : before) after[slot] = Sample(slot);

    std::ostringstream report;
    for (const auto& [slot, version] : before) {
      if (slot == sentinel_slot_ || slot == sentinel_dir_slot_) continue;
      auto it = expected_slots.find(slot);
      std::string name = it != expected_slots.end() ? it->second : "unexpected";
      if (after[slot] != version)
        report << " slot " << slot << " (" << name << ") " << version << "->" << after[slot] << ";";
      EXPECT_GE(after[slot], version) << "slot " << slot << " (" << name << ") decreased";
      if (it != expected_slots.end()) {
        EXPECT_GT(right_after[slot], version)
            << "slot " << slot << " (" << it->second << ") not bumped by the time the op returned";
      } else {
        EXPECT_EQ(after[slot], version) << "slot " << slot << " moved but was not expected to";
      }
    }
    std::cout << "[ bumps    ] " << ::testing::UnitTest::GetInstance()->current_test_info()->name() << ":"
              << report.str() << "\n";
  }

  World::Mount* m1_ = nullptr;
  World::Mount* m2_ = nullptr;
  uint64_t sentinel_slot_ = 0;
  uint64_t sentinel_dir_slot_ = 0;
};

#define ASSERT_SYS(call) ASSERT_EQ((call), 0) << #call << ": " << std::strerror(errno)

// Makes directories and files through m1 (the daemon's own changes: versiond ignores them).
#define MKDIR(rel) ASSERT_SYS(::mkdir(M1(rel).c_str(), 0755))
#define MKFILE(rel) ASSERT_EQ(WriteHostFile(M1(rel), "data\n"), 0) << rel

// ---------------------------------------------------------------------------
// 1. Same inode, same slot in every daemon, with no slot handed out by anyone.

TEST_F(SharedVersionsTest, BothDaemonsBumpTheSlotTheInodesIdentityNames) {
  MKFILE("a");
  ASSERT_SYS(::link(H("a").c_str(), H("a-link").c_str()));
  LookupBoth("a");
  const uint64_t slot = SlotOf("a");
  EXPECT_EQ(SlotOf("a-link"), slot) << "a hard link is the same inode";
  for (const std::string& path : {M1("a"), M2("a"), M2("a-link")}) {
    const uint64_t before = Sample(slot);
    ASSERT_SYS(::chmod(path.c_str(), Sample(slot) % 2 ? 0600 : 0640));
    EXPECT_GT(Sample(slot), before) << "a chmod through " << path << " did not bump slot " << slot;
  }
  ASSERT_SYS(::rename(M1("a").c_str(), M1("renamed").c_str()));
  EXPECT_EQ(SlotOf("renamed"), slot) << "a rename keeps the inode's slot";
  StatsSnapshot stats = Stats();
  ASSERT_EQ(stats.clients.size(), 2u);
  const ClientRow* c1 = stats.FindClient(m1_->process->serving_pid());
  const ClientRow* c2 = stats.FindClient(m2_->process->serving_pid());
  ASSERT_TRUE(c1 && c2) << "each daemon is a client of its own (by pid)";
  EXPECT_EQ(c1->shared_dirs, std::vector<std::string>{world_.H("")}) << "registered for its share";
}

// ---------------------------------------------------------------------------
// 2. What each operation bumps (docs/protocol.md, "What bumps").

TEST_F(SharedVersionsTest, CreateBumpsParent) {
  MKDIR("d");
  ExpectBumps({"d"}, {"d"}, [&] {
    int fd = ::open(M1("d/new").c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
    ASSERT_GE(fd, 0) << std::strerror(errno);
    ::close(fd);
  });
}

TEST_F(SharedVersionsTest, MkdirBumpsParent) {
  MKDIR("d");
  ExpectBumps({"d"}, {"d"}, [&] { ASSERT_SYS(::mkdir(M1("d/sub").c_str(), 0755)); });
}

TEST_F(SharedVersionsTest, MknodFifoBumpsParent) {
  MKDIR("d");
  ExpectBumps({"d"}, {"d"}, [&] { ASSERT_SYS(::mkfifo(M1("d/fifo").c_str(), 0644)); });
}

TEST_F(SharedVersionsTest, SymlinkBumpsParent) {
  MKDIR("d");
  ExpectBumps({"d"}, {"d"}, [&] { ASSERT_SYS(::symlink("target", M1("d/link").c_str())); });
}

TEST_F(SharedVersionsTest, LinkBumpsNewParentAndInode) {
  MKDIR("d");
  MKDIR("d2");
  MKFILE("d/f");
  ExpectBumps({"d/f", "d2"}, {"d2", "d/f"}, [&] { ASSERT_SYS(::link(M1("d/f").c_str(), M1("d2/g").c_str())); });
}

TEST_F(SharedVersionsTest, UnlinkBumpsParentAndInode) {
  MKDIR("d");
  MKFILE("d/f");
  ExpectBumps({"d/f"}, {"d", "d/f"}, [&] { ASSERT_SYS(::unlink(M1("d/f").c_str())); });
}

TEST_F(SharedVersionsTest, RmdirBumpsParentAndDir) {
  MKDIR("d");
  MKDIR("d/sub");
  ExpectBumps({"d/sub"}, {"d", "d/sub"}, [&] { ASSERT_SYS(::rmdir(M1("d/sub").c_str())); });
}

TEST_F(SharedVersionsTest, RenameAcrossDirsBumpsBothParentsAndMovedInode) {
  MKDIR("d1");
  MKDIR("d2");
  MKFILE("d1/f");
  ExpectBumps({"d1/f", "d2"}, {"d1", "d2", "d1/f"},
              [&] { ASSERT_SYS(::rename(M1("d1/f").c_str(), M1("d2/g").c_str())); });
}

TEST_F(SharedVersionsTest, RenameOverExistingBumpsParentsMovedAndReplaced) {
  MKDIR("d1");
  MKDIR("d2");
  MKFILE("d1/f");
  MKFILE("d2/g");
  ExpectBumps({"d1/f", "d2/g"}, {"d1", "d2", "d1/f", "d2/g"},
              [&] { ASSERT_SYS(::rename(M1("d1/f").c_str(), M1("d2/g").c_str())); });
}

TEST_F(SharedVersionsTest, RenameWithinDirOverExistingBumpsDirMovedAndReplaced) {
  MKDIR("d");
  MKFILE("d/f");
  MKFILE("d/g");
  ExpectBumps({"d/f", "d/g"}, {"d", "d/f", "d/g"},
              [&] { ASSERT_SYS(::rename(M1("d/f").c_str(), M1("d/g").c_str())); });
}

TEST_F(SharedVersionsTest, ChmodBumpsInode) {
  MKDIR("d");
  MKFILE("d/f");
  ExpectBumps({"d/f"}, {"d/f"}, [&] { ASSERT_SYS(::chmod(M1("d/f").c_str(), 0600)); });
}

TEST_F(SharedVersionsTest, ChownBumpsInode) {
  MKDIR("d");
  MKFILE("d/f");
  ExpectBumps({"d/f"}, {"d/f"}, [&] { ASSERT_SYS(::chown(M1("d/f").c_str(), 1000, 1000)); });
}

TEST_F(SharedVersionsTest, TruncateBumpsInode) {
  MKDIR("d");
  MKFILE("d/f");
  ExpectBumps({"d/f"}, {"d/f"}, [&] { ASSERT_SYS(::truncate(M1("d/f").c_str(), 1)); });
}

TEST_F(SharedVersionsTest, WriteBumpsInode) {
  MKDIR("d");
  MKFILE("d/f");
  // Open first (no O_TRUNC: an open does not bump), then only the write is measured.
  int fd = ::open(M1("d/f").c_str(), O_WRONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0) << std::strerror(errno);
  ExpectBumps({"d/f"}, {"d/f"}, [&] {
    ASSERT_EQ(::pwrite(fd, "more data", 9, 5), 9) << std::strerror(errno);  // grows the file
  });
  ::close(fd);
  EXPECT_EQ(ReadWholeFile(H("d/f")), "data\nmore data");
}

TEST_F(SharedVersionsTest, UtimensBumpsInode) {
  MKDIR("d");
  MKFILE("d/f");
  ExpectBumps({"d/f"}, {"d/f"}, [&] {
    struct timespec times[2] = {{1000000, 0}, {2000000, 0}};
    ASSERT_SYS(::utimensat(AT_FDCWD, M1("d/f").c_str(), times, 0));
  });
}

TEST_F(SharedVersionsTest, SetxattrBumpsInode) {
  MKDIR("d");
  MKFILE("d/f");
  ExpectBumps({"d/f"}, {"d/f"}, [&] { ASSERT_SYS(::setxattr(M1("d/f").c_str(), "user.svfs", "v", 1, 0)); });
}

TEST_F(SharedVersionsTest, RemovexattrBumpsInode) {
  MKDIR("d");
  MKFILE("d/f");
  ASSERT_SYS(::setxattr(M1("d/f").c_str(), "user.svfs", "v", 1, 0));
  ExpectBumps({"d/f"}, {"d/f"}, [&] { ASSERT_SYS(::removexattr(M1("d/f").c_str(), "user.svfs")); });
}

// ---------------------------------------------------------------------------
// 3. Changes made on the host behind the daemons' backs: versiond bumps them (fanotify).

TEST_F(SharedVersionsTest, HostSideEditsAreBumpedWithin100ms) {
  MKDIR("w");
  MKFILE("w/f");
  MKFILE("w/gone");
  LookupBoth("w/f");
  LookupBoth("w/gone");
  const uint64_t file_slot = SlotOf("w/f");
  const uint64_t dir_slot = SlotOf("w");
  const uint64_t gone_slot = SlotOf("w/gone");
  ASSERT_TRUE(file_slot && dir_slot && gone_slot);

  struct Edit {
    const char* what;
    uint64_t slot;
    std::function<int()> run;  // 0 or errno
  };
  const std::vector<Edit> edits = {
      {"write w/f", file_slot,
       [&] { return WriteHostFile(H("w/f"), "appended\n", O_WRONLY | O_APPEND); }},
      {"chmod w/f", file_slot, [&] { return ::chmod(H("w/f").c_str(), 0600) == 0 ? 0 : errno; }},
      {"create w/new (dir)", dir_slot, [&] { return WriteHostFile(H("w/new"), "x"); }},
      {"unlink w/gone (dir)", dir_slot, [&] { return ::unlink(H("w/gone").c_str()) == 0 ? 0 : errno; }},
  };
  for (const Edit& edit : edits) {
    ASSERT_NO_FATAL_FAILURE(FlushHostEvents());
    const uint64_t before = Sample(edit.slot);
    const uint64_t gone_before = Sample(gone_slot);
    const uint64_t file_before = Sample(file_slot), dir_before = Sample(dir_slot);
    const auto start = Clock::now();
    ASSERT_EQ(edit.run(), 0) << edit.what;
    Clock::duration latency{};
    bool bumped = WaitUntil(
        [&] {
          latency = Clock::now() - start;
          return Sample(edit.slot) > before;
        },
        1000ms, 50us);
    std::cout << "[ host     ] " << edit.what << ": slot " << edit.slot << " " << before << "->"
              << Sample(edit.slot) << " after " << Ms(latency);
    if (std::string(edit.what).starts_with("unlink"))
      std::cout << " (removed inode's slot " << gone_slot << ": " << gone_before << "->" << Sample(gone_slot) << ")";
    ASSERT_NO_FATAL_FAILURE(FlushHostEvents());
    std::cout << "; settled: w/f +" << Sample(file_slot) - file_before << ", w +" << Sample(dir_slot) - dir_before
              << "\n";
    ASSERT_TRUE(bumped) << edit.what << ": slot " << edit.slot << " not bumped within 1 s";
    EXPECT_LT(latency, 100ms) << edit.what;
  }
}

// docs/protocol.md: versiond bumps "the changed inode and, for entry changes, the directory". A
// write or chmod on the host is no entry change, so the directory (whose version guards every
// cached dentry in it) must stay put, although fanotify names the parent (DFID_NAME) in
// FAN_MODIFY/FAN_ATTRIB events too.
TEST_F(SharedVersionsTest, HostDataEditsDoNotBumpTheDirectory) {
  MKDIR("w");
  MKFILE("w/f");
  LookupBoth("w/f");
  const uint64_t file_slot = SlotOf("w/f");
  const uint64_t dir_slot = SlotOf("w");
  for (int round = 0; round < 2; ++round) {
    ASSERT_NO_FATAL_FAILURE(FlushHostEvents());
    const uint64_t file_before = Sample(file_slot), dir_before = Sample(dir_slot);
    if (round == 0)
      ASSERT_EQ(WriteHostFile(H("w/f"), "appended\n", O_WRONLY | O_APPEND), 0);
    else
      ASSERT_SYS(::chmod(H("w/f").c_str(), 0600));
    ASSERT_TRUE(WaitUntil([&] { return Sample(file_slot) > file_before; }, 1000ms, 100us));
    ASSERT_NO_FATAL_FAILURE(FlushHostEvents());
    EXPECT_EQ(Sample(dir_slot), dir_before) << (round == 0 ? "host write" : "host chmod") << " of w/f bumped w";
  }
}

// versiond ignores the fanotify events of attached daemons: they bump their own changes before
// replying, and a second bump would only cost guests a revalidation. (Checked on the slots, not
// on versiond's host-bump counter: it watches the whole filesystem, which other tests share.)
TEST_F(SharedVersionsTest, EditsThroughAMountAreNotBumpedAgainByVersiond) {
  MKDIR("w");
  MKFILE("w/f");
  MKFILE("w/gone");
  LookupBoth("w/f");
  LookupBoth("w/gone");
  const uint64_t file_slot = SlotOf("w/f");
  const uint64_t dir_slot = SlotOf("w");
  struct Op {
    const char* what;
    std::function<void()> run;
  };
  const std::vector<Op> ops = {
      {"write w/f through m1", [&] { ASSERT_EQ(WriteHostFile(M1("w/f"), "m1\n", O_WRONLY | O_APPEND), 0); }},
      {"chmod w/f through m1", [&] { ASSERT_SYS(::chmod(M1("w/f").c_str(), 0600)); }},
      {"create w/new through m2", [&] { ASSERT_EQ(WriteHostFile(M2("w/new"), "m2\n"), 0); }},
      {"unlink w/gone through m2", [&] { ASSERT_SYS(::unlink(M2("w/gone").c_str())); }},
      {"rename w/new through m1", [&] { ASSERT_SYS(::rename(M1("w/new").c_str(), M1("w/renamed").c_str())); }},
  };
  for (const Op& op : ops) {
    ASSERT_NO_FATAL_FAILURE(FlushHostEvents());
    const uint64_t file_before = Sample(file_slot), dir_before = Sample(dir_slot);
    op.run();
    const uint64_t file_after = Sample(file_slot), dir_after = Sample(dir_slot);
    EXPECT_TRUE(file_after > file_before || dir_after > dir_before) << op.what << ": no bump by the daemon";
    ASSERT_NO_FATAL_FAILURE(FlushHostEvents());
    EXPECT_EQ(Sample(file_slot), file_after) << op.what << ": versiond bumped w/f again";
    EXPECT_EQ(Sample(dir_slot), dir_after) << op.what << ": versiond bumped w again";
  }
}

// ---------------------------------------------------------------------------
// 4. One daemon dies: versiond deregisters it; the other mount keeps working.

TEST_F(SharedVersionsTest, KilledDaemonIsDeregisteredAndTheOtherKeepsBumping) {
  MKFILE("a");
  LookupBoth("a");
  const uint64_t slot = SlotOf("a");
  const pid_t dead_pid = m2_->process->serving_pid();

  const auto start = Clock::now();
  m2_->process->Kill(SIGKILL);
  Clock::duration released_after{};
  bool released = WaitUntil(
      [&] {
        StatsSnapshot stats = Stats();
        released_after = Clock::now() - start;
        return stats.clients.size() == 1 && stats.FindClient(dead_pid) == nullptr;
      },
      5000ms, 5ms);
  std::cout << "[ kill -9  ] deregistered after " << Ms(released_after) << "\n";
  ASSERT_TRUE(released) << "versiond still lists the dead daemon";
  EXPECT_LT(released_after, 1000ms);
  AbortAndDetach(m2_->path);
  EXPECT_FALSE(IsMountPoint(m2_->path));

  // The other mount keeps working, and keeps bumping.
  ASSERT_EQ(WriteHostFile(M1("after"), "still here\n"), 0);
  EXPECT_EQ(ReadWholeFile(M1("after")), "still here\n");
  const uint64_t before = Sample(slot);
  ASSERT_SYS(::chmod(M1("a").c_str(), 0600));
  EXPECT_GT(Sample(slot), before);
  struct stat st {};
  ASSERT_SYS(::stat(M1("a").c_str(), &st));
  EXPECT_EQ(st.st_mode & 07777, 0600u);
}

// ---------------------------------------------------------------------------
// 5. versiond dies and comes back on the same table.

TEST_F(SharedVersionsTest, VersiondRestartBumpsEverySlotAndDaemonsReattach) {
  MKDIR("d");
  MKFILE("d/b");
  MKFILE("a");
  LookupBoth("a");
  LookupBoth("d/b");
  const uint64_t a_slot = SlotOf("a");
  ASSERT_NE(a_slot, 0u);
  ASSERT_NO_FATAL_FAILURE(FlushHostEvents());
  const uint64_t generation = table_->header().generation.load();
  std::array<uint8_t, 16> uuid;
  std::memcpy(uuid.data(), table_->header().uuid, 16);
  world_.versiond()->Kill(SIGKILL);
  // Each daemon bumps every slot when it loses versiond; the snapshot is taken after that, so
  // what it checks below is the restart's own bump.
  ASSERT_TRUE(WaitUntil(
      [&] {
        return m1_->process->Log().find("lost svfs-versiond") != std::string::npos &&
               m2_->process->Log().find("lost svfs-versiond") != std::string::npos;
      },
      5000ms));
  const std::map<uint64_t, uint64_t> before = Snapshot({"", "d", "d/b", "a", "zz", "zz/sentinel"});
  std::string error;
  const auto start = Clock::now();
  ASSERT_TRUE(world_.StartVersiond(VersiondPath(), &error)) << error;
  AttachTable();
  EXPECT_EQ(std::memcmp(table_->header().uuid, uuid.data(), 16), 0) << "restarted on another table";
  EXPECT_EQ(table_->header().generation.load(), generation + 1);
  EXPECT_EQ(Stats().generation, generation + 1);

  std::ostringstream deltas;
  for (const auto& [slot, version] : before) {
    uint64_t now = Sample(slot);
    deltas << " " << slot << ":+" << (now - version);
    EXPECT_GT(now, version) << "slot " << slot << " was not bumped by the restart";
  }
  std::cout << "[ restart  ] generation " << generation << "->" << generation + 1 << "; deltas" << deltas.str()
            << "\n";

  Clock::duration reattach{};
  bool both = WaitUntil(
      [&] {
        reattach = Clock::now() - start;
        return Stats().clients.size() == 2;
      },
      5000ms, 5ms);
  std::cout << "[ restart  ] both daemons re-attached " << Ms(reattach) << " after the restart began\n";
  ASSERT_TRUE(both) << "the daemons did not re-attach within 5 s";

  // Changes bump the same slots as before: nothing was handed out, nothing to hand out again.
  for (int round = 0; round < 2; ++round) {
    const std::string& path = round == 0 ? M1("a") : M2("a");
    uint64_t v = Sample(a_slot);
    ASSERT_SYS(::chmod(path.c_str(), round == 0 ? 0600 : 0644));
    EXPECT_GT(Sample(a_slot), v) << "no bump after re-attach through " << path;
  }
  uint64_t b_slot = SlotOf("d/b");
  uint64_t v = Sample(b_slot);
  ASSERT_EQ(WriteHostFile(H("d/b"), "host\n", O_WRONLY | O_APPEND), 0);
  EXPECT_TRUE(WaitUntil([&] { return Sample(b_slot) > v; }, 1000ms, 100us))
      << "the restarted versiond does not bump host-side changes";
}

// Without versiond nobody sees host edits: each daemon, on losing it, moves every slot once, so
// guests stop trusting what they cached (they are served unversioned until it is back).
TEST_F(SharedVersionsTest, LosingVersiondBumpsEverySlot) {
  const uint64_t untouched = table_->slot_count() - 1;  // a slot no test file uses, likely
  const uint64_t before = Sample(untouched);
  world_.versiond()->Kill(SIGKILL);
  EXPECT_TRUE(WaitUntil([&] { return Sample(untouched) >= before + 2; }, 5000ms, 5ms))
      << "both daemons should bump every slot once they lose versiond: " << before << "->"
      << Sample(untouched);
  EXPECT_TRUE(WaitUntil([&] { return m1_->process->Log().find("lost svfs-versiond") != std::string::npos; },
                        2000ms));
}

// Two inodes on one slot (a table of two slots: every inode on slot 1) cost revalidations, never
// staleness: a change to either moves the version a guest caching the other checks.
TEST_F(SharedWorldTest, InodesSharingASlotInvalidateEachOther) {
  std::string error;
  ASSERT_TRUE(world_.StartVersiond(VersiondPath(), &error, /*capacity=*/2)) << error;
  AttachTable();
  World::Mount* m = StartSvfsd("m1");
  ASSERT_NE(m, nullptr);
  ASSERT_TRUE(WaitUntil([&] { return Stats().clients.size() == 1; }, 5000ms));
  ASSERT_TRUE(WaitTableMapped(m));
  ASSERT_EQ(WriteHostFile(m->path + "/a", "a"), 0);
  ASSERT_EQ(WriteHostFile(m->path + "/b", "b"), 0);
  ASSERT_EQ(SlotOf("a"), 1u);
  ASSERT_EQ(SlotOf("b"), 1u);
  uint64_t before = Sample(SlotOf("b"));
  ASSERT_SYS(::chmod((m->path + "/a").c_str(), 0600));  // through the daemon
  EXPECT_GT(Sample(SlotOf("b")), before) << "a change to a must move what b's cache checks";
  before = Sample(SlotOf("a"));
  ASSERT_EQ(WriteHostFile(H("b"), "host edit", O_WRONLY | O_APPEND), 0);  // on the host: fanotify
  EXPECT_TRUE(WaitUntil([&] { return Sample(SlotOf("a")) > before; }, 1000ms, 100us))
      << "a host edit of b must move what a's cache checks";
}

// ---------------------------------------------------------------------------
// 6. svfsd starts while versiond is down; attaches when it comes up.

TEST_F(SharedWorldTest, DaemonServesWithoutVersiondAndAttachesLater) {
  const auto start = Clock::now();
  World::Mount* m = StartSvfsd("m1");
  ASSERT_NE(m, nullptr);
  std::cout << "[ no vd    ] mounted " << Ms(Clock::now() - start) << " after start\n";
  std::string log = m->process->Log();
  EXPECT_TRUE(log.find("not reachable") != std::string::npos || log.find("cannot reach") != std::string::npos)
      << "svfsd should log that versiond is unreachable:\n"
      << log;

  const std::string f = m->path + "/f";
  ASSERT_EQ(WriteHostFile(f, "served unversioned\n"), 0);
  EXPECT_EQ(ReadWholeFile(f), "served unversioned\n");
  EXPECT_EQ(ReadWholeFile(H("f")), "served unversioned\n");
  struct stat st {};
  ASSERT_SYS(::stat(f.c_str(), &st));
  EXPECT_EQ(st.st_size, 19);

  StartVersiond();
  const auto up = Clock::now();
  Clock::duration attach_latency{};
  bool attached = WaitUntil(
      [&] {
        attach_latency = Clock::now() - up;
        auto stats = QueryStats(world_.socket());
        return stats && stats->FindClient(m->process->serving_pid()) != nullptr;
      },
      5000ms, 5ms);
  std::cout << "[ no vd    ] attached " << Ms(attach_latency) << " after versiond answered\n";
  ASSERT_TRUE(attached) << "svfsd did not attach within 5 s of versiond coming up";
  EXPECT_LT(attach_latency, 2000ms);

  ASSERT_SYS(::stat(f.c_str(), &st));
  uint64_t slot = SlotOf("f");
  ASSERT_NE(slot, 0u);
  uint64_t v = Sample(slot);
  ASSERT_SYS(::chmod(f.c_str(), 0600));
  // versiond lists the daemon a moment before the daemon has mapped the table; a change in that
  // moment is covered by the bump of every slot that follows the mapping.
  EXPECT_TRUE(WaitUntil([&] { return Sample(slot) > v; }, 2000ms, 1ms)) << "no bump after the late attach";
}

// ---------------------------------------------------------------------------
// 7. Ordinary POSIX behaviour under --cache shared (the full suites run in the other modes).

TEST_F(SharedVersionsTest, PosixSmokeThroughBothMounts) {
  MKDIR("s");
  const std::string data = "hello shared versions\n";
  ASSERT_EQ(WriteHostFile(M1("s/f"), data), 0);
  EXPECT_EQ(ReadWholeFile(M1("s/f")), data);
  EXPECT_EQ(ReadWholeFile(M2("s/f")), data) << "the other mount sees the new file at once";

  ASSERT_EQ(WriteHostFile(M2("s/f"), "rewritten\n"), 0);
  EXPECT_EQ(ReadWholeFile(M1("s/f")), "rewritten\n");
  struct stat st {};
  ASSERT_SYS(::stat(M1("s/f").c_str(), &st));
  EXPECT_EQ(st.st_size, 10);

  ASSERT_SYS(::rename(M1("s/f").c_str(), M1("s/g").c_str()));
  EXPECT_NE(::stat(M2("s/f").c_str(), &st), 0);
  EXPECT_EQ(errno, ENOENT);
  EXPECT_EQ(ReadWholeFile(M2("s/g")), "rewritten\n");

  std::set<std::string> names;
  if (DIR* dir = ::opendir(M2("s").c_str())) {
    while (dirent* e = ::readdir(dir)) names.insert(e->d_name);
    ::closedir(dir);
  }
  EXPECT_EQ(names, (std::set<std::string>{".", "..", "g"}));

  ASSERT_SYS(::unlink(M2("s/g").c_str()));
  EXPECT_NE(::stat(M1("s/g").c_str(), &st), 0);
  EXPECT_EQ(errno, ENOENT);
  ASSERT_SYS(::rmdir(M1("s").c_str()));
  EXPECT_NE(::lstat(H("s").c_str(), &st), 0);
}

}  // namespace
}  // namespace svfs_shared
