// The federation wire format: what one versiond encodes another decodes; anything malformed is
// refused (the receiver then bumps every slot).
#include "versiond/federation_message.h"

#include <gtest/gtest.h>

namespace svfs::versiond {
namespace {

std::span<const unsigned char> Bytes(const std::string& s) {
  return {reinterpret_cast<const unsigned char*>(s.data()), s.size()};
}

BumpMessage TwoHandles() {
  BumpMessage message;
  for (size_t i = 0; i < message.origin.size(); ++i) message.origin[i] = static_cast<unsigned char>(i);
  message.handles = {{1, {1, 2, 3, 4, 5, 6, 7, 8}}, {-2, std::vector<unsigned char>(128, 0xab)}};
  return message;
}

TEST(FederationMessageTest, HandlesAndVolumeWideBumpsRoundTrip) {
  EXPECT_EQ(DecodeBumpMessage(Bytes(EncodeBumpMessage(TwoHandles()))), TwoHandles());
  BumpMessage all{.origin = TwoHandles().origin, .all = true};
  EXPECT_EQ(DecodeBumpMessage(Bytes(EncodeBumpMessage(all))), all);
}

TEST(FederationMessageTest, MalformedBodiesAreRefused) {
  const std::string good = EncodeBumpMessage(TwoHandles());
  EXPECT_FALSE(DecodeBumpMessage(Bytes("")));
  EXPECT_FALSE(DecodeBumpMessage(Bytes("SVF2" + good.substr(4))));      // another format
  EXPECT_FALSE(DecodeBumpMessage(Bytes(good.substr(0, good.size() - 1))));  // truncated handle
  std::string bad_kind = good;
  bad_kind[20] = 7;
  EXPECT_FALSE(DecodeBumpMessage(Bytes(bad_kind)));
  std::string too_long = good;
  too_long[21 + 4] = static_cast<char>(129);  // first handle's length over MAX_HANDLE_SZ
  EXPECT_FALSE(DecodeBumpMessage(Bytes(too_long)));
  BumpMessage all{.all = true};
  EXPECT_FALSE(DecodeBumpMessage(Bytes(EncodeBumpMessage(all) + "x")));  // "all" with handles
}

}  // namespace
}  // namespace svfs::versiond
