// Microbenchmark of a vhost-user-fs backend through our frontend, without a guest kernel:
//   svfs_vhost_bench --socket PATH [--seconds S] [--depth N] [--queues Q] [--event-idx]
// Start the backend first (svfsd --socket-path PATH --shared-dir DIR, or
// /usr/lib/qemu/virtiofsd --socket-path=PATH -o source=DIR -o sandbox=chroot). The benchmark
// prepares its files through FUSE itself (a 1 MiB file and a 100-entry directory), then runs each
// row for the given time with `depth` requests in flight per request queue, and prints one line per
// row: operations, operations per second, mean batch latency.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "tests/vhost/frontend.h"
#include "tests/vhost/fuse_client.h"

namespace svfs::vhost {
namespace {

struct Args {
  std::string socket;
  double seconds = 2;
  unsigned depth = 16;
  unsigned queues = 1;
  bool event_idx = false;
};

[[noreturn]] void Usage() {
  std::fprintf(stderr,
               "usage: svfs_vhost_bench --socket PATH [--seconds S] [--depth N] [--queues Q] "
               "[--event-idx]\n");
  std::exit(2);
}

Args Parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) Usage();
      return argv[++i];
    };
    if (k == "--socket") a.socket = value();
    else if (k == "--seconds") a.seconds = std::stod(value());
    else if (k == "--depth") a.depth = static_cast<unsigned>(std::stoul(value()));
    else if (k == "--queues") a.queues = static_cast<unsigned>(std::stoul(value()));
    else if (k == "--event-idx") a.event_idx = true;
    else Usage();
  }
  if (a.socket.empty() || a.depth == 0 || a.queues == 0) Usage();
  return a;
}

void Check(const FuseReply& r, const char* what) {
  if (!r.well_formed() || r.error() != 0)
    throw std::runtime_error(std::string(what) + " failed: error " + std::to_string(r.error()) +
                             ", used_len " + std::to_string(r.used_len));
}

struct Created {
  fuse_entry_out entry;
  fuse_open_out open;
};

Created Create(FuseClient& c, std::uint64_t parent, const std::string& name) {
  FuseReply r = c.create(parent, name, S_IFREG | 0644, O_RDWR | O_CREAT);
  Check(r, "CREATE");
  Created out;
  std::memcpy(&out.entry, r.body().data(), sizeof(out.entry));
  std::memcpy(&out.open, r.body().data() + sizeof(out.entry), sizeof(out.open));
  return out;
}

class Bench {
 public:
  Bench(FuseClient& client, const Args& args) : c_(client), args_(args) {}

  // Runs `make_batch` → transact → `check` until the time is up; prints the row.
  void Row(const char* name, const std::function<std::vector<FuseRequest>()>& make_batch,
           unsigned ops_per_request = 1) {
    using Clock = std::chrono::steady_clock;
    auto end = Clock::now() + std::chrono::duration<double>(args_.seconds);
    std::uint64_t ops = 0, batches = 0;
    std::chrono::nanoseconds busy{0};
    auto start = Clock::now();
    while (Clock::now() < end) {
      std::vector<FuseRequest> batch = make_batch();
      auto t0 = Clock::now();
      for (const FuseReply& r : c_.transact(batch)) Check(r, name);
      busy += Clock::now() - t0;
      ops += batch.size() / ops_per_request;
      ++batches;
    }
    double secs = std::chrono::duration<double>(Clock::now() - start).count();
    std::printf("%-14s %10llu ops %12.0f ops/s %10.1f us/batch (depth %u x %u queues)\n", name,
                static_cast<unsigned long long>(ops), ops / secs,
                batches ? std::chrono::duration<double, std::micro>(busy).count() / batches : 0.0,
                args_.depth, queues());
    std::fflush(stdout);
  }

  unsigned queues() const { return static_cast<unsigned>(c_.frontend().queue_count() - 1); }

  // depth requests on each request queue.
  std::vector<FuseRequest> Spread(const std::function<FuseRequest(unsigned queue)>& one) {
    std::vector<FuseRequest> v;
    for (unsigned q = 1; q <= queues(); ++q)
      for (unsigned i = 0; i < args_.depth; ++i) v.push_back(one(q));
    return v;
  }

 private:
  FuseClient& c_;
  const Args& args_;
};

int Run(const Args& args) {
  FrontendOptions opts;
  opts.memory_size = 256u << 20;
  opts.request_queues = args.queues;
  opts.event_idx = args.event_idx;
  VhostUserFrontend fe(args.socket, opts);
  FuseClient c(fe);
  Check(c.init(), "INIT");
  Bench bench(c, args);
  std::printf("backend %s: %u request queue(s)\n", args.socket.c_str(), bench.queues());

  // Fixtures, created through FUSE so the benchmark needs no access to the shared directory.
  std::string prefix = "svfs-vhost-bench-" + std::to_string(::getpid());
  Created dir_entry;
  {
    FuseReply r = c.send(c.make(FUSE_MKDIR, FUSE_ROOT_ID,
                                {Bytes(fuse_mkdir_in{0755, 022}), CName(prefix)}, 4096));
    Check(r, "MKDIR");
    std::memcpy(&dir_entry.entry, r.body().data(), sizeof(fuse_entry_out));
  }
  const std::uint64_t dir = dir_entry.entry.nodeid;
  Created file = Create(c, dir, "file");
  std::vector<std::uint8_t> block(4096, 0x5a);
  const std::uint64_t file_size = 1u << 20;
  for (std::uint64_t off = 0; off < file_size; off += block.size())
    Check(c.write(file.entry.nodeid, file.open.fh, off, block), "WRITE");
  FuseReply sub = c.send(c.make(FUSE_MKDIR, dir, {Bytes(fuse_mkdir_in{0755, 022}), CName("list")}, 4096));
  Check(sub, "MKDIR");
  const std::uint64_t list = sub.as<fuse_entry_out>()->nodeid;
  for (int i = 0; i < 100; ++i) {
    Created e = Create(c, list, "entry-" + std::to_string(i));
    Check(c.release(e.entry.nodeid, e.open.fh), "RELEASE");
  }
  auto od = c.opendir(list).as<fuse_open_out>();
  if (!od) throw std::runtime_error("OPENDIR failed");

  std::mt19937_64 rng(42);
  auto random_block = [&] { return (rng() % (file_size / 4096)) * 4096; };

  bench.Row("LOOKUP", [&] { return bench.Spread([&](unsigned q) { return c.lookup_request(dir, "file", q); }); });
  bench.Row("GETATTR", [&] {
    return bench.Spread([&](unsigned q) { return c.getattr_request(file.entry.nodeid, q); });
  });
  bench.Row("READDIRPLUS", [&] {
    return bench.Spread([&](unsigned q) {
      fuse_read_in in{};
      in.fh = od->fh;
      in.size = 64 * 1024;
      return c.make(FUSE_READDIRPLUS, list, {Bytes(in)}, sizeof(fuse_out_header) + in.size, q);
    });
  });
  bench.Row("READ 4K", [&] {
    return bench.Spread(
        [&](unsigned q) { return c.read_request(file.entry.nodeid, file.open.fh, random_block(), 4096, q); });
  });
  bench.Row("WRITE 4K", [&] {
    return bench.Spread([&](unsigned q) {
      return c.write_request(file.entry.nodeid, file.open.fh, random_block(), block, q);
    });
  });
  // CREATE+UNLINK: each batch creates `depth` files per queue, then releases and unlinks them; one
  // op is the whole create/release/unlink cycle of one file. Timed as one row by hand because it is
  // three dependent batches.
  {
    using Clock = std::chrono::steady_clock;
    auto start = Clock::now();
    auto end = start + std::chrono::duration<double>(args.seconds);
    std::uint64_t ops = 0, n = 0;
    while (Clock::now() < end) {
      std::vector<FuseRequest> creates, names_unlink;
      std::vector<std::string> names;
      for (unsigned q = 1; q <= bench.queues(); ++q)
        for (unsigned i = 0; i < args.depth; ++i) {
          names.push_back("cu-" + std::to_string(n++));
          fuse_create_in in{};
          in.flags = O_RDWR | O_CREAT | O_EXCL;
          in.mode = S_IFREG | 0644;
          in.umask = 022;
          creates.push_back(c.make(FUSE_CREATE, dir, {Bytes(in), CName(names.back())}, 4096, q));
        }
      auto replies = c.transact(creates);
      std::vector<FuseRequest> cleanup;
      for (std::size_t i = 0; i < replies.size(); ++i) {
        Check(replies[i], "CREATE");
        fuse_entry_out e;
        fuse_open_out o;
        std::memcpy(&e, replies[i].body().data(), sizeof(e));
        std::memcpy(&o, replies[i].body().data() + sizeof(e), sizeof(o));
        fuse_release_in rel{};
        rel.fh = o.fh;
        cleanup.push_back(c.make(FUSE_RELEASE, e.nodeid, {Bytes(rel)}, 4096, creates[i].queue));
        names_unlink.push_back(c.make(FUSE_UNLINK, dir, {CName(names[i])}, 4096, creates[i].queue));
      }
      for (const FuseReply& r : c.transact(cleanup)) Check(r, "RELEASE");
      for (const FuseReply& r : c.transact(names_unlink)) Check(r, "UNLINK");
      ops += creates.size();
    }
    double secs = std::chrono::duration<double>(Clock::now() - start).count();
    std::printf("%-14s %10llu ops %12.0f ops/s (create+release+unlink, depth %u x %u queues)\n",
                "CREATE+UNLINK", static_cast<unsigned long long>(ops), ops / secs, args.depth,
                bench.queues());
  }

  // Leave the shared directory as we found it.
  c.releasedir(list, od->fh);
  c.release(file.entry.nodeid, file.open.fh);
  c.unlink(dir, "file");
  for (int i = 0; i < 100; ++i) c.unlink(list, "entry-" + std::to_string(i));
  c.send(c.make(FUSE_RMDIR, dir, {CName("list")}, 4096));
  c.send(c.make(FUSE_RMDIR, FUSE_ROOT_ID, {CName(prefix)}, 4096));
  return 0;
}

}  // namespace
}  // namespace svfs::vhost

int main(int argc, char** argv) {
  try {
    return svfs::vhost::Run(svfs::vhost::Parse(argc, argv));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "svfs_vhost_bench: %s\n", e.what());
    return 1;
  }
}
