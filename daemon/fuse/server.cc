#include "daemon/fuse/server.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <optional>
#include <vector>

#include "daemon/fuse/server_call.h"
#include "daemon/fuse/wire_structs.h"
#include "protocol/fuse_opcodes.h"

namespace svfs::fuse {

using protocol::DecodeError;
using protocol::NameRule;

namespace {

// A caller's supplementary groups on the host: forbidden ones are left out (they grant nothing).
std::vector<uint32_t> GroupsToHost(std::span<const uint32_t> groups, const fs::IdMap& gids) {
  std::vector<uint32_t> host;
  for (uint32_t group : groups) {
    if (auto mapped = gids.to_host(group)) host.push_back(*mapped);
  }
  return host;
}

// The groups a transport learns are on the caller's side of the translation, as its gid is.
class TranslatedCallerGroups final : public fs::CallerGroups {
 public:
  TranslatedCallerGroups(const fs::CallerGroups& groups, const fs::IdMap& gids)
      : groups_(groups), gids_(gids) {}
  std::vector<uint32_t> of(uint32_t pid) const override {
    return GroupsToHost(groups_.of(pid), gids_);
  }

 private:
  const fs::CallerGroups& groups_;
  const fs::IdMap& gids_;
};

}  // namespace

Server::Server(fs::FileSystem& filesystem, ServerOptions options)
    : fs_(filesystem), options_(options), interrupts_(options.unmatched_interrupt_lifetime) {}

Server::Clock::time_point Server::handle(std::span<const uint8_t> request,
                                         fs::WriteSource* external_payload, ReplyChannel& channel,
                                         const fs::CallerGroups* caller_groups, DaxWindow* dax,
                                         std::optional<Clock::time_point> started) {
  if (!started) started = Clock::now();
  protocol::RequestReader reader(request);
  auto header = reader.read<fuse_in_header>();
  if (!header) {
    // Without a header there is no unique id to answer; the transport completes the buffer.
    stats_.count_malformed();
    SPDLOG_DEBUG("dropping request of {} bytes: shorter than fuse_in_header", request.size());
    return *started;
  }
  // The caller as the host knows it (--translate-uid/--translate-gid); a forbidden one may do
  // nothing that runs with its credentials.
  const std::optional<uint32_t> uid = options_.ids.uids.to_host(header->uid);
  const std::optional<uint32_t> gid = options_.ids.gids.to_host(header->gid);
  std::optional<TranslatedCallerGroups> translated_groups;
  if (caller_groups != nullptr && !options_.ids.gids.empty()) {
    caller_groups = &translated_groups.emplace(*caller_groups, options_.ids.gids);
  }
  Call call{.header = *header,
            .args = reader,
            .external_payload = external_payload,
            .channel = channel,
            .context = fs::Context{.uid = uid.value_or(header->uid),
                                   .gid = gid.value_or(header->gid),
                                   .pid = header->pid,
                                   .unique = header->unique,
                                   .caller_groups = caller_groups,
                                   .forbidden_caller = !uid || !gid},
            .dax = dax};
  size_t received = request.size() + (external_payload ? external_payload->size() : 0);
  if (header->len != received) {
    malformed(call, DecodeError::kLengthMismatch, EIO);
  } else if (auto bad = take_extensions(call); bad) {
    malformed(call, *bad);
  } else if (!initialized() && header->opcode != FUSE_INIT) {
    reply_error(call, EIO);
  } else {
    // At trace level a line per request, as virtiofsd's debug log has: which node, and (below)
    // which name and which version a reply carried; for following a guest's cache decisions.
    SPDLOG_TRACE("request {} unique {} node {}", protocol::OpcodeName(header->opcode),
                 header->unique, header->nodeid);
    dispatch(call);
  }
  // The request is over: an interrupt kept for its unique can no longer reach it. (An INTERRUPT's
  // own unique names no request.)
  if (header->opcode != FUSE_INTERRUPT) interrupts_.finished(header->unique);
  const Clock::time_point finished = Clock::now();
  stats_.count(header->opcode, call.failed,
               std::chrono::duration_cast<std::chrono::nanoseconds>(finished - *started).count());
  return finished;
}

std::optional<DecodeError> Server::take_extensions(Call& call) {
  if (call.header.total_extlen == 0) return std::nullopt;
  auto area = call.args.take_tail(size_t{call.header.total_extlen} * 8);
  if (!area) return area.error();
  auto groups = protocol::ParseExtensionGroups(*area);
  if (!groups) return groups.error();
  // Only where the kernel sends them: on other requests a group would widen what the caller
  // may do beyond what the kernel vouched for.
  switch (call.header.opcode) {
    case FUSE_CREATE:
    case FUSE_MKNOD:
    case FUSE_MKDIR:
    case FUSE_SYMLINK:
    case FUSE_TMPFILE:
      call.context.request_groups = GroupsToHost(*groups, options_.ids.gids);
      break;
    default:
      break;
  }
  return std::nullopt;
}

void Server::dispatch(Call& call) {
  switch (call.header.opcode) {
    case FUSE_INIT: return do_init(call);
    case FUSE_DESTROY: return do_destroy(call);
    case FUSE_LOOKUP: return do_lookup(call);
    case FUSE_FORGET: return do_forget(call);
    case FUSE_BATCH_FORGET: return do_batch_forget(call);
    case FUSE_GETATTR: return do_getattr(call);
    case FUSE_SETATTR: return do_setattr(call);
    case FUSE_READLINK: return do_readlink(call);
    case FUSE_SYMLINK: return do_symlink(call);
    case FUSE_MKNOD: return do_mknod(call);
    case FUSE_MKDIR: return do_mkdir(call);
    case FUSE_UNLINK: return do_unlink(call);
    case FUSE_RMDIR: return do_rmdir(call);
    case FUSE_RENAME: return do_rename(call, false);
    case FUSE_RENAME2: return do_rename(call, true);
    case FUSE_LINK: return do_link(call);
    case FUSE_OPEN: return do_open(call);
    case FUSE_CREATE: return do_create(call, false);
    case FUSE_TMPFILE: return do_create(call, true);
    case FUSE_READ: return do_read(call);
    case FUSE_WRITE: return do_write(call);
    case FUSE_STATFS: return do_statfs(call);
    case FUSE_RELEASE: return do_release(call, false);
    case FUSE_RELEASEDIR: return do_release(call, true);
    case FUSE_FLUSH: return do_flush(call);
    case FUSE_FSYNC: return do_fsync(call, false);
    case FUSE_FSYNCDIR: return do_fsync(call, true);
    case FUSE_SETXATTR: return do_setxattr(call);
    case FUSE_GETXATTR: return do_getxattr(call);
    case FUSE_LISTXATTR: return do_listxattr(call);
    case FUSE_REMOVEXATTR: return do_removexattr(call);
    case FUSE_OPENDIR: return do_opendir(call);
    case FUSE_READDIR: return do_readdir(call, false);
    case FUSE_READDIRPLUS: return do_readdir(call, true);
    case FUSE_ACCESS: return do_access(call);
    case FUSE_GETLK: return do_getlk(call);
    case FUSE_SETLK: return do_setlk(call, false);
    case FUSE_SETLKW: return do_setlk(call, true);
    case FUSE_INTERRUPT: return do_interrupt(call);
    case FUSE_FALLOCATE: return do_fallocate(call);
    case FUSE_LSEEK: return do_lseek(call);
    case FUSE_COPY_FILE_RANGE: return do_copy_file_range(call);
    case FUSE_SYNCFS: return do_syncfs(call);
    case FUSE_SETUPMAPPING: return do_setupmapping(call);
    case FUSE_REMOVEMAPPING: return do_removemapping(call);
    case FUSE_NOTIFY_REPLY: return;  // svfsd sends no notifications that expect replies
    default:
      // BMAP, IOCTL, POLL and opcodes unknown to us.
      return reply_error(call, ENOSYS);
  }
}

void Server::malformed(Call& call, DecodeError error, int reply_errno) {
  stats_.count_malformed();
  if (malformed_log_.allow()) {
    spdlog::warn("malformed {} request (unique {}, node {}, {} bytes): {}",
                 protocol::OpcodeName(call.header.opcode), call.header.unique, call.header.nodeid,
                 call.header.len, protocol::DecodeErrorName(error));
  }
  reply_error(call, reply_errno);
}

void Server::refuse_name(Call& call, DecodeError error, NameRule rule) {
  // A name that is merely too long is a user's mistake the host answers with its own errno (the
  // kernel passes entry names of up to 1024 bytes through), not a malformed request.
  if (error == DecodeError::kNameTooLong) return reply_error(call, protocol::NameTooLongErrno(rule));
  malformed(call, error);
}

// ---- Reply encoders ----

bool Server::reply_parts(Call& call, std::span<iovec> payload) {
  fuse_out_header out{};
  size_t length = sizeof(out);
  for (const iovec& part : payload) length += part.iov_len;
  out.len = static_cast<uint32_t>(length);
  out.error = 0;
  out.unique = call.header.unique;
  iovec parts[4];
  size_t count = 0;
  parts[count++] = iovec{&out, sizeof(out)};
  for (const iovec& part : payload) {
    if (part.iov_len) parts[count++] = part;
  }
  return call.channel.send(std::span<const iovec>(parts, count));
}

namespace {

// The guest only sees "Too many open files"; the operator learns why once (both virtiofsds log
// EMFILE too), without a line per failing request.
void LogOutOfDescriptorsOnce(int error) {
  static std::atomic<bool> logged{false};
  if (logged.exchange(true, std::memory_order_relaxed)) return;
  rlimit limit{};
  ::getrlimit(RLIMIT_NOFILE, &limit);
  spdlog::warn("out of file descriptors ({}; RLIMIT_NOFILE {}): guest requests fail with \"Too "
               "many open files\"; raise --rlimit-nofile or fs.file-max (logged once)",
               error == EMFILE ? "EMFILE" : "ENFILE", static_cast<unsigned long long>(limit.rlim_cur));
}

}  // namespace

void Server::reply_error(Call& call, int error) {
  // FORGET, BATCH_FORGET, INTERRUPT and NOTIFY_REPLY are never answered, not even when refused
  // (length mismatch, before INIT): the kernel waits for no reply, and virtio-fs queues forgets
  // on the hiprio queue without a device-writable buffer.
  if (call.header.opcode == FUSE_FORGET || call.header.opcode == FUSE_BATCH_FORGET ||
      call.header.opcode == FUSE_INTERRUPT || call.header.opcode == FUSE_NOTIFY_REPLY) {
    call.failed = true;
    return;
  }
  if (error == EMFILE || error == ENFILE) LogOutOfDescriptorsOnce(error);
  fuse_out_header out{};
  out.len = sizeof(out);
  out.error = -(error > 0 ? error : EIO);
  out.unique = call.header.unique;
  iovec part{&out, sizeof(out)};
  call.failed = true;
  call.channel.send(std::span<const iovec>(&part, 1));
}

void Server::reply_empty(Call& call) { reply_parts(call, {}); }

bool Server::reply_bytes(Call& call, const void* data, size_t size) {
  iovec part{const_cast<void*>(data), size};
  return reply_parts(call, std::span<iovec>(&part, 1));
}

void Server::reply_entry(Call& call, const fs::Entry& entry) {
  fuse_entry_out out = EncodeEntry(entry, options_.ids);
  protocol::VersionTrailer trailer = EncodeVersion(entry.attr.version);
  SPDLOG_TRACE("  entry node {} slot {} version {}", entry.node, trailer.version_index,
               trailer.version);
  iovec parts[2] = {{&out, sizeof(out)}, {&trailer, sizeof(trailer)}};
  if (!reply_parts(call, std::span<iovec>(parts, shared_versions() ? 2 : 1))) undo_entry(entry);
}

void Server::undo_entry(const fs::Entry& entry) {
  if (entry.node != 0) fs_.forget(entry.node, 1);
}

void Server::undo_open(Call& call, fs::NodeId node, const fs::Opened& opened) {
  if (call.header.opcode == FUSE_OPENDIR) {
    (void)fs_.releasedir(call.context, node, opened.handle);
  } else {
    (void)fs_.release(call.context, node, opened.handle, 0, 0, 0);
  }
}

void Server::reply_attr(Call& call, const fs::Attr& attr) {
  fuse_attr_out out{};
  out.attr_valid = attr.timeout_ns / kNanosPerSecond;
  out.attr_valid_nsec = attr.timeout_ns % kNanosPerSecond;
  FillAttr(attr, options_.ids, out.attr);
  protocol::VersionTrailer trailer = EncodeVersion(attr.version);
  SPDLOG_TRACE("  attr node {} slot {} version {}", call.header.nodeid, trailer.version_index,
               trailer.version);
  iovec parts[2] = {{&out, sizeof(out)}, {&trailer, sizeof(trailer)}};
  reply_parts(call, std::span<iovec>(parts, shared_versions() ? 2 : 1));
}

void Server::reply_open(Call& call, const fs::Opened& opened) {
  fuse_open_out out = EncodeOpen(opened);
  iovec part{&out, sizeof(out)};
  if (!reply_parts(call, std::span<iovec>(&part, 1))) undo_open(call, call.header.nodeid, opened);
}


// ---- The session's opcodes (the others: server_opcodes.cc) ----

void Server::do_init(Call& call) {
  // fuse_init_in grew over time: 16 bytes before 7.36, 64 with FUSE_INIT_EXT.
  constexpr size_t kInitInCompatSize = offsetof(fuse_init_in, flags2);
  size_t size = std::min(call.args.remaining(), sizeof(fuse_init_in));
  if (size < kInitInCompatSize) return malformed(call, DecodeError::kTruncated);
  auto in = call.args.read_prefix<fuse_init_in>(size);
  if (!in) return malformed(call, in.error());
  if (initialized()) {
    spdlog::warn("INIT received on an initialized session; refusing");
    return reply_error(call, EIO);
  }
  if (in->major != protocol::kFuseMajor || in->minor < protocol::kFuseMinMinor) {
    spdlog::error("guest speaks FUSE {}.{}; svfsd needs {}.{} or newer", in->major, in->minor,
                  protocol::kFuseMajor, protocol::kFuseMinMinor);
    return reply_error(call, EPROTO);
  }
  uint64_t offered = in->flags;
  if ((in->flags & FUSE_INIT_EXT) && size >= sizeof(fuse_init_in)) {
    offered |= static_cast<uint64_t>(in->flags2) << 32;
  }
  // Flags the server layer itself implements; the filesystem adds what it implements.
  uint64_t wanted = FUSE_MAX_PAGES | FUSE_INIT_EXT | fs_.init(offered);
  if (call.dax != nullptr) wanted |= FUSE_MAP_ALIGNMENT;
  uint64_t agreed = wanted & offered;
  std::optional<fs::VersionTableId> table;
  if (agreed & protocol::kInitSharedVersions) {
    table = fs_.version_table();
    if (!table) agreed &= ~protocol::kInitSharedVersions;
  }

  fuse_init_out out{};
  out.major = protocol::kFuseMajor;
  out.minor = std::min(in->minor, protocol::kFuseMinor);
  out.max_readahead = in->max_readahead;
  out.flags = static_cast<uint32_t>(agreed);
  out.flags2 = static_cast<uint32_t>(agreed >> 32);
  out.max_background = 64;
  out.congestion_threshold = 48;
  out.max_write = options_.max_write;
  out.time_gran = options_.time_gran;
  out.max_pages = (agreed & FUSE_MAX_PAGES) ? protocol::kMaxPages : 0;
  if (agreed & FUSE_MAP_ALIGNMENT) out.map_alignment = DaxWindow::kAlignmentLog2;
  if (table) {
    auto* raw = reinterpret_cast<uint8_t*>(&out);
    std::memcpy(raw + protocol::kInitOutUuidOffset, table->uuid.data(), table->uuid.size());
    std::memcpy(raw + protocol::kInitOutGenerationOffset, &table->generation,
                sizeof(table->generation));
  }

  interrupts_.forget_kept();
  negotiated_ = fs::Negotiated{.minor = out.minor, .flags = agreed, .max_write = out.max_write};
  fs_.initialized(negotiated_);
  initialized_.store(true, std::memory_order_release);
  spdlog::info("FUSE session initialized: protocol {}.{}, flags {:#x}, max_write {}", out.major,
               out.minor, agreed, out.max_write);
  reply_struct(call, out);
}

void Server::do_destroy(Call& call) {
  fs_.destroy();
  initialized_.store(false, std::memory_order_release);
  reply_empty(call);
}

void Server::do_interrupt(Call& call) {
  // INTERRUPT itself gets no reply (InterruptRegistry says why); the interrupted request answers
  // EINTR.
  auto in = call.args.read<fuse_interrupt_in>();
  if (!in) {
    stats_.count_malformed();
    return;
  }
  interrupts_.interrupt(in->unique);
}

void Server::interrupt_blocked_requests() { interrupts_.interrupt_all(); }

}  // namespace svfs::fuse
