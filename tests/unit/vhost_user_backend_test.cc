// The vhost-user control protocol of VhostUserBackend over a real socket: message validation,
// REPLY_ACK, refused requests, GET_CONFIG, and return from run() on disconnect.
#include "daemon/transport/vhost_user/backend.h"

#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <future>
#include <thread>

#include "tests/unit/fake_filesystem.h"

namespace svfs::transport::vhost_user {
namespace {

class BackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int listening = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(listening, 0);
    path_ = "/tmp/svfs-vu-test-" + std::to_string(::getpid()) + ".sock";
    ::unlink(path_.c_str());
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::strncpy(address.sun_path, path_.c_str(), sizeof(address.sun_path) - 1);
    ASSERT_EQ(::bind(listening, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
    ASSERT_EQ(::listen(listening, 1), 0);
    auto backend = VhostUserBackend::Create(
        server_, BackendOptions{.listen_fd = listening, .tag = "mytag"});
    ASSERT_TRUE(backend);
    backend_ = std::move(*backend);
    run_ = std::async(std::launch::async, [this] { return backend_->run(); });
    conn_ = UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    ASSERT_EQ(::connect(conn_.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  }
  void TearDown() override {
    conn_.reset();
    if (run_.valid()) {
      ASSERT_EQ(run_.wait_for(std::chrono::seconds(10)), std::future_status::ready);
      EXPECT_TRUE(run_.get());
    }
    ::unlink(path_.c_str());
  }

  void send(uint32_t request, const void* payload, uint32_t size, bool need_reply = false,
            int fd = -1) {
    uint32_t header[3] = {request, 1u | (need_reply ? 8u : 0u), size};
    std::vector<uint8_t> bytes(sizeof(header) + size);
    std::memcpy(bytes.data(), header, sizeof(header));
    if (size) std::memcpy(bytes.data() + sizeof(header), payload, size);
    iovec iov{bytes.data(), bytes.size()};
    msghdr mh{};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
    if (fd >= 0) {
      mh.msg_control = control;
      mh.msg_controllen = sizeof(control);
      cmsghdr* c = CMSG_FIRSTHDR(&mh);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int));
      std::memcpy(CMSG_DATA(c), &fd, sizeof(int));
    }
    ASSERT_EQ(::sendmsg(conn_.get(), &mh, MSG_NOSIGNAL), static_cast<ssize_t>(bytes.size()));
  }
  void send_u64(uint32_t request, uint64_t value, bool need_reply = false, int fd = -1) {
    send(request, &value, sizeof(value), need_reply, fd);
  }
  // Receives one reply; returns its payload (and checks the header).
  std::vector<uint8_t> receive(uint32_t request) {
    uint32_t header[3];
    EXPECT_EQ(::recv(conn_.get(), header, sizeof(header), MSG_WAITALL),
              static_cast<ssize_t>(sizeof(header)));
    EXPECT_EQ(header[0], request);
    EXPECT_EQ(header[1], 5u);  // version 1 | reply
    std::vector<uint8_t> payload(header[2]);
    if (!payload.empty()) {
      EXPECT_EQ(::recv(conn_.get(), payload.data(), payload.size(), MSG_WAITALL),
                static_cast<ssize_t>(payload.size()));
    }
    return payload;
  }
  uint64_t receive_u64(uint32_t request) {
    auto payload = receive(request);
    uint64_t value = ~0ull;
    EXPECT_EQ(payload.size(), 8u);
    if (payload.size() == 8) std::memcpy(&value, payload.data(), 8);
    return value;
  }
  void negotiate_reply_ack() {
    send(msg::kGetProtocolFeatures, nullptr, 0);
    uint64_t features = receive_u64(msg::kGetProtocolFeatures);
    ASSERT_TRUE(features & msg::kProtocolReplyAck);
    send_u64(msg::kSetProtocolFeatures, features);
  }

  testing::FakeFileSystem filesystem_;
  fuse::Server server_{filesystem_};
  std::string path_;
  std::unique_ptr<VhostUserBackend> backend_;
  std::future<Status> run_;
  UniqueFd conn_;
};

TEST_F(BackendTest, FeaturesAndQueueCount) {
  send(msg::kGetFeatures, nullptr, 0);
  uint64_t features = receive_u64(msg::kGetFeatures);
  EXPECT_EQ(features, msg::kFeatureVersion1 | msg::kFeatureIndirectDesc | msg::kFeatureEventIdx |
                          msg::kFeatureProtocolFeatures);
  send(msg::kGetProtocolFeatures, nullptr, 0);
  uint64_t protocol = receive_u64(msg::kGetProtocolFeatures);
  EXPECT_TRUE(protocol & msg::kProtocolMq);
  EXPECT_TRUE(protocol & msg::kProtocolConfig);  // a tag was given
  EXPECT_FALSE(protocol & (1ull << 1));          // no LOG_SHMFD
  send(msg::kGetQueueNum, nullptr, 0);
  EXPECT_EQ(receive_u64(msg::kGetQueueNum), VhostUserBackend::kMaxQueues);
}

TEST_F(BackendTest, ReplyAckReportsSuccessAndFailure) {
  negotiate_reply_ack();
  send(msg::kSetOwner, nullptr, 0, /*need_reply=*/true);
  EXPECT_EQ(receive_u64(msg::kSetOwner), 0u);
  // Features never offered.
  send_u64(msg::kSetFeatures, 1ull << 40, true);
  EXPECT_NE(receive_u64(msg::kSetFeatures), 0u);
  // Wrong payload size.
  uint32_t short_payload = 0;
  send(msg::kSetVringNum, &short_payload, sizeof(short_payload), true);
  EXPECT_NE(receive_u64(msg::kSetVringNum), 0u);
  // Queue size not a power of two; queue index out of range.
  uint32_t state[2] = {1, 100};
  send(msg::kSetVringNum, state, sizeof(state), true);
  EXPECT_NE(receive_u64(msg::kSetVringNum), 0u);
  state[0] = 200;
  state[1] = 128;
  send(msg::kSetVringNum, state, sizeof(state), true);
  EXPECT_NE(receive_u64(msg::kSetVringNum), 0u);
  state[0] = 1;
  send(msg::kSetVringNum, state, sizeof(state), true);
  EXPECT_EQ(receive_u64(msg::kSetVringNum), 0u);
  // SET_VRING_CALL with the NOFD bit, and without an fd although one was announced.
  send_u64(msg::kSetVringCall, 1 | msg::kVringNoFd, true);
  EXPECT_EQ(receive_u64(msg::kSetVringCall), 0u);
  send_u64(msg::kSetVringCall, 1, true);
  EXPECT_NE(receive_u64(msg::kSetVringCall), 0u);
  UniqueFd event(::eventfd(0, EFD_CLOEXEC));
  send_u64(msg::kSetVringCall, 1, true, event.get());
  EXPECT_EQ(receive_u64(msg::kSetVringCall), 0u);
  // SET_MEM_TABLE announcing a region without its fd.
  uint8_t table[8 + 32] = {};
  table[0] = 1;
  send(msg::kSetMemTable, table, sizeof(table), true);
  EXPECT_NE(receive_u64(msg::kSetMemTable), 0u);
}

TEST_F(BackendTest, RefusedAndUnknownRequestsNeverHang) {
  negotiate_reply_ack();
  send_u64(msg::kSetLogBase, 0, true);
  EXPECT_NE(receive_u64(msg::kSetLogBase), 0u);
  uint8_t config[12 + 4] = {};
  send(msg::kSetConfig, config, sizeof(config), true);
  EXPECT_NE(receive_u64(msg::kSetConfig), 0u);
  send(99, nullptr, 0, true);
  EXPECT_NE(receive_u64(99), 0u);
  // Without need_reply, nothing is sent back: the next reply is GET_FEATURES'.
  send(99, nullptr, 0, false);
  send(msg::kGetFeatures, nullptr, 0);
  EXPECT_NE(receive_u64(msg::kGetFeatures), 0u);
}

TEST_F(BackendTest, GetConfigReturnsTagAndChecksBounds) {
  uint32_t request[3 + 10] = {0, 40, 0};
  send(msg::kGetConfig, request, 12 + 40);
  auto payload = receive(msg::kGetConfig);
  ASSERT_EQ(payload.size(), 12u + 40u);
  EXPECT_EQ(std::string(reinterpret_cast<char*>(payload.data()) + 12), "mytag");
  uint32_t queues;
  std::memcpy(&queues, payload.data() + 12 + 36, 4);
  EXPECT_EQ(queues, 1u);
  // Past the end of the config space: an empty answer.
  uint32_t bad[3 + 10] = {36, 8, 0};
  send(msg::kGetConfig, bad, 12 + 8);
  EXPECT_EQ(receive(msg::kGetConfig).size(), 12u);
}

TEST_F(BackendTest, OversizedMessageDisconnects) {
  send(msg::kSetOwner, nullptr, 0);
  uint32_t header[3] = {msg::kSetFeatures, 1, 1u << 20};
  ASSERT_EQ(::send(conn_.get(), header, sizeof(header), MSG_NOSIGNAL), 12);
  // run() returns (TearDown checks) and the connection is closed.
  char byte;
  EXPECT_EQ(::recv(conn_.get(), &byte, 1, 0), 0);
}

TEST_F(BackendTest, StopEndsRun) {
  backend_->stop();
  ASSERT_EQ(run_.wait_for(std::chrono::seconds(10)), std::future_status::ready);
}

}  // namespace
}  // namespace svfs::transport::vhost_user
