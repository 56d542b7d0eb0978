// svfsd started as a launcher starts it (tests/vhost/launch_lines_test.cc,
// svfsd_command_line_test.cc): the child with its argv, descriptors, directory, environment and
// limits, its output captured, and one INIT and LOOKUP served through the project's frontend.
#pragma once

#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "tests/vhost/frontend.h"
#include "tests/support/wait.h"

namespace svfs::vhost {

// What Kata's runtime-rs waits for on stderr before it starts the VM.
inline constexpr const char* kWaiting = "Waiting for vhost-user socket connection...";

// How the caller starts the daemon, beyond its argv.
struct Launch {
  std::vector<std::string> args;  // after argv[0] (svfsd's path)
  int pass_fd = -1;               // put the listening socket at this descriptor number
  std::string cwd;                // podman runs it in the shared directory
  std::vector<std::string> env;   // added to the environment
  std::optional<rlimit> nofile;   // RLIMIT_NOFILE it inherits
  std::vector<std::string> through;  // a program that runs svfsd (setpriv ... as another user)
  std::string program;               // svfsd under another name (a link); empty: the build's
};

// svfsd run as a child whose stdout and stderr come back through a pipe (Kata reads stderr).
class Daemon {
 public:
  explicit Daemon(const Launch& launch, int listen_fd = -1);
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  pid_t pid() const { return pid_; }
  std::string Output() {
    std::lock_guard lock(mutex_);
    return output_;
  }
  bool WaitForOutput(std::string_view text, std::chrono::milliseconds timeout) {
    const auto seen_or_exited = [&] {
      return Output().find(text) != std::string::npos || !Running();
    };
    return svfs_test::WaitUntil(seen_or_exited, timeout, std::chrono::milliseconds(5)) &&
           Output().find(text) != std::string::npos;
  }
  bool Running() {
    if (exited_) return false;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      exited_ = true;
      status_ = status;
    }
    return !exited_;
  }
  // The exit status once the daemon exits within `timeout`; -1 if it is still running, -2 if a
  // signal killed it. After an exit Output() holds all it wrote: the pipe is read to its end
  // (for up to 2 s more, in case a grandchild still holds it).
  int WaitExit(std::chrono::milliseconds timeout) {
    svfs_test::WaitUntil([&] { return !Running(); }, timeout, std::chrono::milliseconds(5));
    if (!exited_) return -1;
    svfs_test::WaitUntil([&] { return output_ended_.load(); }, std::chrono::seconds(2),
                         std::chrono::milliseconds(1));
    return WIFEXITED(status_) ? WEXITSTATUS(status_) : -2;
  }

 private:
  pid_t pid_ = -1;
  int read_fd_ = -1;
  bool exited_ = false;
  int status_ = 0;
  std::mutex mutex_;
  std::string output_;
  std::atomic<bool> output_ended_{false};  // the reader saw the pipe's end
  std::thread reader_;
};

// A listening UNIX socket made by the caller (Kata's Go runtime and libvirt pass it as --fd).
UniqueFd ListenOn(const std::filesystem::path& path);

// `text` with every `from` replaced by `to`.
std::string Replace(std::string text, const std::string& from, const std::string& to);

// The launch line's {SOCKET}, {DIR} and {DIR,} (the directory with its commas doubled, as
// libvirt escapes it) replaced.
std::vector<std::string> Substitute(std::vector<std::string> args, const std::filesystem::path& dir,
                                    const std::filesystem::path& socket,
                                    const std::string& escaped_dir = "");

struct Served {
  int lookup_error = 0;
  std::uint64_t entry_valid = 0;  // seconds, from the LOOKUP reply: the cache mode's timeout
  std::uint64_t init_flags = 0;
  int exit_status = -1;
  std::string output;
};

// Connects the frontend to `socket`, sends INIT (offering submounts) and LOOKUP "hello", runs
// `while_connected`, then disconnects and waits for the daemon to exit.
Served ServeAndDisconnect(Daemon& daemon, const std::filesystem::path& socket,
                          const std::function<void()>& while_connected = {});

}  // namespace svfs::vhost
