// The vhost-user-fs backend: listens on a UNIX socket (or takes an inherited listening socket),
// accepts one frontend (QEMU, cloud-hypervisor, ...), speaks the vhost-user control protocol on
// it, and serves each virtqueue with its own thread: queue 0 is the hiprio queue (FORGET,
// BATCH_FORGET, INTERRUPT), queues 1..N are request queues, as many as the frontend sets up.
//
// Threading: the control loop (run()) owns all configuration. Before it changes anything a
// queue thread reads (the memory table, ring addresses, eventfds, features) it stops that queue
// thread (stop eventfd + join), waits until the worker pool (if any) has completed every chain of
// that queue, and starts the thread again afterwards; queue and pool threads therefore never see
// the memory table change under them, and need no lock per request. With a pool, the queue
// thread pops chains and pool workers serve them, pushing used entries under a per-queue mutex.
// Known limit: a request blocked in a lock wait (SETLKW) delays such a stop until it ends.
#pragma once

#include <atomic>
#include <cstdint>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "daemon/fuse/server.h"
#include "daemon/transport/vhost_user/guest_memory.h"
#include "daemon/transport/vhost_user/virtqueue.h"
#include "daemon/util/result.h"
#include "daemon/util/unique_fd.h"

namespace svfs::transport::vhost_user {

struct BackendOptions {
  std::string socket_path;   // listen here (stale socket unlinked, `<path>.pid` locked)
  int listen_fd = -1;        // or: an inherited listening socket (--fd)
  std::string socket_group;  // chgrp the socket to this group (and mode 0660)
  std::string tag;           // GET_CONFIG tag (CONFIG protocol feature offered when set)
  // num_request_queues reported by GET_CONFIG (the frontend decides how many it sets up).
  uint32_t config_request_queues = 1;
  // Worker threads shared by the request queues (--thread-pool-size); 0: each request queue's
  // thread serves its requests itself, one at a time (as virtiofsd without a pool). 1 is served
  // as 0: one worker overlaps no two requests either, but costs a hand-off and a wake-up per
  // request (Kata's default arguments carry --thread-pool-size=1).
  unsigned pool_threads = 0;
  // Longest a request queue's thread polls its ring before sleeping (adaptive_poll.h); 0: never
  // poll (--poll-us).
  std::chrono::microseconds poll_max{0};
  // Runs first in every queue and worker thread (per-thread credential setup).
  std::function<void()> thread_init;
};

// vhost-user protocol constants.
namespace msg {
enum Request : uint32_t {
  kGetFeatures = 1,
  kSetFeatures = 2,
  kSetOwner = 3,
  kResetOwner = 4,
  kSetMemTable = 5,
  kSetLogBase = 6,
  kSetLogFd = 7,
  kSetVringNum = 8,
  kSetVringAddr = 9,
  kSetVringBase = 10,
  kGetVringBase = 11,
  kSetVringKick = 12,
  kSetVringCall = 13,
  kSetVringErr = 14,
  kGetProtocolFeatures = 15,
  kSetProtocolFeatures = 16,
  kGetQueueNum = 17,
  kSetVringEnable = 18,
  kSetBackendReqFd = 21,
  kGetConfig = 24,
  kSetConfig = 25,
  kResetDevice = 34,
  kGetMaxMemSlots = 36,
  kAddMemReg = 37,
  kRemMemReg = 38,
};
inline constexpr uint32_t kVersion = 0x1;
inline constexpr uint32_t kVersionMask = 0x3;
inline constexpr uint32_t kReplyFlag = 0x4;
inline constexpr uint32_t kNeedReplyFlag = 0x8;
inline constexpr uint64_t kVringIndexMask = 0xff;
inline constexpr uint64_t kVringNoFd = 0x100;

// Virtio feature bits.
inline constexpr uint64_t kFeatureIndirectDesc = 1ull << 28;
inline constexpr uint64_t kFeatureEventIdx = 1ull << 29;
inline constexpr uint64_t kFeatureProtocolFeatures = 1ull << 30;
inline constexpr uint64_t kFeatureVersion1 = 1ull << 32;
// Protocol feature bits.
inline constexpr uint64_t kProtocolMq = 1ull << 0;
inline constexpr uint64_t kProtocolReplyAck = 1ull << 3;
inline constexpr uint64_t kProtocolBackendReq = 1ull << 5;
inline constexpr uint64_t kProtocolConfig = 1ull << 9;
inline constexpr uint64_t kProtocolBackendSendFd = 1ull << 10;
inline constexpr uint64_t kProtocolResetDevice = 1ull << 13;
inline constexpr uint64_t kProtocolConfigureMemSlots = 1ull << 15;
}  // namespace msg

class VhostUserBackend {
 public:
  // Queues accepted: hiprio + 16 request queues (GET_QUEUE_NUM).
  static constexpr uint32_t kMaxQueues = 17;
  static constexpr size_t kMaxFdsPerMessage = 8;

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
  struct Queue;
  struct Message;
  struct CopiedRequest;
  struct OffThreadChain;
  class WorkerPool;

  VhostUserBackend(fuse::Server& server, BackendOptions options);
  Status listen();
  void serve(int connection);
  // Handles one message; returns false if the connection must be dropped.
  bool handle(int connection, Message& message);
  bool reply(int connection, const Message& message, const void* payload, uint32_t size);

  // Queue control (control thread only).
  void stop_queue(Queue& queue);
  void update_queue(uint32_t index);  // (re)starts the queue thread if it should run
  void stop_all_queues();
  void update_all_queues();
  // Unmaps the guest memory (queues stopped), saying so if the frontend shrank it under us.
  void release_memory();
  void queue_thread(uint32_t index);
  // Copies a chain's request (header and arguments; for WRITE only its headers) into `buffer`
  // once: that copy is what is classified and served (queue thread).
  CopiedRequest copy_request(uint32_t index, const Chain& chain, std::span<uint8_t> buffer);
  // Serves a chain from its request copy and marks it used; signals the driver unless
  // `defer_notify` (the caller then calls notify_locked itself, under the queue's used_mutex).
  // `payload` is scratch for a WRITE's data iovecs (queue, pool or lock-wait thread).
  void serve_copy(uint32_t index, const Chain& chain, const CopiedRequest& copy,
                  std::vector<iovec>& payload, bool defer_notify = false);
  void notify_locked(uint32_t index);
  // Marks chain `head` used with `len` bytes written, under the queue's used_mutex, and signals
  // the driver if `notify`.
  void push_used(uint32_t index, uint16_t head, uint32_t len, bool notify);
  // Answers a chain with `error` (no request run), marks it used and signals.
  void refuse_chain(uint32_t index, const Chain& chain, const CopiedRequest& copy, int error);

  fuse::Server& server_;
  BackendOptions options_;
  UniqueFd listen_fd_;
  UniqueFd lock_fd_;
  std::string lock_path_;
  bool own_socket_path_ = false;
  UniqueFd stop_fd_;  // eventfd: run() returns when readable

  GuestMemory memory_;
  std::vector<std::unique_ptr<Queue>> queues_;
  uint64_t acked_features_ = 0;
  uint64_t acked_protocol_features_ = 0;
  UniqueFd backend_req_fd_;
  std::unique_ptr<WorkerPool> pool_;  // during run(), if options_.pool_threads
  // Lock waits (SETLKW) served on threads of their own, and at most how many at once: beyond
  // that a SETLKW is answered ENOLCK, as for a full lock table.
  static constexpr unsigned kMaxLockWaiters = 256;
  std::atomic<unsigned> lock_waiters_{0};
};

}  // namespace svfs::transport::vhost_user
