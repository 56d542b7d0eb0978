// Force-included (-include) into the fuzz build's Cap'n Proto users: with C++20's rewritten
// comparisons kj 0.9 drops its `const char* == StringPtr` operators, and clang 16 then rejects
// capnp/blob.h's `a == b.asString()` (g++ 12 accepts it through the reversed member operator).
// Restores the two operators kj declares before C++20, the same semantics.
#pragma once

#include <kj/string.h>

#if __cpp_impl_three_way_comparison && defined(__clang__)
namespace kj {
inline bool operator==(const char* a, const StringPtr& b) { return b == a; }
inline bool operator!=(const char* a, const StringPtr& b) { return b != a; }
}  // namespace kj
#endif
