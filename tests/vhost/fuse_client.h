// FUSE over virtio-fs, the guest driver's side: requests go into a readable descriptor, replies
// come back in a writable one. Built on VhostUserFrontend; used by the vhost tests and benchmarks.
#pragma once

#include <linux/fuse.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tests/vhost/frontend.h"

namespace svfs::vhost {

// A FUSE request serialized for the wire, addressed to one virtqueue.
struct FuseRequest {
  unsigned queue = 1;
  std::vector<std::uint8_t> bytes;  // fuse_in_header + body
  std::uint32_t reply_capacity = 0;  // 0: no writable descriptor (FORGET, BATCH_FORGET)
  // How the buffers are laid out, to exercise a backend's scatter-gather handling the way a guest
  // kernel does (header and pages in separate descriptors): 0 puts each direction in one
  // descriptor, otherwise each direction is cut into descriptors of at most `segment` bytes.
  std::uint32_t segment = 0;
  bool indirect = false;  // put the chain in an indirect descriptor table
};

struct FuseReply {
  bool answered = false;       // the chain came back through the used ring before the timeout
  std::uint64_t unique = 0;    // of the request, to match against the reply header
  std::uint32_t used_len = 0;  // what the backend claims it wrote
  std::vector<std::uint8_t> bytes;  // the first min(used_len, capacity) bytes of the reply buffer

  // Answered with a fuse_out_header whose len equals the used length and whose unique matches.
  bool well_formed() const;
  const fuse_out_header& header() const {
    return *reinterpret_cast<const fuse_out_header*>(bytes.data());
  }
  int error() const { return well_formed() ? header().error : -EPROTO; }
  std::span<const std::uint8_t> body() const {
    return std::span(bytes).subspan(sizeof(fuse_out_header));
  }
  template <typename T>
  std::optional<T> as() const {  // the body as T, if it is at least that long and not an error
    if (!well_formed() || error() != 0 || body().size() < sizeof(T)) return std::nullopt;
    T v;
    std::memcpy(&v, body().data(), sizeof(T));
    return v;
  }
};

struct DirEntryPlus {
  fuse_entry_out entry;
  std::uint64_t off;
  std::uint32_t type;
  std::string name;
};

class FuseClient {
 public:
  explicit FuseClient(VhostUserFrontend& fe) : fe_(fe) {}

  VhostUserFrontend& frontend() { return fe_; }
  // Builds a request: header (len, opcode, unique, nodeid, our uid/gid/pid) followed by `body`
  // pieces concatenated.
  FuseRequest make(std::uint32_t opcode, std::uint64_t nodeid,
                   std::initializer_list<std::span<const std::uint8_t>> body,
                   std::uint32_t reply_capacity, unsigned queue = 1);

  // Submits all requests (each queue kicked once), then waits until every one is answered or the
  // timeout passes. Replies are in request order. Guest memory for the batch is released after.
  std::vector<FuseReply> transact(std::span<const FuseRequest> requests,
                                  std::optional<std::chrono::milliseconds> timeout = {});
  FuseReply send(const FuseRequest& request, std::optional<std::chrono::milliseconds> timeout = {});

  // `request` written to guest memory as a descriptor chain on its queue (laid out as its
  // `segment` and `indirect` say), with a zeroed reply buffer; made available unless `publish` is
  // false (post it later with Virtqueue::repost; direct chains only). Does not kick. The memory
  // stays allocated until the caller releases it (GuestMemory::mark/release).
  struct Placed {
    std::uint16_t head;
    std::uint64_t reply;  // guest address of the reply buffer; 0 if reply_capacity is 0
  };
  Placed place(const FuseRequest& request, bool publish = true);

  // ---- Helpers. Each returns the raw reply; callers use reply.as<T>() / error().
  FuseReply init(std::uint32_t minor = 38, std::uint64_t flags = FUSE_ASYNC_READ | FUSE_DO_READDIRPLUS |
                                                                    FUSE_MAX_PAGES | FUSE_INIT_EXT);
  FuseReply lookup(std::uint64_t parent, std::string_view name, unsigned queue = 1);
  FuseReply getattr(std::uint64_t nodeid, unsigned queue = 1);
  FuseReply opendir(std::uint64_t nodeid, unsigned queue = 1);
  FuseReply readdirplus(std::uint64_t nodeid, std::uint64_t fh, std::uint64_t offset,
                        std::uint32_t size, unsigned queue = 1);
  FuseReply releasedir(std::uint64_t nodeid, std::uint64_t fh, unsigned queue = 1);
  FuseReply create(std::uint64_t parent, std::string_view name, std::uint32_t mode,
                   std::uint32_t flags, unsigned queue = 1);
  FuseReply open(std::uint64_t nodeid, std::uint32_t flags, unsigned queue = 1);
  FuseReply read(std::uint64_t nodeid, std::uint64_t fh, std::uint64_t offset, std::uint32_t size,
                 unsigned queue = 1);
  FuseReply write(std::uint64_t nodeid, std::uint64_t fh, std::uint64_t offset,
                  std::span<const std::uint8_t> data, unsigned queue = 1);
  FuseReply release(std::uint64_t nodeid, std::uint64_t fh, unsigned queue = 1);
  FuseReply unlink(std::uint64_t parent, std::string_view name, unsigned queue = 1);
  // FORGET has no reply; it goes to the hiprio queue like the guest driver sends it.
  FuseReply forget(std::uint64_t nodeid, std::uint64_t nlookup, unsigned queue = 0);

  // Request builders for batching (transact) — same arguments as the helpers above.
  FuseRequest getattr_request(std::uint64_t nodeid, unsigned queue = 1);
  FuseRequest lookup_request(std::uint64_t parent, std::string_view name, unsigned queue = 1);
  FuseRequest read_request(std::uint64_t nodeid, std::uint64_t fh, std::uint64_t offset,
                           std::uint32_t size, unsigned queue = 1);
  FuseRequest write_request(std::uint64_t nodeid, std::uint64_t fh, std::uint64_t offset,
                            std::span<const std::uint8_t> data, unsigned queue = 1);

  // Parses a READDIRPLUS reply body.
  static std::vector<DirEntryPlus> parse_direntplus(std::span<const std::uint8_t> body);

  std::uint32_t max_write() const { return max_write_; }

 private:
  VhostUserFrontend& fe_;
  std::uint64_t next_unique_ = 1;
  // The caller's identity, read once: a guest kernel fills these in without a system call, and
  // three per request cost the benchmark driver CPU its daemon would otherwise get.
  const std::uint32_t uid_ = ::getuid();
  const std::uint32_t gid_ = ::getgid();
  const std::uint32_t pid_ = static_cast<std::uint32_t>(::getpid());
  std::uint32_t max_write_ = 128 * 1024;
};

// Byte view of a trivially copyable value, for FuseClient::make bodies.
template <typename T>
std::span<const std::uint8_t> Bytes(const T& v) {
  return {reinterpret_cast<const std::uint8_t*>(&v), sizeof(T)};
}
// A name with its terminating NUL, as FUSE wants it.
std::vector<std::uint8_t> CName(std::string_view name);

}  // namespace svfs::vhost
