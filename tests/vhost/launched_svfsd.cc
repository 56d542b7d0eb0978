#include "tests/vhost/launched_svfsd.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <stdexcept>

#include "tests/vhost/frontend.h"
#include "tests/vhost/fuse_client.h"

extern char** environ;

namespace svfs::vhost {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

Daemon::Daemon(const Launch& launch, int listen_fd) {
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
  std::vector<std::string> argv = launch.through;
  argv.push_back(launch.program.empty() ? std::string(SVFSD_PATH) : launch.program);
  argv.insert(argv.end(), launch.args.begin(), launch.args.end());
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) env.emplace_back(*e);
  env.insert(env.end(), launch.env.begin(), launch.env.end());
  std::fflush(nullptr);
  const pid_t parent = ::getpid();
  pid_ = ::fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(127);
    ::dup2(out[1], STDOUT_FILENO);
    ::dup2(out[1], STDERR_FILENO);
    const int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, STDIN_FILENO);
    if (launch.pass_fd >= 0) {
      if (listen_fd == launch.pass_fd) {
        ::fcntl(listen_fd, F_SETFD, 0);
      } else {
        ::dup2(listen_fd, launch.pass_fd);
      }
    }
    if (!launch.cwd.empty() && ::chdir(launch.cwd.c_str()) != 0) ::_exit(126);
    if (launch.nofile) {
      ::setrlimit(RLIMIT_NOFILE, &*launch.nofile);
    }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    std::vector<char*> raw_argv, raw_env;
    for (auto& a : argv) raw_argv.push_back(a.data());
    raw_argv.push_back(nullptr);
    for (auto& e : env) raw_env.push_back(e.data());
    raw_env.push_back(nullptr);
    ::execvpe(raw_argv[0], raw_argv.data(), raw_env.data());
    ::_exit(127);
  }
  ::close(out[1]);
  read_fd_ = out[0];
  reader_ = std::thread([this] {
    char buffer[4096];
    for (;;) {
      const ssize_t n = ::read(read_fd_, buffer, sizeof(buffer));
      if (n <= 0) break;
      std::lock_guard lock(mutex_);
      output_.append(buffer, static_cast<size_t>(n));
    }
    output_ended_ = true;
  });
}

Daemon::~Daemon() {
  if (Running()) {
    ::kill(pid_, SIGKILL);
    WaitExit(5s);
  }
  // The pipe may stay open in a grandchild for a moment; reading to EOF ends with it.
  reader_.join();
  ::close(read_fd_);
}

// A listening UNIX socket made by the caller (Kata's Go runtime and libvirt pass it as --fd).
UniqueFd ListenOn(const fs::path& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, path.c_str(), sizeof(address.sun_path) - 1);
  if (!fd || ::bind(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      ::listen(fd.get(), 1) != 0) {
    throw std::runtime_error("cannot listen on " + path.string() + ": " + std::strerror(errno));
  }
  return fd;
}

std::string Replace(std::string text, const std::string& from, const std::string& to) {
  for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
  return text;
}

std::vector<std::string> Substitute(std::vector<std::string> args, const fs::path& dir,
                                    const fs::path& socket, const std::string& escaped_dir) {
  for (auto& arg : args) {
    arg = Replace(arg, "{SOCKET}", socket.string());
    arg = Replace(arg, "{DIR,}", escaped_dir);
    arg = Replace(arg, "{DIR}", dir.string());
  }
  return args;
}

// Connects the frontend to `socket`, sends INIT (offering submounts) and LOOKUP "hello", then
// disconnects and waits for the daemon to exit.
Served ServeAndDisconnect(Daemon& daemon, const fs::path& socket,
                          const std::function<void()>& while_connected) {
  Served served;
  {
    FrontendOptions options;
    options.memory_size = 32u << 20;
    options.request_queues = 1;
    VhostUserFrontend frontend(socket.string(), options, 10s);
    FuseClient client(frontend);
    FuseReply init = client.init(38, FUSE_ASYNC_READ | FUSE_DO_READDIRPLUS | FUSE_MAX_PAGES |
                                         FUSE_INIT_EXT | FUSE_SUBMOUNTS);
    auto out = init.as<fuse_init_out>();
    if (!out) throw std::runtime_error("INIT failed: error " + std::to_string(init.error()));
    served.init_flags = out->flags;
    FuseReply looked_up = client.lookup(FUSE_ROOT_ID, "hello");
    served.lookup_error = looked_up.error();
    if (auto entry = looked_up.as<fuse_entry_out>()) served.entry_valid = entry->entry_valid;
    if (while_connected) while_connected();
  }
  served.exit_status = daemon.WaitExit(10s);
  served.output = daemon.Output();
  return served;
}

}  // namespace svfs::vhost
