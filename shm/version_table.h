// The shared version table: one shared-memory object holding a fixed header and an array of
// 64-bit version counters, mapped by svfs-versiond and every svfsd (read-write) and by guests
// (read-only, through ivshmem). Fixed layout, no pointers: the same bytes mean the same thing in
// every process and in the guest kernel, which reads it without this code (docs/protocol.md).
//
// Slot 0 is "no version". An inode's slot is computed from its identity
// (protocol/inode_identity.h); slots are never handed out or freed, and a counter only grows, so
// a guest can only ever read a larger number than it cached, and revalidates.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <expected>
#include <memory>
#include <string>
#include <string_view>

namespace svfs::shm {

inline constexpr uint64_t kTableMagic = 0x4c42545653465653ULL;  // "SVFSVTBL" in memory order
inline constexpr uint32_t kLayoutVersion = 1;
inline constexpr size_t kHeaderBytes = 64;

// The first cache line of the object. Offsets are part of the wire format (docs/protocol.md).
struct TableHeader {
  uint64_t magic;                     //  0: kTableMagic
  uint32_t layout_version;            //  8: kLayoutVersion
  uint32_t header_bytes;              // 12: kHeaderBytes; slot i lives at header_bytes + i * slot_stride
  uint32_t slot_stride;               // 16: bytes between consecutive slots (8 packed, 64 padded)
  uint32_t reserved0;                 // 20: zero
  uint64_t slot_count;                // 24: slots including slot 0
  std::atomic<uint64_t> generation;   // 32: +1 each time a versiond (re)starts on this table
  uint64_t created_at_ns;             // 40: CLOCK_REALTIME at creation
  uint8_t uuid[16];                   // 48: random at creation; names this table
};
static_assert(sizeof(TableHeader) == kHeaderBytes);
static_assert(std::atomic<uint64_t>::is_always_lock_free);
static_assert(sizeof(std::atomic<uint64_t>) == sizeof(uint64_t));

enum class Access { kReadOnly, kReadWrite };

// A mapping of the table. Move-only; unmaps on destruction. Creation and attach errors are
// values carrying a message fit for a log line ("version table /svfs-versions: bad magic ...").
// Attach opens tables with openat(dir_fd, name) instead of shm_open from here on: a sandboxed
// svfsd keeps /dev/shm open as an O_PATH descriptor, its path being out of reach. -1: shm_open.
void SetShmDirectory(int dir_fd);

class VersionTable {
 public:
  static constexpr gid_t kKeepGroup = static_cast<gid_t>(-1);

  struct CreateOptions {
    std::string name;           // shm object name, e.g. "svfs-versions" (file /dev/shm/<name>)
    uint64_t slot_count = 0;    // including slot 0; >= 2
    uint32_t slot_stride = 0;   // 0 = the default chosen by measurement (docs/performance.md)
    // Permission bits of the object: readable by the group guests' VMMs run in; the owner reads
    // and writes, others never write (a writer could forge versions).
    unsigned mode = 0640;
    // The object's group (the VMMs' and any non-root svfsd's); kKeepGroup leaves the creator's.
    gid_t group = kKeepGroup;
  };

  // Creates a new table (fails if the object exists), random uuid, generation 1.
  static std::expected<VersionTable, std::string> Create(const CreateOptions& options);
  // Maps an existing table; checks magic, layout version, header size, stride and that the object
  // is large enough for slot_count. kReadOnly maps PROT_READ (svfsctl). 
  // kMustOwn (svfs-versiond taking a table over): the object must be this user's and not
  // writable by others, so a table planted in /dev/shm is refused instead of adopted.
  enum class Owner { kAny, kMustOwn };
  static std::expected<VersionTable, std::string> Attach(std::string_view name, Access access,
                                                         Owner owner = Owner::kAny);
  // Sets the object's permission bits and group (kKeepGroup: unchanged), as Create does, on a
  // table this process created or attached with kMustOwn (a restart applies new options).
  std::expected<void, std::string> set_access(unsigned mode, gid_t group);
  // Removes the shm object name (existing mappings stay valid). Returns false if it did not exist.
  static bool Remove(std::string_view name);

  VersionTable(VersionTable&&) noexcept;
  VersionTable& operator=(VersionTable&&) noexcept;
  ~VersionTable();

  const TableHeader& header() const;
  uint64_t slot_count() const;
  std::string_view name() const;
  // Total bytes of the object (a power of two, so that ivshmem can expose it as a PCI BAR).
  size_t mapped_bytes() const;

  // Current version of `slot` (acquire load). Slot 0 and slots >= slot_count read as 0.
  uint64_t sample(uint64_t slot) const;
  // Increments `slot` and returns the new version (acq_rel). No-op returning 0 for slot 0,
  // out-of-range slots and on a read-only mapping.
  uint64_t bump(uint64_t slot);
  // Bumps every slot 1..slot_count-1 once (what changed is unknown: a restart, a lost event);
  // returns how many. 0 on a read-only mapping.
  uint64_t bump_all();
  // Increments the header generation; returns the new value (versiond on (re)start). Returns 0
  // on a read-only mapping.
  uint64_t bump_generation();
  // Whether the object shrank under this mapping (someone with write access truncated it). The
  // accesses that found it so completed on private zero pages instead of raising SIGBUS; the
  // table can no longer be trusted and should be replaced.
  bool damaged() const;

 private:
  struct Mapping;
  explicit VersionTable(std::unique_ptr<Mapping> mapping);
  std::unique_ptr<Mapping> mapping_;  // empty once moved from
};

}  // namespace svfs::shm
