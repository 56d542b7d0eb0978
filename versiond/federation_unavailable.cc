// Federation::Start where svfs was built without libnats (libnats-dev).
#include "versiond/federation.h"

namespace svfs::versiond {

std::expected<std::unique_ptr<Federation>, std::string> Federation::Start(
    const FederationOptions& options, shm::VersionTable&) {
  std::string servers;
  for (const std::string& url : options.servers) servers += (servers.empty() ? "" : ",") + url;
  return std::unexpected("svfs-versiond: --federation " + servers +
                         ": not built in (this build found no libnats; install libnats-dev and "
                         "rebuild)");
}

}  // namespace svfs::versiond
