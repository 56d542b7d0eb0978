// Large directories: 10,000 entries listed completely in both directions.
#include <dirent.h>

#include <set>

#include "svfsd_fixture.h"

namespace svfs_it {
namespace {

constexpr int kEntries = 10000;

std::string EntryName(int i) {
  // Varying name lengths exercise dirent packing/alignment.
  return "entry-" + std::to_string(i) + std::string(i % 37, 'x');
}

// Lists dir with readdir; returns all names (including . and ..) in order.
std::vector<std::string> ListDir(const std::string& dir, int* err) {
  std::vector<std::string> names;
  *err = 0;
  DIR* d = ::opendir(dir.c_str());
  if (!d) {
    *err = errno;
    return names;
  }
  errno = 0;
  while (dirent* e = ::readdir(d)) names.emplace_back(e->d_name);
  *err = errno;
  ::closedir(d);
  return names;
}

void ExpectExactListing(const std::vector<std::string>& names) {
  std::multiset<std::string> got(names.begin(), names.end());
  std::set<std::string> want = {".", ".."};
  for (int i = 0; i < kEntries; ++i) want.insert(EntryName(i));
  EXPECT_EQ(names.size(), want.size()) << "wrong entry count (duplicates or missing)";
  std::set<std::string> unique(names.begin(), names.end());
  EXPECT_EQ(unique.size(), names.size()) << "duplicate entries in listing";
  int missing = 0, extra = 0;
  for (auto& w : want)
    if (!got.count(w) && ++missing <= 5) ADD_FAILURE() << "missing entry: " << w;
  for (auto& g : unique)
    if (!want.count(g) && ++extra <= 5) ADD_FAILURE() << "unexpected entry: " << g;
  EXPECT_EQ(missing, 0);
  EXPECT_EQ(extra, 0);
}

class ReaddirTest : public SvfsdCacheFixture {};

TEST_P(ReaddirTest, HostCreatedEntriesListedThroughMount) {
  ASSERT_EQ(::mkdir(H("big").c_str(), 0755), 0);
  for (int i = 0; i < kEntries; ++i) {
    int fd = ::open(H("big/" + EntryName(i)).c_str(), O_CREAT | O_WRONLY, 0644);
    ASSERT_GE(fd, 0);
    ::close(fd);
  }
  int err = 0;
  auto names = ListDir(M("big"), &err);
  ASSERT_EQ(err, 0) << ErrnoName(err);
  ExpectExactListing(names);
  // A second listing (now with warm caches) is still complete.
  names = ListDir(M("big"), &err);
  ASSERT_EQ(err, 0);
  EXPECT_EQ(names.size(), static_cast<size_t>(kEntries + 2));
  // d_type is right for a sample (readdirplus or not).
  DIR* d = ::opendir(M("big").c_str());
  ASSERT_NE(d, nullptr);
  int checked = 0;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n == "." || n == "..") {
      EXPECT_TRUE(e->d_type == DT_DIR || e->d_type == DT_UNKNOWN) << n;
    } else {
      EXPECT_TRUE(e->d_type == DT_REG || e->d_type == DT_UNKNOWN) << n;
      ++checked;
    }
  }
  ::closedir(d);
  EXPECT_EQ(checked, kEntries);
  // stat of an entry works after the listing (READDIRPLUS-provided attrs).
  auto st = Stat(M("big/" + EntryName(1234)));
  ASSERT_TRUE(st);
  EXPECT_TRUE(S_ISREG(st->st_mode));
}

TEST_P(ReaddirTest, MountCreatedEntriesSeenOnHost) {
  ASSERT_EQ(::mkdir(M("big").c_str(), 0755), 0);
  for (int i = 0; i < kEntries; ++i) {
    int fd = ::open(M("big/" + EntryName(i)).c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644);
    ASSERT_GE(fd, 0) << "create #" << i << ": " << ErrnoName(errno);
    ::close(fd);
  }
  int err = 0;
  auto host = ListDir(H("big"), &err);
  ASSERT_EQ(err, 0);
  ExpectExactListing(host);
  auto via_mount = ListDir(M("big"), &err);
  ASSERT_EQ(err, 0);
  ExpectExactListing(via_mount);
}

TEST_P(ReaddirTest, ListingWhileDeletingTerminates) {
  ASSERT_EQ(::mkdir(H("d").c_str(), 0755), 0);
  for (int i = 0; i < 2000; ++i) ASSERT_EQ(WriteFile(H("d/" + std::to_string(i)), ""), 0);
  // Delete every entry while iterating: the iteration must terminate and
  // never return a name twice.
  DIR* dir = ::opendir(M("d").c_str());
  ASSERT_NE(dir, nullptr);
  std::set<std::string> seen;
  int dups = 0;
  while (dirent* e = ::readdir(dir)) {
    std::string n = e->d_name;
    if (!seen.insert(n).second) ++dups;
    if (n != "." && n != "..") ::unlink(M("d/" + n).c_str());
  }
  ::closedir(dir);
  EXPECT_EQ(dups, 0);
  int err = 0;
  auto rest = ListDir(M("d"), &err);
  // Everything seen was deleted; anything left must be on the host too.
  for (auto& n : rest) {
    if (n != "." && n != "..") {
      EXPECT_TRUE(Lstat(H("d/" + n))) << n;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(CacheModes, ReaddirTest, ::testing::Values("none", "auto"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace svfs_it
