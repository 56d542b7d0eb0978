#include "daemon/fs/id_map.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <charconv>

namespace svfs::fs {
namespace {

std::optional<uint32_t> ParseId(std::string_view text) {
  uint32_t value = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size() || text.empty()) return std::nullopt;
  return value;
}

}  // namespace

std::expected<void, std::string> IdMap::add(std::string_view rule) {
  size_t at = 0;
  std::string kind;
  while (at < rule.size() && (std::isalnum(static_cast<unsigned char>(rule[at])) ||
                              rule[at] == '-' || rule[at] == '_')) {
    kind.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(rule[at++]))));
  }
  const bool forbid = kind == "forbid-guest";
  if (!forbid && kind != "map" && kind != "guest" && kind != "host" && kind != "squash-guest" &&
      kind != "squash-host") {
    return std::unexpected(
        "expected map, guest, host, squash-guest, squash-host or forbid-guest first");
  }
  const std::string usage = forbid ? "expected forbid-guest:FROM:COUNT"
                                   : fmt::format("expected {}:FROM:TO:COUNT", kind);
  std::vector<uint32_t> values;
  if (at < rule.size()) {
    const char separator = rule[at];
    std::string_view rest = rule.substr(at + 1);
    for (;;) {
      const size_t next = rest.find(separator);
      auto value = ParseId(rest.substr(0, next));
      if (!value) return std::unexpected(usage + " (numbers from 0 to 4294967295)");
      values.push_back(*value);
      if (next == std::string_view::npos) break;
      rest.remove_prefix(next + 1);
    }
  }
  if (values.size() != (forbid ? 2u : 3u)) return std::unexpected(usage);
  const uint32_t from = values[0];
  const uint32_t count = values.back();
  if (count == 0) return std::unexpected("COUNT must be at least 1");
  // As in virtiofsd, a range ends before 2^32 - 1 (-1, "no ID", is never translated).
  if (uint64_t{from} + count > UINT32_MAX) {
    return std::unexpected("FROM + COUNT must be at most 4294967295");
  }
  const uint64_t end = uint64_t{from} + count;
  if (forbid) return insert(guest_to_host_, {from, end, Range::Kind::kForbid, 0}, "guest");
  const uint32_t to = values[1];
  const bool squash = kind.starts_with("squash");
  if (!squash && uint64_t{to} + count > UINT32_MAX) {
    return std::unexpected("TO + COUNT must be at most 4294967295");
  }
  const auto range_kind = squash ? Range::Kind::kSquash : Range::Kind::kShift;
  if (kind == "map") {
    // Both directions or neither: the host side is checked first, so a refusal adds nothing.
    const Range back{to, uint64_t{to} + count, range_kind, from};
    if (Overlaps(host_to_guest_, back)) {
      return std::unexpected("its host IDs overlap those of an earlier rule");
    }
    if (auto added = insert(guest_to_host_, {from, end, range_kind, to}, "guest"); !added) {
      return added;
    }
    return insert(host_to_guest_, back, "host");
  }
  const bool from_guest = kind == "guest" || kind == "squash-guest";
  return insert(from_guest ? guest_to_host_ : host_to_guest_, {from, end, range_kind, to},
                from_guest ? "guest" : "host");
}

bool IdMap::Overlaps(const std::vector<Range>& ranges, const Range& range) {
  return std::any_of(ranges.begin(), ranges.end(), [&](const Range& other) {
    return other.first < range.end && range.first < other.end;
  });
}

std::expected<void, std::string> IdMap::insert(std::vector<Range>& ranges, Range range,
                                               std::string_view direction) {
  if (Overlaps(ranges, range)) {
    return std::unexpected(fmt::format("its {} IDs overlap those of an earlier rule", direction));
  }
  ranges.insert(std::upper_bound(ranges.begin(), ranges.end(), range.first,
                                 [](uint32_t id, const Range& r) { return id < r.first; }),
                range);
  return {};
}

const IdMap::Range* IdMap::find(const std::vector<Range>& ranges, uint32_t id) {
  auto after = std::upper_bound(ranges.begin(), ranges.end(), id,
                                [](uint32_t value, const Range& r) { return value < r.first; });
  if (after == ranges.begin()) return nullptr;
  const Range& range = *std::prev(after);
  return id < range.end ? &range : nullptr;
}

std::optional<uint32_t> IdMap::to_host(uint32_t guest) const {
  const Range* range = find(guest_to_host_, guest);
  if (range == nullptr) return guest;
  switch (range->kind) {
    case Range::Kind::kShift: return range->target + (guest - range->first);
    case Range::Kind::kSquash: return range->target;
    case Range::Kind::kForbid: return std::nullopt;
  }
  return std::nullopt;
}

uint32_t IdMap::to_guest(uint32_t host) const {
  const Range* range = find(host_to_guest_, host);
  if (range == nullptr) return host;
  return range->kind == Range::Kind::kSquash ? range->target
                                              : range->target + (host - range->first);
}

}  // namespace svfs::fs
