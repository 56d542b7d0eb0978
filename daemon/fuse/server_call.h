// Private to the server's own sources (server.cc, server_opcodes.cc): one request being
// handled, and the reply of a filesystem result.
#pragma once

#include <type_traits>

#include "daemon/fuse/server.h"

namespace svfs::fuse {

struct Server::Call {
  fuse_in_header header;
  protocol::RequestReader args;
  fs::WriteSource* external_payload;
  ReplyChannel& channel;
  fs::Context context;
  DaxWindow* dax;
  bool failed = false;
};

template <typename T>
void Server::reply_result(Call& call, const Result<T>& result) {
  if (!result) return reply_error(call, result.error());
  if constexpr (std::is_same_v<T, fs::Entry>) {
    reply_entry(call, *result);
  } else if constexpr (std::is_same_v<T, fs::Attr>) {
    reply_attr(call, *result);
  } else if constexpr (std::is_same_v<T, fs::Opened>) {
    reply_open(call, *result);
  } else if constexpr (std::is_void_v<T>) {
    reply_empty(call);
  } else {
    static_assert(sizeof(T) == 0, "no encoder for this result type");
  }
}

}  // namespace svfs::fuse
