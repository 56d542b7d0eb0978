// Smoke test of the daemon's other command-line options: each configuration
// must mount, serve a basic workload identically to the host, and exit 0.
#include <dirent.h>

#include "svfsd_fixture.h"

namespace svfs_it {
namespace {

struct OptionCase {
  std::string name;
  std::string cache;
  std::vector<std::string> args;
  std::string log_level = "info";
};
void PrintTo(const OptionCase& c, std::ostream* os) { *os << c.name; }

class OptionsTest : public SvfsdFixture, public ::testing::WithParamInterface<OptionCase> {
 protected:
  DaemonOptions Options() override {
    DaemonOptions o;
    o.cache = GetParam().cache;
    o.extra_args = GetParam().args;
    o.log_level = GetParam().log_level;
    return o;
  }
};

TEST_P(OptionsTest, BasicWorkload) {
  ASSERT_EQ(::mkdir(M("d").c_str(), 0755), 0) << ErrnoName(errno);
  const std::string data = PatternData(300000, 5);
  ASSERT_EQ(WriteFile(M("d/f"), data), 0);
  ASSERT_EQ(::rename(M("d/f").c_str(), M("d/g").c_str()), 0);
  ASSERT_EQ(::link(M("d/g").c_str(), M("d/h").c_str()), 0) << ErrnoName(errno);
  EXPECT_EQ(Fnv1a(ReadFileOrDie(H("d/g"))), Fnv1a(data));
  EXPECT_EQ(Fnv1a(ReadFileOrDie(M("d/h"))), Fnv1a(data));
  EXPECT_EQ(Stat(H("d/g"))->st_nlink, 2u);
  ASSERT_EQ(WriteFile(H("d/host"), "h"), 0);
  // Concurrent readers (exercises the thread pool).
  std::vector<std::thread> threads;
  std::atomic<int> bad = 0;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 20; ++i)
        if (Fnv1a(ReadFileOrDie(M("d/g"))) != Fnv1a(data)) ++bad;
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(bad.load(), 0);
  int n = 0;
  DIR* dir = ::opendir(M("d").c_str());
  ASSERT_NE(dir, nullptr);
  while (::readdir(dir)) ++n;
  ::closedir(dir);
  EXPECT_EQ(n, 5);  // . .. g h host
  ASSERT_EQ(::unlink(M("d/g").c_str()), 0);
  ASSERT_EQ(::unlink(M("d/h").c_str()), 0);
  ASSERT_EQ(::unlink(M("d/host").c_str()), 0);
  ASSERT_EQ(::rmdir(M("d").c_str()), 0) << ErrnoName(errno);
  EXPECT_FALSE(Lstat(H("d")));
}

INSTANTIATE_TEST_SUITE_P(
    Options, OptionsTest,
    ::testing::Values(OptionCase{"threads1", "auto", {"--thread-pool-size", "1"}},
                      OptionCase{"threads16", "none", {"--thread-pool-size", "16"}},
                      OptionCase{"handles_never", "auto", {"--inode-file-handles", "never"}},
                      OptionCase{"handles_prefer", "auto", {"--inode-file-handles", "prefer"}},
                      OptionCase{"handles_mandatory", "metadata", {"--inode-file-handles", "mandatory"}},
                      OptionCase{"submounts", "always", {"--announce-submounts"}},
                      OptionCase{"killpriv_v2_c_dialect", "auto", {"-o", "killpriv_v2"}},
                      OptionCase{"no_killpriv_v2", "auto", {"--killpriv-v2", "--no-killpriv-v2"}},
                      OptionCase{"debug_log", "auto", {}, "debug"}),
    [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace svfs_it
