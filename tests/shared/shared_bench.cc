// LOOKUP cost through the /dev/fuse server, --cache none vs --cache shared.
//
// Each mode gets its own svfsd mounted on a fresh copy of the same tree (shared mode also gets a
// real svfs-versiond). The host kernel does not negotiate versions, so both modes serve it with
// zero entry and attribute timeouts: every stat() of a path below the mount is a LOOKUP (plus a
// GETATTR for the root-level revalidation) on the daemon. The difference is the per-inode work of
// shared mode: a slot per inode (acquired once, held while the kernel holds the inode) and a
// table sample before each stat of the host file.
//
// Usage: svfs_shared_bench [--files=N] [--threads=N] [benchmark flags]
//   --files    files in the directory, looked up round robin (default 1000)
//   --threads  svfsd worker threads (default: svfsd's default)
#include <benchmark/benchmark.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "tests/shared/shared_support.h"

#ifndef SVFSD_PATH
#error "SVFSD_PATH must name the svfsd binary"
#endif
#ifndef SVFS_VERSIOND_PATH
#error "SVFS_VERSIOND_PATH must name the svfs-versiond binary"
#endif

namespace {

using namespace svfs_shared;

int g_files = 1000;
std::string Env(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}
int g_threads = 0;

// One mode's world, started on first use and torn down at exit.
struct Setup {
  World world;
  World::Mount* mount = nullptr;
  std::vector<std::string> names;  // full paths through the mount
  bool ok = false;
};

Setup* Start(const std::string& cache) {
  auto* s = new Setup;
  std::string error;
  if (!s->world.Create("bench", &error)) {
    std::cerr << error << "\n";
    return s;
  }
  if (cache == "shared" && !s->world.StartVersiond(Env("SVFS_SHARED_VERSIOND", SVFS_VERSIOND_PATH), &error)) {
    std::cerr << error << "\n";
    return s;
  }
  // The files exist before the daemon starts (host side), so no versiond host bumps race the loop.
  ::mkdir(s->world.H("dir").c_str(), 0755);
  for (int i = 0; i < g_files; ++i) {
    std::string rel = "dir/file-" + std::to_string(i);
    if (WriteHostFile(s->world.H(rel), "x") != 0) {
      std::cerr << "cannot create " << rel << "\n";
      return s;
    }
  }
  DaemonSpec spec;
  spec.cache = cache;
  spec.xattr = false;
  spec.threads = g_threads;
  s->mount = s->world.StartSvfsd(Env("SVFS_SHARED_SVFSD", SVFSD_PATH), "mnt-" + cache, spec, &error);
  if (s->mount == nullptr) {
    std::cerr << error << "\n";
    return s;
  }
  if (cache == "shared" &&
      !WaitUntil([&] {
        auto stats = QueryStats(s->world.socket());
        return stats && stats->clients.size() == 1;
      }, 5000ms)) {
    std::cerr << "svfsd did not attach to versiond\n" << s->world.Logs();
    return s;
  }
  for (int i = 0; i < g_files; ++i) s->names.push_back(s->mount->path + "/dir/file-" + std::to_string(i));
  s->ok = true;
  return s;
}

Setup* Get(const std::string& cache) {
  static Setup* none = nullptr;
  static Setup* shared = nullptr;
  Setup*& s = cache == "shared" ? shared : none;
  if (s == nullptr) {
    s = Start(cache);
    std::atexit([] {
      if (none) none->world.Destroy();
      if (shared) shared->world.Destroy();
    });
  }
  return s;
}

// stat() of existing names through the mount, round robin over the directory.
void BM_StatThroughMount(benchmark::State& state, const std::string& cache) {
  Setup* s = Get(cache);
  if (!s->ok) {
    state.SkipWithError("setup failed (see stderr)");
    return;
  }
  // Warm: every inode looked up once (shared mode acquires its slots here, not in the loop).
  struct stat st {};
  for (const auto& name : s->names) ::stat(name.c_str(), &st);
  size_t i = 0;
  for (auto _ : state) {
    if (::stat(s->names[i].c_str(), &st) != 0) {
      state.SkipWithError("stat failed");
      break;
    }
    if (++i == s->names.size()) i = 0;
  }
  state.SetItemsProcessed(state.iterations());
  if (cache == "shared") {
    auto stats = QueryStats(s->world.socket(), nullptr, 1);
    if (stats) state.counters["slots_in_use"] = static_cast<double>(stats->slots_in_use);
  }
}

BENCHMARK_CAPTURE(BM_StatThroughMount, none, std::string("none"))->UseRealTime()->MinTime(2.0);
BENCHMARK_CAPTURE(BM_StatThroughMount, shared, std::string("shared"))->UseRealTime()->MinTime(2.0);

}  // namespace

int main(int argc, char** argv) {
  std::vector<char*> rest;
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i];
    if (a.starts_with("--files="))
      g_files = std::max(1, std::atoi(a.c_str() + 8));
    else if (a.starts_with("--threads="))
      g_threads = std::max(0, std::atoi(a.c_str() + 10));
    else
      rest.push_back(argv[i]);
  }
  int n = static_cast<int>(rest.size());
  benchmark::Initialize(&n, rest.data());
  if (benchmark::ReportUnrecognizedArguments(n, rest.data())) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
