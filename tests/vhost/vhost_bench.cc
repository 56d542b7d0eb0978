// Microbenchmark of a vhost-user-fs backend through our frontend, without a guest kernel:
//   svfs_vhost_bench --socket PATH [--seconds S] [--depth N] [--queues Q] [--no-event-idx]
//                    [--driver-poll] [--dir-entries N] [--tsv] [--no-forget] [--rows LOOKUP,GETATTR,...]
//                    [--backend-pid PID]
//   svfs_vhost_bench --floor DIR [--seconds S] [--dir-entries N] [--readdir-entries K] [--tsv]
// Start the backend first (svfsd --socket-path PATH --shared-dir DIR, or
// /usr/lib/qemu/virtiofsd --socket-path=PATH -o source=DIR -o sandbox=chroot). The benchmark
// prepares its files through FUSE itself (a 1 MiB file and a --dir-entries (default 1,000) entry
// directory), then runs each row for the given time with `depth` requests kept in flight on each
// request queue (pipelined, with Linux's EVENT_IDX notification discipline: see Bench below), and
// prints one line per row: operations, operations per second, and p50/p99 latency of one request
// (posted to seen used). READDIRPLUS: one op is one 64 KiB READDIRPLUS from offset 0.
// --driver-poll: the driver spins on the used rings with interrupts off instead of sleeping on the
// call eventfds (a poll-mode driver), so no wake-up of the driver is measured.
//
// --floor DIR: no backend; measures, single-threaded on the host, the bare syscalls behind each row
// in a fresh subdirectory of DIR (same file size and directory size): LOOKUP = fstatat(dirfd, name,
// AT_SYMLINK_NOFOLLOW); GETATTR = statx(fd, "", AT_EMPTY_PATH); READDIRPLUS = lseek(0) + getdents64
// until K entries (--readdir-entries, what one 64 KiB READDIRPLUS reply holds) + fstatat per entry;
// CREATE+UNLINK = openat(O_CREAT|O_EXCL) + close + unlinkat; READ/WRITE 4K = pread/pwrite of a
// random 4 KiB block. Latencies are per op.
//
// --backend-pid PID: also report the backend's CPU time per request (ns): the run time of every
// thread of PID and of its descendants (svfsd's namespace sandbox serves from a child) over the
// row, from /proc/T/task/*/schedstat, divided by the requests served (CREATE+UNLINK: 3 requests
// and a FORGET per op). Unlike req/s it does not depend on how fast the driver wakes up.
//
// --tsv: also print one machine-readable line per row:
//   ROW<TAB>name<TAB>ops/s<TAB>p50 us<TAB>p99 us[<TAB>extra]
// and with --backend-pid: CPU<TAB>name<TAB>backend ns per request
#include <dirent.h>
#include <poll.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>

#include <chrono>
#include <cstddef>
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
  bool event_idx = true;  // as a Linux guest negotiates it; --no-event-idx turns it off
  unsigned dir_entries = 1000;
  std::string floor_dir;         // --floor: measure bare syscalls under this directory
  unsigned readdir_entries = 0;  // --floor: entries per READDIRPLUS op (0: as many as 64 KiB of dirents)
  bool tsv = false;
  bool no_forget = false;  // CREATE+UNLINK without the FORGET a guest kernel sends (old behaviour)
  std::string rows;        // --rows LOOKUP,GETATTR,...: run only these (default: all)
  bool driver_poll = false;  // --driver-poll: spin on the used rings, interrupts off
  pid_t backend_pid = 0;     // --backend-pid: report the backend's CPU time per request
};

[[noreturn]] void Usage() {
  std::fprintf(stderr,
               "usage: svfs_vhost_bench --socket PATH [--seconds S] [--depth N] [--queues Q] "
               "[--no-event-idx] [--driver-poll] [--dir-entries N] [--tsv] [--no-forget] "
               "[--rows A,B] [--backend-pid PID]\n"
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
    else if (k == "--no-event-idx") a.event_idx = false;
    else if (k == "--dir-entries") a.dir_entries = static_cast<unsigned>(std::stoul(value()));
    else if (k == "--floor") a.floor_dir = value();
    else if (k == "--readdir-entries") a.readdir_entries = static_cast<unsigned>(std::stoul(value()));
    else if (k == "--tsv") a.tsv = true;
    else if (k == "--no-forget") a.no_forget = true;
    else if (k == "--rows") a.rows = "," + value() + ",";
    else if (k == "--driver-poll") a.driver_poll = true;
    else if (k == "--backend-pid") a.backend_pid = static_cast<pid_t>(std::stol(value()));
    else Usage();
  }
  if ((a.socket.empty() && a.floor_dir.empty()) || a.depth == 0 || a.queues == 0) Usage();
  return a;
}

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Nanoseconds on CPU of every thread of `pid` and of its descendants so far (schedstat's first
// field). Threads that exit take their time with them: the backends' serving threads live as long
// as the connection.
std::uint64_t ProcessTreeCpuNs(pid_t pid) {
  std::uint64_t total = 0;
  std::string task_dir = "/proc/" + std::to_string(pid) + "/task";
  DIR* tasks = ::opendir(task_dir.c_str());
  if (tasks == nullptr) return 0;
  while (dirent* t = ::readdir(tasks)) {
    if (t->d_name[0] == '.') continue;
    std::string base = task_dir + "/" + t->d_name;
    if (FILE* f = std::fopen((base + "/schedstat").c_str(), "r")) {
      unsigned long long ns = 0;
      if (std::fscanf(f, "%llu", &ns) == 1) total += ns;
      std::fclose(f);
    }
    if (FILE* f = std::fopen((base + "/children").c_str(), "r")) {
      long child;
      while (std::fscanf(f, "%ld", &child) == 1) total += ProcessTreeCpuNs(static_cast<pid_t>(child));
      std::fclose(f);
    }
  }
  ::closedir(tasks);
  return total;
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

// The pipelined driver: `depth` requests stay in flight on each request queue. Each slot owns one
// descriptor chain (request buffer, then reply buffer) built once and posted again as soon as its
// reply is read, as a guest driver reuses its buffers; a slot's workload writes its next request in
// place. Notifications follow Linux's virtio-fs driver with EVENT_IDX: kick only when the
// backend's avail_event asks for it (virtqueue_kick_prepare), and after draining the used ring
// ask for an interrupt at the next used entry (virtqueue_enable_cb). One thread drives all
// queues. One op is one request unless the workload says otherwise.
class Bench {
 public:
  static constexpr std::uint32_t kRequestBytes = 8192;               // WRITE 4K fits
  static constexpr std::uint32_t kReplyBytes = 64 * 1024 + 4096;     // a 64 KiB READDIRPLUS fits

  struct Slot {
    unsigned queue = 1;
    unsigned index = 0;       // 0..depth*queues-1
    std::uint16_t head = 0;   // readable descriptor; its next is the writable one
    std::uint8_t* request = nullptr;
    const std::uint8_t* reply = nullptr;
    std::chrono::steady_clock::time_point posted;
    std::uint64_t state = 0;  // the workload's own (CREATE+UNLINK: which step); 0 between ops
  };

  // next(slot, request) writes the slot's next request into `request` (kRequestBytes) and returns
  // {request length, reply capacity}. done(slot, used_len) checks the reply in slot.reply and
  // returns how many ops it completes.
  struct Workload {
    std::function<std::pair<std::uint32_t, std::uint32_t>(Slot&, std::uint8_t*)> next;
    std::function<unsigned(Slot&, std::uint32_t)> done;
  };

  Bench(FuseClient& client, const Args& args) : c_(client), args_(args) {}

  unsigned queues() const { return static_cast<unsigned>(c_.frontend().queue_count() - 1); }

  // Runs `w` for the configured time and prints the row.
  // `requests_per_op`: requests the backend serves per op, for the CPU time per request.
  void Row(const char* name, const Workload& w, const char* unit = "request",
           unsigned requests_per_op = 1) {
    if (!args_.rows.empty() && args_.rows.find("," + std::string(name) + ",") == std::string::npos) return;
    using Clock = std::chrono::steady_clock;
    VhostUserFrontend& fe = c_.frontend();
    GuestMemory& mem = fe.memory();
    std::size_t mark = mem.mark();
    std::vector<Slot> slots;
    std::vector<std::vector<std::size_t>> by_head(fe.queue_count());
    for (unsigned q = 1; q <= queues(); ++q) {
      by_head[q].assign(fe.queue(q).size(), SIZE_MAX);
      for (unsigned i = 0; i < args_.depth; ++i) {
        Slot s;
        s.queue = q;
        s.index = static_cast<unsigned>(slots.size());
        std::uint64_t req = mem.alloc(kRequestBytes), rep = mem.alloc(kReplyBytes);
        s.request = mem.ptr(req, kRequestBytes);
        s.reply = mem.ptr(rep, kReplyBytes);
        Buffer readable{req, kRequestBytes}, writable{rep, kReplyBytes};
        s.head = fe.queue(q).add_chain(std::span(&readable, 1), std::span(&writable, 1),
                                       /*publish=*/false);
        by_head[q][s.head] = slots.size();
        slots.push_back(s);
      }
    }
    // `now`: read once per pass over the used rings (a clock read costs ~30 ns here, a good part
    // of what the driver spends per request).
    auto post = [&](Slot& s, Clock::time_point now) {
      auto [len, capacity] = w.next(s, s.request);
      Virtqueue& vq = fe.queue(s.queue);
      vq.desc(s.head).len = len;
      vq.desc(vq.desc(s.head).next).len = capacity;
      s.posted = now;
      vq.repost(s.head);
    };
    std::vector<std::uint16_t> kicked_at(fe.queue_count());
    auto kick_all = [&] {
      for (unsigned q = 1; q <= queues(); ++q) {
        Virtqueue& vq = fe.queue(q);
        if (vq.avail_idx() != kicked_at[q] && vq.kick_needed(kicked_at[q])) vq.kick();
        kicked_at[q] = vq.avail_idx();
      }
    };

    std::vector<std::chrono::nanoseconds> lat;
    lat.reserve(1u << 20);
    std::uint64_t ops = 0;
    std::size_t in_flight = 0;
    auto start = Clock::now();
    auto end = start + std::chrono::duration<double>(args_.seconds);
    for (unsigned q = 1; q <= queues(); ++q) {
      kicked_at[q] = fe.queue(q).avail_idx();
      if (args_.driver_poll) fe.queue(q).disable_interrupts();
    }
    const std::uint64_t cpu_start = args_.backend_pid ? ProcessTreeCpuNs(args_.backend_pid) : 0;
    for (Slot& s : slots) post(s, Clock::now()), ++in_flight;
    auto last_progress = start;
    kick_all();
    bool running = true;
    std::vector<pollfd> pfds;
    for (unsigned q = 1; q <= queues(); ++q) pfds.push_back({fe.queue(q).call_fd(), POLLIN, 0});
    while (in_flight > 0) {
      auto now = Clock::now();
      if (running && now >= end) running = false;
      std::size_t reaped = 0;
      for (unsigned q = 1; q <= queues(); ++q) {
        reaped += fe.queue(q).reap([&](const UsedElem& u) {
          if (u.id >= by_head[q].size() || by_head[q][u.id] == SIZE_MAX)
            throw std::runtime_error(std::string(name) + ": backend returned an unknown chain");
          Slot& s = slots[by_head[q][u.id]];
          ops += w.done(s, u.len);
          // Posted and used within this pass (the reap goes on while entries keep coming): the
          // pass's clock read would say 0.
          lat.push_back((s.posted == now ? Clock::now() : now) - s.posted);
          --in_flight;
          // After the end, a slot still goes on to finish a multi-request op (state != 0), so
          // CREATE+UNLINK leaves no file behind.
          if (running || s.state != 0) post(s, now), ++in_flight;
        });
      }
      if (reaped > 0) {
        kick_all();
        last_progress = now;
        continue;
      }
      if (args_.driver_poll) {
        // A poll-mode driver (DPDK's virtio-user, a guest busy-polling) never sleeps: what is
        // left of the round trip is the backend's own work.
        if (now - last_progress > std::chrono::seconds(5))
          throw std::runtime_error(std::string(name) + ": no reply within 5 s");
        CpuRelax();
        continue;
      }
      // Nothing used: ask for an interrupt at the next used entry, unless one is already
      // waiting (what Linux's virtio-fs does: virtqueue_enable_cb after draining), then sleep
      // on the call eventfds.
      bool waiting = false;
      for (unsigned q = 1; q <= queues(); ++q) waiting |= fe.queue(q).arm_interrupt(0);
      if (waiting) continue;
      int r = ::poll(pfds.data(), pfds.size(), 5000);
      if (r == 0) throw std::runtime_error(std::string(name) + ": no reply within 5 s");
      if (r < 0 && errno != EINTR) throw std::runtime_error("poll: " + std::string(std::strerror(errno)));
      for (pollfd& p : pfds) {
        std::uint64_t count;
        if (p.revents & POLLIN) (void)!::read(p.fd, &count, sizeof(count));
      }
    }
    double secs = std::chrono::duration<double>(Clock::now() - start).count();
    std::string cpu_text;
    double cpu_ns_per_request = 0;
    if (args_.backend_pid != 0 && ops > 0) {
      cpu_ns_per_request = static_cast<double>(ProcessTreeCpuNs(args_.backend_pid) - cpu_start) /
                           static_cast<double>(ops * requests_per_op);
      char text[64];
      std::snprintf(text, sizeof(text), ", backend CPU %.0f ns/request", cpu_ns_per_request);
      cpu_text = text;
    }
    for (Slot& s : slots) fe.queue(s.queue).release_chain(s.head);
    mem.release(mark);
    std::printf("%-14s %10llu ops %12.0f ops/s p50 %.1f p99 %.1f us/%s (depth %u x %u queues%s)\n",
                name, static_cast<unsigned long long>(ops), ops / secs, Percentile(lat, 50),
                Percentile(lat, 99), unit, args_.depth, queues(), cpu_text.c_str());
    Tsv(args_, name, ops / secs, lat);
    if (args_.tsv && !cpu_text.empty()) std::printf("CPU\t%s\t%.0f\n", name, cpu_ns_per_request);
    std::fflush(stdout);
  }

  // A workload that sends the same request each time (fresh unique; `patch` may change the
  // body) and expects a reply without error.
  Workload Repeat(const char* name, const FuseRequest& tmpl,
                  std::function<void(std::uint8_t* body)> patch = {}) {
    auto bytes = std::make_shared<std::vector<std::uint8_t>>(tmpl.bytes);
    std::uint32_t capacity = tmpl.reply_capacity;
    return Workload{
        [this, bytes, capacity, patch](Slot&, std::uint8_t* req) {
          std::memcpy(req, bytes->data(), bytes->size());
          SetUnique(req);
          if (patch) patch(req + sizeof(fuse_in_header));
          return std::pair{static_cast<std::uint32_t>(bytes->size()), capacity};
        },
        [name](Slot& s, std::uint32_t used) { return CheckReply(name, s, used); }};
  }

  // Gives the request in `req` a fresh unique.
  void SetUnique(std::uint8_t* req) {
    std::uint64_t unique = next_unique_++;
    std::memcpy(req + offsetof(fuse_in_header, unique), &unique, sizeof(unique));
  }

  // The reply in the slot is well formed and not an error (throws otherwise); one op.
  static unsigned CheckReply(const char* name, Slot& s, std::uint32_t used) {
    fuse_out_header h;
    std::memcpy(&h, s.reply, sizeof(h));
    std::uint64_t unique;
    std::memcpy(&unique, s.request + offsetof(fuse_in_header, unique), sizeof(unique));
    if (used < sizeof(h) || h.len != used || h.unique != unique || h.error != 0)
      throw std::runtime_error(std::string(name) + " failed: error " + std::to_string(h.error) +
                               ", used_len " + std::to_string(used));
    return 1;
  }

 private:
  FuseClient& c_;
  const Args& args_;
  std::uint64_t next_unique_ = std::uint64_t{1} << 40;  // apart from FuseClient's
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

  bench.Row("LOOKUP", bench.Repeat("LOOKUP", c.lookup_request(dir, "file")));
  bench.Row("GETATTR", bench.Repeat("GETATTR", c.getattr_request(file.entry.nodeid)));
  fuse_read_in readdir_in{};
  readdir_in.fh = od->fh;
  readdir_in.size = 64 * 1024;
  FuseRequest readdir = c.make(FUSE_READDIRPLUS, list, {Bytes(readdir_in)},
                               sizeof(fuse_out_header) + readdir_in.size);
  {  // how many entries one 64 KiB READDIRPLUS holds (what --floor --readdir-entries wants)
    FuseReply r = c.send(readdir);
    Check(r, "READDIRPLUS");
    std::size_t n = FuseClient::parse_direntplus(r.body()).size();
    std::printf("READDIRPLUS: %zu entries per 64 KiB reply (directory of %u)\n", n, args.dir_entries);
    if (args.tsv) std::printf("ENTRIES\t%zu\n", n);
  }
  bench.Row("READDIRPLUS", bench.Repeat("READDIRPLUS", readdir));
  // READ and WRITE go to a random 4 KiB block each time (fuse_read_in and fuse_write_in both
  // start with fh, then offset).
  auto random_offset = [&](std::uint8_t* body) {
    std::uint64_t off = random_block();
    std::memcpy(body + offsetof(fuse_read_in, offset), &off, sizeof(off));
  };
  static_assert(offsetof(fuse_read_in, offset) == offsetof(fuse_write_in, offset));
  bench.Row("READ 4K", bench.Repeat("READ 4K", c.read_request(file.entry.nodeid, file.open.fh, 0, 4096),
                                    random_offset));
  bench.Row("WRITE 4K", bench.Repeat("WRITE 4K", c.write_request(file.entry.nodeid, file.open.fh, 0, block),
                                     random_offset));

  // CREATE+UNLINK: each slot cycles CREATE -> RELEASE -> UNLINK of a fresh name, then FORGETs the
  // node on the hiprio queue (the guest kernel's sequence; --no-forget leaves that out). One op is
  // one whole cycle; the latencies are per request.
  {
    struct Cycle {
      std::string name;
      std::uint64_t nodeid = 0, fh = 0;
    };
    std::vector<Cycle> cycles(args.depth * bench.queues());
    std::uint64_t n = 0;
    // One FORGET chain per slot on the hiprio queue, posted again once the backend has used it.
    Virtqueue& hiprio = c.frontend().queue(0);
    GuestMemory& mem = c.frontend().memory();
    std::size_t mark = mem.mark();
    struct Forget {
      std::uint16_t head = 0;
      std::uint8_t* request = nullptr;
      bool in_flight = false;
    };
    std::vector<Forget> forgets(cycles.size());
    std::vector<std::size_t> forget_by_head(hiprio.size(), SIZE_MAX);
    constexpr std::uint32_t kForgetBytes = sizeof(fuse_in_header) + sizeof(fuse_forget_in);
    for (std::size_t i = 0; i < forgets.size(); ++i) {
      std::uint64_t gpa = mem.alloc(kForgetBytes);
      forgets[i].request = mem.ptr(gpa, kForgetBytes);
      Buffer readable{gpa, kForgetBytes};
      forgets[i].head = hiprio.add_chain(std::span(&readable, 1), {}, /*publish=*/false);
      forget_by_head[forgets[i].head] = i;
    }
    auto reap_forgets = [&] {
      hiprio.reap([&](const UsedElem& u) {
        if (u.id < forget_by_head.size() && forget_by_head[u.id] != SIZE_MAX)
          forgets[forget_by_head[u.id]].in_flight = false;
      });
    };
    auto wait_forget = [&](Forget& f) {
      for (auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5); f.in_flight;) {
        reap_forgets();
        if (f.in_flight && std::chrono::steady_clock::now() > deadline)
          throw std::runtime_error("FORGET not used by the backend within 5 s");
      }
    };
    auto send_forget = [&](std::size_t i, std::uint64_t nodeid) {
      Forget& f = forgets[i];
      wait_forget(f);
      FuseRequest r = c.make(FUSE_FORGET, nodeid, {Bytes(fuse_forget_in{1})}, 0, 0);
      std::memcpy(f.request, r.bytes.data(), r.bytes.size());
      f.in_flight = true;
      std::uint16_t old = hiprio.avail_idx();
      hiprio.repost(f.head);
      if (hiprio.kick_needed(old)) hiprio.kick();
    };
    Bench::Workload cycle{
        [&](Bench::Slot& s, std::uint8_t* req) {
          Cycle& cy = cycles[s.index];
          FuseRequest r;
          switch (s.state) {
            case 0: {
              cy.name = "cu-" + std::to_string(n++);
              fuse_create_in in{};
              in.flags = O_RDWR | O_CREAT | O_EXCL;
              in.mode = S_IFREG | 0644;
              in.umask = 022;
              r = c.make(FUSE_CREATE, dir, {Bytes(in), CName(cy.name)}, 4096);
              break;
            }
            case 1: {
              fuse_release_in rel{};
              rel.fh = cy.fh;
              r = c.make(FUSE_RELEASE, cy.nodeid, {Bytes(rel)}, 4096);
              break;
            }
            default:
              r = c.make(FUSE_UNLINK, dir, {CName(cy.name)}, 4096);
              break;
          }
          std::memcpy(req, r.bytes.data(), r.bytes.size());
          return std::pair{static_cast<std::uint32_t>(r.bytes.size()), r.reply_capacity};
        },
        [&](Bench::Slot& s, std::uint32_t used) -> unsigned {
          static const char* const kStep[] = {"CREATE", "RELEASE", "UNLINK"};
          Bench::CheckReply(kStep[s.state], s, used);
          Cycle& cy = cycles[s.index];
          if (s.state == 0) {
            fuse_entry_out e;
            fuse_open_out o;
            std::memcpy(&e, s.reply + sizeof(fuse_out_header), sizeof(e));
            std::memcpy(&o, s.reply + sizeof(fuse_out_header) + sizeof(e), sizeof(o));
            cy.nodeid = e.nodeid;
            cy.fh = o.fh;
          }
          if (s.state < 2) {
            ++s.state;
            return 0;
          }
          // The guest kernel forgets an unlinked inode once its last reference goes; without this
          // the backend would keep an O_PATH fd to every unlinked file (on ext4 each one sits on
          // the orphan list, and creates in the same file system then take ~1 ms).
          if (!args.no_forget) send_forget(s.index, cy.nodeid);
          s.state = 0;
          return 1;
        }};
    bench.Row("CREATE+UNLINK", cycle, "request", args.no_forget ? 3 : 4);
    for (Forget& f : forgets) {
      wait_forget(f);
      hiprio.release_chain(f.head);
    }
    mem.release(mark);
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
