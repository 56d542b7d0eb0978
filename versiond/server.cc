#include "versiond/server.h"
#include "versiond/lockdown.h"

#include <sys/fanotify.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#include <cstdlib>

#include <algorithm>
#include <expected>
#include <functional>
#include <cstring>
#include <map>
#include <optional>
#include <set>
#include <unordered_set>
#include <utility>

#include <capnp/rpc-twoparty.h>
#include <fmt/format.h>
#include <kj/async-io.h>
#include <kj/async-unix.h>
#include <kj/debug.h>
#include <spdlog/spdlog.h>

#include "common/metrics_server.h"
#include "common/metrics_text.h"
#include "common/unique_fd.h"
#include "protocol/versiond.capnp.h"
#include "protocol/inode_identity.h"
#include "shm/fault_guard.h"
#include "shm/version_table.h"
#include "versiond/fanotify_watcher.h"
#include "versiond/federation.h"
#include "versiond/startup.h"

namespace svfs::versiond {
namespace {

// Upper bound on stats(hottest): the answer is built in one message.
constexpr uint32_t kMaxHottest = 10000;

uint64_t RealtimeNs() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ULL + static_cast<uint64_t>(ts.tv_nsec);
}

std::string Errno(int err) { return std::strerror(err); }

using ClientId = uint64_t;

struct ClientRecord {
  std::string name;
  pid_t pid = 0;  // SO_PEERCRED, not the claimed one
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<std::string> shared_dirs;
};

// What one client may ask of versiond; beyond it the call fails (the daemon serves unversioned).
constexpr size_t kMaxConnections = 1024;
constexpr size_t kMaxDirsPerClient = 16;
constexpr size_t kMaxWatchedFilesystems = 256;

// What /metrics reports: counted on the event loop, read by the metrics thread.
struct Counters {
  std::atomic<uint64_t> clients{0};
  std::atomic<uint64_t> connections{0};
  std::atomic<uint64_t> watched_filesystems{0};
  std::atomic<uint64_t> refused_connections{0};
  std::atomic<uint64_t> fanotify_bumps{0};      // slots of inodes changed on the host
  std::atomic<uint64_t> overflow_bumps{0};      // every slot, once per fanotify overflow
  std::atomic<uint64_t> fanotify_overflows{0};
  std::atomic<uint64_t> restart_bumps{0};       // every slot, on taking over a table

  static void add(std::atomic<uint64_t>& counter, uint64_t n) {
    counter.fetch_add(n, std::memory_order_relaxed);
  }
  static uint64_t get(const std::atomic<uint64_t>& counter) {
    return counter.load(std::memory_order_relaxed);
  }
};

// Everything versiond knows. Lives on the event-loop thread only: RPC methods, the fanotify
// drain and stats all run there, so there is no locking; `counters_` is also read by /metrics.
class State {
 public:
  State(ServerOptions options, shm::VersionTable table, uint64_t restart_bumps)
      : options_(std::move(options)), table_(std::move(table)), started_at_ns_(RealtimeNs()) {
    Counters::add(counters_.restart_bumps, restart_bumps);
  }

  void set_watcher(FanotifyWatcher watcher) { watcher_.emplace(std::move(watcher)); }
  void set_federation(Federation* federation) { federation_ = federation; }
  shm::VersionTable& table() { return table_; }
  FanotifyWatcher* watcher() { return watcher_ ? &*watcher_ : nullptr; }
  const shm::VersionTable& table() const { return table_; }

  size_t connections() const { return connections_; }
  void connected() { Counters::add(counters_.connections, 1), ++connections_; }
  void disconnected() { counters_.connections.fetch_sub(1), --connections_; }
  void refused() { Counters::add(counters_.refused_connections, 1); }

  ClientId add_client(ClientRecord record) {
    ClientId id = next_client_id_++;
    client_pids_.insert(record.pid);
    clients_.emplace(id, std::move(record));
    Counters::add(counters_.clients, 1);
    return id;
  }

  void remove_client(ClientId id) {
    auto it = clients_.find(id);
    if (it == clients_.end()) return;
    spdlog::info("detach: client {} \"{}\" pid {}", id, it->second.name, it->second.pid);
    client_pids_.erase(client_pids_.find(it->second.pid));
    clients_.erase(it);
    counters_.clients.fetch_sub(1, std::memory_order_relaxed);
  }

  // Marks the filesystem of `path` (once per filesystem, at most kMaxWatchedFilesystems).
  std::expected<uint64_t, std::string> Watch(const std::string& path) {
    if (!watcher_) return std::unexpected(std::string("fanotify unavailable"));
    struct statfs st {};
    if (::statfs(path.c_str(), &st) != 0) return std::unexpected(Errno(errno));
    uint64_t fsid = protocol::PackFsid(st.f_fsid);
    if (!watched_.contains(fsid) && watched_.size() >= kMaxWatchedFilesystems) {
      return std::unexpected(fmt::format("already watching {} filesystems", watched_.size()));
    }
    auto marked = watcher_->watch_filesystem_of(path);
    if (marked && watched_.insert(*marked).second) Counters::add(counters_.watched_filesystems, 1);
    return marked;
  }

  void fill_table(rpc::TableInfo::Builder out) const {
    const shm::TableHeader& header = table_.header();
    out.setName(std::string(table_.name()));
    out.setUuid(kj::arrayPtr(header.uuid, sizeof(header.uuid)));
    out.setGeneration(header.generation.load(std::memory_order_acquire));
    out.setSlotCount(header.slot_count);
    out.setSlotStride(header.slot_stride);
    out.setMappedBytes(table_.mapped_bytes());
  }

  void fill_stats(uint32_t hottest, rpc::Stats::Builder out) const {
    fill_table(out.initTable());
    out.setHostBumps(Counters::get(counters_.fanotify_bumps) +
                     Counters::get(counters_.overflow_bumps));
    out.setStartedAtNs(started_at_ns_);
    out.setWatchedFilesystems(watched_.size());
    if (federation_ != nullptr) {
      const std::vector<VolumeStatus> volumes = federation_->status();
      auto list = out.initFederation(volumes.size());
      for (size_t v = 0; v < volumes.size(); ++v) {
        list[v].setName(volumes[v].name);
        list[v].setFsid(volumes[v].fsid);
        list[v].setConnected(volumes[v].connected);
        list[v].setRemoteBumps(volumes[v].remote_bumps);
        list[v].setResyncs(volumes[v].resyncs);
        list[v].setPublishedHandles(volumes[v].published_handles);
        list[v].setPublishedMessages(volumes[v].published_messages);
        list[v].setPublishedBytes(volumes[v].published_bytes);
      }
    }
    auto clients = out.initClients(clients_.size());
    unsigned i = 0;
    for (const auto& [id, record] : clients_) {
      auto c = clients[i++];
      c.setId(id);
      c.setName(record.name);
      c.setPid(static_cast<uint32_t>(record.pid));
      c.setUid(record.uid);
      auto dirs = c.initSharedDirs(record.shared_dirs.size());
      for (size_t d = 0; d < record.shared_dirs.size(); ++d) dirs.set(d, record.shared_dirs[d]);
    }
    auto hot = Hottest(std::min(hottest, kMaxHottest));
    auto list = out.initHottest(hot.size());
    for (size_t j = 0; j < hot.size(); ++j) {
      list[j].setSlot(hot[j].second);
      list[j].setVersion(hot[j].first);
    }
  }

  // One fanotify event. Changes made by attached daemons are skipped: they bump their own slots
  // (after the change, before replying), and bumping again would only cost guests revalidations.
  void on_host_change(const HostChange& change) {
    if (change.overflow) {
      const uint64_t bumped = table_.bump_all();
      Counters::add(counters_.overflow_bumps, bumped);
      Counters::add(counters_.fanotify_overflows, 1);
      spdlog::warn("fanotify overflow: events were lost; bumped all {} slots", bumped);
      if (federation_ != nullptr) federation_->PublishAll();
      return;
    }
    // fanotify names the parent directory (DFID_NAME) for every event on a child; its entries
    // changed only for create/delete/move. A data or attribute edit must not invalidate every
    // dentry the guests cached in that directory.
    constexpr uint64_t kEntryChange =
        FAN_CREATE | FAN_DELETE | FAN_MOVED_FROM | FAN_MOVED_TO | FAN_RENAME;
    const bool entries_changed = (change.mask & kEntryChange) != 0;
    // Changes on the federated volume go to the other hosts, the daemons' own too: a daemon
    // bumps only this host's table.
    if (federation_ != nullptr) {
      for (const HostChange::Object& object : change.objects) {
        if (object.is_parent_dir && !entries_changed) continue;
        federation_->Publish(object.fsid, object.handle_type, object.handle);
      }
    }
    if (change.pid != 0 && client_pids_.contains(static_cast<pid_t>(change.pid))) return;
    uint64_t bumped[8];
    size_t n_bumped = 0;
    for (const HostChange::Object& object : change.objects) {
      if (object.is_parent_dir && !entries_changed) continue;
      // The same slot every daemon computes for this inode from its own file handle.
      uint64_t slot = protocol::SlotOf(
          protocol::HandleIdentity(object.fsid, object.handle_type, object.handle),
          table_.slot_count());
      if (slot == 0) continue;
      // An event names the same directory twice for a rename within it: bump once.
      if (std::find(bumped, bumped + n_bumped, slot) != bumped + n_bumped) continue;
      table_.bump(slot);
      Counters::add(counters_.fanotify_bumps, 1);
      if (n_bumped < std::size(bumped)) bumped[n_bumped++] = slot;
    }
  }

  // The /metrics families, from the metrics thread: counters and the table's header only.
  void write_metrics(metrics::Exposition& out) const {
    using Type = metrics::Exposition::Type;
    auto gauge = [&](std::string_view name, std::string_view help, uint64_t value) {
      out.family(name, Type::kGauge, help);
      out.sample(name, value);
    };
    gauge("svfs_versiond_clients", "svfsd daemons attached.", Counters::get(counters_.clients));
    gauge("svfs_versiond_connections", "Connections served (attached or not).",
          Counters::get(counters_.connections));
    gauge("svfs_versiond_watched_filesystems", "Filesystems marked for fanotify.",
          Counters::get(counters_.watched_filesystems));
    gauge("svfs_versiond_table_slots", "Slots of the version table, slot 0 included.",
          table_.slot_count());
    gauge("svfs_versiond_table_generation",
          "The version table's generation: 1 when made, one more per takeover by a restart.",
          table_.header().generation.load(std::memory_order_acquire));
    out.family("svfs_versiond_refused_connections_total", Type::kCounter,
               "Connections refused (peer not allowed, or too many).");
    out.sample("svfs_versiond_refused_connections_total",
               Counters::get(counters_.refused_connections));
    out.family("svfs_versiond_bumps_total", Type::kCounter,
               "Slots versiond bumped, by cause: fanotify (a change made on the host), overflow "
               "(every slot, events lost), restart (every slot, on taking over the table), "
               "federation (another host's change). The daemons' own bumps are each svfsd's "
               "svfsd_version_bumps_total.");
    out.sample("svfs_versiond_bumps_total", Counters::get(counters_.fanotify_bumps), "cause",
               "fanotify");
    out.sample("svfs_versiond_bumps_total", Counters::get(counters_.overflow_bumps), "cause",
               "overflow");
    out.sample("svfs_versiond_bumps_total", Counters::get(counters_.restart_bumps), "cause",
               "restart");
    const std::vector<VolumeStatus> volumes =
        federation_ != nullptr ? federation_->status() : std::vector<VolumeStatus>{};
    auto total = [&](uint64_t VolumeStatus::*field) {
      uint64_t sum = 0;
      for (const VolumeStatus& volume : volumes) sum += volume.*field;
      return sum;
    };
    if (federation_ != nullptr) {
      out.sample("svfs_versiond_bumps_total", total(&VolumeStatus::remote_bumps), "cause",
                 "federation");
    }
    out.family("svfs_versiond_fanotify_overflows_total", Type::kCounter,
               "fanotify queue overflows (each bumped every slot).");
    out.sample("svfs_versiond_fanotify_overflows_total",
               Counters::get(counters_.fanotify_overflows));
    if (federation_ != nullptr) {
      out.family("svfs_versiond_federation_resyncs_total", Type::kCounter,
                 "Bumps of every slot by federation: joining, a gap, a reconnect, a malformed "
                 "message, a host that lost track.");
      out.sample("svfs_versiond_federation_resyncs_total", total(&VolumeStatus::resyncs));
      out.family("svfs_versiond_federation_published_handles_total", Type::kCounter,
                 "Changed inodes sent to the other hosts, all volumes.");
      out.sample("svfs_versiond_federation_published_handles_total",
                 total(&VolumeStatus::published_handles));
      out.family("svfs_versiond_federation_published_messages_total", Type::kCounter,
                 "JetStream messages acknowledged (batches of handles, volume-wide markers).");
      out.sample("svfs_versiond_federation_published_messages_total",
                 total(&VolumeStatus::published_messages));
      out.family("svfs_versiond_federation_published_bytes_total", Type::kCounter,
                 "Bytes of those messages' bodies.");
      out.sample("svfs_versiond_federation_published_bytes_total",
                 total(&VolumeStatus::published_bytes));
      out.family("svfs_versiond_federation_connected", Type::kGauge,
                 "1 while the volume's NATS connection is up.");
      for (const VolumeStatus& volume : volumes) {
        out.sample("svfs_versiond_federation_connected", volume.connected ? 1 : 0, "volume",
                   volume.name);
      }
    }
  }

  bool allowed(const ucred& cred) const {
    if (cred.uid == 0) return true;
    return std::ranges::find(options_.allow_uids, cred.uid) != options_.allow_uids.end() ||
           std::ranges::find(options_.allow_gids, cred.gid) != options_.allow_gids.end();
  }

 private:
  // The `count` slots with the highest versions, highest first: (version, slot). A scan of the
  // table, for svfsctl; slots never bumped since creation are left out.
  std::vector<std::pair<uint64_t, uint64_t>> Hottest(uint32_t count) const {
    std::vector<std::pair<uint64_t, uint64_t>> top;  // a min-heap of the best so far
    if (count == 0) return top;
    auto greater = std::greater<std::pair<uint64_t, uint64_t>>();
    for (uint64_t slot = 1; slot < table_.slot_count(); ++slot) {
      uint64_t version = table_.sample(slot);
      if (version == 0) continue;
      if (top.size() < count) {
        top.emplace_back(version, slot);
        std::push_heap(top.begin(), top.end(), greater);
      } else if (version > top.front().first) {
        std::pop_heap(top.begin(), top.end(), greater);
        top.back() = {version, slot};
        std::push_heap(top.begin(), top.end(), greater);
      }
    }
    std::sort_heap(top.begin(), top.end(), greater);
    return top;
  }

  ServerOptions options_;
  shm::VersionTable table_;
  std::optional<FanotifyWatcher> watcher_;
  Federation* federation_ = nullptr;  // RunServer's, outlives the event loop
  std::set<uint64_t> watched_;  // fsids marked
  std::map<ClientId, ClientRecord> clients_;
  std::multiset<pid_t> client_pids_;  // of attached clients, to ignore their own changes
  ClientId next_client_id_ = 1;
  size_t connections_ = 0;
  uint64_t started_at_ns_;
  Counters counters_;
};

// The bootstrap capability of one connection; knows its peer's credentials. Destroyed when the
// connection goes (clean exit, crash, SIGKILL): the client's registration ends right then.
class VersiondImpl final : public rpc::Versiond::Server {
 public:
  VersiondImpl(State& state, ucred peer) : state_(state), peer_(peer) {}
  ~VersiondImpl() noexcept(false) {
    if (id_) state_.remove_client(*id_);
  }

  kj::Promise<void> attach(AttachContext context) override {
    auto info = context.getParams().getClient();
    if (id_) KJ_FAIL_REQUIRE("this connection is attached already");
    auto dirs = info.getSharedDirs();
    if (dirs.size() > kMaxDirsPerClient) {
      KJ_FAIL_REQUIRE("too many shared directories in one attach", dirs.size(), kMaxDirsPerClient);
    }
    ClientRecord record{info.getName(), peer_.pid, peer_.uid, peer_.gid, {}};
    if (static_cast<pid_t>(info.getPid()) != peer_.pid) {
      spdlog::debug("attach: \"{}\" claims pid {}, SO_PEERCRED says {}; using the latter",
                    record.name, info.getPid(), peer_.pid);
    }
    for (auto dir : dirs) record.shared_dirs.emplace_back(dir.cStr());
    // Watched before the client is registered (from then on its own fanotify events are
    // skipped): a daemon whose filesystem versiond cannot watch must not be served versioned,
    // or host edits there would never reach its guests. Without fanotify at all, versiond
    // serves without host-change tracking, as it said at start.
    if (state_.watcher() != nullptr) {
      for (const std::string& path : record.shared_dirs) {
        auto fsid = state_.Watch(path);
        if (!fsid) {
          spdlog::warn("attach: \"{}\" pid {} refused: cannot watch the filesystem of {}: {}",
                       record.name, peer_.pid, path, fsid.error());
          KJ_FAIL_REQUIRE("svfs-versiond cannot watch this shared directory's filesystem",
                          path, fsid.error());
        }
        spdlog::debug("attach: \"{}\": watching {} (fsid {:#x})", record.name, path, *fsid);
      }
    }
    std::string name = record.name;
    id_ = state_.add_client(std::move(record));
    spdlog::info("attach: client {} \"{}\" pid {} uid {}", *id_, name, peer_.pid, peer_.uid);
    state_.fill_table(context.getResults().initTable());
    return kj::READY_NOW;
  }

  kj::Promise<void> stats(StatsContext context) override {
    state_.fill_stats(context.getParams().getHottest(), context.getResults().initStats());
    return kj::READY_NOW;
  }

  kj::Promise<void> ping(PingContext) override { return kj::READY_NOW; }

 private:
  State& state_;
  ucred peer_;
  std::optional<ClientId> id_;
};

// One accepted, authorised connection; destroyed when the peer disconnects.
struct Connection {
  Connection(kj::Own<kj::AsyncIoStream> stream_in, capnp::Capability::Client bootstrap)
      : stream(kj::mv(stream_in)),
        network(*stream, capnp::rpc::twoparty::Side::SERVER),
        rpc(capnp::makeRpcServer(network, kj::mv(bootstrap))) {}
  kj::Own<kj::AsyncIoStream> stream;
  capnp::TwoPartyVatNetwork network;
  capnp::RpcSystem<capnp::rpc::twoparty::VatId> rpc;
};

class ErrorLogger final : public kj::TaskSet::ErrorHandler {
 public:
  void taskFailed(kj::Exception&& exception) override {
    spdlog::warn("connection task failed: {}", exception.getDescription().cStr());
  }
};

class Server {
 public:
  explicit Server(State& state) : state_(state), tasks_(errors_) {}

  kj::Promise<void> accept_loop(kj::ConnectionReceiver& listener) {
    return listener.accept().then([this, &listener](kj::Own<kj::AsyncIoStream> stream) {
      accept(kj::mv(stream));
      return accept_loop(listener);
    });
  }

  // Reads fanotify events whenever the fd becomes readable. kj's observer is edge-triggered and
  // drain() stops after a bounded number of reads, so keep draining (yielding between rounds) until
  // a round finds nothing, and only then wait for the next edge.
  kj::Promise<void> watch_loop(kj::UnixEventPort::FdObserver& observer) {
    FanotifyWatcher* watcher = state_.watcher();
    auto drained = watcher->drain([this](const HostChange& change) { state_.on_host_change(change); });
    if (!drained) {
      spdlog::error("fanotify read failed: {}; bumping all slots and stopping host-change "
                    "tracking", drained.error());
      state_.on_host_change(HostChange{.overflow = true});
      return kj::READY_NOW;
    }
    if (*drained > 0) {
      return kj::evalLater([this, &observer] { return watch_loop(observer); });
    }
    return observer.whenBecomesReadable().then([this, &observer] { return watch_loop(observer); });
  }

  // Resolves once the table shrank under versiond (the fault guard's eventfd says a guard
  // tripped; it may have been another mapping's).
  kj::Promise<void> damage_loop(kj::UnixEventPort::FdObserver& observer, int trip_fd) {
    return observer.whenBecomesReadable().then([this, &observer, trip_fd]() -> kj::Promise<void> {
      uint64_t trips;
      while (::read(trip_fd, &trips, sizeof(trips)) > 0) {
      }
      if (state_.table().damaged()) return kj::READY_NOW;
      return damage_loop(observer, trip_fd);
    });
  }

 private:
  void accept(kj::Own<kj::AsyncIoStream> stream) {
    ucred cred{};
    uint len = sizeof(cred);
    try {
      stream->getsockopt(SOL_SOCKET, SO_PEERCRED, &cred, &len);
    } catch (const kj::Exception& e) {
      spdlog::warn("refused connection: SO_PEERCRED failed: {}", e.getDescription().cStr());
      return;
    }
    if (!state_.allowed(cred)) {
      state_.refused();
      spdlog::warn("refused connection from pid {} uid {} gid {} (not in --allow-uid/--allow-gid)",
                   cred.pid, cred.uid, cred.gid);
      return;  // dropping the stream closes it
    }
    if (state_.connections() >= kMaxConnections) {
      state_.refused();
      spdlog::warn("refused connection from pid {} uid {}: {} connections already", cred.pid,
                   cred.uid, kMaxConnections);
      return;
    }
    spdlog::debug("connection from pid {} uid {} gid {}", cred.pid, cred.uid, cred.gid);
    auto connection = kj::heap<Connection>(kj::mv(stream), kj::heap<VersiondImpl>(state_, cred));
    auto disconnected = connection->network.onDisconnect();
    state_.connected();
    tasks_.add(disconnected.attach(kj::mv(connection), kj::defer([this] { state_.disconnected(); })));
  }

  State& state_;
  ErrorLogger errors_;
  kj::TaskSet tasks_;  // one per connection; destroying it drops every connection
};

}  // namespace

std::expected<void, std::string> RunServer(const ServerOptions& options,
                                           UniqueFd activation_socket,
                                           const std::string& activation_path) {
  if (options.capacity < 2) {
    return std::unexpected(fmt::format("svfs-versiond: --capacity {}: need at least 2 slots (slot 0 "
                                       "is reserved)", options.capacity));
  }
  // Before kj starts any thread: the signals must be blocked process-wide and delivered to the
  // event port; a daemon writing to a dead client must get EPIPE, not die.
  kj::UnixEventPort::captureSignal(SIGINT);
  kj::UnixEventPort::captureSignal(SIGTERM);
  ::signal(SIGPIPE, SIG_IGN);

  auto table = OpenTable(options);
  if (!table) return std::unexpected(table.error());
  State state(options, std::move(table->table), table->bumped);

  if (!options.watch_host_changes) {
    spdlog::warn("--host-changes none: changes made on this host outside svfsd do not bump "
                 "versions{}", options.federation_servers.empty()
                                   ? ""
                                   : ", and this host publishes none of its changes to the others");
  } else if (auto watcher = FanotifyWatcher::Create(); watcher) {
    state.set_watcher(std::move(*watcher));
  } else {
    spdlog::warn("fanotify unavailable ({}); serving without host-change tracking: changes made "
                 "on the host outside svfsd will not bump versions", watcher.error());
  }

  const bool activated = activation_socket.valid();
  const std::string& served_path = activated ? activation_path : options.socket_path;
  auto listen_fd = activated ? std::expected<UniqueFd, std::string>(std::move(activation_socket))
                             : ListenOn(options);
  if (!listen_fd) return std::unexpected(listen_fd.error());
  // Only a socket file versiond made is versiond's to remove.
  auto remove_socket = [&] {
    if (!activated) ::unlink(options.socket_path.c_str());
  };
  const bool federated = !options.federation_servers.empty();
  std::optional<FederationOptions> federation_options;
  if (federated) {
    auto built = FederationOptionsFor(options);
    if (!built) {
      remove_socket();
      return std::unexpected(built.error());
    }
    federation_options = std::move(*built);
    for (const ServerOptions::Volume& volume : options.volumes) {
      // Watched from the start, not only once a daemon registers it: a change made on this host
      // must reach the other hosts' guests also while no svfsd of this host serves the volume.
      if (state.watcher() != nullptr) {
        if (auto watched = state.Watch(volume.dir); !watched) {
          spdlog::warn("federation: cannot watch the filesystem of --volume-dir {}: {}; its "
                       "changes on this host reach the other hosts only through attached svfsd",
                       volume.dir, watched.error());
        }
      }
    }
  }
  // Bound before LockDown (socket and bind are outside the filter); served from after it.
  std::unique_ptr<metrics::MetricsServer> metrics_server;
  if (!options.metrics_socket.empty() || !options.metrics_address.empty()) {
    auto listening = metrics::MetricsServer::Listen({.program = "svfs-versiond",
                                                     .socket_path = options.metrics_socket,
                                                     .address = options.metrics_address});
    if (!listening) {
      remove_socket();
      return std::unexpected(listening.error());
    }
    metrics_server = std::move(*listening);
  }
  if (auto locked = options.lock_down
                        ? LockDown(state.watcher() != nullptr, federated, options.seccomp)
                        : std::expected<void, std::string>{};
      !locked) {
    remove_socket();
    return locked;
  }
  // For the tests: a new process after the lockdown must be fatal (threads only).
  if (options.lock_down && std::getenv("SVFS_VERSIOND_TEST_FORK") != nullptr && ::fork() == 0) {
    ::_exit(0);
  }
  // After LockDown: the NATS client's threads start with versiond's reduced privileges. Declared
  // before the event loop, so destroyed after it.
  std::unique_ptr<Federation> federation;
  if (federation_options) {
    auto started = Federation::Start(*federation_options, state.table());
    if (!started) {
      remove_socket();
      return std::unexpected(started.error());
    }
    federation = std::move(*started);
    state.set_federation(federation.get());
  }
  // Declared after the state and the federation it reads, so its thread stops first.
  auto metrics = std::move(metrics_server);
  if (metrics) {
    metrics->start([&state] {
      metrics::Exposition out;
      state.write_metrics(out);
      return out.text();
    });
    for (const std::string& address : metrics->addresses()) {
      spdlog::info("metrics: serving /metrics on {}", address);
    }
  }

  try {
    auto io = kj::setupAsyncIo();
    Server server(state);
    auto listener = io.lowLevelProvider->wrapListenSocketFd(
        listen_fd->release(), kj::LowLevelAsyncIoProvider::TAKE_OWNERSHIP |
                                  kj::LowLevelAsyncIoProvider::ALREADY_CLOEXEC |
                                  kj::LowLevelAsyncIoProvider::ALREADY_NONBLOCK);
    // Declared before the task set so that the tasks waiting on it are destroyed first.
    kj::Own<kj::UnixEventPort::FdObserver> observer;
    ErrorLogger errors;
    kj::TaskSet background(errors);
    background.add(server.accept_loop(*listener).catch_([](kj::Exception&& e) {
      spdlog::error("accept failed: {}; no new connections will be served",
                    e.getDescription().cStr());
    }));
    if (FanotifyWatcher* w = state.watcher()) {
      observer = kj::heap<kj::UnixEventPort::FdObserver>(io.unixEventPort, w->fd(),
                                                         kj::UnixEventPort::FdObserver::OBSERVE_READ);
      background.add(server.watch_loop(*observer));
    }
    // Someone with write access to the table can shrink it; versiond then survives its next
    // access (shm::FaultGuard) and stops here, removing the name so that a restart makes a new
    // table: versions in a damaged table cannot be trusted.
    kj::Own<kj::UnixEventPort::FdObserver> trip_observer;
    kj::Promise<int> damaged = kj::NEVER_DONE;
    if (int trip_fd = shm::FaultGuard::TripFd(); trip_fd >= 0) {
      trip_observer = kj::heap<kj::UnixEventPort::FdObserver>(
          io.unixEventPort, trip_fd, kj::UnixEventPort::FdObserver::OBSERVE_READ);
      damaged = server.damage_loop(*trip_observer, trip_fd).then([] { return 0; });
    }
    spdlog::info("serving {}{} (table {}, {} slots)", served_path,
                 activated ? " (socket passed by systemd)" : "", options.table_name,
                 state.table().slot_count());
    int signal = io.unixEventPort.onSignal(SIGINT)
                     .exclusiveJoin(io.unixEventPort.onSignal(SIGTERM))
                     .then([](siginfo_t info) { return info.si_signo; })
                     .exclusiveJoin(kj::mv(damaged))
                     .wait(io.waitScope);
    if (signal == 0) {
      shm::VersionTable::Remove(options.table_name);
      remove_socket();
      return std::unexpected(fmt::format(
          "svfs-versiond: version table {} shrank under versiond (truncated by a process with "
          "write access to /dev/shm/{}); removed it: restart svfs-versiond to create a new table, "
          "and check who may write it (--table-mode)", options.table_name, options.table_name));
    }
    spdlog::info("signal {}: stopping (the table stays for the daemons and guests using it)",
                 signal);
  } catch (const kj::Exception& e) {
    remove_socket();
    return std::unexpected(fmt::format("svfs-versiond: event loop failed: {}",
                                       e.getDescription().cStr()));
  }
  remove_socket();
  return {};
}

}  // namespace svfs::versiond
