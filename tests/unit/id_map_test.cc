// fs::IdMap: --translate-uid/--translate-gid rules, parsed and applied as the Rust virtiofsd does.
#include "daemon/fs/id_map.h"

#include <gtest/gtest.h>

#include <string>

namespace svfs::fs {
namespace {

IdMap MapOf(std::initializer_list<const char*> rules) {
  IdMap map;
  for (const char* rule : rules) {
    auto added = map.add(rule);
    EXPECT_TRUE(added) << rule << ": " << added.error();
  }
  return map;
}

std::string Refusal(std::initializer_list<const char*> rules) {
  IdMap map;
  for (const char* rule : rules) {
    if (auto added = map.add(rule); !added) return added.error();
  }
  return "";
}

TEST(IdMapTest, EmptyMapLeavesEveryIdAsItIs) {
  IdMap map;
  EXPECT_TRUE(map.empty());
  EXPECT_EQ(map.to_host(0), 0u);
  EXPECT_EQ(map.to_host(4294967295u), 4294967295u);
  EXPECT_EQ(map.to_guest(1000), 1000u);
}

TEST(IdMapTest, MapTranslatesBothWaysAndLeavesTheRestAlone) {
  IdMap map = MapOf({"map:1000:2000:10"});
  EXPECT_EQ(map.to_host(1000), 2000u);
  EXPECT_EQ(map.to_host(1009), 2009u);
  EXPECT_EQ(map.to_host(1010), 1010u);  // past the range
  EXPECT_EQ(map.to_host(999), 999u);
  EXPECT_EQ(map.to_guest(2005), 1005u);
  EXPECT_EQ(map.to_guest(1005), 1005u);  // a host ID no host rule covers
}

TEST(IdMapTest, GuestAndHostRulesGoOneWayOnly) {
  IdMap map = MapOf({"guest:5:50:2", "host:70:7:1"});
  EXPECT_EQ(map.to_host(5), 50u);
  EXPECT_EQ(map.to_host(6), 51u);
  EXPECT_EQ(map.to_guest(50), 50u);  // no host->guest rule for it
  EXPECT_EQ(map.to_guest(70), 7u);
  EXPECT_EQ(map.to_host(7), 7u);
}

TEST(IdMapTest, SquashRulesMapARangeOntoOneId) {
  IdMap map = MapOf({"squash-guest:0:1000:4294967295", "squash-host:0:0:65536"});
  EXPECT_EQ(map.to_host(0), 1000u);
  EXPECT_EQ(map.to_host(4294967294u), 1000u);
  EXPECT_EQ(map.to_host(4294967295u), 4294967295u);  // -1, "no ID", is never translated
  EXPECT_EQ(map.to_guest(1000), 0u);
  EXPECT_EQ(map.to_guest(65536), 65536u);
}

TEST(IdMapTest, ForbidGuestRefusesOnlyItsRange) {
  // As Incus restricts a VM to guest IDs 1000 and 2000.
  IdMap map = MapOf({"forbid-guest:0:1000", "map:1000:1000:1", "forbid-guest:1001:999",
                     "map:2000:2000:1", "forbid-guest:2001:4294965294"});
  EXPECT_FALSE(map.to_host(0));
  EXPECT_FALSE(map.to_host(999));
  EXPECT_EQ(map.to_host(1000), 1000u);
  EXPECT_FALSE(map.to_host(1500));
  EXPECT_EQ(map.to_host(2000), 2000u);
  EXPECT_FALSE(map.to_host(4294967294u));
  EXPECT_EQ(map.to_guest(0), 0u);  // forbid-guest says nothing of host IDs
}

TEST(IdMapTest, OtherSeparatorsAndUpperCaseKindsAreAccepted) {
  IdMap map = MapOf({"MAP/1/2/1", "forbid-guest,10,1"});
  EXPECT_EQ(map.to_host(1), 2u);
  EXPECT_FALSE(map.to_host(10));
}

TEST(IdMapTest, OverlapsInOneDirectionAreRefused) {
  EXPECT_EQ(Refusal({"map:0:100:10", "guest:5:500:1"}),
            "its guest IDs overlap those of an earlier rule");
  EXPECT_EQ(Refusal({"map:0:100:10", "squash-host:105:0:1"}),
            "its host IDs overlap those of an earlier rule");
  EXPECT_EQ(Refusal({"forbid-guest:0:1000", "map:999:999:1"}),
            "its guest IDs overlap those of an earlier rule");
  // Different directions do not clash: guest 5 -> host 500, host 5 -> guest 0.
  EXPECT_EQ(Refusal({"guest:5:500:1", "host:5:0:1"}), "");
}

TEST(IdMapTest, RefusedMapAddsNeitherDirection) {
  IdMap map = MapOf({"host:100:1:1"});
  EXPECT_FALSE(map.add("map:7:100:1"));
  EXPECT_EQ(map.to_host(7), 7u);  // the guest half was not added either
}

TEST(IdMapTest, MalformedRulesSayWhatIsExpected) {
  EXPECT_EQ(Refusal({"swap:1:2:3"}),
            "expected map, guest, host, squash-guest, squash-host or forbid-guest first");
  EXPECT_EQ(Refusal({"map:1:2"}), "expected map:FROM:TO:COUNT");
  EXPECT_EQ(Refusal({"map"}), "expected map:FROM:TO:COUNT");
  EXPECT_EQ(Refusal({"forbid-guest:1:2:3"}), "expected forbid-guest:FROM:COUNT");
  EXPECT_EQ(Refusal({"map:1:x:3"}), "expected map:FROM:TO:COUNT (numbers from 0 to 4294967295)");
  EXPECT_EQ(Refusal({"map:1:-2:3"}), "expected map:FROM:TO:COUNT (numbers from 0 to 4294967295)");
  EXPECT_EQ(Refusal({"map:1:2:0"}), "COUNT must be at least 1");
  EXPECT_EQ(Refusal({"guest:1:2:4294967295"}), "FROM + COUNT must be at most 4294967295");
  EXPECT_EQ(Refusal({"guest:0:2:4294967295"}), "TO + COUNT must be at most 4294967295");
  EXPECT_EQ(Refusal({"squash-guest:0:4294967295:4294967295"}), "");
}

}  // namespace
}  // namespace svfs::fs
