// Unique shm object names for the version table tests, so that parallel ctest runs and several
// engineers' builds on one machine never meet in /dev/shm.
#pragma once

#include <unistd.h>

#include <atomic>
#include <string>

#include <fmt/format.h>

#include "shm/version_table.h"

namespace svfs::shm::testing {

inline std::string UniqueTableName(std::string_view purpose) {
  static std::atomic<int> counter{0};
  return fmt::format("svfs-test-{}-{}-{}", purpose, ::getpid(), counter.fetch_add(1));
}

// Removes the object at the end of a test, also when an assertion returned early.
class ScopedTableName {
 public:
  explicit ScopedTableName(std::string_view purpose) : name_(UniqueTableName(purpose)) {}
  ~ScopedTableName() { VersionTable::Remove(name_); }
  ScopedTableName(const ScopedTableName&) = delete;
  ScopedTableName& operator=(const ScopedTableName&) = delete;

  const std::string& name() const { return name_; }
  std::string path() const { return "/dev/shm/" + name_; }

 private:
  std::string name_;
};

}  // namespace svfs::shm::testing
