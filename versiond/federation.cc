#include "versiond/federation.h"

#include <nats/nats.h>
#include <sys/random.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/log_limiter.h"
#include "protocol/inode_identity.h"
#include "versiond/federation_message.h"

namespace svfs::versiond {
namespace {

using namespace std::chrono_literals;

// Stream limits: messages only matter to subscribers that are live (a new or reconnected one
// bumps every slot instead of replaying), so the stream keeps a short, bounded history.
constexpr int64_t kStreamMaxAgeNs = int64_t{10} * 60 * 1'000'000'000;  // 10 minutes
constexpr int64_t kStreamMaxMsgs = 100'000;
constexpr int64_t kStreamMaxBytes = int64_t{64} << 20;
// Publishing: a batch is sent at kBatch handles or 1 ms after its first; beyond kQueueBound
// queued handles the batch becomes one volume-wide bump.
constexpr size_t kBatch = 64;
constexpr size_t kQueueBound = 4096;
// A subscriber more than this many messages behind the stream's end bumps every slot once.
constexpr uint64_t kBehindBound = 10'000;

template <typename T, void (*Destroy)(T*)>
struct NatsDeleter {
  void operator()(T* p) const { Destroy(p); }
};
using OptionsOwner = std::unique_ptr<natsOptions, NatsDeleter<natsOptions, natsOptions_Destroy>>;
using ConnectionOwner =
    std::unique_ptr<natsConnection, NatsDeleter<natsConnection, natsConnection_Destroy>>;
using JetStreamOwner = std::unique_ptr<jsCtx, NatsDeleter<jsCtx, jsCtx_Destroy>>;
using SubscriptionOwner =
    std::unique_ptr<natsSubscription, NatsDeleter<natsSubscription, natsSubscription_Destroy>>;

std::string NatsError(natsStatus status) {
  natsStatus last = NATS_OK;
  const char* detail = nats_GetLastError(&last);
  // The thread's last error may be an earlier call's.
  if (last != status || detail == nullptr || *detail == '\0') return natsStatus_GetText(status);
  return detail;
}

std::string Hex(const OriginId& id) {
  std::string out;
  for (unsigned char byte : id) out += fmt::format("{:02x}", byte);
  return out;
}

// One volume: its own connection, stream, subscription and publishing thread.
class NatsVolume {
 public:
  NatsVolume(const FederationOptions& options, const FederatedVolume& volume,
             shm::VersionTable& table)
      : options_(options),
        volume_(volume),
        table_(table),
        stream_("svfs-" + volume.name),
        subject_("svfs." + volume.name + ".bumps") {}

  // Stops the worker, unsubscribes and closes the connection. The client's threads may still be
  // in a callback that names this object until nats_CloseAndWait (NatsFederation's destructor).
  void Close() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (worker_.joinable()) worker_.join();
    closing_ = true;
    subscription_.reset();
    js_.reset();
    if (connection_) natsConnection_Close(connection_.get());
    connection_.reset();
    nats_options_.reset();
  }

  uint64_t fsid() const { return volume_.fsid; }

  VolumeStatus status() const {
    return {.name = volume_.name,
            .fsid = volume_.fsid,
            .connected = connected_.load(std::memory_order_relaxed),
            .remote_bumps = remote_bumps_.load(std::memory_order_relaxed),
            .resyncs = resyncs_.load(std::memory_order_relaxed),
            .published_handles = published_handles_.load(std::memory_order_relaxed),
            .published_messages = published_messages_.load(std::memory_order_relaxed),
            .published_bytes = published_bytes_.load(std::memory_order_relaxed)};
  }

  std::expected<void, std::string> Connect() {
    if (::getrandom(origin_.data(), origin_.size(), 0) != static_cast<ssize_t>(origin_.size())) {
      return std::unexpected(Fail("cannot draw a random origin id (getrandom failed)"));
    }
    natsOptions* raw = nullptr;
    if (natsOptions_Create(&raw) != NATS_OK) return std::unexpected(Fail("natsOptions_Create failed"));
    nats_options_.reset(raw);
    std::vector<const char*> urls;
    for (const std::string& url : options_.servers) urls.push_back(url.c_str());
    natsOptions* o = nats_options_.get();
    const std::string name = "svfs-versiond " + volume_.name;
    if (natsStatus s = natsOptions_SetServers(o, urls.data(), static_cast<int>(urls.size()));
        s != NATS_OK) {
      return std::unexpected(Fail(fmt::format("bad server list: {}", NatsError(s))));
    }
    natsOptions_SetName(o, name.c_str());
    if (auto secured = Secure(o); !secured) return secured;
    natsOptions_SetTimeout(o, 2000);
    natsOptions_SetMaxReconnect(o, -1);  // forever: versiond serves locally meanwhile
    natsOptions_SetReconnectWait(o, 200);
    // A dead server behind a live TCP connection is noticed within about 3 s.
    natsOptions_SetPingInterval(o, 1000);
    natsOptions_SetMaxPingsOut(o, 2);
    natsOptions_SetDisconnectedCB(o, &NatsVolume::OnDisconnected, this);
    natsOptions_SetReconnectedCB(o, &NatsVolume::OnReconnected, this);
    natsOptions_SetErrorHandler(o, &NatsVolume::OnError, this);
    natsConnection* conn = nullptr;
    if (natsStatus s = natsConnection_Connect(&conn, o); s != NATS_OK) {
      return std::unexpected(Fail(fmt::format("cannot connect: {}; start nats-server (with -js) "
                                              "there, or leave --federation out", NatsError(s))));
    }
    connection_.reset(conn);
    connected_ = true;
    jsOptions js_options;
    jsOptions_Init(&js_options);
    js_options.Wait = 2000;
    jsCtx* js = nullptr;
    if (natsStatus s = natsConnection_JetStream(&js, conn, &js_options); s != NATS_OK) {
      return std::unexpected(Fail(fmt::format("no JetStream context: {}", NatsError(s))));
    }
    js_.reset(js);
    if (auto ok = EnsureStream(); !ok) return ok;
    if (auto ok = Subscribe(); !ok) return ok;
    BumpAll("joined the federation (changes from before cannot be known)");
    // Nor can the others know what changed on this host while no versiond published for it
    // (before a first start, or while this one was down): they bump every slot once too.
    publish_all_ = true;
    spdlog::info("federation: volume {} on {} (stream {}, subject {}), origin {}", volume_.name,
                 RedactedServers(options_.servers), stream_, subject_, Hex(origin_));
    worker_ = std::thread([this] { Run(); });
    return {};
  }

  void Publish(int32_t handle_type, std::span<const unsigned char> handle) {
    {
      std::lock_guard lock(mu_);
      if (publish_all_) return;  // the volume-wide bump still to be sent covers this change
      if (queue_.size() >= kQueueBound) {
        queue_.clear();
        publish_all_ = true;
      } else {
        queue_.push_back({handle_type, {handle.begin(), handle.end()}});
      }
    }
    cv_.notify_one();
  }

  void PublishAll() {
    {
      std::lock_guard lock(mu_);
      queue_.clear();
      publish_all_ = true;
    }
    cv_.notify_one();
  }

 private:
  std::string Fail(const std::string& what) const {
    return fmt::format("svfs-versiond: --federation {} (--volume {}): {}",
                       RedactedServers(options_.servers), volume_.name, what);
  }

  // Credentials and TLS, as the operator gave them (the TLS files read before the lock-down).
  std::expected<void, std::string> Secure(natsOptions* o) {
    if (!options_.tls_ca_pem.empty() || !options_.tls_cert_pem.empty()) {
      if (natsStatus s = natsOptions_SetSecure(o, true); s != NATS_OK) {
        return std::unexpected(Fail(fmt::format("TLS: {}", NatsError(s))));
      }
    }
    if (!options_.tls_ca_pem.empty()) {
      if (natsStatus s = natsOptions_SetCATrustedCertificates(o, options_.tls_ca_pem.c_str());
          s != NATS_OK) {
        return std::unexpected(Fail(fmt::format("--federation-tls-ca {}: {}", options_.tls_ca_file,
                                                NatsError(s))));
      }
    }
    if (!options_.tls_cert_pem.empty()) {
      if (natsStatus s = natsOptions_SetCertificatesChain(o, options_.tls_cert_pem.c_str(),
                                                          options_.tls_key_pem.c_str());
          s != NATS_OK) {
        return std::unexpected(Fail(fmt::format("--federation-tls-cert {} / --federation-tls-key "
                                                "{}: {}", options_.tls_cert_file,
                                                options_.tls_key_file, NatsError(s))));
      }
    }
    if (!options_.credentials_file.empty()) {
      if (natsStatus s = natsOptions_SetUserCredentialsFromFiles(
              o, options_.credentials_file.c_str(), nullptr);
          s != NATS_OK) {
        return std::unexpected(Fail(fmt::format("--federation-creds {}: {}",
                                                options_.credentials_file, NatsError(s))));
      }
    }
    return {};
  }

  std::expected<void, std::string> EnsureStream() {
    jsStreamInfo* info = nullptr;
    jsErrCode code = static_cast<jsErrCode>(0);
    natsStatus s = js_GetStreamInfo(&info, js_.get(), stream_.c_str(), nullptr, &code);
    if (s == NATS_OK) {
      jsStreamInfo_Destroy(info);
      return {};
    }
    if (code != JSStreamNotFoundErr) {
      return std::unexpected(Fail(fmt::format("cannot look stream {} up: {} (is JetStream on? "
                                              "nats-server -js)", stream_, NatsError(s))));
    }
    jsStreamConfig config;
    jsStreamConfig_Init(&config);
    const char* subjects[] = {subject_.c_str()};
    config.Name = stream_.c_str();
    config.Subjects = subjects;
    config.SubjectsLen = 1;
    config.Storage = js_FileStorage;
    config.Retention = js_LimitsPolicy;
    config.Discard = js_DiscardOld;
    config.MaxAge = kStreamMaxAgeNs;
    config.MaxMsgs = kStreamMaxMsgs;
    config.MaxBytes = kStreamMaxBytes;
    config.Replicas = options_.replicas;
    s = js_AddStream(&info, js_.get(), &config, nullptr, &code);
    if (s == NATS_OK) {
      jsStreamInfo_Destroy(info);
      return {};
    }
    if (code == JSStreamNameExistErr) return {};  // just made by another versiond
    return std::unexpected(Fail(fmt::format(
        "cannot create stream {}: {} (is JetStream on? nats-server -js; and --federation-replicas "
        "at most the cluster's size)", stream_, NatsError(s))));
  }

  // A push consumer from the stream's end: what came before is covered by the bump of every slot
  // that follows each (re)subscription.
  std::expected<void, std::string> Subscribe() {
    // A callback of the old subscription still running must not touch next_sequence_ (a false
    // gap); messages of the new one before current_ is set are covered by the BumpAll that
    // follows every Subscribe.
    current_ = nullptr;
    if (subscription_) {
      natsSubscription_Unsubscribe(subscription_.get());  // deletes the old consumer if it lives
      subscription_.reset();
    }
    jsSubOptions sub_options;
    jsSubOptions_Init(&sub_options);
    sub_options.Stream = stream_.c_str();
    sub_options.Config.DeliverPolicy = js_DeliverNew;
    sub_options.Config.AckPolicy = js_AckNone;
    natsSubscription* sub = nullptr;
    jsErrCode code = static_cast<jsErrCode>(0);
    next_sequence_ = 0;
    if (natsStatus s = js_Subscribe(&sub, js_.get(), subject_.c_str(), &NatsVolume::OnMessage,
                                    this, nullptr, &sub_options, &code);
        s != NATS_OK) {
      return std::unexpected(Fail(fmt::format("cannot subscribe to {}: {}", subject_, NatsError(s))));
    }
    subscription_.reset(sub);
    natsSubscription_SetPendingLimits(sub, 65536, 64 << 20);
    current_ = sub;
    return {};
  }

  // The publisher: batches queued handles, resubscribes after a reconnect. Never on the event
  // loop's thread, so NATS never holds up an RPC or a fanotify read.
  void Run() {
    std::unique_lock lock(mu_);
    while (!stop_) {
      cv_.wait_for(lock, 100ms, [&] { return stop_ || resubscribe_ || publish_all_ || !queue_.empty(); });
      if (stop_) break;
      if (resubscribe_) {
        resubscribe_ = false;
        lock.unlock();
        auto ok = EnsureStream();
        if (ok) ok = Subscribe();
        if (ok) {
          // Cleared before the bump: a volume-wide marker skipped while it was set is covered.
          resync_pending_ = false;
          BumpAll("back on NATS (remote changes while away cannot be known)");
        } else {
          spdlog::warn("federation: {}; retrying", ok.error());
        }
        lock.lock();
        if (!ok) {
          resubscribe_ = true;
          cv_.wait_for(lock, 500ms, [&] { return stop_; });
        }
        continue;
      }
      if (!publish_all_ && queue_.empty()) continue;
      if (!publish_all_ && queue_.size() < kBatch) {
        cv_.wait_for(lock, 1ms, [&] { return stop_ || publish_all_ || queue_.size() >= kBatch; });
      }
      BumpMessage message{.origin = origin_};
      if (publish_all_) {
        message.all = true;
        queue_.clear();
        publish_all_ = false;
      } else {
        const size_t n = std::min(queue_.size(), kBatch);
        message.handles.assign(std::make_move_iterator(queue_.begin()),
                               std::make_move_iterator(queue_.begin() + n));
        queue_.erase(queue_.begin(), queue_.begin() + n);
      }
      lock.unlock();
      const bool sent = Send(message);
      lock.lock();
      if (!sent) {
        // The other hosts missed these changes: they get one volume-wide bump once NATS is back.
        queue_.clear();
        publish_all_ = true;
        cv_.wait_for(lock, 200ms, [&] { return stop_; });
      }
    }
  }

  bool Send(const BumpMessage& message) {
    if (natsConnection_Status(connection_.get()) != NATS_CONN_STATUS_CONNECTED) return false;
    const std::string body = EncodeBumpMessage(message);
    jsPubOptions pub_options;
    jsPubOptions_Init(&pub_options);
    pub_options.MaxWait = 2000;
    jsPubAck* ack = nullptr;
    jsErrCode code = static_cast<jsErrCode>(0);
    natsStatus s = js_Publish(&ack, js_.get(), subject_.c_str(), body.data(),
                              static_cast<int>(body.size()), &pub_options, &code);
    if (s != NATS_OK) {
      if (!publish_failing_) {  // once per outage; retried every 200 ms
        spdlog::warn("federation: cannot publish on {}: {}; the other hosts will get a "
                     "volume-wide bump once it works again", subject_, NatsError(s));
      }
      publish_failing_ = true;
      return false;
    }
    jsPubAck_Destroy(ack);
    published_messages_.fetch_add(1, std::memory_order_relaxed);
    published_bytes_.fetch_add(body.size(), std::memory_order_relaxed);
    published_handles_.fetch_add(message.handles.size(), std::memory_order_relaxed);
    if (publish_failing_) spdlog::info("federation: publishing on {} again", subject_);
    publish_failing_ = false;
    return true;
  }

  void Receive(natsMsg* msg) {
    jsMsgMetaData* meta = nullptr;
    if (natsMsg_GetMetaData(&meta, msg) == NATS_OK) {
      const uint64_t sequence = meta->Sequence.Stream;
      const uint64_t pending = meta->NumPending;
      jsMsgMetaData_Destroy(meta);
      const uint64_t expected = next_sequence_.exchange(sequence + 1);
      if (expected != 0 && sequence != expected) {
        BumpAll(fmt::format("stream sequence gap (expected {}, got {})", expected, sequence));
      }
      if (pending > kBehindBound && !behind_.exchange(true)) {
        BumpAll(fmt::format("{} messages behind the stream", pending));
      } else if (pending < kBehindBound / 2) {
        behind_ = false;
      }
    }
    auto body = std::span(reinterpret_cast<const unsigned char*>(natsMsg_GetData(msg)),
                          static_cast<size_t>(natsMsg_GetDataLength(msg)));
    auto message = DecodeBumpMessage(body);
    if (!message) {
      if (malformed_.allow()) spdlog::warn("federation: malformed message on {}", subject_);
      BumpAll("a malformed message");
      return;
    }
    if (message->origin == origin_) return;  // this versiond's own changes, bumped here already
    if (message->all) {
      // The bump after a reconnect covers it; bumping twice only costs guests revalidations.
      if (!resync_pending_) {
        BumpAll(fmt::format("host {} lost track of its changes", Hex(message->origin)));
      }
      return;
    }
    const uint64_t slots = table_.slot_count();
    for (const ChangedHandle& handle : message->handles) {
      table_.bump(protocol::SlotOf(
          protocol::HandleIdentity(volume_.fsid, handle.type, handle.bytes), slots));
    }
    remote_bumps_.fetch_add(message->handles.size(), std::memory_order_relaxed);
  }

  void BumpAll(const std::string& why) {
    resyncs_.fetch_add(1, std::memory_order_relaxed);
    spdlog::warn("federation: volume {}: {}: bumped all {} slots", volume_.name, why,
                 table_.bump_all());
  }

  static void OnMessage(natsConnection*, natsSubscription* sub, natsMsg* msg, void* closure) {
    auto* self = static_cast<NatsVolume*>(closure);
    if (sub == self->current_.load()) self->Receive(msg);
    natsMsg_Destroy(msg);
  }

  static void OnDisconnected(natsConnection*, void* closure) {
    auto* self = static_cast<NatsVolume*>(closure);
    self->connected_ = false;
    if (self->closing_) return;
    spdlog::warn("federation: volume {}: lost the NATS connection; serving locally, every slot "
                 "will be bumped when it returns", self->volume_.name);
  }

  static void OnReconnected(natsConnection* conn, void* closure) {
    auto* self = static_cast<NatsVolume*>(closure);
    char url[256] = "";
    natsConnection_GetConnectedUrl(conn, url, sizeof(url));
    self->connected_ = true;
    spdlog::info("federation: volume {}: reconnected to {}", self->volume_.name, url);
    self->resync_pending_ = true;
    {
      std::lock_guard lock(self->mu_);
      self->resubscribe_ = true;
    }
    self->cv_.notify_one();
  }

  static void OnError(natsConnection*, natsSubscription* sub, natsStatus status, void* closure) {
    auto* self = static_cast<NatsVolume*>(closure);
    if (status == NATS_SLOW_CONSUMER && sub != nullptr) {
      self->BumpAll("fell behind (the client dropped messages)");
      return;
    }
    spdlog::warn("federation: NATS error: {}", natsStatus_GetText(status));
  }

  const FederationOptions& options_;  // NatsFederation's, which outlives every volume
  const FederatedVolume volume_;
  shm::VersionTable& table_;
  const std::string stream_;
  const std::string subject_;
  OriginId origin_{};

  OptionsOwner nats_options_;
  ConnectionOwner connection_;
  JetStreamOwner js_;
  SubscriptionOwner subscription_;  // the worker's after Connect

  // Delivery-thread state.
  std::atomic<uint64_t> next_sequence_{0};  // 0: none seen since (re)subscribing
  std::atomic<natsSubscription*> current_{nullptr};  // whose messages Receive takes
  std::atomic<bool> behind_{false};
  LogLimiter malformed_{"malformed federation messages"};
  std::atomic<bool> closing_{false};
  // Set on reconnect, cleared just before the worker's "back on NATS" bump of every slot.
  std::atomic<bool> resync_pending_{false};
  std::atomic<bool> connected_{false};

  std::atomic<uint64_t> remote_bumps_{0};
  std::atomic<uint64_t> resyncs_{0};
  std::atomic<uint64_t> published_handles_{0};
  std::atomic<uint64_t> published_messages_{0};
  std::atomic<uint64_t> published_bytes_{0};

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<ChangedHandle> queue_;
  bool publish_all_ = false;
  bool resubscribe_ = false;
  bool stop_ = false;
  bool publish_failing_ = false;  // the worker's
  std::thread worker_;
};

// Every volume of this versiond. The NATS library is shut down once, after every volume's
// connection is closed and before any volume is freed.
class NatsFederation final : public Federation {
 public:
  explicit NatsFederation(FederationOptions options) : options_(std::move(options)) {}
  ~NatsFederation() override {
    for (auto& volume : volumes_) volume->Close();
    if (natsStatus s = nats_CloseAndWait(2000); s != NATS_OK) {
      // The client's threads may still be in a callback that names a volume: keep them (the
      // process is on its way out).
      spdlog::warn("federation: the NATS client did not stop within 2 s ({}); leaving it be",
                   natsStatus_GetText(s));
      for (auto& volume : volumes_) static_cast<void>(volume.release());
    }
  }

  // Connects each volume in turn; the first that cannot connect says why.
  std::expected<void, std::string> Connect(shm::VersionTable& table) {
    for (const FederatedVolume& volume : options_.volumes) {
      volumes_.push_back(std::make_unique<NatsVolume>(options_, volume, table));
      if (auto connected = volumes_.back()->Connect(); !connected) return connected;
    }
    return {};
  }

  void Publish(uint64_t fsid, int32_t handle_type, std::span<const unsigned char> handle) override {
    for (auto& volume : volumes_) {
      if (volume->fsid() == fsid) volume->Publish(handle_type, handle);
    }
  }

  void PublishAll() override {
    for (auto& volume : volumes_) volume->PublishAll();
  }

  std::vector<VolumeStatus> status() const override {
    std::vector<VolumeStatus> out;
    for (const auto& volume : volumes_) out.push_back(volume->status());
    return out;
  }

 private:
  const FederationOptions options_;
  std::vector<std::unique_ptr<NatsVolume>> volumes_;
};

}  // namespace

std::expected<std::unique_ptr<Federation>, std::string> Federation::Start(
    const FederationOptions& options, shm::VersionTable& table) {
  auto federation = std::make_unique<NatsFederation>(options);
  if (auto connected = federation->Connect(table); !connected) {
    return std::unexpected(connected.error());
  }
  return federation;
}

}  // namespace svfs::versiond
