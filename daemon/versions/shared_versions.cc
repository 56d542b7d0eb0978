#include "daemon/versions/shared_versions.h"

#include <chrono>
#include <cstring>

#include <spdlog/spdlog.h>

#include "protocol/inode_identity.h"

namespace svfs::versions {

std::unique_ptr<SharedVersions> SharedVersions::Start(Options options) {
  auto versions = Create(std::move(options));
  versions->start();
  return versions;
}

std::unique_ptr<SharedVersions> SharedVersions::Create(Options options) {
  return std::unique_ptr<SharedVersions>(new SharedVersions(std::move(options)));
}

void SharedVersions::start(std::string connect_path) {
  versiond::Client::Options client;
  client.socket_path = options_.socket_path;
  client.connect_path = std::move(connect_path);
  client.name = options_.client_name;
  client.pid = options_.pid;
  client.shared_dirs = {options_.shared_dir};
  client.listener = this;
  client_ = versiond::Client::Start(std::move(client));
  {
    std::unique_lock lock(attach_mutex_);
    attach_cv_.wait_for(lock, options_.attach_wait, [&] { return attached(); });
  }
  if (!attached()) {
    spdlog::warn("shared versions: svfs-versiond at {} not reachable yet; serving unversioned "
                 "(cache=none) until it is (start svfs-versiond, or check --versiond-socket)",
                 options_.socket_path);
  }
}

SharedVersions::SharedVersions(Options options) : options_(std::move(options)) {}

SharedVersions::~SharedVersions() {
  client_.reset();  // no listener call after this
}

std::optional<fs::VersionTableId> SharedVersions::table() const {
  shm::VersionTable* table = trusted_.load(std::memory_order_acquire);
  if (!table) return std::nullopt;
  fs::VersionTableId id;
  std::memcpy(id.uuid.data(), table->header().uuid, id.uuid.size());
  id.generation = table->header().generation.load(std::memory_order_acquire);
  return id;
}

fs::Version SharedVersions::sample(uint64_t identity) const {
  samples_.fetch_add(1, std::memory_order_relaxed);
  shm::VersionTable* table = trusted_.load(std::memory_order_acquire);
  // A table shrunk under us (shm::FaultGuard) reads zeros: its versions mean nothing.
  if (!table || table->damaged()) return {};
  uint64_t slot = protocol::SlotOf(identity, table->slot_count());
  if (slot == 0) return {};
  fs::Version version{slot, table->sample(slot)};
  // A detach between the load above and the sample may have bumped this slot already, and no
  // one would bump it for host edits after: such a version must not reach the guest.
  if (trusted_.load(std::memory_order_acquire) != table) return {};
  return version;
}

void SharedVersions::bump(uint64_t identity) {
  bumps_.fetch_add(1, std::memory_order_relaxed);
  shm::VersionTable* table = mapped_.load();
  if (!table) {
    // Before the first table is mapped: versiond may already skip our fanotify events. Either
    // the first attach sees the flag and bumps everything, or this reload sees its table.
    missed_.store(true);
    table = mapped_.load();
  }
  if (table) table->bump(protocol::SlotOf(identity, table->slot_count()));
  // versiond serves another table now (it was replaced): its guests see our changes there.
  shm::VersionTable* other = other_.load(std::memory_order_acquire);
  if (other) other->bump(protocol::SlotOf(identity, other->slot_count()));
}


shm::VersionTable* SharedVersions::map_table(const versiond::TableIdentity& identity) {
  for (const auto& mapped : tables_) {
    if (std::memcmp(mapped->header().uuid, identity.uuid.data(), identity.uuid.size()) == 0) {
      return mapped.get();
    }
  }
  auto mapped = shm::VersionTable::Attach(identity.name, shm::Access::kReadWrite);
  if (!mapped) {
    spdlog::error("shared versions: {}; serving unversioned", mapped.error());
    return nullptr;
  }
  tables_.push_back(std::make_unique<shm::VersionTable>(std::move(*mapped)));
  return tables_.back().get();
}

void SharedVersions::attached(const versiond::TableIdentity& identity, uint64_t epoch) {
  std::unique_lock lock(attach_mutex_);
  shm::VersionTable* table = map_table(identity);
  if (!table) return;
  shm::VersionTable* announced = mapped_.load(std::memory_order_acquire);
  if (!announced) {
    mapped_.store(table);
    // Changes made since versiond registered us were bumped nowhere: every slot moves on once.
    if (missed_.exchange(false)) table->bump_all();
  } else if (table != announced) {
    // The guest was told about the first table and reads that one; versions in another table
    // would never reach it. Staying unversioned keeps it coherent (cache=none behaviour); our
    // changes are bumped in both tables, for the guests of daemons on the new one (all its
    // slots once now: our changes until now never reached it).
    if (other_.exchange(table) != table) table->bump_all();
    spdlog::error("shared versions: svfs-versiond now serves a different table ({}); replies stay "
                  "unversioned until svfsd restarts",
                  identity.name);
    return;
  }
  other_.store(nullptr, std::memory_order_release);
  epoch_.store(epoch, std::memory_order_release);
  trusted_.store(table, std::memory_order_release);
  spdlog::info("shared versions: attached to svfs-versiond (table {}, generation {}, session {})",
               identity.name, identity.generation, epoch);
  lock.unlock();
  attach_cv_.notify_all();
}

void SharedVersions::detached(uint64_t epoch) {
  std::lock_guard lock(attach_mutex_);
  if (epoch_.load(std::memory_order_acquire) != epoch || !trusted_.load()) return;
  shm::VersionTable* table = trusted_.exchange(nullptr, std::memory_order_acq_rel);
  // Without versiond nobody sees host-side edits: our guest must not go on trusting what it
  // cached. Its inodes' slots are not known here (they are computed, never recorded), so every
  // slot moves on once; guests of other daemons revalidate once too (a cost, never staleness).
  auto start = std::chrono::steady_clock::now();
  uint64_t slots = table->slot_count();
  table->bump_all();
  auto took = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start);
  spdlog::warn("shared versions: lost svfs-versiond (session {}); bumped all {} slots in {:.1f} ms, "
               "serving as cache=none until it returns",
               epoch, slots > 0 ? slots - 1 : 0, took.count());
}

}  // namespace svfs::versions
