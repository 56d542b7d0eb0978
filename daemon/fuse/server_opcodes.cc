// The FUSE server's opcodes past the session's own (INIT, DESTROY, INTERRUPT: server.cc): each
// decodes its arguments, checks them, calls the filesystem and replies.
#include <fcntl.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <vector>

#include "daemon/fuse/server_call.h"
#include "daemon/fuse/wire_structs.h"

namespace svfs::fuse {

using protocol::DecodeError;
using protocol::NameRule;

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
