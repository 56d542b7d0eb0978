// libFuzzer harness for the vhost-user control plane: VhostUserBackend, as svfsd runs it, serves
// one frontend connection per input on a real UNIX socket. The input is a sequence of messages
// sent before the backend starts reading (so a run is deterministic): any request code, flags,
// a size field that may disagree with the bytes that follow, and 0-3 fds each a memfd (guest
// memory, 64 KiB; a region may claim more, so queue threads can touch pages past its end), an
// eventfd (kick, call, err) or a pipe (not an eventfd). Queues the messages configure completely
// start their threads over that memory, as for a real frontend; a "ring" memfd holds posted
// chains (LOOKUPs, and FORGETs for the hiprio queue) for queues 0-2 laid out as the seeds
// configure them, which those threads serve (through a worker pool with option 1) while the
// control messages go on.
//
// What must hold: run() returns once the frontend's side is closed (no hang: libFuzzer's
// -timeout), every reply on the socket is a whole, well-formed reply, and no fd the frontend
// sent outlives the connection (the process's fd count is back where it was).
//
// Input: options u8 (1: a pool of 2 workers, 2: request queues poll 50 us), then messages, each
// {request u8 (0xff: a raw u32 follows; else % 40), flags u8 (1
// NEED_REPLY, 2 a wrong version, 4 a raw u32 size field follows, 8 a u16 payload length follows
// instead of a u8), fds u8 (count: low 2 bits; kind of fd i: bits 2+2i..3+2i: 0 memfd, 1 eventfd,
// 2 pipe, 3 ring memfd), payload length, payload bytes}.
//
// With SVFS_FUZZ_SEED_DIR set, LLVMFuzzerInitialize writes the seed corpus there.
#include <dirent.h>
#include <linux/fuse.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "daemon/fuse/server.h"
#include "daemon/transport/vhost_user/backend.h"
#include "daemon/transport/vhost_user/message.h"
#include "daemon/transport/vhost_user/virtqueue.h"
#include "shm/fault_guard.h"
#include "tests/fuzz/fuzz_support.h"
#include "tests/unit/fake_filesystem.h"
#include "tests/unit/request_builder.h"

namespace {

using namespace svfs::transport::vhost_user;
using svfs::UniqueFd;
using svfs::fuzz::Input;
using svfs::fuzz::InputBuilder;

constexpr const char* kTarget = "vhost_user_fuzzer";
constexpr size_t kMemfdBytes = 64 * 1024;
constexpr size_t kMaxMessages = 64;

enum FdKind : uint8_t { kMemfd = 0, kEventfd = 1, kPipe = 2, kRingMemfd = 3 };
// Where the seeds put queue q's rings in guest memory (guest-physical 0, frontend-virtual
// kGuestUva): descriptors at q * kQueueStride, avail +0x1000, used +0x2000, buffers +0x3000.
constexpr uint64_t kGuestUva = 0x7f0000000000;
constexpr uint64_t kQueueStride = 0x4000;
constexpr uint32_t kRingSize = 8;
constexpr uint16_t kPostedChains = 4;
enum Flag : uint8_t { kNeedReply = 1, kBadVersion = 2, kRawSize = 4, kLongPayload = 8 };

[[noreturn]] void Fail(const char* what, uint64_t a = 0, uint64_t b = 0) {
  svfs::fuzz::Fail(kTarget, what, a, b);
}

size_t OpenFds() {
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) Fail("opendir /proc/self/fd");
  size_t n = 0;
  while (::readdir(dir) != nullptr) ++n;
  ::closedir(dir);
  return n;
}

// Posted chains for queues 0-2 (see kQueueStride): a request descriptor and a reply one each.
void WriteRings(int fd) {
  for (uint32_t q = 0; q < 3; ++q) {
    const uint64_t base = q * kQueueStride;
    for (uint16_t i = 0; i < kPostedChains; ++i) {
      std::vector<uint8_t> request =
          q == 0 ? svfs::testing::RequestBuilder(FUSE_FORGET, 42, 0).add(fuse_forget_in{.nlookup = 1}).build()
                 : svfs::testing::RequestBuilder(FUSE_LOOKUP, 1, 100 + i).name("file").build();
      const uint64_t req = base + 0x3000 + 0x100 * i, reply = base + 0x3800 + 0x100 * i;
      VringDesc descs[2] = {{req, static_cast<uint32_t>(request.size()), kDescNext,
                             static_cast<uint16_t>(2 * i + 1)},
                            {reply, 0x100, kDescWrite, 0}};
      const uint16_t head = static_cast<uint16_t>(2 * i);
      if (::pwrite(fd, request.data(), request.size(), static_cast<off_t>(req)) < 0 ||
          ::pwrite(fd, descs, sizeof(descs), static_cast<off_t>(base + 16 * head)) < 0 ||
          ::pwrite(fd, &head, 2, static_cast<off_t>(base + 0x1000 + 4 + 2 * i)) < 0) {
        Fail("writing the rings");
      }
    }
    const uint16_t idx = kPostedChains;
    if (::pwrite(fd, &idx, 2, static_cast<off_t>(base + 0x1000 + 2)) < 0) Fail("writing the rings");
  }
}

UniqueFd MakeFd(uint8_t kind) {
  switch (kind) {
    case kEventfd: return UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    case kPipe: {
      int p[2];
      if (::pipe2(p, O_CLOEXEC) != 0) return UniqueFd();
      ::close(p[1]);
      return UniqueFd(p[0]);
    }
    default: {
      UniqueFd fd(::memfd_create("fuzz-guest", MFD_CLOEXEC));
      if (fd && ::ftruncate(fd.get(), kMemfdBytes) != 0) fd.reset();
      if (fd && kind == kRingMemfd) WriteRings(fd.get());
      return fd;
    }
  }
}

// Sends `bytes` with `fds` attached; all of it fits the socket buffer (inputs are small).
void Send(int socket, const std::vector<uint8_t>& bytes, const std::vector<UniqueFd>& fds) {
  iovec iov{const_cast<uint8_t*>(bytes.data()), bytes.size()};
  msghdr mh{};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 3)];
  if (!fds.empty()) {
    mh.msg_control = control;
    mh.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    for (size_t i = 0; i < fds.size(); ++i) {
      int fd = fds[i].get();
      std::memcpy(CMSG_DATA(c) + i * sizeof(int), &fd, sizeof(int));
    }
  }
  if (bytes.empty()) return;
  if (::sendmsg(socket, &mh, MSG_NOSIGNAL | MSG_DONTWAIT) != static_cast<ssize_t>(bytes.size())) {
    Fail("sending a message to the backend");
  }
}

// Every reply must be a whole header (version 1, REPLY) and its payload.
void CheckReplies(int socket) {
  std::vector<uint8_t> got;
  uint8_t buf[4096];
  for (;;) {
    ssize_t n = ::recv(socket, buf, sizeof(buf), MSG_DONTWAIT);
    if (n <= 0) break;
    got.insert(got.end(), buf, buf + n);
  }
  size_t pos = 0;
  while (pos < got.size()) {
    if (got.size() - pos < Message::kHeaderSize) Fail("partial reply header", got.size() - pos);
    uint32_t header[3];
    std::memcpy(header, got.data() + pos, sizeof(header));
    if (header[1] != (msg::kVersion | msg::kReplyFlag)) Fail("reply flags", header[1]);
    if (header[2] > Message::kMaxPayload) Fail("reply payload size", header[2]);
    pos += Message::kHeaderSize;
    if (got.size() - pos < header[2]) Fail("partial reply payload", got.size() - pos, header[2]);
    pos += header[2];
  }
}

class NullChannel final : public svfs::fuse::ReplyChannel {
 public:
  bool send(std::span<const iovec>) override { return true; }
  svfs::fs::ReadSink& data_sink(size_t) override { Fail("INIT read"); }
  void send_data(const fuse_out_header&) override { Fail("INIT data"); }
};

// The fake filesystem records every call, which is not thread safe; the queue and pool threads
// serve only what the ring memfd holds (LOOKUP, FORGET), answered here without recording.
class ConcurrentFake final : public svfs::testing::FakeFileSystem {
 public:
  svfs::Result<svfs::fs::Entry> lookup(const svfs::fs::Context&, svfs::fs::NodeId,
                                       std::string_view) override {
    return entry;
  }
  void forget(svfs::fs::NodeId, uint64_t) override {}
};

// The FUSE server the queues serve (initialized once; its state carries over between inputs).
struct Fixture {
  ConcurrentFake fake;
  svfs::fuse::Server server{fake};
  sockaddr_un address{};
  socklen_t address_len = 0;

  Fixture() {
    fuse_init_in init{};
    init.major = 7;
    init.minor = 38;
    init.flags = FUSE_MAX_PAGES | FUSE_INIT_EXT;
    NullChannel channel;
    server.handle(svfs::testing::RequestBuilder(FUSE_INIT, 0, 1).add(init).build(), nullptr, channel);
    if (!server.initialized()) Fail("INIT failed");
    address.sun_family = AF_UNIX;
    std::string name = "svfs-vhost-user-fuzzer-" + std::to_string(::getpid());
    std::memcpy(address.sun_path + 1, name.data(), name.size());  // abstract: nothing on disk
    address_len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  }
};

Fixture* g_fixture = nullptr;

// ---- seed corpus ----

class Script {
 public:
  Script& message(uint32_t request, const void* payload, size_t size, uint8_t flags = 0,
                  uint8_t fds = 0) {
    if (request < 0xff) b_.u8(static_cast<uint8_t>(request));
    else b_.u8(0xff).u32(request);
    b_.u8(flags | (size > 255 ? kLongPayload : 0)).u8(fds);
    if (size > 255) b_.u16(static_cast<uint16_t>(size));
    else b_.u8(static_cast<uint8_t>(size));
    b_.raw({static_cast<const uint8_t*>(payload), size});
    return *this;
  }
  explicit Script(uint8_t options) { b_.u8(options); }
  Script& empty(uint32_t request, uint8_t flags = 0) { return message(request, nullptr, 0, flags); }
  template <typename T>
  Script& with(uint32_t request, const T& payload, uint8_t flags = 0, uint8_t fds = 0) {
    return message(request, &payload, sizeof(T), flags, fds);
  }
  const std::vector<uint8_t>& bytes() const { return b_.bytes(); }

 private:
  InputBuilder b_;
};

constexpr uint8_t OneFd(FdKind kind) { return static_cast<uint8_t>(1 | (kind << 2)); }

struct MemTable {
  uint32_t count = 1;
  uint32_t padding = 0;
  RegionDesc region{0, kMemfdBytes, kGuestUva, 0};
};
struct MemReg {
  uint64_t padding = 0;
  RegionDesc region;
};

// QEMU's start-up of a vhost-user-fs device with `queues` queues (hiprio + requests).
Script QemuStart(uint32_t queues, bool reply_ack, uint8_t options = 0, FdKind memory = kMemfd) {
  Script s(options);
  const uint64_t features = msg::kFeatureVersion1 | msg::kFeatureIndirectDesc |
                            msg::kFeatureEventIdx | msg::kFeatureProtocolFeatures;
  const uint64_t protocol = msg::kProtocolMq | msg::kProtocolConfig |
                            (reply_ack ? msg::kProtocolReplyAck : 0) |
                            msg::kProtocolConfigureMemSlots;
  const uint8_t ack = reply_ack ? kNeedReply : 0;
  s.empty(msg::kGetFeatures).empty(msg::kGetProtocolFeatures);
  s.with(msg::kSetProtocolFeatures, protocol).empty(msg::kGetQueueNum).empty(msg::kGetMaxMemSlots);
  s.empty(msg::kSetOwner, ack).with(msg::kSetFeatures, features, ack);
  s.with(msg::kSetMemTable, MemTable{}, ack, OneFd(memory));
  for (uint32_t q = 0; q < queues; ++q) {
    const uint64_t base = kGuestUva + kQueueStride * q;
    s.with(msg::kSetVringNum, VringState{q, kRingSize}, ack);
    s.with(msg::kSetVringAddr, VringAddr{q, 0, base, base + 0x2000, base + 0x1000, 0}, ack);
    s.with(msg::kSetVringBase, VringState{q, 0}, ack);
    s.with(msg::kSetVringKick, uint64_t{q}, ack, OneFd(kEventfd));
    s.with(msg::kSetVringCall, uint64_t{q}, ack, OneFd(kEventfd));
    s.with(msg::kSetVringErr, uint64_t{q}, ack, OneFd(kEventfd));
    s.with(msg::kSetVringEnable, VringState{q, 1}, ack);
  }
  return s;
}

void MakeSeeds(const char* dir) {
  std::vector<std::pair<std::string, std::vector<uint8_t>>> seeds;
  {
    Script s = QemuStart(2, true);
    s.with(msg::kGetVringBase, VringState{1, 0}).with(msg::kGetVringBase, VringState{0, 0});
    seeds.emplace_back("qemu_start_stop", s.bytes());
  }
  {  // posted chains served by the queue threads, then by a pool while the queues are stopped
    Script s = QemuStart(3, true, 0, kRingMemfd);
    s.with(msg::kGetVringBase, VringState{2, 0}).with(msg::kGetVringBase, VringState{1, 0});
    seeds.emplace_back("serve_posted_chains", s.bytes());
    Script p = QemuStart(3, false, 3, kRingMemfd);
    p.with(msg::kSetMemTable, MemTable{}, 0, OneFd(kRingMemfd));
    p.with(msg::kGetVringBase, VringState{1, 0});
    seeds.emplace_back("serve_with_pool", p.bytes());
  }
  {
    Script s = QemuStart(1, false);
    struct {
      ConfigHeader header{0, 40, 0};
      uint8_t config[40] = {};
    } get_config;
    s.with(msg::kGetConfig, get_config);
    s.with(msg::kAddMemReg, MemReg{0, {0x100000, 4096, 0x7f0000100000, 0}}, kNeedReply,
           OneFd(kMemfd));
    s.with(msg::kRemMemReg, MemReg{0, {0x100000, 4096, 0x7f0000100000, 0}}, kNeedReply);
    s.empty(msg::kResetDevice);
    seeds.emplace_back("config_and_mem_slots", s.bytes());
  }
  {  // refused: a queue index past the last, a region past its fd, a bad size, no fd, unknown
    Script s = QemuStart(0, true);
    s.with(msg::kSetVringNum, VringState{200, kRingSize}, kNeedReply);
    s.with(msg::kSetVringNum, VringState{0, 3}, kNeedReply);
    MemTable big;
    big.region.memory_size = 1ull << 40;
    s.with(msg::kSetMemTable, big, kNeedReply, OneFd(kMemfd));
    s.with(msg::kSetVringKick, uint64_t{0}, kNeedReply);
    s.with(msg::kSetVringKick, uint64_t{0x100}, kNeedReply);
    s.message(msg::kSetVringAddr, "short", 5, kNeedReply);
    s.empty(99, kNeedReply);
    seeds.emplace_back("refusals", s.bytes());
  }
  svfs::fuzz::WriteSeeds(kTarget, dir, seeds);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  svfs::fuzz::QuietLogs();
  ::signal(SIGPIPE, SIG_IGN);
  // The fault guards' eventfd lives as long as the process: made now, so the fd count of the
  // first input does not include it.
  (void)svfs::shm::FaultGuard::TripFd();
  g_fixture = new Fixture();
  if (const char* dir = std::getenv("SVFS_FUZZ_SEED_DIR")) MakeSeeds(dir);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Fixture& f = *g_fixture;
  const size_t fds_before = OpenFds();
  {
    UniqueFd listening(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!listening ||
        ::bind(listening.get(), reinterpret_cast<sockaddr*>(&f.address), f.address_len) != 0 ||
        ::listen(listening.get(), 1) != 0) {
      Fail("listening socket");
    }
    Input in(data, size);
    const uint8_t options = in.u8();
    auto backend = VhostUserBackend::Create(
        f.server, BackendOptions{.listen_fd = listening.release(),
                                 .tag = "fuzz",
                                 .pool_threads = (options & 1) ? 2u : 0u,
                                 .poll_max = std::chrono::microseconds((options & 2) ? 50 : 0)});
    if (!backend) Fail("VhostUserBackend::Create", backend.error());
    UniqueFd frontend(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!frontend ||
        ::connect(frontend.get(), reinterpret_cast<sockaddr*>(&f.address), f.address_len) != 0) {
      Fail("connect");
    }

    for (size_t n = 0; n < kMaxMessages && !in.empty(); ++n) {
      uint8_t code = in.u8();
      uint32_t request = code == 0xff ? in.u32() : code % 40;
      uint8_t flags = in.u8();
      uint8_t fd_spec = in.u8();
      uint32_t raw_size = (flags & kRawSize) ? in.u32() : 0;
      size_t length = (flags & kLongPayload) ? in.u16() : in.u8();
      auto payload = in.bytes(length);
      uint32_t header[3] = {request, ((flags & kBadVersion) ? 2u : msg::kVersion) |
                                         ((flags & kNeedReply) ? msg::kNeedReplyFlag : 0u),
                            (flags & kRawSize) ? raw_size : static_cast<uint32_t>(payload.size())};
      std::vector<uint8_t> bytes(sizeof(header) + payload.size());
      std::memcpy(bytes.data(), header, sizeof(header));
      if (!payload.empty()) std::memcpy(bytes.data() + sizeof(header), payload.data(), payload.size());
      std::vector<UniqueFd> fds;
      for (unsigned i = 0; i < (fd_spec & 3u); ++i) {
        UniqueFd fd = MakeFd((fd_spec >> (2 + 2 * i)) & 3);
        if (!fd) Fail("making an fd to send");
        fds.push_back(std::move(fd));
      }
      Send(frontend.get(), bytes, fds);
    }
    // End of the frontend's messages: the backend must serve them all and return.
    ::shutdown(frontend.get(), SHUT_WR);
    auto status = (*backend)->run();
    if (!status) Fail("run() failed", status.error());
    CheckReplies(frontend.get());
  }
  const size_t fds_after = OpenFds();
  if (fds_after != fds_before) Fail("fds left open after the connection", fds_after, fds_before);
  return 0;
}
