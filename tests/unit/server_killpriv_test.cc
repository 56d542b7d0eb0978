// killpriv_v2 as the server decodes it: the kill flags of OPEN and CREATE reach the filesystem
// in the context, those of WRITE and SETATTR in their arguments.
#include <sys/stat.h>

#include "tests/unit/server_test_support.h"

namespace svfs::testing {
namespace {

TEST_F(OpTest, OpenAndCreateKillFlagsReachTheFilesystem) {
  send(RequestBuilder(FUSE_OPEN, kNode)
           .add(fuse_open_in{.flags = O_WRONLY | O_TRUNC, .open_flags = FUSE_OPEN_KILL_SUIDGID}));
  EXPECT_EQ(fake.last().op, "open");
  EXPECT_TRUE(fake.last().context.kill_suidgid);
  send(RequestBuilder(FUSE_OPEN, kNode).add(fuse_open_in{.flags = O_WRONLY | O_TRUNC}));
  EXPECT_FALSE(fake.last().context.kill_suidgid);
  send(RequestBuilder(FUSE_CREATE, kNode)
           .add(fuse_create_in{.flags = O_WRONLY | O_TRUNC, .mode = S_IFREG | 0644,
                               .open_flags = FUSE_OPEN_KILL_SUIDGID})
           .name("f"));
  EXPECT_EQ(fake.last().op, "create");
  EXPECT_TRUE(fake.last().context.kill_suidgid);
}

TEST_F(OpTest, WriteAndSetattrKillFlagsReachTheFilesystem) {
  send(RequestBuilder(FUSE_SETATTR, kNode)
           .add(fuse_setattr_in{.valid = FATTR_SIZE | FATTR_KILL_SUIDGID, .size = 3}));
  EXPECT_EQ(fake.last().op, "setattr");
  EXPECT_EQ(fake.last().setattr.valid, uint32_t{FATTR_SIZE | FATTR_KILL_SUIDGID});
  send(RequestBuilder(FUSE_WRITE, kNode)
           .add(fuse_write_in{.fh = 1, .size = 2, .write_flags = FUSE_WRITE_KILL_SUIDGID})
           .raw("ab"));
  EXPECT_EQ(fake.last().op, "write");
  EXPECT_EQ(fake.last().flags, uint32_t{FUSE_WRITE_KILL_SUIDGID});
}

}  // namespace
}  // namespace svfs::testing
