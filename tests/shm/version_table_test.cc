#include "shm/version_table.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <bit>
#include <cstddef>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>

#include <gtest/gtest.h>

#include "tests/shm/test_names.h"

namespace svfs::shm {
namespace {

using testing::ScopedTableName;

uint64_t NowNs() {
  timespec now{};
  ::clock_gettime(CLOCK_REALTIME, &now);
  return static_cast<uint64_t>(now.tv_sec) * 1'000'000'000ULL + static_cast<uint64_t>(now.tv_nsec);
}

VersionTable MustCreate(const std::string& name, uint64_t slot_count, uint32_t stride = 0) {
  auto table = VersionTable::Create({.name = name, .slot_count = slot_count, .slot_stride = stride});
  if (!table) ADD_FAILURE() << table.error();
  return std::move(table.value());
}

// Writes raw bytes into the object behind the library's back, as a corrupting writer would.
template <typename T>
void PokeObject(const ScopedTableName& table, off_t offset, T value) {
  int fd = ::open(table.path().c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0) << table.path() << ": " << std::strerror(errno);
  ASSERT_EQ(::pwrite(fd, &value, sizeof(value), offset), static_cast<ssize_t>(sizeof(value)));
  ::close(fd);
}

template <typename T>
T PeekObject(const ScopedTableName& table, off_t offset) {
  T value{};
  int fd = ::open(table.path().c_str(), O_RDONLY | O_CLOEXEC);
  EXPECT_GE(fd, 0) << table.path() << ": " << std::strerror(errno);
  EXPECT_EQ(::pread(fd, &value, sizeof(value), offset), static_cast<ssize_t>(sizeof(value)));
  ::close(fd);
  return value;
}

void TruncateObject(const ScopedTableName& table, off_t bytes) {
  int fd = ::open(table.path().c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0) << table.path() << ": " << std::strerror(errno);
  ASSERT_EQ(::ftruncate(fd, bytes), 0) << std::strerror(errno);
  ::close(fd);
}

// Attach must fail with a message that starts with the table's name and contains `fragment`.
void ExpectAttachError(const ScopedTableName& table, std::string_view fragment,
                       Access access = Access::kReadWrite) {
  auto attached = VersionTable::Attach(table.name(), access);
  ASSERT_FALSE(attached.has_value()) << "attach unexpectedly succeeded";
  EXPECT_TRUE(attached.error().starts_with("version table " + table.name() + ": "))
      << attached.error();
  EXPECT_NE(attached.error().find(fragment), std::string::npos)
      << "message: " << attached.error() << "\nexpected fragment: " << fragment;
}

TEST(TableHeaderTest, LayoutIsTheWireFormat) {
  EXPECT_EQ(offsetof(TableHeader, magic), 0u);
  EXPECT_EQ(offsetof(TableHeader, layout_version), 8u);
  EXPECT_EQ(offsetof(TableHeader, header_bytes), 12u);
  EXPECT_EQ(offsetof(TableHeader, slot_stride), 16u);
  EXPECT_EQ(offsetof(TableHeader, reserved0), 20u);
  EXPECT_EQ(offsetof(TableHeader, slot_count), 24u);
  EXPECT_EQ(offsetof(TableHeader, generation), 32u);
  EXPECT_EQ(offsetof(TableHeader, created_at_ns), 40u);
  EXPECT_EQ(offsetof(TableHeader, uuid), 48u);
  EXPECT_EQ(sizeof(TableHeader::uuid), 16u);
  EXPECT_EQ(sizeof(TableHeader), kHeaderBytes);
  EXPECT_EQ(kHeaderBytes, 64u);
  EXPECT_TRUE(std::is_standard_layout_v<TableHeader>);
  // "SVFSVTBL" when the little-endian word is read as bytes.
  EXPECT_EQ(std::memcmp(&kTableMagic, "SVFSVTBL", 8), 0);
}

TEST(VersionTableTest, IsMoveOnly) {
  EXPECT_FALSE(std::is_copy_constructible_v<VersionTable>);
  EXPECT_FALSE(std::is_copy_assignable_v<VersionTable>);
  EXPECT_TRUE(std::is_nothrow_move_constructible_v<VersionTable>);
  EXPECT_TRUE(std::is_nothrow_move_assignable_v<VersionTable>);
}

TEST(VersionTableTest, CreateFillsTheHeader) {
  ScopedTableName name("hdr");
  uint64_t before = NowNs();
  VersionTable table = MustCreate(name.name(), 100);
  uint64_t after = NowNs();
  const TableHeader& header = table.header();
  EXPECT_EQ(header.magic, kTableMagic);
  EXPECT_EQ(header.layout_version, kLayoutVersion);
  EXPECT_EQ(header.header_bytes, kHeaderBytes);
  EXPECT_TRUE(header.slot_stride == 8 || header.slot_stride == 64) << header.slot_stride;
  EXPECT_EQ(header.reserved0, 0u);
  EXPECT_EQ(header.slot_count, 100u);
  EXPECT_EQ(header.generation.load(), 1u);
  EXPECT_GE(header.created_at_ns, before);
  EXPECT_LE(header.created_at_ns, after);
  uint8_t zeros[16] = {};
  EXPECT_NE(std::memcmp(header.uuid, zeros, sizeof(zeros)), 0);
  EXPECT_EQ(table.slot_count(), 100u);
  EXPECT_EQ(table.name(), name.name());
}

TEST(VersionTableTest, UuidsDiffer) {
  ScopedTableName first_name("uuid");
  ScopedTableName second_name("uuid");
  VersionTable first = MustCreate(first_name.name(), 2);
  VersionTable second = MustCreate(second_name.name(), 2);
  EXPECT_NE(std::memcmp(first.header().uuid, second.header().uuid, 16), 0);
}

TEST(VersionTableTest, AttachSeesTheSameTable) {
  ScopedTableName name("attach");
  VersionTable created = MustCreate(name.name(), 1000, 8);
  auto attached = VersionTable::Attach(name.name(), Access::kReadWrite);
  ASSERT_TRUE(attached.has_value()) << attached.error();
  EXPECT_EQ(std::memcmp(created.header().uuid, attached->header().uuid, 16), 0);
  EXPECT_EQ(attached->slot_count(), 1000u);
  EXPECT_EQ(attached->header().slot_stride, 8u);
  EXPECT_EQ(attached->header().generation.load(), 1u);
  EXPECT_EQ(attached->header().created_at_ns, created.header().created_at_ns);
  EXPECT_EQ(attached->mapped_bytes(), created.mapped_bytes());

  // Two mappings of one object: a bump through either is seen by both.
  EXPECT_EQ(created.bump(7), 1u);
  EXPECT_EQ(attached->sample(7), 1u);
  EXPECT_EQ(attached->bump(7), 2u);
  EXPECT_EQ(created.sample(7), 2u);
}

TEST(VersionTableTest, LeadingSlashIsOptional) {
  ScopedTableName name("slash");
  VersionTable created = MustCreate("/" + name.name(), 4);
  EXPECT_EQ(::access(name.path().c_str(), F_OK), 0);
  auto attached = VersionTable::Attach(name.name(), Access::kReadOnly);
  ASSERT_TRUE(attached.has_value()) << attached.error();
  auto attached_slash = VersionTable::Attach("/" + name.name(), Access::kReadOnly);
  ASSERT_TRUE(attached_slash.has_value()) << attached_slash.error();
  EXPECT_EQ(std::memcmp(attached->header().uuid, attached_slash->header().uuid, 16), 0);
}

TEST(VersionTableTest, RefusesNamesWithInnerSlashes) {
  for (std::string bad : {"a/b", "/a/b", "//a", "", "/", ".."}) {
    auto created = VersionTable::Create({.name = bad, .slot_count = 4});
    ASSERT_FALSE(created.has_value()) << bad;
    EXPECT_TRUE(created.error().starts_with("version table " + bad + ": ")) << created.error();
    auto attached = VersionTable::Attach(bad, Access::kReadOnly);
    ASSERT_FALSE(attached.has_value()) << bad;
    EXPECT_FALSE(VersionTable::Remove(bad));
  }
  auto created = VersionTable::Create({.name = "svfs/x", .slot_count = 4});
  ASSERT_FALSE(created.has_value());
  EXPECT_NE(created.error().find("may not contain '/'"), std::string::npos) << created.error();
}

class ObjectSizeTest : public ::testing::TestWithParam<std::pair<uint64_t, uint32_t>> {};

TEST_P(ObjectSizeTest, IsAPowerOfTwoThatHoldsEverySlot) {
  auto [slot_count, stride] = GetParam();
  ScopedTableName name("size");
  VersionTable table = MustCreate(name.name(), slot_count, stride);
  size_t bytes = table.mapped_bytes();
  EXPECT_TRUE(std::has_single_bit(bytes)) << bytes;
  EXPECT_GE(bytes, 4096u);
  EXPECT_GE(bytes, kHeaderBytes + slot_count * stride);
  // The smallest such power of two: no more than twice what the slots need.
  EXPECT_TRUE(bytes == 4096 || bytes / 2 < kHeaderBytes + slot_count * stride) << bytes;
  struct stat st {};
  ASSERT_EQ(::stat(name.path().c_str(), &st), 0);
  EXPECT_EQ(static_cast<size_t>(st.st_size), bytes);
  // The last slot is usable (it would fault if the object were too small).
  EXPECT_EQ(table.bump(slot_count - 1), 1u);
}

INSTANTIATE_TEST_SUITE_P(
    Sizes, ObjectSizeTest,
    ::testing::Values(std::pair<uint64_t, uint32_t>{2, 8}, std::pair<uint64_t, uint32_t>{2, 64},
                      std::pair<uint64_t, uint32_t>{504, 8}, std::pair<uint64_t, uint32_t>{505, 8},
                      std::pair<uint64_t, uint32_t>{63, 64}, std::pair<uint64_t, uint32_t>{64, 64},
                      std::pair<uint64_t, uint32_t>{100'000, 8},
                      std::pair<uint64_t, uint32_t>{100'000, 64}));

TEST(VersionTableTest, CreateRefusesBadOptions) {
  ScopedTableName name("opts");
  struct Case {
    uint64_t slot_count;
    uint32_t stride;
    std::string_view fragment;
  };
  for (const Case& bad : {Case{0, 0, "too small"}, Case{1, 64, "too small"},
                          Case{16, 16, "slot stride 16"}, Case{16, 32, "slot stride 32"},
                          Case{16, 4, "slot stride 4"},
                          Case{uint64_t{1} << 40, 8, "limit"},
                          Case{std::numeric_limits<uint64_t>::max(), 64, "limit"},
                          // Fits 1 TiB of slots exactly but not with the header.
                          Case{(uint64_t{1} << 40) / 64, 64, "limit"}}) {
    auto created = VersionTable::Create(
        {.name = name.name(), .slot_count = bad.slot_count, .slot_stride = bad.stride});
    ASSERT_FALSE(created.has_value()) << bad.slot_count << " x " << bad.stride;
    EXPECT_TRUE(created.error().starts_with("version table " + name.name() + ": "))
        << created.error();
    EXPECT_NE(created.error().find(bad.fragment), std::string::npos) << created.error();
    // Nothing left behind.
    EXPECT_NE(::access(name.path().c_str(), F_OK), 0);
  }
}

TEST(VersionTableTest, CreateFailsIfTheObjectExists) {
  ScopedTableName name("exists");
  VersionTable table = MustCreate(name.name(), 8);
  table.bump(3);
  auto again = VersionTable::Create({.name = name.name(), .slot_count = 8});
  ASSERT_FALSE(again.has_value());
  EXPECT_TRUE(again.error().starts_with("version table " + name.name() + ": already exists ("))
      << again.error();
  // The existing table is untouched.
  EXPECT_EQ(table.sample(3), 1u);
  EXPECT_EQ(table.header().magic, kTableMagic);
}

TEST(VersionTableTest, AttachRefusesAMissingObject) {
  ScopedTableName name("missing");
  ExpectAttachError(name, "does not exist");
  ExpectAttachError(name, "does not exist", Access::kReadOnly);
}

TEST(VersionTableTest, AttachRefusesBadMagic) {
  ScopedTableName name("magic");
  MustCreate(name.name(), 8);
  PokeObject<uint64_t>(name, offsetof(TableHeader, magic), 0x1122334455667788ULL);
  ExpectAttachError(name, "not an svfs version table (bad magic 0x1122334455667788");
}

TEST(VersionTableTest, AttachRefusesAnObjectThatIsNotATable) {
  ScopedTableName name("zeros");
  // A plain file in /dev/shm of a plausible size, all zeros.
  int fd = ::open(name.path().c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0) << std::strerror(errno);
  ASSERT_EQ(::ftruncate(fd, 4096), 0);
  ::close(fd);
  ExpectAttachError(name, "bad magic 0x0000000000000000");
}

TEST(VersionTableTest, AttachRefusesAnotherLayoutVersion) {
  ScopedTableName name("layout");
  MustCreate(name.name(), 8);
  PokeObject<uint32_t>(name, offsetof(TableHeader, layout_version), 2);
  ExpectAttachError(name, "layout version 2 found, 1 expected");
  ExpectAttachError(name, "remove " + name.path() + " or run a matching svfs-versiond");
}

TEST(VersionTableTest, AttachRefusesAnotherHeaderSize) {
  ScopedTableName name("hdrsize");
  MustCreate(name.name(), 8);
  PokeObject<uint32_t>(name, offsetof(TableHeader, header_bytes), 128);
  ExpectAttachError(name, "header_bytes 128 found, 64 expected");
}

TEST(VersionTableTest, AttachRefusesBadStride) {
  ScopedTableName name("stride");
  MustCreate(name.name(), 8);
  for (uint32_t stride : {0u, 16u, 32u, 128u}) {
    PokeObject<uint32_t>(name, offsetof(TableHeader, slot_stride), stride);
    ExpectAttachError(name, fmt::format("slot stride {} is not supported", stride));
  }
}

TEST(VersionTableTest, AttachRefusesTooFewSlots) {
  ScopedTableName name("fewslots");
  MustCreate(name.name(), 8);
  PokeObject<uint64_t>(name, offsetof(TableHeader, slot_count), 1);
  ExpectAttachError(name, "slot_count 1 is too small");
}

TEST(VersionTableTest, AttachRefusesATruncatedObject) {
  ScopedTableName name("trunc");
  MustCreate(name.name(), 1000, 64);  // 64,064 bytes of header and slots in a 64 KiB object
  TruncateObject(name, 4096);
  ExpectAttachError(name, "1000 slots of 64 bytes do not fit in the 4096 byte object");
  TruncateObject(name, 32);
  ExpectAttachError(name, "object is 32 bytes, smaller than the 64 byte header");
  TruncateObject(name, 0);
  ExpectAttachError(name, "object is 0 bytes");
}

TEST(VersionTableTest, AttachRefusesASlotCountThatWouldOverflow) {
  ScopedTableName name("overflow");
  MustCreate(name.name(), 8, 64);
  // header_bytes + slot_count * stride wraps around to a small number in 64 bits.
  PokeObject<uint64_t>(name, offsetof(TableHeader, slot_count), (uint64_t{1} << 58) + 1);
  ExpectAttachError(name, "do not fit");
}

TEST(VersionTableTest, ReadOnlyAttachReadsButNeverWrites) {
  ScopedTableName name("ro");
  VersionTable writer = MustCreate(name.name(), 16);
  writer.bump(5);
  writer.bump(5);
  writer.bump_generation();
  auto reader = VersionTable::Attach(name.name(), Access::kReadOnly);
  ASSERT_TRUE(reader.has_value()) << reader.error();
  EXPECT_EQ(std::memcmp(writer.header().uuid, reader->header().uuid, 16), 0);
  EXPECT_EQ(reader->slot_count(), 16u);
  EXPECT_EQ(reader->header().generation.load(), 2u);
  EXPECT_EQ(reader->sample(5), 2u);
  // A write through the PROT_READ mapping would kill the process; the library refuses instead.
  EXPECT_EQ(reader->bump(5), 0u);
  EXPECT_EQ(reader->bump_generation(), 0u);
  EXPECT_EQ(reader->sample(5), 2u);
  EXPECT_EQ(writer.sample(5), 2u);
  EXPECT_EQ(writer.header().generation.load(), 2u);
  // The reader follows later bumps.
  writer.bump(5);
  EXPECT_EQ(reader->sample(5), 3u);
}

// A table is created 0640 (or the mode asked for, never writable by others), and versiond's
// read-write attach refuses an object planted by someone else or writable by others: its
// writer could forge versions or shrink it under the daemon.
TEST(VersionTableTest, WriterRefusesPlantedOrWritableTables) {
  ScopedTableName name("planted");
  {
    VersionTable created = MustCreate(name.name(), 4);
    struct stat st {};
    ASSERT_EQ(::stat(name.path().c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0640u);
  }
  constexpr auto kMustOwn = VersionTable::Owner::kMustOwn;
  EXPECT_TRUE(VersionTable::Attach(name.name(), Access::kReadWrite, kMustOwn));
  ASSERT_EQ(::chmod(name.path().c_str(), 0666), 0);
  auto writable = VersionTable::Attach(name.name(), Access::kReadWrite, kMustOwn);
  ASSERT_FALSE(writable);
  EXPECT_NE(writable.error().find("not writable by others"), std::string::npos) << writable.error();
  EXPECT_TRUE(VersionTable::Attach(name.name(), Access::kReadOnly));  // svfsctl may still look
  ASSERT_EQ(::chmod(name.path().c_str(), 0640), 0);
  if (::geteuid() == 0) {
    ASSERT_EQ(::chown(name.path().c_str(), 65534, 65534), 0);
    EXPECT_FALSE(VersionTable::Attach(name.name(), Access::kReadWrite, kMustOwn))
        << "adopted nobody's table";
    // A daemon (svfsd) writes a table versiond owns: root may, whoever owns it.
    EXPECT_TRUE(VersionTable::Attach(name.name(), Access::kReadWrite));
  }
  ScopedTableName bad_mode("badmode");
  EXPECT_FALSE(VersionTable::Create({.name = bad_mode.name(), .slot_count = 4, .mode = 0666}));
  EXPECT_FALSE(VersionTable::Create({.name = bad_mode.name(), .slot_count = 4, .mode = 0040}));
}

// The group that may map the table (svfs-versiond's first --allow-gid) and its mode: set on a
// new table and, by its owner, on one taken over, so a restart with other options applies them.
TEST(VersionTableTest, CreateAndTakeOverSetTheGroupAndMode) {
  if (::geteuid() != 0) GTEST_SKIP() << "chown to another group needs root";
  ScopedTableName name("group");
  auto stat_of = [&] {
    struct stat st {};
    EXPECT_EQ(::stat(name.path().c_str(), &st), 0);
    return st;
  };
  {
    auto created = VersionTable::Create({.name = name.name(), .slot_count = 4, .mode = 0660,
                                         .group = 65534});
    ASSERT_TRUE(created) << created.error();
    EXPECT_EQ(stat_of().st_gid, 65534u);
  }
  auto owned = VersionTable::Attach(name.name(), Access::kReadWrite, VersionTable::Owner::kMustOwn);
  ASSERT_TRUE(owned) << owned.error();
  ASSERT_TRUE(owned->set_access(0640, 1));
  EXPECT_EQ(stat_of().st_gid, 1u);
  EXPECT_EQ(stat_of().st_mode & 0777, 0640u);
  ASSERT_TRUE(owned->set_access(0660, VersionTable::kKeepGroup));
  EXPECT_EQ(stat_of().st_gid, 1u);
  EXPECT_EQ(stat_of().st_mode & 0777, 0660u);
  EXPECT_FALSE(owned->set_access(0666, 1)) << "others may never write";
  // A daemon's attach (kAny) does not own the table: it may not change it.
  auto daemon = VersionTable::Attach(name.name(), Access::kReadWrite);
  ASSERT_TRUE(daemon);
  EXPECT_FALSE(daemon->set_access(0640, 1));
  EXPECT_EQ(stat_of().st_mode & 0777, 0660u);
}

// Read-only attach must open the object O_RDONLY: it works where the caller may not write.
int AttachAsUnwritableUser(const ScopedTableName& table) {
  if (::geteuid() == 0) {
    // Root ignores permission bits: become nobody (the object is root's, made 0644 below).
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) return 2;
  } else if (::chmod(table.path().c_str(), 0444) != 0) {
    return 3;
  }
  auto reader = VersionTable::Attach(table.name(), Access::kReadOnly);
  if (!reader || reader->sample(1) != 1) return 4;
  auto writer = VersionTable::Attach(table.name(), Access::kReadWrite);
  if (writer || writer.error().find("cannot open") == std::string::npos) return 5;
  return 0;
}

TEST(VersionTableTest, ReadOnlyAttachWorksWithoutWritePermission) {
  ScopedTableName name("ro-perm");
  VersionTable writer = MustCreate(name.name(), 4);
  writer.bump(1);
  ASSERT_EQ(::chmod(name.path().c_str(), 0644), 0);  // readable by nobody
  // In a child, so that dropping privileges does not affect the rest of the tests.
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) ::_exit(AttachAsUnwritableUser(name));
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "see AttachAsUnwritableUser for the failing step";
}

class SlotTest : public ::testing::TestWithParam<uint32_t> {};

TEST_P(SlotTest, BumpAndSample) {
  ScopedTableName name("slots");
  VersionTable table = MustCreate(name.name(), 10, GetParam());
  for (uint64_t slot = 0; slot < 10; ++slot) EXPECT_EQ(table.sample(slot), 0u) << slot;
  EXPECT_EQ(table.bump(1), 1u);
  EXPECT_EQ(table.bump(1), 2u);
  EXPECT_EQ(table.bump(1), 3u);
  EXPECT_EQ(table.sample(1), 3u);
  EXPECT_EQ(table.bump(9), 1u);
  // Neighbours are separate counters.
  EXPECT_EQ(table.sample(2), 0u);
  EXPECT_EQ(table.sample(8), 0u);
  EXPECT_EQ(table.sample(9), 1u);
  // Slot 0 is "no version": never counts.
  EXPECT_EQ(table.bump(0), 0u);
  EXPECT_EQ(table.sample(0), 0u);
  // Out of range: no-op, reads as 0.
  EXPECT_EQ(table.bump(10), 0u);
  EXPECT_EQ(table.bump(std::numeric_limits<uint64_t>::max()), 0u);
  EXPECT_EQ(table.sample(10), 0u);
  EXPECT_EQ(table.sample(std::numeric_limits<uint64_t>::max()), 0u);
}

TEST_P(SlotTest, SlotsLiveAtHeaderBytesPlusIndexTimesStride) {
  // The guest kernel computes this address itself, so it is part of the wire format.
  uint32_t stride = GetParam();
  ScopedTableName name("placement");
  VersionTable table = MustCreate(name.name(), 10, stride);
  for (int i = 0; i < 3; ++i) table.bump(4);
  table.bump(5);
  EXPECT_EQ(PeekObject<uint64_t>(name, kHeaderBytes + 4 * stride), 3u);
  EXPECT_EQ(PeekObject<uint64_t>(name, kHeaderBytes + 5 * stride), 1u);
  EXPECT_EQ(PeekObject<uint64_t>(name, kHeaderBytes + 3 * stride), 0u);
  // And a value written there (e.g. by another implementation) is what sample() reads.
  PokeObject<uint64_t>(name, kHeaderBytes + 6 * stride, 41);
  EXPECT_EQ(table.sample(6), 41u);
  EXPECT_EQ(table.bump(6), 42u);
}

INSTANTIATE_TEST_SUITE_P(Strides, SlotTest, ::testing::Values(8u, 64u),
                         [](const auto& info) { return fmt::format("stride{}", info.param); });

// A process with write access shrinks the object under live mappings (versiond's and a daemon's):
// neither dies of SIGBUS; both notice the table is damaged.
TEST(VersionTableTest, ShrinkUnderTheMappingIsSurvivedAndReported) {
  ScopedTableName name("shrink");
  VersionTable owner = MustCreate(name.name(), 1024);
  auto writer = VersionTable::Attach(name.name(), Access::kReadWrite);
  ASSERT_TRUE(writer) << writer.error();
  ASSERT_EQ(owner.bump(1000), 1u);
  EXPECT_FALSE(owner.damaged());
  TruncateObject(name, 0);
  EXPECT_EQ(writer->sample(1000), 0u);  // a private zero page stands in for the lost one
  owner.bump(1000);
  owner.bump_generation();
  EXPECT_TRUE(owner.damaged());
  EXPECT_TRUE(writer->damaged());
}

TEST(VersionTableTest, BumpGeneration) {
  ScopedTableName name("gen");
  VersionTable table = MustCreate(name.name(), 4);
  EXPECT_EQ(table.header().generation.load(), 1u);
  EXPECT_EQ(table.bump_generation(), 2u);
  EXPECT_EQ(table.bump_generation(), 3u);
  auto attached = VersionTable::Attach(name.name(), Access::kReadWrite);
  ASSERT_TRUE(attached.has_value()) << attached.error();
  EXPECT_EQ(attached->header().generation.load(), 3u);
  EXPECT_EQ(attached->bump_generation(), 4u);
  EXPECT_EQ(table.header().generation.load(), 4u);
  EXPECT_EQ(PeekObject<uint64_t>(name, offsetof(TableHeader, generation)), 4u);
}

TEST(VersionTableTest, BumpAllMovesEverySlotButZeroOnce) {
  ScopedTableName name("bumpall");
  VersionTable table = MustCreate(name.name(), 8);
  table.bump(3);
  EXPECT_EQ(table.bump_all(), 7u);
  EXPECT_EQ(table.sample(0), 0u);
  for (uint64_t slot = 1; slot < 8; ++slot) EXPECT_EQ(table.sample(slot), slot == 3 ? 2u : 1u);
  auto reader = VersionTable::Attach(name.name(), Access::kReadOnly);
  ASSERT_TRUE(reader) << reader.error();
  EXPECT_EQ(reader->bump_all(), 0u) << "a read-only mapping bumps nothing";
  EXPECT_EQ(table.sample(1), 1u);
}

TEST(VersionTableTest, RemoveUnlinksButMappingsStayValid) {
  ScopedTableName name("remove");
  VersionTable table = MustCreate(name.name(), 4);
  table.bump(1);
  EXPECT_TRUE(VersionTable::Remove(name.name()));
  EXPECT_NE(::access(name.path().c_str(), F_OK), 0);
  EXPECT_FALSE(VersionTable::Remove(name.name()));
  ExpectAttachError(name, "does not exist");
  EXPECT_EQ(table.bump(1), 2u);
  EXPECT_EQ(table.sample(1), 2u);
  // The name is free again.
  VersionTable fresh = MustCreate(name.name(), 4);
  EXPECT_EQ(fresh.sample(1), 0u);
  EXPECT_NE(std::memcmp(fresh.header().uuid, table.header().uuid, 16), 0);
  EXPECT_TRUE(VersionTable::Remove("/" + name.name()));
}

TEST(VersionTableTest, MoveConstructAndAssign) {
  ScopedTableName first_name("move");
  ScopedTableName second_name("move");
  VersionTable first = MustCreate(first_name.name(), 4);
  first.bump(2);
  VersionTable moved(std::move(first));
  EXPECT_EQ(moved.name(), first_name.name());
  EXPECT_EQ(moved.sample(2), 1u);
  EXPECT_EQ(moved.bump(2), 2u);
  // The moved-from object owns nothing but is safe to query and destroy.
  EXPECT_EQ(first.name(), "");                // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(first.slot_count(), 0u);
  EXPECT_EQ(first.mapped_bytes(), 0u);
  EXPECT_EQ(first.sample(2), 0u);
  EXPECT_EQ(first.bump(2), 0u);
  EXPECT_EQ(first.bump_generation(), 0u);

  VersionTable second = MustCreate(second_name.name(), 8);
  second.bump(3);
  moved = std::move(second);  // unmaps the first table
  EXPECT_EQ(moved.name(), second_name.name());
  EXPECT_EQ(moved.slot_count(), 8u);
  EXPECT_EQ(moved.sample(3), 1u);
  EXPECT_EQ(second.slot_count(), 0u);  // NOLINT(bugprone-use-after-move)

  // Assigning into a moved-from object works too.
  first = std::move(moved);
  EXPECT_EQ(first.sample(3), 1u);
  // The first table's object is untouched by unmapping.
  auto reattached = VersionTable::Attach(first_name.name(), Access::kReadOnly);
  ASSERT_TRUE(reattached.has_value()) << reattached.error();
  EXPECT_EQ(reattached->sample(2), 2u);
}

}  // namespace
}  // namespace svfs::shm
