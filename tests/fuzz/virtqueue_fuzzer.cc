// libFuzzer harness for the descriptor-chain walker over hostile rings: the input describes a
// guest memory layout (up to 4 regions, each a memfd mapped by GuestMemory as SET_MEM_TABLE
// does, possibly adjacent or overlapping), a split virtqueue in it, and a script of what the
// driver does: write bytes anywhere, write descriptors (direct, indirect, looping, pointing
// anywhere), post heads, jump the avail index, and what the device does: pop, serve, hold, push,
// notify. The device side is the code svfsd runs: Virtqueue, CopyRequest and ChainReplyChannel,
// and with flag 2 the FUSE server over the fake filesystem (as QueueRunner's ServeCopy).
//
// What must hold: every iovec of a popped chain lies inside one mapped region and the byte counts
// add up; map() succeeds exactly when each ring lies inside one region and is aligned; a push
// lands in the used ring where the driver reads it; nothing reads or writes outside the regions
// (the parts of each mapping outside its region are ASan-poisoned: the mmap_offset prefix and
// the tail of the last page).
//
// Input: flags u8 (1 EVENT_IDX, 2 serve through the FUSE server), log2 queue size u8, regions
// u8 (1 + n % 4), per region {placement u8 (1: adjacent to the previous in guest-physical
// space, 2: in frontend-virtual space), gpa u64, size u32 (1 + n % 1 MiB), uva u64, offset
// pages u8}, per ring (desc, avail, used) {region u8, offset u64} (a region index past the last
// means the offset is a raw address), last_avail u16; then ops, each an opcode byte (see Op).
//
// With SVFS_FUZZ_SEED_DIR set, LLVMFuzzerInitialize writes the seed corpus there.
#include <linux/fuse.h>
#include <sanitizer/asan_interface.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "daemon/fuse/server.h"
#include "daemon/transport/vhost_user/chain_io.h"
#include "daemon/transport/vhost_user/guest_memory.h"
#include "daemon/transport/vhost_user/virtqueue.h"
#include "protocol/fuse_opcodes.h"
#include "tests/fuzz/fuzz_support.h"
#include "tests/unit/fake_filesystem.h"
#include "tests/unit/request_builder.h"

namespace {

using namespace svfs::transport::vhost_user;
using svfs::UniqueFd;
using svfs::fuzz::Input;
using svfs::fuzz::InputBuilder;

constexpr const char* kTarget = "virtqueue_fuzzer";
constexpr size_t kMaxRegions = 4;
constexpr uint32_t kMaxRegionBytes = 1 << 20;
constexpr size_t kPage = 4096;
constexpr size_t kMaxOps = 256;
constexpr size_t kMaxPops = 256;  // per input, so one input stays fast

enum Op : uint8_t {
  kWriteBytes = 0,   // region u8, offset u32, length u16, bytes
  kWriteDesc = 1,    // index u16, addr (region u8, offset u64), len u32, flags u16, next u16
  kPost = 2,         // head u16: avail ring[idx % size] = head, idx++
  kJumpAvail = 3,    // delta u16 added to avail idx
  kPopServe = 4,     // pop one chain, serve it, push it
  kPopHold = 5,      // pop one chain and keep it (in flight)
  kPushHeld = 6,     // push every held chain, length 0
  kNotify = 7,       // the kick/interrupt suppression calls
  kOpCount = 8,
};

[[noreturn]] void Fail(const char* what, uint64_t a = 0, uint64_t b = 0) {
  svfs::fuzz::Fail(kTarget, what, a, b);
}

size_t RoundUp(size_t n) { return (n + kPage - 1) / kPage * kPage; }

// One region as both sides see it.
struct Region {
  RegionDesc desc;
  UniqueFd fd;
  uint8_t* driver_map = nullptr;  // our own mapping of the fd (the guest's side), length map_len
  size_t map_len = 0;
  uint8_t* device = nullptr;      // GuestMemory's host pointer of the region's first byte
  uint8_t* driver() const { return driver_map + desc.mmap_offset; }
};

// The whole guest: owns the mappings; unpoisons the device mapping's edges before GuestMemory
// unmaps them.
struct Guest {
  std::vector<Region> regions;
  GuestMemory memory;

  ~Guest() {
    for (Region& r : regions) {
      if (r.device != nullptr) {
        ASAN_UNPOISON_MEMORY_REGION(r.device - r.desc.mmap_offset, r.map_len);
      }
      if (r.driver_map != nullptr) ::munmap(r.driver_map, r.map_len);
    }
    memory.clear();
  }

  // The region whose guest-physical (or frontend-virtual) range holds [addr, addr + len).
  const Region* holding(uint64_t addr, uint64_t len, bool frontend) const {
    for (const Region& r : regions) {
      uint64_t start = frontend ? r.desc.userspace_addr : r.desc.guest_phys_addr;
      if (addr >= start && addr - start <= r.desc.memory_size &&
          len <= r.desc.memory_size - (addr - start)) {
        return &r;
      }
    }
    return nullptr;
  }
  // Driver pointer for frontend-virtual [addr, addr + len), or nullptr.
  uint8_t* driver_at(uint64_t uva, uint64_t len) const {
    const Region* r = holding(uva, len, true);
    return r ? r->driver() + (uva - r->desc.userspace_addr) : nullptr;
  }
};

void AddRegions(Input& in, Guest& guest) {
  size_t count = 1 + in.u8() % kMaxRegions;
  RegionDesc previous{};
  for (size_t i = 0; i < count; ++i) {
    uint8_t placement = in.u8();
    RegionDesc d;
    d.guest_phys_addr = in.u64();
    d.memory_size = 1 + in.u32() % kMaxRegionBytes;
    d.userspace_addr = in.u64();
    d.mmap_offset = (in.u8() % 4) * kPage;
    if (i > 0 && (placement & 1)) d.guest_phys_addr = previous.guest_phys_addr + previous.memory_size;
    if (i > 0 && (placement & 2)) d.userspace_addr = previous.userspace_addr + previous.memory_size;
    previous = d;
    Region r;
    r.desc = d;
    r.map_len = RoundUp(d.mmap_offset + d.memory_size);
    r.fd = UniqueFd(::memfd_create("fuzz-guest", MFD_CLOEXEC));
    if (!r.fd || ::ftruncate(r.fd.get(), static_cast<off_t>(r.map_len)) != 0) Fail("memfd");
    // A region the table refuses (overlap, wrap) is simply not there.
    if (!guest.memory.add(d, r.fd.get())) continue;
    void* map = ::mmap(nullptr, r.map_len, PROT_READ | PROT_WRITE, MAP_SHARED, r.fd.get(), 0);
    if (map == MAP_FAILED) Fail("mmap of the driver's view");
    r.driver_map = static_cast<uint8_t*>(map);
    GuestMemory::Piece piece = guest.memory.guest_piece(d.guest_phys_addr, 1);
    if (piece.host == nullptr) Fail("added region does not translate", d.guest_phys_addr);
    r.device = piece.host;
    // The device may touch [device, device + memory_size) and nothing else of its mapping.
    uint8_t* device_map = r.device - d.mmap_offset;
    ASAN_POISON_MEMORY_REGION(device_map, d.mmap_offset);
    ASAN_POISON_MEMORY_REGION(r.device + d.memory_size, r.map_len - d.mmap_offset - d.memory_size);
    guest.regions.push_back(std::move(r));
  }
}

// A ring's frontend-virtual address: inside region `sel` (offset modulo its size + 1) or raw.
uint64_t RingAddress(Input& in, const Guest& guest) {
  uint8_t sel = in.u8();
  uint64_t offset = in.u64();
  if (sel < guest.regions.size()) {
    const RegionDesc& d = guest.regions[sel].desc;
    return d.userspace_addr + offset % (d.memory_size + 1);
  }
  return offset;
}

uint64_t BufferAddress(Input& in, const Guest& guest) {
  uint8_t sel = in.u8();
  uint64_t offset = in.u64();
  if (sel < guest.regions.size()) {
    const RegionDesc& d = guest.regions[sel].desc;
    return d.guest_phys_addr + offset % (d.memory_size + 1);
  }
  return offset;
}

class Harness {
 public:
  Harness(Guest& guest, uint32_t size, bool serve) : guest_(guest), size_(size) {
    if (serve) {
      server_.emplace(fake_);
      NullChannel channel;
      fuse_init_in init{};
      init.major = 7;
      init.minor = 38;
      init.max_readahead = 128 * 1024;
      init.flags = FUSE_ASYNC_READ | FUSE_MAX_PAGES | FUSE_INIT_EXT;
      server_->handle(svfs::testing::RequestBuilder(FUSE_INIT, 0, 1).add(init).build(), nullptr,
                      channel);
      if (!server_->initialized()) Fail("INIT failed");
    }
  }

  Virtqueue vq;
  uint8_t* driver_desc = nullptr;
  uint16_t* driver_avail = nullptr;
  uint16_t* driver_used = nullptr;
  bool broken = false;
  std::vector<Chain> held;

  // Pops one chain; serves and pushes it unless `hold`. False once the queue is empty or broken.
  bool pop(bool hold) {
    if (broken || pops_ >= kMaxPops) return false;
    ++pops_;
    Chain chain;
    switch (vq.pop(chain)) {
      case Virtqueue::Pop::kEmpty: return false;
      case Virtqueue::Pop::kBroken:
        if (vq.broken_reason().empty()) Fail("broken queue without a reason");
        spdlog::debug("fuzz: queue broken: {}", vq.broken_reason());
        broken = true;  // the queue thread stops here
        return false;
      case Virtqueue::Pop::kChain: break;
    }
    check(chain);
    if (hold) {
      held.push_back(std::move(chain));
      return true;
    }
    serve(chain);
    return true;
  }

  void push(uint16_t head, uint32_t len) {
    uint16_t before = vq.used_idx();
    vq.push(head, len);
    if (vq.used_idx() != static_cast<uint16_t>(before + 1)) Fail("push did not advance used idx");
    // Where the driver reads it (the guest may have written over these since; it has not yet).
    const uint8_t* entry = reinterpret_cast<const uint8_t*>(driver_used) + 4 + 8 * (before % size_);
    uint32_t id, got_len;
    std::memcpy(&id, entry, 4);
    std::memcpy(&got_len, entry + 4, 4);
    uint16_t idx;
    std::memcpy(&idx, reinterpret_cast<const uint8_t*>(driver_used) + 2, 2);
    if (id != head || got_len != len || idx != vq.used_idx()) Fail("used entry not where the driver reads it", id, head);
  }

 private:
  // A ReplyChannel for INIT's reply, which is not looked at.
  class NullChannel final : public svfs::fuse::ReplyChannel {
   public:
    bool send(std::span<const iovec>) override { return true; }
    svfs::fs::ReadSink& data_sink(size_t) override { Fail("INIT read"); }
    void send_data(const fuse_out_header&) override { Fail("INIT data"); }
  };

  // `bytes` is the chain's count; a malformed chain (`complete` false) may also hold the valid
  // pieces of the descriptor that failed, which it does not count.
  void check_iovecs(const std::vector<iovec>& iov, size_t bytes, bool writable, bool complete) {
    if (iov.size() > kMaxSegments) Fail("more segments than kMaxSegments", iov.size());
    size_t total = 0;
    for (const iovec& v : iov) {
      const auto* base = static_cast<const uint8_t*>(v.iov_base);
      if (base == nullptr) {  // outside guest memory: Chain::outside names it
        if (v.iov_len == 0) Fail("empty outside iovec");
        total += v.iov_len;
        continue;
      }
      bool inside = false;
      for (const Region& r : guest_.regions) {
        if (base >= r.device && v.iov_len <= r.desc.memory_size &&
            static_cast<size_t>(base - r.device) <= r.desc.memory_size - v.iov_len) {
          inside = true;
          break;
        }
      }
      if (!inside) Fail(writable ? "writable iovec outside guest memory" : "readable iovec outside guest memory",
                        reinterpret_cast<uintptr_t>(base), v.iov_len);
      if (v.iov_len == 0) Fail("empty iovec");
      // No iovec may reach a poisoned edge of a mapping (checked on ASan's shadow, not by
      // touching each byte: a chain may cover gigabytes).
      if (__asan_region_is_poisoned(const_cast<uint8_t*>(base), v.iov_len) != nullptr) {
        Fail("iovec reaches outside its region", reinterpret_cast<uintptr_t>(base), v.iov_len);
      }
      total += v.iov_len;
    }
    if (complete ? total != bytes : total < bytes) Fail("iovec lengths do not add up to the chain's bytes", total, bytes);
  }

  void check(const Chain& chain) {
    if (chain.head >= size_) Fail("head outside the queue", chain.head, size_);
    check_iovecs(chain.readable, chain.readable_bytes, false, chain.error.empty());
    check_iovecs(chain.writable, chain.writable_bytes, true, chain.error.empty());
    size_t nulls = 0;
    for (const auto* side : {&chain.readable, &chain.writable}) {
      for (const iovec& v : *side) nulls += v.iov_base == nullptr;
    }
    if (nulls != chain.outside.size()) Fail("outside iovecs not listed", nulls, chain.outside.size());
    for (const auto& b : chain.outside) {
      const auto& side = b.writable ? chain.writable : chain.readable;
      if (b.segment >= side.size() || side[b.segment].iov_base != nullptr) Fail("outside entry misplaced", b.segment);
    }
    if (chain.readable_bytes + chain.writable_bytes > std::numeric_limits<uint32_t>::max()) {
      Fail("chain longer than 32 bits", chain.readable_bytes, chain.writable_bytes);
    }
  }

  // QueueRunner's ServeCopy, on this thread.
  void serve(const Chain& chain) {
    // One buffer for every input (as a queue thread has): a fresh megabyte each time costs more
    // than the rest of the run.
    static std::vector<uint8_t> request_buffer(svfs::protocol::kMaxRequestSize);
    // Every other chain as on a device with a DAX window: buffers outside guest memory may
    // carry READ data or WRITE payload, moved by a VMM that answers anything plausible.
    WindowIo* window_io = chain.head % 2 ? &window_io_ : nullptr;
    const CopiedRequest copy = CopyRequest(1, chain, request_buffer, window_io != nullptr);
    if (copy.bytes.size() > request_buffer.size() ||
        (!copy.refused && copy.bytes.size() > chain.readable_bytes)) {
      Fail("request copy larger than the chain", copy.bytes.size(), chain.readable_bytes);
    }
    if (copy.external_payload && copy.bytes.size() + copy.payload != chain.readable_bytes) {
      Fail("WRITE payload does not end with the chain", copy.bytes.size() + copy.payload,
           chain.readable_bytes);
    }
    size_t written = 0;
    if (server_) {
      written = ServeChain(*server_, nullptr, window_io, chain, copy, payload_,
                           svfs::fuse::Server::Clock::now())
                    .written;
    } else {
      ChainReplyChannel channel(chain, copy.unique);
      if (copy.has_header) channel.send_error(copy.refused ? EIO : ENOSYS);
      written = channel.written();
    }
    if (written > chain.writable_bytes) {
      Fail("reply longer than the chain's writable bytes", written, chain.writable_bytes);
    }
    spdlog::debug("fuzz: chain {}: {} readable, {} writable bytes, error '{}', {} bytes replied",
                  chain.head, chain.readable_bytes, chain.writable_bytes, chain.error,
                  written);
    push(chain.head, static_cast<uint32_t>(written));
  }

  // Touches nothing: answers all, part, an error or (a bad VMM) too much, in turn.
  class FuzzWindowIo final : public WindowIo {
   public:
    svfs::Result<size_t> transfer(int, uint64_t, uint64_t, uint64_t length, Direction) override {
      switch (calls_++ % 4) {
        case 0: return static_cast<size_t>(length);
        case 1: return static_cast<size_t>(length / 2);
        case 2: return svfs::Err(EFAULT);
        default: return static_cast<size_t>(length + 1);
      }
    }

   private:
    unsigned calls_ = 0;
  };

  Guest& guest_;
  FuzzWindowIo window_io_;
  uint32_t size_;
  svfs::testing::FakeFileSystem fake_;
  std::optional<svfs::fuse::Server> server_;
  std::vector<iovec> payload_;
  size_t pops_ = 0;
};

void RunOps(Input& in, Guest& guest, Harness& h, uint32_t size) {
  for (size_t n = 0; n < kMaxOps && !in.empty() && !h.broken; ++n) {
    switch (in.u8() % kOpCount) {
      case kWriteBytes: {
        uint8_t sel = in.u8();
        uint32_t offset = in.u32();
        uint16_t len = in.u16();
        auto bytes = in.bytes(len);
        if (guest.regions.empty()) break;
        const Region& r = guest.regions[sel % guest.regions.size()];
        offset %= r.desc.memory_size;
        size_t n_copy = std::min<size_t>(bytes.size(), r.desc.memory_size - offset);
        std::memcpy(r.driver() + offset, bytes.data(), n_copy);
        break;
      }
      case kWriteDesc: {
        uint16_t index = in.u16() % size;
        VringDesc d;
        d.addr = BufferAddress(in, guest);
        d.len = in.u32();
        d.flags = in.u16();
        d.next = in.u16();
        if (h.driver_desc) std::memcpy(h.driver_desc + 16 * index, &d, sizeof(d));
        break;
      }
      case kPost: {
        uint16_t head = in.u16();
        if (!h.driver_avail) break;
        uint16_t idx;
        std::memcpy(&idx, &h.driver_avail[1], 2);
        std::memcpy(&h.driver_avail[2 + idx % size], &head, 2);
        ++idx;
        std::memcpy(&h.driver_avail[1], &idx, 2);
        break;
      }
      case kJumpAvail: {
        uint16_t delta = in.u16();
        if (!h.driver_avail) break;
        uint16_t idx;
        std::memcpy(&idx, &h.driver_avail[1], 2);
        idx = static_cast<uint16_t>(idx + delta);
        std::memcpy(&h.driver_avail[1], &idx, 2);
        break;
      }
      case kPopServe: h.pop(false); break;
      case kPopHold: h.pop(true); break;
      case kPushHeld:
        for (const Chain& chain : h.held) h.push(chain.head, 0);
        h.held.clear();
        break;
      case kNotify: {
        uint8_t which = in.u8() % 5;
        if (which == 0) h.vq.suppress_kicks();
        if (which == 1) (void)h.vq.enable_kicks();
        if (which == 2) (void)h.vq.should_notify();
        if (which == 3) (void)h.vq.has_available();
        if (which == 4) (void)h.vq.available();
        break;
      }
    }
  }
  // The queue thread drains the ring; then every chain completes (a stop waits for them).
  while (h.pop(false)) {
  }
  for (const Chain& chain : h.held) h.push(chain.head, 0);
  h.held.clear();
}

// ---- seed corpus ----

constexpr uint64_t kGpa = 0x100000;
constexpr uint64_t kUva = 0x7f0000000000;
constexpr uint32_t kSeedRegion = 64 * 1024;
constexpr uint64_t kDescOff = 0x0, kAvailOff = 0x1000, kUsedOff = 0x2000, kIndirectOff = 0x3000;
constexpr uint64_t kBufOff = 0x8000, kReplyOff = 0xc000;

struct SeedLayout {
  uint8_t flags = 2;
  uint8_t log2_size = 3;
  std::vector<RegionDesc> regions = {{kGpa, kSeedRegion, kUva, 0}};
  uint8_t placement = 0;
};

InputBuilder Header(const SeedLayout& s) {
  InputBuilder b;
  b.u8(s.flags).u8(s.log2_size).u8(static_cast<uint8_t>(s.regions.size() - 1));
  for (const RegionDesc& d : s.regions) {
    b.u8(s.placement).u64(d.guest_phys_addr).u32(static_cast<uint32_t>(d.memory_size - 1));
    b.u64(d.userspace_addr).u8(static_cast<uint8_t>(d.mmap_offset / kPage));
  }
  b.u8(0).u64(kDescOff).u8(0).u64(kAvailOff).u8(0).u64(kUsedOff);
  b.u16(0);  // last_avail
  return b;
}

void WriteBytes(InputBuilder& b, uint8_t region, uint32_t offset, const std::vector<uint8_t>& bytes) {
  b.u8(kWriteBytes).u8(region).u32(offset).u16(static_cast<uint16_t>(bytes.size())).raw(bytes);
}
void WriteDesc(InputBuilder& b, uint16_t index, uint8_t region, uint64_t offset, uint32_t len,
               uint16_t flags, uint16_t next = 0) {
  b.u8(kWriteDesc).u16(index).u8(region).u64(offset).u32(len).u16(flags).u16(next);
}
void WriteIndirect(InputBuilder& b, uint32_t table_off, uint16_t i, const VringDesc& d) {
  std::vector<uint8_t> bytes(sizeof(d));
  std::memcpy(bytes.data(), &d, sizeof(d));
  WriteBytes(b, 0, table_off + 16 * i, bytes);
}

std::vector<uint8_t> Lookup(uint64_t unique) {
  return svfs::testing::RequestBuilder(FUSE_LOOKUP, 1, unique).name("file").build();
}

void MakeSeeds(const char* dir) {
  std::vector<std::pair<std::string, std::vector<uint8_t>>> seeds;
  auto lookup = Lookup(2);
  const uint32_t lookup_len = static_cast<uint32_t>(lookup.size());
  {  // one LOOKUP: a readable and a writable descriptor
    InputBuilder b = Header({});
    WriteBytes(b, 0, kBufOff, lookup);
    WriteDesc(b, 0, 0, kBufOff, lookup_len, kDescNext, 1);
    WriteDesc(b, 1, 0, kReplyOff, 4096, kDescWrite);
    b.u8(kPost).u16(0).u8(kPopServe);
    seeds.emplace_back("lookup", b.bytes());
  }
  {  // the same through an indirect table
    InputBuilder b = Header({});
    WriteBytes(b, 0, kBufOff, lookup);
    WriteIndirect(b, kIndirectOff, 0, {kGpa + kBufOff, lookup_len, kDescNext, 1});
    WriteIndirect(b, kIndirectOff, 1, {kGpa + kReplyOff, 4096, kDescWrite, 0});
    WriteDesc(b, 2, 0, kIndirectOff, 32, kDescIndirect);
    b.u8(kPost).u16(2).u8(kPopServe);
    seeds.emplace_back("indirect", b.bytes());
  }
  {  // EVENT_IDX, three chains, notification calls between them
    SeedLayout s;
    s.flags = 3;
    InputBuilder b = Header(s);
    for (uint16_t i = 0; i < 3; ++i) {
      auto req = Lookup(10 + i);
      WriteBytes(b, 0, kBufOff + 0x100 * i, req);
      WriteDesc(b, 2 * i, 0, kBufOff + 0x100 * i, static_cast<uint32_t>(req.size()), kDescNext, 2 * i + 1);
      WriteDesc(b, 2 * i + 1, 0, kReplyOff + 0x400 * i, 0x400, kDescWrite);
      b.u8(kPost).u16(2 * i);
    }
    b.u8(kNotify).u8(0).u8(kPopServe).u8(kNotify).u8(2).u8(kPopHold).u8(kNotify).u8(1);
    b.u8(kPushHeld).u8(kPopServe).u8(kNotify).u8(2);
    seeds.emplace_back("event_idx", b.bytes());
  }
  {  // WRITE whose payload crosses into an adjacent region
    SeedLayout s;
    s.regions = {{kGpa, kSeedRegion, kUva, 0}, {kGpa + kSeedRegion, kSeedRegion, kUva + kSeedRegion, kPage}};
    s.placement = 3;
    InputBuilder b = Header(s);
    std::string data(64, 'x');
    auto write = svfs::testing::RequestBuilder(FUSE_WRITE, 1, 3)
                     .add(fuse_write_in{.fh = 1, .size = 64})
                     .raw(data)
                     .build();
    uint32_t at = kSeedRegion - 40;  // the headers end in region 0, the data is in region 1
    std::vector<uint8_t> first(write.begin(), write.begin() + 40);
    std::vector<uint8_t> rest(write.begin() + 40, write.end());
    WriteBytes(b, 0, at, first);
    WriteBytes(b, 1, 0, rest);
    WriteDesc(b, 0, 0, at, static_cast<uint32_t>(write.size()), kDescNext, 1);
    WriteDesc(b, 1, 0, kReplyOff, 64, kDescWrite);
    b.u8(kPost).u16(0).u8(kPopServe);
    seeds.emplace_back("write_across_regions", b.bytes());
  }
  {  // hostile: a loop, a head posted twice while held, a buffer outside memory
    InputBuilder b = Header({});
    WriteDesc(b, 0, 0, kBufOff, 16, kDescNext, 0);
    WriteDesc(b, 1, 9, 0xdead0000, 4096, 0);
    b.u8(kPost).u16(0).u8(kPost).u16(1).u8(kPopServe).u8(kPopServe);
    b.u8(kPost).u16(1).u8(kPopHold).u8(kPost).u16(1).u8(kPopServe);
    seeds.emplace_back("hostile", b.bytes());
  }
  svfs::fuzz::WriteSeeds(kTarget, dir, seeds);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  svfs::fuzz::QuietLogs();
  if (const char* dir = std::getenv("SVFS_FUZZ_SEED_DIR")) MakeSeeds(dir);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Input in(data, size);
  const uint8_t flags = in.u8();
  const uint32_t queue_size = 1u << (in.u8() % 16);
  Guest guest;
  AddRegions(in, guest);
  const uint64_t desc = RingAddress(in, guest);
  const uint64_t avail = RingAddress(in, guest);
  const uint64_t used = RingAddress(in, guest);
  const uint16_t last_avail = in.u16();

  Harness h(guest, queue_size, flags & 2);
  if (!h.vq.set_size(queue_size)) Fail("power-of-two size refused", queue_size);
  h.vq.set_addresses(desc, avail, used);
  h.vq.set_base(last_avail);
  h.vq.set_event_idx(flags & 1);
  const bool inside = h.vq.rings_inside(guest.memory);
  const bool mapped = h.vq.map(guest.memory);
  // The oracle: each ring inside one region, aligned as an address and in the device's mapping.
  const size_t desc_bytes = 16 * size_t{queue_size};
  const size_t avail_bytes = 6 + 2 * size_t{queue_size};
  const size_t used_bytes = 6 + 8 * size_t{queue_size};
  auto aligned_in_device = [&](uint64_t uva, size_t len, uintptr_t align) {
    const Region* r = guest.holding(uva, len, true);
    return uva % align == 0 && r != nullptr &&
           reinterpret_cast<uintptr_t>(r->device + (uva - r->desc.userspace_addr)) % align == 0;
  };
  const bool expected = aligned_in_device(desc, desc_bytes, 16) &&
                        aligned_in_device(avail, avail_bytes, 2) &&
                        aligned_in_device(used, used_bytes, 4);
  if (mapped != expected || inside != expected) Fail("map() disagrees with the layout", mapped, expected);
  if (mapped) {
    h.driver_desc = guest.driver_at(desc, desc_bytes);
    h.driver_avail = reinterpret_cast<uint16_t*>(guest.driver_at(avail, avail_bytes));
    h.driver_used = reinterpret_cast<uint16_t*>(guest.driver_at(used, used_bytes));
  }
  RunOps(in, guest, h, queue_size);
  return 0;
}
