// The cost of finding an inode by key (the LOOKUP fast path, CREATE, READDIRPLUS entries) as the
// store grows: one probe of a hash table, where a tree took one cache miss per level.
// Figures: docs/performance.md, "Inode store: finding a key". Run by hand, not a ctest test.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "daemon/fs/inode_store.h"

namespace svfs::fs {
namespace {

// A store holding `count` inodes of one device and mount, with inode numbers as a real tree
// hands them out (dense, in creation order), and the keys in a random order to look them up in.
struct FilledStore {
  InodeStore store;
  std::vector<InodeKey> lookups;

  explicit FilledStore(int64_t count) {
    auto root = std::make_shared<InodeData>();
    root->key = {.dev = 2049, .ino = 2, .mnt_id = 29};
    root->file_type = S_IFDIR;
    store.set_root(root);
    for (int64_t i = 0; i < count; ++i) {
      auto inode = std::make_shared<InodeData>();
      inode->key = {.dev = 2049, .ino = 1000 + static_cast<uint64_t>(i), .mnt_id = 29};
      inode->file_type = S_IFREG;
      lookups.push_back(inode->key);
      store.acquire(std::move(inode));
    }
    std::shuffle(lookups.begin(), lookups.end(), std::mt19937_64(42));
  }
};

void BM_FindByKey(benchmark::State& state) {
  FilledStore filled(state.range(0));
  size_t next = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(filled.store.find(filled.lookups[next]));
    if (++next == filled.lookups.size()) next = 0;
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_FindByKey)->Arg(100)->Arg(10'000)->Arg(1'000'000);

}  // namespace
}  // namespace svfs::fs

BENCHMARK_MAIN();
