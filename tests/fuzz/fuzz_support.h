// What the libFuzzer harnesses share: reading fields off the fuzz input, a fatal check that
// names what broke, a logger that formats but discards, and writing seed files.
#pragma once

#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

namespace svfs::fuzz {

// Fields read off the front of the input; past its end they read as zeros, so every input is a
// valid description.
class Input {
 public:
  Input(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  bool empty() const { return pos_ >= size_; }
  size_t left() const { return size_ - pos_; }

  template <typename T>
    requires std::is_trivially_copyable_v<T>
  T take() {
    T value{};
    size_t n = std::min(sizeof(T), left());
    std::memcpy(&value, data_ + pos_, n);
    pos_ += n;
    return value;
  }
  uint8_t u8() { return take<uint8_t>(); }
  uint16_t u16() { return take<uint16_t>(); }
  uint32_t u32() { return take<uint32_t>(); }
  uint64_t u64() { return take<uint64_t>(); }
  // Up to `n` bytes (fewer at the end of the input).
  std::span<const uint8_t> bytes(size_t n) {
    n = std::min(n, left());
    std::span<const uint8_t> out(data_ + pos_, n);
    pos_ += n;
    return out;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

// Builds inputs in the layout Input reads (seed corpora).
class InputBuilder {
 public:
  template <typename T>
    requires std::is_trivially_copyable_v<T>
  InputBuilder& put(const T& value) {
    const auto* p = reinterpret_cast<const uint8_t*>(&value);
    bytes_.insert(bytes_.end(), p, p + sizeof(T));
    return *this;
  }
  InputBuilder& u8(uint8_t v) { return put(v); }
  InputBuilder& u16(uint16_t v) { return put(v); }
  InputBuilder& u32(uint32_t v) { return put(v); }
  InputBuilder& u64(uint64_t v) { return put(v); }
  InputBuilder& raw(std::span<const uint8_t> b) {
    bytes_.insert(bytes_.end(), b.begin(), b.end());
    return *this;
  }
  const std::vector<uint8_t>& bytes() const { return bytes_; }

 private:
  std::vector<uint8_t> bytes_;
};

// A broken invariant: says which and aborts (libFuzzer saves the input as a crash).
[[noreturn]] inline void Fail(const char* target, const char* what, uint64_t a = 0,
                              uint64_t b = 0) {
  std::fprintf(stderr, "%s: %s (%llu vs %llu)\n", target, what, static_cast<unsigned long long>(a),
               static_cast<unsigned long long>(b));
  std::abort();
}

// Log lines are still formatted (that code sees fuzzed fields) but go nowhere; SVFS_FUZZ_LOG=1
// shows them on stderr when reproducing a crash.
inline void QuietLogs() {
  if (std::getenv("SVFS_FUZZ_LOG") != nullptr) {
    spdlog::set_level(spdlog::level::trace);
    return;
  }
  auto logger = std::make_shared<spdlog::logger>(
      "fuzz", std::make_shared<spdlog::sinks::null_sink_mt>());
  logger->set_level(spdlog::level::trace);
  spdlog::set_default_logger(logger);
}

// Writes each (name, bytes) as DIR/NAME (the committed corpora are made this way).
inline void WriteSeeds(const char* target, const char* dir,
                       const std::vector<std::pair<std::string, std::vector<uint8_t>>>& seeds) {
  for (const auto& [name, bytes] : seeds) {
    std::ofstream f(std::string(dir) + "/" + name, std::ios::binary);
    f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    if (!f) Fail(target, "cannot write a seed file");
  }
  std::fprintf(stderr, "%s: wrote %zu seeds to %s\n", target, seeds.size(), dir);
}

}  // namespace svfs::fuzz
