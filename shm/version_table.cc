#include "shm/version_table.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sys/random.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <optional>
#include <array>
#include <bit>
#include <cerrno>
#include <cstring>
#include <memory>
#include <new>
#include <utility>

#include <fmt/format.h>
#include <boost/interprocess/exceptions.hpp>
#include <boost/interprocess/mapped_region.hpp>
#include <boost/interprocess/shared_memory_object.hpp>

#include "common/unique_fd.h"
#include "shm/fault_guard.h"

namespace svfs::shm {

namespace bip = boost::interprocess;

namespace {

constexpr uid_t kKeepUser = static_cast<uid_t>(-1);  // fchown: the owner stays
constexpr const char* kPermissionHint =
    " (the table's group and mode must admit this user: svfs-versiond --allow-gid GROUP "
    "--table-mode 0660 gives it that group)";

// Default slot stride, chosen by measurement (docs/performance.md, "Version table: packed vs
// padded slots").
constexpr uint32_t kDefaultSlotStride = 64;
// QEMU maps the object as a PCI BAR: a power of two, and never smaller than a page.
constexpr uint64_t kMinObjectBytes = 4096;
// Far beyond any real inode count; refusing it catches unit mistakes before ftruncate does.
constexpr uint64_t kMaxObjectBytes = uint64_t{1} << 40;

// Lock-free 64-bit loads are plain loads (x86-64, aarch64), so sample() works on PROT_READ memory
// and across processes, where a lock-based atomic could not.
static_assert(std::atomic_ref<uint64_t>::is_always_lock_free);
static_assert(std::atomic_ref<uint64_t>::required_alignment <= 8);
static_assert(offsetof(TableHeader, magic) == 0);
static_assert(offsetof(TableHeader, layout_version) == 8);
static_assert(offsetof(TableHeader, header_bytes) == 12);
static_assert(offsetof(TableHeader, slot_stride) == 16);
static_assert(offsetof(TableHeader, reserved0) == 20);
static_assert(offsetof(TableHeader, slot_count) == 24);
static_assert(offsetof(TableHeader, generation) == 32);
static_assert(offsetof(TableHeader, created_at_ns) == 40);
static_assert(offsetof(TableHeader, uuid) == 48);

std::atomic<int> g_shm_directory{-1};

// Lets mapped_region map a descriptor of ours (an shm object opened with openat).
struct FdMappable {
  int fd;
  bip::mapping_handle_t get_mapping_handle() const {
    return bip::ipcdetail::mapping_handle_from_file_handle(fd);
  }
};

bool IsValidStride(uint64_t stride) { return stride == 8 || stride == 64; }

std::string Prefix(std::string_view name) { return fmt::format("version table {}: ", name); }

// Boost adds the leading '/' for shm_open itself; anything else with a '/' would not name a file
// directly in /dev/shm.
std::expected<std::string, std::string> ShmObjectName(std::string_view name) {
  std::string_view bare = name;
  if (bare.starts_with('/')) bare.remove_prefix(1);
  if (bare.empty()) return std::unexpected(Prefix(name) + "empty shm object name");
  if (bare.find('/') != std::string_view::npos) {
    return std::unexpected(Prefix(name) +
                           "shm object names may not contain '/' except a leading one "
                           "(the object is the file /dev/shm/<name>)");
  }
  if (bare == "." || bare == "..") return std::unexpected(Prefix(name) + "invalid shm object name");
  return std::string(bare);
}

std::string DescribeBoostError(const bip::interprocess_exception& error) {
  int native = error.get_native_error();
  if (native != 0) return fmt::format("{} (errno {})", std::strerror(native), native);
  return error.what();
}

std::expected<void, std::string> FillRandom(uint8_t* bytes, size_t count) {
  size_t filled = 0;
  while (filled < count) {
    ssize_t got = ::getrandom(bytes + filled, count - filled, 0);
    if (got < 0) {
      if (errno == EINTR) continue;
      return std::unexpected(fmt::format("getrandom: {}", std::strerror(errno)));
    }
    filled += static_cast<size_t>(got);
  }
  return {};
}

uint64_t RealtimeNs() {
  timespec now{};
  ::clock_gettime(CLOCK_REALTIME, &now);
  return static_cast<uint64_t>(now.tv_sec) * 1'000'000'000ULL + static_cast<uint64_t>(now.tv_nsec);
}

// Why `mode` is not one a table may have; empty if it is.
std::string CheckMode(unsigned mode) {
  if ((mode & ~0777u) != 0 || (mode & 0002u) != 0 || (mode & 0600u) != 0600u) {
    return fmt::format("mode {:o}: the owner must read and write, others may not write (e.g. "
                       "0640, 0660)", mode);
  }
  return {};
}

}  // namespace

struct VersionTable::Mapping {
  std::string name;  // as given by the caller, for messages and name()
  Access access = Access::kReadOnly;
  bip::mapped_region region;
  // Declared after `region`, so released before the unmap. A process with write access to the
  // object could shrink it: accesses then fault into the guard instead of killing us.
  FaultGuard guard;
  std::byte* base = nullptr;
  // The object, kept by Create and by an Attach with kMustOwn: set_access changes it.
  UniqueFd owned_object;
  uint64_t slot_count = 0;
  uint32_t header_bytes = 0;
  uint32_t slot_stride = 0;

  TableHeader* header() { return reinterpret_cast<TableHeader*>(base); }

  // The slot's counter; only called with 0 < slot < slot_count.
  uint64_t& counter(uint64_t slot) {
    return *reinterpret_cast<uint64_t*>(base + header_bytes + slot * slot_stride);
  }
};

VersionTable::VersionTable(std::unique_ptr<Mapping> mapping) : mapping_(std::move(mapping)) {}
VersionTable::VersionTable(VersionTable&&) noexcept = default;
VersionTable& VersionTable::operator=(VersionTable&&) noexcept = default;
VersionTable::~VersionTable() = default;

std::expected<VersionTable, std::string> VersionTable::Create(const CreateOptions& options) {
  const std::string& name = options.name;
  auto object_name = ShmObjectName(name);
  if (!object_name) return std::unexpected(object_name.error());

  uint32_t stride = options.slot_stride == 0 ? kDefaultSlotStride : options.slot_stride;
  if (!IsValidStride(stride)) {
    return std::unexpected(
        Prefix(name) + fmt::format("slot stride {} is not supported (8 = packed, 64 = padded)", stride));
  }
  if (options.slot_count < 2) {
    return std::unexpected(Prefix(name) + fmt::format("slot_count {} is too small (slot 0 is "
                                                      "reserved, so at least 2)",
                                                      options.slot_count));
  }
  // Checked before multiplying so that the product cannot overflow.
  if (options.slot_count > (kMaxObjectBytes - kHeaderBytes) / stride) {
    return std::unexpected(Prefix(name) +
                           fmt::format("{} slots of {} bytes exceed the {} byte limit",
                                       options.slot_count, stride, kMaxObjectBytes));
  }
  uint64_t used_bytes = kHeaderBytes + options.slot_count * stride;
  uint64_t object_bytes = std::max(kMinObjectBytes, std::bit_ceil(used_bytes));
  if (object_bytes > kMaxObjectBytes) {
    return std::unexpected(Prefix(name) + fmt::format("{} slots of {} bytes need a {} byte object, "
                                                      "over the {} byte limit",
                                                      options.slot_count, stride, object_bytes,
                                                      kMaxObjectBytes));
  }

  if (auto bad = CheckMode(options.mode); !bad.empty()) return std::unexpected(Prefix(name) + bad);
  bool created = false;
  try {
    // create_only is O_CREAT | O_EXCL: an object someone else made first is never adopted here.
    bip::permissions permissions(options.mode);
    bip::shared_memory_object object(bip::create_only, object_name->c_str(), bip::read_write,
                                     permissions);
    created = true;
    if (options.group != kKeepGroup &&
        ::fchown(object.get_mapping_handle().handle, kKeepUser, options.group) != 0) {
      const int error = errno;
      bip::shared_memory_object::remove(object_name->c_str());
      return std::unexpected(Prefix(name) + fmt::format("chown /dev/shm/{} to group {}: {}",
                                                        *object_name, options.group,
                                                        std::strerror(error)));
    }
    object.truncate(static_cast<bip::offset_t>(object_bytes));
    auto mapping = std::make_unique<Mapping>();
    mapping->name = name;
    mapping->access = Access::kReadWrite;
    mapping->region = bip::mapped_region(object, bip::read_write);
    mapping->guard = FaultGuard::Guard(mapping->region.get_address(), mapping->region.get_size());
    mapping->base = static_cast<std::byte*>(mapping->region.get_address());
    mapping->owned_object = UniqueFd(::fcntl(object.get_mapping_handle().handle, F_DUPFD_CLOEXEC, 0));
    mapping->slot_count = options.slot_count;
    mapping->header_bytes = kHeaderBytes;
    mapping->slot_stride = stride;

    auto uuid_bytes = std::array<uint8_t, 16>{};
    if (auto random = FillRandom(uuid_bytes.data(), uuid_bytes.size()); !random) {
      bip::shared_memory_object::remove(object_name->c_str());
      return std::unexpected(Prefix(name) + random.error());
    }
    // RFC 9562 version 4 (random) with the standard variant, so tools print it as a uuid.
    uuid_bytes[6] = static_cast<uint8_t>((uuid_bytes[6] & 0x0f) | 0x40);
    uuid_bytes[8] = static_cast<uint8_t>((uuid_bytes[8] & 0x3f) | 0x80);

    // A fresh object reads as zeros, so the slots start at 0 and magic is still unset.
    TableHeader* header = mapping->header();
    header->layout_version = kLayoutVersion;
    header->header_bytes = kHeaderBytes;
    header->slot_stride = stride;
    header->reserved0 = 0;
    header->slot_count = options.slot_count;
    header->generation.store(1, std::memory_order_relaxed);
    header->created_at_ns = RealtimeNs();
    std::memcpy(header->uuid, uuid_bytes.data(), uuid_bytes.size());
    // Magic last: an attacher that sees it (acquire) also sees every field above.
    std::atomic_ref<uint64_t>(header->magic).store(kTableMagic, std::memory_order_release);
    return VersionTable(std::move(mapping));
  } catch (const bip::interprocess_exception& error) {
    if (!created && error.get_error_code() == bip::already_exists_error) {
      return std::unexpected(Prefix(name) + fmt::format("already exists (/dev/shm/{}; attach to it, "
                                                        "or remove it if no svfs-versiond owns it)",
                                                        *object_name));
    }
    // Do not leave a half-made object behind to block the next attempt.
    if (created) bip::shared_memory_object::remove(object_name->c_str());
    return std::unexpected(Prefix(name) + fmt::format("cannot create /dev/shm/{} of {} bytes: {}",
                                                      *object_name, object_bytes,
                                                      DescribeBoostError(error)));
  } catch (const std::bad_alloc&) {
    if (created) bip::shared_memory_object::remove(object_name->c_str());
    return std::unexpected(Prefix(name) + "out of memory");
  }
}

void SetShmDirectory(int dir_fd) { g_shm_directory.store(dir_fd, std::memory_order_release); }

std::expected<VersionTable, std::string> VersionTable::Attach(std::string_view name_view,
                                                              Access access, Owner owner) {
  std::string name(name_view);
  auto object_name = ShmObjectName(name);
  if (!object_name) return std::unexpected(object_name.error());
  const bip::mode_t mode = access == Access::kReadWrite ? bip::read_write : bip::read_only;

  auto mapping = std::make_unique<Mapping>();
  mapping->name = name;
  mapping->access = access;
  bip::offset_t object_bytes = 0;
  try {
    // In a sandbox /dev/shm is reached through a descriptor kept open (SetShmDirectory).
    std::optional<bip::shared_memory_object> object;
    UniqueFd opened;
    int object_fd = -1;
    if (const int dir = g_shm_directory.load(std::memory_order_acquire); dir >= 0) {
      const int flags = (access == Access::kReadWrite ? O_RDWR : O_RDONLY) | O_NOFOLLOW | O_CLOEXEC;
      opened = UniqueFd(::openat(dir, object_name->c_str(), flags));
      if (!opened) {
        if (errno == ENOENT) throw bip::interprocess_exception(bip::error_info(bip::not_found_error));
        const int error = errno;
        return std::unexpected(Prefix(name) + fmt::format("cannot open /dev/shm/{}: {}{}",
                                                          *object_name, std::strerror(error),
                                                          error == EACCES ? kPermissionHint : ""));
      }
      object_fd = opened.get();
      struct stat st {};
      if (::fstat(object_fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        return std::unexpected(Prefix(name) + fmt::format("cannot read the size of /dev/shm/{}",
                                                          *object_name));
      }
      object_bytes = st.st_size;
    } else {
      object.emplace(bip::open_only, object_name->c_str(), mode);
      if (!object->get_size(object_bytes)) {
        return std::unexpected(Prefix(name) + fmt::format("cannot read the size of /dev/shm/{}",
                                                          *object_name));
      }
      object_fd = object->get_mapping_handle().handle;
    }
    if (owner == Owner::kMustOwn) {
      struct stat st {};
      if (::fstat(object_fd, &st) != 0) {
        return std::unexpected(Prefix(name) + fmt::format("cannot stat /dev/shm/{}: {}",
                                                          *object_name, std::strerror(errno)));
      }
      if (st.st_uid != ::geteuid() || (st.st_mode & 0002) != 0) {
        return std::unexpected(
            Prefix(name) + fmt::format("/dev/shm/{} is owned by uid {} with mode {:o}: a table to "
                                       "take over must be this user's and not writable by others; "
                                       "remove it",
                                       *object_name, st.st_uid, st.st_mode & 07777));
      }
      mapping->owned_object = UniqueFd(::fcntl(object_fd, F_DUPFD_CLOEXEC, 0));
    }
    // Checked before mapping: mmap of an empty object fails, and reading a header past the end
    // of a short one would raise SIGBUS.
    if (object_bytes < static_cast<bip::offset_t>(kHeaderBytes)) {
      return std::unexpected(Prefix(name) + fmt::format("object is {} bytes, smaller than the {} "
                                                        "byte header (truncated or not a version "
                                                        "table)",
                                                        object_bytes, kHeaderBytes));
    }
    mapping->region = bip::mapped_region(FdMappable{object_fd}, mode);
  } catch (const bip::interprocess_exception& error) {
    if (error.get_error_code() == bip::not_found_error) {
      return std::unexpected(Prefix(name) + fmt::format("does not exist (/dev/shm/{}; is "
                                                        "svfs-versiond running?)",
                                                        *object_name));
    }
    return std::unexpected(Prefix(name) + fmt::format(
        "cannot open /dev/shm/{}: {}{}", *object_name, DescribeBoostError(error),
        error.get_native_error() == EACCES ? kPermissionHint : ""));
  }
  mapping->guard = FaultGuard::Guard(mapping->region.get_address(), mapping->region.get_size());
  mapping->base = static_cast<std::byte*>(mapping->region.get_address());
  TableHeader* header = mapping->header();
  const uint64_t size = static_cast<uint64_t>(object_bytes);

  // Acquire pairs with the creator's release store of magic (the header is complete after it).
  uint64_t magic = std::atomic_ref<uint64_t>(header->magic).load(std::memory_order_acquire);
  if (magic != kTableMagic) {
    return std::unexpected(Prefix(name) + fmt::format("not an svfs version table (bad magic {:#018x}, "
                                                      "expected {:#018x})",
                                                      magic, kTableMagic));
  }
  if (header->layout_version != kLayoutVersion) {
    return std::unexpected(
        Prefix(name) + fmt::format("layout version {} found, {} expected; remove /dev/shm/{} or "
                                   "run a matching svfs-versiond",
                                   header->layout_version, kLayoutVersion, *object_name));
  }
  if (header->header_bytes != kHeaderBytes) {
    return std::unexpected(Prefix(name) + fmt::format("header_bytes {} found, {} expected",
                                                      header->header_bytes, kHeaderBytes));
  }
  if (!IsValidStride(header->slot_stride)) {
    return std::unexpected(Prefix(name) + fmt::format("slot stride {} is not supported (8 or 64)",
                                                      header->slot_stride));
  }
  // Copied once: the fields could be overwritten by a buggy writer after these checks, and the
  // bounds used by sample()/bump() must be the checked ones.
  const uint64_t slot_count = header->slot_count;
  const uint32_t stride = header->slot_stride;
  if (slot_count < 2) {
    return std::unexpected(Prefix(name) + fmt::format("slot_count {} is too small", slot_count));
  }
  if (slot_count > (size - kHeaderBytes) / stride) {
    return std::unexpected(Prefix(name) + fmt::format("{} slots of {} bytes do not fit in the {} "
                                                      "byte object (truncated?)",
                                                      slot_count, stride, size));
  }
  mapping->slot_count = slot_count;
  mapping->header_bytes = kHeaderBytes;
  mapping->slot_stride = stride;
  return VersionTable(std::move(mapping));
}

std::expected<void, std::string> VersionTable::set_access(unsigned mode, gid_t group) {
  const std::string& name = mapping_->name;
  if (!mapping_->owned_object) {
    return std::unexpected(Prefix(name) + "permissions are set only by the table's owner");
  }
  if (auto bad = CheckMode(mode); !bad.empty()) return std::unexpected(Prefix(name) + bad);
  const int fd = mapping_->owned_object.get();
  if (group != kKeepGroup && ::fchown(fd, kKeepUser, group) != 0) {
    return std::unexpected(Prefix(name) + fmt::format("chown to group {}: {}", group,
                                                      std::strerror(errno)));
  }
  if (::fchmod(fd, mode) != 0) {
    return std::unexpected(Prefix(name) + fmt::format("chmod {:o}: {}", mode,
                                                      std::strerror(errno)));
  }
  return {};
}

bool VersionTable::Remove(std::string_view name) {
  auto object_name = ShmObjectName(name);
  if (!object_name) return false;
  return bip::shared_memory_object::remove(object_name->c_str());
}

const TableHeader& VersionTable::header() const { return *mapping_->header(); }

uint64_t VersionTable::slot_count() const { return mapping_ ? mapping_->slot_count : 0; }

std::string_view VersionTable::name() const {
  return mapping_ ? std::string_view(mapping_->name) : std::string_view();
}

size_t VersionTable::mapped_bytes() const { return mapping_ ? mapping_->region.get_size() : 0; }

uint64_t VersionTable::sample(uint64_t slot) const {
  if (!mapping_ || slot == 0 || slot >= mapping_->slot_count) return 0;
  return std::atomic_ref<uint64_t>(mapping_->counter(slot)).load(std::memory_order_acquire);
}

uint64_t VersionTable::bump(uint64_t slot) {
  // A write through a PROT_READ mapping would SIGSEGV the whole daemon; refuse it instead.
  if (!mapping_ || mapping_->access != Access::kReadWrite) return 0;
  if (slot == 0 || slot >= mapping_->slot_count) return 0;
  return std::atomic_ref<uint64_t>(mapping_->counter(slot)).fetch_add(1, std::memory_order_acq_rel) +
         1;
}

uint64_t VersionTable::bump_all() {
  if (!mapping_ || mapping_->access != Access::kReadWrite) return 0;
  const uint64_t n = mapping_->slot_count;
  for (uint64_t slot = 1; slot < n; ++slot) {
    std::atomic_ref<uint64_t>(mapping_->counter(slot)).fetch_add(1, std::memory_order_acq_rel);
  }
  return n - 1;
}

uint64_t VersionTable::bump_generation() {
  if (!mapping_ || mapping_->access != Access::kReadWrite) return 0;
  return mapping_->header()->generation.fetch_add(1, std::memory_order_acq_rel) + 1;
}

bool VersionTable::damaged() const { return mapping_ && mapping_->guard.tripped(); }

}  // namespace svfs::shm
