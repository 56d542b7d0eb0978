// svfsd-only vhost-user tests: what a hostile guest could reach on the host (device nodes,
// fifos, fds and references kept), guest memory layouts, the socket, lock waits and groups.

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/files.h"
#include "tests/support/process.h"
#include "tests/support/wait.h"
#include "tests/vhost/frontend.h"
#include "tests/vhost/fuse_client.h"
#include "tests/vhost/backend_session.h"

namespace svfs::vhost {
namespace {

// ---------------------------------------------------------------------------------------------
// Issue 12: what a hostile guest could reach through svfsd (each fails without its fix).

// MKNOD of `name` as a character device `major:minor` in the root; returns the node id.
std::uint64_t MakeCharDevice(FuseClient& c, std::string_view name, unsigned major, unsigned minor) {
  fuse_mknod_in in{};
  in.mode = S_IFCHR | 0666;
  in.rdev = static_cast<std::uint32_t>(makedev(major, minor));
  std::string n(name);
  FuseReply r = c.send(c.make(FUSE_MKNOD, FUSE_ROOT_ID,
                              {Bytes(in), std::span(reinterpret_cast<const std::uint8_t*>(n.c_str()),
                                                    n.size() + 1)},
                              4096));
  if (r.error() == -EPERM) return 0;  // no CAP_MKNOD here (a user namespace)
  if (r.error() != 0) throw std::runtime_error("MKNOD " + n + ": error " + std::to_string(r.error()));
  return r.as<fuse_entry_out>()->nodeid;
}

// A device node the guest made (as guest root) is never opened on the host: CREATE without
// O_EXCL of its name and OPEN get ENXIO, and SYNCFS on it syncs without opening it. Major 60
// is for local/experimental use and never handed out dynamically, so with no driver on it an
// open that reached the host's device layer answers ENXIO; /dev/urandom's 1:9 shows what CREATE
// used to return.
TEST(VhostSvfsdTest, GuestDeviceNodesAreNeverOpenedOnTheHost) {
  SVFS_REQUIRE_BACKEND(Backend::kSvfsd);
  if (::geteuid() != 0) GTEST_SKIP() << "MKNOD of a device needs root";
  TempDir tmp;
  auto session = SvfsdSession(tmp, 1);
  FuseClient& c = session->client();
  const std::uint64_t urandom = MakeCharDevice(c, "urandom", 1, 9);
  if (urandom == 0) GTEST_SKIP() << "MKNOD of a device refused (EPERM): no CAP_MKNOD";
  FuseReply created = c.create(FUSE_ROOT_ID, "urandom", S_IFREG | 0644, O_RDWR | O_CREAT);
  EXPECT_EQ(created.error(), -ENXIO) << "CREATE of an existing device node opened it";
  EXPECT_EQ(c.open(urandom, O_RDWR).error(), -ENXIO);

  ASSERT_EQ(ReadFile("/proc/devices").find("\n 60 "), std::string::npos)
      << "char major 60 has a driver on this host: the SYNCFS check would not tell";
  const std::uint64_t unregistered = MakeCharDevice(c, "nodriver", 60, 0);
  FuseReply synced = c.send(c.make(FUSE_SYNCFS, unregistered, {Bytes(fuse_syncfs_in{})}, 4096));
  EXPECT_EQ(synced.error(), 0) << "SYNCFS opened the device node (ENXIO is its driver's answer)";
  // Regular files are still created and opened over an existing name.
  ASSERT_EQ(c.create(FUSE_ROOT_ID, "plain", S_IFREG | 0644, O_RDWR | O_CREAT).error(), 0);
  EXPECT_EQ(c.create(FUSE_ROOT_ID, "plain", S_IFREG | 0644, O_RDWR | O_CREAT).error(), 0);
  EXPECT_EQ(c.create(FUSE_ROOT_ID, "plain", S_IFREG | 0644, O_RDWR | O_CREAT | O_EXCL).error(),
            -EEXIST);
}

// CREATE of an existing fifo for reading used to block in openat (no writer ever comes), which
// also kept the queue from stopping. Now it is refused at once and the queue keeps serving.
TEST(VhostSvfsdTest, CreateOfAnExistingFifoDoesNotBlock) {
  SVFS_REQUIRE_BACKEND(Backend::kSvfsd);
  TempDir tmp;
  auto session = SvfsdSession(tmp, 1);
  FuseClient& c = session->client();
  ASSERT_EQ(::mkfifo((session->shared() / "fifo").c_str(), 0666), 0);
  FuseReply r = c.create(FUSE_ROOT_ID, "fifo", S_IFREG | 0644, O_RDONLY | O_CREAT);
  ASSERT_TRUE(r.answered) << "CREATE of an existing fifo blocked";
  EXPECT_EQ(r.error(), -ENXIO);
  EXPECT_EQ(c.getattr(FUSE_ROOT_ID).error(), 0);
}

// How many descriptors process `pid` holds.
long OpenFdCount(pid_t pid) {
  const fs::path fds = "/proc/" + std::to_string(pid) + "/fd";
  return std::distance(fs::directory_iterator(fds), fs::directory_iterator{});
}

// GETLK by an owner that holds no lock answers from a temporary description: 1000 owners asking
// leave svfsd's fd count where it was (it grew by one fd per owner).
TEST(VhostSvfsdTest, GetlkByNewOwnersKeepsNoFds) {
  SVFS_REQUIRE_BACKEND(Backend::kSvfsd);
  TempDir tmp;
  auto session = SvfsdSession(tmp, 1);
  FuseClient& c = session->client();
  LockedFile file(c);
  auto count_fds = [&] { return OpenFdCount(session->process().serving_pid()); };
  ASSERT_EQ(c.send(file.request(FUSE_SETLK, 1, F_WRLCK)).error(), 0);
  const auto before = count_fds();
  for (std::uint64_t owner = 100; owner < 1100; ++owner) {
    FuseReply r = c.send(file.request(FUSE_GETLK, owner, F_RDLCK));
    ASSERT_EQ(r.error(), 0);
    // Owner 1's write lock conflicts with every other owner's read.
    ASSERT_EQ(r.as<fuse_lk_out>()->lk.type, static_cast<std::uint32_t>(F_WRLCK));
  }
  EXPECT_LE(count_fds(), before + 2) << "GETLK kept descriptors for owners that never locked";
}

// A READDIRPLUS reply that does not fit the guest's buffer is answered EIO, and the lookups it
// made are undone: the guest never learns those nodes, so it would never FORGET them (each held
// an O_PATH descriptor in svfsd, without bound).
TEST(VhostSvfsdTest, ReaddirplusTooLargeForItsBufferKeepsNoReferences) {
  SVFS_REQUIRE_BACKEND(Backend::kSvfsd);
  TempDir tmp;
  auto session = SvfsdSession(tmp, 1);
  for (int i = 0; i < 50; ++i) std::ofstream(tmp.path() / "shared" / ("f" + std::to_string(i)));
  FuseClient& c = session->client();
  auto count_fds = [&] { return OpenFdCount(session->process().pid()); };
  FuseReply dir = c.opendir(FUSE_ROOT_ID);
  ASSERT_EQ(dir.error(), 0);
  const std::uint64_t fh = dir.as<fuse_open_out>()->fh;
  const auto before = count_fds();
  fuse_read_in in{};
  in.fh = fh;
  in.size = 64 * 1024;  // room for every entry, but the buffer below has room for one
  FuseReply r = c.send(c.make(FUSE_READDIRPLUS, FUSE_ROOT_ID, {Bytes(in)}, 256));
  EXPECT_EQ(r.error(), -EIO);
  EXPECT_LE(count_fds(), before + 2) << "READDIRPLUS kept references the guest never received";
  // The same listing into a buffer that fits still works.
  FuseReply listed = c.readdirplus(FUSE_ROOT_ID, fh, 0, 64 * 1024);
  ASSERT_EQ(listed.error(), 0);
  EXPECT_EQ(FuseClient::parse_direntplus(listed.body()).size(), 52u);  // with . and ..
}

// Guest memory in regions adjacent in guest-physical space (hot-plugged DIMMs): a buffer that
// crosses from one region into the next is one guest buffer and is served as such, split into
// one host piece per region. It used to be answered EIO as "outside guest memory".
TEST(VhostSvfsdTest, BuffersSpanningAdjacentMemoryRegionsAreServed) {
  SVFS_REQUIRE_BACKEND(Backend::kSvfsd);
  TempDir tmp;
  FrontendOptions opts;
  opts.memory_size = 16u << 20;
  opts.memory_regions = 2;
  Session s(Backend::kSvfsd, tmp, opts);
  FuseClient& c = s.client();
  ASSERT_EQ(c.init().error(), 0);
  FuseReply created = c.create(FUSE_ROOT_ID, "spanning", S_IFREG | 0644, O_RDWR | O_CREAT);
  ASSERT_EQ(created.error(), 0);
  const auto node = created.as<fuse_entry_out>()->nodeid;
  fuse_open_out open{};
  std::memcpy(&open, created.body().data() + sizeof(fuse_entry_out), sizeof(open));

  GuestMemory& mem = s.fe().memory();
  const std::uint64_t boundary = opts.memory_size / 2;
  // Moves the allocator so the next 64-aligned buffer starts `before` bytes short of the boundary.
  auto start_short_of_boundary = [&](std::uint64_t before) {
    std::uint64_t next = (mem.mark() + 63) & ~std::uint64_t{63};
    ASSERT_LT(next, boundary - before);
    mem.alloc(boundary - before - next, 1);
  };
  std::vector<std::uint8_t> data(8192);
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<std::uint8_t>(i * 7 + 3);

  const std::size_t mark = mem.mark();
  start_short_of_boundary(128);  // the WRITE request (headers and data) crosses the boundary
  FuseReply written = c.write(node, open.fh, 0, data);
  ASSERT_EQ(written.error(), 0);
  EXPECT_EQ(written.as<fuse_write_out>()->size, data.size());
  EXPECT_EQ(ReadFile(tmp.path() / "shared" / "spanning"),
            std::string(data.begin(), data.end()));
  mem.release(mark);

  start_short_of_boundary(256);  // the 80-byte request fits; the reply buffer crosses
  FuseReply read = c.read(node, open.fh, 0, static_cast<std::uint32_t>(data.size()));
  ASSERT_EQ(read.error(), 0);
  EXPECT_TRUE(std::ranges::equal(read.body(), data)) << "READ data differs across the boundary";
  mem.release(mark);
}

// A frontend that shrinks the guest memory file under svfsd used to kill it with SIGBUS on its
// next access to the lost part. Now such accesses complete on private zero pages: the chain is
// still used, svfsd keeps serving, and it says what happened when the memory goes.
TEST(VhostSvfsdTest, GuestMemoryShrunkByTheFrontendDoesNotKillSvfsd) {
  SVFS_REQUIRE_BACKEND(Backend::kSvfsd);
  TempDir tmp;
  auto session = SvfsdSession(tmp, 1);
  FuseClient& c = session->client();
  FuseReply created = c.create(FUSE_ROOT_ID, "f", S_IFREG | 0644, O_RDWR | O_CREAT);
  ASSERT_EQ(created.error(), 0);
  const auto node = created.as<fuse_entry_out>()->nodeid;
  fuse_open_out open{};
  std::memcpy(&open, created.body().data() + sizeof(fuse_entry_out), sizeof(open));
  ASSERT_EQ(c.write(node, open.fh, 0, std::vector<std::uint8_t>(8192, 'x')).error(), 0);

  GuestMemory& mem = session->fe().memory();
  const std::uint64_t keep = mem.size() / 2;
  const std::size_t mark = mem.mark();
  mem.alloc(keep - 128 - mem.mark(), 1);  // the request below `keep`, its reply buffer above
  FuseClient::Placed read = c.place(c.read_request(node, open.fh, 0, 8192), /*publish=*/true);
  ASSERT_GE(read.reply, keep);
  ASSERT_EQ(::ftruncate(mem.fd(), static_cast<off_t>(keep)), 0);
  session->fe().queue(1).kick();
  // Only the used ring is read here: this process would fault on the lost part too.
  auto used = session->fe().queue(1).collect(1, 5000ms);
  ASSERT_EQ(used.size(), 1u) << "the chain whose reply buffer was lost never came back";
  EXPECT_TRUE(session->process().Running()) << session->process().ExitDescription();
  ASSERT_EQ(::ftruncate(mem.fd(), static_cast<off_t>(mem.size())), 0);
  mem.release(mark);
  EXPECT_EQ(c.getattr(FUSE_ROOT_ID).error(), 0);
  session.reset();  // disconnect: svfsd releases the memory and reports the damage
  EXPECT_NE(ReadFile(tmp.path() / "backend.log").find("shrank the guest memory"), std::string::npos);
}

// The vhost-user socket is the launcher's alone (whoever connects acts as root on the share),
// and a symlink planted at <socket>.pid is refused, not followed.
TEST(VhostSvfsdTest, SocketIsPrivateAndPidFileSymlinksAreRefused) {
  SVFS_REQUIRE_BACKEND(Backend::kSvfsd);
  TempDir tmp;
  {
    auto session = SvfsdSession(tmp, 1);
    struct stat st {};
    ASSERT_EQ(::lstat((tmp.path() / "vhost.sock").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0600u) << "socket mode " << std::oct << (st.st_mode & 07777);
  }
  const fs::path victim = tmp.path() / "victim";
  { std::ofstream(victim) << "keep me\n"; }
  fs::create_directory(tmp.path() / "shared2");
  const fs::path socket = tmp.path() / "planted.sock";
  fs::create_symlink(victim, socket.string() + ".pid");
  BackendProcess p(BackendCommand(Backend::kSvfsd, socket, tmp.path() / "shared2"),
                   tmp.path() / "planted.log");
  EXPECT_TRUE(p.WaitExit(5s)) << "svfsd served with a planted .pid symlink";
  EXPECT_EQ(ReadFile(victim), "keep me\n") << "the .pid symlink was followed";
  EXPECT_FALSE(fs::exists(socket));
}


// A lock wait sent on the hiprio queue used to be served by the queue thread itself: it held
// the queue (FORGETs stalled behind it) and GET_VRING_BASE waited for good. Now every SETLKW,
// whatever its queue, gets a thread of its own: the hiprio queue keeps serving, and a stop
// interrupts the wait (EINTR) and is answered.
TEST(VhostSvfsdTest, LockWaitOnTheHiprioQueueDoesNotHoldIt) {
  SVFS_REQUIRE_BACKEND(Backend::kSvfsd);
  LockHeldSession held;
  Session& s = *held.session;
  FuseClient& c = s.client();
  FuseRequest wait = held.file.request(FUSE_SETLKW, 2, F_WRLCK, /*queue=*/0);
  std::uint64_t rep = c.place(wait, /*publish=*/true).reply;
  s.fe().queue(0).kick();
  std::this_thread::sleep_for(200ms);  // let the lock wait start
  EXPECT_EQ(c.send(c.getattr_request(FUSE_ROOT_ID, /*queue=*/0), 2000ms).error(), 0)
      << "the hiprio queue stalled behind a lock wait";
  EXPECT_EQ(ReplyHeaderAt(s.fe().memory(), rep).unique, 0u) << "the lock wait ended by itself";
  auto asked = std::chrono::steady_clock::now();
  s.fe().send_raw(msg::kGetVringBase, msg::kFlagVersion, Payload(std::uint32_t{0}, std::uint32_t{0}));
  auto reply = s.fe().wait_reply(msg::kGetVringBase, 3000ms);
  ASSERT_TRUE(reply) << "GET_VRING_BASE of the hiprio queue hung behind a lock wait";
  std::cerr << "GET_VRING_BASE answered after "
            << std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - asked).count()
            << " ms\n";
  EXPECT_EQ(ReplyHeaderAt(s.fe().memory(), rep).error, -EINTR);
  // The request queue still serves.
  EXPECT_EQ(c.getattr(FUSE_ROOT_ID).error(), 0);
}


// Two lock waits with the same unique (a guest reusing it): both must stay interruptible, so a
// stop of their queue ends them both (the second used to replace the first in the registry,
// leaving the first wait beyond any interrupt and the stop waiting for good).
TEST(VhostSvfsdTest, StopEndsLockWaitsThatShareAUnique) {
  SVFS_REQUIRE_BACKEND(Backend::kSvfsd);
  LockHeldSession held;
  Session& s = *held.session;
  FuseClient& c = s.client();
  FuseRequest first = held.file.request(FUSE_SETLKW, 2, F_WRLCK);
  FuseRequest second = held.file.request(FUSE_SETLKW, 3, F_WRLCK);
  std::memcpy(second.bytes.data() + offsetof(fuse_in_header, unique),
              first.bytes.data() + offsetof(fuse_in_header, unique), sizeof(std::uint64_t));
  std::uint64_t rep1 = c.place(first, true).reply;
  s.fe().queue(1).kick();
  std::this_thread::sleep_for(100ms);
  std::uint64_t rep2 = c.place(second, true).reply;
  s.fe().queue(1).kick();
  std::this_thread::sleep_for(200ms);
  s.fe().send_raw(msg::kGetVringBase, msg::kFlagVersion, Payload(std::uint32_t{1}, std::uint32_t{0}));
  ASSERT_TRUE(s.fe().wait_reply(msg::kGetVringBase, 3000ms))
      << "GET_VRING_BASE hung: a lock wait sharing a unique could not be interrupted";
  for (std::uint64_t rep : {rep1, rep2}) EXPECT_EQ(ReplyHeaderAt(s.fe().memory(), rep).error, -EINTR);
}

// `request` as sent by uid:gid (a guest user), with `groups` in a FUSE_EXT_GROUPS extension
// when not empty, laid out as a 6.3+ guest kernel sends it after INIT agreed on
// FUSE_CREATE_SUPP_GROUP.
FuseRequest AsGuestUser(FuseRequest request, std::uint32_t uid, std::uint32_t gid,
                        const std::vector<std::uint32_t>& groups) {
  fuse_in_header h;
  std::memcpy(&h, request.bytes.data(), sizeof(h));
  h.uid = uid;
  h.gid = gid;
  if (!groups.empty()) {
    const std::uint32_t size = (8 + 4 + 4 * static_cast<std::uint32_t>(groups.size()) + 7) / 8 * 8;
    std::vector<std::uint8_t> ext(size, 0);
    const std::uint32_t type = 32;  // FUSE_EXT_GROUPS
    const std::uint32_t count = static_cast<std::uint32_t>(groups.size());
    std::memcpy(ext.data(), &size, 4);
    std::memcpy(ext.data() + 4, &type, 4);
    std::memcpy(ext.data() + 8, &count, 4);
    std::memcpy(ext.data() + 12, groups.data(), 4 * groups.size());
    request.bytes.insert(request.bytes.end(), ext.begin(), ext.end());
    h.total_extlen = static_cast<std::uint16_t>(size / 8);
    h.len = static_cast<std::uint32_t>(request.bytes.size());
  }
  std::memcpy(request.bytes.data(), &h, sizeof(h));
  return request;
}

// A guest's supplementary groups never reach svfsd, but a 6.3+ guest kernel sends the parent
// directory's group with each creation when the caller is in it: svfsd counts it, so a member
// creates in a directory only its group may write, and its new file in a setgid directory keeps
// S_ISGID, as on the host. Without the extension (a 6.1 guest) neither works.
TEST(VhostSvfsdTest, CreationsCountTheGroupTheGuestSends) {
  SVFS_REQUIRE_BACKEND(Backend::kSvfsd);
  if (::geteuid() != 0) GTEST_SKIP() << "svfsd switches to the guest's uid only as root";
  constexpr std::uint32_t kUser = 41000, kTeam = 41100;
  constexpr std::uint64_t kCreateSuppGroup = 1ULL << 34;  // FUSE_CREATE_SUPP_GROUP, upstream value
  TempDir tmp;
  FrontendOptions opts;
  opts.memory_size = 16u << 20;
  opts.request_queues = 1;
  Session s(Backend::kSvfsd, tmp, opts);
  FuseClient& c = s.client();
  auto init = c.init(38, FUSE_ASYNC_READ | FUSE_MAX_PAGES | FUSE_INIT_EXT | kCreateSuppGroup);
  ASSERT_TRUE(init.as<fuse_init_out>());
  EXPECT_TRUE(init.as<fuse_init_out>()->flags2 & (kCreateSuppGroup >> 32))
      << "INIT did not agree on FUSE_CREATE_SUPP_GROUP";
  const fs::path team = s.shared() / "team", setgid = s.shared() / "setgid";
  for (const auto& [dir, mode] : {std::pair{team, 0770}, std::pair{setgid, 02777}}) {
    ASSERT_EQ(::mkdir(dir.c_str(), 0700), 0);
    ASSERT_EQ(::chown(dir.c_str(), 0, kTeam), 0);
    ASSERT_EQ(::chmod(dir.c_str(), static_cast<mode_t>(mode)), 0);
  }
  const auto team_node = c.lookup(FUSE_ROOT_ID, "team").as<fuse_entry_out>();
  const auto setgid_node = c.lookup(FUSE_ROOT_ID, "setgid").as<fuse_entry_out>();
  ASSERT_TRUE(team_node && setgid_node);
  auto mkdir = [&](const char* name, std::vector<std::uint32_t> groups) {
    fuse_mkdir_in in{.mode = 0755, .umask = 0};
    return c.send(AsGuestUser(c.make(FUSE_MKDIR, team_node->nodeid, {Bytes(in), CName(name)}, 4096),
                              kUser, kUser, groups));
  };
  EXPECT_EQ(mkdir("without", {}).error(), -EACCES) << "no group, no write permission";
  EXPECT_EQ(mkdir("with", {kTeam}).error(), 0) << "the group the guest sent did not count";
  struct stat st {};
  ASSERT_EQ(::lstat((team / "with").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, kUser);
  EXPECT_EQ(st.st_gid, kUser) << "the member's own group, as on the host";

  auto create = [&](const char* name, std::vector<std::uint32_t> groups) {
    fuse_create_in in{.flags = O_WRONLY | O_CREAT | O_EXCL, .mode = S_IFREG | 02755, .umask = 0};
    return c.send(AsGuestUser(c.make(FUSE_CREATE, setgid_node->nodeid, {Bytes(in), CName(name)}, 4096),
                              kUser, kUser, groups));
  };
  ASSERT_EQ(create("member", {kTeam}).error(), 0);
  ASSERT_EQ(create("outsider", {}).error(), 0);
  ASSERT_EQ(::lstat((setgid / "member").c_str(), &st), 0);
  EXPECT_EQ(st.st_gid, kTeam);
  EXPECT_EQ(st.st_mode & 07777, 02755u) << "a member's new file lost S_ISGID";
  ASSERT_EQ(::lstat((setgid / "outsider").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0755u) << "the host strips S_ISGID for a non-member";
  // The group counts for the creation alone: the next request without it is refused again.
  EXPECT_EQ(mkdir("after", {}).error(), -EACCES);
}

// A guest's chgrp of its own file to one of its groups: the guest kernel allowed it (it knows
// the groups), so svfsd counts the target group for the call; the host refused it before.
TEST(VhostSvfsdTest, ChgrpToTheCallersGroupWorksForAGuest) {
  SVFS_REQUIRE_BACKEND(Backend::kSvfsd);
  if (::geteuid() != 0) GTEST_SKIP() << "svfsd switches to the guest's uid only as root";
  constexpr std::uint32_t kUser = 41000, kTeam = 41100;
  TempDir tmp;
  auto session = SvfsdSession(tmp, 1);
  FuseClient& c = session->client();
  const fs::path file = session->shared() / "mine";
  { std::ofstream(file) << "x"; }
  ASSERT_EQ(::chown(file.c_str(), kUser, kUser), 0);
  const auto node = c.lookup(FUSE_ROOT_ID, "mine").as<fuse_entry_out>();
  ASSERT_TRUE(node);
  fuse_setattr_in in{};
  in.valid = FATTR_GID;
  in.gid = kTeam;
  FuseReply r = c.send(AsGuestUser(c.make(FUSE_SETATTR, node->nodeid, {Bytes(in)}, 4096), kUser,
                                   kUser, {}));
  EXPECT_EQ(r.error(), 0) << "chgrp by the owner to a group it is in";
  struct stat st {};
  ASSERT_EQ(::lstat(file.c_str(), &st), 0);
  EXPECT_EQ(st.st_gid, kTeam);
  // Someone else's file stays refused: the owner check is the host's.
  in.gid = kUser;
  r = c.send(AsGuestUser(c.make(FUSE_SETATTR, node->nodeid, {Bytes(in)}, 4096), kUser + 1,
                         kUser + 1, {}));
  EXPECT_EQ(r.error(), -EPERM);
  ASSERT_EQ(::lstat(file.c_str(), &st), 0);
  EXPECT_EQ(st.st_gid, kTeam);
}


}  // namespace
}  // namespace svfs::vhost
