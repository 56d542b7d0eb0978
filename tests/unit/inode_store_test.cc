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
    store_.set_root(Make(""));
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
  auto root = store_.get(kRootNodeId);
  ASSERT_NE(root, nullptr);
  EXPECT_EQ(root->id, kRootNodeId);
  store_.forget(kRootNodeId, 100);
  EXPECT_NE(store_.get(kRootNodeId), nullptr);
}

TEST_F(InodeStoreTest, LookupTwiceForgetOneKeepsForgetTwoFrees) {
  NodeId id = store_.acquire(Make("/a"))->id;
  EXPECT_GE(id, 2u);
  EXPECT_EQ(store_.acquire(Make("/a"))->id, id);
  EXPECT_EQ(store_.ref_count(id), 2u);
  store_.forget(id, 1);
  ASSERT_NE(store_.get(id), nullptr);
  EXPECT_EQ(store_.ref_count(id), 1u);
  store_.forget(id, 1);
  EXPECT_EQ(store_.get(id), nullptr);
  EXPECT_EQ(store_.size(), 1u);
}

TEST_F(InodeStoreTest, ForgetTwoAtOnceFrees) {
  NodeId id = store_.acquire(Make("/a"))->id;
  store_.acquire(Make("/a"));
  store_.forget(id, 2);
  EXPECT_EQ(store_.get(id), nullptr);
}

TEST_F(InodeStoreTest, SameHostInodeThroughTwoNamesIsOneNode) {
  NodeId a = store_.acquire(Make("/a"))->id;
  NodeId b = store_.acquire(Make("/b"))->id;
  NodeId c = store_.acquire(Make("/c"))->id;
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  EXPECT_EQ(store_.ref_count(a), 2u);
}

TEST_F(InodeStoreTest, NewNodeIdsAreNotReused) {
  NodeId a = store_.acquire(Make("/a"))->id;
  store_.forget(a, 1);
  NodeId again = store_.acquire(Make("/a"))->id;
  EXPECT_NE(a, again);
}

TEST_F(InodeStoreTest, ForgetOfUnknownIdIsHarmless) {
  store_.forget(12345, 1);
  store_.forget(0, 1);
  NodeId a = store_.acquire(Make("/a"))->id;
  store_.forget(a + 1000, 5);
  EXPECT_EQ(store_.ref_count(a), 1u);
}

TEST_F(InodeStoreTest, CountsNeverUnderflow) {
  NodeId a = store_.acquire(Make("/a"))->id;
  store_.forget(a, 1000);
  EXPECT_EQ(store_.get(a), nullptr);
  store_.forget(a, 1);  // already gone
  NodeId again = store_.acquire(Make("/a"))->id;
  EXPECT_EQ(store_.ref_count(again), 1u);
  store_.forget(again, UINT64_MAX);
  EXPECT_EQ(store_.get(again), nullptr);
}

TEST_F(InodeStoreTest, InFlightReferenceSurvivesForget) {
  auto inode = store_.acquire(Make("/a"));
  int fd = inode->fd.get();
  store_.forget(inode->id, 1);
  EXPECT_EQ(store_.get(inode->id), nullptr);
  // Still usable: the shared_ptr keeps the O_PATH fd open.
  struct stat st {};
  EXPECT_EQ(::fstat(fd, &st), 0);
}

TEST_F(InodeStoreTest, ClearKeepsRoot) {
  NodeId a = store_.acquire(Make("/a"))->id;
  store_.clear();
  EXPECT_EQ(store_.get(a), nullptr);
  EXPECT_NE(store_.get(kRootNodeId), nullptr);
  EXPECT_EQ(store_.size(), 1u);
}

TEST_F(InodeStoreTest, LookupRefGivesItsReferenceBackUnlessReleased) {
  NodeId id = 0;
  {
    LookupRef dropped(store_, store_.acquire(Make("/a")));
    id = dropped.inode()->id;
    EXPECT_EQ(store_.ref_count(id), 1u);
  }
  EXPECT_EQ(store_.get(id), nullptr);  // an operation that failed after its lookup

  LookupRef moved_from(store_, store_.acquire(Make("/a")));
  id = moved_from.inode()->id;
  LookupRef sent(std::move(moved_from));
  EXPECT_EQ(store_.ref_count(id), 1u);  // moved, not given back
  sent.release();                      // handed to the guest
  sent = LookupRef();
  EXPECT_EQ(store_.ref_count(id), 1u);
  store_.forget(id, 1);

  LookupRef root(store_, store_.get(kRootNodeId));  // the root is never counted
  root = LookupRef();
  EXPECT_NE(store_.get(kRootNodeId), nullptr);
}

}  // namespace
}  // namespace svfs::fs

namespace svfs::fs {
namespace {

TEST(InodeStoreHandles, DifferentHandleForSameKeyIsANewNode) {
  InodeStore store;
  auto root = std::make_shared<InodeData>();
  root->key = InodeKey{1, 1, 1};
  store.set_root(root);
  auto make = [](unsigned char tag) {
    auto inode = std::make_shared<InodeData>();
    inode->key = InodeKey{1, 42, 1};
    inode->handle = FileHandle{1, {tag}};
    return inode;
  };
  NodeId old_id = store.acquire(make(1))->id;
  EXPECT_EQ(store.acquire(make(1))->id, old_id);  // same handle: same node
  NodeId new_id = store.acquire(make(2))->id;     // inode number reused by a new file
  EXPECT_NE(new_id, old_id);
  store.forget(old_id, 2);  // must not drop the key of the new node
  EXPECT_EQ(store.get(old_id), nullptr);
  EXPECT_EQ(store.acquire(make(2))->id, new_id);
  EXPECT_EQ(store.ref_count(new_id), 2u);
}

}  // namespace
}  // namespace svfs::fs
