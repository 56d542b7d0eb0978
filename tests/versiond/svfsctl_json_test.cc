// svfsctl --json against a real svfs-versiond: every subcommand prints one JSON document that a
// JSON parser reads, with the values the table and the attached client really have.
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "shm/version_table.h"
#include "tests/versiond/test_support.h"
#include "versiond/client.h"

namespace svfs::versiond {
namespace {

using namespace std::chrono_literals;
using Json = nlohmann::json;

class SvfsctlJsonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    socket_ = dir_.path() + "/versiond.sock";
    daemon_ = std::make_unique<testing::VersiondProcess>(
        SVFS_VERSIOND_PATH, socket_, testing::UniqueTableName(),
        std::vector<std::string>{"--capacity", "4096"});
    daemon_->Start();
  }

  // Runs svfsctl with `args`, expects exit 0 and returns its output parsed as JSON.
  Json Run(std::vector<std::string> args) {
    args.insert(args.begin(), SVFSCTL_PATH);
    auto result = testing::RunCommand(args);
    EXPECT_EQ(result.status, 0) << result.output;
    Json parsed = Json::parse(result.output, nullptr, /*allow_exceptions=*/false);
    EXPECT_FALSE(parsed.is_discarded()) << "not JSON:\n" << result.output;
    return parsed;
  }

  testing::TempDir dir_;
  std::string socket_;
  std::unique_ptr<testing::VersiondProcess> daemon_;
};

std::string UuidText(const uint8_t* uuid) {
  std::string hex;
  for (int i = 0; i < 16; ++i) hex += fmt::format("{:02x}", uuid[i]);
  return hex.substr(0, 8) + "-" + hex.substr(8, 4) + "-" + hex.substr(12, 4) + "-" +
         hex.substr(16, 4) + "-" + hex.substr(20);
}

TEST_F(SvfsctlJsonTest, EverySubcommandPrintsTheTableAndClientsAsJson) {
  // A client name with a quote, a backslash, a newline and a byte that is not UTF-8.
  const std::string name = "json \"client\"\\\n\xff";
  auto client = Client::Start({.socket_path = socket_, .name = name,
                               .shared_dirs = {dir_.path()}, .retry_interval = 20ms});
  ASSERT_TRUE(testing::WaitUntil([&] { return client->attached(); }, 2s, 10ms)) << daemon_->log();
  const std::string tree = dir_.path() + "/tree";  // beside the socket and the log: just 2 inodes
  ASSERT_EQ(::mkdir(tree.c_str(), 0755), 0);
  const std::string file = tree + "/f";
  { std::ofstream(file) << "x"; }
  const uint64_t slot = svfs_test::SlotOfPath(file, 4096);
  ASSERT_NE(slot, 0u);
  auto table = shm::VersionTable::Attach(daemon_->table(), shm::Access::kReadWrite);
  ASSERT_TRUE(table) << table.error();
  for (int i = 0; i < 1000; ++i) table->bump(slot);
  const shm::TableHeader& header = table->header();

  // --json before the subcommand, and after it.
  for (bool json_first : {true, false}) {
    SCOPED_TRACE(json_first ? "svfsctl --json status" : "svfsctl status --json");
    Json status = json_first ? Run({"--json", "--socket", socket_, "status"})
                             : Run({"--socket", socket_, "status", "--json"});
    EXPECT_EQ(status["table"], daemon_->table());
    EXPECT_EQ(status["uuid"], UuidText(header.uuid));
    EXPECT_EQ(status["generation"], header.generation.load());
    EXPECT_EQ(status["slot_count"], 4096u);
    EXPECT_EQ(status["slot_stride"], header.slot_stride);
    EXPECT_EQ(status["mapped_bytes"], table->mapped_bytes());
    EXPECT_EQ(status["clients"], 1);
    EXPECT_TRUE(status["watched_filesystems"].is_number_unsigned());
    EXPECT_TRUE(status["host_bumps"].is_number_unsigned());
    EXPECT_LT(status["uptime_seconds"].get<uint64_t>(), 600u);
  }

  Json clients = Run({"--socket", socket_, "clients", "--json"});
  ASSERT_EQ(clients["clients"].size(), 1u) << clients.dump();
  const Json& row = clients["clients"][0];
  EXPECT_EQ(row["pid"], ::getpid());
  EXPECT_EQ(row["uid"], ::getuid());
  EXPECT_EQ(row["name"], "json \"client\"\\\n\xef\xbf\xbd");  // the bad byte as U+FFFD
  EXPECT_EQ(row["shared_dirs"], Json::array({dir_.path()}));
  EXPECT_TRUE(row["id"].is_number_unsigned());

  // Highest first. Other processes writing on this filesystem bump slots too (fanotify), so f's
  // slot is looked for among all of them rather than expected on top.
  Json hot = Run({"--socket", socket_, "--json", "hot", "-n", "3"});
  EXPECT_GE(hot["slots"].size(), 1u) << hot.dump();
  EXPECT_LE(hot["slots"].size(), 3u) << hot.dump();
  Json all = Run({"--socket", socket_, "--json", "hot", "-n", "4096"});
  bool found = false;
  for (size_t i = 0; i < all["slots"].size(); ++i) {
    const Json& entry = all["slots"][i];
    if (i > 0) {
      EXPECT_LE(entry["version"], all["slots"][i - 1]["version"]) << all.dump();
    }
    if (entry["slot"] == slot) {
      found = true;
      EXPECT_EQ(entry["version"], table->sample(slot));
      EXPECT_GE(entry["version"], 1000u);
    }
  }
  EXPECT_TRUE(found) << "slot " << slot << " not in " << all.dump();

  // Not federated: no volumes (FederationTest.* show them with --federation).
  Json federation = Run({"--socket", socket_, "--json", "federation"});
  EXPECT_EQ(federation["volumes"], Json::array()) << federation.dump();

  Json slot_of = Run({"--socket", socket_, "--json", "slot", file});
  EXPECT_EQ(slot_of["path"], file);
  EXPECT_EQ(slot_of["slot"], slot);
  EXPECT_EQ(slot_of["slot_count"], 4096u);
  EXPECT_TRUE(slot_of["identity"].is_number_unsigned());
  EXPECT_EQ(slot_of.contains("fsid"), slot_of["by_file_handle"].get<bool>());

  // Two inodes (tree and f) in a table of 2 slots share slot 1; with 2^24 - 1 they need not.
  Json collisions = Run({"--json", "collisions", tree, "--slots", "2", "16777215"});
  EXPECT_EQ(collisions["dir"], tree);
  EXPECT_EQ(collisions["inodes"], 2);
  ASSERT_EQ(collisions["sizes"].size(), 2u);
  EXPECT_EQ(collisions["sizes"][0]["slots"], 2);
  EXPECT_EQ(collisions["sizes"][0]["sharing_a_slot"], 2);
  EXPECT_DOUBLE_EQ(collisions["sizes"][0]["share_percent"].get<double>(), 100.0);
  EXPECT_EQ(collisions["sizes"][1]["slots"], 16777215);
}

}  // namespace
}  // namespace svfs::versiond
