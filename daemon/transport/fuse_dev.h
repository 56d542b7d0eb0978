// The host /dev/fuse transport: mounts the shared directory on a host mount point and serves
// the kernel's FUSE requests with a pool of worker threads. Used for host mounts and tests; the
// vhost-user transport feeds the same Server.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "daemon/fs/credentials.h"
#include "daemon/fuse/server.h"
#include "common/result.h"
#include "common/unique_fd.h"

namespace svfs::transport {

class FuseDevSession {
 public:
  // The /dev/fuse descriptor (a sandbox supervisor closes its copy after fork).
  int device_fd() const { return device_.get(); }
  // The mount is someone else's to remove (a sandbox supervisor outside the sandbox, where its
  // path is): stop() does not try to unmount it.
  void leave_unmount_to_supervisor() { unmount_on_stop_ = false; }
  // Opens /dev/fuse and mounts it on `mountpoint` (needs root: mount(2) is called directly).
  // The kernel sends INIT as soon as workers start reading.
  static Result<std::unique_ptr<FuseDevSession>> Mount(const std::string& mountpoint,
                                                       const std::string& source_name);
  ~FuseDevSession();
  FuseDevSession(const FuseDevSession&) = delete;
  FuseDevSession& operator=(const FuseDevSession&) = delete;

  // Starts `threads` workers. `thread_init` runs first in each (per-thread credential setup).
  // `on_connection_lost` runs once when the kernel ends the session (unmounted from outside).
  void start(fuse::Server& server, unsigned threads, std::function<void()> thread_init,
             std::function<void()> on_connection_lost);

  // Unmounts, then waits for the workers; if files are still open on a lazily detached mount,
  // aborts the connection after `grace` and stops the workers. Idempotent.
  void stop(std::chrono::milliseconds grace = std::chrono::milliseconds(1000));

 private:
  FuseDevSession(UniqueFd device, std::string mountpoint);
  void worker(fuse::Server& server, const std::function<void()>& thread_init);
  void abort_connection();

  UniqueFd device_;
  std::string mountpoint_;
  std::optional<fs::ProcCallerGroups> caller_groups_;  // the host's /proc
  dev_t mount_dev_ = 0;  // st_dev of the mount: names the connection under /sys/fs/fuse/connections
  bool stopped_ = false;
  bool unmount_on_stop_ = true;
  std::atomic<bool> stopping_{false};  // set when workers must leave even without ENODEV
  std::function<void()> on_connection_lost_;
  std::once_flag lost_once_;

  std::vector<std::thread> workers_;
  std::mutex workers_mutex_;  // guards running_ for the stop() wait
  std::condition_variable workers_done_;
  unsigned running_ = 0;
};

}  // namespace svfs::transport
