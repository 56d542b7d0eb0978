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

// Runs listener calls in order on their own thread, so that the loop never waits on listener
// code (a detach bumps a whole table).
class Notifier {
 public:
  explicit Notifier(Client::Listener* listener) : listener_(listener) {
    if (listener_ != nullptr) thread_ = std::thread([this] { run(); });
  }
  ~Notifier() { stop(); }

  void post(std::function<void(Client::Listener&)> event) {
    if (listener_ == nullptr) return;
    std::lock_guard lock(mu_);
    if (stopping_) return;
    queue_.push_back(std::move(event));
    cv_.notify_one();
  }

  // Pending events are dropped: after stop() returns the listener is never called again.
  void stop() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
      cv_.notify_one();
    }
    if (thread_.joinable()) thread_.join();
  }

 private:
  void run() {
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
    }
    if (thread_.joinable()) thread_.join();
    notifier_.stop();
  }

  void start() {
    thread_ = std::thread([this] { thread_main(); });
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
    uint64_t epoch = 0;  // 0 until attached
  };

  class TaskErrors final : public kj::TaskSet::ErrorHandler {
   public:
    void taskFailed(kj::Exception&& e) override {
      spdlog::debug("svfs-versiond client: task failed: {}", e.getDescription().cStr());
    }
  };

  void thread_main() {
    try {
      auto io = kj::setupAsyncIo();
      io_ = &io;
      TaskErrors errors;
      auto tasks = kj::heap<kj::TaskSet>(errors);
      tasks_ = tasks.get();
      auto stop = kj::newPromiseAndCrossThreadFulfiller<void>();
      {
        std::lock_guard lock(mu_);
        stop_ = kj::mv(stop.fulfiller);
        if (stopping_) {
          KJ_IF_MAYBE(f, stop_) { (*f)->fulfill(); }
        }
        started_ = true;
        started_cv_.notify_all();
      }
      kj::mv(stop.promise).exclusiveJoin(run_loop()).wait(io.waitScope);
      // Tear down on this thread: calls first, then the connection.
      tasks = nullptr;
      tasks_ = nullptr;
      connection_ = nullptr;
      {
        std::lock_guard lock(mu_);
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
  kj::Promise<void> run_loop() {
    return connect().then([this](bool ok) -> kj::Promise<void> {
      if (!ok) {
        return io_->provider->getTimer().afterDelay(ToKj(options_.retry_interval)).then([this] {
          return run_loop();
        });
      }
      return connection_->network.onDisconnect()
          .exclusiveJoin(heartbeat(connection_->epoch))
          .then([this] {
            detached();
            return run_loop();
          });
    });
  }

  kj::Promise<bool> connect() {
    const std::string& where = options_.connect_path.empty() ? options_.socket_path : options_.connect_path;
    auto address = kj::str("unix:", where.c_str());
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
          info.setPid(options_.pid ? options_.pid : static_cast<uint32_t>(::getpid()));
          auto dirs = info.initSharedDirs(options_.shared_dirs.size());
          for (size_t i = 0; i < options_.shared_dirs.size(); ++i) dirs.set(i, options_.shared_dirs[i]);
          kj::Promise<capnp::Response<rpc::Versiond::AttachResults>> sent = request.send();
          return io_->provider->getTimer().timeoutAfter(ToKj(options_.call_timeout), kj::mv(sent));
        })
        .then([this](capnp::Response<rpc::Versiond::AttachResults> response) {
          attached(response);
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

  void attached(capnp::Response<rpc::Versiond::AttachResults>& response) {
    auto info = response.getTable();
    TableIdentity table;
    table.name = info.getName();
    auto uuid = info.getUuid();
    std::memcpy(table.uuid.data(), uuid.begin(), std::min<size_t>(uuid.size(), table.uuid.size()));
    table.generation = info.getGeneration();
    table.slot_count = info.getSlotCount();
    table.slot_stride = info.getSlotStride();
    table.mapped_bytes = info.getMappedBytes();
    uint64_t epoch;
    {
      std::lock_guard lock(mu_);
      epoch = ++epoch_;
      attached_ = true;
      table_ = table;
    }
    connection_->epoch = epoch;
    unreachable_logged_ = false;
    spdlog::info("svfs-versiond client: attached to versiond at {} (table {} generation {}, "
                 "session {})", options_.socket_path, table.name, table.generation, epoch);
    notifier_.post([table, epoch](Listener& l) { l.attached(table, epoch); });
  }

  void detached() {
    uint64_t epoch = connection_->epoch;
    {
      std::lock_guard lock(mu_);
      attached_ = false;
    }
    // Not from inside the network's own disconnect continuation: destroy it on a later turn.
    tasks_->add(kj::evalLater([c = kj::mv(connection_)]() mutable { c = nullptr; }));
    spdlog::warn("svfs-versiond client: lost versiond at {} (session {}); serving unversioned "
                 "replies until it is back", options_.socket_path, epoch);
    unreachable_logged_ = true;  // the "lost" line covers the reconnect failures that follow
    notifier_.post([epoch](Listener& l) { l.detached(epoch); });
  }

  // Resolves when versiond misses a heartbeat (no answer within call_timeout): a versiond
  // that is connected but not serving sees no host edits either.
  kj::Promise<void> heartbeat(uint64_t epoch) {
    return io_->provider->getTimer()
        .afterDelay(ToKj(options_.heartbeat_interval))
        .then([this, epoch]() -> kj::Promise<bool> {
          if (!connection_ || connection_->epoch != epoch) return false;
          return io_->provider->getTimer()
              .timeoutAfter(ToKj(options_.call_timeout),
                            connection_->versiond.pingRequest().send().ignoreResult())
              .then([] { return true; }, [](kj::Exception&&) { return false; });
        })
        .then([this, epoch](bool answered) -> kj::Promise<void> {
          if (answered) return heartbeat(epoch);
          spdlog::warn("svfs-versiond client: versiond at {} missed a heartbeat ({} ms); "
                       "reconnecting", options_.socket_path, options_.call_timeout.count());
          return kj::READY_NOW;
        });
  }

  const Options options_;
  Notifier notifier_;
  std::thread thread_;

  // Loop-thread only.
  kj::AsyncIoContext* io_ = nullptr;
  kj::TaskSet* tasks_ = nullptr;
  kj::Own<Connection> connection_;
  bool unreachable_logged_ = false;

  // Shared. Lock order: mu_ is taken alone (never while holding the notifier's lock, never
  // across a kj call other than fulfilling a cross-thread fulfiller).
  mutable std::mutex mu_;
  std::condition_variable started_cv_;
  bool started_ = false;
  bool stopping_ = false;
  bool attached_ = false;
  uint64_t epoch_ = 0;
  TableIdentity table_;
  kj::Maybe<kj::Own<kj::CrossThreadPromiseFulfiller<void>>> stop_;
};

std::unique_ptr<Client> Client::Start(Options options) {
  auto impl = std::make_unique<Impl>(std::move(options));
  impl->start();
  return std::unique_ptr<Client>(new Client(std::move(impl)));
}

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Client::~Client() = default;

bool Client::attached() const { return impl_->attached(); }
std::optional<TableIdentity> Client::table() const { return impl_->table(); }

}  // namespace svfs::versiond
