// Server: decoding of the file I/O opcodes (OPEN, CREATE, TMPFILE, READ, WRITE, STATFS, RELEASE,
// FLUSH, FSYNC, FALLOCATE, LSEEK, COPY_FILE_RANGE, SYNCFS) and their replies.
#include "daemon/fuse/server.h"

#include <fcntl.h>
#include <linux/fuse.h>
#include <sys/stat.h>

#include <string>

#include <gtest/gtest.h>

#include "tests/unit/server_test_support.h"

namespace svfs::testing {
namespace {

TEST_F(OpTest, Open) {
  fake.opened = fs::Opened{.handle = 555, .open_flags = FOPEN_KEEP_CACHE};
  Reply r = send(RequestBuilder(FUSE_OPEN, kNode)
                     .add(fuse_open_in{.flags = O_RDWR | O_APPEND, .open_flags = 0}));
  ASSERT_EQ(r.error(), 0);
  EXPECT_EQ(fake.last().op, "open");
  EXPECT_EQ(fake.last().node, kNode);
  EXPECT_EQ(fake.last().flags, static_cast<uint32_t>(O_RDWR | O_APPEND));
  ASSERT_EQ(r.payload_size(), sizeof(fuse_open_out));
  EXPECT_EQ(r.as<fuse_open_out>().fh, 555u);
  EXPECT_EQ(r.as<fuse_open_out>().open_flags, static_cast<uint32_t>(FOPEN_KEEP_CACHE));
}

TEST_F(OpTest, CreateReplyIsEntryThenOpen) {
  fake.opened = fs::Opened{.handle = 556, .open_flags = FOPEN_DIRECT_IO};
  Reply r = send(RequestBuilder(FUSE_CREATE, kNode)
                     .add(fuse_create_in{.flags = O_WRONLY | O_CREAT | O_EXCL,
                                         .mode = S_IFREG | 0640,
                                         .umask = 022})
                     .name("new-file"));
  ASSERT_EQ(r.error(), 0);
  const FakeCall& c = fake.last();
  EXPECT_EQ(c.op, "create");
  EXPECT_EQ(c.node, kNode);
  EXPECT_EQ(c.name, "new-file");
  EXPECT_EQ(c.flags, static_cast<uint32_t>(O_WRONLY | O_CREAT | O_EXCL));
  EXPECT_EQ(c.mode, static_cast<uint32_t>(S_IFREG | 0640));
  EXPECT_EQ(c.umask, 022u);
  ASSERT_EQ(r.payload_size(), sizeof(fuse_entry_out) + sizeof(fuse_open_out));
  EXPECT_EQ(r.as<fuse_entry_out>().nodeid, 42u);
  EXPECT_EQ(r.as<fuse_entry_out>().attr.ino, 42u);
  auto open = r.as<fuse_open_out>(sizeof(fuse_entry_out));
  EXPECT_EQ(open.fh, 556u);
  EXPECT_EQ(open.open_flags, static_cast<uint32_t>(FOPEN_DIRECT_IO));
}

TEST_F(OpTest, TmpfileAcceptsSlashName) {
  Reply r = send(RequestBuilder(FUSE_TMPFILE, kNode)
                     .add(fuse_create_in{.flags = O_RDWR, .mode = S_IFREG | 0600, .umask = 077})
                     .name("/"));
  ASSERT_EQ(r.error(), 0);
  const FakeCall& c = fake.last();
  EXPECT_EQ(c.op, "tmpfile");
  EXPECT_EQ(c.node, kNode);
  EXPECT_EQ(c.flags, static_cast<uint32_t>(O_RDWR));
  EXPECT_EQ(c.mode, static_cast<uint32_t>(S_IFREG | 0600));
  EXPECT_EQ(c.umask, 077u);
  EXPECT_EQ(r.payload_size(), sizeof(fuse_entry_out) + sizeof(fuse_open_out));
  EXPECT_EQ(r.as<fuse_open_out>(sizeof(fuse_entry_out)).fh, 99u);
}

TEST_F(OpTest, ReadPayloadComesFromSink) {
  fake.read_data = "0123456789abcdef";
  Reply r = send(RequestBuilder(FUSE_READ, kNode)
                     .add(fuse_read_in{.fh = 7, .offset = 4, .size = 6}));
  ASSERT_EQ(r.error(), 0);
  const FakeCall& c = fake.last();
  EXPECT_EQ(c.op, "read");
  EXPECT_EQ(c.node, kNode);
  EXPECT_EQ(c.handle, 7u);
  EXPECT_EQ(c.offset, 4u);
  EXPECT_EQ(c.size, 6u);
  EXPECT_EQ(last_sink_requests, 1u);
  EXPECT_EQ(r.payload_string(), "456789");
}

TEST_F(OpTest, ReadShortAtEof) {
  fake.read_data = "short";
  Reply r = send(RequestBuilder(FUSE_READ, kNode).add(fuse_read_in{.fh = 7, .size = 4096}));
  ASSERT_EQ(r.error(), 0);
  EXPECT_EQ(r.payload_string(), "short");
  r = send(RequestBuilder(FUSE_READ, kNode).add(fuse_read_in{.fh = 7, .offset = 100, .size = 10}));
  ASSERT_EQ(r.error(), 0);
  EXPECT_EQ(r.payload_size(), 0u);
}

TEST_F(OpTest, ReadOfOneMibAccepted) {
  Reply r = send(RequestBuilder(FUSE_READ, kNode).add(fuse_read_in{.fh = 7, .size = kMiB}));
  EXPECT_EQ(r.error(), 0);
  EXPECT_EQ(fake.last().size, kMiB);
}

TEST_F(OpTest, WriteInlinePayloadReachesFilesystem) {
  std::string payload = "payload bytes \x01\x02";
  Reply r = send(RequestBuilder(FUSE_WRITE, kNode)
                     .add(fuse_write_in{.fh = 8,
                                        .offset = 4096,
                                        .size = static_cast<uint32_t>(payload.size()),
                                        .write_flags = FUSE_WRITE_KILL_SUIDGID})
                     .raw(payload));
  ASSERT_EQ(r.error(), 0);
  const FakeCall& c = fake.last();
  EXPECT_EQ(c.op, "write");
  EXPECT_EQ(c.node, kNode);
  EXPECT_EQ(c.handle, 8u);
  EXPECT_EQ(c.offset, 4096u);
  EXPECT_EQ(c.flags, static_cast<uint32_t>(FUSE_WRITE_KILL_SUIDGID));
  EXPECT_EQ(c.data, payload);
  ASSERT_EQ(r.payload_size(), sizeof(fuse_write_out));
  EXPECT_EQ(r.as<fuse_write_out>().size, payload.size());
}

TEST_F(OpTest, WriteReplyReportsFilesystemCount) {
  fake.write_result = 3;
  Reply r = send(RequestBuilder(FUSE_WRITE, kNode)
                     .add(fuse_write_in{.fh = 8, .size = 10})
                     .raw("0123456789"));
  ASSERT_EQ(r.error(), 0);
  EXPECT_EQ(r.as<fuse_write_out>().size, 3u);
}

TEST_F(OpTest, WriteExternalPayload) {
  // Kept outside the request buffer, as vhost-user passes it.
  fs::SpanWriteSource payload("guest memory data");
  RequestBuilder b(FUSE_WRITE, kNode);
  b.add(fuse_write_in{.fh = 9, .offset = 1, .size = static_cast<uint32_t>(payload.size())});
  Reply r = send(b.build(payload.size()), &payload);
  ASSERT_EQ(r.error(), 0);
  EXPECT_EQ(fake.last().data, "guest memory data");
  EXPECT_EQ(r.as<fuse_write_out>().size, payload.size());
}

TEST_F(OpTest, Statfs) {
  Reply r = send(RequestBuilder(FUSE_STATFS, kNode));
  ASSERT_EQ(r.error(), 0);
  EXPECT_EQ(fake.last().op, "statfs");
  EXPECT_EQ(fake.last().node, kNode);
  ASSERT_EQ(r.payload_size(), sizeof(fuse_statfs_out));
  auto st = r.as<fuse_statfs_out>().st;
  EXPECT_EQ(st.blocks, 1000u);
  EXPECT_EQ(st.bfree, 500u);
  EXPECT_EQ(st.bavail, 400u);
  EXPECT_EQ(st.files, 100u);
  EXPECT_EQ(st.ffree, 50u);
  EXPECT_EQ(st.bsize, 4096u);
  EXPECT_EQ(st.frsize, 4096u);
  EXPECT_EQ(st.namelen, 255u);
}

TEST_F(OpTest, Release) {
  Reply r = send(RequestBuilder(FUSE_RELEASE, kNode)
                     .add(fuse_release_in{.fh = 12,
                                          .flags = O_RDWR,
                                          .release_flags = FUSE_RELEASE_FLOCK_UNLOCK,
                                          .lock_owner = 0xabcdef}));
  EXPECT_EQ(r.error(), 0);
  EXPECT_EQ(r.payload_size(), 0u);
  const FakeCall& c = fake.last();
  EXPECT_EQ(c.op, "release");
  EXPECT_EQ(c.node, kNode);
  EXPECT_EQ(c.handle, 12u);
  EXPECT_EQ(c.flags, static_cast<uint32_t>(O_RDWR));
  EXPECT_EQ(c.flags2, static_cast<uint32_t>(FUSE_RELEASE_FLOCK_UNLOCK));
  EXPECT_EQ(c.owner, 0xabcdefu);
}

TEST_F(OpTest, Releasedir) {
  Reply r = send(RequestBuilder(FUSE_RELEASEDIR, kNode).add(fuse_release_in{.fh = 13}));
  EXPECT_EQ(r.error(), 0);
  EXPECT_EQ(fake.last().op, "releasedir");
  EXPECT_EQ(fake.last().node, kNode);
  EXPECT_EQ(fake.last().handle, 13u);
}

TEST_F(OpTest, Flush) {
  Reply r = send(RequestBuilder(FUSE_FLUSH, kNode)
                     .add(fuse_flush_in{.fh = 14, .lock_owner = 0x1234}));
  EXPECT_EQ(r.error(), 0);
  EXPECT_EQ(fake.last().op, "flush");
  EXPECT_EQ(fake.last().handle, 14u);
  EXPECT_EQ(fake.last().owner, 0x1234u);
}

TEST_F(OpTest, FsyncDatasyncBit) {
  send(RequestBuilder(FUSE_FSYNC, kNode).add(fuse_fsync_in{.fh = 15, .fsync_flags = 0}));
  EXPECT_EQ(fake.last().op, "fsync");
  EXPECT_EQ(fake.last().handle, 15u);
  EXPECT_FALSE(fake.last().datasync);
  Reply r = send(RequestBuilder(FUSE_FSYNC, kNode)
                     .add(fuse_fsync_in{.fh = 15, .fsync_flags = FUSE_FSYNC_FDATASYNC}));
  EXPECT_EQ(r.error(), 0);
  EXPECT_TRUE(fake.last().datasync);
}

TEST_F(OpTest, Fsyncdir) {
  Reply r = send(RequestBuilder(FUSE_FSYNCDIR, kNode)
                     .add(fuse_fsync_in{.fh = 16, .fsync_flags = FUSE_FSYNC_FDATASYNC}));
  EXPECT_EQ(r.error(), 0);
  EXPECT_EQ(fake.last().op, "fsyncdir");
  EXPECT_EQ(fake.last().handle, 16u);
  EXPECT_TRUE(fake.last().datasync);
}
TEST_F(OpTest, Fallocate) {
  Reply r = send(RequestBuilder(FUSE_FALLOCATE, kNode)
                     .add(fuse_fallocate_in{.fh = 40,
                                            .offset = 8192,
                                            .length = 1 << 20,
                                            .mode = FALLOC_FL_KEEP_SIZE}));
  EXPECT_EQ(r.error(), 0);
  const FakeCall& c = fake.last();
  EXPECT_EQ(c.op, "fallocate");
  EXPECT_EQ(c.handle, 40u);
  EXPECT_EQ(c.offset, 8192u);
  EXPECT_EQ(c.length, 1u << 20);
  EXPECT_EQ(c.mode, static_cast<uint32_t>(FALLOC_FL_KEEP_SIZE));
}

TEST_F(OpTest, Lseek) {
  fake.lseek_result = 12288;
  Reply r = send(RequestBuilder(FUSE_LSEEK, kNode)
                     .add(fuse_lseek_in{.fh = 41, .offset = 100, .whence = SEEK_DATA}));
  ASSERT_EQ(r.error(), 0);
  EXPECT_EQ(fake.last().op, "lseek");
  EXPECT_EQ(fake.last().handle, 41u);
  EXPECT_EQ(fake.last().offset, 100u);
  EXPECT_EQ(fake.last().whence, static_cast<uint32_t>(SEEK_DATA));
  ASSERT_EQ(r.payload_size(), sizeof(fuse_lseek_out));
  EXPECT_EQ(r.as<fuse_lseek_out>().offset, 12288u);
}

TEST_F(OpTest, CopyFileRange) {
  fake.copy_result = 65536;
  Reply r = send(RequestBuilder(FUSE_COPY_FILE_RANGE, kNode)
                     .add(fuse_copy_file_range_in{.fh_in = 50,
                                                  .off_in = 10,
                                                  .nodeid_out = 51,
                                                  .fh_out = 52,
                                                  .off_out = 20,
                                                  .len = 100000,
                                                  .flags = 0}));
  ASSERT_EQ(r.error(), 0);
  const FakeCall& c = fake.last();
  EXPECT_EQ(c.op, "copy_file_range");
  EXPECT_EQ(c.node, kNode);
  EXPECT_EQ(c.handle, 50u);
  EXPECT_EQ(c.offset, 10u);
  EXPECT_EQ(c.node2, 51u);
  EXPECT_EQ(c.handle2, 52u);
  EXPECT_EQ(c.offset2, 20u);
  EXPECT_EQ(c.length, 100000u);
  EXPECT_EQ(c.cfr_flags, 0u);
  ASSERT_EQ(r.payload_size(), sizeof(fuse_write_out));
  EXPECT_EQ(r.as<fuse_write_out>().size, 65536u);
}

TEST_F(OpTest, Syncfs) {
  Reply r = send(RequestBuilder(FUSE_SYNCFS, kNode).add(fuse_syncfs_in{}));
  EXPECT_EQ(r.error(), 0);
  EXPECT_EQ(r.payload_size(), 0u);
  EXPECT_EQ(fake.last().op, "syncfs");
  EXPECT_EQ(fake.last().node, kNode);
}

}  // namespace
}  // namespace svfs::testing
