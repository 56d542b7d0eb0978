// Errors as values: expected failures carry a positive errno.
#pragma once

#include <cerrno>
#include <expected>
#include <type_traits>
#include <utility>

namespace svfs {

template <typename T>
using Result = std::expected<T, int>;

using Status = std::expected<void, int>;

inline std::unexpected<int> Err(int error) { return std::unexpected<int>(error); }

// The errno of the last failed libc call, as an error value.
inline std::unexpected<int> ErrnoErr() { return std::unexpected<int>(errno ? errno : EIO); }

namespace result_detail {
// SVFS_TRY's value: moved out of the Result, nothing for a Status.
template <typename T>
  requires(!std::is_void_v<T>)
T TakeValue(Result<T>&& result) { return std::move(*result); }
inline void TakeValue(const Status&) {}
}  // namespace result_detail

}  // namespace svfs

// SVFS_TRY(expr): `expr` is a Result<T> or Status. On error, returns its errno from the enclosing
// function (which returns some Result or Status); otherwise evaluates to the value:
//   auto inode = SVFS_TRY(inode_of(node));   // std::shared_ptr<InodeData>
//   SVFS_TRY(AsGuest(ctx, [&] { ... }));     // value unused
// Only for passing an error on unchanged: where it is translated or logged, test it by hand.
// A GNU statement expression (g++, clang), so the value can be used in place.
#define SVFS_TRY(...)                                                              \
  ({                                                                               \
    auto&& svfs_try_result = (__VA_ARGS__);                                        \
    if (!svfs_try_result) return ::svfs::Err(svfs_try_result.error());            \
    ::svfs::result_detail::TakeValue(std::move(svfs_try_result));                  \
  })
