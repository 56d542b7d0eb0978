// svfsctl: looks into a running svfs-versiond (status, clients, hottest slots, the key behind a
// slot) over its RPC socket.
#include <errno.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <capnp/message.h>
#include <capnp/rpc-twoparty.h>
#include <fmt/format.h>
#include <kj/async-io.h>

#include "protocol/versiond.capnp.h"

namespace {

// Prints rows as columns padded to the widest cell; numbers (and their headers) align right.
void PrintTable(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows,
                const std::vector<bool>& right) {
  std::vector<size_t> width(header.size());
  for (size_t c = 0; c < header.size(); ++c) width[c] = header[c].size();
  for (const auto& row : rows) {
    for (size_t c = 0; c < row.size() && c < width.size(); ++c) width[c] = std::max(width[c], row[c].size());
  }
  auto print_row = [&](const std::vector<std::string>& row) {
    std::string line;
    for (size_t c = 0; c < row.size(); ++c) {
      if (c > 0) line += "  ";
      bool last = c + 1 == row.size();
      if (right[c]) {
        line += fmt::format("{:>{}}", row[c], width[c]);
      } else {
        line += last ? row[c] : fmt::format("{:<{}}", row[c], width[c]);
      }
    }
    std::puts(line.c_str());
  };
  print_row(header);
  for (const auto& row : rows) print_row(row);
}

void PrintPairs(const std::vector<std::pair<std::string, std::string>>& pairs) {
  size_t width = 0;
  for (const auto& [k, v] : pairs) width = std::max(width, k.size());
  for (const auto& [k, v] : pairs) std::puts(fmt::format("{:<{}}  {}", k + ":", width + 1, v).c_str());
}

std::string Hex(capnp::Data::Reader data) {
  std::string out;
  for (auto byte : data) out += fmt::format("{:02x}", byte);
  return out;
}

std::string Uuid(capnp::Data::Reader data) {
  if (data.size() != 16) return Hex(data);
  std::string h = Hex(data);
  return fmt::format("{}-{}-{}-{}-{}", h.substr(0, 8), h.substr(8, 4), h.substr(12, 4),
                     h.substr(16, 4), h.substr(20));
}

std::string Duration(uint64_t seconds) {
  uint64_t d = seconds / 86400, h = seconds / 3600 % 24, m = seconds / 60 % 60, s = seconds % 60;
  if (d > 0) return fmt::format("{}d {}h {}m {}s", d, h, m, s);
  if (h > 0) return fmt::format("{}h {}m {}s", h, m, s);
  if (m > 0) return fmt::format("{}m {}s", m, s);
  return fmt::format("{}s", s);
}

std::string DevIno(svfs::rpc::InodeKey::Reader key) {
  // st_dev as major:minor the way ls and stat print it.
  uint64_t dev = key.getDev();
  unsigned major = static_cast<unsigned>(((dev >> 32) & 0xfffff000) | ((dev >> 8) & 0xfff));
  unsigned minor = static_cast<unsigned>(((dev >> 12) & 0xffffff00) | (dev & 0xff));
  return fmt::format("{}:{}:{}", major, minor, key.getIno());
}

// Connects with a plain socket first, so that the error is the errno the user can act on.
int ConnectOrExit(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    std::fprintf(stderr, "svfsctl: --socket %s: path too long\n", path.c_str());
    std::exit(1);
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    std::fprintf(stderr, "svfsctl: cannot connect to %s: %s (is svfs-versiond running?)\n",
                 path.c_str(), std::strerror(errno));
    std::exit(1);
  }
  return fd;
}

int Status(svfs::rpc::Stats::Reader stats) {
  auto table = stats.getTable();
  timespec now{};
  clock_gettime(CLOCK_REALTIME, &now);
  uint64_t now_ns = static_cast<uint64_t>(now.tv_sec) * 1'000'000'000ULL + now.tv_nsec;
  uint64_t started = stats.getStartedAtNs();
  PrintPairs({
      {"table", std::string(table.getName().cStr())},
      {"uuid", Uuid(table.getUuid())},
      {"generation", fmt::format("{}", table.getGeneration())},
      {"slot count", fmt::format("{}", table.getSlotCount())},
      {"slot stride", fmt::format("{} bytes", table.getSlotStride())},
      {"mapped", fmt::format("{} bytes", table.getMappedBytes())},
      {"in use", fmt::format("{}", stats.getSlotsInUse())},
      {"free", fmt::format("{}", stats.getSlotsFree())},
      {"high water", fmt::format("{}", stats.getHighWater())},
      {"clients", fmt::format("{}", stats.getClients().size())},
      {"host bumps", fmt::format("{}", stats.getHostBumps())},
      {"uptime", Duration(now_ns > started ? (now_ns - started) / 1'000'000'000ULL : 0)},
  });
  return 0;
}

int Clients(svfs::rpc::Stats::Reader stats) {
  std::vector<std::vector<std::string>> rows;
  for (auto c : stats.getClients()) {
    rows.push_back({fmt::format("{}", c.getId()), fmt::format("{}", c.getPid()),
                    fmt::format("{}", c.getUid()), fmt::format("{}", c.getReferences()),
                    fmt::format("{}", c.getSlots()), c.getName().cStr()});
  }
  PrintTable({"ID", "PID", "UID", "REFS", "SLOTS", "NAME"}, rows,
             {true, true, true, true, true, false});
  return 0;
}

int Hot(svfs::rpc::Stats::Reader stats) {
  std::vector<std::vector<std::string>> rows;
  for (auto s : stats.getHottest()) {
    rows.push_back({fmt::format("{}", s.getSlot()), fmt::format("{}", s.getVersion()),
                    fmt::format("{}", s.getReferences()), DevIno(s.getKey())});
  }
  PrintTable({"SLOT", "VERSION", "REFS", "DEV:INO"}, rows, {true, true, true, false});
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string socket_path = "/run/svfs/versiond.sock";
  uint32_t hot_n = 20;
  uint64_t slot_n = 0;

  CLI::App app{"svfsctl: inspect a running svfs-versiond"};
  app.add_option("--socket", socket_path, "svfs-versiond's socket")->capture_default_str();
  app.require_subcommand(1);
  auto* status = app.add_subcommand("status", "table identity and slot usage");
  auto* clients = app.add_subcommand("clients", "attached daemons and the references they hold");
  auto* hot = app.add_subcommand("hot", "in-use slots with the highest versions");
  hot->add_option("-n", hot_n, "how many")->capture_default_str();
  auto* slot = app.add_subcommand("slot", "the inode behind a slot");
  slot->add_option("N", slot_n, "slot number")->required();
  CLI11_PARSE(app, argc, argv);

  int fd = ConnectOrExit(socket_path);
  try {
    auto io = kj::setupAsyncIo();
    auto stream = io.lowLevelProvider->wrapSocketFd(fd, kj::LowLevelAsyncIoProvider::TAKE_OWNERSHIP |
                                                            kj::LowLevelAsyncIoProvider::ALREADY_CLOEXEC);
    capnp::TwoPartyClient client(*stream);
    auto versiond = client.bootstrap().castAs<svfs::rpc::Versiond>();

    if (slot->parsed()) {
      auto request = versiond.slotRequest();
      request.setSlot(slot_n);
      auto response = request.send().wait(io.waitScope);
      if (!response.getFound()) {
        std::fprintf(stderr, "svfsctl: slot %llu is not in use\n",
                     static_cast<unsigned long long>(slot_n));
        return 1;
      }
      auto info = response.getInfo();
      auto key = info.getKey();
      PrintPairs({
          {"slot", fmt::format("{}", info.getSlot())},
          {"version", fmt::format("{}", info.getVersion())},
          {"references", fmt::format("{}", info.getReferences())},
          {"dev", fmt::format("{:#x} ({})", key.getDev(), DevIno(key))},
          {"ino", fmt::format("{}", key.getIno())},
          {"fsid", fmt::format("{:#x}", key.getFsid())},
          {"handle", key.getHandle().size() == 0
                         ? std::string("none")
                         : fmt::format("type {} bytes {}", key.getHandleType(), Hex(key.getHandle()))},
      });
      return 0;
    }

    auto request = versiond.statsRequest();
    request.setHottest(hot->parsed() ? hot_n : 0);
    auto response = request.send().wait(io.waitScope);
    auto stats = response.getStats();
    if (status->parsed()) return Status(stats);
    if (clients->parsed()) return Clients(stats);
    return Hot(stats);
  } catch (const kj::Exception& e) {
    std::fprintf(stderr, "svfsctl: %s: %s (is the caller allowed by --allow-uid/--allow-gid?)\n",
                 socket_path.c_str(), e.getDescription().cStr());
    return 1;
  }
}
