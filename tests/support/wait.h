// Polling with a deadline, for tests that wait on another process.
#pragma once

#include <chrono>
#include <functional>

namespace svfs_test {

// Polls `pred` every `step` until it returns true or `timeout` passes; true if it did.
bool WaitUntil(const std::function<bool()>& pred, std::chrono::milliseconds timeout,
               std::chrono::microseconds step = std::chrono::milliseconds(2));

}  // namespace svfs_test
