#include "daemon/transport/vhost_user/backend.h"

#include <linux/virtio_fs.h>
#include <poll.h>

#include <algorithm>
#include <cstring>

#include <spdlog/spdlog.h>

namespace svfs::transport::vhost_user {
namespace {

constexpr uint32_t kMaxSetMemTableRegions = 8;

RunnerOptions RunnerOptionsOf(const BackendOptions& options, fuse::DaxWindow* dax_window,
                              WindowIo& window_io) {
  return RunnerOptions{.pool_threads = options.pool_threads,
                       .poll_max = options.poll_max,
                       .thread_init = options.thread_init,
                       .dax_window = dax_window,
                       .window_io = dax_window != nullptr ? &window_io : nullptr};
}

std::optional<fuse::DaxWindow> WindowOf(const BackendOptions& options, fuse::DaxMapper& mapper) {
  if (options.dax_window_size == 0) return std::nullopt;
  return std::optional<fuse::DaxWindow>(std::in_place, options.dax_window_size, mapper);
}

}  // namespace

VhostUserBackend::VhostUserBackend(fuse::Server& server, BackendOptions options,
                                   Listener listener)
    : options_(std::move(options)),
      listener_(std::move(listener)),
      stop_fd_(EventFd::Create()),
      backend_channel_(options_.dax_answer_timeout),
      dax_window_(WindowOf(options_, backend_channel_)),
      runner_(server,
              RunnerOptionsOf(options_, dax_window_ ? &*dax_window_ : nullptr, backend_channel_)),
      device_(runner_) {}

Result<std::unique_ptr<VhostUserBackend>> VhostUserBackend::Create(fuse::Server& server,
                                                                   BackendOptions options) {
  auto listener = Listener::Create(ListenerOptions{.socket_path = options.socket_path,
                                                   .listen_fd = options.listen_fd,
                                                   .socket_group = options.socket_group,
                                                   .pid = options.pid});
  if (!listener) return std::unexpected(listener.error());
  std::unique_ptr<VhostUserBackend> backend(
      new VhostUserBackend(server, std::move(options), std::move(*listener)));
  if (!backend->stop_fd_) return ErrnoErr();
  for (uint32_t i = 0; i < kMaxQueues; ++i) {
    if (!backend->device_.queue(i)->stop) return ErrnoErr();
  }
  return backend;
}

VhostUserBackend::~VhostUserBackend() = default;

void VhostUserBackend::stop() {
  if (!stop_fd_.signal()) {
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
  auto connection = listener_.accept_one(stop_fd_.get());
  if (!connection) return std::unexpected(connection.error());
  if (!*connection) return {};  // stopped before a frontend came
  spdlog::info("vhost-user: frontend connected");
  fuse::InstallInterruptSignalHandler();
  runner_.start_pool();
  connection_ = connection->get();
  serve(connection_);
  connection_ = -1;
  device_.disconnect();
  runner_.stop_pool();
  backend_channel_.detach();
  // The frontend's window went with it (every queue is stopped: no request uses the window).
  if (dax_window_) dax_window_->clear();
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
    if (ReceiveMessage(connection, *message) != Received::kMessage) return;
    const bool keep = handle(*message);
    message->fds.clear();  // fds the message did not use are closed
    if (!keep) return;
  }
}

bool VhostUserBackend::reply(const Message& m, const void* payload, uint32_t size) {
  return SendReply(connection_, m.request, payload, size);
}

bool VhostUserBackend::ack(const Message& m, bool ok) {
  if ((acked_protocol_features_ & msg::kProtocolReplyAck) && m.need_reply()) {
    return reply_u64(m, ok ? 0 : 1);
  }
  return true;
}

bool VhostUserBackend::bad_size(const Message& m, uint32_t expected) {
  spdlog::error("vhost-user: {} with a {}-byte payload (expected {})", RequestName(m.request),
                m.size, expected);
  return ack(m, false);
}

Queue* VhostUserBackend::queue_of(const Message& m, uint64_t index) {
  Queue* queue = device_.queue(index);
  if (queue == nullptr) {
    spdlog::error("vhost-user: {} for queue {} (at most {} queues)", RequestName(m.request),
                  index, kMaxQueues);
  }
  return queue;
}

bool VhostUserBackend::handle(Message& m) {
  spdlog::debug("vhost-user: {} ({}) size {} fds {}", RequestName(m.request), m.request, m.size,
                m.fds.size());
  switch (m.request) {
    case msg::kGetFeatures: return reply_u64(m, features_offered());
    case msg::kSetFeatures: return on_set_features(m);
    case msg::kSetOwner: return ack(m, true);
    case msg::kResetOwner:
    case msg::kResetDevice: return on_reset(m);
    case msg::kGetProtocolFeatures: return reply_u64(m, protocol_features_offered());
    case msg::kSetProtocolFeatures: return on_set_protocol_features(m);
    case msg::kGetQueueNum: return reply_u64(m, kMaxQueues);
    case msg::kGetMaxMemSlots: return reply_u64(m, GuestMemory::kMaxRegions);
    case msg::kSetMemTable: return on_set_mem_table(m);
    case msg::kAddMemReg: return on_add_mem_reg(m);
    case msg::kRemMemReg: return on_rem_mem_reg(m);
    case msg::kSetVringNum: return on_set_vring_num(m);
    case msg::kSetVringAddr: return on_set_vring_addr(m);
    case msg::kSetVringBase: return on_set_vring_base(m);
    case msg::kGetVringBase: return on_get_vring_base(m);
    case msg::kSetVringKick: return on_set_vring_kick(m);
    case msg::kSetVringCall:
    case msg::kSetVringErr: return on_set_vring_call_or_err(m);
    case msg::kSetVringEnable: return on_set_vring_enable(m);
    case msg::kSetBackendReqFd: return on_set_backend_req_fd(m);
    case msg::kGetConfig: return on_get_config(m);
    case msg::kSetConfig:
      spdlog::warn("vhost-user: SET_CONFIG refused: the virtio-fs config is read-only");
      return ack(m, false);
    case msg::kSetLogBase:
    case msg::kSetLogFd:
      spdlog::error("vhost-user: {} received, but dirty logging (LOG_ALL / LOG_SHMFD) is not "
                    "offered; live migration is not supported",
                    RequestName(m.request));
      return ack(m, false);
    default: return on_unsupported(m);
  }
}

bool VhostUserBackend::on_set_features(Message& m) {
  if (m.size != 8) return bad_size(m, 8);
  const auto features = m.read<uint64_t>();
  if (features & ~features_offered()) {
    spdlog::error("vhost-user: SET_FEATURES {:#x} includes features not offered ({:#x})",
                  features, features_offered());
    return ack(m, false);
  }
  device_.set_features(features);
  return ack(m, true);
}

bool VhostUserBackend::on_reset(Message& m) {
  device_.reset();
  // A reset device's window is empty again (device_.reset() stopped every queue).
  if (dax_window_) dax_window_->clear();
  return ack(m, true);
}

bool VhostUserBackend::on_set_protocol_features(Message& m) {
  if (m.size != 8) return bad_size(m, 8);
  const auto features = m.read<uint64_t>();
  if (features & ~protocol_features_offered()) {
    spdlog::error("vhost-user: SET_PROTOCOL_FEATURES {:#x} includes features not offered",
                  features);
    // The failure is acknowledged under the features in force before this message.
    const bool acked = ack(m, false);
    acked_protocol_features_ = features & protocol_features_offered();
    return acked;
  }
  acked_protocol_features_ = features;
  // REPLY_ACK applies from this message's own reply on (the frontend knows what it set).
  return ack(m, true);
}

bool VhostUserBackend::on_set_mem_table(Message& m) {
  if (m.size < 8) return bad_size(m, 8);
  const auto count = m.read<uint32_t>();
  if (count > kMaxSetMemTableRegions || m.size < 8 + 32 * count) {
    return bad_size(m, 8 + 32 * std::min(count, kMaxSetMemTableRegions));
  }
  if (m.fds.size() != count) {
    spdlog::error("vhost-user: SET_MEM_TABLE with {} regions but {} fds", count, m.fds.size());
    return ack(m, false);
  }
  RegionDesc regions[kMaxSetMemTableRegions];
  for (uint32_t i = 0; i < count; ++i) regions[i] = m.read<RegionDesc>(8 + 32 * i);
  const bool ok = device_.set_memory_table(std::span(regions, count), m.fds);
  m.fds.clear();  // the mappings stay valid without the fds
  return ack(m, ok);
}

bool VhostUserBackend::on_add_mem_reg(Message& m) {
  if (m.size != 40) return bad_size(m, 40);
  if (m.fds.size() != 1) {
    spdlog::error("vhost-user: ADD_MEM_REG with {} fds", m.fds.size());
    return ack(m, false);
  }
  const auto desc = m.read<RegionDesc>(8);
  const Status status = device_.add_region(desc, m.fds[0].get());
  if (!status) {
    spdlog::error("vhost-user: ADD_MEM_REG {:#x}+{:#x}: {}", desc.guest_phys_addr,
                  desc.memory_size, std::strerror(status.error()));
  }
  return ack(m, status.has_value());
}

bool VhostUserBackend::on_rem_mem_reg(Message& m) {
  if (m.size != 40) return bad_size(m, 40);
  const auto desc = m.read<RegionDesc>(8);
  const Status status = device_.remove_region(desc);
  if (!status) {
    spdlog::error("vhost-user: REM_MEM_REG {:#x}+{:#x}: no such region", desc.guest_phys_addr,
                  desc.memory_size);
  }
  return ack(m, status.has_value());
}

bool VhostUserBackend::on_set_vring_num(Message& m) {
  if (m.size != 8) return bad_size(m, 8);
  const auto state = m.read<VringState>();
  Queue* queue = queue_of(m, state.index);
  if (queue == nullptr) return ack(m, false);
  return ack(m, device_.reconfigure(*queue, [&] {
    if (queue->vq.set_size(state.num)) return true;
    spdlog::error("vhost-user: queue {}: invalid size {}", state.index, state.num);
    return false;
  }));
}

bool VhostUserBackend::on_set_vring_addr(Message& m) {
  if (m.size != 40) return bad_size(m, 40);
  const auto addr = m.read<VringAddr>();
  Queue* queue = queue_of(m, addr.index);
  if (queue == nullptr) return ack(m, false);
  return ack(m, device_.reconfigure(*queue, [&] {
    queue->vq.set_addresses(addr.desc, addr.avail, addr.used);
    queue->broken = false;
    // Checked against the memory table when there is one (QEMU sends it first): a ring that
    // cannot start says so now rather than being acknowledged.
    if (device_.memory().size() == 0 || queue->vq.rings_inside(device_.memory())) return true;
    spdlog::error("vhost-user: SET_VRING_ADDR: queue {}: {}", addr.index,
                  queue->vq.broken_reason());
    // QEMU asks for no reply here unless it logs dirty pages: a running queue that now cannot run
    // also says so on its error eventfd (when it tries to start again).
    return false;
  }));
}

bool VhostUserBackend::on_set_vring_base(Message& m) {
  if (m.size != 8) return bad_size(m, 8);
  const auto state = m.read<VringState>();
  Queue* queue = queue_of(m, state.index);
  if (queue == nullptr || state.num > 0xffff) return ack(m, false);
  return ack(m, device_.reconfigure(*queue, [&] {
    queue->vq.set_base(static_cast<uint16_t>(state.num));
    queue->broken = false;
    return true;
  }));
}

bool VhostUserBackend::on_get_vring_base(Message& m) {
  if (m.size != 8) {
    bad_size(m, 8);
    VringState zero{0, 0};
    return reply(m, &zero, sizeof(zero));
  }
  const auto state = m.read<VringState>();
  VringState out{state.index, 0};
  if (Queue* queue = queue_of(m, state.index)) {
    device_.stop(*queue);
    queue->started = false;
    queue->kick.reset();
    out.num = queue->vq.last_avail();
    spdlog::debug("vhost-user: queue {} stopped at avail {} after {} requests", state.index,
                  out.num, queue->served.load());
  }
  return reply(m, &out, sizeof(out));
}

bool VhostUserBackend::on_set_vring_kick(Message& m) {
  if (m.size != 8) return bad_size(m, 8);
  const auto value = m.read<uint64_t>();
  Queue* queue = queue_of(m, value & msg::kVringIndexMask);
  if (queue == nullptr) return ack(m, false);
  if (value & msg::kVringNoFd) {
    // Polling mode (no kick fd) is not supported: the queue stays stopped.
    spdlog::error("vhost-user: queue {}: SET_VRING_KICK without fd is not supported",
                  queue->index);
    device_.reconfigure(*queue, [&] {
      queue->kick.reset();
      queue->started = false;
      return true;
    });
    return ack(m, false);
  }
  if (m.fds.size() != 1) {
    spdlog::error("vhost-user: SET_VRING_KICK without an fd");
    return ack(m, false);
  }
  return ack(m, device_.reconfigure(*queue, [&] {
    queue->kick = EventFd(m.take_fd());
    queue->started = true;
    queue->broken = false;
    // Without VHOST_USER_F_PROTOCOL_FEATURES rings start enabled.
    if (!(device_.acked_features() & msg::kFeatureProtocolFeatures)) queue->enabled = true;
    return true;
  }));
}

bool VhostUserBackend::on_set_vring_call_or_err(Message& m) {
  if (m.size != 8) return bad_size(m, 8);
  const auto value = m.read<uint64_t>();
  Queue* queue = queue_of(m, value & msg::kVringIndexMask);
  if (queue == nullptr) return ack(m, false);
  EventFd fd;
  if (!(value & msg::kVringNoFd)) {
    if (m.fds.size() != 1) {
      spdlog::error("vhost-user: {} without an fd", RequestName(m.request));
      return ack(m, false);
    }
    fd = EventFd(m.take_fd());
  }
  // The frontend swaps the call fd whenever the guest masks or unmasks the queue's interrupt:
  // swapped under the lock that guards notifications, without stopping the queue (which would
  // wait for requests in flight).
  std::lock_guard lock(queue->used_mutex);
  (m.request == msg::kSetVringCall ? queue->call : queue->err) = std::move(fd);
  return ack(m, true);
}

bool VhostUserBackend::on_set_vring_enable(Message& m) {
  if (m.size != 8) return bad_size(m, 8);
  const auto state = m.read<VringState>();
  Queue* queue = queue_of(m, state.index);
  if (queue == nullptr || state.num > 1) return ack(m, false);
  return ack(m, device_.reconfigure(*queue, [&] {
    queue->enabled = state.num == 1;
    return true;
  }));
}

bool VhostUserBackend::on_set_backend_req_fd(Message& m) {
  if (m.fds.size() != 1) {
    spdlog::error("vhost-user: SET_BACKEND_REQ_FD with {} fds", m.fds.size());
    return ack(m, false);
  }
  const uint64_t needed = msg::kProtocolReplyAck | msg::kProtocolBackendSendFd;
  backend_channel_.attach(m.take_fd(), (acked_protocol_features_ & needed) == needed);
  return ack(m, true);
}

bool VhostUserBackend::on_get_config(Message& m) {
  virtio_fs_config config{};
  std::memcpy(config.tag, options_.tag.data(), std::min(options_.tag.size(), sizeof(config.tag)));
  config.num_request_queues = options_.config_request_queues;
  uint8_t out[sizeof(ConfigHeader) + sizeof(config)] = {};
  if (m.size < sizeof(ConfigHeader)) {
    bad_size(m, sizeof(ConfigHeader));
    return reply(m, out, sizeof(ConfigHeader));
  }
  const auto header = m.read<ConfigHeader>();
  if (header.offset > sizeof(config) || header.size > sizeof(config) - header.offset ||
      m.size != sizeof(ConfigHeader) + header.size) {
    spdlog::error("vhost-user: GET_CONFIG offset {} size {} (config is {} bytes)", header.offset,
                  header.size, sizeof(config));
    ConfigHeader empty{header.offset, 0, header.flags};
    std::memcpy(out, &empty, sizeof(empty));
    return reply(m, out, sizeof(ConfigHeader));
  }
  std::memcpy(out, &header, sizeof(header));
  std::memcpy(out + sizeof(header), reinterpret_cast<uint8_t*>(&config) + header.offset,
              header.size);
  return reply(m, out, static_cast<uint32_t>(sizeof(header) + header.size));
}

bool VhostUserBackend::on_unsupported(Message& m) {
  spdlog::warn("vhost-user: unsupported request {} ({} bytes, {} fds) ignored{}", m.request,
               m.size, m.fds.size(), m.need_reply() ? "; replying failure" : "");
  if (m.need_reply()) return reply_u64(m, 1);
  return true;
}

}  // namespace svfs::transport::vhost_user
