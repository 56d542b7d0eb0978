// svfs-versiond's /metrics on the real binary, under its default seccomp filter: scraped as
// Prometheus would and parsed by prometheus_client, checked against what the test made happen
// (clients attaching and leaving, a host edit, a restart taking the table over).
#include <signal.h>

#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <string>

#include "tests/support/metrics_scrape.h"
#include "tests/versiond/test_support.h"
#include "versiond/client.h"

namespace svfs::versiond {
namespace {

using namespace std::chrono_literals;
using testing::WaitUntil;

constexpr const char* kGet = "GET /metrics HTTP/1.0\r\n\r\n";
constexpr uint64_t kCapacity = 4096;

class VersiondMetricsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    metrics_socket_ = dir_.path() + "/metrics.sock";
    // Port 0: the kernel picks a free one, and versiond logs the address it bound.
    daemon_ = std::make_unique<testing::VersiondProcess>(
        SVFS_VERSIOND_PATH, dir_.path() + "/versiond.sock", testing::UniqueTableName(),
        std::vector<std::string>{"--capacity", std::to_string(kCapacity), "--metrics-socket",
                                 metrics_socket_, "--metrics-address", "127.0.0.1:0"});
    daemon_->Start();
    ASSERT_TRUE(daemon_->WaitForLog("serving /metrics on 127.0.0.1:", 5s)) << daemon_->log();
    const std::string log = daemon_->log();
    const size_t at = log.find("serving /metrics on 127.0.0.1:") + 30;
    port_ = static_cast<uint16_t>(std::stoi(log.substr(at)));
    ASSERT_GT(port_, 0) << log;
  }

  std::map<std::string, double> Scrape(bool tcp = false) {
    auto response = tcp ? svfs_test::HttpExchange(port_, kGet)
                        : svfs_test::HttpExchange(metrics_socket_, kGet);
    EXPECT_TRUE(response) << "cannot connect:\n" << daemon_->log();
    std::string error;
    auto samples = svfs_test::ParseMetrics(response.value_or(""), &error);
    EXPECT_TRUE(samples) << error;
    return samples.value_or(std::map<std::string, double>{});
  }

  // A sample's value; -1 if the scrape lacks it (so a missing family never reads as 0).
  static double Value(const std::map<std::string, double>& samples, const std::string& key) {
    auto it = samples.find(key);
    return it == samples.end() ? -1 : it->second;
  }
  double Get(const std::string& key) { return Value(Scrape(), key); }

  static size_t Occurrences(const std::string& text, const std::string& needle) {
    size_t n = 0;
    for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) {
      n++;
    }
    return n;
  }

  std::unique_ptr<Client> Attach(const std::string& name) {
    auto client = Client::Start({.socket_path = daemon_->socket(), .name = name,
                                 .shared_dirs = {dir_.path()}, .retry_interval = 50ms});
    EXPECT_TRUE(WaitUntil([&] { return client->attached(); }, 2s, 10ms)) << daemon_->log();
    return client;
  }

  testing::TempDir dir_;
  std::string metrics_socket_;
  uint16_t port_ = 0;
  std::unique_ptr<testing::VersiondProcess> daemon_;
};

TEST_F(VersiondMetricsTest, CountsClientsAsTheyAttachAndLeave) {
  auto fresh = Scrape(/*tcp=*/true);
  EXPECT_EQ(Value(fresh, "svfs_versiond_clients"), 0);
  EXPECT_EQ(Value(fresh, "svfs_versiond_table_slots"), kCapacity);
  EXPECT_EQ(Value(fresh, "svfs_versiond_bumps_total{cause=\"restart\"}"), 0) << "a new table";
  EXPECT_FALSE(fresh.contains("svfs_versiond_federation_resyncs_total")) << "not federated";

  auto first = Attach("first");
  auto second = Attach("second");
  EXPECT_EQ(Get("svfs_versiond_clients"), 2);
  if (daemon_->log().find("fanotify unavailable") == std::string::npos) {
    EXPECT_GE(Get("svfs_versiond_watched_filesystems"), 1);
  }
  second.reset();
  EXPECT_TRUE(WaitUntil([&] { return Get("svfs_versiond_clients") == 1; }, 5s, 20ms));
  first.reset();
  EXPECT_TRUE(WaitUntil([&] { return Get("svfs_versiond_clients") == 0; }, 5s, 20ms));
}

TEST_F(VersiondMetricsTest, CountsHostEditsAsFanotifyBumps) {
  auto client = Attach("watcher");
  if (daemon_->log().find("fanotify unavailable") != std::string::npos ||
      daemon_->log().find("cannot watch") != std::string::npos) {
    GTEST_SKIP() << "no fanotify here:\n" << daemon_->log();
  }
  const double before = Get("svfs_versiond_bumps_total{cause=\"fanotify\"}");
  ASSERT_GE(before, 0);
  // Another process's edit (the test itself is an attached client: its own are skipped).
  const std::string file = dir_.path() + "/edited";
  ASSERT_EQ(testing::RunCommand({"/bin/sh", "-c", "echo host > " + file}).status, 0);
  EXPECT_TRUE(WaitUntil(
      [&] { return Get("svfs_versiond_bumps_total{cause=\"fanotify\"}") > before; }, 5s, 20ms))
      << daemon_->log();
  EXPECT_EQ(Get("svfs_versiond_fanotify_overflows_total"), 0);
}

// A restarted versiond takes the table over and bumps every slot but slot 0, once.
TEST_F(VersiondMetricsTest, CountsTheTakeoverOfARestart) {
  daemon_->Kill(SIGTERM);
  daemon_->Start();
  // Start() returns once the RPC socket listens; the metrics listener comes up just after it,
  // logged once per run into the same (appended) log.
  const auto listening = [&] {
    return Occurrences(daemon_->log(), "serving /metrics on unix:") == 2;
  };
  ASSERT_TRUE(WaitUntil(listening, 5s, 10ms)) << daemon_->log();
  auto samples = Scrape();
  EXPECT_EQ(Value(samples, "svfs_versiond_bumps_total{cause=\"restart\"}"), kCapacity - 1);
  EXPECT_EQ(Value(samples, "svfs_versiond_table_generation"), 2);
}

}  // namespace
}  // namespace svfs::versiond
