// Host-side file helpers shared by the test suites.
#pragma once

#include <string>

namespace svfs_test {

// The whole file, or "" if it cannot be read.
std::string ReadWholeFile(const std::string& path);

// Removes a tree without crossing mount points, so a mount left behind under it (a hung FUSE
// daemon, a bind mount) is never descended into. Does nothing for "" and "/".
void RemoveTree(const std::string& path);

}  // namespace svfs_test
