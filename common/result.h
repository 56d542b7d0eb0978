// Errors as values: expected failures carry a positive errno.
#pragma once

#include <cerrno>
#include <expected>

namespace svfs {

template <typename T>
using Result = std::expected<T, int>;

using Status = std::expected<void, int>;

inline std::unexpected<int> Err(int error) { return std::unexpected<int>(error); }

// The errno of the last failed libc call, as an error value.
inline std::unexpected<int> ErrnoErr() { return std::unexpected<int>(errno ? errno : EIO); }

}  // namespace svfs
