// A DaxMapper for unit tests: records what the VMM was asked, fails (EIO) on demand.
#pragma once

#include <cerrno>
#include <span>
#include <vector>

#include "daemon/fuse/dax_window.h"

namespace svfs::testing {

class RecordingDaxMapper final : public fuse::DaxMapper {
 public:
  Status map(int, const fuse::DaxMapping& mapping) override {
    if (fail) return Err(EIO);
    maps.push_back(mapping);
    return {};
  }
  Status unmap(std::span<const fuse::DaxRange> ranges) override {
    if (fail) return Err(EIO);
    unmaps.insert(unmaps.end(), ranges.begin(), ranges.end());
    return {};
  }
  bool fail = false;
  std::vector<fuse::DaxMapping> maps;
  std::vector<fuse::DaxRange> unmaps;
};

}  // namespace svfs::testing
