#include "tests/support/versiond_stats.h"

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>

#include "protocol/versiond.capnp.h"

namespace svfs_test {

std::optional<SlotRow> StatsSnapshot::Find(uint64_t dev, uint64_t ino) const {
  for (const auto& s : slots)
    if (s.dev == dev && s.ino == ino) return s;
  return std::nullopt;
}

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
  out.in_use = stats.getSlotsInUse();
  out.free = stats.getSlotsFree();
  out.high_water = stats.getHighWater();
  out.host_bumps = stats.getHostBumps();
  for (auto c : stats.getClients())
    out.clients.push_back(
        {c.getId(), c.getName().cStr(), c.getPid(), c.getUid(), c.getReferences(), c.getSlots()});
  for (auto s : stats.getHottest())
    out.slots.push_back(
        {s.getSlot(), s.getVersion(), s.getReferences(), s.getKey().getDev(), s.getKey().getIno()});
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

}  // namespace svfs_test
