// Packed (stride 8) vs padded (stride 64) slots: the cost of sample() and bump(), alone, with
// threads contending on one slot, and with threads on adjacent slots (false sharing when packed).
// Figures and the decision: docs/performance.md, "Version table: packed vs padded slots".
#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <thread>

#include <fmt/format.h>
#include <benchmark/benchmark.h>

#include "shm/version_table.h"

namespace svfs::shm {
namespace {

constexpr uint64_t kSlotCount = 1024;

// One table per stride for the whole run, removed when the process exits.
class BenchTable {
 public:
  explicit BenchTable(uint32_t stride)
      : name_(fmt::format("svfs-bench-{}-stride{}", ::getpid(), stride)) {
    auto created =
        VersionTable::Create({.name = name_, .slot_count = kSlotCount, .slot_stride = stride});
    if (!created) {
      std::fprintf(stderr, "%s\n", created.error().c_str());
      std::exit(1);
    }
    table_.emplace(std::move(*created));
  }
  ~BenchTable() { VersionTable::Remove(name_); }

  VersionTable& table() { return *table_; }

 private:
  std::string name_;
  std::optional<VersionTable> table_;
};

VersionTable& TableWithStride(int64_t stride) {
  static BenchTable packed(8);
  static BenchTable padded(64);
  return stride == 8 ? packed.table() : padded.table();
}

void BM_Sample(benchmark::State& state) {
  VersionTable& table = TableWithStride(state.range(0));
  for (auto _ : state) benchmark::DoNotOptimize(table.sample(1));
  state.SetItemsProcessed(state.iterations());
}

void BM_Bump(benchmark::State& state) {
  VersionTable& table = TableWithStride(state.range(0));
  for (auto _ : state) benchmark::DoNotOptimize(table.bump(1));
  state.SetItemsProcessed(state.iterations());
}

// Pins benchmark thread i to CPU i mod N for the duration of a run, so that two threads really
// sit on two cores (where cache lines move) instead of wherever the scheduler put them; restores
// the previous affinity afterwards (thread 0 is the main thread).
class PinToCpu {
 public:
  explicit PinToCpu(int thread_index) {
    saved_valid_ = ::pthread_getaffinity_np(::pthread_self(), sizeof(saved_), &saved_) == 0;
    unsigned cpus = std::max(1u, std::thread::hardware_concurrency());
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(static_cast<unsigned>(thread_index) % cpus, &one);
    ::pthread_setaffinity_np(::pthread_self(), sizeof(one), &one);
  }
  ~PinToCpu() {
    if (saved_valid_) ::pthread_setaffinity_np(::pthread_self(), sizeof(saved_), &saved_);
  }
  PinToCpu(const PinToCpu&) = delete;
  PinToCpu& operator=(const PinToCpu&) = delete;

 private:
  cpu_set_t saved_{};
  bool saved_valid_ = false;
};

// Every thread bumps slot 1: the cost of true contention on one cache line (same for any stride).
void BM_BumpSameSlot(benchmark::State& state) {
  VersionTable& table = TableWithStride(state.range(0));
  PinToCpu pin(state.thread_index());
  for (auto _ : state) benchmark::DoNotOptimize(table.bump(1));
  state.SetItemsProcessed(state.iterations());
}

// Thread i bumps slot 1 + i: independent counters that share a cache line when packed.
void BM_BumpAdjacentSlots(benchmark::State& state) {
  VersionTable& table = TableWithStride(state.range(0));
  const uint64_t slot = 1 + static_cast<uint64_t>(state.thread_index());
  PinToCpu pin(state.thread_index());
  for (auto _ : state) benchmark::DoNotOptimize(table.bump(slot));
  state.SetItemsProcessed(state.iterations());
}

// Thread 0 samples slot 1 while the other threads bump slots 2, 3, ...: a guest or svfsd reading
// one inode's version while others change. Counts samples only (items_per_second).
void BM_SampleNextToBumps(benchmark::State& state) {
  VersionTable& table = TableWithStride(state.range(0));
  PinToCpu pin(state.thread_index());
  if (state.thread_index() == 0) {
    for (auto _ : state) benchmark::DoNotOptimize(table.sample(1));
    state.SetItemsProcessed(state.iterations());
  } else {
    const uint64_t slot = 1 + static_cast<uint64_t>(state.thread_index());
    for (auto _ : state) benchmark::DoNotOptimize(table.bump(slot));
  }
}

// Tables are created before any threaded benchmark starts (static init is thread-safe anyway,
// but creation must not be timed).
void CreateTables(const benchmark::State&) {
  TableWithStride(8);
  TableWithStride(64);
}

BENCHMARK(BM_Sample)->ArgName("stride")->Arg(8)->Arg(64)->Setup(CreateTables);
BENCHMARK(BM_Bump)->ArgName("stride")->Arg(8)->Arg(64)->Setup(CreateTables);
BENCHMARK(BM_BumpSameSlot)
    ->ArgName("stride")->Arg(8)->Arg(64)->Threads(2)->Threads(4)->UseRealTime()->Setup(CreateTables);
BENCHMARK(BM_BumpAdjacentSlots)
    ->ArgName("stride")->Arg(8)->Arg(64)->Threads(2)->Threads(4)->UseRealTime()->Setup(CreateTables);
BENCHMARK(BM_SampleNextToBumps)
    ->ArgName("stride")->Arg(8)->Arg(64)->Threads(2)->UseRealTime()->Setup(CreateTables);

}  // namespace
}  // namespace svfs::shm

BENCHMARK_MAIN();
