// --translate-uid / --translate-gid: user and group IDs translated between the guest's and the
// host's, with the Rust virtiofsd's rules (docs/security.md, "ID translation"). The FUSE server
// applies them where IDs cross: a request's caller and a chown's target guest->host, every
// attribute reply's owner host->guest.
#pragma once

#include <cstdint>
#include <expected>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace svfs::fs {

// The translation of one kind of ID (uids or gids). Each direction has its own ranges, which may
// not overlap; an ID no range covers is left as it is.
class IdMap {
 public:
  // Adds one rule, virtiofsd's syntax (KIND:FROM:TO:COUNT, forbid-guest:FROM:COUNT; any
  // separator that is not a letter, digit, '-' or '_'):
  //   map          guest [FROM, FROM+COUNT) <-> host [TO, TO+COUNT), both directions
  //   guest        guest -> host, 1:1        host          host -> guest, 1:1
  //   squash-guest guest range -> host TO    squash-host   host range -> guest TO
  //   forbid-guest guest range: refused (the request gets EPERM)
  // A sentence saying what is wrong otherwise (for "svfsd: --translate-uid RULE: ...").
  std::expected<void, std::string> add(std::string_view rule);

  // The host ID for a guest's; nullopt if a forbid-guest rule covers it.
  std::optional<uint32_t> to_host(uint32_t guest) const;
  // The guest ID for a host's.
  uint32_t to_guest(uint32_t host) const;

  bool empty() const { return guest_to_host_.empty() && host_to_guest_.empty(); }

 private:
  struct Range {
    uint32_t first = 0;
    uint64_t end = 0;  // one past the last ID
    enum class Kind { kShift, kSquash, kForbid } kind = Kind::kShift;
    uint32_t target = 0;  // kShift: what `first` becomes; kSquash: what every ID becomes
  };
  static bool Overlaps(const std::vector<Range>& ranges, const Range& range);
  // Keeps `ranges` sorted by `first`; refuses a range that overlaps one already there.
  static std::expected<void, std::string> insert(std::vector<Range>& ranges, Range range,
                                                 std::string_view direction);
  static const Range* find(const std::vector<Range>& ranges, uint32_t id);

  std::vector<Range> guest_to_host_;
  std::vector<Range> host_to_guest_;
};

struct IdTranslation {
  IdMap uids;
  IdMap gids;
  bool empty() const { return uids.empty() && gids.empty(); }
};

}  // namespace svfs::fs
