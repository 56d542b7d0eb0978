// svfs-versiond --federation as a user runs it: a real nats-server (JetStream, its own store and
// loopback ports) and two real versiond "hosts", each with its own socket and table, on one
// directory standing for the shared volume. The directory is a private tmpfs, so no other
// process's changes reach the tables. Both watch their --volume-dir from the start, as on real
// hosts; but here both would see one filesystem's events, where another host's NFS client sees
// none of them. So host B runs with --host-changes none (no fanotify): only federation changes
// B's table.
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <thread>

#include <nlohmann/json.hpp>

#include "shm/version_table.h"
#include "tests/support/metrics_scrape.h"
#include "tests/versiond/nats_server.h"
#include "tests/versiond/test_support.h"
#include "versiond/client.h"

namespace svfs::versiond {
namespace {

using namespace std::chrono_literals;
using testing::WaitUntil;

constexpr uint64_t kSlots = 4096;

std::vector<uint64_t> Versions(const shm::VersionTable& table) {
  std::vector<uint64_t> versions(table.slot_count());
  for (uint64_t slot = 0; slot < versions.size(); ++slot) versions[slot] = table.sample(slot);
  return versions;
}

class FederationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (a private tmpfs as the volume, fanotify)";
    volume_ = dir_.path() + "/volume";
    ASSERT_EQ(::mkdir(volume_.c_str(), 0755), 0);
    ASSERT_EQ(::mount("svfs-volume", volume_.c_str(), "tmpfs", 0, "size=8m"), 0)
        << std::strerror(errno);
    mounted_ = true;
    file_ = volume_ + "/shared";
    { std::ofstream(file_) << "v1"; }
    nats_ = std::make_unique<testing::NatsServer>(NATS_SERVER_PATH, dir_.path() + "/nats-store",
                                                  "n1", testing::FreeLoopbackPort());
    ASSERT_TRUE(nats_->Start()) << nats_->log();
  }

  void TearDown() override {
    client_.reset();
    hosts_.clear();
    if (mounted_) ::umount2(volume_.c_str(), MNT_DETACH);
    for (const std::string& mount : extra_mounts_) ::umount2(mount.c_str(), MNT_DETACH);
  }

  // Host "a" watches the volume (fanotify); any other host does not (see above).
  // `more`: further options (another --volume pair, TLS files).
  testing::VersiondProcess& StartHost(const std::string& name, const std::string& urls,
                                      const std::vector<std::string>& more = {}) {
    std::vector<std::string> args = {"--capacity", std::to_string(kSlots), "--federation", urls,
                                     "--volume", "vol1", "--volume-dir", volume_,
                                     "--metrics-socket", MetricsSocket(name)};
    if (name != "a") args.insert(args.end(), {"--host-changes", "none"});
    args.insert(args.end(), more.begin(), more.end());
    // A joining host tells the others to bump every slot (its changes while it was not
    // publishing are unknown): wait until each has, so that tests start from a quiet state.
    std::vector<std::pair<testing::VersiondProcess*, uint64_t>> others;
    for (auto& other : hosts_) {
      if (other->running()) others.emplace_back(other.get(), Volume(*other).resyncs);
    }
    hosts_.push_back(std::make_unique<testing::VersiondProcess>(
        SVFS_VERSIOND_PATH, dir_.path() + "/" + name + ".sock", testing::UniqueTableName(),
        std::move(args)));
    testing::VersiondProcess& host = *hosts_.back();
    host.Start();
    EXPECT_TRUE(host.WaitForLog("federation: volume vol1", 5s)) << host.log();
    EXPECT_TRUE(WaitUntil([&] { return Volume(host).published_messages >= 1; }, 10s, 10ms))
        << "no join marker sent\n" << host.log();
    for (auto [other, resyncs] : others) {
      EXPECT_TRUE(WaitUntil([&] { return Volume(*other).resyncs > resyncs; }, 10s, 10ms))
          << "the join marker did not arrive\n" << other->log();
    }
    return host;
  }

  // A host's first federated volume as its stats show it (zeros if it cannot be asked).
  static svfs_test::VolumeRow Volume(const testing::VersiondProcess& host) {
    auto stats = svfs_test::QueryStats(host.socket(), nullptr, 0);
    return stats && !stats->federation.empty() ? stats->federation[0] : svfs_test::VolumeRow{};
  }

  // Host A's svfsd stand-in: an attached daemon, whose own changes A's versiond leaves to it.
  void AttachDaemonTo(const testing::VersiondProcess& host) {
    client_ = Client::Start({.socket_path = host.socket(), .name = "svfsd-a",
                             .shared_dirs = {volume_}, .retry_interval = 50ms});
    ASSERT_TRUE(WaitUntil([&] { return client_->attached(); }, 2s, 10ms)) << host.log();
  }

  std::string MetricsSocket(const std::string& host) const {
    return dir_.path() + "/" + host + ".metrics";
  }

  // One sample of a host's /metrics, parsed by prometheus_client; -1 if it is missing.
  double Metric(const std::string& host, const std::string& sample) const {
    auto response = svfs_test::HttpExchange(MetricsSocket(host), "GET /metrics HTTP/1.0\r\n\r\n");
    std::string error;
    auto samples = svfs_test::ParseMetrics(response.value_or(""), &error);
    EXPECT_TRUE(samples) << error;
    if (!samples || !samples->contains(sample)) return -1;
    return samples->at(sample);
  }

  // A host edit of `path` on A (chmod by another process); true once B's slot for it has moved.
  bool AChangeReaches(const testing::VersiondProcess& b, const std::string& path,
                      const char* mode = "600") {
    shm::VersionTable table_b = Table(b);
    const uint64_t slot = svfs_test::SlotOfPath(path, kSlots);
    const uint64_t before = table_b.sample(slot);
    EXPECT_EQ(testing::RunCommand({"/bin/chmod", mode, path}).status, 0);
    return WaitUntil([&] { return table_b.sample(slot) > before; }, 2s, 1ms);
  }

  // `svfsctl federation --json` of a host: its volumes by name.
  static std::map<std::string, nlohmann::json> FederationOf(const testing::VersiondProcess& host) {
    auto run = testing::RunCommand({SVFSCTL_PATH, "--socket", host.socket(), "federation", "--json"});
    EXPECT_EQ(run.status, 0) << run.output;
    std::map<std::string, nlohmann::json> volumes;
    auto parsed = nlohmann::json::parse(run.output, nullptr, false);
    if (parsed.is_discarded() || !parsed.contains("volumes")) {
      ADD_FAILURE() << "not svfsctl's JSON: " << run.output;
      return volumes;
    }
    for (const auto& volume : parsed["volumes"]) volumes[volume["volume"]] = volume;
    return volumes;
  }

  static shm::VersionTable Table(const testing::VersiondProcess& host) {
    auto table = shm::VersionTable::Attach(host.table(), shm::Access::kReadOnly);
    EXPECT_TRUE(table) << table.error();
    return std::move(*table);
  }

  testing::TempDir dir_;
  std::string volume_, file_;
  bool mounted_ = false;
  std::vector<std::string> extra_mounts_;  // unmounted in TearDown
  std::unique_ptr<testing::NatsServer> nats_;
  std::vector<std::unique_ptr<testing::VersiondProcess>> hosts_;
  std::unique_ptr<Client> client_;
};

TEST_F(FederationTest, AChangeOnOneHostBumpsThatSlotOnTheOtherOnceAndNotTwiceAtHome) {
  testing::VersiondProcess& a = StartHost("a", nats_->url());
  testing::VersiondProcess& b = StartHost("b", nats_->url());
  AttachDaemonTo(a);
  shm::VersionTable table_a = Table(a);
  shm::VersionTable table_b = Table(b);
  const uint64_t slot = svfs_test::SlotOfPath(file_, kSlots);
  ASSERT_NE(slot, 0u);
  const std::vector<uint64_t> before_a = Versions(table_a);
  const std::vector<uint64_t> before_b = Versions(table_b);

  // A host edit on A (another process than the attached daemon): one fanotify event.
  ASSERT_EQ(testing::RunCommand({"/bin/chmod", "600", file_}).status, 0);
  ASSERT_TRUE(WaitUntil([&] { return table_b.sample(slot) > before_b[slot]; }, 2s, 1ms))
      << "A:\n" << a.log() << "B:\n" << b.log();
  std::this_thread::sleep_for(300ms);  // A's own message has long come back to A by now
  EXPECT_EQ(table_a.sample(slot), before_a[slot] + 1) << "A applied its own bump again";
  const std::vector<uint64_t> after_b = Versions(table_b);
  size_t wrong = 0;
  for (uint64_t s = 1; s < kSlots; ++s) wrong += after_b[s] - before_b[s] != (s == slot ? 1u : 0u);
  EXPECT_EQ(wrong, 0u) << "B bumped other slots, or this one more than once";
  // B's /metrics says so: one bump from federation, and one resync (joining) so far.
  const std::string federation_bumps = "svfs_versiond_bumps_total{cause=\"federation\"}";
  EXPECT_EQ(Metric("b", federation_bumps), 1);
  EXPECT_EQ(Metric("b", "svfs_versiond_federation_resyncs_total"), 1);
  EXPECT_EQ(Metric("a", federation_bumps), 0) << "A counted its own change as a remote one";

  // The daemon's own change on A: A leaves it to the daemon, B must still hear of it.
  const uint64_t a_now = table_a.sample(slot);
  const uint64_t b_now = table_b.sample(slot);
  { std::ofstream(file_, std::ios::app) << "v2"; }
  EXPECT_TRUE(WaitUntil([&] { return table_b.sample(slot) > b_now; }, 2s, 1ms)) << b.log();
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(table_a.sample(slot), a_now);
  EXPECT_GE(Metric("b", federation_bumps), 2);
}

// A versiond watches its --volume-dir from the start: a change made on host A reaches B also
// while no svfsd of A serves the volume. svfsctl federation shows it on both sides.
TEST_F(FederationTest, AHostChangeReachesTheOtherHostWhileNoDaemonIsAttached) {
  testing::VersiondProcess& a = StartHost("a", nats_->url());
  testing::VersiondProcess& b = StartHost("b", nats_->url());
  ASSERT_TRUE(AChangeReaches(b, file_)) << "A:\n" << a.log() << "B:\n" << b.log();
  auto on_a = FederationOf(a);
  auto on_b = FederationOf(b);
  ASSERT_TRUE(on_a.contains("vol1") && on_b.contains("vol1"));
  EXPECT_EQ(on_a["vol1"]["connected"], true);
  EXPECT_GE(on_a["vol1"]["published_handles"].get<uint64_t>(), 1u);
  EXPECT_GE(on_a["vol1"]["published_messages"].get<uint64_t>(), 1u);
  EXPECT_GT(on_a["vol1"]["published_bytes"].get<uint64_t>(), 0u);
  EXPECT_EQ(on_b["vol1"]["remote_bumps"].get<uint64_t>(), 1u);
  EXPECT_EQ(on_b["vol1"]["resyncs"].get<uint64_t>(), 1u) << "joining";
  EXPECT_EQ(on_b["vol1"]["published_handles"].get<uint64_t>(), 0u) << "B has --host-changes none";
  EXPECT_EQ(Metric("a", "svfs_versiond_federation_connected{volume=\"vol1\"}"), 1);
}

// Several volumes on one versiond, each on its own stream: a change in the second reaches the
// other host as that volume's, bumping the slot computed with that volume's filesystem.
TEST_F(FederationTest, SeveralVolumesEachGoOverTheirOwnStream) {
  const std::string volume2 = dir_.path() + "/volume2";
  ASSERT_EQ(::mkdir(volume2.c_str(), 0755), 0);
  ASSERT_EQ(::mount("svfs-volume2", volume2.c_str(), "tmpfs", 0, "size=8m"), 0);
  extra_mounts_.push_back(volume2);
  const std::string file2 = volume2 + "/other";
  { std::ofstream(file2) << "v1"; }
  const std::vector<std::string> second = {"--volume", "vol2", "--volume-dir", volume2};
  testing::VersiondProcess& a = StartHost("a", nats_->url(), second);
  testing::VersiondProcess& b = StartHost("b", nats_->url(), second);
  ASSERT_TRUE(b.WaitForLog("federation: volume vol2", 5s)) << b.log();
  EXPECT_TRUE(AChangeReaches(b, file2)) << "A:\n" << a.log() << "B:\n" << b.log();
  auto on_b = FederationOf(b);
  ASSERT_TRUE(on_b.contains("vol1") && on_b.contains("vol2")) << b.log();
  EXPECT_EQ(on_b["vol2"]["remote_bumps"].get<uint64_t>(), 1u);
  EXPECT_EQ(on_b["vol1"]["remote_bumps"].get<uint64_t>(), 0u) << "vol2's change came as vol1's";
}

// NATS credentials as the servers ask for them: a user and password in the URL; TLS with the
// servers' CA and a client certificate the server verifies. Without them versiond refuses to
// start, saying it cannot connect.
TEST_F(FederationTest, AUserAndPasswordInTheUrlAreUsed) {
  nats_->Kill(SIGTERM);
  const int port = testing::FreeLoopbackPort();
  testing::NatsServer secured(NATS_SERVER_PATH, dir_.path() + "/nats-auth", "auth", port);
  secured.set_extra_args({"--user", "svfs", "--pass", "s3cret"});
  ASSERT_TRUE(secured.Start()) << secured.log();
  const std::string with = "nats://svfs:s3cret@127.0.0.1:" + std::to_string(port);
  testing::VersiondProcess& a = StartHost("a", with);
  testing::VersiondProcess& b = StartHost("b", with);
  EXPECT_TRUE(AChangeReaches(b, file_)) << a.log();
  auto refused = testing::RunCommand(
      {SVFS_VERSIOND_PATH, "--socket", dir_.path() + "/c.sock", "--table", "svfs-test-noauth",
       "--federation", "nats://127.0.0.1:" + std::to_string(port), "--volume", "vol1",
       "--volume-dir", volume_});
  shm::VersionTable::Remove("svfs-test-noauth");
  EXPECT_NE(refused.status, 0);
  EXPECT_NE(refused.output.find("cannot connect"), std::string::npos) << refused.output;
  // The password is never logged: the URL is shown as nats://***@HOST:PORT.
  EXPECT_EQ(a.log().find("s3cret"), std::string::npos) << a.log();
  EXPECT_NE(a.log().find("nats://***@127.0.0.1:" + std::to_string(port)), std::string::npos)
      << a.log();
  // From the environment, so it stays out of argv too; a wrong password is refused, unshown.
  auto from_env = testing::RunCommand(
      {"/usr/bin/env", "SVFS_FEDERATION=nats://svfs:wrong@127.0.0.1:" + std::to_string(port),
       SVFS_VERSIOND_PATH, "--socket", dir_.path() + "/e.sock", "--table", "svfs-test-envauth",
       "--volume", "vol1", "--volume-dir", volume_});
  shm::VersionTable::Remove("svfs-test-envauth");
  EXPECT_NE(from_env.status, 0);
  EXPECT_NE(from_env.output.find("--federation nats://***@127.0.0.1:" + std::to_string(port) +
                                 " (--volume vol1): cannot connect"),
            std::string::npos)
      << from_env.output;
  EXPECT_EQ(from_env.output.find("wrong"), std::string::npos) << from_env.output;
}

TEST_F(FederationTest, TlsWithTheServersCaAndAClientCertificate) {
  if (::access("/usr/bin/openssl", X_OK) != 0) GTEST_SKIP() << "no openssl (apt-get install openssl)";
  const std::string pki = dir_.path() + "/pki";
  ASSERT_EQ(::mkdir(pki.c_str(), 0700), 0);
  auto openssl = [&](std::vector<std::string> args) {
    args.insert(args.begin(), "/usr/bin/openssl");
    auto run = testing::RunCommand(args);
    EXPECT_EQ(run.status, 0) << run.output;
  };
  openssl({"req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=svfs-test-ca",
           "-keyout", pki + "/ca.key", "-out", pki + "/ca.pem"});
  { std::ofstream(pki + "/server.ext") << "subjectAltName=IP:127.0.0.1\n"; }
  for (const std::string who : {"server", "client"}) {
    openssl({"req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=svfs-test-" + who, "-keyout",
             pki + "/" + who + ".key", "-out", pki + "/" + who + ".csr"});
    openssl({"x509", "-req", "-days", "1", "-in", pki + "/" + who + ".csr", "-CA", pki + "/ca.pem",
             "-CAkey", pki + "/ca.key", "-CAcreateserial", "-extfile", pki + "/server.ext", "-out",
             pki + "/" + who + ".pem"});
  }
  ASSERT_FALSE(HasFailure()) << "the certificates could not be made";
  nats_->Kill(SIGTERM);
  const int port = testing::FreeLoopbackPort();
  testing::NatsServer secured(NATS_SERVER_PATH, dir_.path() + "/nats-tls", "tls", port);
  secured.set_extra_args({"--tlsverify", "--tlscert", pki + "/server.pem", "--tlskey",
                          pki + "/server.key", "--tlscacert", pki + "/ca.pem"});
  ASSERT_TRUE(secured.Start()) << secured.log();
  const std::vector<std::string> tls = {"--federation-tls-ca", pki + "/ca.pem",
                                        "--federation-tls-cert", pki + "/client.pem",
                                        "--federation-tls-key", pki + "/client.key"};
  testing::VersiondProcess& a = StartHost("a", secured.url(), tls);
  testing::VersiondProcess& b = StartHost("b", secured.url(), tls);
  EXPECT_TRUE(AChangeReaches(b, file_)) << a.log();
  // The CA alone: the server wants a client certificate.
  auto refused = testing::RunCommand(
      {SVFS_VERSIOND_PATH, "--socket", dir_.path() + "/c.sock", "--table", "svfs-test-nocert",
       "--federation", secured.url(), "--volume", "vol1", "--volume-dir", volume_,
       "--federation-tls-ca", pki + "/ca.pem"});
  shm::VersionTable::Remove("svfs-test-nocert");
  EXPECT_NE(refused.status, 0);
  EXPECT_NE(refused.output.find("cannot connect"), std::string::npos) << refused.output;
}

// A killed versiond: what changed on its host while it was down is unknown to the others, so
// when it is back its first message makes every other host bump all its slots.
TEST_F(FederationTest, ChangesWhileAVersiondIsDownReachTheOthersWhenItIsBack) {
  testing::VersiondProcess& a = StartHost("a", nats_->url());
  testing::VersiondProcess& b = StartHost("b", nats_->url());
  shm::VersionTable table_b = Table(b);
  const uint64_t slot = svfs_test::SlotOfPath(file_, kSlots);
  const std::vector<uint64_t> before = Versions(table_b);
  a.Kill(SIGKILL);
  ASSERT_EQ(testing::RunCommand({"/bin/chmod", "604", file_}).status, 0);  // nobody publishes it
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(table_b.sample(slot), before[slot]) << "B heard of a change no versiond saw";
  a.Start();
  ASSERT_TRUE(b.WaitForLog("lost track of its changes", 5s)) << b.log();
  const std::vector<uint64_t> after = Versions(table_b);
  size_t missed = 0;
  for (uint64_t s = 1; s < kSlots; ++s) missed += after[s] == before[s];
  EXPECT_EQ(missed, 0u) << "every slot of B must move once A is back\n" << b.log();
}

// A subscriber stopped long enough for the server to drop it (its pings unanswered): the
// messages meanwhile are lost to it, and it bumps every slot when it is back.
TEST_F(FederationTest, ASubscriberTheServerDroppedBumpsEverySlotWhenItResumes) {
  nats_->Kill(SIGTERM);
  const std::string config = dir_.path() + "/nats-impatient.conf";
  { std::ofstream(config) << "ping_interval: \"500ms\"\nping_max: 1\n"; }
  const int port = testing::FreeLoopbackPort();
  testing::NatsServer impatient(NATS_SERVER_PATH, dir_.path() + "/nats-impatient", "imp", port);
  impatient.set_extra_args({"-c", config, "-D"});  // -D: it logs the stale connection
  ASSERT_TRUE(impatient.Start()) << impatient.log();
  testing::VersiondProcess& a = StartHost("a", impatient.url());
  testing::VersiondProcess& b = StartHost("b", impatient.url());
  shm::VersionTable table_b = Table(b);
  const std::vector<uint64_t> before = Versions(table_b);
  ::kill(b.pid(), SIGSTOP);
  ASSERT_EQ(testing::RunCommand({"/bin/chmod", "606", file_}).status, 0);
  const bool dropped = WaitUntil(
      [&] { return impatient.log().find("Stale Client Connection") != std::string::npos; }, 10s,
      50ms);
  ::kill(b.pid(), SIGCONT);
  ASSERT_TRUE(dropped) << impatient.log();
  ASSERT_TRUE(b.WaitForLog("back on NATS", 10s)) << b.log();
  const std::vector<uint64_t> after = Versions(table_b);
  size_t missed = 0;
  for (uint64_t s = 1; s < kSlots; ++s) missed += after[s] == before[s];
  EXPECT_EQ(missed, 0u) << "every slot of B must move once it is back\n" << b.log() << a.log();
}

TEST_F(FederationTest, ANatsRestartBumpsEverySlotOnceOnTheSubscriberThenFederationResumes) {
  testing::VersiondProcess& a = StartHost("a", nats_->url());
  testing::VersiondProcess& b = StartHost("b", nats_->url());
  AttachDaemonTo(a);
  shm::VersionTable table_b = Table(b);
  const std::vector<uint64_t> before = Versions(table_b);
  const std::string resyncs = "svfs_versiond_federation_resyncs_total";
  EXPECT_EQ(Metric("b", resyncs), 1) << "joining is B's first resync";

  nats_->Kill(SIGKILL);
  ASSERT_TRUE(b.WaitForLog("lost the NATS connection", 5s)) << b.log();
  // B keeps serving its daemons locally.
  EXPECT_EQ(testing::GetStats(b.socket()).slot_count, kSlots);
  ASSERT_TRUE(nats_->Start()) << nats_->log();
  ASSERT_TRUE(b.WaitForLog("back on NATS", 10s)) << b.log();
  const std::vector<uint64_t> after = Versions(table_b);
  size_t not_once = 0;
  for (uint64_t s = 1; s < kSlots; ++s) not_once += after[s] - before[s] != 1;
  EXPECT_EQ(not_once, 0u) << "every slot of B must be bumped exactly once\n" << b.log();
  EXPECT_EQ(Metric("b", resyncs), 2) << "the reconnect is one more resync\n" << b.log();

  const uint64_t slot = svfs_test::SlotOfPath(file_, kSlots);
  ASSERT_TRUE(a.WaitForLog("back on NATS", 10s)) << a.log();
  ASSERT_EQ(testing::RunCommand({"/bin/chmod", "640", file_}).status, 0);
  EXPECT_TRUE(WaitUntil([&] { return table_b.sample(slot) > after[slot]; }, 3s, 1ms))
      << "A:\n" << a.log() << "B:\n" << b.log();
}

// A 3-node NATS cluster, stream replicated 3 times; B's node is killed: B reconnects to another
// node, bumps every slot once, and changes on A reach it again.
TEST_F(FederationTest, InAThreeNodeClusterLosingTheSubscribersNodeBumpsEverySlotThenResumes) {
  nats_.reset();
  const int client_ports[3] = {testing::FreeLoopbackPort(), testing::FreeLoopbackPort(),
                               testing::FreeLoopbackPort()};
  const int cluster_ports[3] = {testing::FreeLoopbackPort(), testing::FreeLoopbackPort(),
                                testing::FreeLoopbackPort()};
  std::vector<std::unique_ptr<testing::NatsServer>> nodes;
  for (int i = 0; i < 3; ++i) {
    std::vector<std::string> routes;
    for (int j = 0; j < 3; ++j) {
      if (j != i) routes.push_back("nats://127.0.0.1:" + std::to_string(cluster_ports[j]));
    }
    nodes.push_back(std::make_unique<testing::NatsServer>(
        NATS_SERVER_PATH, dir_.path() + "/store-n" + std::to_string(i), "n" + std::to_string(i),
        client_ports[i], cluster_ports[i], routes));
  }
  for (auto& node : nodes) ASSERT_TRUE(node->Start()) << node->log();
  ASSERT_TRUE(WaitUntil([&] {
    for (auto& node : nodes) {
      if (node->log().find("new metadata leader") != std::string::npos) return true;
    }
    return false;
  }, 15s, 50ms)) << nodes[0]->log();
  const std::string all = nodes[0]->url() + "," + nodes[1]->url() + "," + nodes[2]->url();
  hosts_.push_back(std::make_unique<testing::VersiondProcess>(
      SVFS_VERSIOND_PATH, dir_.path() + "/a.sock", testing::UniqueTableName(),
      std::vector<std::string>{"--capacity", std::to_string(kSlots), "--federation", all,
                               "--volume", "vol1", "--volume-dir", volume_,
                               "--federation-replicas", "3"}));
  testing::VersiondProcess& a = *hosts_.back();
  a.Start();
  ASSERT_TRUE(a.WaitForLog("federation: volume vol1", 10s)) << a.log();
  // B is given node 1 alone, so killing node 1 is killing B's node; it learns the other nodes
  // from the cluster (NATS servers announce them to clients).
  testing::VersiondProcess& b = StartHost("b", nodes[1]->url());
  AttachDaemonTo(a);
  shm::VersionTable table_b = Table(b);
  const uint64_t slot = svfs_test::SlotOfPath(file_, kSlots);
  const std::vector<uint64_t> before = Versions(table_b);
  ASSERT_EQ(testing::RunCommand({"/bin/chmod", "600", file_}).status, 0);
  ASSERT_TRUE(WaitUntil([&] { return table_b.sample(slot) > before[slot]; }, 3s, 1ms)) << b.log();

  const std::vector<uint64_t> up = Versions(table_b);
  const std::string resyncs = "svfs_versiond_federation_resyncs_total";
  const auto resyncs_up = static_cast<uint64_t>(Metric("b", resyncs));
  // If node 1 led the cluster's metadata, the stream API answers once a new leader is elected.
  nodes[1]->Kill(SIGKILL);
  ASSERT_TRUE(b.WaitForLog("back on NATS", 30s)) << b.log();
  std::this_thread::sleep_for(200ms);  // a volume-wide marker from A may still be on its way
  const std::vector<uint64_t> after = Versions(table_b);
  // B's own resync, and A's if A's publishes failed while the stream's leader was re-elected
  // and its marker came after B's bump (before it, B skips it as covered): each bumps every
  // slot once, nothing less, nothing partial.
  const uint64_t resynced = static_cast<uint64_t>(Metric("b", resyncs)) - resyncs_up;
  EXPECT_GE(resynced, 1u);
  EXPECT_LE(resynced, 2u);
  size_t uneven = 0;
  for (uint64_t s = 1; s < kSlots; ++s) uneven += after[s] - up[s] != resynced;
  EXPECT_EQ(uneven, 0u) << "every slot of B must be bumped once per resync\n" << b.log();
  // If node 1 led the stream, A's publishes fail until a new leader is elected (seconds); then
  // A's volume-wide marker, or the change itself, reaches B.
  ASSERT_EQ(testing::RunCommand({"/bin/chmod", "640", file_}).status, 0);
  EXPECT_TRUE(WaitUntil([&] { return table_b.sample(slot) > after[slot]; }, 30s, 1ms))
      << "A:\n" << a.log() << "B:\n" << b.log();
}

TEST(FederationStartTest, WithoutAReachableServerVersiondRefusesToStartAndSaysWhich) {
  testing::TempDir dir;
  const std::string url = "nats://127.0.0.1:" + std::to_string(testing::FreeLoopbackPort());
  const std::string table = testing::UniqueTableName();
  auto run = testing::RunCommand({SVFS_VERSIOND_PATH, "--socket", dir.path() + "/v.sock",
                                  "--table", table, "--capacity", "64", "--federation", url,
                                  "--volume", "vol1", "--volume-dir", dir.path()});
  shm::VersionTable::Remove(table);
  EXPECT_NE(run.status, 0);
  EXPECT_NE(run.output.find("--federation " + url + " (--volume vol1): cannot connect"),
            std::string::npos)
      << run.output;
  // --volume and --volume-dir come in pairs, each name once.
  auto unpaired = testing::RunCommand({SVFS_VERSIOND_PATH, "--socket", dir.path() + "/u.sock",
                                       "--table", table, "--federation", url, "--volume", "vol1",
                                       "--volume-dir", dir.path(), "--volume", "vol2"});
  EXPECT_EQ(unpaired.status, 2) << unpaired.output;
  EXPECT_NE(unpaired.output.find("2 --volume and 1 --volume-dir"), std::string::npos)
      << unpaired.output;
  auto twice = testing::RunCommand({SVFS_VERSIOND_PATH, "--socket", dir.path() + "/t.sock",
                                    "--table", table, "--federation", url, "--volume", "vol1",
                                    "--volume-dir", dir.path(), "--volume", "vol1", "--volume-dir",
                                    dir.path()});
  EXPECT_EQ(twice.status, 2) << twice.output;
  EXPECT_NE(twice.output.find("--volume vol1 given twice"), std::string::npos) << twice.output;
  auto bad_name = testing::RunCommand({SVFS_VERSIOND_PATH, "--socket", dir.path() + "/w.sock",
                                       "--table", table, "--federation", url, "--volume", "a.b",
                                       "--volume-dir", dir.path()});
  shm::VersionTable::Remove(table);
  EXPECT_NE(bad_name.status, 0);
  EXPECT_NE(bad_name.output.find("--volume 'a.b'"), std::string::npos) << bad_name.output;
}

}  // namespace
}  // namespace svfs::versiond
