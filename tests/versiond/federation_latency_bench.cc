// How long a change on host A takes to show as a bumped slot in host B's table, over a real
// nats-server on loopback: two real svfs-versiond on one private tmpfs (as federation_test.cc),
// N chmods on A by another process, each timed from just before the chmod until B's slot moves.
// Prints p50/p99/max. Needs root. Usage: svfs_federation_latency_bench [N]
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "shm/version_table.h"
#include "tests/support/process.h"
#include "tests/support/versiond_stats.h"
#include "tests/support/wait.h"
#include "tests/versiond/nats_server.h"
#include "versiond/client.h"

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

constexpr uint64_t kSlots = 4096;

int Fail(const std::string& what) {
  std::fprintf(stderr, "svfs_federation_latency_bench: %s\n", what.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  const int rounds = argc > 1 ? std::atoi(argv[1]) : 200;
  if (::geteuid() != 0) return Fail("needs root (a private tmpfs as the volume, fanotify)");
  char templ[] = "/tmp/svfs-federation-bench-XXXXXX";
  if (::mkdtemp(templ) == nullptr) return Fail("mkdtemp failed");
  const std::string dir = templ;
  const std::string volume = dir + "/volume";
  ::mkdir(volume.c_str(), 0755);
  if (::mount("svfs-volume", volume.c_str(), "tmpfs", 0, "size=8m") != 0) return Fail("mount tmpfs");
  const std::string file = volume + "/shared";
  { std::ofstream(file) << "x"; }

  svfs::versiond::testing::NatsServer nats(NATS_SERVER_PATH, dir + "/store", "n1",
                                           svfs::versiond::testing::FreeLoopbackPort());
  if (!nats.Start()) return Fail("nats-server did not start:\n" + nats.log());
  svfs_test::Process hosts[2];
  const std::string names[2] = {"a", "b"};
  const std::string tables[2] = {"svfs-fedbench-a-" + std::to_string(::getpid()),
                                 "svfs-fedbench-b-" + std::to_string(::getpid())};
  for (int i = 0; i < 2; ++i) {
    hosts[i].Start({SVFS_VERSIOND_PATH, "--socket", dir + "/" + names[i] + ".sock", "--table",
                    tables[i], "--capacity", std::to_string(kSlots), "--federation", nats.url(),
                    "--volume", "bench", "--volume-dir", volume},
                   dir + "/" + names[i] + ".log");
    if (!svfs_test::WaitUntil([&] { return hosts[i].Log().find("federation: volume") !=
                                           std::string::npos; }, 5s, 10ms)) {
      return Fail("versiond " + names[i] + " did not join:\n" + hosts[i].Log());
    }
  }
  auto client = svfs::versiond::Client::Start({.socket_path = dir + "/a.sock", .name = "bench",
                                               .shared_dirs = {volume}, .retry_interval = 50ms});
  if (!svfs_test::WaitUntil([&] { return client->attached(); }, 2s, 10ms)) return Fail("attach");
  auto table_b = svfs::shm::VersionTable::Attach(tables[1], svfs::shm::Access::kReadOnly);
  if (!table_b) return Fail(table_b.error());
  const uint64_t slot = svfs_test::SlotOfPath(file, kSlots);

  std::vector<double> micros, chmod_micros;
  for (int round = 0; round < rounds; ++round) {
    const uint64_t before = table_b->sample(slot);
    const auto start = Clock::now();
    // Another process, so that A bumps and publishes it (the attached client's own are skipped).
    if (svfs_test::RunCommand({"/bin/chmod", round % 2 ? "600" : "640", file}).status != 0) {
      return Fail("chmod failed");
    }
    chmod_micros.push_back(std::chrono::duration<double, std::micro>(Clock::now() - start).count());
    while (table_b->sample(slot) == before) {
      if (Clock::now() - start > 2s) return Fail("B never saw round " + std::to_string(round));
    }
    micros.push_back(std::chrono::duration<double, std::micro>(Clock::now() - start).count());
    std::this_thread::sleep_for(2ms);
  }
  std::ranges::sort(micros);
  std::ranges::sort(chmod_micros);
  auto at = [](const std::vector<double>& v, double q) {
    return v[static_cast<size_t>(q * (v.size() - 1))];
  };
  std::printf("change on A -> slot bumped in B, %d rounds (includes up to 1 ms of batching):\n"
              "  p50 %.0f us  p99 %.0f us  max %.0f us\n"
              "  of which the chmod process (fork, exec, wait): p50 %.0f us  p99 %.0f us\n",
              rounds, at(micros, 0.5), at(micros, 0.99), micros.back(), at(chmod_micros, 0.5),
              at(chmod_micros, 0.99));
  client.reset();
  for (auto& host : hosts) host.Kill(SIGTERM);
  for (const std::string& table : tables) svfs::shm::VersionTable::Remove(table);
  ::umount2(volume.c_str(), MNT_DETACH);
  svfs_test::RunCommand({"/bin/rm", "-rf", dir});
  return 0;
}
