#include "tests/support/files.h"

#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <sstream>

namespace svfs_test {

std::string ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

namespace {

int RemoveTreeEntry(const char* p, const struct stat*, int type, struct FTW*) {
  if (type == FTW_DP || type == FTW_D)
    ::rmdir(p);
  else
    ::unlink(p);
  return 0;
}

}  // namespace

void RemoveTree(const std::string& path) {
  if (path.size() > 1) ::nftw(path.c_str(), RemoveTreeEntry, 64, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}

TempDir::TempDir(const std::filesystem::path& parent) {
  std::string tmpl = (parent / "svfs-test-XXXXXX").string();
  if (::mkdtemp(tmpl.data()) == nullptr)
    throw std::runtime_error("mkdtemp " + tmpl + ": " + std::strerror(errno));
  path_ = tmpl;
}

TempDir::~TempDir() { RemoveTree(path_.string()); }

}  // namespace svfs_test
