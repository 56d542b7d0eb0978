#include "daemon/fuse/request_class.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/fuse.h>

#include "tests/unit/request_builder.h"

namespace svfs::fuse {
namespace {

using svfs::testing::RequestBuilder;

Schedule Of(const RequestBuilder& builder) { return Classify(builder.build()); }

TEST(RequestClassTest, LockWaitsBlockAndNothingElseDoes) {
  EXPECT_EQ(Of(RequestBuilder(FUSE_SETLKW, 2).add(fuse_lk_in{})), Schedule::kBlocking);
  EXPECT_EQ(Of(RequestBuilder(FUSE_SETLK, 2).add(fuse_lk_in{})), Schedule::kQuick);
  EXPECT_EQ(Of(RequestBuilder(FUSE_GETLK, 2).add(fuse_lk_in{})), Schedule::kQuick);
  EXPECT_EQ(Of(RequestBuilder(FUSE_LOOKUP, 1).name("x")), Schedule::kQuick);
  // Classified by the header alone: a truncated SETLKW still must not block its queue thread
  // (the server refuses it, but which thread serves it is decided first).
  EXPECT_EQ(Of(RequestBuilder(FUSE_SETLKW, 2)), Schedule::kBlocking);
}

TEST(RequestClassTest, SlowRequestsByOpcodeAndArguments) {
  for (uint32_t opcode : {FUSE_FSYNC, FUSE_FSYNCDIR, FUSE_FALLOCATE, FUSE_COPY_FILE_RANGE,
                          FUSE_SYNCFS, FUSE_FLUSH, FUSE_READDIR, FUSE_READDIRPLUS}) {
    EXPECT_EQ(Of(RequestBuilder(opcode, 2)), Schedule::kSlow) << opcode;
  }
  EXPECT_EQ(Of(RequestBuilder(FUSE_SETATTR, 2).add(fuse_setattr_in{.valid = FATTR_SIZE})),
            Schedule::kSlow);
  EXPECT_EQ(Of(RequestBuilder(FUSE_SETATTR, 2).add(fuse_setattr_in{.valid = FATTR_MODE})),
            Schedule::kQuick);
  EXPECT_EQ(Of(RequestBuilder(FUSE_OPEN, 2).add(fuse_open_in{.flags = O_RDWR | O_TRUNC})),
            Schedule::kSlow);
  EXPECT_EQ(Of(RequestBuilder(FUSE_OPEN, 2).add(fuse_open_in{.flags = O_RDWR})), Schedule::kQuick);
  EXPECT_EQ(Of(RequestBuilder(FUSE_CREATE, 1).add(fuse_create_in{.flags = O_WRONLY | O_TRUNC})),
            Schedule::kSlow);
  EXPECT_EQ(Of(RequestBuilder(FUSE_READ, 2).add(fuse_read_in{.size = 1 << 20})), Schedule::kSlow);
  EXPECT_EQ(Of(RequestBuilder(FUSE_READ, 2).add(fuse_read_in{.size = 4096})), Schedule::kQuick);
  EXPECT_EQ(Of(RequestBuilder(FUSE_WRITE, 2).add(fuse_write_in{.size = 1 << 20})), Schedule::kSlow);
  EXPECT_EQ(Of(RequestBuilder(FUSE_WRITE, 2).add(fuse_write_in{.size = 4096})), Schedule::kQuick);
  // Arguments cut short: the flags are unknown, and the server refuses the request at once.
  EXPECT_EQ(Of(RequestBuilder(FUSE_SETATTR, 2)), Schedule::kQuick);
}

TEST(RequestClassTest, ShorterThanAHeaderIsQuick) {
  std::vector<uint8_t> bytes = RequestBuilder(FUSE_SETLKW, 2).build();
  bytes.resize(sizeof(fuse_in_header) - 1);
  EXPECT_EQ(Classify(bytes), Schedule::kQuick);
}

TEST(RequestClassTest, OnlyWriteKeepsItsPayloadApart) {
  EXPECT_EQ(HeadersBeforePayload(FUSE_WRITE), sizeof(fuse_in_header) + sizeof(fuse_write_in));
  EXPECT_EQ(HeadersBeforePayload(FUSE_SETXATTR), 0u);
  EXPECT_EQ(HeadersBeforePayload(FUSE_READ), 0u);
}

}  // namespace
}  // namespace svfs::fuse
