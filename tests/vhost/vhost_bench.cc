// Microbenchmark of a vhost-user-fs backend through our frontend, without a guest kernel:
//   svfs_vhost_bench --socket PATH [--seconds S] [--depth N] [--queues Q] [--event-idx]
//                    [--dir-entries N] [--tsv] [--no-forget]
//   svfs_vhost_bench --floor DIR [--seconds S] [--dir-entries N] [--readdir-entries K] [--tsv]
// Start the backend first (svfsd --socket-path PATH --shared-dir DIR, or
// /usr/lib/qemu/virtiofsd --socket-path=PATH -o source=DIR -o sandbox=chroot). The benchmark
// prepares its files through FUSE itself (a 1 MiB file and a --dir-entries (default 1,000) entry
// directory), then runs each row for the given time with `depth` requests in flight per request
// queue, and prints one line per row: operations, operations per second, mean and p50/p99 batch
// latency (the round trip of one batch of `depth` requests per queue; at depth 1 that is the
// latency of one request). READDIRPLUS: one op is one 64 KiB READDIRPLUS from offset 0.
//
// --floor DIR: no backend; measures, single-threaded on the host, the bare syscalls behind each row
// in a fresh subdirectory of DIR (same file size and directory size): LOOKUP = fstatat(dirfd, name,
// AT_SYMLINK_NOFOLLOW); GETATTR = statx(fd, "", AT_EMPTY_PATH); READDIRPLUS = lseek(0) + getdents64
// until K entries (--readdir-entries, what one 64 KiB READDIRPLUS reply holds) + fstatat per entry;
// CREATE+UNLINK = openat(O_CREAT|O_EXCL) + close + unlinkat; READ/WRITE 4K = pread/pwrite of a
// random 4 KiB block. Latencies are per op.
//
// --tsv: also print one machine-readable line per row:
//   ROW<TAB>name<TAB>ops/s<TAB>p50 us<TAB>p99 us[<TAB>extra]
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>

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
  unsigned dir_entries = 1000;
  std::string floor_dir;         // --floor: measure bare syscalls under this directory
  unsigned readdir_entries = 0;  // --floor: entries per READDIRPLUS op (0: as many as 64 KiB of dirents)
  bool tsv = false;
  bool no_forget = false;  // CREATE+UNLINK without the FORGET a guest kernel sends (old behaviour)
};

[[noreturn]] void Usage() {
  std::fprintf(stderr,
               "usage: svfs_vhost_bench --socket PATH [--seconds S] [--depth N] [--queues Q] "
               "[--event-idx] [--dir-entries N] [--tsv] [--no-forget]\n"
               "       svfs_vhost_bench --floor DIR [--seconds S] [--dir-entries N] "
               "[--readdir-entries K] [--tsv]\n");
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
    else if (k == "--dir-entries") a.dir_entries = static_cast<unsigned>(std::stoul(value()));
    else if (k == "--floor") a.floor_dir = value();
    else if (k == "--readdir-entries") a.readdir_entries = static_cast<unsigned>(std::stoul(value()));
    else if (k == "--tsv") a.tsv = true;
    else if (k == "--no-forget") a.no_forget = true;
    else Usage();
  }
  if ((a.socket.empty() && a.floor_dir.empty()) || a.depth == 0 || a.queues == 0) Usage();
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

// p-th percentile (0..100) of the samples, in microseconds.
double Percentile(std::vector<std::chrono::nanoseconds>& v, double p) {
  if (v.empty()) return 0;
  std::size_t i = std::min(v.size() - 1, static_cast<std::size_t>(p / 100.0 * v.size()));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(i), v.end());
  return std::chrono::duration<double, std::micro>(v[i]).count();
}

void Tsv(const Args& a, const char* name, double ops_s, std::vector<std::chrono::nanoseconds>& lat,
         const std::string& extra = "") {
  if (!a.tsv) return;
  double p50 = Percentile(lat, 50), p99 = Percentile(lat, 99);
  std::printf("ROW\t%s\t%.0f\t%.1f\t%.1f%s%s\n", name, ops_s, p50, p99, extra.empty() ? "" : "\t",
              extra.c_str());
  std::fflush(stdout);
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
    std::vector<std::chrono::nanoseconds> lat;
    auto start = Clock::now();
    while (Clock::now() < end) {
      std::vector<FuseRequest> batch = make_batch();
      auto t0 = Clock::now();
      for (const FuseReply& r : c_.transact(batch)) Check(r, name);
      auto dt = Clock::now() - t0;
      busy += dt;
      lat.push_back(dt);
      ops += batch.size() / ops_per_request;
      ++batches;
    }
    double secs = std::chrono::duration<double>(Clock::now() - start).count();
    std::printf("%-14s %10llu ops %12.0f ops/s %10.1f us/batch p50 %.1f p99 %.1f (depth %u x %u queues)\n",
                name, static_cast<unsigned long long>(ops), ops / secs,
                batches ? std::chrono::duration<double, std::micro>(busy).count() / batches : 0.0,
                Percentile(lat, 50), Percentile(lat, 99), args_.depth, queues());
    Tsv(args_, name, ops / secs, lat);
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

// Bare-syscall floor (see the header comment).
int Floor(const Args& args) {
  using Clock = std::chrono::steady_clock;
  auto sys = [](long r, const char* what) {
    if (r < 0) throw std::runtime_error(std::string(what) + ": " + std::strerror(errno));
    return r;
  };
  std::string base = args.floor_dir + "/svfs-floor-" + std::to_string(::getpid());
  sys(::mkdir(base.c_str(), 0755), "mkdir");
  int dirfd = static_cast<int>(sys(::open(base.c_str(), O_RDONLY | O_DIRECTORY), "open dir"));
  int fd = static_cast<int>(sys(::openat(dirfd, "file", O_RDWR | O_CREAT, 0644), "create file"));
  std::vector<std::uint8_t> block(4096, 0x5a);
  const std::uint64_t file_size = 1u << 20;
  for (std::uint64_t off = 0; off < file_size; off += block.size())
    sys(::pwrite(fd, block.data(), block.size(), static_cast<off_t>(off)), "pwrite");
  sys(::mkdirat(dirfd, "list", 0755), "mkdir list");
  int listfd = static_cast<int>(sys(::openat(dirfd, "list", O_RDONLY | O_DIRECTORY), "open list"));
  for (unsigned i = 0; i < args.dir_entries; ++i)
    sys(::close(static_cast<int>(sys(::openat(listfd, ("entry-" + std::to_string(i)).c_str(),
                                             O_RDWR | O_CREAT, 0644), "create entry"))), "close");
  unsigned want = args.readdir_entries;
  if (want == 0) {  // as many as fit in 64 KiB of fuse_direntplus records (~168 bytes each)
    want = 65536 / 168;
  }
  std::mt19937_64 rng(42);
  auto random_block = [&] { return static_cast<off_t>((rng() % (file_size / 4096)) * 4096); };

  auto row = [&](const char* name, const std::function<void()>& op, const std::string& extra = "") {
    auto start = Clock::now();
    auto end = start + std::chrono::duration<double>(args.seconds);
    std::vector<std::chrono::nanoseconds> lat;
    std::uint64_t ops = 0;
    while (true) {
      auto t0 = Clock::now();
      if (t0 >= end) break;
      op();
      lat.push_back(Clock::now() - t0);
      ++ops;
    }
    double secs = std::chrono::duration<double>(Clock::now() - start).count();
    std::printf("%-14s %10llu ops %12.0f ops/s p50 %.2f p99 %.2f us/op (bare syscalls%s%s)\n", name,
                static_cast<unsigned long long>(ops), ops / secs, Percentile(lat, 50),
                Percentile(lat, 99), extra.empty() ? "" : ", ", extra.c_str());
    Tsv(args, name, ops / secs, lat);
  };

  struct stat st;
  row("LOOKUP", [&] { sys(::fstatat(dirfd, "file", &st, AT_SYMLINK_NOFOLLOW), "fstatat"); });
  row("GETATTR", [&] {
    struct statx stx;
    sys(::statx(fd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, &stx), "statx");
  });
  std::vector<char> dbuf(64 * 1024);
  row("READDIRPLUS", [&] {
    sys(::lseek(listfd, 0, SEEK_SET), "lseek");
    unsigned got = 0;
    while (got < want) {
      long n = sys(::syscall(SYS_getdents64, listfd, dbuf.data(), dbuf.size()), "getdents64");
      if (n == 0) break;
      for (long pos = 0; pos < n && got < want;) {
        auto* d = reinterpret_cast<struct dirent64*>(dbuf.data() + pos);
        sys(::fstatat(listfd, d->d_name, &st, AT_SYMLINK_NOFOLLOW), "fstatat entry");
        ++got;
        pos += d->d_reclen;
      }
    }
  }, std::to_string(want) + " entries/op");
  std::uint64_t n = 0;
  row("CREATE+UNLINK", [&] {
    std::string name = "cu-" + std::to_string(n++);
    int f = static_cast<int>(sys(::openat(dirfd, name.c_str(), O_RDWR | O_CREAT | O_EXCL, 0644), "openat"));
    sys(::close(f), "close");
    sys(::unlinkat(dirfd, name.c_str(), 0), "unlinkat");
  });
  row("READ 4K", [&] { sys(::pread(fd, block.data(), block.size(), random_block()), "pread"); });
  row("WRITE 4K", [&] { sys(::pwrite(fd, block.data(), block.size(), random_block()), "pwrite"); });

  for (unsigned i = 0; i < args.dir_entries; ++i)
    ::unlinkat(listfd, ("entry-" + std::to_string(i)).c_str(), 0);
  ::close(listfd);
  ::close(fd);
  ::unlinkat(dirfd, "list", AT_REMOVEDIR);
  ::unlinkat(dirfd, "file", 0);
  ::close(dirfd);
  ::rmdir(base.c_str());
  return 0;
}

int Run(const Args& args) {
  if (!args.floor_dir.empty()) return Floor(args);
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
  for (unsigned i = 0; i < args.dir_entries; ++i) {
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
  {  // how many entries one 64 KiB READDIRPLUS holds (what --floor --readdir-entries wants)
    fuse_read_in in{};
    in.fh = od->fh;
    in.size = 64 * 1024;
    FuseReply r = c.send(c.make(FUSE_READDIRPLUS, list, {Bytes(in)}, sizeof(fuse_out_header) + in.size));
    Check(r, "READDIRPLUS");
    std::size_t n = FuseClient::parse_direntplus(r.body()).size();
    std::printf("READDIRPLUS: %zu entries per 64 KiB reply (directory of %u)\n", n, args.dir_entries);
    if (args.tsv) std::printf("ENTRIES\t%zu\n", n);
  }
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
  // CREATE+UNLINK: each batch creates `depth` files per queue, then releases and unlinks them and
  // forgets their nodes (hiprio queue; --no-forget leaves that out); one op is the whole
  // create/release/unlink/forget cycle of one file. Timed as one row by hand because it is
  // three dependent batches.
  {
    using Clock = std::chrono::steady_clock;
    auto start = Clock::now();
    auto end = start + std::chrono::duration<double>(args.seconds);
    std::uint64_t ops = 0, n = 0;
    std::vector<std::chrono::nanoseconds> lat;
    while (Clock::now() < end) {
      auto t0 = Clock::now();
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
      std::vector<FuseRequest> cleanup, forgets;
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
        fuse_forget_in fg{};
        fg.nlookup = 1;
        forgets.push_back(c.make(FUSE_FORGET, e.nodeid, {Bytes(fg)}, 0, 0));  // hiprio queue
      }
      for (const FuseReply& r : c.transact(cleanup)) Check(r, "RELEASE");
      for (const FuseReply& r : c.transact(names_unlink)) Check(r, "UNLINK");
      // The guest kernel forgets an unlinked inode once its last reference goes; without this the
      // backend would keep an O_PATH fd to every unlinked file (on ext4 each one sits on the orphan
      // list, and creates in the same file system then take ~1 ms).
      if (!args.no_forget) {
        for (const FuseReply& r : c.transact(forgets))
          if (!r.answered) throw std::runtime_error("FORGET not answered");
      }
      ops += creates.size();
      lat.push_back(Clock::now() - t0);
    }
    double secs = std::chrono::duration<double>(Clock::now() - start).count();
    std::printf("%-14s %10llu ops %12.0f ops/s p50 %.1f p99 %.1f us/cycle (create+release+unlink+forget, depth %u x %u queues)\n",
                "CREATE+UNLINK", static_cast<unsigned long long>(ops), ops / secs,
                Percentile(lat, 50), Percentile(lat, 99), args.depth, bench.queues());
    Tsv(args, "CREATE+UNLINK", ops / secs, lat);
  }

  // Leave the shared directory as we found it.
  c.releasedir(list, od->fh);
  c.release(file.entry.nodeid, file.open.fh);
  c.unlink(dir, "file");
  for (unsigned i = 0; i < args.dir_entries; ++i) c.unlink(list, "entry-" + std::to_string(i));
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
