// The vhost-user socket a frontend connects to: created at a path (a stale socket replaced, the
// `<path>.pid` lock file held so a second daemon on the path fails instead of stealing it) or
// adopted from an inherited listening fd (--fd). Accepts one frontend.
#pragma once

#include <string>

#include "common/result.h"
#include "common/unique_fd.h"

namespace svfs::transport::vhost_user {

struct ListenerOptions {
  std::string socket_path;   // listen here
  int listen_fd = -1;        // or: adopt this listening socket
  std::string socket_group;  // chgrp the socket to this group (and mode 0660)
  int pid = 0;               // written to the lock file (0: getpid(); a sandbox's supervisor)
};

class Listener {
 public:
  static Result<Listener> Create(const ListenerOptions& options);
  Listener(Listener&& other) noexcept;
  Listener& operator=(Listener&&) = delete;
  // Unlinks the socket and the lock file this listener created.
  ~Listener();

  // Waits for a frontend; returns its connection, or an empty fd once `stop_fd` is readable.
  // The listening socket is closed after the first connection: later ones are refused.
  Result<UniqueFd> accept_one(int stop_fd);

 private:
  Listener() = default;
  Status listen_at(const ListenerOptions& options);

  UniqueFd listen_fd_;
  UniqueFd lock_fd_;
  std::string lock_path_;    // unlinked by the destructor when set
  std::string socket_path_;  // likewise
  UniqueFd dir_fd_;          // the socket's directory (the sandbox hides its path)
};

}  // namespace svfs::transport::vhost_user
