// What the vhost-user test files share: the backends under test (svfsd and the C virtiofsd), a
// backend process serving a fresh shared directory, and a session that connects our frontend and
// a FUSE client to it.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "tests/support/files.h"
#include "tests/support/process.h"
#include "tests/vhost/frontend.h"
#include "tests/vhost/fuse_client.h"

namespace svfs::vhost {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

enum class Backend { kReferenceVirtiofsd, kSvfsd };

std::string BackendName(Backend b);
// Readable parameter values in gtest/ctest output.
void PrintTo(Backend b, std::ostream* os);
std::string ParamName(const ::testing::TestParamInfo<Backend>& info);

std::string EnvOr(const char* name, const std::string& fallback);
std::string ReadFile(const fs::path& p);
// n bytes of a pattern that differs per seed.
std::vector<std::uint8_t> Pattern(std::size_t n, std::uint8_t seed);

using TempDir = svfs_test::TempDir;

// A backend daemon run as a child process, output in a log file; on destruction it gets SIGTERM,
// and SIGKILL if it has not exited within 2 s.
class BackendProcess : public svfs_test::Process {
 public:
  BackendProcess(const std::vector<std::string>& argv, const fs::path& log);
  ~BackendProcess();
  BackendProcess(const BackendProcess&) = delete;
  BackendProcess& operator=(const BackendProcess&) = delete;
};

std::string ReferencePath();
std::string SvfsdPath();
std::vector<std::string> BackendCommand(Backend b, const fs::path& socket, const fs::path& dir,
                                        const std::vector<std::string>& extra = {});
bool WaitForSocket(BackendProcess& p, const fs::path& socket, std::chrono::milliseconds timeout);

struct Availability {
  bool available = false;
  bool skip = false;  // not available for an expected reason: skip rather than fail
  std::string reason;
};
Availability Check(Backend b);
// In a test (or a void helper): skips it if backend `b` is unavailable for an expected reason
// (not installed, SVFS_VHOST_SVFSD=0), fails it if `b` should run and cannot.
#define SVFS_REQUIRE_BACKEND(b)                             \
  do {                                                      \
    const ::svfs::vhost::Availability required_ = Check(b); \
    if (!required_.available) {                             \
      if (required_.skip) GTEST_SKIP() << required_.reason; \
      FAIL() << required_.reason;                           \
    }                                                       \
  } while (0)

// One backend serving a fresh shared directory, with a connected frontend and a FUSE client that
// has completed INIT.
class Session {
 public:
  Session(Backend b, const TempDir& tmp, FrontendOptions opts,
          const std::vector<std::string>& extra_args = {})
      : shared_(tmp.path() / "shared"), socket_(tmp.path() / "vhost.sock") {
    fs::create_directory(shared_);
    process_.emplace(BackendCommand(b, socket_, shared_, extra_args), tmp.path() / "backend.log");
    if (!WaitForSocket(*process_, socket_, 10s))
      throw std::runtime_error("backend did not create its socket (" + process_->ExitDescription() +
                               "): " + process_->Log());
    fe_.emplace(socket_.string(), opts);
    client_.emplace(*fe_);
  }
  ~Session() {
    // Disconnect first: backends exit (or go back to listening) when the frontend leaves.
    client_.reset();
    fe_.reset();
    process_.reset();
  }

  const fs::path& shared() const { return shared_; }
  BackendProcess& process() { return *process_; }
  VhostUserFrontend& fe() { return *fe_; }
  FuseClient& client() { return *client_; }

 private:
  fs::path shared_, socket_;
  std::optional<BackendProcess> process_;
  std::optional<VhostUserFrontend> fe_;
  std::optional<FuseClient> client_;
};

class VhostBackendTestBase {
 protected:
  void Start(Backend b, unsigned request_queues = 2) {
    SVFS_REQUIRE_BACKEND(b);
    FrontendOptions opts;
    opts.memory_size = 64u << 20;
    // The C virtiofsd has one request queue; the frontend clamps to GET_QUEUE_NUM anyway, but
    // asking it for more would make it fail when the second request queue starts.
    opts.request_queues = b == Backend::kReferenceVirtiofsd ? 1 : request_queues;
    opts.reply_timeout = 5s;
    session_.emplace(b, tmp_, opts);
    init_reply_ = session_->client().init();
    ASSERT_TRUE(init_reply_.well_formed()) << "INIT reply used_len " << init_reply_.used_len;
    ASSERT_EQ(init_reply_.error(), 0);
  }
  void Stop() {
    if (session_ && ::testing::Test::HasFailure())
      std::cerr << "---- backend log ----\n" << session_->process().Log() << "---------------------\n";
    session_.reset();
  }
  FuseClient& client() { return session_->client(); }
  VhostUserFrontend& fe() { return session_->fe(); }
  const fs::path& shared() const { return session_->shared(); }

  TempDir tmp_;
  std::optional<Session> session_;
  FuseReply init_reply_;
};

// A session with svfsd alone, INIT done: `request_queues` queues, 16 MiB of guest memory.
std::unique_ptr<Session> SvfsdSession(const TempDir& tmp, unsigned request_queues,
                                      bool event_idx = false,
                                      const std::vector<std::string>& args = {});
// `n` GETATTR chains of the root on queue 1, built but not made available (post them with
// repost). Their reply buffers' addresses go to `replies` if given.
std::vector<std::uint16_t> GetattrChains(Session& s, int n,
                                         std::vector<std::uint64_t>* replies = nullptr);

class LockedFile {
 public:
  explicit LockedFile(FuseClient& client) : client_(client) {
    FuseReply created = client.create(FUSE_ROOT_ID, "locked", S_IFREG | 0644, O_RDWR | O_CREAT);
    if (created.error() != 0 || created.body().size() < sizeof(entry_) + sizeof(open_)) {
      throw std::runtime_error("CREATE locked: error " + std::to_string(created.error()));
    }
    std::memcpy(&entry_, created.body().data(), sizeof(entry_));
    std::memcpy(&open_, created.body().data() + sizeof(entry_), sizeof(open_));
  }
  uint64_t nodeid() const { return entry_.nodeid; }
  // SETLK or SETLKW of `type` (F_WRLCK, F_UNLCK, ...) over the whole file for lock `owner`.
  FuseRequest request(std::uint32_t opcode, std::uint64_t owner, std::uint32_t type,
                      unsigned queue = 1) {
    fuse_lk_in in{};
    in.fh = open_.fh;
    in.owner = owner;
    in.lk.end = 0x7fffffffffffffffULL;
    in.lk.type = type;
    in.lk.pid = 1;
    return client_.make(opcode, entry_.nodeid, {Bytes(in)}, 4096, queue);
  }

 private:
  FuseClient& client_;
  fuse_entry_out entry_{};
  fuse_open_out open_{};
};

// The reply header written at guest address `gpa` (unique 0 while the reply has not come).
inline fuse_out_header ReplyHeaderAt(GuestMemory& mem, std::uint64_t gpa) {
  fuse_out_header h;
  std::memcpy(&h, mem.ptr(gpa, sizeof(h)), sizeof(h));
  return h;
}

// A session whose file "locked" is write-locked whole by owner 1: lock waits by others block.
struct LockHeldSession {
  LockHeldSession() : session(SvfsdSession(tmp, 1)), file(session->client()) {
    if (session->client().send(file.request(FUSE_SETLK, 1, F_WRLCK)).error() != 0) {
      throw std::runtime_error("SETLK by owner 1 failed");
    }
  }
  TempDir tmp;
  std::unique_ptr<Session> session;
  LockedFile file;
};

// The bytes of `values`, one after another: a vhost-user message payload.
template <typename... T>
std::vector<std::uint8_t> Payload(const T&... values) {
  std::vector<std::uint8_t> p;
  (
      [&] {
        auto b = Bytes(values);
        p.insert(p.end(), b.begin(), b.end());
      }(),
      ...);
  return p;
}

}  // namespace svfs::vhost
