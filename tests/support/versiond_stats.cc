#include "tests/support/versiond_stats.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>

#include "protocol/inode_identity.h"
#include "protocol/versiond.capnp.h"

namespace svfs_test {

std::optional<SlotRow> StatsSnapshot::FindSlot(uint64_t slot) const {
  for (const auto& s : slots)
    if (s.slot == slot) return s;
  return std::nullopt;
}

const ClientRow* StatsSnapshot::FindClient(pid_t pid) const {
  for (const auto& c : clients)
    if (c.pid == static_cast<uint32_t>(pid)) return &c;
  return nullptr;
}

StatsSnapshot GetStats(const std::string& socket_path, uint32_t hottest, std::chrono::milliseconds timeout) {
  auto io = kj::setupAsyncIo();
  auto& ws = io.waitScope;
  auto& timer = io.provider->getTimer();
  auto limit = static_cast<int64_t>(timeout.count()) * kj::MILLISECONDS;
  auto address = timer.timeoutAfter(limit, io.provider->getNetwork().parseAddress(
                                               kj::str("unix:", socket_path.c_str())))
                     .wait(ws);
  auto stream = timer.timeoutAfter(limit, address->connect()).wait(ws);
  capnp::TwoPartyClient client(*stream);
  auto versiond = client.bootstrap().castAs<svfs::rpc::Versiond>();
  auto request = versiond.statsRequest();
  request.setHottest(hottest);
  auto response = timer.timeoutAfter(limit, request.send()).wait(ws);
  auto stats = response.getStats();
  StatsSnapshot out;
  out.table = stats.getTable().getName().cStr();
  out.generation = stats.getTable().getGeneration();
  out.slot_count = stats.getTable().getSlotCount();
  out.host_bumps = stats.getHostBumps();
  out.watched_filesystems = stats.getWatchedFilesystems();
  for (auto c : stats.getClients()) {
    ClientRow row{c.getId(), c.getName().cStr(), c.getPid(), c.getUid(), {}};
    for (auto dir : c.getSharedDirs()) row.shared_dirs.emplace_back(dir.cStr());
    out.clients.push_back(std::move(row));
  }
  for (auto s : stats.getHottest()) out.slots.push_back({s.getSlot(), s.getVersion()});
  for (auto v : stats.getFederation()) {
    out.federation.push_back({.name = v.getName().cStr(),
                              .connected = v.getConnected(),
                              .remote_bumps = v.getRemoteBumps(),
                              .resyncs = v.getResyncs(),
                              .published_handles = v.getPublishedHandles(),
                              .published_messages = v.getPublishedMessages(),
                              .published_bytes = v.getPublishedBytes()});
  }
  return out;
}

std::optional<StatsSnapshot> QueryStats(const std::string& socket_path, std::string* error, uint32_t hottest,
                                        std::chrono::milliseconds timeout) {
  try {
    return GetStats(socket_path, hottest, timeout);
  } catch (const kj::Exception& e) {
    if (error) *error = e.getDescription().cStr();
    return std::nullopt;
  }
}

uint64_t SlotOfPath(const std::string& path, uint64_t slot_count) {
  int fd = ::open(path.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return 0;
  struct stat st {};
  struct statfs sfs {};
  uint64_t slot = 0;
  if (::fstat(fd, &st) == 0 && ::fstatfs(fd, &sfs) == 0) {
    uint64_t identity = svfs::protocol::IdentityOfFd(fd, svfs::protocol::PackFsid(sfs.f_fsid),
                                                     st.st_dev, st.st_ino);
    slot = svfs::protocol::SlotOf(identity, slot_count);
  }
  ::close(fd);
  return slot;
}

}  // namespace svfs_test
