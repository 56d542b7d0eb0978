// svfsd started exactly as the programs that launch virtiofsd start it. Each LaunchLineTest takes
// its command line from the source that builds it (cited per test; paths substituted), starts
// svfsd with it, serves a FUSE INIT and a LOOKUP of a file in the shared directory through the
// project's vhost-user frontend, and checks that svfsd exits 0 once the frontend goes away.
// SvfsdCommandLineTest covers what those callers parse (--version, --print-capabilities, --help),
// the rule for repeated options, refusals, and the defaults shared with virtiofsd.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <functional>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "tests/shm/test_names.h"
#include "tests/support/files.h"
#include "tests/support/metrics_scrape.h"
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

class LaunchLineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    shared_ = tmp_.path() / "shared";
    fs::create_directory(shared_);
    std::ofstream(shared_ / "hello") << "hello\n";
    socket_ = tmp_.path() / "vhost.sock";
  }

  // A daemon that creates its socket itself (--socket-path, -o vhost_user_socket=).
  Served RunWithSocketPath(Launch launch, bool expect_waiting_line = true) {
    launch.args = Substitute(launch.args, shared_, socket_);
    Daemon daemon(launch);
    if (expect_waiting_line) {
      // runtime-rs starts the VM only after this line (and waits for it without a timeout).
      EXPECT_TRUE(daemon.WaitForOutput(kWaiting, 10s)) << daemon.Output();
    } else {
      svfs_test::WaitUntil([&] { return fs::exists(socket_) || !daemon.Running(); }, 10s, 5ms);
    }
    if (!fs::exists(socket_)) throw std::runtime_error("no socket: " + daemon.Output());
    Served served = ServeAndDisconnect(daemon, socket_);
    // The daemon created the socket, so it removes it (a launcher restarting it finds none).
    EXPECT_FALSE(fs::exists(socket_)) << served.output;
    return served;
  }

  // A daemon given a listening socket by its caller (--fd), as Kata's Go runtime and libvirt do.
  Served RunWithFd(Launch launch, const std::string& escaped_dir = "") {
    launch.args = Substitute(launch.args, shared_, socket_, escaped_dir);
    UniqueFd listening = ListenOn(socket_);
    Daemon daemon(launch, listening.get());
    listening.reset();  // the caller keeps no copy (libvirt: VIR_COMMAND_PASS_FD_CLOSE_PARENT)
    return ServeAndDisconnect(daemon, socket_);
  }

  static void ExpectServed(const Served& served) {
    EXPECT_EQ(served.lookup_error, 0) << served.output;
    EXPECT_EQ(served.exit_status, 0) << "svfsd did not exit 0 after the frontend left:\n"
                                     << served.output;
  }

  TempDir tmp_;
  fs::path shared_, socket_;
};

// Kata Containers 1.11 Go runtime: kata-containers/runtime 1.11.0, virtcontainers/virtiofsd.go
// args() (-o vhost_user_socket=, the daemon makes the socket), with the Makefile's
// DEFVIRTIOFSCACHE := always and DEFVIRTIOFSEXTRAARGS := []; Start() then waits (with a
// timeout) in waitVirtiofsReady() for "Waiting for vhost-user socket connection..." on stderr.
TEST_F(LaunchLineTest, Kata111GoRuntime) {
  ExpectServed(RunWithSocketPath({.args = {"-f", "-o", "cache=always", "-o", "no_posix_lock", "-o",
                                           "source={DIR}", "-o", "vhost_user_socket={SOCKET}"}}));
}

// Kata Containers 1.x Go runtime: kata-containers/runtime 1.12.1, virtcontainers/virtiofsd.go
// args() (C virtiofsd dialect); its Makefile's DEFVIRTIOFSEXTRAARGS is []. The socket is the
// first of cmd.ExtraFiles: fd 3.
TEST_F(LaunchLineTest, Kata1xGoRuntime) {
  ExpectServed(RunWithFd({.args = {"--syslog", "-f", "-o", "cache=auto", "-o", "no_posix_lock",
                                   "-o", "source={DIR}", "--fd=3"},
                          .pass_fd = 3}));
}

// Kata Containers 2.0 Go runtime with enable_debug: kata-containers/kata-containers 2.0.0,
// src/runtime/virtcontainers/virtiofsd.go args() ("-o debug" when debugging), then
// DEFVIRTIOFSEXTRAARGS from src/runtime/Makefile 2.0.0: ["--thread-pool-size=1"].
TEST_F(LaunchLineTest, Kata20GoRuntimeWithDebug) {
  ExpectServed(RunWithFd({.args = {"--syslog", "-f", "-o", "cache=auto", "-o", "no_posix_lock",
                                   "-o", "source={DIR}", "--fd=3", "-o", "debug",
                                   "--thread-pool-size=1"},
                          .pass_fd = 3}));
}

// Kata Containers 2.2 - 3.1 Go runtime: kata-containers/kata-containers 3.0.0,
// src/runtime/virtcontainers/virtiofsd.go args() (still the C dialect), then
// virtio_fs_extra_args from configuration-qemu.toml.in = DEFVIRTIOFSEXTRAARGS in
// src/runtime/Makefile 3.0.0: ["--thread-pool-size=1", "-o", "announce_submounts"].
TEST_F(LaunchLineTest, Kata2xGoRuntimeCDialect) {
  ExpectServed(RunWithFd({.args = {"--syslog", "-o", "cache=auto", "-o", "no_posix_lock", "-o",
                                   "source={DIR}", "--fd=3", "-f", "--thread-pool-size=1", "-o",
                                   "announce_submounts"},
                          .pass_fd = 3}));
}

// Kata Containers 3.2+ Go runtime (the Rust virtiofsd dialect): kata-containers/kata-containers
// 3.2.0 and main (2026-08), src/runtime/virtcontainers/virtiofsd.go args(), then
// DEFVIRTIOFSEXTRAARGS from src/runtime/Makefile: ["--thread-pool-size=1", "--announce-submounts"].
TEST_F(LaunchLineTest, Kata3xGoRuntime) {
  ExpectServed(RunWithFd({.args = {"--syslog", "--cache=auto", "--shared-dir={DIR}", "--fd=3",
                                   "--thread-pool-size=1", "--announce-submounts"},
                          .pass_fd = 3}));
}

// Kata runtime-rs 3.0.0: src/runtime-rs/crates/resource/src/share_fs/
// share_virtio_fs_standalone.rs virtiofsd_args() (C dialect with -o vhost_user_socket=), then
// DEFVIRTIOFSEXTRAARGS from src/runtime-rs/Makefile 3.0.0; run_virtiofsd() waits for the
// "Waiting for vhost-user socket connection" line on stderr before the VM starts.
TEST_F(LaunchLineTest, KataRuntimeRs30) {
  ExpectServed(RunWithSocketPath({.args = {"-f", "-o", "vhost_user_socket={SOCKET}", "-o",
                                           "source={DIR}", "-o", "cache=auto",
                                           "--thread-pool-size=1", "-o", "announce_submounts"}}));
}

// Kata runtime-rs 3.1+ (main, 2026-08): the same file's virtiofsd_args() in the Rust dialect,
// the extra args from src/runtime-rs/Makefile, and --xattr unless disable_guest_selinux.
TEST_F(LaunchLineTest, KataRuntimeRs3x) {
  ExpectServed(RunWithSocketPath({.args = {"--socket-path", "{SOCKET}", "--shared-dir", "{DIR}",
                                           "--cache", "auto", "--thread-pool-size=1", "-o",
                                           "announce_submounts", "--xattr"}}));
}

// The same in rootless mode (setup_virtiofsd(): is_rootless()): the socket path is only its file
// name and virtiofsd runs in the socket's directory, to stay under the 108-byte sun_path limit.
TEST_F(LaunchLineTest, KataRuntimeRs3xRootless) {
  ExpectServed(RunWithSocketPath({.args = {"--socket-path", socket_.filename().string(),
                                           "--shared-dir", "{DIR}", "--cache", "auto",
                                           "--thread-pool-size=1", "-o", "announce_submounts",
                                           "--xattr"},
                                  .cwd = socket_.parent_path().string()}));
}

// libvirt's qemuVirtioFSBuildCommandLine (src/qemu/qemu_virtiofs.c, libvirt 10.x) for a daemon
// whose --print-capabilities lacks "separate-options", as svfsd's does: the -o dialect, with the
// path's commas doubled (virQEMUBuildBufferEscapeComma), <cache mode='always'>,
// <sandbox mode='chroot'>, xattr='on', <lock posix='on' flock='on'>, then
// <thread_pool size='16'>, <openfiles max='4096'> and virtiofsd_debug=1 in qemu.conf.
TEST_F(LaunchLineTest, LibvirtOptionsDialect) {
  shared_ = tmp_.path() / "a,b";
  fs::create_directory(shared_);
  std::ofstream(shared_ / "hello") << "hello\n";
  const std::string escaped = Replace(shared_.string(), ",", ",,");
  ExpectServed(RunWithFd({.args = {"--fd=25", "-o",
                                   "source={DIR,},cache=always,sandbox=chroot,xattr,flock,"
                                   "posix_lock",
                                   "--thread-pool-size=16", "--rlimit-nofile=4096", "-d"},
                          .pass_fd = 25},
                         escaped));
}

// The same function's separate-options branch (a backend whose capabilities list it):
// --shared-dir, <cache mode='none'> as "--cache never", <sandbox mode='namespace'>, --xattr,
// virtiofsd_debug as --log-level debug.
TEST_F(LaunchLineTest, LibvirtSeparateOptions) {
  ExpectServed(RunWithFd({.args = {"--fd=25", "--shared-dir", "{DIR}", "--cache", "never",
                                   "--sandbox", "namespace", "--xattr", "--thread-pool-size=4",
                                   "--log-level", "debug"},
                          .pass_fd = 25}));
}

// docs/operations.md's libvirt domain, as an operator defines it: its <filesystem>'s <binary>
// and <source> turned into svfsd's line as qemuVirtioFSBuildCommandLine does for a daemon without
// "separate-options" (the test above): --fd, then -o source=,cache=,sandbox=[,xattr][,flock]
// [,posix_lock], then --thread-pool-size.
std::string XmlBlockOfOperationsMd() {
  const std::string doc = svfs_test::ReadWholeFile(SVFS_SOURCE_DIR "/docs/operations.md");
  const size_t start = doc.find("```xml\n", doc.find("\n## libvirt\n"));
  if (start == std::string::npos) return "";
  return doc.substr(start + 7, doc.find("```", start + 7) - start - 7);
}

// The value of `attribute` in the first <element ...> of `xml`; "" if absent.
std::string XmlAttribute(const std::string& xml, const std::string& element,
                         const std::string& attribute) {
  const size_t tag = xml.find("<" + element + " ");
  if (tag == std::string::npos) return "";
  const std::string open_tag = xml.substr(tag, xml.find('>', tag) - tag);
  const size_t at = open_tag.find(" " + attribute + "='");
  if (at == std::string::npos) return "";
  const size_t value = at + attribute.size() + 3;
  return open_tag.substr(value, open_tag.find('\'', value) - value);
}

TEST_F(LaunchLineTest, LibvirtDomainOfOperationsMdStartsAsLibvirtStartsIt) {
  const std::string xml = XmlBlockOfOperationsMd();
  ASSERT_FALSE(xml.empty());
  EXPECT_EQ(XmlAttribute(xml, "access", "mode"), "shared") << "vhost-user needs shared RAM";
  EXPECT_EQ(XmlAttribute(xml, "driver", "type"), "virtiofs");
  EXPECT_EQ(XmlAttribute(xml, "binary", "path"), "/usr/bin/svfsd");  // where the .deb puts it
  // libvirt's <cache mode> is none or always (absent: the daemon's default, auto); tristate
  // switches give the option when on and its no_ form when off.
  const std::string cache = XmlAttribute(xml, "cache", "mode");
  std::string options = "source={DIR}";
  if (!cache.empty()) options += ",cache=" + cache;
  if (const std::string sandbox = XmlAttribute(xml, "sandbox", "mode"); !sandbox.empty()) {
    options += ",sandbox=" + sandbox;
  }
  const auto tristate = [&](const std::string& element, const std::string& attribute,
                            const std::string& option) {
    const std::string value = XmlAttribute(xml, element, attribute);
    if (value == "on") options += "," + option;
    if (value == "off") options += ",no_" + option;
  };
  tristate("binary", "xattr", "xattr");
  tristate("lock", "flock", "flock");
  tristate("lock", "posix", "posix_lock");
  Launch launch{.args = {"--fd=25", "-o", options}, .pass_fd = 25};
  if (const std::string pool = XmlAttribute(xml, "thread_pool", "size"); !pool.empty()) {
    launch.args.push_back("--thread-pool-size=" + pool);
  }
  const Served served = RunWithFd(launch);
  ExpectServed(served);
  EXPECT_EQ(served.entry_valid, cache == "none" ? 0u : cache == "always" ? 86400u : 1u)
      << "the domain's <cache mode='" << cache << "'>";
}

// libvirt session mode (qemu:///session): qemuVirtioFSPrepareIdMap adds --uid-map/--gid-map
// (:0:EUID:1: and the user's /etc/subuid range) to a daemon it runs as that user. A root svfsd
// creates no user namespace, so it refuses such maps, in one line that names the option and says
// what to do.
TEST_F(LaunchLineTest, LibvirtSessionModeIdMapAsRootIsRefusedInOneLine) {
  if (::geteuid() != 0) GTEST_SKIP() << "checks what a root svfsd does";
  auto result = svfs_test::RunCommand({SVFSD_PATH, "--fd=25", "-o", "source=" + shared_.string(),
                                       "--uid-map=:0:1000:1:", "--uid-map=:1:100000:65536:",
                                       "--gid-map=:0:1000:1:", "--gid-map=:1:100000:65536:"});
  EXPECT_EQ(result.status, 2) << result.output;
  EXPECT_EQ(std::count(result.output.begin(), result.output.end(), '\n'), 1) << result.output;
  EXPECT_EQ(result.output.rfind("svfsd: --uid-map ':0:1000:1:': ", 0), 0u) << result.output;
  EXPECT_NE(result.output.find("unprivileged user"), std::string::npos) << result.output;
}

// An unprivileged svfsd (as libvirt's session mode and rootless Kata start it), --sandbox
// namespace by default: it puts itself in a user namespace of its own, serves INIT, LOOKUP and
// CREATE (the new file owned by its user on the host), says once what cannot work, and exits 0.
class UnprivilegedTest : public LaunchLineTest {
 protected:
  static constexpr uid_t kNobody = 65534;
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root to start svfsd as nobody (setpriv)";
    LaunchLineTest::SetUp();
    for (const fs::path& path : {tmp_.path(), shared_, shared_ / "hello"}) {
      ASSERT_EQ(::chown(path.c_str(), kNobody, kNobody), 0) << path;
    }
  }

  // Runs svfsd as nobody with `extra` options; INIT, LOOKUP "hello" and CREATE "created".
  struct Outcome {
    bool skipped = false;
    int init_error = 0, lookup_error = 0, create_error = 0;
    bool own_user_namespace = false;
    int exit_status = -1;
    std::string output;
  };
  Outcome Serve(const std::vector<std::string>& extra,
                const std::function<void(FuseClient&, pid_t svfsd)>& then = {}) {
    Outcome outcome;
    Launch launch{.args = {"--socket-path", socket_.string(), "--shared-dir", shared_.string()},
                  .through = {"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"}};
    launch.args.insert(launch.args.end(), extra.begin(), extra.end());
    Daemon daemon(launch);
    if (!daemon.WaitForOutput(kWaiting, 10s)) {
      outcome.exit_status = daemon.WaitExit(5s);
      outcome.output = daemon.Output();
      outcome.skipped = outcome.output.find("cannot create a user namespace") != std::string::npos;
      return outcome;
    }
    std::error_code error;
    outcome.own_user_namespace =
        fs::read_symlink("/proc/" + std::to_string(daemon.pid()) + "/ns/user", error) !=
        fs::read_symlink("/proc/self/ns/user");
    {
      FrontendOptions options;
      options.memory_size = 32u << 20;
      options.request_queues = 1;
      VhostUserFrontend frontend(socket_.string(), options, 10s);
      FuseClient client(frontend);
      outcome.init_error = client.init().error();
      outcome.lookup_error = client.lookup(FUSE_ROOT_ID, "hello").error();
      outcome.create_error = client.create(FUSE_ROOT_ID, "created", S_IFREG | 0644, O_RDWR).error();
      if (then) then(client, daemon.pid());
    }
    outcome.exit_status = daemon.WaitExit(10s);
    outcome.output = daemon.Output();
    return outcome;
  }
};

TEST_F(UnprivilegedTest, ServesInAUserNamespaceOfItsOwn) {
  Outcome outcome = Serve({});
  if (outcome.skipped) GTEST_SKIP() << "the kernel forbids unprivileged user namespaces here: "
                                    << outcome.output;
  EXPECT_TRUE(outcome.own_user_namespace) << outcome.output;
  EXPECT_EQ(outcome.init_error, 0) << outcome.output;
  EXPECT_EQ(outcome.lookup_error, 0) << outcome.output;
  EXPECT_EQ(outcome.create_error, 0) << outcome.output;
  struct stat created {};
  ASSERT_EQ(::lstat((shared_ / "created").c_str(), &created), 0) << outcome.output;
  EXPECT_EQ(created.st_uid, kNobody);  // the guest was root: its files are svfsd's user's
  EXPECT_EQ(created.st_gid, kNobody);
  // Said once, at start: what an unprivileged svfsd cannot do.
  const size_t said = outcome.output.find("unprivileged (uid 65534, gid 65534)");
  EXPECT_NE(said, std::string::npos) << outcome.output;
  EXPECT_EQ(outcome.output.find("unprivileged (uid", said + 1), std::string::npos);
  EXPECT_EQ(outcome.exit_status, 0) << "seccomp or the sandbox ended it:\n" << outcome.output;
}

#ifdef SVFS_VERSIOND_PATH
// Shared versions from an unprivileged svfsd: versiond (root) admits nobody's group with
// --allow-gid and gives the table that group (--table-mode 0660), so svfsd, in a user namespace
// of its own, attaches, maps the table read-write and serves.
TEST_F(UnprivilegedTest, SharedVersionsFromItsOwnUserNamespace) {
  const fs::path versiond_socket = tmp_.path() / "versiond.sock";
  const svfs::shm::testing::ScopedTableName table_name("unpriv");
  const std::string& table = table_name.name();
  svfs_test::Process versiond;
  ASSERT_TRUE(versiond.Start({SVFS_VERSIOND_PATH, "--socket", versiond_socket.string(), "--table",
                              table, "--capacity", "1024", "--allow-gid",
                              std::to_string(kNobody), "--table-mode", "0660"},
                             (tmp_.path() / "versiond.log").string()));
  ASSERT_TRUE(svfs_test::WaitUntil([&] { return fs::exists(versiond_socket); }, 10s))
      << versiond.Log();
  struct stat table_stat {};
  ASSERT_EQ(::stat(("/dev/shm/" + table).c_str(), &table_stat), 0);
  EXPECT_EQ(table_stat.st_gid, kNobody);
  EXPECT_EQ(table_stat.st_mode & 0777, 0660u);

  std::string maps, clients;
  Outcome outcome = Serve({"--cache=shared", "--versiond-socket=" + versiond_socket.string()},
                          [&](FuseClient&, pid_t svfsd) {
                            maps = svfs_test::ReadWholeFile(
                                "/proc/" + std::to_string(svfs_test::ServingPid(svfsd)) + "/maps");
                            clients = svfs_test::RunCommand({SVFSCTL_PATH, "--socket",
                                                             versiond_socket.string(), "clients"})
                                          .output;
                          });
  versiond.Kill(SIGTERM);
  if (outcome.skipped) GTEST_SKIP() << "the kernel forbids unprivileged user namespaces here";
  EXPECT_TRUE(outcome.own_user_namespace) << outcome.output;
  EXPECT_NE(outcome.output.find("attached to svfs-versiond"), std::string::npos) << outcome.output;
  EXPECT_NE(outcome.output.find("(cache=shared)"), std::string::npos) << outcome.output;
  EXPECT_EQ(outcome.init_error, 0) << outcome.output;
  EXPECT_EQ(outcome.lookup_error, 0) << outcome.output;
  EXPECT_EQ(outcome.create_error, 0) << outcome.output;
  // The table is mapped read-write ("rw-s"), as svfsd bumps versions in it itself.
  const size_t mapped = maps.find("/dev/shm/" + table);
  ASSERT_NE(mapped, std::string::npos) << maps;
  const size_t line = maps.rfind('\n', mapped) + 1;
  EXPECT_NE(maps.substr(line, mapped - line).find(" rw-s "), std::string::npos) << maps;
  EXPECT_NE(clients.find(shared_.string()), std::string::npos) << clients;
  EXPECT_EQ(outcome.exit_status, 0) << outcome.output;
}
#endif

// Ranges for nobody in /etc/subuid and /etc/subgid while a test runs (newuidmap checks them).
class SubordinateIdsForNobody {
 public:
  SubordinateIdsForNobody() {
    for (const char* path : {"/etc/subuid", "/etc/subgid"}) {
      std::ifstream in(path);
      std::stringstream text;
      text << in.rdbuf();
      saved_.emplace_back(path, text.str());
      std::ofstream(path, std::ios::app) << "nobody:300000:65536\n";
    }
  }
  ~SubordinateIdsForNobody() {
    for (const auto& [path, text] : saved_) std::ofstream(path, std::ios::trunc) << text;
  }

 private:
  std::vector<std::pair<std::string, std::string>> saved_;
};

// With libvirt's session-mode maps svfsd is root in its user namespace: it switches to the
// guest's IDs among those mapped, so a chown to guest uid 1 stores the host's 300000.
TEST_F(UnprivilegedTest, UidAndGidMapsGoThroughNewuidmap) {
  if (::access("/usr/bin/newuidmap", X_OK) != 0) GTEST_SKIP() << "no newuidmap (package uidmap)";
  SubordinateIdsForNobody ranges;
  int chown_error = -1;
  Outcome outcome = Serve({"--uid-map=:0:65534:1:", "--uid-map=:1:300000:65536:",
                           "--gid-map=:0:65534:1:", "--gid-map=:1:300000:65536:"},
                          [&](FuseClient& client, pid_t) {
                            FuseReply created = client.lookup(FUSE_ROOT_ID, "created");
                            auto entry = created.as<fuse_entry_out>();
                            if (!entry) return;
                            fuse_setattr_in in{};
                            in.valid = FATTR_UID | FATTR_GID;
                            in.uid = 1;
                            in.gid = 2;
                            chown_error = client.send(client.make(FUSE_SETATTR, entry->nodeid,
                                                                  {Bytes(in)}, 4096))
                                              .error();
                          });
  if (outcome.skipped) GTEST_SKIP() << "the kernel forbids unprivileged user namespaces here";
  EXPECT_TRUE(outcome.own_user_namespace) << outcome.output;
  EXPECT_EQ(outcome.init_error, 0) << outcome.output;
  EXPECT_EQ(outcome.lookup_error, 0) << outcome.output;
  EXPECT_EQ(outcome.create_error, 0) << outcome.output;
  EXPECT_EQ(chown_error, 0) << outcome.output;
  struct stat created {};
  ASSERT_EQ(::lstat((shared_ / "created").c_str(), &created), 0) << outcome.output;
  EXPECT_EQ(created.st_uid, 300000u);  // guest uid 1 is namespace uid 1 is host 300000
  EXPECT_EQ(created.st_gid, 300001u);
  EXPECT_NE(outcome.output.find("in a user namespace of the --uid-map/--gid-map ranges"),
            std::string::npos)
      << outcome.output;
  EXPECT_EQ(outcome.exit_status, 0) << outcome.output;
}

// Ranges newuidmap does not grant fail svfsd at start, saying so.
TEST_F(UnprivilegedTest, MapsOutsideTheUsersRangesAreRefusedAtStart) {
  if (::access("/usr/bin/newuidmap", X_OK) != 0) GTEST_SKIP() << "no newuidmap (package uidmap)";
  Outcome outcome = Serve({"--uid-map=:0:0:1:", "--gid-map=:0:65534:1:"});
  if (outcome.skipped) GTEST_SKIP() << "the kernel forbids unprivileged user namespaces here";
  EXPECT_EQ(outcome.exit_status, 1) << outcome.output;
  EXPECT_NE(outcome.output.find("svfsd: --sandbox namespace: --uid-map/--gid-map: newuidmap or "
                                "newgidmap failed"),
            std::string::npos)
      << outcome.output;
}

TEST_F(UnprivilegedTest, ChrootAndMapsWithoutANamespaceAreRefused) {
  Outcome chroot = Serve({"--sandbox", "chroot"});
  EXPECT_EQ(chroot.exit_status, 1);
  EXPECT_NE(chroot.output.find("svfsd: --sandbox chroot needs root"), std::string::npos)
      << chroot.output;
  Outcome none = Serve({"--sandbox", "none", "--uid-map=:0:65534:1:", "--gid-map=:0:65534:1:"});
  EXPECT_EQ(none.exit_status, 1);
  EXPECT_NE(none.output.find("svfsd: --uid-map/--gid-map need --sandbox namespace"),
            std::string::npos)
      << none.output;
}

// lima v2.2 (main, 2026-08): pkg/driver/qemu/qemu.go FindVirtiofsd() accepts a vhost-user JSON's
// binary if "--version" exits 0; VirtiofsdCmdline() gives --socket-path and --shared-dir.
TEST_F(LaunchLineTest, Lima) {
  auto version = svfs_test::RunCommand({SVFSD_PATH, "--version"});
  EXPECT_EQ(version.status, 0) << version.output;
  ExpectServed(RunWithSocketPath({.args = {"--socket-path", "{SOCKET}", "--shared-dir", "{DIR}"}}));
}

// podman machine (v5, QEMU on Linux): pkg/machine/qemu/virtiofsd.go createVirtiofsCmd(): the
// helper named "virtiofsd" (found in helper_binaries_dir, where the package's
// /usr/libexec/svfs/virtiofsd link goes), run in the shared directory with RUST_LOG=ERROR.
TEST_F(LaunchLineTest, PodmanMachine) {
  const fs::path helpers = tmp_.path() / "libexec-svfs";
  fs::create_directory(helpers);
  fs::create_symlink(SVFSD_PATH, helpers / "virtiofsd");
  ExpectServed(RunWithSocketPath({.args = {"--sandbox", "none", "--socket-path", "{SOCKET}",
                                           "--shared-dir", ".", "--seccomp=none"},
                                  .cwd = shared_.string(),
                                  .env = {"RUST_LOG=ERROR"},
                                  .program = (helpers / "virtiofsd").string()}));
}

// The Kata route to shared versions (docs/operations.md): Kata accepts only its own
// virtio_fs_cache values, so "--cache=shared" (or "--shared-versions") and "--versiond-socket="
// go into virtio_fs_extra_args, after Kata's own --cache. The last cache option wins, svfsd
// attaches to a real svfs-versiond, and svfsctl lists it.
#ifdef SVFS_VERSIOND_PATH
struct SharedRoute {
  const char* name;
  bool go_runtime;  // Kata 3.2+ Go runtime (--fd=3, --syslog); else runtime-rs 3.1+
  const char* flag;
};
void PrintTo(const SharedRoute& route, std::ostream* os) { *os << route.name; }

class KataSharedRouteTest : public LaunchLineTest,
                            public ::testing::WithParamInterface<SharedRoute> {};

TEST_P(KataSharedRouteTest, ExtraArgsAfterKatasCacheSelectSharedVersions) {
  const fs::path versiond_socket = tmp_.path() / "versiond.sock";
  const svfs::shm::testing::ScopedTableName table_name("launch");
  const std::string& table = table_name.name();
  svfs_test::Process versiond;
  ASSERT_TRUE(versiond.Start({SVFS_VERSIOND_PATH, "--socket", versiond_socket.string(), "--table",
                              table, "--capacity", "1024"},
                             (tmp_.path() / "versiond.log").string()));
  ASSERT_TRUE(svfs_test::WaitUntil([&] { return fs::exists(versiond_socket); }, 10s))
      << versiond.Log();
  // Kata's own line (see Kata3xGoRuntime and KataRuntimeRs3x), then virtio_fs_extra_args as
  // docs/operations.md gives them.
  const std::vector<std::string> extra = {"--thread-pool-size=1", "--announce-submounts",
                                          GetParam().flag,
                                          "--versiond-socket=" + versiond_socket.string()};
  Launch launch;
  if (GetParam().go_runtime) {
    launch.args = {"--syslog", "--cache=auto", "--shared-dir={DIR}", "--fd=3"};
    launch.pass_fd = 3;
  } else {
    launch.args = {"--socket-path", "{SOCKET}", "--shared-dir", "{DIR}", "--cache", "auto"};
  }
  launch.args.insert(launch.args.end(), extra.begin(), extra.end());
  if (!GetParam().go_runtime) launch.args.push_back("--xattr");
  launch.args = Substitute(launch.args, shared_, socket_);
  std::optional<UniqueFd> listening;
  if (GetParam().go_runtime) listening.emplace(ListenOn(socket_));
  Daemon daemon(launch, listening ? listening->get() : -1);
  listening.reset();
  if (!GetParam().go_runtime) {
    ASSERT_TRUE(daemon.WaitForOutput(kWaiting, 10s)) << daemon.Output();
    EXPECT_TRUE(daemon.WaitForOutput("attached to svfs-versiond", 10s)) << daemon.Output();
    EXPECT_TRUE(daemon.WaitForOutput("(cache=shared)", 10s)) << daemon.Output();
  }
  // Attached in shared mode: versiond lists the daemon with its shared directory.
  std::string clients;
  EXPECT_TRUE(svfs_test::WaitUntil(
      [&] {
        clients = svfs_test::RunCommand({SVFSCTL_PATH, "--socket", versiond_socket.string(),
                                         "clients"})
                      .output;
        return clients.find(shared_.string()) != std::string::npos;
      },
      10s, 50ms))
      << clients << daemon.Output();
  ExpectServed(ServeAndDisconnect(daemon, socket_));
  versiond.Kill(SIGTERM);
}

INSTANTIATE_TEST_SUITE_P(
    Routes, KataSharedRouteTest,
    ::testing::Values(SharedRoute{"RuntimeRsCacheShared", false, "--cache=shared"},
                      SharedRoute{"RuntimeRsSharedVersions", false, "--shared-versions"},
                      SharedRoute{"GoRuntimeCacheShared", true, "--cache=shared"},
                      SharedRoute{"GoRuntimeSharedVersions", true, "--shared-versions"}),
    [](const auto& info) { return std::string(info.param.name); });

// docs/operations.md's configuration.toml blocks, as an operator copies them: each ```toml block
// of the Kata section, read from the file, parsed (the `key = "v"` and `key = ["a", ...]` lines
// those blocks use), and started as Kata 3.2+'s Go runtime starts virtio_fs_daemon
// (src/runtime/virtcontainers/virtiofsd.go args(): --syslog --cache=<virtio_fs_cache>
// --shared-dir=DIR --fd=3, then virtio_fs_extra_args).
struct KataBlock {
  std::map<std::string, std::string> values;
  std::map<std::string, std::vector<std::string>> lists;
};

std::vector<KataBlock> KataBlocksOfOperationsMd() {
  const std::string doc = svfs_test::ReadWholeFile(SVFS_SOURCE_DIR "/docs/operations.md");
  const size_t section = doc.find("\n## Kata Containers\n");
  const size_t end = doc.find("\n## ", section + 1);
  std::vector<KataBlock> blocks;
  for (size_t at = doc.find("```toml\n", section); at < end; at = doc.find("```toml\n", at)) {
    at += 8;
    const size_t close = doc.find("```", at);
    std::string body = doc.substr(at, close - at);
    at = close + 3;
    KataBlock block;
    // Joined lines: a list may span several.
    std::string joined;
    for (char c : body) joined += c == '\n' && !joined.empty() && joined.back() == ',' ? ' ' : c;
    std::istringstream lines(joined);
    for (std::string line; std::getline(lines, line);) {
      const size_t eq = line.find(" = ");
      if (eq == std::string::npos) continue;
      const std::string key = line.substr(0, eq), value = line.substr(eq + 3);
      std::vector<std::string> quoted;
      for (size_t q = value.find('"'); q != std::string::npos; q = value.find('"', q)) {
        const size_t q_end = value.find('"', q + 1);
        quoted.push_back(value.substr(q + 1, q_end - q - 1));
        q = q_end + 1;
      }
      if (!value.empty() && value.front() == '[') {
        block.lists[key] = quoted;
      } else if (!quoted.empty()) {
        block.values[key] = quoted.front();
      }
    }
    blocks.push_back(std::move(block));
  }
  return blocks;
}

class KataConfigurationTest : public LaunchLineTest {};

TEST_F(KataConfigurationTest, EveryBlockOfOperationsMdStartsAndServesItsMode) {
  const std::vector<KataBlock> blocks = KataBlocksOfOperationsMd();
  ASSERT_EQ(blocks.size(), 4u) << "never, auto, always and shared";
  std::set<std::string> modes;
  for (const KataBlock& block : blocks) {
    SCOPED_TRACE(block.values.count("virtio_fs_cache") ? block.values.at("virtio_fs_cache") : "?");
    EXPECT_EQ(block.values.at("shared_fs"), "virtio-fs");
    // The path the .deb installs svfsd to (CMake's install rules), and Kata's allow-list has it.
    EXPECT_EQ(block.values.at("virtio_fs_daemon"), "/usr/bin/svfsd");
    EXPECT_EQ(block.lists.at("valid_virtio_fs_daemon_paths"),
              std::vector<std::string>{"/usr/bin/svfsd"});
    const std::string cache = block.values.at("virtio_fs_cache");
    ASSERT_TRUE(cache == "never" || cache == "auto" || cache == "always")
        << cache << " is not one of Kata's own values";
    std::vector<std::string> extra = block.lists.at("virtio_fs_extra_args");
    const bool shared = std::ranges::find(extra, "--cache=shared") != extra.end();
    modes.insert(shared ? "shared" : cache);

    // Host paths of the doc's /run/svfs/... become the test's.
    const fs::path versiond_socket = tmp_.path() / "versiond.sock";
    const fs::path metrics_dir = tmp_.path() / "metrics";
    fs::create_directories(metrics_dir);
    for (std::string& arg : extra) {
      arg = Replace(arg, "/run/svfs/versiond.sock", versiond_socket.string());
      arg = Replace(arg, "/run/svfs/", metrics_dir.string() + "/");
    }
    const svfs::shm::testing::ScopedTableName table_name("kata-doc");
    const std::string& table = table_name.name();
    svfs_test::Process versiond;
    if (shared) {
      ASSERT_TRUE(versiond.Start({SVFS_VERSIOND_PATH, "--socket", versiond_socket.string(),
                                  "--table", table, "--capacity", "1024"},
                                 (tmp_.path() / "versiond.log").string()));
      ASSERT_TRUE(svfs_test::WaitUntil([&] { return fs::exists(versiond_socket); }, 10s))
          << versiond.Log();
    }
    Launch launch{.args = {"--syslog", "--cache=" + cache, "--shared-dir={DIR}", "--fd=3"},
                  .pass_fd = 3};
    launch.args.insert(launch.args.end(), extra.begin(), extra.end());
    launch.args = Substitute(launch.args, shared_, socket_);
    fs::remove(socket_);  // the previous block's: a socket passed by --fd is the caller's
    UniqueFd listening = ListenOn(socket_);
    Daemon daemon(launch, listening.get());
    listening.reset();
    std::string metrics_error;
    std::optional<std::map<std::string, double>> metrics;
    const Served served = ServeAndDisconnect(daemon, socket_, [&] {
      if (!shared) return;
      // "{pid}" is the daemon's own process id.
      const fs::path metrics_socket =
          metrics_dir / ("svfsd-" + std::to_string(daemon.pid()) + ".metrics");
      svfs_test::WaitUntil(
          [&] {
            auto response = svfs_test::HttpExchange(metrics_socket.string(),
                                                    "GET /metrics HTTP/1.0\r\n\r\n");
            metrics = svfs_test::ParseMetrics(response.value_or(""), &metrics_error);
            return metrics && metrics->contains("svfsd_versiond_attached") &&
                   metrics->at("svfsd_versiond_attached") == 1;
          },
          10s, 50ms);
    });
    ExpectServed(served);
    if (shared) {
      ASSERT_TRUE(metrics) << metrics_error << served.output;
      EXPECT_EQ(metrics->at("svfsd_versiond_attached"), 1) << served.output;
      EXPECT_GE(metrics->at("svfsd_version_samples_total"), 1) << "the LOOKUP reply's version";
      EXPECT_EQ(served.entry_valid, 0u) << "a stock client is served as cache=none";
      versiond.Kill(SIGTERM);
    } else {
      EXPECT_EQ(served.entry_valid, cache == "never" ? 0u : cache == "auto" ? 1u : 86400u);
    }
    fs::remove_all(metrics_dir);
  }
  EXPECT_EQ(modes, (std::set<std::string>{"never", "auto", "always", "shared"}));
}
#endif

}  // namespace
}  // namespace svfs::vhost
