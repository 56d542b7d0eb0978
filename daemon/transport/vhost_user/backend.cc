#include "daemon/transport/vhost_user/backend.h"

#include <fcntl.h>
#include <grp.h>
#include <linux/fuse.h>
#include <linux/virtio_fs.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <system_error>
#include <cstring>
#include <limits>

#include "daemon/fuse/request_class.h"
#include "daemon/transport/vhost_user/adaptive_poll.h"
#include "daemon/transport/vhost_user/chain_io.h"
#include "daemon/transport/vhost_user/signal_batch.h"
#include "protocol/fuse_opcodes.h"

namespace svfs::transport::vhost_user {
namespace {

constexpr size_t kHeaderSize = 12;
constexpr uint32_t kMaxPayload = 4096;
constexpr uint32_t kMaxSetMemTableRegions = 8;
constexpr uint32_t kHiprioQueue = 0;

struct VringState {
  uint32_t index;
  uint32_t num;
};
struct VringAddr {
  uint32_t index;
  uint32_t flags;
  uint64_t desc;
  uint64_t used;
  uint64_t avail;
  uint64_t log;
};
static_assert(sizeof(VringAddr) == 40);
struct ConfigHeader {
  uint32_t offset;
  uint32_t size;
  uint32_t flags;
};

const char* RequestName(uint32_t request) {
  switch (request) {
    case msg::kGetFeatures: return "GET_FEATURES";
    case msg::kSetFeatures: return "SET_FEATURES";
    case msg::kSetOwner: return "SET_OWNER";
    case msg::kResetOwner: return "RESET_OWNER";
    case msg::kSetMemTable: return "SET_MEM_TABLE";
    case msg::kSetLogBase: return "SET_LOG_BASE";
    case msg::kSetLogFd: return "SET_LOG_FD";
    case msg::kSetVringNum: return "SET_VRING_NUM";
    case msg::kSetVringAddr: return "SET_VRING_ADDR";
    case msg::kSetVringBase: return "SET_VRING_BASE";
    case msg::kGetVringBase: return "GET_VRING_BASE";
    case msg::kSetVringKick: return "SET_VRING_KICK";
    case msg::kSetVringCall: return "SET_VRING_CALL";
    case msg::kSetVringErr: return "SET_VRING_ERR";
    case msg::kGetProtocolFeatures: return "GET_PROTOCOL_FEATURES";
    case msg::kSetProtocolFeatures: return "SET_PROTOCOL_FEATURES";
    case msg::kGetQueueNum: return "GET_QUEUE_NUM";
    case msg::kSetVringEnable: return "SET_VRING_ENABLE";
    case msg::kSetBackendReqFd: return "SET_BACKEND_REQ_FD";
    case msg::kGetConfig: return "GET_CONFIG";
    case msg::kSetConfig: return "SET_CONFIG";
    case msg::kResetDevice: return "RESET_DEVICE";
    case msg::kGetMaxMemSlots: return "GET_MAX_MEM_SLOTS";
    case msg::kAddMemReg: return "ADD_MEM_REG";
    case msg::kRemMemReg: return "REM_MEM_REG";
    default: return "UNKNOWN";
  }
}

}  // namespace

// A chain's request as copied out of guest memory once. The guest may go on changing its
// buffers; what is classified and served is this copy.
struct VhostUserBackend::CopiedRequest {
  std::span<const uint8_t> bytes;  // header and arguments (WRITE: its two headers)
  uint64_t unique = 0;
  bool has_header = false;
  bool refused = false;           // malformed chain or too large: answered EIO, not served
  bool external_payload = false;  // WRITE: the data stays in guest memory after `bytes`
  size_t payload = 0;             // its length
};

// A chain served off its queue thread (pool worker, lock wait), with its own request copy.
struct VhostUserBackend::OffThreadChain {
  OffThreadChain(Chain&& chain_in, const CopiedRequest& copy_in)
      : chain(std::move(chain_in)), bytes(copy_in.bytes.begin(), copy_in.bytes.end()),
        copy(copy_in) {
    copy.bytes = bytes;
  }
  Chain chain;
  std::vector<uint8_t> bytes;
  CopiedRequest copy;
};

// Workers that serve request-queue chains when --thread-pool-size is given, so one request
// blocking (a lock wait) does not stall its whole queue.
class VhostUserBackend::WorkerPool {
 public:
  // A job gets the worker's scratch for WRITE payload iovecs.
  using Job = std::function<void(std::vector<iovec>&)>;
  WorkerPool(unsigned threads, const std::function<void()>& thread_init) {
    for (unsigned i = 0; i < threads; ++i) {
      threads_.emplace_back([this, thread_init] {
        if (thread_init) thread_init();
        std::vector<iovec> payload;
        for (;;) {
          Job job;
          {
            std::unique_lock lock(mutex_);
            ready_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
            if (jobs_.empty()) return;  // stopping, and nothing left
            job = std::move(jobs_.front());
            jobs_.pop_front();
          }
          job(payload);
        }
      });
    }
  }
  ~WorkerPool() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    ready_.notify_all();
    for (auto& thread : threads_) thread.join();
  }
  void submit(Job job) {
    {
      std::lock_guard lock(mutex_);
      jobs_.push_back(std::move(job));
    }
    ready_.notify_one();
  }

 private:
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<Job> jobs_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

struct VhostUserBackend::Queue {
  Virtqueue vq;
  UniqueFd kick;
  UniqueFd call;
  UniqueFd err;
  bool started = false;  // kick fd received, not stopped by GET_VRING_BASE
  bool enabled = false;
  bool broken = false;
  std::thread thread;
  UniqueFd stop{::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)};
  // Set with `stop`: a thread kept busy by the guest (or polling its ring) may not get back to
  // poll() on the eventfd, so it checks this between chains too.
  std::atomic<bool> stopping{false};
  std::atomic<uint64_t> served{0};
  // Serializes push/notify between pool workers, and guards `call` and `err`, which the
  // control thread swaps while the queue runs.
  std::mutex used_mutex;
  // Pool jobs of this queue not yet completed (incremented by the queue thread, decremented by
  // workers under used_mutex), and their used chains not yet signalled (guarded by used_mutex).
  // Workers signal per batch too, and when the queue's last job in the pool completes; the queue
  // thread signals a batch that is overdue (a worker may have gone on to a slow request).
  // An atomic so that the queue thread need not wait for used_mutex, which a worker holds while
  // it signals.
  std::atomic<unsigned> pool_jobs{0};
  SignalBatch pool_batch;
  // Chains handed to the worker pool or a lock-wait thread and not yet completed.
  std::mutex inflight_mutex;
  std::condition_variable inflight_cv;
  unsigned inflight = 0;
};

struct VhostUserBackend::Message {
  uint32_t request = 0;
  uint32_t flags = 0;
  uint32_t size = 0;
  uint8_t payload[kMaxPayload];
  std::vector<UniqueFd> fds;

  bool need_reply() const { return flags & msg::kNeedReplyFlag; }
  template <typename T>
  T read(size_t offset = 0) const {
    T value;
    std::memcpy(&value, payload + offset, sizeof(T));
    return value;
  }
  UniqueFd take_fd() {
    if (fds.empty()) return UniqueFd();
    UniqueFd fd = std::move(fds.front());
    fds.erase(fds.begin());
    return fd;
  }
};

VhostUserBackend::VhostUserBackend(fuse::Server& server, BackendOptions options)
    : server_(server), options_(std::move(options)) {
  for (uint32_t i = 0; i < kMaxQueues; ++i) queues_.push_back(std::make_unique<Queue>());
}

Result<std::unique_ptr<VhostUserBackend>> VhostUserBackend::Create(fuse::Server& server,
                                                                   BackendOptions options) {
  std::unique_ptr<VhostUserBackend> backend(new VhostUserBackend(server, std::move(options)));
  backend->stop_fd_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!backend->stop_fd_) return ErrnoErr();
  for (auto& queue : backend->queues_) {
    if (!queue->stop) return ErrnoErr();
  }
  if (auto status = backend->listen(); !status) return std::unexpected(status.error());
  return backend;
}

Status VhostUserBackend::listen() {
  if (options_.listen_fd >= 0) {
    struct stat st {};
    if (::fstat(options_.listen_fd, &st) != 0) return ErrnoErr();
    if (!S_ISSOCK(st.st_mode)) return Err(ENOTSOCK);
    listen_fd_ = UniqueFd(options_.listen_fd);
    ::fcntl(listen_fd_.get(), F_SETFD, FD_CLOEXEC);
    return {};
  }
  const std::string& path = options_.socket_path;
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path.size() >= sizeof(address.sun_path)) return Err(ENAMETOOLONG);
  std::memcpy(address.sun_path, path.data(), path.size());

  // The lock file beside the socket: a second daemon on the same path fails instead of stealing
  // the socket of a running one.
  lock_path_ = path + ".pid";
  // O_NOFOLLOW and the type and owner checks: a planted symlink or someone else's file is
  // refused rather than truncated; O_NONBLOCK so a planted fifo cannot block the open.
  lock_fd_ = UniqueFd(
      ::open(lock_path_.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0600));
  if (!lock_fd_) {
    int error = errno;
    spdlog::error("{}: {} (remove it if it is not this daemon's lock file)", lock_path_,
                  std::strerror(error));
    lock_path_.clear();
    return Err(error);
  }
  struct stat lock_st {};
  if (::fstat(lock_fd_.get(), &lock_st) != 0 || !S_ISREG(lock_st.st_mode) ||
      lock_st.st_uid != ::geteuid() || lock_st.st_nlink != 1) {
    spdlog::error("{}: not a regular file of this user with one link; remove it", lock_path_);
    lock_fd_.reset();
    lock_path_.clear();
    return Err(EEXIST);
  }
  if (::flock(lock_fd_.get(), LOCK_EX | LOCK_NB) != 0) {
    int error = errno == EWOULDBLOCK ? EADDRINUSE : errno;
    spdlog::error("{} is locked: another daemon serves {}", lock_path_, path);
    lock_fd_.reset();
    lock_path_.clear();
    return Err(error);
  }
  std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(lock_fd_.get(), 0) != 0 ||
      ::pwrite(lock_fd_.get(), pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
    spdlog::warn("could not write {}: {}", lock_path_, std::strerror(errno));
  }

  // Only a stale socket is replaced: any other file at the path is someone's, not ours.
  struct stat old_st {};
  if (::lstat(path.c_str(), &old_st) == 0 && !S_ISSOCK(old_st.st_mode)) {
    spdlog::error("--socket-path {}: exists and is not a socket; remove it", path);
    return Err(EEXIST);
  }
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) return ErrnoErr();
  listen_fd_ = UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!listen_fd_) return ErrnoErr();
  // Whoever connects first acts as root on the share, so the socket is the launcher's only
  // (0600) from the moment it exists: bind makes it 0777 & ~umask (the daemon's umask is 0).
  const mode_t old_umask = ::umask(0177);
  const int bound =
      ::bind(listen_fd_.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address));
  const int bind_errno = errno;
  ::umask(old_umask);
  if (bound != 0) return Err(bind_errno);
  own_socket_path_ = true;
  if (!options_.socket_group.empty()) {
    group* entry = ::getgrnam(options_.socket_group.c_str());
    if (entry == nullptr) {
      spdlog::error("--socket-group {}: no such group", options_.socket_group);
      return Err(EINVAL);
    }
    if (::chown(path.c_str(), static_cast<uid_t>(-1), entry->gr_gid) != 0 ||
        ::chmod(path.c_str(), 0660) != 0) {
      return ErrnoErr();
    }
  }
  if (::listen(listen_fd_.get(), 1) != 0) return ErrnoErr();
  return {};
}

VhostUserBackend::~VhostUserBackend() {
  stop_all_queues();
  if (own_socket_path_) ::unlink(options_.socket_path.c_str());
  if (!lock_path_.empty()) ::unlink(lock_path_.c_str());
}

void VhostUserBackend::stop() {
  uint64_t one = 1;
  if (::write(stop_fd_.get(), &one, sizeof(one)) < 0) {
    spdlog::warn("vhost-user: could not signal stop: {}", std::strerror(errno));
  }
}

uint64_t VhostUserBackend::features_offered() const {
  return msg::kFeatureVersion1 | msg::kFeatureIndirectDesc | msg::kFeatureEventIdx |
         msg::kFeatureProtocolFeatures;
}

uint64_t VhostUserBackend::protocol_features_offered() const {
  uint64_t features = msg::kProtocolMq | msg::kProtocolReplyAck | msg::kProtocolBackendReq |
                      msg::kProtocolBackendSendFd | msg::kProtocolResetDevice |
                      msg::kProtocolConfigureMemSlots;
  if (!options_.tag.empty()) features |= msg::kProtocolConfig;
  return features;
}

Status VhostUserBackend::run() {
  int connection_fd = -1;
  for (;;) {
    pollfd fds[2] = {{listen_fd_.get(), POLLIN, 0}, {stop_fd_.get(), POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return ErrnoErr();
    }
    if (fds[1].revents) return {};
    connection_fd = ::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC);
    if (connection_fd < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == ECONNABORTED) continue;
      return ErrnoErr();
    }
    break;
  }
  UniqueFd connection(connection_fd);
  // One frontend only: later connection attempts are refused.
  listen_fd_.reset();
  spdlog::info("vhost-user: frontend connected");
  fuse::InstallInterruptSignalHandler();
  if (options_.pool_threads >= 2) {
    pool_ = std::make_unique<WorkerPool>(options_.pool_threads, options_.thread_init);
  } else if (options_.pool_threads == 1) {
    spdlog::info("--thread-pool-size 1: each request queue's thread serves its requests (as 0)");
  }
  serve(connection.get());
  stop_all_queues();
  pool_.reset();
  for (auto& queue : queues_) {
    queue->kick.reset();
    queue->call.reset();
    queue->err.reset();
  }
  release_memory();
  backend_req_fd_.reset();
  return {};
}

void VhostUserBackend::serve(int connection) {
  auto message = std::make_unique<Message>();
  for (;;) {
    pollfd fds[2] = {{connection, POLLIN, 0}, {stop_fd_.get(), POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      spdlog::error("vhost-user: poll: {}", std::strerror(errno));
      return;
    }
    if (fds[1].revents) {
      spdlog::info("vhost-user: stopping");
      return;
    }
    // The header, with any fds.
    uint8_t header[kHeaderSize];
    iovec iov{header, sizeof(header)};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFdsPerMessage)];
    msghdr mh{};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = control;
    mh.msg_controllen = sizeof(control);
    ssize_t n = ::recvmsg(connection, &mh, MSG_CMSG_CLOEXEC | MSG_WAITALL);
    if (n < 0 && errno == EINTR) continue;
    message->fds.clear();
    for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c != nullptr; c = CMSG_NXTHDR(&mh, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        message->fds.emplace_back(fd);
      }
    }
    if (n == 0) {
      spdlog::info("vhost-user: frontend disconnected");
      return;
    }
    if (n < 0) {
      spdlog::error("vhost-user: receiving a message failed: {}", std::strerror(errno));
      return;
    }
    if (static_cast<size_t>(n) < kHeaderSize || (mh.msg_flags & MSG_CTRUNC)) {
      spdlog::error("vhost-user: truncated message header or too many fds; disconnecting");
      return;
    }
    std::memcpy(&message->request, header, 4);
    std::memcpy(&message->flags, header + 4, 4);
    std::memcpy(&message->size, header + 8, 4);
    if ((message->flags & msg::kVersionMask) != msg::kVersion) {
      spdlog::error("vhost-user: message with version {} (expected 1); disconnecting",
                    message->flags & msg::kVersionMask);
      return;
    }
    if (message->size > kMaxPayload) {
      spdlog::error("vhost-user: {} with a {}-byte payload (at most {}); disconnecting",
                    RequestName(message->request), message->size, kMaxPayload);
      return;
    }
    size_t got = 0;
    while (got < message->size) {
      ssize_t m = ::recv(connection, message->payload + got, message->size - got, MSG_WAITALL);
      if (m < 0 && errno == EINTR) continue;
      if (m <= 0) {
        spdlog::error("vhost-user: connection lost inside a message");
        return;
      }
      got += static_cast<size_t>(m);
    }
    bool keep = handle(connection, *message);
    message->fds.clear();  // fds the message did not use are closed
    if (!keep) return;
  }
}

bool VhostUserBackend::reply(int connection, const Message& message, const void* payload,
                             uint32_t size) {
  uint32_t header[3] = {message.request, msg::kVersion | msg::kReplyFlag, size};
  iovec iov[2] = {{header, sizeof(header)}, {const_cast<void*>(payload), size}};
  msghdr mh{};
  mh.msg_iov = iov;
  mh.msg_iovlen = size ? 2 : 1;
  ssize_t n;
  do {
    n = ::sendmsg(connection, &mh, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  if (n != static_cast<ssize_t>(sizeof(header) + size)) {
    spdlog::error("vhost-user: sending the {} reply failed: {}", RequestName(message.request),
                  n < 0 ? std::strerror(errno) : "short write");
    return false;
  }
  return true;
}

bool VhostUserBackend::handle(int connection, Message& m) {
  spdlog::debug("vhost-user: {} ({}) size {} fds {}", RequestName(m.request), m.request, m.size,
                m.fds.size());
  const bool reply_ack = acked_protocol_features_ & msg::kProtocolReplyAck;
  // Result of a message without its own reply: 0 success, else failure (REPLY_ACK).
  auto ack = [&](bool ok) -> bool {
    if (reply_ack && m.need_reply()) {
      uint64_t value = ok ? 0 : 1;
      return reply(connection, m, &value, sizeof(value));
    }
    return true;
  };
  auto reply_u64 = [&](uint64_t value) { return reply(connection, m, &value, sizeof(value)); };
  auto bad_size = [&](uint32_t expected) {
    spdlog::error("vhost-user: {} with a {}-byte payload (expected {})", RequestName(m.request),
                  m.size, expected);
    return ack(false);
  };
  auto queue_index = [&](uint64_t index) -> Queue* {
    if (index >= kMaxQueues) {
      spdlog::error("vhost-user: {} for queue {} (at most {} queues)", RequestName(m.request),
                    index, kMaxQueues);
      return nullptr;
    }
    return queues_[index].get();
  };

  switch (m.request) {
    case msg::kGetFeatures:
      return reply_u64(features_offered());

    case msg::kSetFeatures: {
      if (m.size != 8) return bad_size(8);
      uint64_t features = m.read<uint64_t>();
      if (features & ~features_offered()) {
        spdlog::error("vhost-user: SET_FEATURES {:#x} includes features not offered ({:#x})",
                      features, features_offered());
        return ack(false);
      }
      stop_all_queues();
      acked_features_ = features;
      for (auto& queue : queues_) queue->vq.set_event_idx(features & msg::kFeatureEventIdx);
      update_all_queues();
      return ack(true);
    }

    case msg::kSetOwner:
      return ack(true);

    case msg::kResetOwner:
    case msg::kResetDevice:
      stop_all_queues();
      for (auto& queue : queues_) {
        queue->vq.reset();
        queue->kick.reset();
        queue->call.reset();
        queue->err.reset();
        queue->started = queue->enabled = queue->broken = false;
      }
      acked_features_ = 0;
      return ack(true);

    case msg::kGetProtocolFeatures:
      return reply_u64(protocol_features_offered());

    case msg::kSetProtocolFeatures: {
      if (m.size != 8) return bad_size(8);
      uint64_t features = m.read<uint64_t>();
      if (features & ~protocol_features_offered()) {
        spdlog::error("vhost-user: SET_PROTOCOL_FEATURES {:#x} includes features not offered",
                      features);
        acked_protocol_features_ = features & protocol_features_offered();
        return ack(false);
      }
      acked_protocol_features_ = features;
      // REPLY_ACK applies from this message's own reply on (the frontend knows what it set).
      if ((features & msg::kProtocolReplyAck) && m.need_reply()) {
        uint64_t zero = 0;
        return reply(connection, m, &zero, sizeof(zero));
      }
      return true;
    }

    case msg::kGetQueueNum:
      return reply_u64(kMaxQueues);

    case msg::kGetMaxMemSlots:
      return reply_u64(GuestMemory::kMaxRegions);

    case msg::kSetMemTable: {
      if (m.size < 8) return bad_size(8);
      uint32_t count = m.read<uint32_t>();
      if (count > kMaxSetMemTableRegions || m.size < 8 + 32 * count) {
        return bad_size(8 + 32 * std::min(count, kMaxSetMemTableRegions));
      }
      if (m.fds.size() != count) {
        spdlog::error("vhost-user: SET_MEM_TABLE with {} regions but {} fds", count, m.fds.size());
        return ack(false);
      }
      stop_all_queues();
      release_memory();
      bool ok = true;
      for (uint32_t i = 0; i < count; ++i) {
        auto desc = m.read<RegionDesc>(8 + 32 * i);
        if (auto status = memory_.add(desc, m.fds[i].get()); !status) {
          spdlog::error("vhost-user: mapping region {:#x}+{:#x}: {}", desc.guest_phys_addr,
                        desc.memory_size, std::strerror(status.error()));
          ok = false;
        }
      }
      m.fds.clear();  // the mappings stay valid without the fds
      update_all_queues();
      return ack(ok);
    }

    case msg::kAddMemReg: {
      if (m.size != 40) return bad_size(40);
      if (m.fds.size() != 1) {
        spdlog::error("vhost-user: ADD_MEM_REG with {} fds", m.fds.size());
        return ack(false);
      }
      auto desc = m.read<RegionDesc>(8);
      stop_all_queues();
      auto status = memory_.add(desc, m.fds[0].get());
      if (!status) {
        spdlog::error("vhost-user: ADD_MEM_REG {:#x}+{:#x}: {}", desc.guest_phys_addr,
                      desc.memory_size, std::strerror(status.error()));
      }
      update_all_queues();
      return ack(status.has_value());
    }

    case msg::kRemMemReg: {
      if (m.size != 40) return bad_size(40);
      auto desc = m.read<RegionDesc>(8);
      stop_all_queues();
      auto status = memory_.remove(desc);
      if (!status) {
        spdlog::error("vhost-user: REM_MEM_REG {:#x}+{:#x}: no such region", desc.guest_phys_addr,
                      desc.memory_size);
      }
      update_all_queues();
      return ack(status.has_value());
    }

    case msg::kSetVringNum: {
      if (m.size != 8) return bad_size(8);
      auto state = m.read<VringState>();
      Queue* queue = queue_index(state.index);
      if (queue == nullptr) return ack(false);
      stop_queue(*queue);
      bool ok = queue->vq.set_size(state.num);
      if (!ok) spdlog::error("vhost-user: queue {}: invalid size {}", state.index, state.num);
      update_queue(state.index);
      return ack(ok);
    }

    case msg::kSetVringAddr: {
      if (m.size != 40) return bad_size(40);
      auto addr = m.read<VringAddr>();
      Queue* queue = queue_index(addr.index);
      if (queue == nullptr) return ack(false);
      stop_queue(*queue);
      queue->vq.set_addresses(addr.desc, addr.avail, addr.used);
      queue->broken = false;
      // Checked against the memory table when there is one (QEMU sends it first); the ring
      // cannot start like this, so say so now rather than acknowledge.
      if (memory_.size() > 0 && !queue->vq.rings_inside(memory_)) {
        spdlog::error("vhost-user: SET_VRING_ADDR: queue {}: {}", addr.index, queue->vq.broken_reason());
        // QEMU asks for no reply here unless it logs dirty pages: a running queue that now
        // cannot run also says so on its error eventfd, as update_queue would.
        if (queue->started && queue->enabled && queue->err) {
          uint64_t one = 1;
          (void)!::write(queue->err.get(), &one, sizeof(one));
        }
        return ack(false);
      }
      update_queue(addr.index);
      return ack(true);
    }

    case msg::kSetVringBase: {
      if (m.size != 8) return bad_size(8);
      auto state = m.read<VringState>();
      Queue* queue = queue_index(state.index);
      if (queue == nullptr || state.num > 0xffff) return ack(false);
      stop_queue(*queue);
      queue->vq.set_base(static_cast<uint16_t>(state.num));
      queue->broken = false;
      update_queue(state.index);
      return ack(true);
    }

    case msg::kGetVringBase: {
      if (m.size != 8) {
        bad_size(8);
        VringState zero{0, 0};
        return reply(connection, m, &zero, sizeof(zero));
      }
      auto state = m.read<VringState>();
      Queue* queue = queue_index(state.index);
      VringState out{state.index, 0};
      if (queue != nullptr) {
        stop_queue(*queue);
        queue->started = false;
        queue->kick.reset();
        out.num = queue->vq.last_avail();
        spdlog::debug("vhost-user: queue {} stopped at avail {} after {} requests", state.index,
                      out.num, queue->served.load());
      }
      return reply(connection, m, &out, sizeof(out));
    }

    case msg::kSetVringKick:
    case msg::kSetVringCall:
    case msg::kSetVringErr: {
      if (m.size != 8) return bad_size(8);
      uint64_t value = m.read<uint64_t>();
      Queue* queue = queue_index(value & msg::kVringIndexMask);
      if (queue == nullptr) return ack(false);
      UniqueFd fd;
      if (!(value & msg::kVringNoFd)) {
        if (m.fds.size() != 1) {
          spdlog::error("vhost-user: {} without an fd", RequestName(m.request));
          return ack(false);
        }
        fd = m.take_fd();
      }
      uint32_t index = static_cast<uint32_t>(value & msg::kVringIndexMask);
      if (m.request != msg::kSetVringKick) {
        // The frontend swaps the call fd whenever the guest masks or unmasks the queue's
        // interrupt: swap it under the lock that guards notifications, without stopping the
        // queue (which would wait for requests in flight).
        std::lock_guard lock(queue->used_mutex);
        (m.request == msg::kSetVringCall ? queue->call : queue->err) = std::move(fd);
        return ack(true);
      }
      stop_queue(*queue);
      if (!fd) {
        // Polling mode (no kick fd) is not supported: the queue stays stopped.
        spdlog::error("vhost-user: queue {}: SET_VRING_KICK without fd is not supported", index);
        queue->kick.reset();
        queue->started = false;
        update_queue(index);
        return ack(false);
      }
      queue->kick = std::move(fd);
      queue->started = true;
      queue->broken = false;
      // Without VHOST_USER_F_PROTOCOL_FEATURES rings start enabled.
      if (!(acked_features_ & msg::kFeatureProtocolFeatures)) queue->enabled = true;
      update_queue(index);
      return ack(true);
    }

    case msg::kSetVringEnable: {
      if (m.size != 8) return bad_size(8);
      auto state = m.read<VringState>();
      Queue* queue = queue_index(state.index);
      if (queue == nullptr || state.num > 1) return ack(false);
      stop_queue(*queue);
      queue->enabled = state.num == 1;
      update_queue(state.index);
      return ack(true);
    }

    case msg::kSetBackendReqFd:
      if (m.fds.size() != 1) {
        spdlog::error("vhost-user: SET_BACKEND_REQ_FD with {} fds", m.fds.size());
        return ack(false);
      }
      backend_req_fd_ = m.take_fd();
      return ack(true);

    case msg::kGetConfig: {
      virtio_fs_config config{};
      std::memcpy(config.tag, options_.tag.data(), std::min(options_.tag.size(), sizeof(config.tag)));
      config.num_request_queues = options_.config_request_queues;
      uint8_t out[sizeof(ConfigHeader) + sizeof(config)] = {};
      if (m.size < sizeof(ConfigHeader)) {
        bad_size(sizeof(ConfigHeader));
        return reply(connection, m, out, sizeof(ConfigHeader));
      }
      auto header = m.read<ConfigHeader>();
      if (header.offset > sizeof(config) || header.size > sizeof(config) - header.offset ||
          m.size != sizeof(ConfigHeader) + header.size) {
        spdlog::error("vhost-user: GET_CONFIG offset {} size {} (config is {} bytes)",
                      header.offset, header.size, sizeof(config));
        ConfigHeader empty{header.offset, 0, header.flags};
        std::memcpy(out, &empty, sizeof(empty));
        return reply(connection, m, out, sizeof(ConfigHeader));
      }
      std::memcpy(out, &header, sizeof(header));
      std::memcpy(out + sizeof(header), reinterpret_cast<uint8_t*>(&config) + header.offset,
                  header.size);
      return reply(connection, m, out, static_cast<uint32_t>(sizeof(header) + header.size));
    }

    case msg::kSetConfig:
      spdlog::warn("vhost-user: SET_CONFIG refused: the virtio-fs config is read-only");
      return ack(false);

    case msg::kSetLogBase:
    case msg::kSetLogFd:
      spdlog::error("vhost-user: {} received, but dirty logging (LOG_ALL / LOG_SHMFD) is not "
                    "offered; live migration is not supported",
                    RequestName(m.request));
      return ack(false);

    default:
      spdlog::warn("vhost-user: unsupported request {} ({} bytes, {} fds) ignored{}", m.request,
                   m.size, m.fds.size(), m.need_reply() ? "; replying failure" : "");
      if (m.need_reply()) {
        uint64_t failure = 1;
        return reply(connection, m, &failure, sizeof(failure));
      }
      return true;
  }
}

void VhostUserBackend::stop_queue(Queue& queue) {
  if (!queue.thread.joinable()) return;
  queue.stopping.store(true, std::memory_order_relaxed);
  uint64_t one = 1;
  if (::write(queue.stop.get(), &one, sizeof(one)) < 0) {
    spdlog::error("vhost-user: could not signal a queue thread: {}", std::strerror(errno));
  }
  // The join is bounded: the thread itself never serves a lock wait (every SETLKW, whatever its
  // queue, gets a thread of its own, classified from the one copy of the request).
  queue.thread.join();
  {
    // Chains still served off the queue thread must complete before the ring or the memory
    // changes. Lock waits among them would never end by themselves: they are interrupted
    // (EINTR to the guest), again in case one had not started waiting yet.
    std::unique_lock lock(queue.inflight_mutex);
    while (!queue.inflight_cv.wait_for(lock, std::chrono::milliseconds(50),
                                       [&] { return queue.inflight == 0; })) {
      server_.interrupt_blocked_requests();
    }
  }
  uint64_t drained;
  while (::read(queue.stop.get(), &drained, sizeof(drained)) > 0) {
  }
  queue.stopping.store(false, std::memory_order_relaxed);
}

void VhostUserBackend::update_queue(uint32_t index) {
  Queue& queue = *queues_[index];
  stop_queue(queue);
  if (!queue.started || !queue.enabled || queue.broken) return;
  if (!queue.vq.map(memory_)) {
    // Addresses may be set before the memory table arrives; only a started ring is broken.
    // Not marked broken: a later memory table or address change may make it valid.
    spdlog::error("vhost-user: queue {} cannot start: {}", index, queue.vq.broken_reason());
    if (queue.err) {
      uint64_t one = 1;
      (void)!::write(queue.err.get(), &one, sizeof(one));
    }
    return;
  }
  queue.thread = std::thread([this, index] { queue_thread(index); });
}

void VhostUserBackend::release_memory() {
  if (memory_.damaged()) {
    spdlog::error("vhost-user: the frontend shrank the guest memory file under svfsd: accesses "
                  "to the lost part completed on private zero pages (their requests read zeros, "
                  "their replies were lost)");
  }
  memory_.clear();
}

void VhostUserBackend::stop_all_queues() {
  for (auto& queue : queues_) stop_queue(*queue);
}

void VhostUserBackend::update_all_queues() {
  for (uint32_t i = 0; i < kMaxQueues; ++i) update_queue(i);
}

void VhostUserBackend::notify_locked(uint32_t index) {
  Queue& queue = *queues_[index];
  if (queue.call && queue.vq.should_notify()) {
    uint64_t one = 1;
    if (::write(queue.call.get(), &one, sizeof(one)) < 0 && errno != EAGAIN) {
      spdlog::warn("vhost-user: queue {}: call eventfd: {}", index, std::strerror(errno));
    }
  }
}

VhostUserBackend::CopiedRequest VhostUserBackend::copy_request(uint32_t index, const Chain& chain,
                                                                std::span<uint8_t> buffer) {
  CopiedRequest copy;
  fuse_in_header in{};
  copy.has_header = chain.readable_bytes >= sizeof(in);
  if (!copy.has_header) {
    // Too short to answer: the server drops it, and the chain is used with nothing written.
    size_t n = chain.error.empty() ? GatherFrom(chain.readable, 0, buffer.data(), chain.readable_bytes) : 0;
    copy.bytes = buffer.first(n);
    copy.refused = !chain.error.empty();
    if (copy.refused && MayLogGuestError()) {
      spdlog::warn("vhost-user: queue {}: malformed descriptor chain {}: {}", index, chain.head,
                   chain.error);
    }
    return copy;
  }
  GatherFrom(chain.readable, 0, buffer.data(), sizeof(in));
  std::memcpy(&in, buffer.data(), sizeof(in));
  copy.unique = in.unique;
  copy.bytes = buffer.first(sizeof(in));
  if (!chain.error.empty()) {
    if (MayLogGuestError()) {
      spdlog::warn("vhost-user: queue {}: malformed descriptor chain {}: {} (EIO reply)", index,
                   chain.head, chain.error);
    }
    copy.refused = true;
    return copy;
  }
  // The rest is copied after the header, never over it: the opcode read above is the one served.
  size_t headers = fuse::HeadersBeforePayload(in.opcode);
  size_t size = headers != 0 && chain.readable_bytes >= headers ? headers : chain.readable_bytes;
  if (size > buffer.size()) {
    if (MayLogGuestError()) {
      spdlog::warn("vhost-user: queue {}: {}-byte request exceeds {} bytes", index, size,
                   buffer.size());
    }
    copy.refused = true;
    return copy;
  }
  GatherFrom(chain.readable, sizeof(in), buffer.data() + sizeof(in), size - sizeof(in));
  copy.bytes = buffer.first(size);
  // Zero copy: a WRITE's data goes from guest memory to the file.
  copy.external_payload = headers != 0 && size == headers;
  if (copy.external_payload) copy.payload = chain.readable_bytes - headers;
  return copy;
}

void VhostUserBackend::serve_copy(uint32_t index, const Chain& chain, const CopiedRequest& copy,
                                  std::vector<iovec>& payload, bool defer_notify) {
  ChainReplyChannel channel(chain, copy.unique);
  if (copy.refused) {
    if (copy.has_header) channel.send_error(EIO);
  } else if (copy.external_payload) {
    SliceIov(chain.readable, copy.bytes.size(), copy.payload, payload);
    GuestWriteSource source(payload, copy.payload);
    server_.handle(copy.bytes, &source, channel);
  } else {
    server_.handle(copy.bytes, nullptr, channel);
  }
  push_used(index, chain.head, static_cast<uint32_t>(channel.written()), !defer_notify);
}

void VhostUserBackend::push_used(uint32_t index, uint16_t head, uint32_t len, bool notify) {
  Queue& queue = *queues_[index];
  // pop() runs concurrently in the queue thread but touches none of what push() and
  // should_notify() use; pushes from pool workers and lock-wait threads are serialized here.
  std::lock_guard lock(queue.used_mutex);
  queue.vq.push(head, len);
  queue.served.fetch_add(1, std::memory_order_relaxed);
  if (notify) notify_locked(index);
}

void VhostUserBackend::refuse_chain(uint32_t index, const Chain& chain, const CopiedRequest& copy,
                                    int error) {
  ChainReplyChannel channel(chain, copy.unique);
  if (copy.has_header) channel.send_error(error);
  push_used(index, chain.head, static_cast<uint32_t>(channel.written()), /*notify=*/true);
}

namespace {

// Spin-wait hint: lets the sibling hyperthread (or the hypervisor) know we are polling.
inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

}  // namespace

void VhostUserBackend::queue_thread(uint32_t index) {
  if (options_.thread_init) options_.thread_init();
  Queue& queue = *queues_[index];
  Virtqueue& vq = queue.vq;
  // The hiprio queue is served by its thread alone: FORGET is quick, and INTERRUPT must not wait
  // behind requests blocked in the pool.
  WorkerPool* pool = index == kHiprioQueue ? nullptr : pool_.get();
  std::vector<uint8_t> request_buffer(protocol::kMaxRequestSize);
  std::vector<iovec> payload;
  Chain chain;
  // FORGETs are not worth a polling CPU.
  AdaptivePoll poller(index == kHiprioQueue ? AdaptivePoll::Duration::zero()
                                            : AdaptivePoll::Duration(options_.poll_max));
  auto finish_off_thread = [this, index] {
    Queue& q = *queues_[index];
    std::lock_guard lock(q.inflight_mutex);
    if (--q.inflight == 0) q.inflight_cv.notify_all();
  };
  // Chains served on this thread are used at once; the driver is signalled per batch
  // (SignalBatch), and when the ring is drained.
  SignalBatch batch;
  auto signal_used = [&] {
    if (!batch.pending()) return;
    batch.signalled();
    std::lock_guard lock(queue.used_mutex);
    notify_locked(index);
  };
  // Pool workers' batches are signalled by the workers; this catches one left waiting while its
  // worker serves a slow request.
  auto signal_overdue_pool_batch = [&] {
    if (pool == nullptr || queue.pool_jobs.load(std::memory_order_relaxed) == 0) return;
    std::lock_guard lock(queue.used_mutex);
    if (!queue.pool_batch.overdue(SignalBatch::Clock::now())) return;
    queue.pool_batch.signalled();
    notify_locked(index);
  };
  auto handle_chain = [&]() {
    const CopiedRequest copy = copy_request(index, chain, request_buffer);
    const fuse::Schedule schedule = copy.refused ? fuse::Schedule::kQuick : fuse::Classify(copy.bytes);
    // A lock wait (SETLKW) may block until another request unlocks: it gets a thread of its
    // own, on any queue, so neither the queue nor the pool can deadlock or stall behind it.
    const bool may_block = schedule == fuse::Schedule::kBlocking;
    if (may_block && lock_waiters_.fetch_add(1, std::memory_order_relaxed) >= kMaxLockWaiters) {
      // A thread per waiting lock: a guest must not get to make them without bound.
      lock_waiters_.fetch_sub(1, std::memory_order_relaxed);
      if (MayLogGuestError()) {
        spdlog::warn("vhost-user: queue {}: {} lock waits (SETLKW) already pending: ENOLCK", index,
                     kMaxLockWaiters);
      }
      signal_used();
      refuse_chain(index, chain, copy, ENOLCK);
      return;
    }
    if (pool == nullptr && !may_block) {
      // Replies batched before a slow request are signalled first, so they do not wait for it.
      if (schedule == fuse::Schedule::kSlow) signal_used();
      serve_copy(index, chain, copy, payload, /*defer_notify=*/true);
      if (batch.used(SignalBatch::Clock::now(), vq.available())) signal_used();
      return;
    }
    {
      std::lock_guard lock(queue.inflight_mutex);
      ++queue.inflight;
    }
    auto job = std::make_shared<OffThreadChain>(std::move(chain), copy);
    chain = Chain();
    if (may_block) {
      try {
        std::thread([this, index, job, finish_off_thread] {
          if (options_.thread_init) options_.thread_init();
          std::vector<iovec> waiter_payload;
          serve_copy(index, job->chain, job->copy, waiter_payload);
          lock_waiters_.fetch_sub(1, std::memory_order_relaxed);
          finish_off_thread();
        }).detach();
      } catch (const std::system_error& error) {
        // Under a task limit: this lock wait fails (as from a full lock table), serving goes on.
        if (MayLogGuestError()) {
          spdlog::warn("vhost-user: queue {}: no thread for a lock wait ({}): ENOLCK", index,
                       error.what());
        }
        lock_waiters_.fetch_sub(1, std::memory_order_relaxed);
        signal_used();
        refuse_chain(index, job->chain, job->copy, ENOLCK);
        finish_off_thread();
      }
      return;
    }
    queue.pool_jobs.fetch_add(1, std::memory_order_relaxed);
    pool->submit([this, index, job, finish_off_thread](std::vector<iovec>& worker_payload) {
      serve_copy(index, job->chain, job->copy, worker_payload, /*defer_notify=*/true);
      Queue& q = *queues_[index];
      {
        // Decremented under the lock: the worker that completes the queue's last pooled job
        // signals for every chain pushed before it.
        std::lock_guard lock(q.used_mutex);
        unsigned left = q.pool_jobs.fetch_sub(1, std::memory_order_relaxed) - 1;
        if (q.pool_batch.used(SignalBatch::Clock::now(), left) || left == 0) {
          q.pool_batch.signalled();
          notify_locked(index);
        }
      }
      finish_off_thread();
    });
  };

  for (;;) {
    // Drain what is available (also on start: kicks may have come while the thread was stopped).
    for (;;) {
      if (queue.stopping.load(std::memory_order_relaxed)) {
        signal_used();
        return;
      }
      Virtqueue::Pop result = vq.pop(chain);
      if (result == Virtqueue::Pop::kEmpty) break;
      if (result == Virtqueue::Pop::kBroken) {
        signal_used();
        spdlog::error("vhost-user: queue {} is broken and stops: {}", index, vq.broken_reason());
        queue.broken = true;  // read by the control thread only after join
        std::lock_guard lock(queue.used_mutex);
        if (queue.err) {
          uint64_t one = 1;
          (void)!::write(queue.err.get(), &one, sizeof(one));
        }
        return;
      }
      handle_chain();
    }
    bool poll = poller.window() > AdaptivePoll::Duration::zero();
    // Kicks go off before the signal: the woken driver reposts at once and need not kick a
    // thread that is polling.
    if (poll) vq.suppress_kicks();
    signal_used();
    signal_overdue_pool_batch();
    if (poll) {
      // Poll the ring for a while rather than pay for a wake-up.
      auto until = std::chrono::steady_clock::now() + poller.window();
      while (!vq.has_available() && !queue.stopping.load(std::memory_order_relaxed) &&
             std::chrono::steady_clock::now() < until) {
        CpuRelax();
      }
      if (vq.enable_kicks()) continue;
    }
    pollfd fds[2] = {{queue.kick.get(), POLLIN, 0}, {queue.stop.get(), POLLIN, 0}};
    auto sleep_start = std::chrono::steady_clock::now();
    // With jobs in the pool, wake every millisecond to signal a batch they left overdue.
    int timeout_ms = pool != nullptr && queue.pool_jobs.load(std::memory_order_relaxed) > 0 ? 1 : -1;
    if (::poll(fds, 2, timeout_ms) < 0) {
      if (errno == EINTR) continue;
      spdlog::error("vhost-user: queue {}: poll: {}", index, std::strerror(errno));
      return;
    }
    poller.slept(std::chrono::steady_clock::now() - sleep_start);
    if (fds[1].revents) return;
    if (fds[0].revents & POLLIN) {
      uint64_t kicks;
      (void)!::read(queue.kick.get(), &kicks, sizeof(kicks));
    } else if (fds[0].revents & (POLLERR | POLLHUP | POLLNVAL)) {
      spdlog::error("vhost-user: queue {}: kick fd failed", index);
      return;
    }
  }
}

}  // namespace svfs::transport::vhost_user
