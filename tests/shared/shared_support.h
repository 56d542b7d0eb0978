// Real-process support for the shared-versions tests and benchmark: a real svfs-versiond on a
// temp socket and a unique table, real svfsd daemons mounted through /dev/fuse. Processes, mount
// probes, versiond's stats over RPC and polling come from tests/support.
//
// Nothing here depends on gtest: failures come back as values (an error string), so the benchmark
// uses the same code.
#pragma once

#include <fcntl.h>
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

#include "shm/version_table.h"
#include "tests/support/files.h"
#include "tests/support/fuse_mount.h"
#include "tests/support/process.h"
#include "tests/support/versiond_stats.h"
#include "tests/support/wait.h"

namespace svfs_shared {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

using svfs_test::AbortAndDetach;
using svfs_test::ClientRow;
using svfs_test::IsMountPoint;
using svfs_test::MountWait;
using svfs_test::Process;
using svfs_test::QueryStats;
using svfs_test::ReadWholeFile;
using svfs_test::RemoveTree;
using svfs_test::SlotRow;
using svfs_test::WaitForFuseMount;
using svfs_test::StatsSnapshot;
using svfs_test::WaitUntil;

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
    MountWait waited = WaitForFuseMount(p, mount->path, 15000ms);
    if (waited == MountWait::kExited) {
      *error = "svfsd exited before mounting (status " + std::to_string(p.last_status()) + ")\ncmd: " +
               p.cmdline() + "\n" + p.Log();
      return nullptr;
    }
    if (waited != MountWait::kMounted) {
      p.Kill(SIGKILL);
      AbortAndDetach(mount->path);
      *error = std::string(waited == MountWait::kHung ? "svfsd mounted but did not answer statfs"
                                                      : "svfsd did not mount") +
               " within 15 s\ncmd: " + p.cmdline() + "\n" + p.Log();
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
