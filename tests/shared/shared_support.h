// Real-process support for the shared-versions tests and benchmark: a real svfs-versiond on a
// temp socket and a unique table, real svfsd daemons mounted through /dev/fuse, versiond's stats
// over Cap'n Proto RPC and direct reads of the version table.
//
// Nothing here depends on gtest: failures come back as values (an error string), so the benchmark
// uses the same code.
#pragma once

#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>

#include "protocol/versiond.capnp.h"
#include "shm/version_table.h"

namespace svfs_shared {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

inline constexpr long kFuseSuperMagic = 0x65735546;

// Polls `pred` every `step` until it returns true or `timeout` passes; true if it did.
inline bool WaitUntil(const std::function<bool()>& pred, std::chrono::milliseconds timeout,
                      std::chrono::microseconds step = 2ms) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    if (pred()) return true;
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(step);
  }
}

inline std::string ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Returns 0 or errno.
inline int WriteHostFile(const std::string& path, const std::string& data,
                         int flags = O_WRONLY | O_CREAT | O_TRUNC) {
  int fd = ::open(path.c_str(), flags | O_CLOEXEC, 0644);
  if (fd < 0) return errno;
  ssize_t n = ::write(fd, data.data(), data.size());
  int err = n == static_cast<ssize_t>(data.size()) ? 0 : (n < 0 ? errno : EIO);
  if (::close(fd) != 0 && err == 0) err = errno;
  return err;
}

// The "major:minor" of the mount at `path` from /proc/self/mountinfo (no FUSE request), or "".
inline std::string MountDevice(const std::string& path) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string id, parent, devno, root, mp;
    ls >> id >> parent >> devno >> root >> mp;
    if (mp == path) return devno;
  }
  return "";
}
inline bool IsMountPoint(const std::string& path) { return !MountDevice(path).empty(); }

// Aborts the FUSE connection behind `path` through fusectl (requests in flight fail ENOTCONN),
// then detaches the mount. For a daemon that is dead or hung.
inline void AbortAndDetach(const std::string& path) {
  std::string dev = MountDevice(path);
  if (dev.empty()) return;
  auto colon = dev.find(':');
  if (colon != std::string::npos) {
    std::string abort_path = "/sys/fs/fuse/connections/" + dev.substr(colon + 1) + "/abort";
    int fd = ::open(abort_path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
      (void)!::write(fd, "1", 1);
      ::close(fd);
    }
  }
  ::umount2(path.c_str(), MNT_DETACH);
}

inline int RemoveTreeEntry(const char* p, const struct stat*, int type, struct FTW*) {
  if (type == FTW_DP || type == FTW_D)
    ::rmdir(p);
  else
    ::unlink(p);
  return 0;
}
// Removes a tree without crossing mount points.
inline void RemoveTree(const std::string& path) {
  if (path.size() > 1) ::nftw(path.c_str(), RemoveTreeEntry, 64, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}

// statfs(path) in a forked child, so a daemon that never answers cannot hang the caller. True if
// it returned a FUSE filesystem within `timeout`.
inline bool ProbeFuseMount(const std::string& path, std::chrono::milliseconds timeout) {
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) return false;
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    struct statfs sfs {};
    if (::statfs(path.c_str(), &sfs) != 0) ::_exit(2);
    ::_exit(static_cast<long>(sfs.f_type) == kFuseSuperMagic ? 0 : 1);
  }
  int status = 0;
  bool done = WaitUntil([&] { return ::waitpid(pid, &status, WNOHANG) == pid; }, timeout, 1ms);
  if (!done) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    return false;
  }
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

// A child process with its output in a log file.
class Process {
 public:
  Process() = default;
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  ~Process() { Kill(SIGKILL); }

  // Starts argv[0] with argv; stdout and stderr go to `log_path` (appended, so a restarted
  // process keeps the earlier log). The child gets SIGTERM if the test process dies.
  bool Start(const std::vector<std::string>& argv, const std::string& log_path) {
    log_path_ = log_path;
    cmdline_.clear();
    for (const auto& a : argv) cmdline_ += a + " ";
    int log_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd < 0) return false;
    std::fflush(nullptr);
    pid_t pid = ::fork();
    if (pid < 0) {
      ::close(log_fd);
      return false;
    }
    if (pid == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      ::dup2(log_fd, STDOUT_FILENO);
      ::dup2(log_fd, STDERR_FILENO);
      int devnull = ::open("/dev/null", O_RDONLY);
      if (devnull >= 0) ::dup2(devnull, STDIN_FILENO);
      std::vector<std::string> args = argv;
      std::vector<char*> raw;
      for (auto& a : args) raw.push_back(a.data());
      raw.push_back(nullptr);
      ::execv(raw[0], raw.data());
      dprintf(STDERR_FILENO, "execv(%s): %s\n", raw[0], std::strerror(errno));
      ::_exit(127);
    }
    ::close(log_fd);
    pid_ = pid;
    return true;
  }

  pid_t pid() const { return pid_; }
  // Reaps the child if it exited; true while it runs.
  bool Running() {
    if (pid_ <= 0) return false;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      status_ = status;
      return false;
    }
    return true;
  }
  // Sends `sig` and waits up to `timeout` for the exit (then SIGKILL). Returns the wait status,
  // or -1 if the process was not running.
  int Kill(int sig, std::chrono::milliseconds timeout = 5000ms) {
    if (pid_ <= 0) return -1;
    ::kill(pid_, sig);
    int status = 0;
    if (!WaitUntil([&] { return ::waitpid(pid_, &status, WNOHANG) == pid_; }, timeout, 1ms)) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
    }
    pid_ = -1;
    status_ = status;
    return status;
  }
  int last_status() const { return status_; }
  const std::string& log_path() const { return log_path_; }
  const std::string& cmdline() const { return cmdline_; }
  std::string Log() const { return ReadWholeFile(log_path_); }

 private:
  pid_t pid_ = -1;
  int status_ = 0;
  std::string log_path_, cmdline_;
};

// ---------------------------------------------------------------------------
// versiond's view, copied out of the RPC reply.

struct SlotRow {
  uint64_t slot = 0;
  uint64_t version = 0;
  uint64_t references = 0;
  uint64_t dev = 0;
  uint64_t ino = 0;
};

struct ClientRow {
  uint64_t id = 0;
  std::string name;
  uint32_t pid = 0;
  uint64_t references = 0;
  uint64_t slots = 0;
};

struct StatsSnapshot {
  std::string table_name;
  uint64_t generation = 0;
  uint64_t slots_in_use = 0;
  uint64_t host_bumps = 0;
  std::vector<ClientRow> clients;
  std::vector<SlotRow> slots;  // every in-use slot (hottest with a large N)

  std::optional<SlotRow> Find(uint64_t dev, uint64_t ino) const {
    for (const auto& s : slots)
      if (s.dev == dev && s.ino == ino) return s;
    return std::nullopt;
  }
  std::optional<SlotRow> FindSlot(uint64_t slot) const {
    for (const auto& s : slots)
      if (s.slot == slot) return s;
    return std::nullopt;
  }
  const ClientRow* FindClient(pid_t pid) const {
    for (const auto& c : clients)
      if (c.pid == static_cast<uint32_t>(pid)) return &c;
    return nullptr;
  }
};

// One stats() call on a fresh connection; nullopt (with `error` set) if versiond cannot be
// reached or does not answer within `timeout`.
inline std::optional<StatsSnapshot> QueryStats(const std::string& socket_path, std::string* error = nullptr,
                                               uint32_t hottest = 100000,
                                               std::chrono::milliseconds timeout = 3000ms) {
  try {
    auto io = kj::setupAsyncIo();
    auto& ws = io.waitScope;
    auto& timer = io.provider->getTimer();
    auto limit = static_cast<int64_t>(timeout.count()) * kj::MILLISECONDS;
    auto address = timer.timeoutAfter(limit, io.provider->getNetwork().parseAddress(
                                                 kj::str("unix:", socket_path.c_str())))
                       .wait(ws);
    auto stream = timer.timeoutAfter(limit, address->connect()).wait(ws);
    capnp::TwoPartyClient client(*stream);
    auto versiond = client.bootstrap().castAs<svfs::rpc::Versiond>();
    auto request = versiond.statsRequest();
    request.setHottest(hottest);
    auto response = timer.timeoutAfter(limit, request.send()).wait(ws);
    auto stats = response.getStats();
    StatsSnapshot out;
    out.table_name = stats.getTable().getName().cStr();
    out.generation = stats.getTable().getGeneration();
    out.slots_in_use = stats.getSlotsInUse();
    out.host_bumps = stats.getHostBumps();
    for (auto c : stats.getClients())
      out.clients.push_back({c.getId(), c.getName().cStr(), c.getPid(), c.getReferences(), c.getSlots()});
    for (auto s : stats.getHottest())
      out.slots.push_back({s.getSlot(), s.getVersion(), s.getReferences(), s.getKey().getDev(),
                           s.getKey().getIno()});
    return out;
  } catch (const kj::Exception& e) {
    if (error) *error = e.getDescription().cStr();
    return std::nullopt;
  }
}

// ---------------------------------------------------------------------------
// One temp world: a host directory on /var/tmp (ext4, for fanotify file handles), a versiond, and
// any number of svfsd mounts of that directory.

struct DaemonSpec {
  std::string cache = "shared";
  bool xattr = true;
  int threads = 0;  // 0: svfsd's default
  std::vector<std::string> extra;
};

class World {
 public:
  struct Mount {
    std::string path;
    std::unique_ptr<Process> process;
  };

  // Creates the directories; `tag` makes the table name readable in /dev/shm.
  bool Create(const std::string& tag, std::string* error) {
    char tmpl[] = "/var/tmp/svfs-shared-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) {
      *error = std::string("mkdtemp: ") + std::strerror(errno);
      return false;
    }
    base_ = tmpl;
    ::chmod(base_.c_str(), 0755);
    src_ = base_ + "/src";
    socket_ = base_ + "/versiond.sock";
    static int counter = 0;
    table_ = "svfs-shtest-" + tag + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
    if (::mkdir(src_.c_str(), 0755) != 0) {
      *error = std::string("mkdir src: ") + std::strerror(errno);
      return false;
    }
    return true;
  }

  // Starts (or restarts) versiond on the same socket and table; waits until stats answers.
  bool StartVersiond(const std::string& versiond_path, std::string* error, uint64_t capacity = 65536) {
    versiond_ = std::make_unique<Process>();
    if (!versiond_->Start({versiond_path, "--socket", socket_, "--table", table_, "--capacity",
                           std::to_string(capacity), "--log-level", "info"},
                          base_ + "/versiond.log")) {
      *error = "cannot start svfs-versiond";
      return false;
    }
    std::string last;
    bool up = WaitUntil(
        [&] {
          if (!versiond_->Running()) return true;
          return QueryStats(socket_, &last, 1).has_value();
        },
        10000ms, 5ms);
    if (!versiond_->Running()) {
      *error = "svfs-versiond exited (status " + std::to_string(versiond_->last_status()) + ")\n" +
               versiond_->Log();
      return false;
    }
    if (!up) {
      *error = "svfs-versiond did not answer stats within 10 s: " + last + "\n" + versiond_->Log();
      return false;
    }
    return true;
  }
  Process* versiond() { return versiond_.get(); }

  // Starts svfsd serving src_ on a new mountpoint base_/<name>; waits until the mount answers.
  Mount* StartSvfsd(const std::string& svfsd_path, const std::string& name, const DaemonSpec& spec,
                    std::string* error) {
    auto mount = std::make_unique<Mount>();
    mount->path = base_ + "/" + name;
    ::mkdir(mount->path.c_str(), 0755);
    mount->process = std::make_unique<Process>();
    std::vector<std::string> args = {svfsd_path, "--shared-dir", src_, "--mount", mount->path, "--cache",
                                     spec.cache, "--versiond-socket", socket_, "--log-level", "info"};
    if (spec.xattr) args.push_back("--xattr");
    if (spec.threads > 0) {
      args.push_back("--thread-pool-size");
      args.push_back(std::to_string(spec.threads));
    }
    for (const auto& a : spec.extra) args.push_back(a);
    if (!mount->process->Start(args, base_ + "/svfsd-" + name + ".log")) {
      *error = "cannot start svfsd";
      return nullptr;
    }
    Process& p = *mount->process;
    bool ok = WaitUntil(
        [&] {
          if (!p.Running()) return true;
          return IsMountPoint(mount->path) && ProbeFuseMount(mount->path, 2000ms);
        },
        15000ms, 10ms);
    if (!p.Running()) {
      *error = "svfsd exited before mounting (status " + std::to_string(p.last_status()) + ")\ncmd: " +
               p.cmdline() + "\n" + p.Log();
      return nullptr;
    }
    if (!ok) {
      p.Kill(SIGKILL);
      AbortAndDetach(mount->path);
      *error = "svfsd did not mount within 15 s\ncmd: " + p.cmdline() + "\n" + p.Log();
      return nullptr;
    }
    mounts_.push_back(std::move(mount));
    return mounts_.back().get();
  }

  // SIGTERM (svfsd unmounts), then force: abort the connection and detach.
  void StopSvfsd(Mount* mount) {
    if (mount->process) mount->process->Kill(SIGTERM, 5000ms);
    if (IsMountPoint(mount->path)) AbortAndDetach(mount->path);
  }

  std::string Logs() const {
    std::string out;
    if (versiond_) out += "--- " + versiond_->log_path() + " ---\n" + versiond_->Log();
    for (const auto& m : mounts_)
      out += "--- " + m->process->log_path() + " ---\n" + m->process->Log();
    return out;
  }

  void Destroy() {
    for (auto& m : mounts_) StopSvfsd(m.get());
    if (versiond_) versiond_->Kill(SIGTERM, 5000ms);
    if (!table_.empty()) ::unlink(("/dev/shm/" + table_).c_str());
    bool mounted = false;
    for (auto& m : mounts_) mounted |= IsMountPoint(m->path);
    if (!base_.empty() && !mounted && !std::getenv("SVFS_SHARED_KEEP")) RemoveTree(base_);
    mounts_.clear();
    base_.clear();
  }

  const std::string& base() const { return base_; }
  const std::string& src() const { return src_; }
  const std::string& socket() const { return socket_; }
  const std::string& table() const { return table_; }
  std::string H(const std::string& rel) const { return rel.empty() ? src_ : src_ + "/" + rel; }

 private:
  std::string base_, src_, socket_, table_;
  std::unique_ptr<Process> versiond_;
  std::vector<std::unique_ptr<Mount>> mounts_;
};

}  // namespace svfs_shared
