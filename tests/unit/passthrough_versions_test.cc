// PassthroughFs in shared-versions mode with a recording VersionTracker: which inodes each
// operation bumps, which slot replies are tagged with, and the timeouts of a negotiated session. The
// real tracker (daemon/versions/) over a real versiond is exercised by tests/shared/.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <string>

#include <gtest/gtest.h>

#include "daemon/fs/passthrough.h"
#include "daemon/fs/version_tracker.h"
#include "protocol/inode_identity.h"
#include "protocol/shared_versions.h"

namespace svfs::fs {
namespace {

constexpr uint64_t kDay = 86400ULL * 1'000'000'000ULL;

// Slots computed from the identity the filesystem hands over, as the real tracker does; every
// slot starts at 100 (a table in use never starts at 0); bumps recorded by identity.
class RecordingTracker : public VersionTracker {
 public:
  static constexpr uint64_t kSlots = 1 << 20;
  std::optional<VersionTableId> table() const override {
    if (!has_table) return std::nullopt;
    return VersionTableId{.uuid = {1, 2, 3}, .generation = 4};
  }
  Version sample(uint64_t identity) const override {
    std::lock_guard lock(mutex_);
    uint64_t slot = protocol::SlotOf(identity, kSlots);
    auto it = versions_.find(slot);
    return {slot, it == versions_.end() ? 100 : it->second};
  }
  void bump(uint64_t identity) override {
    std::lock_guard lock(mutex_);
    uint64_t slot = protocol::SlotOf(identity, kSlots);
    auto [it, fresh] = versions_.try_emplace(slot, 100);
    ++it->second;
    bumped.insert(identity);
  }
  uint64_t version_of_slot(uint64_t slot) const {
    std::lock_guard lock(mutex_);
    auto it = versions_.find(slot);
    return it == versions_.end() ? 100 : it->second;
  }

  bool has_table = true;
  std::multiset<uint64_t> bumped;  // the identity of every inode bumped

 private:
  mutable std::mutex mutex_;
  std::map<uint64_t, uint64_t> versions_;
};

class PassthroughVersionsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/svfs-versions-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    fs_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  PassthroughFs& Fs(bool negotiate = false, CacheMode mode = CacheMode::kShared) {
    if (!fs_) {
      PassthroughConfig config;
      config.shared_dir = dir_;
      config.cache = CachePolicy(mode);
      config.xattr = true;
      auto fs = PassthroughFs::Create(config, &tracker_);
      EXPECT_TRUE(fs.has_value());
      fs_ = std::move(*fs);
      uint64_t offered = negotiate ? protocol::kInitSharedVersions : 0;
      uint64_t agreed = fs_->init(offered | FUSE_DO_READDIRPLUS);
      fs_->initialized(Negotiated{.minor = 38, .flags = agreed, .max_write = 1 << 20});
    }
    return *fs_;
  }
  std::string Path(const std::string& name) const { return dir_ + "/" + name; }
  // The identity of the host file `name`, computed here as svfsd and versiond compute it.
  uint64_t Id(const std::string& name) const {
    int fd = ::open(Path(name).c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
    EXPECT_GE(fd, 0) << name;
    struct stat st {};
    struct statfs sfs {};
    EXPECT_EQ(::fstat(fd, &st), 0);
    EXPECT_EQ(::fstatfs(fd, &sfs), 0);
    uint64_t id = protocol::IdentityOfFd(fd, protocol::PackFsid(sfs.f_fsid), st.st_dev, st.st_ino);
    ::close(fd);
    return id;
  }
  uint64_t SlotOfName(const std::string& name) const {
    return protocol::SlotOf(Id(name), RecordingTracker::kSlots);
  }
  void Touch(const std::string& name) {
    int fd = ::open(Path(name).c_str(), O_CREAT | O_WRONLY, 0644);
    ASSERT_GE(fd, 0);
    ::close(fd);
  }
  // Looks `name` up under the root (so it is in the store, with a slot); returns its node.
  NodeId Lookup(const std::string& name, NodeId parent = kRootNodeId) {
    auto e = fs_->lookup(ctx_, parent, name);
    EXPECT_TRUE(e.has_value()) << name;
    return e ? e->node : 0;
  }
  std::multiset<uint64_t> TakeBumps() { return std::exchange(tracker_.bumped, {}); }

  Context ctx_;
  std::string dir_;
  RecordingTracker tracker_;
  std::unique_ptr<PassthroughFs> fs_;
};

TEST_F(PassthroughVersionsTest, InitOffersFlagOnlyWithTableAndOffer) {
  auto& fs = Fs();
  EXPECT_TRUE(fs.init(protocol::kInitSharedVersions) & protocol::kInitSharedVersions);
  EXPECT_FALSE(fs.init(0) & protocol::kInitSharedVersions);
  ASSERT_TRUE(fs.version_table().has_value());
  EXPECT_EQ(fs.version_table()->generation, 4u);
  tracker_.has_table = false;  // versiond unreachable
  EXPECT_FALSE(fs.init(protocol::kInitSharedVersions) & protocol::kInitSharedVersions);
  EXPECT_FALSE(fs.version_table().has_value());
}

TEST_F(PassthroughVersionsTest, OtherCacheModesNeverOfferVersions) {
  auto& fs = Fs(false, CacheMode::kAlways);
  EXPECT_FALSE(fs.init(protocol::kInitSharedVersions) & protocol::kInitSharedVersions);
  EXPECT_FALSE(fs.version_table().has_value());
}

// The slot is the one the inode's identity names, with no call to anyone, the same on every
// lookup, and the same for a hard link and after a rename (the identity is the inode's, not the
// name's).
TEST_F(PassthroughVersionsTest, RepliesCarryTheSlotOfTheInodesIdentity) {
  Touch("f");
  auto& fs = Fs(true);
  auto first = fs.lookup(ctx_, kRootNodeId, "f");
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->attr.version.index, SlotOfName("f"));
  EXPECT_EQ(first->attr.version.value, 100u);
  auto again = fs.lookup(ctx_, kRootNodeId, "f");
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->attr.version.index, first->attr.version.index);
  auto attr = fs.getattr(ctx_, first->node, std::nullopt);
  ASSERT_TRUE(attr.has_value());
  EXPECT_EQ(attr->version.index, first->attr.version.index);
  EXPECT_TRUE(TakeBumps().empty()) << "reads bump nothing";

  ASSERT_EQ(::link(Path("f").c_str(), Path("hard").c_str()), 0);
  auto linked = fs.lookup(ctx_, kRootNodeId, "hard");
  ASSERT_TRUE(linked.has_value());
  EXPECT_EQ(linked->attr.version.index, first->attr.version.index) << "hard link";
  ASSERT_EQ(::rename(Path("f").c_str(), Path("renamed").c_str()), 0);
  fs.forget(first->node, 3);  // out of the store: the next lookup makes the inode afresh
  auto renamed = fs.lookup(ctx_, kRootNodeId, "renamed");
  ASSERT_TRUE(renamed.has_value());
  EXPECT_EQ(renamed->attr.version.index, first->attr.version.index) << "after a rename";
}

TEST_F(PassthroughVersionsTest, NegotiatedTimeoutsFollowVersions) {
  Touch("f");
  auto& fs = Fs(/*negotiate=*/true);
  auto e = fs.lookup(ctx_, kRootNodeId, "f");
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->attr.timeout_ns, kDay) << "versioned attributes live while the version does";
  EXPECT_EQ(e->entry_timeout_ns, 0u) << "dentries are validated by the parent's version";
  auto negative = fs.lookup(ctx_, kRootNodeId, "missing");
  ASSERT_TRUE(negative.has_value()) << "a negative entry the guest can keep";
  EXPECT_EQ(negative->node, 0u);
  EXPECT_EQ(negative->attr.version.index, 0u);
  auto opened = fs.open(ctx_, e->node, O_RDONLY);
  ASSERT_TRUE(opened.has_value());
  EXPECT_EQ(opened->open_flags, 0u) << "the guest decides about its page cache by version";
}

TEST_F(PassthroughVersionsTest, UnnegotiatedSessionIsCacheNone) {
  Touch("f");
  auto& fs = Fs(/*negotiate=*/false);
  auto e = fs.lookup(ctx_, kRootNodeId, "f");
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->attr.timeout_ns, 0u);
  EXPECT_EQ(e->entry_timeout_ns, 0u);
  EXPECT_EQ(fs.lookup(ctx_, kRootNodeId, "missing").error(), ENOENT);
  auto opened = fs.open(ctx_, e->node, O_RDONLY);
  ASSERT_TRUE(opened.has_value());
  EXPECT_EQ(opened->open_flags, static_cast<uint32_t>(FOPEN_DIRECT_IO));
  // Still bumped: other daemons' guests depend on it.
  SetattrArgs args;
  args.valid = FATTR_MODE;
  args.mode = 0600;
  ASSERT_TRUE(fs.setattr(ctx_, e->node, args).has_value());
  EXPECT_EQ(TakeBumps(), std::multiset<uint64_t>{Id("f")});
}

TEST_F(PassthroughVersionsTest, SetattrBumpsBeforeTheReplySamples) {
  Touch("f");
  auto& fs = Fs(true);
  NodeId f = Lookup("f");
  SetattrArgs args;
  args.valid = FATTR_MODE;
  args.mode = 0600;
  auto attr = fs.setattr(ctx_, f, args);
  ASSERT_TRUE(attr.has_value());
  EXPECT_EQ(attr->st.st_mode & 07777, 0600u);
  EXPECT_EQ(TakeBumps(), std::multiset<uint64_t>{Id("f")});
  // The reply carries the version after the bump: caching it is safe until the next change.
  EXPECT_EQ(attr->version.value, tracker_.version_of_slot(attr->version.index));
  EXPECT_EQ(attr->version.value, 101u);
}

TEST_F(PassthroughVersionsTest, FailedSetattrStillBumpsWhatItTried) {
  Touch("f");
  auto& fs = Fs(true);
  NodeId f = Lookup("f");
  SetattrArgs args;
  args.valid = FATTR_MODE | FATTR_SIZE;
  args.mode = 0600;
  args.size = 1;
  Context nobody{.uid = 65534, .gid = 65534};
  EXPECT_FALSE(fs.setattr(nobody, f, args).has_value());
  EXPECT_EQ(TakeBumps(), std::multiset<uint64_t>{Id("f")});
}

TEST_F(PassthroughVersionsTest, NamespaceOperationsBumpTheirSets) {
  ASSERT_EQ(::mkdir(Path("a").c_str(), 0755), 0);
  ASSERT_EQ(::mkdir(Path("b").c_str(), 0755), 0);
  Touch("a/x");
  Touch("b/y");
  auto& fs = Fs(true);
  NodeId a = Lookup("a");
  NodeId b = Lookup("b");
  NodeId x = Lookup("x", a);
  Lookup("y", b);
  uint64_t ia = Id("a"), ib = Id("b"), ix = Id("a/x"), iy = Id("b/y");
  TakeBumps();

  ASSERT_TRUE(fs.create(ctx_, a, "new", S_IFREG | 0644, O_RDWR, 0).has_value());
  EXPECT_EQ(TakeBumps(), std::multiset<uint64_t>{ia}) << "create";
  ASSERT_TRUE(fs.mkdir(ctx_, a, "d", 0755, 0).has_value());
  EXPECT_EQ(TakeBumps(), std::multiset<uint64_t>{ia}) << "mkdir";
  ASSERT_TRUE(fs.mknod(ctx_, a, "p", S_IFIFO | 0644, 0, 0).has_value());
  EXPECT_EQ(TakeBumps(), std::multiset<uint64_t>{ia}) << "mknod";
  ASSERT_TRUE(fs.symlink(ctx_, "target", a, "s").has_value());
  EXPECT_EQ(TakeBumps(), std::multiset<uint64_t>{ia}) << "symlink";
  ASSERT_TRUE(fs.link(ctx_, x, b, "x2").has_value());
  EXPECT_EQ(TakeBumps(), (std::multiset<uint64_t>{ib, ix})) << "link: new parent and inode";
  ASSERT_TRUE(fs.unlink(ctx_, b, "x2").has_value());
  EXPECT_EQ(TakeBumps(), (std::multiset<uint64_t>{ib, ix})) << "unlink: parent and inode";
  uint64_t id = Id("a/d");
  ASSERT_TRUE(fs.rmdir(ctx_, a, "d").has_value());
  EXPECT_EQ(TakeBumps(), (std::multiset<uint64_t>{ia, id})) << "rmdir: parent and dir";
  ASSERT_TRUE(fs.rename(ctx_, a, "x", b, "moved", 0).has_value());
  EXPECT_EQ(TakeBumps(), (std::multiset<uint64_t>{ia, ib, ix})) << "rename to a new name";
  ASSERT_TRUE(fs.rename(ctx_, b, "moved", b, "y", 0).has_value());
  EXPECT_EQ(TakeBumps(), (std::multiset<uint64_t>{ib, ix, iy})) << "rename over y (same dir)";
  // Failures change nothing and bump nothing.
  EXPECT_FALSE(fs.unlink(ctx_, a, "missing").has_value());
  EXPECT_FALSE(fs.mkdir(ctx_, a, "new", 0755, 0).has_value());
  EXPECT_TRUE(TakeBumps().empty());
}

TEST_F(PassthroughVersionsTest, DataAndXattrChangesBumpTheInode) {
  Touch("f");
  auto& fs = Fs(true);
  NodeId f = Lookup("f");
  uint64_t fi = Id("f");
  auto opened = fs.open(ctx_, f, O_RDWR);
  ASSERT_TRUE(opened.has_value());
  EXPECT_TRUE(TakeBumps().empty()) << "open without O_TRUNC";

  SpanWriteSource byte("z");
  ASSERT_TRUE(fs.write(ctx_, f, opened->handle, 0, byte, 0).has_value());
  EXPECT_EQ(TakeBumps(), std::multiset<uint64_t>{fi}) << "write";
  ASSERT_TRUE(fs.fallocate(ctx_, f, opened->handle, 0, 0, 4096).has_value());
  EXPECT_EQ(TakeBumps(), std::multiset<uint64_t>{fi}) << "fallocate";
  std::string value = "v";
  ASSERT_TRUE(fs.setxattr(ctx_, f, "user.k", value, 0).has_value());
  EXPECT_EQ(TakeBumps(), std::multiset<uint64_t>{fi}) << "setxattr";
  ASSERT_TRUE(fs.removexattr(ctx_, f, "user.k").has_value());
  EXPECT_EQ(TakeBumps(), std::multiset<uint64_t>{fi}) << "removexattr";
  auto trunc = fs.open(ctx_, f, O_WRONLY | O_TRUNC);
  ASSERT_TRUE(trunc.has_value());
  EXPECT_EQ(TakeBumps(), std::multiset<uint64_t>{fi}) << "open O_TRUNC";
  EXPECT_TRUE(fs.getxattr(ctx_, f, "user.none", 0).error() == ENODATA);
  EXPECT_TRUE(TakeBumps().empty()) << "reads bump nothing";
}

TEST_F(PassthroughVersionsTest, ReaddirplusEntriesAreVersioned) {
  Touch("a");
  Touch("b");
  auto& fs = Fs(true);
  auto dir = fs.opendir(ctx_, kRootNodeId, O_RDONLY);
  ASSERT_TRUE(dir.has_value());
  class Sink : public DirSink {
   public:
    bool has_room(size_t) const override { return true; }
    bool add(const DirEntry& d, const Entry* e) override {
      if (d.name != "." && d.name != "..") versions[std::string(d.name)] = e->attr.version;
      return true;
    }
    std::map<std::string, Version> versions;
  } sink;
  ASSERT_TRUE(fs.readdir(ctx_, kRootNodeId, dir->handle, 0, true, sink).has_value());
  ASSERT_EQ(sink.versions.size(), 2u);
  EXPECT_NE(sink.versions["a"].index, 0u);
  EXPECT_NE(sink.versions["b"].index, 0u);
  EXPECT_EQ(sink.versions["a"].index, SlotOfName("a"));
  EXPECT_EQ(sink.versions["b"].index, SlotOfName("b"));
}

}  // namespace
}  // namespace svfs::fs
