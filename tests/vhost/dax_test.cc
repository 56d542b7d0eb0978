// DAX through svfsd and our frontend.

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/files.h"
#include "tests/support/process.h"
#include "tests/support/wait.h"
#include "tests/vhost/frontend.h"
#include "tests/vhost/fuse_client.h"
#include "tests/vhost/backend_session.h"

namespace svfs::vhost {
namespace {

// ---- DAX: svfsd --dax-window-size with our frontend playing a DAX-capable VMM (its window is
// DaxWindowHost: the file fds svfsd passes on the backend channel are mmapped into it).

constexpr std::size_t kDaxWindow = 8u << 20;
constexpr std::uint64_t kDaxPage = 4096;
constexpr std::uint64_t kNoHandle = ~std::uint64_t{0};  // what Linux's fs/fuse/dax.c sends

std::unique_ptr<Session> DaxSession(const TempDir& tmp) {
  FrontendOptions opts;
  opts.memory_size = 16u << 20;
  opts.request_queues = 1;
  opts.dax_window_size = kDaxWindow;
  auto s = std::make_unique<Session>(Backend::kSvfsd, tmp, opts,
                                     std::vector<std::string>{"--dax-window-size", std::to_string(kDaxWindow)});
  const FuseReply init = s->client().init(38, FUSE_ASYNC_READ | FUSE_MAX_PAGES | FUSE_INIT_EXT |
                                                  FUSE_MAP_ALIGNMENT);
  if (init.error() != 0) throw std::runtime_error("INIT failed");
  return s;
}

FuseReply SetupMapping(FuseClient& c, std::uint64_t node, std::uint64_t fh, std::uint64_t foffset,
                       std::uint64_t moffset, std::uint64_t len, std::uint64_t flags) {
  fuse_setupmapping_in in{};
  in.fh = fh;
  in.foffset = foffset;
  in.len = len;
  in.flags = flags;
  in.moffset = moffset;
  return c.send(c.make(FUSE_SETUPMAPPING, node, {Bytes(in)}, 4096));
}

FuseReply RemoveMapping(FuseClient& c, std::uint64_t node,
                        const std::vector<fuse_removemapping_one>& ranges,
                        std::optional<std::uint32_t> count = {}) {
  fuse_removemapping_in in{};
  in.count = count.value_or(static_cast<std::uint32_t>(ranges.size()));
  std::span<const std::uint8_t> body(reinterpret_cast<const std::uint8_t*>(ranges.data()),
                                     ranges.size() * sizeof(fuse_removemapping_one));
  return c.send(c.make(FUSE_REMOVEMAPPING, node, {Bytes(in), body}, 4096));
}

// A host file of `pages` pages of Pattern bytes, looked up: its node id.
std::uint64_t DaxFile(Session& s, const std::string& name, std::size_t pages, std::uint8_t seed) {
  const auto bytes = Pattern(pages * kDaxPage, seed);
  std::ofstream(s.shared() / name, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  auto entry = s.client().lookup(FUSE_ROOT_ID, name).as<fuse_entry_out>();
  if (!entry) throw std::runtime_error("LOOKUP " + name + " failed");
  return entry->nodeid;
}

std::vector<std::uint8_t> WindowBytes(DaxWindowHost& window, std::uint64_t offset, std::size_t n) {
  return std::vector<std::uint8_t>(window.at(offset), window.at(offset) + n);
}

// A svfsd with an 8 MiB window and our frontend as the VMM, INIT done.
class VhostSvfsdDaxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SVFS_REQUIRE_BACKEND(Backend::kSvfsd);
    s = DaxSession(tmp);
  }
  DaxWindowHost& Window() { return *s->fe().dax_window(); }

  TempDir tmp;
  std::unique_ptr<Session> s;
};

TEST(VhostSvfsdDaxStartTest, InitAgreesOnTheMapAlignmentOnlyWithAWindow) {
  SVFS_REQUIRE_BACKEND(Backend::kSvfsd);
  {
    TempDir tmp;
    FrontendOptions opts;
    opts.memory_size = 16u << 20;
    opts.dax_window_size = kDaxWindow;
    Session s(Backend::kSvfsd, tmp, opts, {"--dax-window-size", "8M"});
    auto out = s.client().init(38, FUSE_MAX_PAGES | FUSE_INIT_EXT | FUSE_MAP_ALIGNMENT)
                   .as<fuse_init_out>();
    ASSERT_TRUE(out);
    EXPECT_TRUE(out->flags & FUSE_MAP_ALIGNMENT);
    EXPECT_EQ(out->map_alignment, 12) << "log2 of the page size mappings are aligned to";
  }
  // Without a window: no alignment agreed, and SETUPMAPPING is ENOSYS.
  TempDir tmp;
  FrontendOptions opts;
  opts.memory_size = 16u << 20;
  Session plain(Backend::kSvfsd, tmp, opts);
  auto out = plain.client().init(38, FUSE_MAX_PAGES | FUSE_INIT_EXT | FUSE_MAP_ALIGNMENT)
                 .as<fuse_init_out>();
  ASSERT_TRUE(out);
  EXPECT_FALSE(out->flags & FUSE_MAP_ALIGNMENT);
  EXPECT_EQ(SetupMapping(plain.client(), FUSE_ROOT_ID, kNoHandle, 0, 0, kDaxPage,
                         FUSE_SETUPMAPPING_FLAG_READ)
                .error(),
            -ENOSYS);
}

TEST_F(VhostSvfsdDaxTest, AMappingShowsTheHostFileInTheWindowUntilRemoved) {
  FuseClient& c = s->client();
  DaxWindowHost& window = Window();
  const std::uint64_t node = DaxFile(*s, "data", 4, 3);
  const fs::path host = s->shared() / "data";

  // As Linux asks: no handle, readable, file pages 1..2 at 2 MiB into the window.
  const std::uint64_t at = 2u << 20;
  ASSERT_EQ(SetupMapping(c, node, kNoHandle, kDaxPage, at, 2 * kDaxPage,
                         FUSE_SETUPMAPPING_FLAG_READ)
                .error(),
            0);
  ASSERT_TRUE(window.mapped(at));
  const std::string contents = ReadFile(host);
  EXPECT_EQ(WindowBytes(window, at, 2 * kDaxPage),
            std::vector<std::uint8_t>(contents.begin() + kDaxPage,
                                      contents.begin() + 3 * kDaxPage));
  // MAP_SHARED: a host write is in the window at once, no invalidation needed.
  {
    std::fstream f(host, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(kDaxPage + 5);
    f.put(static_cast<char>(0xab));
  }
  EXPECT_EQ(*window.at(at + 5), 0xab);

  // A writable mapping through an O_RDWR handle: the guest's stores reach the host file.
  auto opened = c.open(node, O_RDWR).as<fuse_open_out>();
  ASSERT_TRUE(opened);
  ASSERT_EQ(SetupMapping(c, node, opened->fh, 0, 0, kDaxPage,
                         FUSE_SETUPMAPPING_FLAG_READ | FUSE_SETUPMAPPING_FLAG_WRITE)
                .error(),
            0);
  const_cast<std::uint8_t*>(window.at(0))[9] = 0x5a;
  EXPECT_EQ(static_cast<std::uint8_t>(ReadFile(host)[9]), 0x5a);

  // REMOVEMAPPING unmaps both (one request, two ranges).
  ASSERT_EQ(RemoveMapping(c, node, {{.moffset = at, .len = 2 * kDaxPage},
                                    {.moffset = 0, .len = kDaxPage}})
                .error(),
            0);
  EXPECT_FALSE(window.mapped(at));
  EXPECT_FALSE(window.mapped(0));
  EXPECT_EQ(c.release(node, opened->fh).error(), 0);
}

TEST_F(VhostSvfsdDaxTest, ANewMappingReplacesTheOneItOverlaps) {
  FuseClient& c = s->client();
  DaxWindowHost& window = Window();
  const std::uint64_t a = DaxFile(*s, "a", 2, 1);
  const std::uint64_t b = DaxFile(*s, "b", 2, 100);
  ASSERT_EQ(SetupMapping(c, a, kNoHandle, 0, 0, 2 * kDaxPage, FUSE_SETUPMAPPING_FLAG_READ).error(),
            0);
  ASSERT_EQ(SetupMapping(c, b, kNoHandle, 0, kDaxPage, 2 * kDaxPage, FUSE_SETUPMAPPING_FLAG_READ)
                .error(),
            0);
  const auto pa = Pattern(2 * kDaxPage, 1), pb = Pattern(2 * kDaxPage, 100);
  EXPECT_EQ(WindowBytes(window, 0, kDaxPage), std::vector<std::uint8_t>(pa.begin(), pa.begin() + kDaxPage));
  EXPECT_EQ(WindowBytes(window, kDaxPage, 2 * kDaxPage), pb);
}

TEST_F(VhostSvfsdDaxTest, HostileMappingsAreRefusedAndTheDaemonKeepsServing) {
  FuseClient& c = s->client();
  DaxWindowHost& window = Window();
  const std::uint64_t node = DaxFile(*s, "data", 2, 7);
  const auto read = FUSE_SETUPMAPPING_FLAG_READ;
  const auto rw = FUSE_SETUPMAPPING_FLAG_READ | FUSE_SETUPMAPPING_FLAG_WRITE;
  auto read_only = c.open(node, O_RDONLY).as<fuse_open_out>();
  auto dir = c.opendir(FUSE_ROOT_ID).as<fuse_open_out>();
  auto released = c.open(node, O_RDWR).as<fuse_open_out>();
  ASSERT_TRUE(read_only && dir && released);
  ASSERT_EQ(c.release(node, released->fh).error(), 0);
  struct Case {
    const char* what;
    std::uint64_t node, fh, foffset, moffset, len, flags;
    int error;
  } cases[] = {
      {"outside the window", node, kNoHandle, 0, kDaxWindow, kDaxPage, read, -EINVAL},
      {"past the window's end", node, kNoHandle, 0, kDaxWindow - kDaxPage, 2 * kDaxPage, read,
       -EINVAL},
      {"offset + length wraps", node, kNoHandle, 0, kDaxPage, ~std::uint64_t{0} - kDaxPage + 1,
       read, -EINVAL},
      {"unaligned window offset", node, kNoHandle, 0, 100, kDaxPage, read, -EINVAL},
      {"unaligned file offset", node, kNoHandle, 100, 0, kDaxPage, read, -EINVAL},
      {"empty", node, kNoHandle, 0, 0, 0, read, -EINVAL},
      {"neither read nor write", node, kNoHandle, 0, 0, kDaxPage, FUSE_SETUPMAPPING_FLAG_WRITE,
       -EINVAL},
      {"unknown flag", node, kNoHandle, 0, 0, kDaxPage, read | 4, -EINVAL},
      {"a directory handle", FUSE_ROOT_ID, dir->fh, 0, 0, kDaxPage, read, -EISDIR},
      {"a directory without handle", FUSE_ROOT_ID, kNoHandle, 0, 0, kDaxPage, read, -EISDIR},
      {"a released handle", node, released->fh, 0, 0, kDaxPage, read, -EBADF},
      {"another node's handle", FUSE_ROOT_ID, read_only->fh, 0, 0, kDaxPage, read, -EBADF},
      {"writable through a read-only handle", node, read_only->fh, 0, 0, kDaxPage, rw, -EACCES},
      {"an unknown node", 999999, kNoHandle, 0, 0, kDaxPage, read, -EBADF},
  };
  for (const Case& k : cases) {
    EXPECT_EQ(SetupMapping(c, k.node, k.fh, k.foffset, k.moffset, k.len, k.flags).error(), k.error)
        << k.what;
    EXPECT_EQ(c.getattr(FUSE_ROOT_ID).error(), 0) << "not serving after " << k.what;
  }
  EXPECT_EQ(window.requests(), 0u) << "a refused mapping reached the VMM";

  // FUSE_REMOVEMAPPING_MAX_ENTRY: a page of entries.
  std::vector<fuse_removemapping_one> many(4096 / sizeof(fuse_removemapping_one) + 1,
                                           {.moffset = 0, .len = kDaxPage});
  EXPECT_EQ(RemoveMapping(c, node, many).error(), -EINVAL) << "more entries than Linux sends";
  EXPECT_EQ(RemoveMapping(c, node, {{.moffset = 0, .len = kDaxPage}}, 1000).error(), -EINVAL)
      << "a count beyond the entries sent";
  EXPECT_EQ(RemoveMapping(c, node, {}, 0).error(), -EINVAL) << "no entries";
  EXPECT_EQ(RemoveMapping(c, node, {{.moffset = kDaxWindow, .len = kDaxPage}}).error(), -EINVAL)
      << "outside the window";
  EXPECT_EQ(window.requests(), 0u);
  // Still serving, DAX included.
  EXPECT_EQ(SetupMapping(c, node, read_only->fh, 0, 0, kDaxPage, read).error(), 0);
  EXPECT_TRUE(window.mapped(0));
}

TEST_F(VhostSvfsdDaxTest, AVmmThatDoesNotAnswerCostsEioNotTheQueue) {
  FuseClient& c = s->client();
  DaxWindowHost& window = Window();
  const std::uint64_t node = DaxFile(*s, "data", 1, 7);
  window.set_answering(false);
  const auto start = std::chrono::steady_clock::now();
  FuseReply r = c.send(c.make(FUSE_SETUPMAPPING, node,
                              {Bytes(fuse_setupmapping_in{.fh = kNoHandle, .len = kDaxPage,
                                                          .flags = FUSE_SETUPMAPPING_FLAG_READ})},
                              4096),
                       10s);
  ASSERT_TRUE(r.answered) << "SETUPMAPPING hung with the VMM not answering";
  EXPECT_EQ(r.error(), -EIO);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  EXPECT_EQ(c.getattr(FUSE_ROOT_ID).error(), 0);
  // The channel is closed (an answer now could be taken for a later request's): DAX fails at
  // once, everything else is served.
  window.set_answering(true);
  EXPECT_EQ(SetupMapping(c, node, kNoHandle, 0, 0, kDaxPage, FUSE_SETUPMAPPING_FLAG_READ).error(),
            -EIO);
  EXPECT_EQ(c.getattr(FUSE_ROOT_ID).error(), 0);
  EXPECT_EQ(window.requests(), 1u);
}

// An answer that names another request is not taken for this one's: EIO, the channel closed.
TEST_F(VhostSvfsdDaxTest, AnAnswerToAnotherRequestIsRefused) {
  FuseClient& c = s->client();
  DaxWindowHost& window = Window();
  const std::uint64_t node = DaxFile(*s, "data", 1, 7);
  window.set_answer_code(7);  // FS_UNMAP's code, answering an FS_MAP
  EXPECT_EQ(SetupMapping(c, node, kNoHandle, 0, 0, kDaxPage, FUSE_SETUPMAPPING_FLAG_READ).error(),
            -EIO);
  window.set_answer_code(0);
  EXPECT_EQ(SetupMapping(c, node, kNoHandle, 0, 0, kDaxPage, FUSE_SETUPMAPPING_FLAG_READ).error(),
            -EIO)
      << "the channel stays closed until the frontend reconnects";
  EXPECT_EQ(c.getattr(FUSE_ROOT_ID).error(), 0);
  EXPECT_EQ(window.requests(), 1u);
}

TEST(VhostSvfsdDaxStartTest, TheWindowSizeIsCheckedAtStart) {
  SVFS_REQUIRE_BACKEND(Backend::kSvfsd);
  TempDir tmp;
  for (const char* bad : {"3M", "4097", "12X", "-2M"}) {
    auto r = svfs_test::RunCommand({SvfsdPath(), "--socket-path", (tmp.path() / "s").string(),
                                    "--shared-dir", tmp.path().string(), "--dax-window-size", bad});
    EXPECT_EQ(r.status, 2) << bad;
    EXPECT_NE(r.output.find("--dax-window-size"), std::string::npos) << r.output;
  }
}


// FS_IO: a request whose data buffer is in the window (a guest write() from a DAX mapping, or a
// read() into one) names window addresses svfsd cannot reach; the VMM moves the bytes.
// `data_in_window`: a readable (WRITE payload) or writable (READ data) descriptor of `len`
// bytes at window offset `window_offset`, after `request` (its first `head_bytes`); the reply
// buffer is `reply_len` bytes in guest memory. Returns the reply header.
fuse_out_header SendWithWindowData(Session& s, const FuseRequest& request, std::size_t head_bytes,
                                   bool payload, std::uint64_t window_offset, std::uint32_t len,
                                   std::uint32_t reply_len) {
  GuestMemory& mem = s.fe().memory();
  Virtqueue& q = s.fe().queue(1);
  const std::uint64_t head_gpa = mem.alloc(head_bytes);
  std::memcpy(mem.ptr(head_gpa, head_bytes), request.bytes.data(), head_bytes);
  const std::uint64_t reply_gpa = mem.alloc(reply_len);
  std::memset(mem.ptr(reply_gpa, reply_len), 0, reply_len);
  const std::uint64_t window_gpa = DaxWindowHost::kGuestAddr + window_offset;
  auto d = q.reserve(3);
  q.set_desc(d[0], head_gpa, static_cast<std::uint32_t>(head_bytes), kDescNext, d[1]);
  if (payload) {
    q.set_desc(d[1], window_gpa, len, kDescNext, d[2]);
    q.set_desc(d[2], reply_gpa, reply_len, kDescWrite);
  } else {
    q.set_desc(d[1], reply_gpa, reply_len, kDescWrite | kDescNext, d[2]);
    q.set_desc(d[2], window_gpa, len, kDescWrite);
  }
  q.push_avail(d[0]);
  q.kick();
  auto used = q.collect(1, std::chrono::milliseconds(5000));
  fuse_out_header out{};
  if (used.empty()) {
    ADD_FAILURE() << "no reply within 5 s";
    return out;
  }
  std::memcpy(&out, mem.ptr(reply_gpa, sizeof(out)), sizeof(out));
  return out;
}

TEST_F(VhostSvfsdDaxTest, WriteAndReadWithTheirDataInTheWindowGoThroughTheVmm) {
  FuseClient& c = s->client();
  DaxWindowHost& window = Window();
  // "src" mapped read-only at window offset 0: a WRITE's payload from there lands in "dst".
  const std::uint64_t src = DaxFile(*s, "src", 1, 3);
  ASSERT_EQ(SetupMapping(c, src, kNoHandle, 0, 0, kDaxPage, FUSE_SETUPMAPPING_FLAG_READ).error(), 0);
  FuseReply created = c.create(FUSE_ROOT_ID, "dst", S_IFREG | 0644, O_RDWR | O_CREAT);
  ASSERT_EQ(created.error(), 0);
  fuse_entry_out entry;
  fuse_open_out open;
  std::memcpy(&entry, created.body().data(), sizeof(entry));
  std::memcpy(&open, created.body().data() + sizeof(entry), sizeof(open));
  const std::vector<std::uint8_t> placeholder(kDaxPage);
  const FuseRequest write = c.write_request(entry.nodeid, open.fh, 0, placeholder);
  const unsigned before = window.requests();
  fuse_out_header out = SendWithWindowData(*s, write, sizeof(fuse_in_header) + sizeof(fuse_write_in),
                                           /*payload=*/true, 0, kDaxPage,
                                           sizeof(fuse_out_header) + sizeof(fuse_write_out));
  EXPECT_EQ(out.error, 0);
  EXPECT_EQ(window.requests(), before + 1) << "one FS_IO";
  EXPECT_EQ(ReadFile(s->shared() / "dst"), ReadFile(s->shared() / "src"));

  // "sink" mapped writable at window offset 1 page: a READ of "data" into there lands in "sink".
  const std::uint64_t sink = DaxFile(*s, "sink", 1, 5);
  ASSERT_EQ(SetupMapping(c, sink, kNoHandle, 0, kDaxPage, kDaxPage,
                         FUSE_SETUPMAPPING_FLAG_READ | FUSE_SETUPMAPPING_FLAG_WRITE)
                .error(),
            0);
  const std::uint64_t data = DaxFile(*s, "data", 1, 9);
  auto opened = c.open(data, O_RDONLY).as<fuse_open_out>();
  ASSERT_TRUE(opened);
  const FuseRequest read = c.read_request(data, opened->fh, 0, kDaxPage);
  out = SendWithWindowData(*s, read, read.bytes.size(), /*payload=*/false, kDaxPage, kDaxPage,
                           sizeof(fuse_out_header));
  EXPECT_EQ(out.error, 0);
  EXPECT_EQ(out.len, sizeof(fuse_out_header) + kDaxPage);
  EXPECT_EQ(ReadFile(s->shared() / "sink"), ReadFile(s->shared() / "data"));

  // An address past the window: the VMM's EFAULT reaches the guest, and svfsd serves on.
  out = SendWithWindowData(*s, read, read.bytes.size(), false, kDaxWindow, kDaxPage,
                           sizeof(fuse_out_header));
  EXPECT_EQ(out.error, -EFAULT);
  EXPECT_EQ(c.getattr(FUSE_ROOT_ID).error(), 0);
}

}  // namespace
}  // namespace svfs::vhost
