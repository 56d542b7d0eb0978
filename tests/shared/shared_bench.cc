// LOOKUP cost through the /dev/fuse server, --cache none vs --cache shared.
//
// Each mode gets its own svfsd mounted on a fresh copy of the same tree (shared mode also gets a
// real svfs-versiond). The host kernel does not negotiate versions, so both modes serve it with
// zero entry and attribute timeouts: every fstatat(dir_fd, name) is a LOOKUP plus GETATTRs on the
// daemon (reported per stat from svfsd's SIGUSR1 counters). The difference is the work of shared
// mode: each inode's identity computed once (its slot follows from it) and a table sample
// before each stat of the host file.
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
#include <map>
#include <sstream>
#include <thread>
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
  s->ok = true;
  return s;
}

Setup* get(const std::string& cache) {
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

// svfsd's per-opcode request counts: SIGUSR1 makes it append its table to the log; the last table
// is parsed. Empty if it did not appear within 2 s.
std::map<std::string, uint64_t> DaemonCounters(Process& daemon) {
  auto tables = [&] {
    std::string log = daemon.Log();
    size_t n = 0;
    for (size_t at = log.find("opcode "); at != std::string::npos; at = log.find("opcode ", at + 1)) ++n;
    return n;
  };
  size_t before = tables();
  ::kill(daemon.pid(), SIGUSR1);
  std::map<std::string, uint64_t> out;
  if (!WaitUntil([&] { return tables() > before; }, 2000ms, 5ms)) return out;
  std::this_thread::sleep_for(50ms);  // the rest of the table
  std::string log = daemon.Log();
  std::istringstream in(log.substr(log.rfind("opcode ")));
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string name;
    uint64_t requests = 0;
    if (!(ls >> name >> requests)) break;
    out[name] = requests;
    if (name == "total") break;
  }
  return out;
}

// fstatat() of existing names through the mount, relative to an open fd of their directory,
// round robin over the directory.
void BM_StatThroughMount(benchmark::State& state, const std::string& cache) {
  Setup* s = get(cache);
  if (!s->ok) {
    state.SkipWithError("setup failed (see stderr)");
    return;
  }
  int dir_fd = ::open((s->mount->path + "/dir").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0) {
    state.SkipWithError("open dir failed");
    return;
  }
  std::vector<std::string> names;
  for (int i = 0; i < g_files; ++i) names.push_back("file-" + std::to_string(i));
  // Warm: every inode looked up once (new inodes cost more in both modes; not in the loop).
  struct stat st {};
  for (const auto& name : names) ::fstatat(dir_fd, name.c_str(), &st, 0);
  auto counters_before = DaemonCounters(*s->mount->process);
  size_t i = 0;
  for (auto _ : state) {
    if (::fstatat(dir_fd, names[i].c_str(), &st, 0) != 0) {
      state.SkipWithError("fstatat failed");
      break;
    }
    if (++i == names.size()) i = 0;
  }
  auto counters_after = DaemonCounters(*s->mount->process);
  ::close(dir_fd);
  state.SetItemsProcessed(state.iterations());
  const double n = static_cast<double>(state.iterations());
  if (!counters_before.empty() && !counters_after.empty() && n > 0) {
    state.counters["lookup/stat"] = (counters_after["LOOKUP"] - counters_before["LOOKUP"]) / n;
    state.counters["getattr/stat"] = (counters_after["GETATTR"] - counters_before["GETATTR"]) / n;
  }
}

BENCHMARK_CAPTURE(BM_StatThroughMount, none, std::string("none"))->UseRealTime();
BENCHMARK_CAPTURE(BM_StatThroughMount, shared, std::string("shared"))->UseRealTime();

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
