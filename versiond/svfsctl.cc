// svfsctl: looks into a running svfs-versiond (status, clients, hottest slots) over its RPC
// socket, and tells which slot a host file has (computed as svfsd and versiond compute it).
#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <unordered_map>
#include <vector>

#include <CLI/CLI.hpp>
#include <capnp/message.h>
#include <capnp/rpc-twoparty.h>
#include <fmt/format.h>
#include <kj/async-io.h>
#include <nlohmann/json.hpp>

#include "protocol/inode_identity.h"
#include "protocol/versiond.capnp.h"

namespace {

using Json = nlohmann::ordered_json;

// --json: each subcommand prints one JSON object (numbers as numbers, no units) instead of its
// table. Names and paths that are not valid UTF-8 get U+FFFD for the bad bytes.
bool g_json = false;

void PrintJson(const Json& value) {
  std::puts(value.dump(2, ' ', false, Json::error_handler_t::replace).c_str());
}

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
  const uint64_t uptime = now_ns > started ? (now_ns - started) / 1'000'000'000ULL : 0;
  if (g_json) {
    PrintJson({{"table", table.getName().cStr()},
               {"uuid", Uuid(table.getUuid())},
               {"generation", table.getGeneration()},
               {"slot_count", table.getSlotCount()},
               {"slot_stride", table.getSlotStride()},
               {"mapped_bytes", table.getMappedBytes()},
               {"clients", stats.getClients().size()},
               {"watched_filesystems", stats.getWatchedFilesystems()},
               {"host_bumps", stats.getHostBumps()},
               {"uptime_seconds", uptime}});
    return 0;
  }
  PrintPairs({
      {"table", std::string(table.getName().cStr())},
      {"uuid", Uuid(table.getUuid())},
      {"generation", fmt::format("{}", table.getGeneration())},
      {"slot count", fmt::format("{}", table.getSlotCount())},
      {"slot stride", fmt::format("{} bytes", table.getSlotStride())},
      {"mapped", fmt::format("{} bytes", table.getMappedBytes())},
      {"clients", fmt::format("{}", stats.getClients().size())},
      {"watched filesystems", fmt::format("{}", stats.getWatchedFilesystems())},
      {"host bumps", fmt::format("{}", stats.getHostBumps())},
      {"uptime", Duration(uptime)},
  });
  return 0;
}

int Clients(svfs::rpc::Stats::Reader stats) {
  if (g_json) {
    Json list = Json::array();
    for (auto c : stats.getClients()) {
      Json dirs = Json::array();
      for (auto dir : c.getSharedDirs()) dirs.push_back(dir.cStr());
      list.push_back({{"id", c.getId()}, {"pid", c.getPid()}, {"uid", c.getUid()},
                      {"name", c.getName().cStr()}, {"shared_dirs", std::move(dirs)}});
    }
    PrintJson({{"clients", std::move(list)}});
    return 0;
  }
  std::vector<std::vector<std::string>> rows;
  for (auto c : stats.getClients()) {
    std::string dirs;
    for (auto dir : c.getSharedDirs()) dirs += (dirs.empty() ? "" : ",") + std::string(dir.cStr());
    rows.push_back({fmt::format("{}", c.getId()), fmt::format("{}", c.getPid()),
                    fmt::format("{}", c.getUid()), c.getName().cStr(), dirs});
  }
  PrintTable({"ID", "PID", "UID", "NAME", "SHARED DIRS"}, rows, {true, true, true, false, false});
  return 0;
}

int Hot(svfs::rpc::Stats::Reader stats) {
  if (g_json) {
    Json list = Json::array();
    for (auto s : stats.getHottest()) list.push_back({{"slot", s.getSlot()}, {"version", s.getVersion()}});
    PrintJson({{"slots", std::move(list)}});
    return 0;
  }
  std::vector<std::vector<std::string>> rows;
  for (auto s : stats.getHottest()) {
    rows.push_back({fmt::format("{}", s.getSlot()), fmt::format("{}", s.getVersion())});
  }
  PrintTable({"SLOT", "VERSION"}, rows, {true, true});
  return 0;
}

int Federation(svfs::rpc::Stats::Reader stats) {
  auto volumes = stats.getFederation();
  if (g_json) {
    Json list = Json::array();
    for (auto v : volumes) {
      list.push_back({{"volume", v.getName().cStr()}, {"fsid", v.getFsid()},
                      {"connected", v.getConnected()}, {"remote_bumps", v.getRemoteBumps()},
                      {"resyncs", v.getResyncs()}, {"published_handles", v.getPublishedHandles()},
                      {"published_messages", v.getPublishedMessages()},
                      {"published_bytes", v.getPublishedBytes()}});
    }
    PrintJson({{"volumes", std::move(list)}});
    return 0;
  }
  if (volumes.size() == 0) {
    std::printf("not federated (svfs-versiond runs without --federation)\n");
    return 0;
  }
  std::vector<std::vector<std::string>> rows;
  for (auto v : volumes) {
    rows.push_back({v.getName().cStr(), v.getConnected() ? "yes" : "no",
                    fmt::format("{}", v.getRemoteBumps()), fmt::format("{}", v.getResyncs()),
                    fmt::format("{}", v.getPublishedHandles()),
                    fmt::format("{}", v.getPublishedMessages()),
                    fmt::format("{}", v.getPublishedBytes())});
  }
  PrintTable({"VOLUME", "CONNECTED", "REMOTE BUMPS", "RESYNCS", "SENT INODES", "MESSAGES", "BYTES"},
             rows, {false, false, true, true, true, true, true});
  return 0;
}

// The slot of the host file `path` in a table of `slot_count` slots, from its identity as
// svfsd computes it (a handle where the filesystem has them).
int Slot(const std::string& path, uint64_t slot_count) {
  int fd = ::open(path.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
  struct stat st {};
  struct statfs sfs {};
  if (fd < 0 || ::fstat(fd, &st) != 0 || ::fstatfs(fd, &sfs) != 0) {
    std::fprintf(stderr, "svfsctl: slot %s: %s\n", path.c_str(), std::strerror(errno));
    return 1;
  }
  const uint64_t fsid = svfs::protocol::PackFsid(sfs.f_fsid);
  const uint64_t identity = svfs::protocol::IdentityOfFd(fd, fsid, st.st_dev, st.st_ino);
  const bool by_handle = identity != svfs::protocol::InodeNumberIdentity(st.st_dev, st.st_ino);
  ::close(fd);
  const uint64_t slot = svfs::protocol::SlotOf(identity, slot_count);
  if (g_json) {
    Json out = {{"path", path}, {"slot", slot}, {"slot_count", slot_count},
                {"identity", identity}, {"by_file_handle", by_handle}};
    if (by_handle) {
      out["fsid"] = fsid;
    } else {
      out["dev"] = static_cast<uint64_t>(st.st_dev);
      out["ino"] = static_cast<uint64_t>(st.st_ino);
    }
    PrintJson(out);
    return 0;
  }
  PrintPairs({
      {"path", path},
      {"slot", fmt::format("{}", slot)},
      {"identity", by_handle ? fmt::format("{:#018x} (file handle on fsid {:#x})", identity, fsid)
                             : fmt::format("{:#018x} (dev {:#x} ino {}: no file handles, host edits "
                                           "are not tracked here)", identity,
                                           static_cast<uint64_t>(st.st_dev),
                                           static_cast<uint64_t>(st.st_ino))},
  });
  return 0;
}

// How the inodes under `root` (one filesystem) share slots in tables of several sizes: what
// sizing --capacity needs (a shared slot costs a revalidation when either inode changes).
int Collisions(const std::string& root, const std::vector<uint64_t>& sizes) {
  std::vector<uint64_t> identities;
  std::error_code error;
  auto add = [&](const std::filesystem::path& path) {
    int fd = ::open(path.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
    struct stat st {};
    struct statfs sfs {};
    if (fd >= 0 && ::fstat(fd, &st) == 0 && ::fstatfs(fd, &sfs) == 0) {
      identities.push_back(svfs::protocol::IdentityOfFd(fd, svfs::protocol::PackFsid(sfs.f_fsid),
                                                        st.st_dev, st.st_ino));
    }
    if (fd >= 0) ::close(fd);
  };
  add(root);
  for (auto it = std::filesystem::recursive_directory_iterator(
           root, std::filesystem::directory_options::skip_permission_denied, error);
       !error && it != std::filesystem::recursive_directory_iterator(); it.increment(error)) {
    add(it->path());
  }
  if (error) {
    std::fprintf(stderr, "svfsctl: collisions %s: %s\n", root.c_str(), error.message().c_str());
    return 1;
  }
  std::sort(identities.begin(), identities.end());
  identities.erase(std::unique(identities.begin(), identities.end()), identities.end());
  std::vector<std::vector<std::string>> rows;
  Json json_sizes = Json::array();
  for (uint64_t slots : sizes) {
    std::unordered_map<uint64_t, unsigned> per_slot;
    for (uint64_t id : identities) ++per_slot[svfs::protocol::SlotOf(id, slots)];
    size_t sharing = 0;
    for (const auto& [slot, n] : per_slot) sharing += n > 1 ? n : 0;
    const double share = identities.empty() ? 0.0 : 100.0 * sharing / identities.size();
    rows.push_back({fmt::format("{}", slots), fmt::format("{}", identities.size()),
                    fmt::format("{}", sharing), fmt::format("{:.2f} %", share)});
    json_sizes.push_back({{"slots", slots}, {"inodes", identities.size()},
                          {"sharing_a_slot", sharing}, {"share_percent", share}});
  }
  if (g_json) {
    PrintJson({{"dir", root}, {"inodes", identities.size()}, {"sizes", std::move(json_sizes)}});
    return 0;
  }
  PrintTable({"SLOTS", "INODES", "SHARING A SLOT", "SHARE"}, rows, {true, true, true, true});
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string socket_path = "/run/svfs/versiond.sock";
  uint32_t hot_n = 20;
  std::string slot_path;

  CLI::App app{"svfsctl: inspect a running svfs-versiond", "svfsctl"};
  app.add_option("--socket", socket_path, "svfs-versiond's socket")->capture_default_str();
  app.require_subcommand(1);
  app.set_version_flag("--version", "svfsctl " SVFS_VERSION);
  app.add_flag("--json", g_json, "print one JSON object instead of the table (any subcommand)");
  app.fallthrough();  // --json and --socket also after the subcommand
  auto* status = app.add_subcommand("status", "table identity, clients, host-side bumps");
  auto* clients = app.add_subcommand("clients", "attached daemons and what they share");
  auto* federation = app.add_subcommand("federation", "per federated volume: NATS connection, "
                                                     "bumps from other hosts, what was sent");
  auto* hot = app.add_subcommand("hot", "the slots with the highest versions");
  hot->add_option("-n", hot_n, "how many")->capture_default_str();
  auto* slot = app.add_subcommand("slot", "the slot of a host file (as svfsd computes it)");
  slot->add_option("PATH", slot_path, "a file or directory on the host")->required();
  std::string tree;
  std::vector<uint64_t> sizes = {65536, 1048575, 16777215};
  auto* collisions = app.add_subcommand("collisions", "how the inodes of a tree would share slots "
                                                      "(no versiond needed)");
  collisions->add_option("DIR", tree, "a directory tree on the host")->required();
  collisions->add_option("--slots", sizes, "table sizes to try")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  if (collisions->parsed()) return Collisions(tree, sizes);
  int fd = ConnectOrExit(socket_path);
  try {
    auto io = kj::setupAsyncIo();
    auto stream = io.lowLevelProvider->wrapSocketFd(fd, kj::LowLevelAsyncIoProvider::TAKE_OWNERSHIP |
                                                            kj::LowLevelAsyncIoProvider::ALREADY_CLOEXEC);
    capnp::TwoPartyClient client(*stream);
    auto versiond = client.bootstrap().castAs<svfs::rpc::Versiond>();

    auto request = versiond.statsRequest();
    request.setHottest(hot->parsed() ? hot_n : 0);
    auto response = request.send().wait(io.waitScope);
    auto stats = response.getStats();
    if (slot->parsed()) return Slot(slot_path, stats.getTable().getSlotCount());
    if (status->parsed()) return Status(stats);
    if (clients->parsed()) return Clients(stats);
    if (federation->parsed()) return Federation(stats);
    return Hot(stats);
  } catch (const kj::Exception& e) {
    std::fprintf(stderr, "svfsctl: %s: %s (is the caller allowed by --allow-uid/--allow-gid?)\n",
                 socket_path.c_str(), e.getDescription().cStr());
    return 1;
  }
}
