// Host-side file helpers shared by the test suites.
#pragma once

#include <filesystem>
#include <string>

namespace svfs_test {

// The whole file, or "" if it cannot be read.
std::string ReadWholeFile(const std::string& path);

// Removes a tree without crossing mount points, so a mount left behind under it (a hung FUSE
// daemon, a bind mount) is never descended into. Does nothing for "" and "/".
void RemoveTree(const std::string& path);

// A fresh directory `parent`/svfs-test-XXXXXX, removed with everything in it on destruction.
class TempDir {
 public:
  explicit TempDir(const std::filesystem::path& parent = std::filesystem::temp_directory_path());
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace svfs_test
