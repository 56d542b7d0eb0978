// What the programs that launch virtiofsd parse from svfsd (--version, --print-capabilities,
// --help), and the command line's rules: refusals, the last of a repeated option winning, and
// the defaults shared with virtiofsd (open-file limit, submounts, the socket's group).
#include <grp.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "tests/support/files.h"
#include "tests/support/process.h"
#include "tests/support/wait.h"
#include "tests/vhost/frontend.h"
#include "tests/vhost/fuse_client.h"
#include "tests/vhost/launched_svfsd.h"

namespace svfs::vhost {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using svfs_test::TempDir;

TEST(SvfsdCommandLineTest, VersionParsesAsVirtiofsdAndNamesSvfsd) {
  for (const char* flag : {"--version", "-V"}) {
    auto result = svfs_test::RunCommand({SVFSD_PATH, flag});
    EXPECT_EQ(result.status, 0) << flag;
    EXPECT_TRUE(std::regex_search(result.output, std::regex("^virtiofsd [0-9]+\\.[0-9]+\\.[0-9]+")))
        << result.output;
    EXPECT_NE(result.output.find("svfsd"), std::string::npos) << result.output;
  }
}

// libvirt (qemuVhostUserFillFSCapabilities) reads "type" and the "features" array; a feature
// svfsd would not honour must not be there: "migrate-precopy" (no migration) and
// "separate-options" (libvirt then refuses every <lock> element).
TEST(SvfsdCommandLineTest, CapabilitiesPromiseOnlyWhatSvfsdDoes) {
  auto result = svfs_test::RunCommand({SVFSD_PATH, "--print-capabilities"});
  EXPECT_EQ(result.status, 0);
  EXPECT_TRUE(std::regex_search(result.output, std::regex("\"type\"\\s*:\\s*\"fs\"")))
      << result.output;
  EXPECT_TRUE(std::regex_search(result.output, std::regex("\"features\"\\s*:\\s*\\[")))
      << result.output;
  EXPECT_EQ(result.output.find("migrate-precopy"), std::string::npos) << result.output;
  EXPECT_EQ(result.output.find("separate-options"), std::string::npos) << result.output;
}

TEST(SvfsdCommandLineTest, HelpListsEveryOptionTheLaunchersPass) {
  auto result = svfs_test::RunCommand({SVFSD_PATH, "--help"});
  EXPECT_EQ(result.status, 0);
  for (const char* option :
       {"--shared-dir", "--socket-path", "--fd", "--cache", "--shared-versions", "--sandbox",
        "--seccomp", "--thread-pool-size", "--xattr", "--announce-submounts", "--rlimit-nofile",
        "--log-level", "--syslog", "--print-capabilities", "--socket-group", "--uid-map",
        "--gid-map", "--translate-uid", "--translate-gid", "--version", "--allow-mmap",
        "vhost_user_socket=",
        "source=", "no_posix_lock", "announce_submounts", "sandbox=", "-f", "-d"}) {
    EXPECT_NE(result.output.find(option), std::string::npos) << option;
  }
}

// Every refusal is one line that starts with the option it refuses.
TEST(SvfsdCommandLineTest, RefusalsAreOneLineNamingTheOption) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--translate-gid=squash-guest:0:1000:0"}, "svfsd: --translate-gid 'squash-guest:0:1000:0': "},
      {{"--translate-uid=map:0:1000:10", "--translate-uid=guest:5:1:1"},
       "svfsd: --translate-uid 'guest:5:1:1': its guest IDs overlap"},
      {{"--translate-uid=bogus:1:2:3"}, "svfsd: --translate-uid 'bogus:1:2:3': expected map, "},
      {{"--translate-uid=map:0:1000:1", "--posix-acl"}, "svfsd: --posix-acl cannot be used with"},
      {{"--gid-map=:0:1000:1"}, "svfsd: --gid-map "},
      {{"--xattrmap=:map::user.virtiofs.:"}, "svfsd: --xattrmap"},
      {{"--preserve-noatime"}, "svfsd: --preserve-noatime"},
      {{"--security-label"}, "svfsd: --security-label"},
      {{"-o", "security_label"}, "svfsd: -o security_label"},
      {{"-o", "xattrmap=x"}, "svfsd: -o xattrmap"},
      {{"-o", "frobnicate"}, "svfsd: -o frobnicate"},
      {{"-o", "dax"}, "svfsd: -o dax: a guest mount option"},
      {{"--cache", "sometimes"}, "svfsd: --cache sometimes"},
      {{"--sandbox", "jail"}, "svfsd: --sandbox jail"},
      {{"--socket-group", "no-such-group-svfs"}, "svfsd: --socket-group no-such-group-svfs"},
      {{"--fd", "three"}, "svfsd: --fd three: expected a number"},
  };
  for (const auto& [extra, prefix] : cases) {
    std::vector<std::string> argv{SVFSD_PATH, "--socket-path", "/nonexistent/s", "--shared-dir",
                                  "/nonexistent"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto result = svfs_test::RunCommand(argv);
    EXPECT_EQ(result.status, 2) << extra.front() << ": " << result.output;
    EXPECT_EQ(std::count(result.output.begin(), result.output.end(), '\n'), 1)
        << extra.front() << ": " << result.output;
    EXPECT_EQ(result.output.rfind(prefix, 0), 0u) << extra.front() << ": " << result.output;
    EXPECT_EQ(result.output.find(": :"), std::string::npos) << result.output;
  }
  // Past parsing: a missing shared directory is named as such (not as a sandbox failure).
  auto missing = svfs_test::RunCommand({SVFSD_PATH, "--socket-path", "/nonexistent/s",
                                        "--shared-dir", "/nonexistent", "--rlimit-nofile", "0"});
  EXPECT_EQ(missing.status, 1);
  EXPECT_EQ(missing.output, "svfsd: --shared-dir /nonexistent: No such file or directory\n");
  auto unknown = svfs_test::RunCommand({SVFSD_PATH, "--frobnicate"});
  EXPECT_EQ(unknown.status, 2);
  EXPECT_EQ(std::count(unknown.output.begin(), unknown.output.end(), '\n'), 1) << unknown.output;
  EXPECT_NE(unknown.output.find("--frobnicate"), std::string::npos) << unknown.output;
}

// Translations and identity namespace maps are accepted (parsing succeeds, capabilities print).
TEST(SvfsdCommandLineTest, IdMappingsAreAccepted) {
  auto result = svfs_test::RunCommand({SVFSD_PATH, "--uid-map=:1000:1000:1:",
                                       "--gid-map=/5/5/10/", "--translate-uid=map:7:700:100",
                                       "--translate-uid=forbid-guest:0:7",
                                       "--translate-gid=squash-guest:0:9:65536",
                                       "--print-capabilities"});
  EXPECT_EQ(result.status, 0) << result.output;
}

// The Rust virtiofsd's --allow-mmap turns on what svfsd always offers: accepted, not refused.
TEST(SvfsdCommandLineTest, AllowMmapIsAccepted) {
  auto result = svfs_test::RunCommand({SVFSD_PATH, "--allow-mmap", "--print-capabilities"});
  EXPECT_EQ(result.status, 0) << result.output;
}

class SvfsdStartTest : public ::testing::Test {
 protected:
  void SetUp() override {
    shared_ = tmp_.path() / "shared";
    fs::create_directory(shared_);
    socket_ = tmp_.path() / "vhost.sock";
  }
  std::vector<std::string> Base() const {
    return {"--socket-path", socket_.string(), "--shared-dir", shared_.string(), "--sandbox",
            "none"};
  }
  // The "serving DIR on ..." line of a daemon started with Base() + extra; stops it again.
  std::string ServingLine(const std::vector<std::string>& extra) {
    std::vector<std::string> args = Base();
    args.insert(args.end(), extra.begin(), extra.end());
    Daemon daemon({.args = args});
    const std::string serving = "serving " + shared_.string() + " on";
    EXPECT_TRUE(daemon.WaitForOutput(serving, 10s)) << daemon.Output();
    ::kill(daemon.pid(), SIGTERM);
    EXPECT_EQ(daemon.WaitExit(5s), 0) << daemon.Output();
    std::string output = daemon.Output();
    const size_t at = output.find(serving);
    return at == std::string::npos ? output : output.substr(at, output.find('\n', at) - at);
  }
  TempDir tmp_;
  fs::path shared_, socket_;
};

// As the Rust virtiofsd: a repeated option takes its last value, across both dialects.
TEST_F(SvfsdStartTest, RepeatedOptionsTakeTheLastValue) {
  EXPECT_NE(ServingLine({"--cache=auto", "--cache=none", "--cache=shared"}).find("cache=shared"),
            std::string::npos);
  EXPECT_NE(ServingLine({"--cache=auto", "--shared-versions"}).find("cache=shared"),
            std::string::npos);
  EXPECT_NE(ServingLine({"--shared-versions", "--cache=always"}).find("cache=always"),
            std::string::npos);
  EXPECT_NE(ServingLine({"-o", "cache=none", "--cache=auto", "-o", "cache=always"})
                .find("cache=always"),
            std::string::npos);
}

// A group by name or by number owns the socket (mode 0660).
TEST_F(SvfsdStartTest, SocketGroupByNameOrNumber) {
  const group* entry = ::getgrnam("daemon");
  if (entry == nullptr) entry = ::getgrgid(1);
  if (entry == nullptr) GTEST_SKIP() << "no group 'daemon' or gid 1";
  const gid_t named_gid = entry->gr_gid;
  const std::string name = entry->gr_name;
  for (const auto& [group_arg, gid] :
       {std::pair<std::string, gid_t>{name, named_gid}, {"4242", 4242}}) {
    std::vector<std::string> args = Base();
    args.insert(args.end(), {"--socket-group", group_arg});
    Daemon daemon({.args = args});
    ASSERT_TRUE(daemon.WaitForOutput(kWaiting, 10s)) << daemon.Output();
    struct stat st {};
    ASSERT_EQ(::stat(socket_.c_str(), &st), 0);
    EXPECT_EQ(st.st_gid, gid) << group_arg;
    EXPECT_EQ(st.st_mode & 0777, 0660u) << group_arg;
    ::kill(daemon.pid(), SIGTERM);
    EXPECT_EQ(daemon.WaitExit(5s), 0) << daemon.Output();
  }
}

uint64_t ReadNumber(const char* path) {
  std::ifstream in(path);
  uint64_t value = 0;
  in >> value;
  return value;
}

bool HasCapSysResource() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("CapEff:", 0) == 0) {
      return (std::stoull(line.substr(7), nullptr, 16) >> 24) & 1;  // CAP_SYS_RESOURCE = 24
    }
  }
  return false;
}

// Both virtiofsds raise RLIMIT_NOFILE to the system maximum by default; so does svfsd, from the
// 256 a user's shell may have (the issue's `ulimit -n 256`). Without CAP_SYS_RESOURCE the hard
// limit cannot move: then the soft limit goes up to it, and the log says so.
TEST_F(SvfsdStartTest, OpenFileLimitIsRaisedToTheSystemMaximum) {
  const bool privileged = HasCapSysResource();
  uint64_t expected = 4096;
  if (privileged) {
    expected = ReadNumber("/proc/sys/fs/nr_open");
    const uint64_t file_max = ReadNumber("/proc/sys/fs/file-max");
    if (file_max != 0 && file_max < expected) expected = file_max;
  }
  Daemon daemon({.args = Base(), .nofile = rlimit{256, 4096}});
  ASSERT_TRUE(daemon.WaitForOutput(kWaiting, 10s)) << daemon.Output();
  std::ifstream limits("/proc/" + std::to_string(daemon.pid()) + "/limits");
  std::string line, found;
  while (std::getline(limits, line)) {
    if (line.rfind("Max open files", 0) == 0) found = line;
  }
  std::istringstream fields(found.substr(std::strlen("Max open files")));
  uint64_t soft = 0, hard = 0;
  fields >> soft >> hard;
  EXPECT_EQ(soft, expected) << found << (privileged ? "" : " (no CAP_SYS_RESOURCE)");
  EXPECT_GE(hard, expected) << found;
  if (!privileged) {
    EXPECT_NE(daemon.Output().find("RLIMIT_NOFILE is 4096"), std::string::npos) << daemon.Output();
  }
}

// Out of descriptors: the guest gets EMFILE and the log says why, once.
TEST_F(SvfsdStartTest, RunningOutOfDescriptorsIsLoggedOnce) {
#if defined(__SANITIZE_ADDRESS__)
  // With every descriptor taken, the sanitizer runtime cannot make the pipe it probes memory
  // with, and UBSan's vptr check then reports any object as invalid ("memory cannot be
  // printed") when svfsd starts a thread. The release build runs this test.
  GTEST_SKIP() << "descriptor exhaustion defeats the sanitizer runtime's memory probe";
#endif
  for (int i = 0; i < 300; ++i) std::ofstream(shared_ / ("f" + std::to_string(i))) << i;
  std::vector<std::string> args = Base();
  args.insert(args.end(), {"--rlimit-nofile", "128"});
  Daemon daemon({.args = args});
  ASSERT_TRUE(daemon.WaitForOutput(kWaiting, 10s)) << daemon.Output();
  int emfile = 0;
  {
    FrontendOptions options;
    options.memory_size = 32u << 20;
    options.request_queues = 1;
    VhostUserFrontend frontend(socket_.string(), options, 10s);
    FuseClient client(frontend);
    ASSERT_TRUE(client.init().as<fuse_init_out>());
    for (int i = 0; i < 300; ++i) {
      if (client.lookup(FUSE_ROOT_ID, "f" + std::to_string(i)).error() == -EMFILE) ++emfile;
    }
  }
  EXPECT_EQ(daemon.WaitExit(10s), 0) << daemon.Output();
  EXPECT_GT(emfile, 0) << "128 descriptors held 300 inodes?";
  const std::string output = daemon.Output();
  size_t lines = 0;
  for (size_t at = output.find("out of file descriptors"); at != std::string::npos;
       at = output.find("out of file descriptors", at + 1)) {
    ++lines;
  }
  EXPECT_EQ(lines, 1u) << output;
  EXPECT_NE(output.find("--rlimit-nofile"), std::string::npos) << output;
}

// As the Rust virtiofsd (since 1.6), submounts are announced unless turned off.
TEST_F(SvfsdStartTest, SubmountsAreAnnouncedByDefault) {
  for (bool announce : {true, false}) {
    std::vector<std::string> args = Base();
    if (!announce) args.push_back("--no-announce-submounts");
    Daemon daemon({.args = args});
    ASSERT_TRUE(daemon.WaitForOutput(kWaiting, 10s)) << daemon.Output();
    std::ofstream(shared_ / "hello") << "hello\n";
    Served served = ServeAndDisconnect(daemon, socket_);
    EXPECT_EQ((served.init_flags & FUSE_SUBMOUNTS) != 0, announce) << served.output;
    EXPECT_EQ(served.exit_status, 0) << served.output;
  }
}

}  // namespace
}  // namespace svfs::vhost
