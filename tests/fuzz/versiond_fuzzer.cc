// libFuzzer harness for svfs-versiond's RPC: the real server (versiond::RunServer: table,
// fanotify when root, the Cap'n Proto two-party RPC on a UNIX socket) runs on a thread of its
// own for the whole fuzzing session; each input is one connection to it, in one of two modes:
//
//  - raw (first byte even): the rest of the input is written to the socket as it is, as a
//    hostile peer would (two-party framing, RPC messages, the Versiond calls' params structs;
//    the seeds are recorded sessions of the client below), then the write side is closed;
//  - calls (first byte odd): a well-behaved capnp client makes the calls the input describes
//    (attach with any name, pid and directories; stats with any `hottest`; ping) and checks each
//    answer: a refusal is a clean RPC error, never a dropped connection; attach answers this
//    table; stats' hottest slots are real slots, highest version first, at most as many as
//    asked.
//
// Either way the connection must then end from versiond's side (its read sees the end, it
// drops the connection): the input ends when our read sees EOF, so no input leaves a
// connection behind, and a versiond that hangs or stops serving fails the run (libFuzzer's
// -timeout; connect() fails once RunServer has returned).
//
// Run as root, versiond marks with fanotify the filesystems of directories an attach names
// (at most 256, for the life of the process); the seeds name only /tmp/svfs-versiond-fuzzer.
// The table is /dev/shm/svfs-versiond-fuzzer-PID, removed at exit.
//
// With SVFS_FUZZ_SEED_DIR set, LLVMFuzzerInitialize writes the seed corpus there.
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "protocol/versiond.capnp.h"
#include "shm/version_table.h"
#include "tests/fuzz/fuzz_support.h"
#include "versiond/server.h"

namespace {

using svfs::fuzz::Input;
using svfs::fuzz::InputBuilder;

constexpr const char* kTarget = "versiond_fuzzer";
constexpr const char* kShareDir = "/tmp/svfs-versiond-fuzzer";
constexpr uint64_t kCapacity = 4096;
constexpr size_t kMaxCalls = 32;

enum Call : uint8_t { kAttach = 0, kStats = 1, kPing = 2, kCallCount = 3 };

[[noreturn]] void Fail(const char* what, uint64_t a = 0, uint64_t b = 0) {
  svfs::fuzz::Fail(kTarget, what, a, b);
}

struct Session {
  std::string socket_path;
  std::string table_name;
  kj::AsyncIoContext io = kj::setupAsyncIo();
  std::thread server;
};
Session* g_session = nullptr;

// At exit: versiond stops on SIGTERM (to its thread, which waits for it), before the statics its
// thread uses are destroyed; then its table goes.
void StopServer() {
  if (g_session == nullptr) return;
  if (g_session->server.joinable()) {
    ::pthread_kill(g_session->server.native_handle(), SIGTERM);
    g_session->server.join();
  }
  svfs::shm::VersionTable::Remove(g_session->table_name);
  ::unlink(g_session->socket_path.c_str());
}

int Connect() {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, g_session->socket_path.c_str(), sizeof(addr.sun_path) - 1);
  if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    if (fd >= 0) ::close(fd);
    return -1;
  }
  return fd;
}

// Records what the client writes (the raw-mode seeds are recorded sessions).
class RecordingStream final : public kj::AsyncIoStream {
 public:
  RecordingStream(kj::AsyncIoStream& inner, std::vector<uint8_t>* record)
      : inner_(inner), record_(record) {}
  kj::Promise<size_t> tryRead(void* buffer, size_t min_bytes, size_t max_bytes) override {
    return inner_.tryRead(buffer, min_bytes, max_bytes);
  }
  kj::Promise<void> write(const void* buffer, size_t size) override {
    keep(buffer, size);
    return inner_.write(buffer, size);
  }
  kj::Promise<void> write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) override {
    for (auto piece : pieces) keep(piece.begin(), piece.size());
    return inner_.write(pieces);
  }
  kj::Promise<void> whenWriteDisconnected() override { return inner_.whenWriteDisconnected(); }
  void shutdownWrite() override { inner_.shutdownWrite(); }
  void abortRead() override { inner_.abortRead(); }

 private:
  void keep(const void* p, size_t n) {
    if (record_ == nullptr) return;
    auto* b = static_cast<const uint8_t*>(p);
    record_->insert(record_->end(), b, b + n);
  }
  kj::AsyncIoStream& inner_;
  std::vector<uint8_t>* record_;
};

// Waits for versiond to close the connection (after our write side is shut).
void AwaitClose(kj::AsyncIoStream& stream) {
  uint8_t buf[4096];
  while (stream.tryRead(buf, 1, sizeof(buf)).wait(g_session->io.waitScope) > 0) {
  }
}

std::string Text(Input& in) {
  auto bytes = in.bytes(in.u8());
  return std::string(bytes.begin(), bytes.end());
}

// A refused call must be an RPC error, never the connection dropped under a well-formed client.
template <typename Promise>
bool Answered(Promise&& promise, const char* what) {
  try {
    auto response = promise.wait(g_session->io.waitScope);
    (void)response;
    return true;
  } catch (const kj::Exception& e) {
    if (e.getType() == kj::Exception::Type::DISCONNECTED) Fail(what);
    return false;
  }
}

// The calls an input describes, through a well-behaved client; `record` gets the bytes it sent.
void RunCalls(Input& in, int fd, std::vector<uint8_t>* record) {
  auto& io = g_session->io;
  auto socket = io.lowLevelProvider->wrapSocketFd(fd, kj::LowLevelAsyncIoProvider::TAKE_OWNERSHIP);
  RecordingStream stream(*socket, record);
  {
    capnp::TwoPartyClient client(stream);
    auto versiond = client.bootstrap().castAs<svfs::rpc::Versiond>();
    bool attached = false;
    for (size_t n = 0; n < kMaxCalls && !in.empty(); ++n) {
      switch (in.u8() % kCallCount) {
        case kAttach: {
          auto request = versiond.attachRequest();
          auto info = request.initClient();
          std::string name = Text(in);
          info.setName(capnp::Text::Reader(name.c_str(), std::strlen(name.c_str())));
          info.setPid(in.u32());
          uint8_t count = in.u8() % 20;
          auto dirs = info.initSharedDirs(count);
          for (uint8_t i = 0; i < count; ++i) {
            // Mostly the fuzzer's own directory (so attaches can succeed), else any bytes.
            std::string dir = in.u8() & 1 ? Text(in) : std::string(kShareDir);
            dirs.set(i, capnp::Text::Reader(dir.c_str(), std::strlen(dir.c_str())));
          }
          try {
            auto response = request.send().wait(io.waitScope);
            if (attached) Fail("a second attach on one connection succeeded");
            attached = true;
            auto table = response.getTable();
            if (table.getName() != g_session->table_name) Fail("attach named another table");
            if (table.getSlotCount() != kCapacity) Fail("attach: slot count", table.getSlotCount());
            if (table.getUuid().size() != 16) Fail("attach: uuid size", table.getUuid().size());
          } catch (const kj::Exception& e) {
            if (e.getType() == kj::Exception::Type::DISCONNECTED) Fail("attach dropped the connection");
          }
          break;
        }
        case kStats: {
          auto request = versiond.statsRequest();
          uint32_t hottest = in.u32();
          request.setHottest(hottest);
          try {
            auto response = request.send().wait(io.waitScope);
            auto stats = response.getStats();
            auto hot = stats.getHottest();
            if (hot.size() > hottest) Fail("stats: more hottest slots than asked", hot.size(), hottest);
            for (size_t i = 0; i < hot.size(); ++i) {
              if (hot[i].getSlot() == 0 || hot[i].getSlot() >= kCapacity) Fail("stats: no such slot", hot[i].getSlot());
              if (i > 0 && hot[i].getVersion() > hot[i - 1].getVersion()) Fail("stats: hottest not sorted");
            }
            if (stats.getTable().getSlotCount() != kCapacity) Fail("stats: slot count");
          } catch (const kj::Exception& e) {
            if (e.getType() == kj::Exception::Type::DISCONNECTED) Fail("stats dropped the connection");
            Fail("stats failed", 0, 0);
          }
          break;
        }
        case kPing: {
          if (!Answered(versiond.pingRequest().send(), "ping dropped the connection")) Fail("ping failed");
          break;
        }
      }
    }
  }
  stream.shutdownWrite();
  AwaitClose(*socket);
}

void RunRaw(std::span<const uint8_t> bytes, int fd) {
  auto& io = g_session->io;
  auto socket = io.lowLevelProvider->wrapSocketFd(fd, kj::LowLevelAsyncIoProvider::TAKE_OWNERSHIP);
  if (!bytes.empty()) {
    try {
      socket->write(bytes.data(), bytes.size()).wait(io.waitScope);
    } catch (const kj::Exception&) {
      // versiond may drop a peer mid-way (a framing error); what it sent so far is fine.
    }
  }
  socket->shutdownWrite();
  try {
    AwaitClose(*socket);
  } catch (const kj::Exception&) {
    // ECONNRESET: versiond dropped the connection with our bytes unread.
  }
}

// ---- seed corpus ----

struct SeedCall {
  Call call;
  std::vector<uint8_t> args;
};

std::vector<uint8_t> CallsInput(const std::vector<SeedCall>& calls) {
  InputBuilder b;
  b.u8(1);  // calls mode
  for (const SeedCall& c : calls) b.u8(c.call).raw(c.args);
  return b.bytes();
}

std::vector<uint8_t> AttachArgs(const std::string& name, uint32_t pid, std::vector<std::string> dirs) {
  InputBuilder b;
  b.u8(static_cast<uint8_t>(name.size())).raw({reinterpret_cast<const uint8_t*>(name.data()), name.size()});
  b.u32(pid).u8(static_cast<uint8_t>(dirs.size()));
  for (const std::string& d : dirs) {
    if (d == kShareDir) {
      b.u8(0);
    } else {
      b.u8(1).u8(static_cast<uint8_t>(d.size())).raw({reinterpret_cast<const uint8_t*>(d.data()), d.size()});
    }
  }
  return b.bytes();
}

std::vector<uint8_t> U32(uint32_t v) { return InputBuilder().u32(v).bytes(); }

void MakeSeeds(const char* dir) {
  std::vector<std::pair<std::string, std::vector<uint8_t>>> seeds;
  const std::vector<std::pair<std::string, std::vector<SeedCall>>> sessions = {
      {"attach_stats_ping", {{kAttach, AttachArgs("svfsd vm-1", 1234, {kShareDir})},
                             {kStats, U32(10)}, {kPing, {}}}},
      {"stats_only", {{kStats, U32(0)}, {kStats, U32(100000)}}},
      {"attach_twice", {{kAttach, AttachArgs("a", 1, {})}, {kAttach, AttachArgs("b", 2, {})}}},
      {"attach_refused", {{kAttach, AttachArgs("bad", 3, {"/nonexistent/dir"})}, {kPing, {}}}},
  };
  for (const auto& [name, calls] : sessions) {
    std::vector<uint8_t> input = CallsInput(calls);
    seeds.emplace_back("calls-" + name, input);
    // The same session as raw bytes: what the client wrote.
    std::vector<uint8_t> record;
    Input in(input.data() + 1, input.size() - 1);
    int fd = Connect();
    if (fd < 0) Fail("connect for a seed");
    RunCalls(in, fd, &record);
    record.insert(record.begin(), 0);  // raw mode
    seeds.emplace_back("raw-" + name, record);
  }
  svfs::fuzz::WriteSeeds(kTarget, dir, seeds);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  svfs::fuzz::QuietLogs();
  ::mkdir(kShareDir, 0755);
  g_session = new Session();
  g_session->socket_path = std::string(kShareDir) + "/versiond-" + std::to_string(::getpid()) + ".sock";
  g_session->table_name = "svfs-versiond-fuzzer-" + std::to_string(::getpid());
  std::atexit(StopServer);
  svfs::versiond::ServerOptions options;
  options.socket_path = g_session->socket_path;
  options.table_name = g_session->table_name;
  options.capacity = kCapacity;
  options.table_mode = 0600;
  options.lock_down = false;  // in-process: the filter would kill the harness's own calls
  g_session->server = std::thread([options] {
    auto result = svfs::versiond::RunServer(options);
    if (!result) std::fprintf(stderr, "%s: versiond stopped: %s\n", kTarget, result.error().c_str());
  });
  // Serving once the socket accepts.
  for (int i = 0; i < 500; ++i) {
    int fd = Connect();
    if (fd >= 0) {
      ::close(fd);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (const char* dir = std::getenv("SVFS_FUZZ_SEED_DIR")) MakeSeeds(dir);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  int fd = Connect();
  if (fd < 0) Fail("versiond does not accept connections any more");
  Input in(data, size);
  if (in.u8() % 2 == 0) {
    RunRaw(in.bytes(in.left()), fd);
  } else {
    RunCalls(in, fd, nullptr);
  }
  return 0;
}
