#include "tests/vhost/backend_session.h"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

#include "tests/support/wait.h"

namespace svfs::vhost {

std::string BackendName(Backend b) { return b == Backend::kSvfsd ? "Svfsd" : "CVirtiofsd"; }
void PrintTo(Backend b, std::ostream* os) { *os << BackendName(b); }

std::string EnvOr(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? v : fallback;
}

std::string ReadFile(const fs::path& p) { return svfs_test::ReadWholeFile(p.string()); }


BackendProcess::BackendProcess(const std::vector<std::string>& argv, const fs::path& log) {
  if (!Start(argv, log.string())) {
    throw std::runtime_error("cannot start " + argv.at(0) + ": " + std::strerror(errno));
  }
}
BackendProcess::~BackendProcess() { Kill(SIGTERM, 2s); }

std::string ReferencePath() { return EnvOr("SVFS_VHOST_VIRTIOFSD", "/usr/lib/qemu/virtiofsd"); }
std::string SvfsdPath() { return EnvOr("SVFS_VHOST_SVFSD_PATH", SVFSD_PATH); }

std::vector<std::string> BackendCommand(Backend b, const fs::path& socket, const fs::path& dir,
                                        const std::vector<std::string>& extra) {
  std::vector<std::string> cmd;
  if (b == Backend::kSvfsd) {
    cmd = {SvfsdPath(), "--socket-path", socket.string(), "--shared-dir", dir.string(), "--cache",
           "auto"};
  } else {
    // sandbox=chroot: the default namespace sandbox needs privileges containers rarely grant.
    cmd = {ReferencePath(), "--socket-path=" + socket.string(), "-o", "source=" + dir.string(),
           "-o", "cache=auto", "-o", "sandbox=chroot"};
  }
  cmd.insert(cmd.end(), extra.begin(), extra.end());
  return cmd;
}

bool WaitForSocket(BackendProcess& p, const fs::path& socket, std::chrono::milliseconds timeout) {
  bool exists = false;
  svfs_test::WaitUntil([&] { return (exists = fs::exists(socket)) || !p.Running(); }, timeout, 10ms);
  return exists;
}


namespace {

Availability ProbeSvfsd() {
  std::string mode = EnvOr("SVFS_VHOST_SVFSD", "probe");
  if (mode == "0") return {false, true, "SVFS_VHOST_SVFSD=0"};
  if (mode == "1") return {true, false, ""};
  TempDir tmp;
  fs::create_directory(tmp.path() / "shared");
  fs::path socket = tmp.path() / "probe.sock";
  BackendProcess p(BackendCommand(Backend::kSvfsd, socket, tmp.path() / "shared"),
                   tmp.path() / "probe.log");
  if (WaitForSocket(p, socket, 5s)) return {true, false, ""};
  std::string log = p.Log();
  if (log.find("not implemented") != std::string::npos)
    return {false, true, "svfsd does not implement --socket-path yet: " + log};
  return {false, false, "svfsd --socket-path did not create its socket (" + p.ExitDescription() +
                            "): " + log};
}

const Availability& SvfsdAvailability() {
  // Probed once per test binary run: spawning svfsd for every test just to learn it refuses the
  // option would double the run time.
  static const Availability a = ProbeSvfsd();
  return a;
}

}  // namespace

Availability Check(Backend b) {
  if (b == Backend::kSvfsd) return SvfsdAvailability();
  if (::access(ReferencePath().c_str(), X_OK) != 0)
    return {false, true, ReferencePath() + " not installed (apt-get install qemu-system-common)"};
  return {true, false, ""};
}

std::string ParamName(const ::testing::TestParamInfo<Backend>& info) {
  return BackendName(info.param);
}

std::vector<std::uint8_t> Pattern(std::size_t n, std::uint8_t seed) {
  std::vector<std::uint8_t> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<std::uint8_t>(seed + i * 7);
  return v;
}

std::unique_ptr<Session> SvfsdSession(const TempDir& tmp, unsigned request_queues, bool event_idx,
                                      const std::vector<std::string>& args) {
  FrontendOptions opts;
  opts.memory_size = 16u << 20;
  opts.request_queues = request_queues;
  opts.event_idx = event_idx;
  auto s = std::make_unique<Session>(Backend::kSvfsd, tmp, opts, args);
  if (s->client().init().error() != 0) throw std::runtime_error("INIT failed");
  return s;
}

std::vector<std::uint16_t> GetattrChains(Session& s, int n, std::vector<std::uint64_t>* replies) {
  std::vector<std::uint16_t> heads;
  for (int i = 0; i < n; ++i) {
    FuseClient::Placed chain = s.client().place(s.client().getattr_request(FUSE_ROOT_ID), /*publish=*/false);
    heads.push_back(chain.head);
    if (replies) replies->push_back(chain.reply);
  }
  return heads;
}

}  // namespace svfs::vhost
