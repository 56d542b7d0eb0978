// FanotifyWatcher against real fanotify filesystem marks on tmpfs (/dev/shm) and ext4 (/var/tmp),
// with changes made by forked children, plus the record parser on hand-made buffers.
#include "versiond/fanotify_watcher.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/fanotify.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace svfs::versiond {
namespace {

int64_t NowNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

struct Handle {
  int32_t type = 0;
  std::vector<unsigned char> bytes;
};

std::optional<Handle> HandleOf(const std::string& path) {
  std::vector<unsigned char> buf(sizeof(file_handle) + MAX_HANDLE_SZ);
  auto* fh = reinterpret_cast<file_handle*>(buf.data());
  fh->handle_bytes = MAX_HANDLE_SZ;
  int mount_id = 0;
  if (name_to_handle_at(AT_FDCWD, path.c_str(), fh, &mount_id, 0) != 0) {
    ADD_FAILURE() << "name_to_handle_at(" << path << "): " << std::strerror(errno);
    return std::nullopt;
  }
  return Handle{fh->handle_type, {fh->f_handle, fh->f_handle + fh->handle_bytes}};
}

uint64_t FsidOf(const std::string& path) {
  struct statfs st {};
  EXPECT_EQ(statfs(path.c_str(), &st), 0) << path << ": " << std::strerror(errno);
  return protocol::PackFsid(st.f_fsid);
}

std::string MaskNames(uint64_t mask) {
  static const std::pair<uint64_t, const char*> kNames[] = {
      {FAN_ACCESS, "ACCESS"},         {FAN_MODIFY, "MODIFY"},         {FAN_ATTRIB, "ATTRIB"},
      {FAN_CLOSE_WRITE, "CLOSE_WRITE"}, {FAN_OPEN, "OPEN"},           {FAN_MOVED_FROM, "MOVED_FROM"},
      {FAN_MOVED_TO, "MOVED_TO"},     {FAN_CREATE, "CREATE"},         {FAN_DELETE, "DELETE"},
      {FAN_DELETE_SELF, "DELETE_SELF"}, {FAN_MOVE_SELF, "MOVE_SELF"}, {FAN_RENAME, "RENAME"},
      {FAN_Q_OVERFLOW, "Q_OVERFLOW"}, {FAN_ONDIR, "ONDIR"}};
  std::string out;
  for (auto [bit, name] : kNames) {
    if (mask & bit) out += (out.empty() ? "" : "|") + std::string(name);
  }
  return out.empty() ? "0" : out;
}

std::string InfoTypeName(uint8_t type) {
  switch (type) {
    case FAN_EVENT_INFO_TYPE_FID: return "FID";
    case FAN_EVENT_INFO_TYPE_DFID: return "DFID";
    case FAN_EVENT_INFO_TYPE_DFID_NAME: return "DFID_NAME";
    case FAN_EVENT_INFO_TYPE_OLD_DFID_NAME: return "OLD_DFID_NAME";
    case FAN_EVENT_INFO_TYPE_NEW_DFID_NAME: return "NEW_DFID_NAME";
    default: return "type" + std::to_string(type);
  }
}

// "MODIFY: FID[f] DFID_NAME[dir](f)" with objects labelled by the known handles they equal.
std::string Describe(const HostChange& c, const std::vector<std::pair<std::string, Handle>>& known) {
  std::string out = MaskNames(c.mask) + ":";
  for (const auto& o : c.objects) {
    std::string label = "?";
    for (const auto& [name, h] : known) {
      if (h.type == o.handle_type && h.bytes == o.handle) label = name;
    }
    out += " " + InfoTypeName(o.info_type) + "[" + label + "]";
    if (!o.name.empty()) out += "(" + o.name + ")";
    if (o.is_parent_dir) out += "^";
  }
  return out;
}

// One object an event must carry.
struct WantObject {
  Handle handle;
  bool is_parent_dir = false;
  std::string name;
  uint8_t info_type = 0;  // 0: any
};

// An event of which mask_bit is set and that carries all `objects`.
struct Want {
  uint64_t mask_bit = 0;
  std::vector<WantObject> objects;
  std::string what;
};

bool Matches(const HostChange& c, const Want& w, uint64_t fsid) {
  if (!(c.mask & w.mask_bit)) return false;
  for (const auto& want : w.objects) {
    bool found = false;
    for (const auto& o : c.objects) {
      found |= o.fsid == fsid && o.handle_type == want.handle.type && o.handle == want.handle.bytes &&
               o.is_parent_dir == want.is_parent_dir && o.name == want.name &&
               (want.info_type == 0 || o.info_type == want.info_type);
    }
    if (!found) return false;
  }
  return true;
}

bool AllMatched(const std::vector<HostChange>& changes, const std::vector<Want>& wants,
                uint64_t fsid) {
  for (const auto& w : wants) {
    bool any = false;
    for (const auto& c : changes) any |= Matches(c, w, fsid);
    if (!any) return false;
  }
  return true;
}

WantObject Fid(const Handle& h) { return {h, false, "", FAN_EVENT_INFO_TYPE_FID}; }
WantObject Entry(const Handle& dir, std::string name, uint8_t type = FAN_EVENT_INFO_TYPE_DFID_NAME) {
  return {dir, true, std::move(name), type};
}

class FanotifyWatcherTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    auto w = FanotifyWatcher::Create();
    if (!w) {
      if (w.error().find(std::strerror(EPERM)) != std::string::npos) {
        GTEST_SKIP() << "fanotify_init refused (needs CAP_SYS_ADMIN): " << w.error();
      }
      FAIL() << w.error();
    }
    watcher_.emplace(std::move(*w));
    std::string tmpl = GetParam() + "/svfs-fanotify-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr) << tmpl << ": " << std::strerror(errno);
    dir_ = tmpl;
    void* shared = mmap(nullptr, sizeof(int64_t), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                        -1, 0);
    ASSERT_NE(shared, MAP_FAILED);
    change_started_ = static_cast<int64_t*>(shared);
  }

  void TearDown() override {
    if (!dir_.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(dir_, ec);
    }
    if (change_started_) munmap(change_started_, sizeof(int64_t));
  }

  std::string Path(const std::string& name) const { return dir_ + "/" + name; }

  // Runs `op` in a forked child (so the events carry the child's pid), polls and drains until
  // `wants` are seen or 3 s pass, then collects everything else the child caused. `op` returns
  // false on failure. Prints the latency from the start of the change to drain() seeing it and the
  // records of every event.
  std::vector<HostChange> RunStep(const std::string& step, const std::function<bool()>& op,
                                  const std::vector<Want>& wants,
                                  const std::vector<std::pair<std::string, Handle>>& known) {
    *change_started_ = 0;
    const pid_t child = fork();
    if (child == 0) {
      *change_started_ = NowNs();
      _exit(op() ? 0 : 1);
    }
    EXPECT_GT(child, 0) << std::strerror(errno);
    std::vector<HostChange> mine;
    size_t others = 0;
    auto collect = [&](const HostChange& c) {
      if (c.overflow) ADD_FAILURE() << "fanotify queue overflowed during " << step;
      if (c.pid == static_cast<uint32_t>(child)) {
        mine.push_back(c);
      } else {
        ++others;
      }
    };
    int64_t seen_at = 0;
    const int64_t deadline = NowNs() + 3'000'000'000;
    while (!AllMatched(mine, wants, fsid_) && NowNs() < deadline) {
      pollfd pfd{watcher_->fd(), POLLIN, 0};
      const int rc = poll(&pfd, 1, 1000);
      if (rc < 0 && errno != EINTR) ADD_FAILURE() << "poll: " << std::strerror(errno);
      auto n = watcher_->drain(collect);
      if (!n) ADD_FAILURE() << n.error();
      if (AllMatched(mine, wants, fsid_)) seen_at = NowNs();
    }
    int status = 0;
    EXPECT_EQ(waitpid(child, &status, 0), child);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << step << " failed in the child";
    // Everything the child caused was queued before it exited.
    auto n = watcher_->drain(collect);
    if (!n) ADD_FAILURE() << n.error();

    std::printf("[%s %s] pid %d, latency %s, %zu events of other processes\n",
                GetParam().c_str(), step.c_str(), child,
                seen_at ? (std::to_string((seen_at - *change_started_) / 1000) + " us").c_str()
                        : "n/a (not seen)",
                others);
    for (const auto& c : mine) std::printf("    %s\n", Describe(c, known).c_str());
    for (const auto& w : wants) {
      bool any = false;
      for (const auto& c : mine) any |= Matches(c, w, fsid_);
      EXPECT_TRUE(any) << step << ": no event " << w.what << " from pid " << child;
    }
    return mine;
  }

  std::optional<FanotifyWatcher> watcher_;
  std::string dir_;
  uint64_t fsid_ = 0;
  int64_t* change_started_ = nullptr;
};

TEST_P(FanotifyWatcherTest, ChildChangesCarryHandlesNamesAndPid) {
  auto fsid = watcher_->watch_filesystem_of(dir_);
  ASSERT_TRUE(fsid) << fsid.error();
  fsid_ = *fsid;
  EXPECT_EQ(fsid_, FsidOf(dir_));
  std::printf("[%s] fsid %016llx, FAN_REPORT_TARGET_FID %s, FAN_RENAME %s\n", GetParam().c_str(),
              static_cast<unsigned long long>(fsid_), watcher_->reports_target_fid() ? "yes" : "no",
              watcher_->reports_rename() ? "yes" : "no");
  const bool target = watcher_->reports_target_fid();
  auto dh = HandleOf(dir_);
  ASSERT_TRUE(dh);
  const std::string f = Path("f"), g = Path("g"), d = Path("d");
  std::vector<std::pair<std::string, Handle>> known{{"dir", *dh}};

  // create: the parent and the name; the new file's handle only exists afterwards.
  auto created = RunStep(
      "create", [&] {
        const int fd = open(f.c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644);
        return fd >= 0 && close(fd) == 0;
      },
      {{FAN_CREATE, {Entry(*dh, "f")}, "CREATE dir/f"}}, known);
  auto fh = HandleOf(f);
  ASSERT_TRUE(fh);
  known.emplace_back("f", *fh);
  std::vector<Want> after_create{{FAN_CLOSE_WRITE, {Fid(*fh), Entry(*dh, "f")}, "CLOSE_WRITE f"}};
  if (target) after_create.push_back({FAN_CREATE, {Entry(*dh, "f"), Fid(*fh)}, "CREATE with FID f"});
  for (const auto& w : after_create) {
    bool any = false;
    for (const auto& c : created) any |= Matches(c, w, fsid_);
    EXPECT_TRUE(any) << "create: no event " << w.what;
  }

  RunStep(
      "write", [&] {
        const int fd = open(f.c_str(), O_WRONLY);
        if (fd < 0) return false;
        const bool ok = write(fd, "hello", 5) == 5;
        return close(fd) == 0 && ok;
      },
      {{FAN_MODIFY, {Fid(*fh), Entry(*dh, "f")}, "MODIFY f"},
       {FAN_CLOSE_WRITE, {Fid(*fh)}, "CLOSE_WRITE f"}},
      known);

  RunStep("chmod", [&] { return chmod(f.c_str(), 0600) == 0; },
          {{FAN_ATTRIB, {Fid(*fh), Entry(*dh, "f")}, "ATTRIB f"}}, known);

  std::vector<Want> rename_wants{
      {FAN_MOVED_FROM, {Entry(*dh, "f")}, "MOVED_FROM dir/f"},
      {FAN_MOVED_TO, {Entry(*dh, "g")}, "MOVED_TO dir/g"},
      {FAN_MOVE_SELF, {Fid(*fh)}, "MOVE_SELF f"}};
  if (target) {
    rename_wants.push_back({FAN_MOVED_FROM, {Entry(*dh, "f"), Fid(*fh)}, "MOVED_FROM with FID f"});
    rename_wants.push_back({FAN_MOVED_TO, {Entry(*dh, "g"), Fid(*fh)}, "MOVED_TO with FID f"});
  }
  if (watcher_->reports_rename()) {
    rename_wants.push_back({FAN_RENAME,
                            {Entry(*dh, "f", FAN_EVENT_INFO_TYPE_OLD_DFID_NAME),
                             Entry(*dh, "g", FAN_EVENT_INFO_TYPE_NEW_DFID_NAME)},
                            "RENAME dir/f -> dir/g"});
  }
  RunStep("rename", [&] { return rename(f.c_str(), g.c_str()) == 0; }, rename_wants, known);

  std::vector<Want> unlink_wants{{FAN_DELETE, {Entry(*dh, "g")}, "DELETE dir/g"},
                                 {FAN_DELETE_SELF, {Fid(*fh)}, "DELETE_SELF f"}};
  if (target) unlink_wants.push_back({FAN_DELETE, {Entry(*dh, "g"), Fid(*fh)}, "DELETE with FID f"});
  RunStep("unlink", [&] { return unlink(g.c_str()) == 0; }, unlink_wants, known);

  auto made = RunStep("mkdir", [&] { return mkdir(d.c_str(), 0755) == 0; },
                      {{FAN_CREATE | FAN_ONDIR, {Entry(*dh, "d")}, "CREATE dir/d"}}, known);
  for (const auto& c : made) {
    if (c.mask & FAN_CREATE) {
      EXPECT_TRUE(c.mask & FAN_ONDIR) << "mkdir event without FAN_ONDIR";
    }
  }
  auto ddh = HandleOf(d);
  ASSERT_TRUE(ddh);
  known.emplace_back("d", *ddh);
  if (target) {
    bool any = false;
    for (const auto& c : made) any |= Matches(c, {FAN_CREATE, {Entry(*dh, "d"), Fid(*ddh)}}, fsid_);
    EXPECT_TRUE(any) << "mkdir: CREATE without the new directory's FID";
  }

  // A directory's event on itself names the directory with ".".
  std::vector<Want> rmdir_wants{
      {FAN_DELETE, {Entry(*dh, "d")}, "DELETE dir/d"},
      {FAN_DELETE_SELF, {{*ddh, false, ".", FAN_EVENT_INFO_TYPE_DFID_NAME}}, "DELETE_SELF d"}};
  if (target) rmdir_wants.push_back({FAN_DELETE, {Entry(*dh, "d"), Fid(*ddh)}, "DELETE with FID d"});
  RunStep("rmdir", [&] { return rmdir(d.c_str()) == 0; }, rmdir_wants, known);
}

// A rename between directories over an existing entry must name both parents, the moved inode
// and the replaced one (versiond bumps all four).
TEST_P(FanotifyWatcherTest, RenameOverAcrossDirectories) {
  auto fsid = watcher_->watch_filesystem_of(dir_);
  ASSERT_TRUE(fsid) << fsid.error();
  fsid_ = *fsid;
  const std::string a = Path("a"), b = Path("b"), x = a + "/x", y = b + "/y";
  ASSERT_EQ(mkdir(a.c_str(), 0755), 0);
  ASSERT_EQ(mkdir(b.c_str(), 0755), 0);
  for (const auto& p : {x, y}) {
    const int fd = open(p.c_str(), O_CREAT | O_WRONLY, 0644);
    ASSERT_GE(fd, 0) << p;
    close(fd);
  }
  auto ah = HandleOf(a), bh = HandleOf(b), xh = HandleOf(x), yh = HandleOf(y);
  ASSERT_TRUE(ah && bh && xh && yh);
  ASSERT_TRUE(watcher_->drain([](const HostChange&) {}));  // the setup's own events

  std::vector<Want> wants{{FAN_MOVED_FROM, {Entry(*ah, "x")}, "MOVED_FROM a/x"},
                          {FAN_MOVED_TO, {Entry(*bh, "y")}, "MOVED_TO b/y"},
                          {FAN_MOVE_SELF, {Fid(*xh)}, "MOVE_SELF x"},
                          {FAN_ATTRIB | FAN_DELETE_SELF, {Fid(*yh)}, "ATTRIB/DELETE_SELF of replaced y"}};
  if (watcher_->reports_rename()) {
    wants.push_back({FAN_RENAME,
                     {Entry(*ah, "x", FAN_EVENT_INFO_TYPE_OLD_DFID_NAME),
                      Entry(*bh, "y", FAN_EVENT_INFO_TYPE_NEW_DFID_NAME)},
                     "RENAME a/x -> b/y"});
  }
  RunStep("rename-over", [&] { return rename(x.c_str(), y.c_str()) == 0; }, wants,
          {{"a", *ah}, {"b", *bh}, {"x", *xh}, {"y", *yh}});
}

TEST_P(FanotifyWatcherTest, OwnChangeReportsOwnPid) {
  auto fsid = watcher_->watch_filesystem_of(dir_);
  ASSERT_TRUE(fsid) << fsid.error();
  fsid_ = *fsid;
  const std::string f = Path("own");
  const int fd = open(f.c_str(), O_CREAT | O_WRONLY, 0644);
  ASSERT_GE(fd, 0);
  close(fd);
  auto fh = HandleOf(f);
  ASSERT_TRUE(fh);
  watcher_->drain([](const HostChange&) {});  // the create, not what this test is about

  const int64_t start = NowNs();
  ASSERT_EQ(chmod(f.c_str(), 0600), 0);
  bool seen = false;
  const int64_t deadline = start + 3'000'000'000;
  while (!seen && NowNs() < deadline) {
    pollfd pfd{watcher_->fd(), POLLIN, 0};
    poll(&pfd, 1, 1000);
    auto n = watcher_->drain([&](const HostChange& c) {
      if (c.pid == static_cast<uint32_t>(getpid()) && Matches(c, {FAN_ATTRIB, {Fid(*fh)}}, fsid_)) {
        seen = true;
      }
    });
    ASSERT_TRUE(n) << n.error();
  }
  EXPECT_TRUE(seen) << "no ATTRIB for the test's own chmod with pid " << getpid();
  if (seen) {
    std::printf("[%s own chmod] latency %lld us\n", GetParam().c_str(),
                static_cast<long long>((NowNs() - start) / 1000));
  }
}

// The identity versiond computes from a FID record is the one svfsd computes from the inode it
// serves (protocol::IdentityOfFd): both land on one slot, with no key ever sent.
TEST_P(FanotifyWatcherTest, FidRecordsGiveTheIdentityDaemonsCompute) {
  auto fsid = watcher_->watch_filesystem_of(dir_);
  ASSERT_TRUE(fsid) << fsid.error();
  fsid_ = *fsid;
  const std::string f = Path("same");
  close(open(f.c_str(), O_CREAT | O_WRONLY, 0644));
  auto fh = HandleOf(f);
  ASSERT_TRUE(fh);
  auto changes = RunStep("chmod", [&] { return chmod(f.c_str(), 0600) == 0; },
                         {{FAN_ATTRIB, {Fid(*fh)}, "ATTRIB same"}}, {{"same", *fh}});
  const int fd = open(f.c_str(), O_PATH | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  struct stat st {};
  ASSERT_EQ(fstat(fd, &st), 0);
  const uint64_t served = protocol::IdentityOfFd(fd, FsidOf(f), st.st_dev, st.st_ino);
  close(fd);
  bool found = false;
  for (const HostChange& change : changes) {
    for (const HostChange::Object& object : change.objects) {
      if (object.info_type != FAN_EVENT_INFO_TYPE_FID) continue;
      found = true;
      EXPECT_EQ(protocol::HandleIdentity(object.fsid, object.handle_type, object.handle), served);
    }
  }
  EXPECT_TRUE(found) << "no FID record for the chmod";
}

TEST_P(FanotifyWatcherTest, SameFilesystemTwiceGivesSameFsid) {
  auto a = watcher_->watch_filesystem_of(dir_);
  ASSERT_TRUE(a) << a.error();
  const std::string f = Path("x");
  close(open(f.c_str(), O_CREAT | O_WRONLY, 0644));
  auto b = watcher_->watch_filesystem_of(f);  // a file on the same filesystem
  ASSERT_TRUE(b) << b.error();
  auto c = watcher_->watch_filesystem_of(dir_);
  ASSERT_TRUE(c) << c.error();
  EXPECT_EQ(*a, *b);
  EXPECT_EQ(*a, *c);
  EXPECT_EQ(*a, FsidOf(dir_));
}

TEST_P(FanotifyWatcherTest, MovedWatcherKeepsItsMarksAndFd) {
  ASSERT_TRUE(watcher_->watch_filesystem_of(dir_));
  const int fd = watcher_->fd();
  FanotifyWatcher moved = std::move(*watcher_);
  EXPECT_EQ(watcher_->fd(), -1);
  EXPECT_EQ(moved.fd(), fd);
  auto idle = moved.drain([](const HostChange&) {});
  ASSERT_TRUE(idle) << idle.error();
  const std::string f = Path("m");
  const int file = open(f.c_str(), O_CREAT | O_WRONLY, 0644);
  ASSERT_GE(file, 0);
  close(file);
  pollfd pfd{moved.fd(), POLLIN, 0};
  ASSERT_EQ(poll(&pfd, 1, 1000), 1);
  size_t mine = 0;
  auto n = moved.drain([&](const HostChange& c) { mine += c.pid == static_cast<uint32_t>(getpid()); });
  ASSERT_TRUE(n) << n.error();
  EXPECT_GE(mine, 1u);
}

TEST_P(FanotifyWatcherTest, BadPathNamesThePath) {
  const std::string bad = Path("does/not/exist");
  auto r = watcher_->watch_filesystem_of(bad);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().find(bad), std::string::npos) << r.error();
  EXPECT_NE(r.error().find(std::strerror(ENOENT)), std::string::npos) << r.error();
}

INSTANTIATE_TEST_SUITE_P(Filesystems, FanotifyWatcherTest, ::testing::Values("/dev/shm", "/var/tmp"),
                         [](const auto& info) {
                           return info.param == "/dev/shm" ? std::string("tmpfs") : std::string("ext4");
                         });

// Parser on hand-made buffers: lengths that lie must not be read past.
class BufferBuilder {
 public:
  // Starts an event; Finish() patches event_len.
  void Begin(uint64_t mask, int32_t pid) {
    start_ = bytes_.size();
    fanotify_event_metadata m{};
    m.vers = FANOTIFY_METADATA_VERSION;
    m.metadata_len = FAN_EVENT_METADATA_LEN;
    m.mask = mask;
    m.fd = FAN_NOFD;
    m.pid = pid;
    Append(&m, sizeof(m));
  }
  void Fid(uint8_t type, uint32_t fsid0, const std::vector<unsigned char>& handle, int32_t htype,
           const std::string* name = nullptr, int len_delta = 0) {
    const size_t rec = bytes_.size();
    fanotify_event_info_fid f{};
    f.hdr.info_type = type;
    f.fsid.val[0] = static_cast<int>(fsid0);
    f.fsid.val[1] = 7;
    Append(&f, sizeof(f));
    const uint32_t hb = static_cast<uint32_t>(handle.size());
    Append(&hb, sizeof(hb));
    Append(&htype, sizeof(htype));
    Append(handle.data(), handle.size());
    if (name) Append(name->c_str(), name->size() + 1);
    while ((bytes_.size() - rec) % 4) bytes_.push_back(0);
    const uint16_t len = static_cast<uint16_t>(static_cast<int>(bytes_.size() - rec) + len_delta);
    std::memcpy(bytes_.data() + rec + offsetof(fanotify_event_info_header, len), &len, sizeof(len));
  }
  void Raw(const std::vector<unsigned char>& b) { bytes_.insert(bytes_.end(), b.begin(), b.end()); }
  void Finish(int len_delta = 0) {
    const uint32_t len = static_cast<uint32_t>(static_cast<int>(bytes_.size() - start_) + len_delta);
    std::memcpy(bytes_.data() + start_, &len, sizeof(len));
  }
  std::vector<unsigned char>& bytes() { return bytes_; }

 private:
  void Append(const void* p, size_t n) {
    auto* b = static_cast<const unsigned char*>(p);
    bytes_.insert(bytes_.end(), b, b + n);
  }
  std::vector<unsigned char> bytes_;
  size_t start_ = 0;
};

std::vector<HostChange> Parse(const std::vector<unsigned char>& buf) {
  std::vector<HostChange> out;
  ParseFanotifyEvents(buf, [&](const HostChange& c) { out.push_back(c); });
  return out;
}

TEST(FanotifyParse, DecodesRecordsAndSkipsUnknownTypes) {
  BufferBuilder b;
  const std::string name = "entry";
  b.Begin(FAN_CREATE, 42);
  b.Fid(FAN_EVENT_INFO_TYPE_DFID_NAME, 5, {1, 2, 3, 4, 5, 6, 7, 8}, 1, &name);
  b.Raw({99, 0, 8, 0, 0xaa, 0xbb, 0xcc, 0xdd});  // unknown type 99, len 8
  b.Fid(FAN_EVENT_INFO_TYPE_FID, 5, {9, 9, 9, 9}, 2);
  b.Finish();
  b.Begin(FAN_ATTRIB | FAN_ONDIR, 43);
  b.Fid(FAN_EVENT_INFO_TYPE_DFID_NAME, 5, {1, 2, 3, 4, 5, 6, 7, 8}, 1, nullptr);
  b.Finish();
  auto out = Parse(b.bytes());
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].pid, 42u);
  EXPECT_EQ(out[0].mask, uint64_t{FAN_CREATE});
  ASSERT_EQ(out[0].objects.size(), 2u);
  EXPECT_EQ(out[0].objects[0].name, "entry");
  EXPECT_TRUE(out[0].objects[0].is_parent_dir);
  EXPECT_EQ(out[0].objects[0].fsid, 5u | uint64_t{7} << 32);
  EXPECT_EQ(out[0].objects[0].handle, (std::vector<unsigned char>{1, 2, 3, 4, 5, 6, 7, 8}));
  EXPECT_EQ(out[0].objects[1].handle_type, 2);
  EXPECT_FALSE(out[0].objects[1].is_parent_dir);
  EXPECT_FALSE(out[0].overflow);
  // A DFID_NAME whose name field is missing entirely is malformed (no NUL inside the record).
  EXPECT_TRUE(out[1].overflow);
}

TEST(FanotifyParse, DotNameIsTheDirectoryItself) {
  BufferBuilder b;
  const std::string dot = ".";
  b.Begin(FAN_DELETE_SELF | FAN_ONDIR, 1);
  b.Fid(FAN_EVENT_INFO_TYPE_DFID_NAME, 5, {1, 2, 3, 4}, 1, &dot);
  b.Finish();
  auto out = Parse(b.bytes());
  ASSERT_EQ(out.size(), 1u);
  ASSERT_EQ(out[0].objects.size(), 1u);
  EXPECT_FALSE(out[0].objects[0].is_parent_dir);
}

TEST(FanotifyParse, LyingLengthsBecomeOverflowNotOverreads) {
  const std::string name = "n";
  auto one = [&](auto&& build) {
    BufferBuilder b;
    build(b);
    // Copy into an exactly-sized heap buffer so ASan catches any overread.
    auto out = Parse(std::vector<unsigned char>(b.bytes()));
    EXPECT_EQ(out.size(), 1u);
    return !out.empty() && out.back().overflow;
  };
  EXPECT_TRUE(one([&](BufferBuilder& b) {  // event_len beyond the buffer
    b.Begin(FAN_MODIFY, 1);
    b.Finish(+64);
  }));
  EXPECT_TRUE(one([&](BufferBuilder& b) {  // event_len shorter than the metadata
    b.Begin(FAN_MODIFY, 1);
    b.Finish(-8);
  }));
  EXPECT_TRUE(one([&](BufferBuilder& b) {  // record length beyond the event
    b.Begin(FAN_MODIFY, 1);
    b.Fid(FAN_EVENT_INFO_TYPE_FID, 1, {1, 2, 3, 4}, 1, nullptr, +4);
    b.Finish();
  }));
  EXPECT_TRUE(one([&](BufferBuilder& b) {  // record length below the header size
    b.Begin(FAN_MODIFY, 1);
    b.Raw({1, 0, 2, 0});
    b.Finish();
  }));
  EXPECT_TRUE(one([&](BufferBuilder& b) {  // handle_bytes beyond the record
    b.Begin(FAN_MODIFY, 1);
    b.Fid(FAN_EVENT_INFO_TYPE_FID, 1, {1, 2, 3, 4}, 1);
    b.Finish();
    const uint32_t huge = 1000;
    std::memcpy(b.bytes().data() + FAN_EVENT_METADATA_LEN + sizeof(fanotify_event_info_fid), &huge,
                sizeof(huge));
  }));
  EXPECT_TRUE(one([&](BufferBuilder& b) {  // FID record too short for a file_handle
    b.Begin(FAN_MODIFY, 1);
    b.Raw({FAN_EVENT_INFO_TYPE_FID, 0, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0});
    b.Finish();
  }));
  EXPECT_TRUE(one([&](BufferBuilder& b) {  // name without NUL inside the record
    b.Begin(FAN_CREATE, 1);
    b.Fid(FAN_EVENT_INFO_TYPE_DFID_NAME, 1, {1, 2, 3, 4}, 1, &name);
    b.Finish();
    auto& bytes = b.bytes();
    for (size_t i = bytes.size() - 4; i < bytes.size(); ++i) bytes[i] = 'x';
  }));
}

TEST(FanotifyParse, TrailingGarbageAfterAGoodEvent) {
  BufferBuilder b;
  b.Begin(FAN_MODIFY, 1);
  b.Finish();
  b.Raw({1, 2, 3});
  auto out = Parse(b.bytes());
  ASSERT_EQ(out.size(), 2u);
  EXPECT_FALSE(out[0].overflow);
  EXPECT_TRUE(out[1].overflow);
}

TEST(FanotifyParse, OverflowEvent) {
  BufferBuilder b;
  b.Begin(FAN_Q_OVERFLOW, 0);
  b.Finish();
  auto out = Parse(b.bytes());
  ASSERT_EQ(out.size(), 1u);
  EXPECT_TRUE(out[0].overflow);
  EXPECT_TRUE(out[0].objects.empty());
}

}  // namespace
}  // namespace svfs::versiond
