// The FUSE server: decodes and validates a request, dispatches it to the filesystem (one method
// per opcode) and encodes the reply. It knows nothing of the transport beyond ReplyChannel, so it
// is tested by feeding raw request bytes.
#pragma once

#include <sys/uio.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <span>

#include "daemon/fs/filesystem.h"
#include "daemon/fs/id_map.h"
#include "daemon/fuse/dax_window.h"
#include "daemon/fuse/interrupt_registry.h"
#include "common/log_limiter.h"
#include "daemon/fuse/stats.h"
#include "protocol/fuse_request.h"
#include "protocol/shared_versions.h"

namespace svfs::fuse {

// Where a reply goes; implemented by each transport for one request.
class ReplyChannel {
 public:
  virtual ~ReplyChannel() = default;
  // Sends a reply. parts[0] holds the fuse_out_header, whose len is the sum of all parts.
  // Returns whether the reply reached the client: false when it does not fit the buffers the
  // client gave or the client no longer waits for it. The server then takes back what the reply
  // handed out (lookup references, open handles), since the client never learns of them.
  virtual bool send(std::span<const iovec> parts) = 0;
  // The READ payload area, right after the reply header. The filesystem fills it (zero copy
  // where the transport allows), then the server calls send_data().
  virtual fs::ReadSink& data_sink(size_t max_length) = 0;
  // Sends `header` followed by the bytes the data sink received; header.len already counts them.
  virtual void send_data(const fuse_out_header& header) = 0;
};

struct ServerOptions {
  uint32_t max_write = protocol::kMaxWrite;
  // Largest READ a request may ask for; transports with bounded buffers lower it.
  uint32_t max_read = protocol::kMaxReadSize;
  // Time granularity advertised in INIT (ns).
  uint32_t time_gran = 1;
  // How long an INTERRUPT that found no waiting request is kept for a request still to come:
  // far longer than a request waits to be served, short enough that one whose request was
  // answered before it arrived does not linger.
  std::chrono::milliseconds unmatched_interrupt_lifetime{5000};
  // --translate-uid/--translate-gid: callers and chown targets to the host, owners to the guest.
  fs::IdTranslation ids;
};

class Server {
 public:
  using Clock = std::chrono::steady_clock;

  Server(fs::FileSystem& filesystem, ServerOptions options = {});

  // Handles one request. `request` holds the header and arguments; for WRITE the payload follows
  // them in `request` unless the transport passes it separately as `external_payload` (vhost-user
  // keeps it in guest memory). Replies (if the opcode has one) through `channel`.
  // `caller_groups`: where the transport learns callers' supplementary groups (host mounts);
  // nullptr for guests, whose groups svfsd only sees in FUSE_EXT_GROUPS.
  // `dax`: the device's DAX window (vhost-user with --dax-window-size); nullptr: no DAX, so
  // INIT does not agree on FUSE_MAP_ALIGNMENT and SETUPMAPPING/REMOVEMAPPING get ENOSYS.
  // `started`: when the transport took the request up, if it has just read the clock (the
  // per-opcode time counts from there; otherwise from now). Returns when the request was done
  // (`started` for one too short for a header), so that a transport serving requests back to
  // back reads the clock once per request.
  Clock::time_point handle(std::span<const uint8_t> request, fs::WriteSource* external_payload,
                           ReplyChannel& channel, const fs::CallerGroups* caller_groups = nullptr,
                           DaxWindow* dax = nullptr,
                           std::optional<Clock::time_point> started = std::nullopt);

  const RequestStats& stats() const { return stats_; }
  RequestStats& stats() { return stats_; }

  // Wakes every request blocked in a lock wait; each fails with EINTR. Used when a queue stops
  // (device reset, disconnect), where waiting for the lock holder could take forever.
  void interrupt_blocked_requests();
  bool initialized() const { return initialized_.load(std::memory_order_acquire); }
  // The protocol minor agreed in INIT (0 before).
  uint32_t negotiated_minor() const { return negotiated_.minor; }
  // Whether INIT agreed on shared versions: entry and attr replies then carry a VersionTrailer.
  bool shared_versions() const {
    return (negotiated_.flags & protocol::kInitSharedVersions) != 0;
  }

 private:
  struct Call;  // one request being handled: header, reader, channel, context

  void dispatch(Call& call);
  // Detaches the request's extension area (fuse_in_header.total_extlen) from its arguments and
  // keeps the supplementary groups it carries; why it is malformed otherwise.
  std::optional<protocol::DecodeError> take_extensions(Call& call);
  void malformed(Call& call, protocol::DecodeError error, int reply_errno = EINVAL);
  // A name read_name refused: too long gets the host's errno for it, anything else is malformed.
  void refuse_name(Call& call, protocol::DecodeError error, protocol::NameRule rule);

  // One method per opcode.
  void do_init(Call&);
  void do_destroy(Call&);
  void do_lookup(Call&);
  void do_forget(Call&);
  void do_batch_forget(Call&);
  void do_getattr(Call&);
  void do_setattr(Call&);
  void do_readlink(Call&);
  void do_symlink(Call&);
  void do_mknod(Call&);
  void do_mkdir(Call&);
  void do_unlink(Call&);
  void do_rmdir(Call&);
  void do_rename(Call&, bool with_flags);
  void do_link(Call&);
  void do_open(Call&);
  void do_create(Call&, bool tmpfile);
  void do_read(Call&);
  void do_write(Call&);
  void do_statfs(Call&);
  void do_release(Call&, bool directory);
  void do_flush(Call&);
  void do_fsync(Call&, bool directory);
  void do_setxattr(Call&);
  void do_getxattr(Call&);
  void do_listxattr(Call&);
  void do_removexattr(Call&);
  void do_opendir(Call&);
  void do_readdir(Call&, bool plus);
  void do_access(Call&);
  void do_getlk(Call&);
  void do_setlk(Call&, bool wait);
  void do_interrupt(Call&);
  void do_fallocate(Call&);
  void do_lseek(Call&);
  void do_copy_file_range(Call&);
  void do_syncfs(Call&);
  void do_setupmapping(Call&);
  void do_removemapping(Call&);

  // Reply encoders.
  void reply_error(Call&, int error);
  void reply_empty(Call&);
  bool reply_bytes(Call&, const void* data, size_t size);
  bool reply_parts(Call&, std::span<iovec> payload);
  void reply_entry(Call&, const fs::Entry& entry);
  void reply_attr(Call&, const fs::Attr& attr);
  void reply_open(Call&, const fs::Opened& opened);
  // Takes back what a reply the client never received handed out.
  void undo_entry(const fs::Entry& entry);
  void undo_open(Call&, fs::NodeId node, const fs::Opened& opened);
  template <typename T>
  void reply_struct(Call& call, const T& value) { reply_bytes(call, &value, sizeof(value)); }
  template <typename T>
  void reply_result(Call& call, const Result<T>& result);

  fs::FileSystem& fs_;
  ServerOptions options_;
  RequestStats stats_;

  std::atomic<bool> initialized_{false};
  fs::Negotiated negotiated_{};  // written once by INIT before initialized_ is set

  // Lock waits in progress and interrupts for requests not waiting (yet).
  InterruptRegistry interrupts_;

  // Rate limit for malformed-request log lines: at most a burst per second.
  LogLimiter malformed_log_{"malformed-request warnings"};
};

}  // namespace svfs::fuse
