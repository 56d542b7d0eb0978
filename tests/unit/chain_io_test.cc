// chain_io over hand-made chains: buffers outside guest memory (Chain::outside) carry a READ's
// data or a WRITE's payload through WindowIo when a DAX window exists, and nothing else.
#include "daemon/transport/vhost_user/chain_io.h"

#include <gtest/gtest.h>
#include <linux/fuse.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "common/unique_fd.h"

namespace svfs::transport::vhost_user {
namespace {

constexpr uint64_t kWindowAddr = 0x800000000;  // where the fake window's buffer "is"

// The VMM's side: records each transfer and does it on `window` (standing for the window).
class FakeWindowIo final : public WindowIo {
 public:
  Result<size_t> transfer(int fd, uint64_t file_offset, uint64_t guest_addr, uint64_t length,
                          Direction direction) override {
    calls.push_back({file_offset, guest_addr, length, direction});
    if (fail != 0) return Err(fail);
    uint8_t* at = window.data() + (guest_addr - kWindowAddr);
    const ssize_t n = direction == Direction::kFileToGuest
                          ? ::pread(fd, at, length, static_cast<off_t>(file_offset))
                          : ::pwrite(fd, at, length, static_cast<off_t>(file_offset));
    if (n < 0) return ErrnoErr();
    return static_cast<size_t>(n);
  }
  struct Call {
    uint64_t file_offset, guest_addr, length;
    Direction direction;
  };
  std::vector<Call> calls;
  std::vector<uint8_t> window = std::vector<uint8_t>(8192);
  int fail = 0;
};

UniqueFd FileWith(const std::string& content) {
  UniqueFd fd(::memfd_create("file", MFD_CLOEXEC));
  EXPECT_EQ(::pwrite(fd.get(), content.data(), content.size(), 0),
            static_cast<ssize_t>(content.size()));
  return fd;
}

struct ReadRequest {
  fuse_in_header in{};
  fuse_read_in read{};
};

// A READ whose reply buffer is a 16-byte header, 8 bytes of guest memory, then 4096 bytes in the
// window.
struct ReadChain {
  ReadChain() {
    request.in.len = sizeof(request);
    request.in.opcode = FUSE_READ;
    request.in.unique = 7;
    chain.readable = {{&request, sizeof(request)}};
    chain.readable_bytes = sizeof(request);
    chain.writable = {{header, sizeof(header)}, {direct, sizeof(direct)}, {nullptr, 4096}};
    chain.writable_bytes = sizeof(header) + sizeof(direct) + 4096;
    chain.outside = {{.writable = true, .segment = 2, .guest_addr = kWindowAddr + 100}};
  }
  ReadRequest request;
  uint8_t header[16] = {};
  uint8_t direct[8] = {};
  Chain chain;
};

TEST(ChainIoTest, OutsideBuffersAreRefusedWithoutAWindow) {
  ReadChain read;
  std::vector<uint8_t> buffer(4096);
  const CopiedRequest copy = CopyRequest(1, read.chain, buffer, /*window_io=*/false);
  EXPECT_TRUE(copy.refused);
  EXPECT_TRUE(copy.has_header);  // so it gets its EIO reply
  EXPECT_FALSE(CopyRequest(1, read.chain, buffer, /*window_io=*/true).refused);
}

TEST(ChainIoTest, OutsideBuffersAreRefusedForAnythingButReadDataAndWritePayload) {
  ReadChain read;
  read.request.in.opcode = FUSE_GETATTR;
  std::vector<uint8_t> buffer(4096);
  EXPECT_TRUE(CopyRequest(1, read.chain, buffer, true).refused);
  // A READ whose reply header would be outside.
  read.request.in.opcode = FUSE_READ;
  read.chain.writable = {{nullptr, 4096}};
  read.chain.writable_bytes = 4096;
  read.chain.outside = {{.writable = true, .segment = 0, .guest_addr = kWindowAddr}};
  EXPECT_TRUE(CopyRequest(1, read.chain, buffer, true).refused);
  // A request header outside: not even answerable.
  read.chain.readable = {{nullptr, sizeof(ReadRequest)}};
  read.chain.outside = {{.writable = false, .segment = 0, .guest_addr = kWindowAddr}};
  const CopiedRequest copy = CopyRequest(1, read.chain, buffer, true);
  EXPECT_TRUE(copy.refused);
  EXPECT_FALSE(copy.has_header);
}

TEST(ChainIoTest, ReadDataGoesIntoTheWindowThroughTheVmm) {
  ReadChain read;
  FakeWindowIo vmm;
  std::string content(5000, 'x');
  for (size_t i = 0; i < content.size(); ++i) content[i] = static_cast<char>('a' + i % 26);
  UniqueFd file = FileWith(content);
  ChainReplyChannel channel(read.chain, 7, &vmm);
  fs::ReadSink& sink = channel.data_sink(4104);
  auto n = sink.read_from(file.get(), 10, 4104);
  ASSERT_TRUE(n.has_value()) << n.error();
  EXPECT_EQ(*n, 4104u);
  EXPECT_EQ(std::string(reinterpret_cast<char*>(read.direct), 8), content.substr(10, 8));
  ASSERT_EQ(vmm.calls.size(), 1u);
  EXPECT_EQ(vmm.calls[0].file_offset, 18u);
  EXPECT_EQ(vmm.calls[0].guest_addr, kWindowAddr + 100);
  EXPECT_EQ(vmm.calls[0].length, 4096u);
  EXPECT_EQ(vmm.calls[0].direction, WindowIo::Direction::kFileToGuest);
  EXPECT_EQ(std::string(reinterpret_cast<char*>(vmm.window.data()) + 100, 4096),
            content.substr(18, 4096));
  fuse_out_header out{.len = sizeof(out) + 4104, .error = 0, .unique = 7};
  channel.send_data(out);
  EXPECT_EQ(channel.written(), sizeof(out) + 4104);
}

TEST(ChainIoTest, ReadStopsAtTheEndOfTheFileAndPassesTheVmmsError) {
  ReadChain read;
  FakeWindowIo vmm;
  UniqueFd file = FileWith("0123456789abcdef");
  ChainReplyChannel channel(read.chain, 7, &vmm);
  auto n = channel.data_sink(4104).read_from(file.get(), 4, 4104);
  ASSERT_TRUE(n.has_value());
  EXPECT_EQ(*n, 12u);  // 8 direct, 4 through the VMM, then the end of the file
  ChainReplyChannel failing(read.chain, 7, &vmm);
  vmm.fail = EFAULT;
  n = failing.data_sink(4104).read_from(file.get(), 0, 4104);
  ASSERT_TRUE(n.has_value());
  EXPECT_EQ(*n, 8u);  // what came before the failure
  ChainReplyChannel all_outside(read.chain, 7, &vmm);
  auto failed = all_outside.data_sink(4104).read_from(file.get(), 100, 4104);
  ASSERT_TRUE(failed.has_value());
  EXPECT_EQ(*failed, 0u);
  EXPECT_EQ(vmm.calls.size(), 2u);  // past the end the direct part reads nothing: no FS_IO
}

TEST(ChainIoTest, ContiguousWindowPagesAreOneTransfer) {
  ReadChain read;
  read.chain.writable = {{read.header, sizeof(read.header)}, {nullptr, 4096}, {nullptr, 4096}};
  read.chain.writable_bytes = sizeof(read.header) + 8192;
  read.chain.outside = {{.writable = true, .segment = 1, .guest_addr = kWindowAddr},
                        {.writable = true, .segment = 2, .guest_addr = kWindowAddr + 4096}};
  FakeWindowIo vmm;
  UniqueFd file = FileWith(std::string(10000, 'z'));
  ChainReplyChannel channel(read.chain, 7, &vmm);
  auto n = channel.data_sink(8192).read_from(file.get(), 0, 8192);
  ASSERT_TRUE(n.has_value());
  EXPECT_EQ(*n, 8192u);
  ASSERT_EQ(vmm.calls.size(), 1u) << "a descriptor per page, one FS_IO";
  EXPECT_EQ(vmm.calls[0].length, 8192u);
  // Not contiguous: two.
  read.chain.outside[1].guest_addr = kWindowAddr;
  vmm.calls.clear();
  ChainReplyChannel apart(read.chain, 7, &vmm);
  n = apart.data_sink(8192).read_from(file.get(), 0, 8192);
  ASSERT_TRUE(n.has_value());
  EXPECT_EQ(*n, 8192u);
  EXPECT_EQ(vmm.calls.size(), 2u);
}

TEST(ChainIoTest, WritePayloadFromTheWindowThroughTheVmm) {
  struct {
    fuse_in_header in{};
    fuse_write_in write{};
  } headers;
  headers.in.opcode = FUSE_WRITE;
  headers.in.unique = 9;
  headers.write.size = 4 + 6;
  char direct[4] = {'h', 'e', 'a', 'd'};
  uint8_t reply[sizeof(fuse_out_header) + sizeof(fuse_write_out)] = {};
  Chain chain;
  chain.readable = {{&headers, sizeof(headers)}, {direct, 4}, {nullptr, 6}};
  chain.readable_bytes = sizeof(headers) + 10;
  chain.writable = {{reply, sizeof(reply)}};
  chain.writable_bytes = sizeof(reply);
  chain.outside = {{.writable = false, .segment = 2, .guest_addr = kWindowAddr}};
  std::vector<uint8_t> buffer(4096);
  const CopiedRequest copy = CopyRequest(1, chain, buffer, true);
  ASSERT_FALSE(copy.refused);
  ASSERT_TRUE(copy.external_payload);
  EXPECT_EQ(copy.payload, 10u);
  FakeWindowIo vmm;
  std::memcpy(vmm.window.data(), "window", 6);
  UniqueFd file = FileWith("");
  std::vector<iovec> scratch;
  GuestWriteSource source(chain, copy.bytes.size(), copy.payload, scratch, &vmm);
  auto n = source.write_to(file.get(), 0);
  ASSERT_TRUE(n.has_value()) << n.error();
  EXPECT_EQ(*n, 10u);
  char got[10] = {};
  ASSERT_EQ(::pread(file.get(), got, 10, 0), 10);
  EXPECT_EQ(std::string(got, 10), "headwindow");
  ASSERT_EQ(vmm.calls.size(), 1u);
  EXPECT_EQ(vmm.calls[0].file_offset, 4u);
  EXPECT_EQ(vmm.calls[0].direction, WindowIo::Direction::kGuestToFile);
}

}  // namespace
}  // namespace svfs::transport::vhost_user
