// Acquire throughput over the real RPC: the client library against a real svfs-versiond
// process, batches of distinct, never-seen keys (the slow path: a free slot is taken and bumped),
// released after each iteration so the table never fills.
//
//   build-vd/tests/versiond/svfs_versiond_bench [--benchmark_min_time=2]
#include <signal.h>

#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <thread>

#include "tests/versiond/test_support.h"
#include "versiond/client.h"

namespace {

using svfs::versiond::Client;
using svfs::versiond::Key;

struct Fixture {
  svfs::versiond::testing::TempDir dir;
  std::unique_ptr<svfs::versiond::testing::VersiondProcess> daemon;
  std::unique_ptr<Client> client;
  uint64_t next_ino = 1;
};
Fixture* fixture = nullptr;

void BM_Acquire(benchmark::State& state) {
  const size_t batch = static_cast<size_t>(state.range(0));
  std::vector<Key> keys(batch);
  // A realistic key: (dev, ino) plus an 8-byte ext4-style file handle.
  for (auto& key : keys) {
    key.dev = 0x801;
    key.fsid = 0x1234;
    key.handle_type = 1;
    key.handle.assign(8, 0);
  }
  std::vector<uint64_t> slots(batch);
  uint64_t epoch = 0;
  for (auto _ : state) {
    state.PauseTiming();
    for (auto& key : keys) {
      key.ino = fixture->next_ino++;
      std::memcpy(key.handle.data(), &key.ino, sizeof(key.ino));
    }
    state.ResumeTiming();
    auto result = fixture->client->acquire(keys);
    state.PauseTiming();
    if (!result || result->grants.size() != batch) {
      state.SkipWithError("acquire failed");
      break;
    }
    epoch = result->epoch;
    for (size_t i = 0; i < batch; ++i) slots[i] = result->grants[i].slot;
    fixture->client->release(epoch, slots);
    state.ResumeTiming();
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * batch));
}
BENCHMARK(BM_Acquire)->Arg(1)->Arg(64)->Arg(1024)->Arg(4096)->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  Fixture f;
  fixture = &f;
  f.daemon = std::make_unique<svfs::versiond::testing::VersiondProcess>(
      SVFS_VERSIOND_PATH, f.dir.path() + "/bench.sock",
      svfs::versiond::testing::UniqueTableName());
  f.daemon->Start();
  f.client = Client::Start({.socket_path = f.daemon->socket(), .name = "svfs_versiond_bench"});
  for (int i = 0; i < 200 && !f.client->attached(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (!f.client->attached()) {
    std::fprintf(stderr, "svfs_versiond_bench: could not attach to versiond; log:\n%s\n",
                 f.daemon->log().c_str());
    return 1;
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  f.client.reset();
  f.daemon.reset();
  return 0;
}
