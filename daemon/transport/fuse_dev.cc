#include "daemon/transport/fuse_dev.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cstring>

#include "protocol/fuse_opcodes.h"

namespace svfs::transport {
namespace {

constexpr long kFuseCtlSuperMagic = 0x65735543;

// One request's reply path on /dev/fuse. READ data is read into a per-thread buffer and written
// together with the header in one writev (the kernel needs a reply in a single write).
class FuseDevChannel final : public fuse::ReplyChannel, public fs::ReadSink {
 public:
  FuseDevChannel(int device, std::vector<uint8_t>& data) : device_(device), data_(data) {}

  bool send(std::span<const iovec> parts) override { return write_reply(parts); }

  fs::ReadSink& data_sink(size_t max_length) override {
    if (data_.size() < max_length) data_.resize(max_length);
    limit_ = max_length;
    filled_ = 0;
    return *this;
  }

  Result<size_t> read_from(int fd, uint64_t offset, size_t length) override {
    length = std::min(length, limit_ - filled_);
    ssize_t n = ::pread(fd, data_.data() + filled_, length, static_cast<off_t>(offset));
    if (n < 0) return ErrnoErr();
    filled_ += static_cast<size_t>(n);
    return static_cast<size_t>(n);
  }

  void send_data(const fuse_out_header& header) override {
    iovec parts[2] = {{const_cast<fuse_out_header*>(&header), sizeof(header)},
                      {data_.data(), header.len - sizeof(header)}};
    write_reply(std::span<const iovec>(parts, 2));
  }

 private:
  bool write_reply(std::span<const iovec> parts) {
    ssize_t n = ::writev(device_, parts.data(), static_cast<int>(parts.size()));
    // ENOENT: the request was interrupted and the kernel no longer waits for it.
    if (n < 0 && errno != ENOENT) {
      spdlog::warn("/dev/fuse: writing a reply failed: {}", std::strerror(errno));
    }
    return n >= 0;
  }

  int device_;
  std::vector<uint8_t>& data_;
  size_t limit_ = 0;
  size_t filled_ = 0;
};

}  // namespace

Result<std::unique_ptr<FuseDevSession>> FuseDevSession::Mount(const std::string& mountpoint,
                                                              const std::string& source_name) {
  struct stat st {};
  if (::stat(mountpoint.c_str(), &st) != 0) return ErrnoErr();
  if (!S_ISDIR(st.st_mode)) return Err(ENOTDIR);

  UniqueFd device(::open("/dev/fuse", O_RDWR | O_CLOEXEC));
  if (!device) return ErrnoErr();
  // default_permissions, as the guest's virtiofs always mounts: the client checks mode bits
  // against its cached attributes, and the host checks again because each request runs with the
  // caller's fsuid/fsgid. allow_other: the mount serves every local user, as a shared volume.
  std::string options = "fd=" + std::to_string(device.get()) +
                        ",rootmode=40000,user_id=0,group_id=0,allow_other,default_permissions";
  if (::mount(source_name.c_str(), mountpoint.c_str(), "fuse.svfs", MS_NOSUID | MS_NODEV,
              options.c_str()) != 0) {
    return ErrnoErr();
  }
  // Not stat() here: that would wait for INIT, which nobody reads until start().
  std::unique_ptr<FuseDevSession> session(new FuseDevSession(std::move(device), mountpoint));
  // The callers are host processes, whose supplementary groups are in the host's /proc: opened
  // now, while it is in reach (a sandbox hides it next), and read per request by pid, as
  // libfuse's fuse_req_getgroups does.
  if (auto proc = fs::ProcCallerGroups::Open("/proc")) {
    session->caller_groups_.emplace(std::move(*proc));
  } else {
    spdlog::warn("/proc: {}: callers' supplementary groups will not count on this mount",
                 std::strerror(proc.error()));
  }
  return session;
}

FuseDevSession::FuseDevSession(UniqueFd device, std::string mountpoint)
    : device_(std::move(device)), mountpoint_(std::move(mountpoint)) {}

FuseDevSession::~FuseDevSession() { stop(); }

void FuseDevSession::start(fuse::Server& server, unsigned threads,
                           std::function<void()> thread_init,
                           std::function<void()> on_connection_lost) {
  on_connection_lost_ = std::move(on_connection_lost);
  fuse::InstallInterruptSignalHandler();
  std::lock_guard lock(workers_mutex_);
  for (unsigned i = 0; i < std::max(1u, threads); ++i) {
    ++running_;
    workers_.emplace_back([this, &server, thread_init] { worker(server, thread_init); });
  }
  // With workers answering INIT, the mount's device number (the connection's name) is readable.
  struct stat mounted {};
  if (::stat(mountpoint_.c_str(), &mounted) == 0) mount_dev_ = mounted.st_dev;
}

void FuseDevSession::worker(fuse::Server& server, const std::function<void()>& thread_init) {
  if (thread_init) thread_init();
  std::vector<uint8_t> request(protocol::kMaxRequestSize);
  std::vector<uint8_t> read_data;
  FuseDevChannel channel(device_.get(), read_data);
  for (;;) {
    ssize_t n = ::read(device_.get(), request.data(), request.size());
    if (n < 0) {
      // EINTR: a signal (interrupt wake-up); ENOENT: the request was interrupted before we
      // read it; EAGAIN: spurious. ENODEV: the mount is gone.
      if (errno == EINTR && stopping_.load(std::memory_order_acquire)) break;
      if (errno == EINTR || errno == ENOENT || errno == EAGAIN) continue;
      if (errno != ENODEV) spdlog::error("/dev/fuse: read failed: {}", std::strerror(errno));
      break;
    }
    server.handle(std::span<const uint8_t>(request.data(), static_cast<size_t>(n)), nullptr,
                  channel, caller_groups_ ? &*caller_groups_ : nullptr);
  }
  if (on_connection_lost_) std::call_once(lost_once_, on_connection_lost_);
  std::lock_guard lock(workers_mutex_);
  --running_;
  workers_done_.notify_all();
}

void FuseDevSession::abort_connection() {
  if (mount_dev_ == 0) return;
  // The fusectl file system names connections by the device minor of the mount.
  constexpr const char* kFuseCtl = "/sys/fs/fuse/connections";
  struct statfs fs_info {};
  if (::statfs(kFuseCtl, &fs_info) == 0 && fs_info.f_type != kFuseCtlSuperMagic) {
    ::mount("fusectl", kFuseCtl, "fusectl", 0, nullptr);
  }
  std::string path = "/sys/fs/fuse/connections/" + std::to_string(minor(mount_dev_)) + "/abort";
  UniqueFd abort_fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (abort_fd && ::write(abort_fd.get(), "1", 1) == 1) return;
  spdlog::warn("could not abort the FUSE connection through {}: {}", path, std::strerror(errno));
}

void FuseDevSession::stop(std::chrono::milliseconds grace) {
  if (stopped_) return;
  stopped_ = true;
  if (unmount_on_stop_ && ::umount2(mountpoint_.c_str(), 0) != 0 && errno != EINVAL &&
      ::umount2(mountpoint_.c_str(), MNT_DETACH) != 0 && errno != EINVAL) {
    spdlog::warn("unmounting {} failed: {}", mountpoint_, std::strerror(errno));
  }
  auto wait_workers = [this](std::chrono::milliseconds timeout) {
    std::unique_lock lock(workers_mutex_);
    return workers_done_.wait_for(lock, timeout, [this] { return running_ == 0; });
  };
  // A busy mount was only detached: the kernel keeps the connection while files are open.
  // Abort it (open files then fail with ENOTCONN, as after a daemon crash), and wake any worker
  // still blocked in read() so it sees stopping_.
  if (!wait_workers(grace)) {
    abort_connection();
    stopping_.store(true, std::memory_order_release);
    while (!wait_workers(std::chrono::milliseconds(50))) {
      for (auto& worker : workers_) pthread_kill(worker.native_handle(), fuse::kInterruptSignal);
    }
  }
  for (auto& worker : workers_) worker.join();
  workers_.clear();
}

}  // namespace svfs::transport
