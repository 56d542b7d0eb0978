// svfsd started exactly as the programs that launch virtiofsd start it. Each LaunchLineTest takes
// its command line from the source that builds it (cited per test; paths substituted), starts
// svfsd with it, serves a FUSE INIT and a LOOKUP of a file in the shared directory through the
// project's vhost-user frontend, and checks that svfsd exits 0 once the frontend goes away.
// SvfsdCommandLineTest covers what those callers parse (--version, --print-capabilities, --help),
// the rule for repeated options, refusals, and the defaults shared with virtiofsd.
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <fstream>
#include <mutex>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/files.h"
#include "tests/support/process.h"
#include "tests/support/wait.h"
#include "tests/vhost/frontend.h"
#include "tests/vhost/fuse_client.h"

extern char** environ;

namespace svfs::vhost {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr const char* kWaiting = "Waiting for vhost-user socket connection...";

using svfs_test::TempDir;

// How the caller starts the daemon, beyond its argv.
struct Launch {
  std::vector<std::string> args;  // after argv[0] (svfsd's path)
  int pass_fd = -1;               // put the listening socket at this descriptor number
  std::string cwd;                // podman runs it in the shared directory
  std::vector<std::string> env;   // added to the environment
  std::optional<rlimit> nofile;   // RLIMIT_NOFILE it inherits
  std::vector<std::string> through;  // a program that runs svfsd (setpriv ... as another user)
};

// svfsd run as a child whose stdout and stderr come back through a pipe (Kata reads stderr).
class Daemon {
 public:
  Daemon(const Launch& launch, int listen_fd = -1) {
    int out[2];
    if (::pipe2(out, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
    std::vector<std::string> argv = launch.through;
    argv.push_back(SVFSD_PATH);
    argv.insert(argv.end(), launch.args.begin(), launch.args.end());
    std::vector<std::string> env;
    for (char** e = environ; *e != nullptr; ++e) env.emplace_back(*e);
    env.insert(env.end(), launch.env.begin(), launch.env.end());
    std::fflush(nullptr);
    const pid_t parent = ::getpid();
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (::getppid() != parent) ::_exit(127);
      ::dup2(out[1], STDOUT_FILENO);
      ::dup2(out[1], STDERR_FILENO);
      const int devnull = ::open("/dev/null", O_RDONLY);
      if (devnull >= 0) ::dup2(devnull, STDIN_FILENO);
      if (launch.pass_fd >= 0) {
        if (listen_fd == launch.pass_fd) {
          ::fcntl(listen_fd, F_SETFD, 0);
        } else {
          ::dup2(listen_fd, launch.pass_fd);
        }
      }
      if (!launch.cwd.empty() && ::chdir(launch.cwd.c_str()) != 0) ::_exit(126);
      if (launch.nofile) {
        ::setrlimit(RLIMIT_NOFILE, &*launch.nofile);
      }
      sigset_t none;
      sigemptyset(&none);
      sigprocmask(SIG_SETMASK, &none, nullptr);
      std::vector<char*> raw_argv, raw_env;
      for (auto& a : argv) raw_argv.push_back(a.data());
      raw_argv.push_back(nullptr);
      for (auto& e : env) raw_env.push_back(e.data());
      raw_env.push_back(nullptr);
      ::execvpe(raw_argv[0], raw_argv.data(), raw_env.data());
      ::_exit(127);
    }
    ::close(out[1]);
    read_fd_ = out[0];
    reader_ = std::thread([this] {
      char buffer[4096];
      for (;;) {
        const ssize_t n = ::read(read_fd_, buffer, sizeof(buffer));
        if (n <= 0) break;
        std::lock_guard lock(mutex_);
        output_.append(buffer, static_cast<size_t>(n));
      }
    });
  }
  ~Daemon() {
    if (Running()) {
      ::kill(pid_, SIGKILL);
      WaitExit(5s);
    }
    // The pipe may stay open in a grandchild for a moment; reading to EOF ends with it.
    reader_.join();
    ::close(read_fd_);
  }
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  pid_t pid() const { return pid_; }
  std::string Output() {
    std::lock_guard lock(mutex_);
    return output_;
  }
  bool WaitForOutput(std::string_view text, std::chrono::milliseconds timeout) {
    return svfs_test::WaitUntil(
        [&] { return Output().find(text) != std::string::npos || !Running(); }, timeout, 5ms) &&
           Output().find(text) != std::string::npos;
  }
  bool Running() {
    if (exited_) return false;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      exited_ = true;
      status_ = status;
    }
    return !exited_;
  }
  // The exit status once the daemon exits within `timeout`; -1 if it is still running, -2 if a
  // signal killed it.
  int WaitExit(std::chrono::milliseconds timeout) {
    svfs_test::WaitUntil([&] { return !Running(); }, timeout, 5ms);
    if (!exited_) return -1;
    return WIFEXITED(status_) ? WEXITSTATUS(status_) : -2;
  }

 private:
  pid_t pid_ = -1;
  int read_fd_ = -1;
  bool exited_ = false;
  int status_ = 0;
  std::mutex mutex_;
  std::string output_;
  std::thread reader_;
};

// A listening UNIX socket made by the caller (Kata's Go runtime and libvirt pass it as --fd).
UniqueFd ListenOn(const fs::path& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, path.c_str(), sizeof(address.sun_path) - 1);
  if (!fd || ::bind(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      ::listen(fd.get(), 1) != 0) {
    throw std::runtime_error("cannot listen on " + path.string() + ": " + std::strerror(errno));
  }
  return fd;
}

std::string Replace(std::string text, const std::string& from, const std::string& to) {
  for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
  return text;
}

std::vector<std::string> Substitute(std::vector<std::string> args, const fs::path& dir,
                                    const fs::path& socket, const std::string& escaped_dir = "") {
  for (auto& arg : args) {
    arg = Replace(arg, "{SOCKET}", socket.string());
    arg = Replace(arg, "{DIR,}", escaped_dir);
    arg = Replace(arg, "{DIR}", dir.string());
  }
  return args;
}

struct Served {
  int lookup_error = 0;
  std::uint64_t init_flags = 0;
  int exit_status = -1;
  std::string output;
};

// Connects the frontend to `socket`, sends INIT (offering submounts) and LOOKUP "hello", then
// disconnects and waits for the daemon to exit.
Served ServeAndDisconnect(Daemon& daemon, const fs::path& socket) {
  Served served;
  {
    FrontendOptions options;
    options.memory_size = 32u << 20;
    options.request_queues = 1;
    VhostUserFrontend frontend(socket.string(), options, 10s);
    FuseClient client(frontend);
    FuseReply init = client.init(38, FUSE_ASYNC_READ | FUSE_DO_READDIRPLUS | FUSE_MAX_PAGES |
                                         FUSE_INIT_EXT | FUSE_SUBMOUNTS);
    auto out = init.as<fuse_init_out>();
    if (!out) throw std::runtime_error("INIT failed: error " + std::to_string(init.error()));
    served.init_flags = out->flags;
    served.lookup_error = client.lookup(FUSE_ROOT_ID, "hello").error();
  }
  served.exit_status = daemon.WaitExit(10s);
  served.output = daemon.Output();
  return served;
}

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
                const std::function<void(FuseClient&)>& then = {}) {
    Outcome outcome;
    Launch launch{.args = {"--socket-path", socket_.string(), "--shared-dir", shared_.string()},
                  .through = {"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"}};
    launch.args.insert(launch.args.end(), extra.begin(), extra.end());
    Daemon daemon(launch);
    if (!daemon.WaitForOutput(kWaiting, 10s)) {
      outcome.output = daemon.Output();
      outcome.exit_status = daemon.WaitExit(5s);
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
      if (then) then(client);
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
                          [&](FuseClient& client) {
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
// helper named "virtiofsd", run in the shared directory with RUST_LOG=ERROR.
TEST_F(LaunchLineTest, PodmanMachine) {
  ExpectServed(RunWithSocketPath({.args = {"--sandbox", "none", "--socket-path", "{SOCKET}",
                                           "--shared-dir", ".", "--seccomp=none"},
                                  .cwd = shared_.string(),
                                  .env = {"RUST_LOG=ERROR"}}));
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
  const std::string table = "svfs-launch-" + std::to_string(::getpid());
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
  ::unlink(("/dev/shm/" + table).c_str());
}

INSTANTIATE_TEST_SUITE_P(
    Routes, KataSharedRouteTest,
    ::testing::Values(SharedRoute{"RuntimeRsCacheShared", false, "--cache=shared"},
                      SharedRoute{"RuntimeRsSharedVersions", false, "--shared-versions"},
                      SharedRoute{"GoRuntimeCacheShared", true, "--cache=shared"},
                      SharedRoute{"GoRuntimeSharedVersions", true, "--shared-versions"}),
    [](const auto& info) { return std::string(info.param.name); });
#endif

// ---- What the callers parse, and the command line's rules.

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
