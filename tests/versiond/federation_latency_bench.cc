// How long a change on host A takes to show as a bumped slot in host B's table, over a real
// nats-server on loopback: two real svfs-versiond on one private tmpfs (as federation_test.cc;
// B with --host-changes none), N chmods on A by another process, each timed from just before the
// chmod until B's slot moves. With --load RATE, a thread of this process meanwhile changes other
// files of the volume RATE times a second (fchmod, paced per millisecond), so the probes travel
// among that many published bumps. Prints p50/p99/max, and from A's and B's stats what was sent:
// messages and bytes per bump, and whether B had to resync. Needs root.
// Usage: svfs_federation_latency_bench [N] [--load BUMPS_PER_SECOND]
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fcntl.h>

#include <algorithm>
#include <atomic>
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

constexpr uint64_t kSlots = 65536;
constexpr int kLoadFiles = 1000;

int Fail(const std::string& what) {
  std::fprintf(stderr, "svfs_federation_latency_bench: %s\n", what.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  int rounds = 200;
  int load_rate = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--load" && i + 1 < argc) {
      load_rate = std::atoi(argv[++i]);
    } else if (std::atoi(arg.c_str()) > 0) {
      rounds = std::atoi(arg.c_str());
    } else {
      return Fail("usage: svfs_federation_latency_bench [ROUNDS] [--load BUMPS_PER_SECOND]");
    }
  }
  if (::geteuid() != 0) return Fail("needs root (a private tmpfs as the volume, fanotify)");
  char templ[] = "/tmp/svfs-federation-bench-XXXXXX";
  if (::mkdtemp(templ) == nullptr) return Fail("mkdtemp failed");
  const std::string dir = templ;
  const std::string volume = dir + "/volume";
  ::mkdir(volume.c_str(), 0755);
  if (::mount("svfs-volume", volume.c_str(), "tmpfs", 0, "size=64m") != 0) return Fail("mount tmpfs");
  const std::string file = volume + "/shared";
  { std::ofstream(file) << "x"; }
  const uint64_t slot = svfs_test::SlotOfPath(file, kSlots);
  // The load's files, made before the versionds start; none shares the probe's slot.
  std::vector<int> load_fds;
  if (load_rate > 0) {
    ::mkdir((volume + "/load").c_str(), 0755);
    for (int i = 0; i < kLoadFiles; ++i) {
      const std::string path = volume + "/load/f" + std::to_string(i);
      { std::ofstream(path) << "l"; }
      if (svfs_test::SlotOfPath(path, kSlots) == slot) continue;
      load_fds.push_back(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    }
  }

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
                    "--volume", "bench", "--volume-dir", volume, "--host-changes",
                    i == 0 ? "fanotify" : "none"},
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
  auto stats_of = [&](int host) {
    auto stats = svfs_test::QueryStats(dir + "/" + names[host] + ".sock", nullptr, 0);
    return stats && !stats->federation.empty() ? stats->federation[0] : svfs_test::VolumeRow{};
  };
  const svfs_test::VolumeRow a_before = stats_of(0), b_before = stats_of(1);

  // The load: fchmod of the load files in turn, rate/1000 per millisecond.
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> load_done{0};
  const auto load_start = Clock::now();
  std::thread load([&] {
    if (load_rate <= 0 || load_fds.empty()) return;
    auto next = Clock::now();
    size_t at = 0;
    double owed = 0;
    while (!stop) {
      owed += load_rate / 1000.0;
      for (; owed >= 1; owed -= 1) {
        // Each pass over the files flips their mode: every call is a change.
        ::fchmod(load_fds[at % load_fds.size()], (at / load_fds.size()) % 2 ? 0600 : 0640);
        ++at;
      }
      load_done = at;
      next += 1ms;
      std::this_thread::sleep_until(next);
    }
  });

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
  stop = true;
  load.join();
  const double load_secs = std::chrono::duration<double>(Clock::now() - load_start).count();
  std::this_thread::sleep_for(500ms);  // the last batches reach B
  const svfs_test::VolumeRow a_after = stats_of(0), b_after = stats_of(1);
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
  const uint64_t handles = a_after.published_handles - a_before.published_handles;
  const uint64_t messages = a_after.published_messages - a_before.published_messages;
  const uint64_t bytes = a_after.published_bytes - a_before.published_bytes;
  std::printf("  load: %.0f bumps/s on A (%llu changes in %.1f s, asked %d/s)\n",
              load_done / load_secs, static_cast<unsigned long long>(load_done.load()), load_secs,
              load_rate);
  std::printf("  sent by A: %llu changed inodes in %llu messages, %llu bytes: %.1f inodes a "
              "message, %.2f messages and %.1f bytes a bump\n",
              static_cast<unsigned long long>(handles), static_cast<unsigned long long>(messages),
              static_cast<unsigned long long>(bytes), messages ? double(handles) / messages : 0.0,
              handles ? double(messages) / handles : 0.0, handles ? double(bytes) / handles : 0.0);
  std::printf("  B: %llu remote bumps, %llu resyncs (bumps of every slot) during the run\n",
              static_cast<unsigned long long>(b_after.remote_bumps - b_before.remote_bumps),
              static_cast<unsigned long long>(b_after.resyncs - b_before.resyncs));
  for (int fd : load_fds) ::close(fd);
  client.reset();
  for (auto& host : hosts) host.Kill(SIGTERM);
  for (const std::string& table : tables) svfs::shm::VersionTable::Remove(table);
  ::umount2(volume.c_str(), MNT_DETACH);
  svfs_test::RunCommand({"/bin/rm", "-rf", dir});
  return 0;
}
