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

#include "protocol/fuse_opcodes.h"

namespace svfs::fuse {

using protocol::DecodeError;
using protocol::NameRule;

struct Server::Call {
  fuse_in_header header;
  protocol::RequestReader args;
  fs::WriteSource* external_payload;
  ReplyChannel& channel;
  fs::Context context;
  DaxWindow* dax;
  bool failed = false;
};

namespace {

constexpr uint64_t kNanosPerSecond = 1'000'000'000ULL;

// Owners go to the guest translated (--translate-uid/--translate-gid).
void FillAttr(const fs::Attr& in, const fs::IdTranslation& ids, fuse_attr& out) {
  const struct stat& st = in.st;
  out.ino = st.st_ino;
  out.size = st.st_size;
  out.blocks = st.st_blocks;
  out.atime = st.st_atim.tv_sec;
  out.mtime = st.st_mtim.tv_sec;
  out.ctime = st.st_ctim.tv_sec;
  out.atimensec = st.st_atim.tv_nsec;
  out.mtimensec = st.st_mtim.tv_nsec;
  out.ctimensec = st.st_ctim.tv_nsec;
  out.mode = st.st_mode;
  out.nlink = st.st_nlink;
  out.uid = ids.uids.to_guest(st.st_uid);
  out.gid = ids.gids.to_guest(st.st_gid);
  out.rdev = st.st_rdev;
  out.blksize = st.st_blksize;
  out.flags = in.flags;
}

fuse_entry_out EncodeEntry(const fs::Entry& entry, const fs::IdTranslation& ids) {
  fuse_entry_out out{};
  out.nodeid = entry.node;
  out.generation = entry.generation;
  out.entry_valid = entry.entry_timeout_ns / kNanosPerSecond;
  out.entry_valid_nsec = entry.entry_timeout_ns % kNanosPerSecond;
  out.attr_valid = entry.attr.timeout_ns / kNanosPerSecond;
  out.attr_valid_nsec = entry.attr.timeout_ns % kNanosPerSecond;
  FillAttr(entry.attr, ids, out.attr);
  return out;
}

protocol::VersionTrailer EncodeVersion(const fs::Version& version) {
  return protocol::VersionTrailer{.version_index = version.index,
                                  .version = static_cast<int64_t>(version.value)};
}

fuse_open_out EncodeOpen(const fs::Opened& opened) {
  fuse_open_out out{};
  out.fh = opened.handle;
  out.open_flags = opened.open_flags;
  return out;
}

fs::FileLock DecodeLock(const fuse_file_lock& lk) {
  return fs::FileLock{.start = lk.start, .end = lk.end, .type = lk.type, .pid = lk.pid};
}

// Packs READDIR / READDIRPLUS entries into a reply buffer of the size the kernel asked for. With
// shared versions each READDIRPLUS record is followed by its VersionTrailer.
class BufferDirSink final : public fs::DirSink {
 public:
  BufferDirSink(size_t capacity, bool plus, bool versioned, const fs::IdTranslation& ids)
      : plus_(plus), versioned_(plus && versioned), capacity_(capacity), ids_(ids) {
    buffer_.reserve(capacity);
  }

  bool has_room(size_t name_length) const override {
    return buffer_.size() + record_size(name_length) <= capacity_;
  }

  bool add(const fs::DirEntry& dirent, const fs::Entry* entry) override {
    size_t record = record_size(dirent.name.size());
    if (buffer_.size() + record > capacity_) return false;
    size_t at = buffer_.size();
    buffer_.resize(at + record, 0);  // zero padding between records
    uint8_t* out = buffer_.data() + at;
    if (plus_) {
      fuse_entry_out encoded = entry ? EncodeEntry(*entry, ids_) : fuse_entry_out{};
      std::memcpy(out, &encoded, sizeof(encoded));
      out += sizeof(encoded);
    }
    fuse_dirent header{};
    header.ino = dirent.ino;
    header.off = dirent.offset;
    header.namelen = static_cast<uint32_t>(dirent.name.size());
    header.type = dirent.type;
    std::memcpy(out, &header, FUSE_NAME_OFFSET);
    std::memcpy(out + FUSE_NAME_OFFSET, dirent.name.data(), dirent.name.size());
    if (versioned_) {
      auto trailer = EncodeVersion(entry ? entry->attr.version : fs::Version{});
      std::memcpy(buffer_.data() + at + record - sizeof(trailer), &trailer, sizeof(trailer));
    }
    if (entry && entry->node != 0) nodes_.push_back(entry->node);
    return true;
  }

  std::span<const uint8_t> bytes() const { return buffer_; }
  // The lookup references the READDIRPLUS entries carry, one per node listed.
  std::span<const fs::NodeId> nodes() const { return nodes_; }

 private:
  size_t record_size(size_t name_length) const {
    size_t dirent = FUSE_DIRENT_ALIGN(FUSE_NAME_OFFSET + name_length);
    if (!plus_) return dirent;
    return sizeof(fuse_entry_out) + dirent + (versioned_ ? sizeof(protocol::VersionTrailer) : 0);
  }

  bool plus_;
  bool versioned_;
  size_t capacity_;
  const fs::IdTranslation& ids_;
  std::vector<uint8_t> buffer_;
  std::vector<fs::NodeId> nodes_;
};

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

void Server::handle(std::span<const uint8_t> request, fs::WriteSource* external_payload,
                    ReplyChannel& channel, const fs::CallerGroups* caller_groups,
                    DaxWindow* dax) {
  const auto started = std::chrono::steady_clock::now();
  protocol::RequestReader reader(request);
  auto header = reader.read<fuse_in_header>();
  if (!header) {
    // Without a header there is no unique id to answer; the transport completes the buffer.
    stats_.count_malformed();
    SPDLOG_DEBUG("dropping request of {} bytes: shorter than fuse_in_header", request.size());
    return;
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
  const auto took = std::chrono::steady_clock::now() - started;
  stats_.count(header->opcode, call.failed,
               std::chrono::duration_cast<std::chrono::nanoseconds>(took).count());
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

template <typename T>
void Server::reply_result(Call& call, const Result<T>& result) {
  if (!result) return reply_error(call, result.error());
  if constexpr (std::is_same_v<T, fs::Entry>) {
    reply_entry(call, *result);
  } else if constexpr (std::is_same_v<T, fs::Attr>) {
    reply_attr(call, *result);
  } else if constexpr (std::is_same_v<T, fs::Opened>) {
    reply_open(call, *result);
  } else if constexpr (std::is_void_v<T>) {
    reply_empty(call);
  } else {
    static_assert(sizeof(T) == 0, "no encoder for this result type");
  }
}

// ---- Opcodes ----

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

void Server::do_lookup(Call& call) {
  auto name = call.args.read_name(NameRule::kEntry);
  if (!name) return refuse_name(call, name.error(), NameRule::kEntry);
  SPDLOG_TRACE("  lookup '{}' in node {}", *name, call.header.nodeid);
  reply_result(call, fs_.lookup(call.context, call.header.nodeid, *name));
}

void Server::do_forget(Call& call) {
  // No reply, not even when malformed: the kernel waits for none.
  auto in = call.args.read<fuse_forget_in>();
  if (!in) {
    stats_.count_malformed();
    return;
  }
  fs_.forget(call.header.nodeid, in->nlookup);
}

void Server::do_batch_forget(Call& call) {
  // No reply, not even when malformed.
  auto in = call.args.read<fuse_batch_forget_in>();
  if (!in || call.args.remaining() / sizeof(fuse_forget_one) < in->count) {
    stats_.count_malformed();
    return;
  }
  for (uint32_t i = 0; i < in->count; ++i) {
    auto one = call.args.read<fuse_forget_one>();
    fs_.forget(one->nodeid, one->nlookup);
  }
}

void Server::do_getattr(Call& call) {
  auto in = call.args.read<fuse_getattr_in>();
  if (!in) return malformed(call, in.error());
  std::optional<fs::HandleId> handle;
  if (in->getattr_flags & FUSE_GETATTR_FH) handle = in->fh;
  reply_result(call, fs_.getattr(call.context, call.header.nodeid, handle));
}

void Server::do_setattr(Call& call) {
  auto in = call.args.read<fuse_setattr_in>();
  if (!in) return malformed(call, in.error());
  fs::SetattrArgs args;
  args.valid = in->valid;
  if (in->valid & FATTR_FH) args.handle = in->fh;
  args.mode = in->mode;
  // A chown's target as the host knows it; one the translation forbids is refused.
  if (in->valid & FATTR_UID) {
    auto uid = options_.ids.uids.to_host(in->uid);
    if (!uid) return reply_error(call, EPERM);
    args.uid = *uid;
  }
  if (in->valid & FATTR_GID) {
    auto gid = options_.ids.gids.to_host(in->gid);
    if (!gid) return reply_error(call, EPERM);
    args.gid = *gid;
  }
  args.size = in->size;
  // The nanosecond fields come from the guest: keep them in range for utimensat.
  if ((in->valid & FATTR_ATIME) && in->atimensec >= kNanosPerSecond) {
    return malformed(call, DecodeError::kTooLarge);
  }
  if ((in->valid & FATTR_MTIME) && in->mtimensec >= kNanosPerSecond) {
    return malformed(call, DecodeError::kTooLarge);
  }
  args.atime = {static_cast<time_t>(in->atime), static_cast<long>(in->atimensec)};
  args.mtime = {static_cast<time_t>(in->mtime), static_cast<long>(in->mtimensec)};
  if (in->valid & FATTR_ATIME_NOW) args.atime.tv_nsec = UTIME_NOW;
  if (in->valid & FATTR_MTIME_NOW) args.mtime.tv_nsec = UTIME_NOW;
  reply_result(call, fs_.setattr(call.context, call.header.nodeid, args));
}

void Server::do_readlink(Call& call) {
  auto target = fs_.readlink(call.context, call.header.nodeid);
  if (!target) return reply_error(call, target.error());
  reply_bytes(call, target->data(), target->size());
}

void Server::do_symlink(Call& call) {
  auto name = call.args.read_name(NameRule::kEntry);
  if (!name) return refuse_name(call, name.error(), NameRule::kEntry);
  auto target = call.args.read_name(NameRule::kSymlink);
  if (!target) return refuse_name(call, target.error(), NameRule::kSymlink);
  reply_result(call, fs_.symlink(call.context, *target, call.header.nodeid, *name));
}

void Server::do_mknod(Call& call) {
  auto in = call.args.read<fuse_mknod_in>();
  if (!in) return malformed(call, in.error());
  auto name = call.args.read_name(NameRule::kEntry);
  if (!name) return refuse_name(call, name.error(), NameRule::kEntry);
  reply_result(call, fs_.mknod(call.context, call.header.nodeid, *name, in->mode, in->rdev,
                               in->umask));
}

void Server::do_mkdir(Call& call) {
  auto in = call.args.read<fuse_mkdir_in>();
  if (!in) return malformed(call, in.error());
  auto name = call.args.read_name(NameRule::kEntry);
  if (!name) return refuse_name(call, name.error(), NameRule::kEntry);
  reply_result(call, fs_.mkdir(call.context, call.header.nodeid, *name, in->mode, in->umask));
}

void Server::do_unlink(Call& call) {
  auto name = call.args.read_name(NameRule::kEntry);
  if (!name) return refuse_name(call, name.error(), NameRule::kEntry);
  reply_result(call, fs_.unlink(call.context, call.header.nodeid, *name));
}

void Server::do_rmdir(Call& call) {
  auto name = call.args.read_name(NameRule::kEntry);
  if (!name) return refuse_name(call, name.error(), NameRule::kEntry);
  reply_result(call, fs_.rmdir(call.context, call.header.nodeid, *name));
}

void Server::do_rename(Call& call, bool with_flags) {
  uint64_t new_parent = 0;
  uint32_t flags = 0;
  if (with_flags) {
    auto in = call.args.read<fuse_rename2_in>();
    if (!in) return malformed(call, in.error());
    new_parent = in->newdir;
    flags = in->flags;
  } else {
    auto in = call.args.read<fuse_rename_in>();
    if (!in) return malformed(call, in.error());
    new_parent = in->newdir;
  }
  auto old_name = call.args.read_name(NameRule::kEntry);
  if (!old_name) return refuse_name(call, old_name.error(), NameRule::kEntry);
  auto new_name = call.args.read_name(NameRule::kEntry);
  if (!new_name) return refuse_name(call, new_name.error(), NameRule::kEntry);
  reply_result(call, fs_.rename(call.context, call.header.nodeid, *old_name, new_parent, *new_name,
                                flags));
}

void Server::do_link(Call& call) {
  auto in = call.args.read<fuse_link_in>();
  if (!in) return malformed(call, in.error());
  auto name = call.args.read_name(NameRule::kEntry);
  if (!name) return refuse_name(call, name.error(), NameRule::kEntry);
  reply_result(call, fs_.link(call.context, in->oldnodeid, call.header.nodeid, *name));
}

void Server::do_open(Call& call) {
  auto in = call.args.read<fuse_open_in>();
  if (!in) return malformed(call, in.error());
  call.context.kill_suidgid = (in->open_flags & FUSE_OPEN_KILL_SUIDGID) != 0;
  reply_result(call, fs_.open(call.context, call.header.nodeid, in->flags));
}

void Server::do_create(Call& call, bool tmpfile) {
  auto in = call.args.read<fuse_create_in>();
  if (!in) return malformed(call, in.error());
  // The kernel names a TMPFILE "/": present on the wire, meaningless to us.
  const NameRule name_rule = tmpfile ? NameRule::kIgnored : NameRule::kEntry;
  auto name = call.args.read_name(name_rule);
  if (!name) return refuse_name(call, name.error(), name_rule);
  call.context.kill_suidgid = (in->open_flags & FUSE_OPEN_KILL_SUIDGID) != 0;
  auto result = tmpfile ? fs_.tmpfile(call.context, call.header.nodeid, in->mode, in->flags,
                                      in->umask)
                        : fs_.create(call.context, call.header.nodeid, *name, in->mode,
                                     in->flags, in->umask);
  if (!result) return reply_error(call, result.error());
  fuse_entry_out entry = EncodeEntry(result->entry, options_.ids);
  fuse_open_out open = EncodeOpen(result->opened);
  protocol::VersionTrailer trailer = EncodeVersion(result->entry.attr.version);
  iovec parts[3] = {{&entry, sizeof(entry)}, {&open, sizeof(open)}, {&trailer, sizeof(trailer)}};
  if (!reply_parts(call, std::span<iovec>(parts, shared_versions() ? 3 : 2))) {
    undo_open(call, result->entry.node, result->opened);
    undo_entry(result->entry);
  }
}

void Server::do_read(Call& call) {
  auto in = call.args.read<fuse_read_in>();
  if (!in) return malformed(call, in.error());
  if (in->size > options_.max_read) return malformed(call, DecodeError::kTooLarge);
  fs::ReadSink& sink = call.channel.data_sink(in->size);
  auto n = fs_.read(call.context, call.header.nodeid, in->fh, in->offset, in->size, sink);
  if (!n) return reply_error(call, n.error());
  fuse_out_header out{};
  out.len = static_cast<uint32_t>(sizeof(out) + std::min<size_t>(*n, in->size));
  out.unique = call.header.unique;
  call.channel.send_data(out);
}

void Server::do_write(Call& call) {
  auto in = call.args.read<fuse_write_in>();
  if (!in) return malformed(call, in.error());
  if (in->size > options_.max_write) return malformed(call, DecodeError::kTooLarge);
  std::optional<fs::SpanWriteSource> inline_payload;  // the /dev/fuse transport
  fs::WriteSource* payload = call.external_payload;
  if (payload == nullptr) {
    auto bytes = call.args.read_bytes(in->size);
    if (!bytes) return malformed(call, bytes.error());
    inline_payload.emplace(*bytes);
    payload = &*inline_payload;
  }
  if (payload->size() != in->size || call.args.remaining() != 0) {
    return malformed(call, DecodeError::kLengthMismatch);
  }
  auto n = fs_.write(call.context, call.header.nodeid, in->fh, in->offset, *payload,
                     in->write_flags);
  if (!n) return reply_error(call, n.error());
  fuse_write_out out{};
  out.size = static_cast<uint32_t>(*n);
  reply_struct(call, out);
}

void Server::do_statfs(Call& call) {
  auto st = fs_.statfs(call.context, call.header.nodeid);
  if (!st) return reply_error(call, st.error());
  fuse_statfs_out out{};
  out.st.blocks = st->f_blocks;
  out.st.bfree = st->f_bfree;
  out.st.bavail = st->f_bavail;
  out.st.files = st->f_files;
  out.st.ffree = st->f_ffree;
  out.st.bsize = static_cast<uint32_t>(st->f_bsize);
  out.st.namelen = static_cast<uint32_t>(st->f_namemax);
  out.st.frsize = static_cast<uint32_t>(st->f_frsize);
  reply_struct(call, out);
}

void Server::do_release(Call& call, bool directory) {
  auto in = call.args.read<fuse_release_in>();
  if (!in) return malformed(call, in.error());
  if (directory) {
    return reply_result(call, fs_.releasedir(call.context, call.header.nodeid, in->fh));
  }
  reply_result(call, fs_.release(call.context, call.header.nodeid, in->fh, in->flags,
                                 in->release_flags, in->lock_owner));
}

void Server::do_flush(Call& call) {
  auto in = call.args.read<fuse_flush_in>();
  if (!in) return malformed(call, in.error());
  reply_result(call, fs_.flush(call.context, call.header.nodeid, in->fh, in->lock_owner));
}

void Server::do_fsync(Call& call, bool directory) {
  auto in = call.args.read<fuse_fsync_in>();
  if (!in) return malformed(call, in.error());
  bool datasync = in->fsync_flags & FUSE_FSYNC_FDATASYNC;
  if (directory) {
    return reply_result(call, fs_.fsyncdir(call.context, call.header.nodeid, in->fh, datasync));
  }
  reply_result(call, fs_.fsync(call.context, call.header.nodeid, in->fh, datasync));
}

void Server::do_setxattr(Call& call) {
  // Without FUSE_SETXATTR_EXT (not negotiated) the argument is the 8-byte compat struct.
  auto in = call.args.read_prefix<fuse_setxattr_in>(FUSE_COMPAT_SETXATTR_IN_SIZE);
  if (!in) return malformed(call, in.error());
  auto name = call.args.read_name(NameRule::kXattr);
  if (!name) return refuse_name(call, name.error(), NameRule::kXattr);
  if (in->size > protocol::kMaxXattrValueSize) return malformed(call, DecodeError::kTooLarge);
  auto value = call.args.read_bytes(in->size);
  if (!value) return malformed(call, value.error());
  std::span<const char> chars(reinterpret_cast<const char*>(value->data()), value->size());
  reply_result(call, fs_.setxattr(call.context, call.header.nodeid, *name, chars, in->flags));
}

void Server::do_getxattr(Call& call) {
  auto in = call.args.read<fuse_getxattr_in>();
  if (!in) return malformed(call, in.error());
  auto name = call.args.read_name(NameRule::kXattr);
  if (!name) return refuse_name(call, name.error(), NameRule::kXattr);
  if (in->size > protocol::kMaxXattrValueSize) return malformed(call, DecodeError::kTooLarge);
  auto value = fs_.getxattr(call.context, call.header.nodeid, *name, in->size);
  if (!value) return reply_error(call, value.error());
  if (in->size == 0) {
    fuse_getxattr_out out{};
    out.size = static_cast<uint32_t>(value->size());
    return reply_struct(call, out);
  }
  if (value->size() > in->size) return reply_error(call, ERANGE);
  reply_bytes(call, value->data(), value->size());
}

void Server::do_listxattr(Call& call) {
  auto in = call.args.read<fuse_getxattr_in>();
  if (!in) return malformed(call, in.error());
  if (in->size > protocol::kMaxXattrValueSize) return malformed(call, DecodeError::kTooLarge);
  auto names = fs_.listxattr(call.context, call.header.nodeid, in->size);
  if (!names) return reply_error(call, names.error());
  if (in->size == 0) {
    fuse_getxattr_out out{};
    out.size = static_cast<uint32_t>(names->size());
    return reply_struct(call, out);
  }
  if (names->size() > in->size) return reply_error(call, ERANGE);
  reply_bytes(call, names->data(), names->size());
}

void Server::do_removexattr(Call& call) {
  auto name = call.args.read_name(NameRule::kXattr);
  if (!name) return refuse_name(call, name.error(), NameRule::kXattr);
  reply_result(call, fs_.removexattr(call.context, call.header.nodeid, *name));
}

void Server::do_opendir(Call& call) {
  auto in = call.args.read<fuse_open_in>();
  if (!in) return malformed(call, in.error());
  reply_result(call, fs_.opendir(call.context, call.header.nodeid, in->flags));
}

void Server::do_readdir(Call& call, bool plus) {
  auto in = call.args.read<fuse_read_in>();
  if (!in) return malformed(call, in.error());
  if (in->size > options_.max_read) return malformed(call, DecodeError::kTooLarge);
  BufferDirSink sink(in->size, plus, shared_versions(), options_.ids);
  auto status = fs_.readdir(call.context, call.header.nodeid, in->fh, in->offset, plus, sink);
  auto bytes = sink.bytes();
  // Entries the guest does not receive (an error after some were added, or an undelivered
  // reply) give their lookup references back.
  if (!status || !reply_bytes(call, bytes.data(), bytes.size())) {
    for (fs::NodeId node : sink.nodes()) fs_.forget(node, 1);
  }
  if (!status) return reply_error(call, status.error());
}

void Server::do_access(Call& call) {
  auto in = call.args.read<fuse_access_in>();
  if (!in) return malformed(call, in.error());
  reply_result(call, fs_.access(call.context, call.header.nodeid, in->mask));
}

void Server::do_getlk(Call& call) {
  auto in = call.args.read<fuse_lk_in>();
  if (!in) return malformed(call, in.error());
  auto lock = fs_.getlk(call.context, call.header.nodeid, in->fh, in->owner, DecodeLock(in->lk));
  if (!lock) return reply_error(call, lock.error());
  fuse_lk_out out{};
  out.lk = fuse_file_lock{.start = lock->start, .end = lock->end, .type = lock->type,
                          .pid = lock->pid};
  reply_struct(call, out);
}

void Server::do_setlk(Call& call, bool wait) {
  auto in = call.args.read<fuse_lk_in>();
  if (!in) return malformed(call, in.error());
  if (!wait) {
    return reply_result(call, fs_.setlk(call.context, call.header.nodeid, in->fh, in->owner,
                                        DecodeLock(in->lk), in->lk_flags, false));
  }
  Status status;
  {
    // Registered only while the filesystem may block; the reply goes out after.
    InterruptRegistry::Wait waiting(interrupts_, call.header.unique);
    call.context.interrupted = &waiting.interrupted();
    status = fs_.setlk(call.context, call.header.nodeid, in->fh, in->owner, DecodeLock(in->lk),
                       in->lk_flags, true);
  }
  call.context.interrupted = nullptr;
  reply_result(call, status);
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

void Server::do_fallocate(Call& call) {
  auto in = call.args.read<fuse_fallocate_in>();
  if (!in) return malformed(call, in.error());
  reply_result(call, fs_.fallocate(call.context, call.header.nodeid, in->fh, in->mode, in->offset,
                                   in->length));
}

void Server::do_lseek(Call& call) {
  auto in = call.args.read<fuse_lseek_in>();
  if (!in) return malformed(call, in.error());
  auto offset = fs_.lseek(call.context, call.header.nodeid, in->fh, in->offset, in->whence);
  if (!offset) return reply_error(call, offset.error());
  fuse_lseek_out out{};
  out.offset = *offset;
  reply_struct(call, out);
}

void Server::do_copy_file_range(Call& call) {
  auto in = call.args.read<fuse_copy_file_range_in>();
  if (!in) return malformed(call, in.error());
  auto n = fs_.copy_file_range(call.context, call.header.nodeid, in->fh_in, in->off_in,
                               in->nodeid_out, in->fh_out, in->off_out, in->len, in->flags);
  if (!n) return reply_error(call, n.error());
  fuse_write_out out{};
  out.size = static_cast<uint32_t>(std::min<size_t>(*n, UINT32_MAX));
  reply_struct(call, out);
}

void Server::do_syncfs(Call& call) {
  auto in = call.args.read<fuse_syncfs_in>();
  if (!in) return malformed(call, in.error());
  reply_result(call, fs_.syncfs(call.context, call.header.nodeid));
}

void Server::do_setupmapping(Call& call) {
  if (call.dax == nullptr) return reply_error(call, ENOSYS);
  auto in = call.args.read<fuse_setupmapping_in>();
  if (!in) return malformed(call, in.error());
  // A mapping is always readable (the VMM cannot mmap write-only); no other flags exist.
  constexpr uint64_t kKnownFlags = FUSE_SETUPMAPPING_FLAG_READ | FUSE_SETUPMAPPING_FLAG_WRITE;
  if (!(in->flags & FUSE_SETUPMAPPING_FLAG_READ) || (in->flags & ~kKnownFlags)) {
    return reply_error(call, EINVAL);
  }
  const bool writable = (in->flags & FUSE_SETUPMAPPING_FLAG_WRITE) != 0;
  // Linux sends fh = -1: the mapping is of the inode, not of an open file.
  std::optional<fs::HandleId> handle;
  if (in->fh != ~uint64_t{0}) handle = in->fh;
  const DaxMapping mapping{.file_offset = in->foffset,
                           .window_offset = in->moffset,
                           .length = in->len,
                           .writable = writable};
  // Checked before the file is opened: a bad range costs the host nothing.
  if (!call.dax->acceptable(mapping)) return reply_error(call, EINVAL);
  auto file = fs_.dax_file(call.context, call.header.nodeid, handle, writable);
  if (!file) return reply_error(call, file.error());
  reply_result(call, call.dax->map(mapping, std::move(*file)));
}

void Server::do_removemapping(Call& call) {
  if (call.dax == nullptr) return reply_error(call, ENOSYS);
  auto in = call.args.read<fuse_removemapping_in>();
  if (!in) return malformed(call, in.error());
  if (in->count == 0 || in->count > DaxWindow::kMaxRemoveEntries) {
    return malformed(call, DecodeError::kTooLarge);
  }
  if (call.args.remaining() != size_t{in->count} * sizeof(fuse_removemapping_one)) {
    return malformed(call, DecodeError::kTruncated);
  }
  std::vector<DaxRange> ranges(in->count);
  for (DaxRange& range : ranges) {
    auto one = call.args.read<fuse_removemapping_one>();
    range = DaxRange{.window_offset = one->moffset, .length = one->len};
  }
  reply_result(call, call.dax->unmap(ranges));
}

}  // namespace svfs::fuse
