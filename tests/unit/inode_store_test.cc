#include "daemon/fs/inode_store.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include <gtest/gtest.h>

namespace svfs::fs {
namespace {

class InodeStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/svfs-inode-store-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    ASSERT_EQ(::close(::open((dir_ + "/a").c_str(), O_CREAT | O_WRONLY, 0644)), 0);
    ASSERT_EQ(::link((dir_ + "/a").c_str(), (dir_ + "/b").c_str()), 0);
    ASSERT_EQ(::close(::open((dir_ + "/c").c_str(), O_CREAT | O_WRONLY, 0644)), 0);
    store_.SetRoot(Make(""));
  }
  void TearDown() override {
    for (const char* n : {"/a", "/b", "/c"}) ::unlink((dir_ + n).c_str());
    ::rmdir(dir_.c_str());
  }

  // What a lookup builds before Acquire: an O_PATH fd and the inode's key.
  std::shared_ptr<InodeData> Make(const std::string& name) {
    auto inode = std::make_shared<InodeData>();
    int fd = ::open((dir_ + name).c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
    EXPECT_GE(fd, 0);
    struct stat st {};
    EXPECT_EQ(::fstat(fd, &st), 0);
    inode->key = InodeKey{st.st_dev, st.st_ino, 0};
    inode->file_type = st.st_mode & S_IFMT;
    inode->fd = UniqueFd(fd);
    return inode;
  }

  std::string dir_;
  InodeStore store_;
};

TEST_F(InodeStoreTest, RootIsNodeOne) {
  auto root = store_.Get(kRootNodeId);
  ASSERT_NE(root, nullptr);
  EXPECT_EQ(root->id, kRootNodeId);
  store_.Forget(kRootNodeId, 100);
  EXPECT_NE(store_.Get(kRootNodeId), nullptr);
}

TEST_F(InodeStoreTest, LookupTwiceForgetOneKeepsForgetTwoFrees) {
  NodeId id = store_.Acquire(Make("/a"))->id;
  EXPECT_GE(id, 2u);
  EXPECT_EQ(store_.Acquire(Make("/a"))->id, id);
  EXPECT_EQ(store_.RefCount(id), 2u);
  store_.Forget(id, 1);
  ASSERT_NE(store_.Get(id), nullptr);
  EXPECT_EQ(store_.RefCount(id), 1u);
  store_.Forget(id, 1);
  EXPECT_EQ(store_.Get(id), nullptr);
  EXPECT_EQ(store_.size(), 1u);
}

TEST_F(InodeStoreTest, ForgetTwoAtOnceFrees) {
  NodeId id = store_.Acquire(Make("/a"))->id;
  store_.Acquire(Make("/a"));
  store_.Forget(id, 2);
  EXPECT_EQ(store_.Get(id), nullptr);
}

TEST_F(InodeStoreTest, SameHostInodeThroughTwoNamesIsOneNode) {
  NodeId a = store_.Acquire(Make("/a"))->id;
  NodeId b = store_.Acquire(Make("/b"))->id;
  NodeId c = store_.Acquire(Make("/c"))->id;
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  EXPECT_EQ(store_.RefCount(a), 2u);
}

TEST_F(InodeStoreTest, NewNodeIdsAreNotReused) {
  NodeId a = store_.Acquire(Make("/a"))->id;
  store_.Forget(a, 1);
  NodeId again = store_.Acquire(Make("/a"))->id;
  EXPECT_NE(a, again);
}

TEST_F(InodeStoreTest, ForgetOfUnknownIdIsHarmless) {
  store_.Forget(12345, 1);
  store_.Forget(0, 1);
  NodeId a = store_.Acquire(Make("/a"))->id;
  store_.Forget(a + 1000, 5);
  EXPECT_EQ(store_.RefCount(a), 1u);
}

TEST_F(InodeStoreTest, CountsNeverUnderflow) {
  NodeId a = store_.Acquire(Make("/a"))->id;
  store_.Forget(a, 1000);
  EXPECT_EQ(store_.Get(a), nullptr);
  store_.Forget(a, 1);  // already gone
  NodeId again = store_.Acquire(Make("/a"))->id;
  EXPECT_EQ(store_.RefCount(again), 1u);
  store_.Forget(again, UINT64_MAX);
  EXPECT_EQ(store_.Get(again), nullptr);
}

TEST_F(InodeStoreTest, InFlightReferenceSurvivesForget) {
  auto inode = store_.Acquire(Make("/a"));
  int fd = inode->fd.get();
  store_.Forget(inode->id, 1);
  EXPECT_EQ(store_.Get(inode->id), nullptr);
  // Still usable: the shared_ptr keeps the O_PATH fd open.
  struct stat st {};
  EXPECT_EQ(::fstat(fd, &st), 0);
}

TEST_F(InodeStoreTest, ClearKeepsRoot) {
  NodeId a = store_.Acquire(Make("/a"))->id;
  store_.Clear();
  EXPECT_EQ(store_.Get(a), nullptr);
  EXPECT_NE(store_.Get(kRootNodeId), nullptr);
  EXPECT_EQ(store_.size(), 1u);
}

TEST_F(InodeStoreTest, LookupRefGivesItsReferenceBackUnlessReleased) {
  NodeId id = 0;
  {
    LookupRef dropped(store_, store_.Acquire(Make("/a")));
    id = dropped.inode()->id;
    EXPECT_EQ(store_.RefCount(id), 1u);
  }
  EXPECT_EQ(store_.Get(id), nullptr);  // an operation that failed after its lookup

  LookupRef moved_from(store_, store_.Acquire(Make("/a")));
  id = moved_from.inode()->id;
  LookupRef sent(std::move(moved_from));
  EXPECT_EQ(store_.RefCount(id), 1u);  // moved, not given back
  sent.release();                      // handed to the guest
  sent = LookupRef();
  EXPECT_EQ(store_.RefCount(id), 1u);
  store_.Forget(id, 1);

  LookupRef root(store_, store_.Get(kRootNodeId));  // the root is never counted
  root = LookupRef();
  EXPECT_NE(store_.Get(kRootNodeId), nullptr);
}

}  // namespace
}  // namespace svfs::fs

namespace svfs::fs {
namespace {

TEST(InodeStoreHandles, DifferentHandleForSameKeyIsANewNode) {
  InodeStore store;
  auto root = std::make_shared<InodeData>();
  root->key = InodeKey{1, 1, 1};
  store.SetRoot(root);
  auto make = [](unsigned char tag) {
    auto inode = std::make_shared<InodeData>();
    inode->key = InodeKey{1, 42, 1};
    inode->handle = FileHandle{1, {tag}};
    return inode;
  };
  NodeId old_id = store.Acquire(make(1))->id;
  EXPECT_EQ(store.Acquire(make(1))->id, old_id);  // same handle: same node
  NodeId new_id = store.Acquire(make(2))->id;     // inode number reused by a new file
  EXPECT_NE(new_id, old_id);
  store.Forget(old_id, 2);  // must not drop the key of the new node
  EXPECT_EQ(store.Get(old_id), nullptr);
  EXPECT_EQ(store.Acquire(make(2))->id, new_id);
  EXPECT_EQ(store.RefCount(new_id), 2u);
}

}  // namespace
}  // namespace svfs::fs
