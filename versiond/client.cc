#include "versiond/client.h"

#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <utility>

#include <capnp/message.h>
#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>
#include <kj/async.h>
#include <kj/debug.h>
#include <spdlog/spdlog.h>

#include "protocol/versiond.capnp.h"

namespace svfs::versiond {
namespace {

kj::Duration ToKj(std::chrono::milliseconds ms) { return ms.count() * kj::MILLISECONDS; }

// One acquire in flight, shared by the calling thread (which waits) and the loop thread (which
// completes it). Completing twice is harmless: the first answer wins.
struct PendingCall {
  std::mutex mu;  // leaf lock
  std::condition_variable cv;
  bool done = false;
  std::optional<AcquireResult> result;

  void complete(std::optional<AcquireResult> value) {
    std::lock_guard lock(mu);
    if (done) return;
    done = true;
    result = std::move(value);
    cv.notify_all();
  }
};

// Completes the call with nullopt if the loop drops it unanswered (disconnect, shutdown).
struct CompleteOnDestroy {
  CompleteOnDestroy() = default;
  CompleteOnDestroy(const CompleteOnDestroy&) = delete;
  CompleteOnDestroy& operator=(const CompleteOnDestroy&) = delete;
  std::shared_ptr<PendingCall> call;
  ~CompleteOnDestroy() {
    if (call) call->complete(std::nullopt);
  }
};

// Runs listener calls in order on their own thread, so that the listener may call acquire()
// (which needs the loop thread) and the loop never waits on listener code.
class Notifier {
 public:
  explicit Notifier(Client::Listener* listener) : listener_(listener) {
    if (listener_ != nullptr) thread_ = std::thread([this] { Run(); });
  }
  ~Notifier() { Stop(); }

  void Post(std::function<void(Client::Listener&)> event) {
    if (listener_ == nullptr) return;
    std::lock_guard lock(mu_);
    if (stopping_) return;
    queue_.push_back(std::move(event));
    cv_.notify_one();
  }

  // Pending events are dropped: after Stop() returns the listener is never called again.
  void Stop() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
      cv_.notify_one();
    }
    if (thread_.joinable()) thread_.join();
  }

 private:
  void Run() {
    std::unique_lock lock(mu_);
    while (true) {
      cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      auto event = std::move(queue_.front());
      queue_.pop_front();
      lock.unlock();  // the listener runs with no lock held
      event(*listener_);
      lock.lock();
    }
  }

  Client::Listener* listener_;
  std::mutex mu_;  // leaf lock: guards queue_ and stopping_
  std::condition_variable cv_;
  std::deque<std::function<void(Client::Listener&)>> queue_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace

class Client::Impl {
 public:
  explicit Impl(Options options) : options_(std::move(options)), notifier_(options_.listener) {}

  ~Impl() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
      KJ_IF_MAYBE(stop, stop_) { (*stop)->fulfill(); }
      stop_ = nullptr;
      wakeup_ = nullptr;
    }
    if (thread_.joinable()) thread_.join();
    notifier_.Stop();
  }

  void Start() {
    thread_ = std::thread([this] { ThreadMain(); });
    std::unique_lock lock(mu_);
    started_cv_.wait(lock, [this] { return started_; });
  }

  bool attached() const {
    std::lock_guard lock(mu_);
    return attached_;
  }

  std::optional<TableIdentity> table() const {
    std::lock_guard lock(mu_);
    if (!attached_) return std::nullopt;
    return table_;
  }

  std::optional<AcquireResult> acquire(std::span<const Key> keys) {
    if (!executor_ || !attached()) return std::nullopt;
    auto call = std::make_shared<PendingCall>();
    uint64_t epoch = 0;
    try {
      executor_->executeSync([&] { epoch = StartAcquire(keys, call); });
    } catch (const kj::Exception&) {
      return std::nullopt;  // the loop has exited (shutdown)
    }
    std::unique_lock lock(call->mu);
    if (!call->cv.wait_for(lock, options_.call_timeout, [&] { return call->done; })) {
      lock.unlock();
      spdlog::warn("svfs-versiond client: acquire of {} keys timed out after {} ms; reconnecting",
                   keys.size(), options_.call_timeout.count());
      try {
        executor_->executeSync([&] { Disconnect(epoch); });
      } catch (const kj::Exception&) {
      }
      return std::nullopt;
    }
    return std::move(call->result);
  }

  void release(uint64_t epoch, std::span<const uint64_t> slots) {
    if (slots.empty()) return;
    std::lock_guard lock(mu_);
    if (!attached_ || epoch != epoch_) return;  // those references died with their session
    pending_release_.insert(pending_release_.end(), slots.begin(), slots.end());
    // Wake the loop; later releases before it runs join the same batch.
    KJ_IF_MAYBE(wakeup, wakeup_) { (*wakeup)->fulfill(); }
    wakeup_ = nullptr;
  }

 private:
  // Everything of one connection. Lives on the loop thread.
  struct Connection {
    explicit Connection(kj::Own<kj::AsyncIoStream> stream_in)
        : stream(kj::mv(stream_in)),
          network(*stream, capnp::rpc::twoparty::Side::CLIENT),
          rpc(capnp::makeRpcClient(network)) {
      capnp::word scratch[4]{};
      capnp::MallocMessageBuilder message(scratch);
      auto vat = message.getRoot<capnp::rpc::twoparty::VatId>();
      vat.setSide(capnp::rpc::twoparty::Side::SERVER);
      versiond = rpc.bootstrap(vat).castAs<rpc::Versiond>();
    }
    kj::Own<kj::AsyncIoStream> stream;
    capnp::TwoPartyVatNetwork network;
    capnp::RpcSystem<capnp::rpc::twoparty::VatId> rpc;
    rpc::Versiond::Client versiond = nullptr;
    rpc::Session::Client session = nullptr;
    uint64_t epoch = 0;  // 0 until attached
  };

  class TaskErrors final : public kj::TaskSet::ErrorHandler {
   public:
    void taskFailed(kj::Exception&& e) override {
      spdlog::debug("svfs-versiond client: task failed: {}", e.getDescription().cStr());
    }
  };

  void ThreadMain() {
    try {
      auto io = kj::setupAsyncIo();
      io_ = &io;
      TaskErrors errors;
      auto tasks = kj::heap<kj::TaskSet>(errors);
      tasks_ = tasks.get();
      auto stop = kj::newPromiseAndCrossThreadFulfiller<void>();
      {
        std::lock_guard lock(mu_);
        executor_ = kj::getCurrentThreadExecutor().addRef();
        stop_ = kj::mv(stop.fulfiller);
        if (stopping_) {
          KJ_IF_MAYBE(f, stop_) { (*f)->fulfill(); }
        }
        started_ = true;
        started_cv_.notify_all();
      }
      {
        auto run = RunLoop().exclusiveJoin(ReleaseLoop());
        kj::mv(stop.promise).exclusiveJoin(kj::mv(run)).wait(io.waitScope);
      }
      // Tear down on this thread, calls first (their guards complete the waiting callers with
      // nullopt), then the connection.
      tasks = nullptr;
      tasks_ = nullptr;
      drop_ = nullptr;
      connection_ = nullptr;
      {
        std::lock_guard lock(mu_);
        wakeup_ = nullptr;
        stop_ = nullptr;
      }
      io_ = nullptr;
    } catch (const kj::Exception& e) {
      spdlog::error("svfs-versiond client: event loop failed: {}; running unversioned",
                    e.getDescription().cStr());
      std::lock_guard lock(mu_);
      started_ = true;
      started_cv_.notify_all();
    }
    std::lock_guard lock(mu_);
    attached_ = false;
  }

  // Connects, attaches, waits for the session to end, and starts over.
  kj::Promise<void> RunLoop() {
    return Connect().then([this](bool ok) -> kj::Promise<void> {
      if (!ok) {
        return io_->provider->getTimer().afterDelay(ToKj(options_.retry_interval)).then([this] {
          return RunLoop();
        });
      }
      auto dropped = kj::newPromiseAndFulfiller<void>();
      drop_ = kj::mv(dropped.fulfiller);
      return connection_->network.onDisconnect().exclusiveJoin(kj::mv(dropped.promise)).then([this] {
        Detached();
        return RunLoop();
      });
    });
  }

  kj::Promise<bool> Connect() {
    auto address = kj::str("unix:", options_.socket_path.c_str());
    return io_->provider->getNetwork()
        .parseAddress(address)
        .then([](kj::Own<kj::NetworkAddress> addr) {
          return addr->connect().attach(kj::mv(addr));
        })
        .then([this](kj::Own<kj::AsyncIoStream> stream) {
          connection_ = kj::heap<Connection>(kj::mv(stream));
          auto request = connection_->versiond.attachRequest();
          auto info = request.initClient();
          info.setName(options_.name);
          info.setPid(static_cast<uint32_t>(::getpid()));
          auto dirs = info.initSharedDirs(options_.shared_dirs.size());
          for (size_t i = 0; i < options_.shared_dirs.size(); ++i) dirs.set(i, options_.shared_dirs[i]);
          kj::Promise<capnp::Response<rpc::Versiond::AttachResults>> sent = request.send();
          return io_->provider->getTimer().timeoutAfter(ToKj(options_.call_timeout), kj::mv(sent));
        })
        .then([this](capnp::Response<rpc::Versiond::AttachResults> response) {
          Attached(response);
          return true;
        })
        .catch_([this](kj::Exception&& e) {
          connection_ = nullptr;
          if (!unreachable_logged_) {
            unreachable_logged_ = true;
            spdlog::warn("svfs-versiond client: cannot reach versiond at {}: {}; serving "
                         "unversioned replies, retrying every {} ms", options_.socket_path,
                         e.getDescription().cStr(), options_.retry_interval.count());
          }
          return false;
        });
  }

  void Attached(capnp::Response<rpc::Versiond::AttachResults>& response) {
    auto info = response.getTable();
    TableIdentity table;
    table.name = info.getName();
    auto uuid = info.getUuid();
    std::memcpy(table.uuid.data(), uuid.begin(), std::min<size_t>(uuid.size(), table.uuid.size()));
    table.generation = info.getGeneration();
    table.slot_count = info.getSlotCount();
    table.slot_stride = info.getSlotStride();
    table.mapped_bytes = info.getMappedBytes();
    connection_->session = response.getSession();
    uint64_t epoch;
    {
      std::lock_guard lock(mu_);
      epoch = ++epoch_;
      attached_ = true;
      table_ = table;
      pending_release_.clear();  // of an earlier session: void
    }
    connection_->epoch = epoch;
    unreachable_logged_ = false;
    spdlog::info("svfs-versiond client: attached to versiond at {} (table {} generation {}, "
                 "session {})", options_.socket_path, table.name, table.generation, epoch);
    notifier_.Post([table, epoch](Listener& l) { l.attached(table, epoch); });
  }

  void Detached() {
    uint64_t epoch = connection_->epoch;
    {
      std::lock_guard lock(mu_);
      attached_ = false;
      pending_release_.clear();
    }
    drop_ = nullptr;
    // Not from inside the network's own disconnect continuation: destroy it on a later turn.
    tasks_->add(kj::evalLater([c = kj::mv(connection_)]() mutable { c = nullptr; }));
    spdlog::warn("svfs-versiond client: lost versiond at {} (session {}); serving unversioned "
                 "replies until it is back", options_.socket_path, epoch);
    unreachable_logged_ = true;  // the "lost" line covers the reconnect failures that follow
    notifier_.Post([epoch](Listener& l) { l.detached(epoch); });
  }

  // Drops the connection of session `epoch` (a call timed out: the peer may be wedged).
  void Disconnect(uint64_t epoch) {
    if (!connection_ || connection_->epoch != epoch) return;
    KJ_IF_MAYBE(drop, drop_) { (*drop)->fulfill(); }
  }

  // Loop thread. Returns the epoch the call went to (0 if none).
  uint64_t StartAcquire(std::span<const Key> keys, std::shared_ptr<PendingCall> call) {
    if (!connection_ || connection_->epoch == 0) {
      call->complete(std::nullopt);
      return 0;
    }
    uint64_t epoch = connection_->epoch;
    auto request = connection_->session.acquireRequest();
    auto list = request.initKeys(keys.size());
    for (size_t i = 0; i < keys.size(); ++i) {
      const Key& key = keys[i];
      auto out = list[i];
      out.setDev(key.dev);
      out.setIno(key.ino);
      out.setFsid(key.fsid);
      out.setHandleType(key.handle_type);
      if (!key.handle.empty()) out.setHandle(kj::arrayPtr(key.handle.data(), key.handle.size()));
    }
    auto guard = kj::heap<CompleteOnDestroy>();  // not from a temporary: it would complete on copy
    guard->call = call;
    tasks_->add(request.send()
                    .then([call, epoch](capnp::Response<rpc::Session::AcquireResults> response) {
                      AcquireResult result{.epoch = epoch, .grants = {}};
                      auto grants = response.getGrants();
                      result.grants.reserve(grants.size());
                      for (auto g : grants) result.grants.push_back({g.getSlot(), g.getVersion()});
                      call->complete(std::move(result));
                    })
                    .catch_([this, call, epoch](kj::Exception&& e) {
                      spdlog::warn("svfs-versiond client: acquire failed: {}; reconnecting",
                                   e.getDescription().cStr());
                      call->complete(std::nullopt);
                      Disconnect(epoch);
                    })
                    .attach(kj::mv(guard)));
    return epoch;
  }

  // Sends queued releases whenever release() wakes it; one RPC per wakeup.
  kj::Promise<void> ReleaseLoop() {
    std::vector<uint64_t> batch;
    uint64_t epoch = 0;
    auto wake = kj::newPromiseAndCrossThreadFulfiller<void>();
    {
      std::lock_guard lock(mu_);
      batch.swap(pending_release_);
      epoch = epoch_;
      if (batch.empty()) wakeup_ = kj::mv(wake.fulfiller);
    }
    if (!batch.empty()) {
      if (connection_ && connection_->epoch == epoch) {
        auto request = connection_->session.releaseRequest();
        auto slots = request.initSlots(batch.size());
        for (size_t i = 0; i < batch.size(); ++i) slots.set(i, batch[i]);
        tasks_->add(request.send().ignoreResult());
      }
      return kj::evalLater([this] { return ReleaseLoop(); });
    }
    return kj::mv(wake.promise).then([this] { return ReleaseLoop(); });
  }

  const Options options_;
  Notifier notifier_;
  std::thread thread_;

  // Loop-thread only.
  kj::AsyncIoContext* io_ = nullptr;
  kj::TaskSet* tasks_ = nullptr;
  kj::Own<Connection> connection_;
  kj::Maybe<kj::Own<kj::PromiseFulfiller<void>>> drop_;
  bool unreachable_logged_ = false;

  // Shared. Lock order: mu_ is taken alone (never while holding a PendingCall's or the
  // notifier's lock, never across a kj call other than fulfilling a cross-thread fulfiller).
  mutable std::mutex mu_;
  std::condition_variable started_cv_;
  bool started_ = false;
  bool stopping_ = false;
  bool attached_ = false;
  uint64_t epoch_ = 0;
  TableIdentity table_;
  std::vector<uint64_t> pending_release_;  // for session epoch_
  kj::Maybe<kj::Own<kj::CrossThreadPromiseFulfiller<void>>> wakeup_;
  kj::Maybe<kj::Own<kj::CrossThreadPromiseFulfiller<void>>> stop_;
  // Set once the loop runs and kept (a reference) until ~Impl, so callers can use it without the
  // lock; it throws DISCONNECTED once the loop has exited.
  kj::Own<const kj::Executor> executor_;
};

std::unique_ptr<Client> Client::Start(Options options) {
  auto impl = std::make_unique<Impl>(std::move(options));
  impl->Start();
  return std::unique_ptr<Client>(new Client(std::move(impl)));
}

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Client::~Client() = default;

bool Client::attached() const { return impl_->attached(); }
std::optional<TableIdentity> Client::table() const { return impl_->table(); }
std::optional<AcquireResult> Client::acquire(std::span<const Key> keys) { return impl_->acquire(keys); }
void Client::release(uint64_t epoch, std::span<const uint64_t> slots) {
  impl_->release(epoch, slots);
}

}  // namespace svfs::versiond
