// libFuzzer harness for the FUSE dispatch layer: arbitrary request bytes go through
// svfs::fuse::Server::handle against the recording fake filesystem, after a valid INIT. Every
// reply is checked: its header length must equal the bytes sent and be at least a header, an
// error reply must be a bare header, and the unique id must be the request's; every request gets
// exactly one reply, except FORGET, BATCH_FORGET, INTERRUPT, NOTIFY_REPLY and header-less ones.
//
// Input format: a sequence of frames, each `u16 length (LE) | u8 mode | length bytes`, handled
// in order on one session (so INIT/DESTROY/INTERRUPT sequences are reachable). Mode bits:
//   1: pass the bytes after header + fuse_write_in (80) as an external WRITE payload
//   2: patch fuse_in_header.len to the true length (reaches the decoders more often)
//   4: the reply is not delivered (send() returns false, as for a guest buffer too small), so
//      the server's undo of references and handles runs
//
// With SVFS_FUZZ_SEED_DIR set, LLVMFuzzerInitialize writes a seed corpus of valid requests
// (one per implemented opcode) into that directory before fuzzing starts.
#include <fcntl.h>
#include <linux/fuse.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "daemon/fuse/request_class.h"
#include "daemon/fuse/server.h"
#include "tests/unit/fake_filesystem.h"
#include "tests/unit/recording_dax_mapper.h"
#include "tests/unit/request_builder.h"

namespace {

using svfs::testing::FakeFileSystem;
using svfs::testing::RequestBuilder;

constexpr size_t kFrameHeader = 3;
constexpr size_t kMaxFrames = 32;
constexpr size_t kWriteArgsEnd = sizeof(fuse_in_header) + sizeof(fuse_write_in);

[[noreturn]] void Fail(const char* what, uint64_t a, uint64_t b) {
  std::fprintf(stderr, "fuse_server_fuzzer: %s (%llu vs %llu)\n", what,
               static_cast<unsigned long long>(a), static_cast<unsigned long long>(b));
  std::abort();
}

// Checks every reply the server sends.
class CheckingChannel final : public svfs::fuse::ReplyChannel, public svfs::fs::ReadSink {
 public:
  explicit CheckingChannel(uint64_t unique, bool refuse = false)
      : unique_(unique), refuse_(refuse) {}
  size_t replies = 0;

  bool send(std::span<const iovec> parts) override {
    if (parts.empty()) Fail("reply without parts", 0, 0);
    if (parts[0].iov_len < sizeof(fuse_out_header)) {
      Fail("first part shorter than fuse_out_header", parts[0].iov_len, sizeof(fuse_out_header));
    }
    size_t total = 0;
    for (const iovec& part : parts) {
      if (part.iov_len && part.iov_base == nullptr) Fail("null part", part.iov_len, 0);
      total += part.iov_len;
      // Touch every byte so ASan sees reads of freed or out-of-bounds reply buffers.
      const volatile uint8_t* p = static_cast<const uint8_t*>(part.iov_base);
      uint8_t sum = 0;
      for (size_t i = 0; i < part.iov_len; ++i) sum ^= p[i];
      (void)sum;
    }
    fuse_out_header h;
    std::memcpy(&h, parts[0].iov_base, sizeof(h));
    check(h, total);
    return !refuse_;
  }

  svfs::fs::ReadSink& data_sink(size_t max_length) override {
    sink_max_ = max_length;
    sink_.clear();
    return *this;
  }

  void send_data(const fuse_out_header& header) override {
    if (header.len < sizeof(fuse_out_header)) Fail("data reply len < header", header.len, 16);
    if (header.len - sizeof(fuse_out_header) > sink_.size()) {
      Fail("data reply len beyond the sink's bytes", header.len, sink_.size());
    }
    if (header.len - sizeof(fuse_out_header) > sink_max_) {
      Fail("data reply longer than requested", header.len, sink_max_);
    }
    check(header, header.len);
  }

  svfs::Result<size_t> read_from(int fd, uint64_t offset, size_t length) override {
    if (length > sink_max_) Fail("read_from beyond the sink's capacity", length, sink_max_);
    sink_.resize(length);
    ssize_t n = ::pread(fd, sink_.data(), length, static_cast<off_t>(offset));
    if (n < 0) return svfs::ErrnoErr();
    sink_.resize(static_cast<size_t>(n));
    return static_cast<size_t>(n);
  }

 private:
  void check(const fuse_out_header& h, size_t total) {
    ++replies;
    if (replies > 1) Fail("more than one reply to a request", replies, 1);
    if (h.len != total) Fail("reply header len != bytes sent", h.len, total);
    if (h.len < sizeof(fuse_out_header)) Fail("reply shorter than header", h.len, 16);
    if (h.error > 0) Fail("positive error in reply", h.error, 0);
    if (h.error < 0 && h.len != sizeof(fuse_out_header)) {
      Fail("error reply with payload", h.len, sizeof(fuse_out_header));
    }
    if (h.unique != unique_) Fail("reply unique != request unique", h.unique, unique_);
  }

  uint64_t unique_;
  bool refuse_;
  size_t sink_max_ = 0;
  std::vector<uint8_t> sink_;
};

std::vector<uint8_t> InitRequest() {
  fuse_init_in in{};
  in.major = 7;
  in.minor = 38;
  in.max_readahead = 128 * 1024;
  in.flags = FUSE_ASYNC_READ | FUSE_POSIX_LOCKS | FUSE_DO_READDIRPLUS | FUSE_MAX_PAGES |
             FUSE_INIT_EXT | FUSE_MAP_ALIGNMENT;
  return RequestBuilder(FUSE_INIT, 0, 1).add(in).build();
}

void Handle(svfs::fuse::Server& server, svfs::fuse::DaxWindow& dax, std::span<const uint8_t> bytes,
            bool external, bool refuse) {
  uint64_t unique = 0;
  if (bytes.size() >= sizeof(fuse_in_header)) {
    std::memcpy(&unique, bytes.data() + offsetof(fuse_in_header, unique), sizeof(unique));
  }
  CheckingChannel channel(unique, refuse);
  if (external && bytes.size() > kWriteArgsEnd) {
    // Copy the payload out so ASan catches reads past the request part.
    std::string payload(reinterpret_cast<const char*>(bytes.data()) + kWriteArgsEnd,
                        bytes.size() - kWriteArgsEnd);
    std::vector<uint8_t> request(bytes.begin(), bytes.begin() + kWriteArgsEnd);
    svfs::fs::SpanWriteSource source(payload);  // `payload` outlives the call
    server.handle(request, &source, channel, nullptr, &dax);
  } else {
    // An exact-size heap copy, so reads past the end are caught.
    std::vector<uint8_t> request(bytes.begin(), bytes.end());
    server.handle(request, nullptr, channel, nullptr, &dax);
  }
  // Exactly one reply per request, except: none without a header, none for the opcodes the
  // kernel expects no reply to.
  size_t expected = 1;
  if (bytes.size() < sizeof(fuse_in_header)) {
    expected = 0;
  } else {
    uint32_t opcode;
    std::memcpy(&opcode, bytes.data() + offsetof(fuse_in_header, opcode), sizeof(opcode));
    if (opcode == FUSE_FORGET || opcode == FUSE_BATCH_FORGET || opcode == FUSE_INTERRUPT ||
        opcode == FUSE_NOTIFY_REPLY) {
      expected = 0;
    }
  }
  if (channel.replies != expected) Fail("wrong number of replies", channel.replies, expected);
}

// ---- seed corpus ----

void AppendFrame(std::vector<uint8_t>& out, const std::vector<uint8_t>& request, uint8_t mode) {
  uint16_t len = static_cast<uint16_t>(request.size());
  out.push_back(static_cast<uint8_t>(len & 0xff));
  out.push_back(static_cast<uint8_t>(len >> 8));
  out.push_back(mode);
  out.insert(out.end(), request.begin(), request.end());
}

void WriteSeeds(const char* dir) {
  std::vector<std::pair<std::string, std::vector<uint8_t>>> seeds;
  auto add = [&](const char* name, const RequestBuilder& b, uint8_t mode = 0) {
    std::vector<uint8_t> frame;
    AppendFrame(frame, b.build(), mode);
    seeds.emplace_back(name, std::move(frame));
  };
  const uint64_t node = 1;
  add("lookup", RequestBuilder(FUSE_LOOKUP, node, 2).name("file"));
  add("forget", RequestBuilder(FUSE_FORGET, node, 3).add(fuse_forget_in{.nlookup = 1}));
  add("batch_forget", RequestBuilder(FUSE_BATCH_FORGET, 0, 4)
                          .add(fuse_batch_forget_in{.count = 2})
                          .add(fuse_forget_one{.nodeid = 2, .nlookup = 1})
                          .add(fuse_forget_one{.nodeid = 3, .nlookup = 1}));
  add("getattr", RequestBuilder(FUSE_GETATTR, node, 5)
                     .add(fuse_getattr_in{.getattr_flags = FUSE_GETATTR_FH, .fh = 1}));
  fuse_setattr_in setattr{};
  setattr.valid = FATTR_MODE | FATTR_SIZE | FATTR_ATIME | FATTR_MTIME_NOW | FATTR_MTIME;
  setattr.mode = 0644;
  setattr.size = 10;
  add("setattr", RequestBuilder(FUSE_SETATTR, node, 6).add(setattr));
  add("readlink", RequestBuilder(FUSE_READLINK, node, 7));
  add("symlink", RequestBuilder(FUSE_SYMLINK, node, 8).name("link").name("target"));
  add("mknod", RequestBuilder(FUSE_MKNOD, node, 9)
                   .add(fuse_mknod_in{.mode = S_IFIFO | 0644, .umask = 022})
                   .name("fifo"));
  add("mkdir", RequestBuilder(FUSE_MKDIR, node, 10).add(fuse_mkdir_in{.mode = 0755}).name("d"));
  add("unlink", RequestBuilder(FUSE_UNLINK, node, 11).name("file"));
  add("rmdir", RequestBuilder(FUSE_RMDIR, node, 12).name("d"));
  add("rename", RequestBuilder(FUSE_RENAME, node, 13)
                    .add(fuse_rename_in{.newdir = 1})
                    .name("a")
                    .name("b"));
  add("rename2", RequestBuilder(FUSE_RENAME2, node, 14)
                     .add(fuse_rename2_in{.newdir = 1, .flags = 1})
                     .name("a")
                     .name("b"));
  add("link", RequestBuilder(FUSE_LINK, node, 15).add(fuse_link_in{.oldnodeid = 2}).name("h"));
  add("open", RequestBuilder(FUSE_OPEN, node, 16).add(fuse_open_in{.flags = O_RDWR}));
  add("create", RequestBuilder(FUSE_CREATE, node, 17)
                    .add(fuse_create_in{.flags = O_RDWR | O_CREAT, .mode = S_IFREG | 0644})
                    .name("new"));
  add("tmpfile", RequestBuilder(FUSE_TMPFILE, node, 18)
                     .add(fuse_create_in{.flags = O_RDWR, .mode = S_IFREG | 0600})
                     .name("/"));
  add("read", RequestBuilder(FUSE_READ, node, 19).add(fuse_read_in{.fh = 1, .size = 4096}));
  add("write", RequestBuilder(FUSE_WRITE, node, 20)
                   .add(fuse_write_in{.fh = 1, .size = 5})
                   .raw("hello"), 2);
  add("write_external", RequestBuilder(FUSE_WRITE, node, 21)
                            .add(fuse_write_in{.fh = 1, .size = 5})
                            .raw("hello"), 3);
  add("statfs", RequestBuilder(FUSE_STATFS, node, 22));
  add("release", RequestBuilder(FUSE_RELEASE, node, 23).add(fuse_release_in{.fh = 1}));
  add("releasedir", RequestBuilder(FUSE_RELEASEDIR, node, 24).add(fuse_release_in{.fh = 1}));
  add("flush", RequestBuilder(FUSE_FLUSH, node, 25).add(fuse_flush_in{.fh = 1}));
  add("fsync", RequestBuilder(FUSE_FSYNC, node, 26).add(fuse_fsync_in{.fh = 1, .fsync_flags = 1}));
  add("fsyncdir", RequestBuilder(FUSE_FSYNCDIR, node, 27).add(fuse_fsync_in{.fh = 1}));
  fuse_setxattr_in sx{};
  sx.size = 3;
  add("setxattr", RequestBuilder(FUSE_SETXATTR, node, 28)
                      .add_prefix(sx, FUSE_COMPAT_SETXATTR_IN_SIZE)
                      .name("user.x")
                      .raw("abc"));
  add("getxattr", RequestBuilder(FUSE_GETXATTR, node, 29)
                      .add(fuse_getxattr_in{.size = 64})
                      .name("user.x"));
  add("getxattr_size", RequestBuilder(FUSE_GETXATTR, node, 30)
                           .add(fuse_getxattr_in{.size = 0})
                           .name("user.x"));
  add("listxattr", RequestBuilder(FUSE_LISTXATTR, node, 31).add(fuse_getxattr_in{.size = 64}));
  add("removexattr", RequestBuilder(FUSE_REMOVEXATTR, node, 32).name("user.x"));
  add("opendir", RequestBuilder(FUSE_OPENDIR, node, 33).add(fuse_open_in{}));
  add("readdir", RequestBuilder(FUSE_READDIR, node, 34).add(fuse_read_in{.fh = 1, .size = 4096}));
  add("readdirplus",
      RequestBuilder(FUSE_READDIRPLUS, node, 35).add(fuse_read_in{.fh = 1, .size = 4096}));
  add("access", RequestBuilder(FUSE_ACCESS, node, 36).add(fuse_access_in{.mask = 4}));
  fuse_lk_in lk{};
  lk.fh = 1;
  lk.owner = 9;
  lk.lk.end = 100;
  lk.lk.type = F_WRLCK;
  add("getlk", RequestBuilder(FUSE_GETLK, node, 37).add(lk));
  add("setlk", RequestBuilder(FUSE_SETLK, node, 38).add(lk));
  add("setlkw", RequestBuilder(FUSE_SETLKW, node, 39).add(lk));
  add("interrupt", RequestBuilder(FUSE_INTERRUPT, 0, 40).add(fuse_interrupt_in{.unique = 39}));
  add("fallocate", RequestBuilder(FUSE_FALLOCATE, node, 41)
                       .add(fuse_fallocate_in{.fh = 1, .length = 4096}));
  add("lseek", RequestBuilder(FUSE_LSEEK, node, 42).add(fuse_lseek_in{.fh = 1, .whence = 3}));
  add("copy_file_range", RequestBuilder(FUSE_COPY_FILE_RANGE, node, 43)
                             .add(fuse_copy_file_range_in{.fh_in = 1, .nodeid_out = 2, .len = 9}));
  add("syncfs", RequestBuilder(FUSE_SYNCFS, node, 44).add(fuse_syncfs_in{}));
  add("setupmapping", RequestBuilder(FUSE_SETUPMAPPING, node, 47)
                          .add(fuse_setupmapping_in{.fh = ~uint64_t{0}, .len = 2u << 20,
                                                    .flags = FUSE_SETUPMAPPING_FLAG_READ}));
  add("removemapping", RequestBuilder(FUSE_REMOVEMAPPING, node, 48)
                           .add(fuse_removemapping_in{.count = 1})
                           .add(fuse_removemapping_one{.moffset = 0, .len = 2u << 20}));
  add("destroy", RequestBuilder(FUSE_DESTROY, 0, 45));
  fuse_init_in init{};
  init.major = 7;
  init.minor = 31;
  add("init_again", RequestBuilder(FUSE_INIT, 0, 46).add_prefix(init, 16));

  // A session: destroy, re-init, lookup.
  std::vector<uint8_t> session;
  AppendFrame(session, RequestBuilder(FUSE_DESTROY, 0, 50).build(), 0);
  AppendFrame(session, RequestBuilder(FUSE_INIT, 0, 51).add_prefix(init, 16).build(), 0);
  AppendFrame(session, RequestBuilder(FUSE_LOOKUP, 1, 52).name("x").build(), 0);
  seeds.emplace_back("session", std::move(session));

  for (const auto& [name, bytes] : seeds) {
    std::ofstream f(std::string(dir) + "/seed-" + name, std::ios::binary);
    f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  }
  std::fprintf(stderr, "fuse_server_fuzzer: wrote %zu seeds to %s\n", seeds.size(), dir);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Log through a sink that discards: messages are still formatted (that code sees fuzzed
  // header fields), but the fuzzer's output stays readable.
  auto logger = std::make_shared<spdlog::logger>("fuzz", std::make_shared<spdlog::sinks::null_sink_mt>());
  logger->set_level(spdlog::level::trace);
  spdlog::set_default_logger(logger);
  if (const char* dir = std::getenv("SVFS_FUZZ_SEED_DIR")) WriteSeeds(dir);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FakeFileSystem fake;
  svfs::fuse::Server server(fake);
  // SETUPMAPPING/REMOVEMAPPING reach a window of 64 MiB (the VMM side records and accepts).
  svfs::testing::RecordingDaxMapper mapper;
  svfs::fuse::DaxWindow dax(64u << 20, mapper);
  {
    CheckingChannel channel(1);
    server.handle(InitRequest(), nullptr, channel, nullptr, &dax);
    if (!server.initialized() || channel.replies != 1) Fail("INIT failed", 0, 0);
  }
  size_t pos = 0;
  for (size_t frames = 0; frames < kMaxFrames && size - pos >= kFrameHeader; ++frames) {
    size_t len = data[pos] | (static_cast<size_t>(data[pos + 1]) << 8);
    uint8_t mode = data[pos + 2];
    pos += kFrameHeader;
    len = std::min(len, size - pos);
    std::vector<uint8_t> bytes(data + pos, data + pos + len);
    pos += len;
    if ((mode & 2) && bytes.size() >= sizeof(fuse_in_header)) {
      uint32_t true_len = static_cast<uint32_t>(bytes.size());
      std::memcpy(bytes.data() + offsetof(fuse_in_header, len), &true_len, sizeof(true_len));
    }
    (void)svfs::fuse::Classify(bytes);  // what the vhost-user transport does with each copy
    Handle(server, dax, bytes, mode & 1, mode & 4);
  }
  return 0;
}
