// The vhost-user-fs backend: the control plane of one frontend (QEMU, cloud-hypervisor, ...).
// It accepts the frontend on the Listener, reads its messages (message.h) and answers each with
// one method; configuration changes go to the Device, which stops and restarts the queues they
// concern; the QueueRunner serves the queues: queue 0 is the hiprio queue (FORGET,
// BATCH_FORGET, INTERRUPT), queues 1..N are request queues, as many as the frontend sets up.
//
// Threads: run() is the control thread and owns all configuration; each queue has its thread;
// with a pool, workers serve request-queue chains; every SETLKW has a thread of its own.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "daemon/fuse/server.h"
#include "daemon/transport/vhost_user/backend_channel.h"
#include "daemon/transport/vhost_user/device.h"
#include "daemon/transport/vhost_user/listener.h"
#include "daemon/transport/vhost_user/message.h"
#include "daemon/transport/vhost_user/queue_runner.h"
#include "common/event_fd.h"
#include "common/result.h"
#include "common/unique_fd.h"

namespace svfs::transport::vhost_user {

struct BackendOptions {
  std::string socket_path;   // listen here (stale socket unlinked, `<path>.pid` locked)
  int listen_fd = -1;        // or: an inherited listening socket (--fd)
  std::string socket_group;  // chgrp the socket to this group (and mode 0660)
  int pid = 0;               // for `<path>.pid` (0: getpid(); svfsd's outside its sandbox)
  std::string tag;           // GET_CONFIG tag (CONFIG protocol feature offered when set)
  // num_request_queues reported by GET_CONFIG (the frontend decides how many it sets up).
  uint32_t config_request_queues = 1;
  // Worker threads shared by the request queues (--thread-pool-size); 0: each request queue's
  // thread serves its requests itself, one at a time (as virtiofsd without a pool). 1 is served
  // as 0: one worker overlaps no two requests either, but costs a hand-off and a wake-up per
  // request (Kata's default arguments carry --thread-pool-size=1).
  unsigned pool_threads = 0;
  // Longest a request queue's thread polls its ring before sleeping; 0: never (--poll-us).
  std::chrono::microseconds poll_max{0};
  // Runs first in every queue and worker thread (per-thread credential setup).
  std::function<void()> thread_init;
  // Size of the device's DAX window (--dax-window-size; the VMM's cache-size); 0: no DAX.
  uint64_t dax_window_size = 0;
  // How long a DAX request waits for the frontend's answer on the backend channel.
  std::chrono::milliseconds dax_answer_timeout{2000};
};

class VhostUserBackend {
 public:
  static constexpr uint32_t kMaxQueues = Device::kMaxQueues;

  // Creates the listening socket (or adopts options.listen_fd).
  static Result<std::unique_ptr<VhostUserBackend>> Create(fuse::Server& server,
                                                          BackendOptions options);
  ~VhostUserBackend();
  VhostUserBackend(const VhostUserBackend&) = delete;
  VhostUserBackend& operator=(const VhostUserBackend&) = delete;

  // Accepts one frontend and serves it until it disconnects or stop() is called; then stops every
  // queue and releases guest memory. Returns an error only if accepting failed.
  Status run();
  // Makes run() return (from any thread, e.g. the signal-handling main thread).
  void stop();

  uint64_t features_offered() const;
  uint64_t protocol_features_offered() const;

 private:
  VhostUserBackend(fuse::Server& server, BackendOptions options, Listener listener);
  // Reads and handles messages until the frontend goes or stop() is called.
  void serve(int connection);
  // Handles one message; false if the connection must be dropped.
  bool handle(Message& message);

  // One method per message; each returns false if the connection must be dropped.
  bool on_set_features(Message& m);
  bool on_reset(Message& m);
  bool on_set_protocol_features(Message& m);
  bool on_set_mem_table(Message& m);
  bool on_add_mem_reg(Message& m);
  bool on_rem_mem_reg(Message& m);
  bool on_set_vring_num(Message& m);
  bool on_set_vring_addr(Message& m);
  bool on_set_vring_base(Message& m);
  bool on_get_vring_base(Message& m);
  bool on_set_vring_kick(Message& m);
  bool on_set_vring_call_or_err(Message& m);
  bool on_set_vring_enable(Message& m);
  bool on_set_backend_req_fd(Message& m);
  bool on_get_config(Message& m);
  bool on_unsupported(Message& m);

  // Replies with `size` bytes of payload.
  bool reply(const Message& m, const void* payload, uint32_t size);
  bool reply_u64(const Message& m, uint64_t value) { return reply(m, &value, sizeof(value)); }
  // The result of a message without a reply of its own: sent when REPLY_ACK was negotiated and
  // the frontend asked (0 success, 1 failure).
  bool ack(const Message& m, bool ok);
  bool bad_size(const Message& m, uint32_t expected);
  // Queue `index` of a message, or nullptr (logged) if out of range.
  Queue* queue_of(const Message& m, uint64_t index);

  BackendOptions options_;
  Listener listener_;
  EventFd stop_fd_;  // run() returns when signalled
  int connection_ = -1;  // during run()
  BackendChannel backend_channel_;
  std::optional<fuse::DaxWindow> dax_window_;  // with options.dax_window_size
  QueueRunner runner_;  // after dax_window_: its requests use it
  Device device_;  // after runner_: its queue threads run the runner's loop
  uint64_t acked_protocol_features_ = 0;
};

}  // namespace svfs::transport::vhost_user
