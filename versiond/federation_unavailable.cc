// Federation::Start where svfs was built without libnats (libnats-dev).
#include "versiond/federation.h"

namespace svfs::versiond {

std::expected<std::unique_ptr<Federation>, std::string> Federation::Start(
    const FederationOptions& options, shm::VersionTable&) {
  return std::unexpected("svfs-versiond: --federation " + RedactedServers(options.servers) +
                         ": not built in (this build found no libnats; install libnats-dev and "
                         "rebuild)");
}

}  // namespace svfs::versiond
