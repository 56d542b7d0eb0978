#include "versiond/startup.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "protocol/inode_identity.h"

namespace svfs::versiond {
namespace {

std::string Errno(int err) { return std::strerror(err); }

// The packed fsid of a --volume-dir's filesystem: the receiver's half of an inode's identity.
std::expected<uint64_t, std::string> VolumeFsid(const ServerOptions::Volume& volume) {
  if (!ValidVolumeName(volume.name)) {
    return std::unexpected(fmt::format("svfs-versiond: --volume '{}': give a name of 1 to 64 "
                                       "letters, digits, '_' or '-' (with --federation)",
                                       volume.name));
  }
  struct statfs st {};
  if (volume.dir.empty() || ::statfs(volume.dir.c_str(), &st) != 0) {
    return std::unexpected(fmt::format("svfs-versiond: --volume-dir '{}': {}; give the shared "
                                       "directory of --volume {} as mounted on this host",
                                       volume.dir, volume.dir.empty() ? "missing" : Errno(errno),
                                       volume.name));
  }
  return protocol::PackFsid(st.f_fsid);
}

// The whole of `path`, or why not.
std::expected<std::string, std::string> ReadPem(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  if (!in || text.str().empty()) {
    return std::unexpected(fmt::format("svfs-versiond: {}: cannot read it", path));
  }
  return text.str();
}

}  // namespace

std::expected<OpenedTable, std::string> OpenTable(const ServerOptions& options) {
  // The table's group is the socket's: the first --allow-gid (VMMs and non-root svfsd daemons),
  // else versiond's own, as a table it creates would have.
  const gid_t group = options.allow_gids.empty() ? ::getegid() : options.allow_gids.front();
  auto existing = shm::VersionTable::Attach(options.table_name, shm::Access::kReadWrite,
                                            shm::VersionTable::Owner::kMustOwn);
  if (!existing) {
    auto created = shm::VersionTable::Create({.name = options.table_name,
                                              .slot_count = options.capacity,
                                              .mode = options.table_mode,
                                              .group = group});
    if (created) {
      spdlog::info("created version table {} ({} slots, stride {}, {} bytes)", options.table_name,
                   created->slot_count(), created->header().slot_stride, created->mapped_bytes());
      return OpenedTable{std::move(*created)};
    }
    // Attach's error says more when the object exists but is unusable.
    return std::unexpected(fmt::format("svfs-versiond: cannot open version table {}: {}; and "
                                       "cannot create it: {}", options.table_name,
                                       existing.error(), created.error()));
  }
  shm::VersionTable table = std::move(*existing);
  // Only a table that passed every check gets this start's mode and group; a change is said
  // (an operator's chmod of the table is undone by a restart without --table-mode).
  struct stat before {};
  const bool known = ::stat(("/dev/shm/" + options.table_name).c_str(), &before) == 0;
  if (auto set = table.set_access(options.table_mode, group); !set) {
    return std::unexpected("svfs-versiond: taking over " + set.error());
  }
  if (known && ((before.st_mode & 0777) != options.table_mode || before.st_gid != group)) {
    spdlog::warn("version table {}: mode {:04o} group {} set to --table-mode {:04o} group {} "
                 "(the first --allow-gid, or versiond's own)", options.table_name,
                 before.st_mode & 0777, before.st_gid, options.table_mode, group);
  }
  uint64_t generation = table.bump_generation();
  // Whatever happened while no versiond was watching is unknown: every slot may be stale, so
  // every slot moves on once. Versions only grow; guests revalidate each cached entry once.
  auto start = std::chrono::steady_clock::now();
  const uint64_t n = table.slot_count();
  const uint64_t bumped = table.bump_all();
  auto took = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start);
  spdlog::info("took over version table {} (generation {}): bumped all {} slots in {:.1f} ms",
               options.table_name, generation, bumped, took.count());
  if (options.capacity != n) {
    spdlog::info("--capacity {} ignored: the existing table has {} slots (remove /dev/shm/{} "
                 "with no daemon running to resize it)", options.capacity, n, options.table_name);
  }
  return OpenedTable{std::move(table), bumped};
}

std::expected<UniqueFd, std::string> ListenOn(const ServerOptions& options) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (options.socket_path.empty() || options.socket_path.size() >= sizeof(addr.sun_path)) {
    return std::unexpected(fmt::format("svfs-versiond: --socket {}: path empty or longer than {} "
                                       "bytes", options.socket_path, sizeof(addr.sun_path) - 1));
  }
  std::memcpy(addr.sun_path, options.socket_path.data(), options.socket_path.size());
  auto parent = std::filesystem::path(options.socket_path).parent_path();
  if (!parent.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(parent, ec);
    if (ec) {
      return std::unexpected(fmt::format("svfs-versiond: cannot create {}: {}", parent.string(),
                                         ec.message()));
    }
  }
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return std::unexpected("svfs-versiond: socket(AF_UNIX): " + Errno(errno));
  // A socket file that still accepts belongs to a live versiond: do not steal it.
  {
    UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (probe && ::connect(probe.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
      return std::unexpected(fmt::format("svfs-versiond: {} is served by a running versiond; stop "
                                         "it first or pick another --socket", options.socket_path));
    }
  }
  if (::unlink(options.socket_path.c_str()) != 0 && errno != ENOENT) {
    return std::unexpected(fmt::format("svfs-versiond: cannot remove stale socket {}: {}",
                                       options.socket_path, Errno(errno)));
  }
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return std::unexpected(fmt::format("svfs-versiond: bind {}: {}", options.socket_path,
                                       Errno(errno)));
  }
  // Access is checked per connection with SO_PEERCRED; the mode keeps others from even connecting.
  if (::chmod(options.socket_path.c_str(), 0660) != 0) {
    return std::unexpected(fmt::format("svfs-versiond: chmod {}: {}", options.socket_path,
                                       Errno(errno)));
  }
  if (!options.allow_gids.empty() &&
      ::chown(options.socket_path.c_str(), static_cast<uid_t>(-1), options.allow_gids.front()) != 0) {
    return std::unexpected(fmt::format("svfs-versiond: chown {} to group {}: {}",
                                       options.socket_path, options.allow_gids.front(), Errno(errno)));
  }
  if (::listen(fd.get(), 128) != 0) {
    return std::unexpected(fmt::format("svfs-versiond: listen {}: {}", options.socket_path,
                                       Errno(errno)));
  }
  return fd;
}

std::expected<FederationOptions, std::string> FederationOptionsFor(const ServerOptions& options) {
  FederationOptions out{.servers = options.federation_servers,
                        .replicas = options.federation_replicas,
                        .credentials_file = options.federation_creds,
                        .tls_ca_file = options.federation_tls_ca,
                        .tls_cert_file = options.federation_tls_cert,
                        .tls_key_file = options.federation_tls_key};
  for (auto [file, pem] : {std::pair{&out.tls_ca_file, &out.tls_ca_pem},
                           std::pair{&out.tls_cert_file, &out.tls_cert_pem},
                           std::pair{&out.tls_key_file, &out.tls_key_pem}}) {
    if (file->empty()) continue;
    auto text = ReadPem(*file);
    if (!text) return std::unexpected(text.error());
    *pem = std::move(*text);
  }
  for (const ServerOptions::Volume& volume : options.volumes) {
    auto fsid = VolumeFsid(volume);
    if (!fsid) return std::unexpected(fsid.error());
    out.volumes.push_back({.name = volume.name, .fsid = *fsid});
  }
  return out;
}

}  // namespace svfs::versiond
