// Helpers for feeding raw FUSE requests to svfs::fuse::Server: a builder that lays out bytes as
// the kernel does (fuse_in_header, argument structs, NUL-terminated names, payload) and a
// ReplyChannel that captures each reply as one byte string.
#pragma once

#include <linux/fuse.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/fuse/server.h"

namespace svfs::testing {

class RequestBuilder {
 public:
  RequestBuilder(uint32_t opcode, uint64_t nodeid, uint64_t unique = 1) {
    fuse_in_header h{};
    h.opcode = opcode;
    h.nodeid = nodeid;
    h.unique = unique;
    h.uid = 1000;
    h.gid = 1001;
    h.pid = 4242;
    add(h);
  }

  template <typename T>
  RequestBuilder& add(const T& value) {
    return append(&value, sizeof(T));
  }
  // The first `size` bytes of a struct (older protocol layouts, truncation tests).
  template <typename T>
  RequestBuilder& add_prefix(const T& value, size_t size) {
    return append(&value, std::min(size, sizeof(T)));
  }
  // A name followed by its NUL terminator.
  RequestBuilder& name(std::string_view s) {
    raw(s);
    bytes_.push_back(0);
    return *this;
  }
  // Bytes without a terminator.
  RequestBuilder& raw(std::string_view s) { return append(s.data(), s.size()); }

  // The caller's uid and gid (the header's; 1000 and 1001 by default).
  RequestBuilder& set_caller(uint32_t uid, uint32_t gid) {
    std::memcpy(bytes_.data() + offsetof(fuse_in_header, uid), &uid, sizeof(uid));
    std::memcpy(bytes_.data() + offsetof(fuse_in_header, gid), &gid, sizeof(gid));
    return *this;
  }

  // Sets header.len to the bytes built plus `extra` (an external payload) and returns them.
  std::vector<uint8_t> build(size_t extra = 0) const {
    std::vector<uint8_t> out = bytes_;
    uint32_t len = static_cast<uint32_t>(out.size() + extra);
    std::memcpy(out.data() + offsetof(fuse_in_header, len), &len, sizeof(len));
    return out;
  }
  // As build() but with header.len forced to `len`.
  std::vector<uint8_t> build_with_len(uint32_t len) const {
    std::vector<uint8_t> out = bytes_;
    std::memcpy(out.data() + offsetof(fuse_in_header, len), &len, sizeof(len));
    return out;
  }

 private:
  // resize + memcpy rather than vector::insert, which trips GCC 12's -Wstringop-overflow.
  RequestBuilder& append(const void* data, size_t size) {
    size_t at = bytes_.size();
    bytes_.resize(at + size);
    if (size) std::memcpy(bytes_.data() + at, data, size);
    return *this;
  }

  std::vector<uint8_t> bytes_;
};

// One captured reply.
struct Reply {
  std::vector<uint8_t> bytes;

  fuse_out_header header() const {
    fuse_out_header h{};
    std::memcpy(&h, bytes.data(), std::min(bytes.size(), sizeof(h)));
    return h;
  }
  int error() const { return header().error; }
  size_t payload_size() const { return bytes.size() - sizeof(fuse_out_header); }
  const uint8_t* payload() const { return bytes.data() + sizeof(fuse_out_header); }
  std::string payload_string() const {
    return std::string(reinterpret_cast<const char*>(payload()), payload_size());
  }
  // The payload struct at `offset` (zero-filled where the reply is shorter).
  template <typename T>
  T as(size_t offset = 0) const {
    T value{};
    if (offset < payload_size()) {
      std::memcpy(&value, payload() + offset, std::min(sizeof(T), payload_size() - offset));
    }
    return value;
  }
};

// Records every reply; data_sink() provides a ReadSink that preads into a buffer.
class CapturingChannel : public fuse::ReplyChannel, public fs::ReadSink {
 public:
  std::vector<Reply> replies;
  size_t sink_requests = 0;
  size_t sink_max = 0;
  std::vector<uint8_t> sink_data;

  // Replies longer than this are refused (send returns false), as a transport whose client gave
  // too small a buffer would.
  size_t capacity = SIZE_MAX;

  bool send(std::span<const iovec> parts) override {
    Reply r;
    for (const iovec& part : parts) {
      const auto* p = static_cast<const uint8_t*>(part.iov_base);
      r.bytes.insert(r.bytes.end(), p, p + part.iov_len);
    }
    if (r.bytes.size() > capacity) return false;
    replies.push_back(std::move(r));
    return true;
  }
  fs::ReadSink& data_sink(size_t max_length) override {
    ++sink_requests;
    sink_max = max_length;
    sink_data.clear();
    return *this;
  }
  void send_data(const fuse_out_header& header) override {
    Reply r;
    const auto* p = reinterpret_cast<const uint8_t*>(&header);
    r.bytes.assign(p, p + sizeof(header));
    size_t data = header.len >= sizeof(header) ? header.len - sizeof(header) : 0;
    data = std::min(data, sink_data.size());
    r.bytes.insert(r.bytes.end(), sink_data.begin(), sink_data.begin() + data);
    replies.push_back(std::move(r));
  }
  Result<size_t> read_from(int fd, uint64_t offset, size_t length) override {
    length = std::min(length, sink_max);
    sink_data.resize(length);
    ssize_t n = ::pread(fd, sink_data.data(), length, static_cast<off_t>(offset));
    if (n < 0) return ErrnoErr();
    sink_data.resize(static_cast<size_t>(n));
    return static_cast<size_t>(n);
  }
};

}  // namespace svfs::testing
