// What a large cached tree costs svfsd: N inodes looked up (and kept: the guest never forgets
// them) through our vhost-user frontend, no guest kernel.
//   svfs_inode_scale_bench --socket PATH --tree DIR --pid PID [--inodes N]
// DIR is svfsd's --shared-dir (the files are made there directly, on the host, which is much
// faster than through FUSE), PID svfsd's pid (its /proc entries are read). Prints the lookup cost
// of a new inode and of a cached one, and svfsd's descriptors and private memory per inode.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "tests/vhost/frontend.h"
#include "tests/vhost/fuse_client.h"

namespace svfs::vhost {
namespace {

using Clock = std::chrono::steady_clock;

struct Args {
  std::string socket, tree;
  long pid = 0;  // the serving process (svfsd's child under its default namespace sandbox)
  unsigned inodes = 100000;
};

[[noreturn]] void Usage() {
  std::fprintf(stderr, "usage: svfs_inode_scale_bench --socket PATH --tree DIR --pid PID [--inodes N]\n");
  std::exit(2);
}

size_t OpenFds(long pid) {
  size_t n = 0;
  for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd")) ++n;
  return n;
}

// RssAnon of `pid` in bytes: its private memory. (VmRSS also counts the pages of the shared
// version table each new inode's slot touches, memory that is the table's, not the inode's.)
size_t ResidentBytes(long pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("RssAnon:", 0) == 0) return std::stoull(line.substr(8)) * 1024;
  }
  throw std::runtime_error("no RssAnon for pid " + std::to_string(pid));
}

// LOOKUPs every name under `dir`, 64 in flight at a time; returns ns per lookup.
double LookupAll(FuseClient& c, std::uint64_t dir, unsigned n, const char* pass) {
  constexpr unsigned kBatch = 64;
  auto start = Clock::now();
  for (unsigned first = 0; first < n; first += kBatch) {
    std::vector<FuseRequest> batch;
    for (unsigned i = first; i < std::min(n, first + kBatch); ++i) {
      batch.push_back(c.lookup_request(dir, "f" + std::to_string(i)));
    }
    for (const FuseReply& r : c.transact(batch)) {
      if (r.error() != 0) throw std::runtime_error(std::string(pass) + ": LOOKUP failed: " + std::to_string(r.error()));
    }
    if ((first / kBatch) % 2048 == 0 && first > 0) std::fprintf(stderr, "  %s: %u/%u\n", pass, first, n);
  }
  return std::chrono::duration<double, std::nano>(Clock::now() - start).count() / n;
}

int Run(const Args& a) {
  const std::string dir_name = "svfs-inodes-" + std::to_string(::getpid());
  const std::string dir = a.tree + "/" + dir_name;
  if (::mkdir(dir.c_str(), 0755) != 0) throw std::runtime_error("mkdir " + dir + ": " + std::strerror(errno));
  std::fprintf(stderr, "creating %u files in %s\n", a.inodes, dir.c_str());
  for (unsigned i = 0; i < a.inodes; ++i) {
    int fd = ::open((dir + "/f" + std::to_string(i)).c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    if (fd < 0) throw std::runtime_error("create: " + std::string(std::strerror(errno)));
    ::close(fd);
  }
  FrontendOptions opts;
  opts.memory_size = 64u << 20;
  VhostUserFrontend fe(a.socket, opts);
  FuseClient c(fe);
  if (c.init().error() != 0) throw std::runtime_error("INIT failed");
  auto entry = c.lookup(FUSE_ROOT_ID, dir_name).as<fuse_entry_out>();
  if (!entry) throw std::runtime_error("LOOKUP " + dir_name + " failed");

  const size_t fds_before = OpenFds(a.pid), rss_before = ResidentBytes(a.pid);
  const double first_ns = LookupAll(c, entry->nodeid, a.inodes, "new inodes");
  const size_t fds_after = OpenFds(a.pid), rss_after = ResidentBytes(a.pid);
  const double cached_ns = LookupAll(c, entry->nodeid, a.inodes, "cached inodes");
  std::printf("| inodes held | LOOKUP of a new inode | LOOKUP of a cached inode | fds held per inode | private bytes per inode |\n");
  std::printf("|---:|---:|---:|---:|---:|\n");
  std::printf("| %u | %.1f us | %.1f us | %.3f | %.0f |\n", a.inodes, first_ns / 1000, cached_ns / 1000,
              static_cast<double>(fds_after - fds_before) / a.inodes,
              static_cast<double>(rss_after - rss_before) / a.inodes);
  std::printf("(svfsd pid %ld: %zu -> %zu fds, %.1f -> %.1f MiB private (RssAnon); 64 LOOKUPs in flight)\n", a.pid,
              fds_before, fds_after, rss_before / 1048576.0, rss_after / 1048576.0);
  return 0;
}

}  // namespace
}  // namespace svfs::vhost

int main(int argc, char** argv) {
  svfs::vhost::Args a;
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    if (i + 1 >= argc) svfs::vhost::Usage();
    std::string v = argv[++i];
    if (k == "--socket") a.socket = v;
    else if (k == "--tree") a.tree = v;
    else if (k == "--pid") {
      a.pid = std::stol(v);
      // The serving process: a sandboxed svfsd's child (its only one).
      std::ifstream children("/proc/" + v + "/task/" + v + "/children");
      long child = 0;
      if (children >> child && child > 0) a.pid = child;
    }
    else if (k == "--inodes") a.inodes = static_cast<unsigned>(std::stoul(v));
    else svfs::vhost::Usage();
  }
  if (a.socket.empty() || a.tree.empty() || a.pid <= 0 || a.inodes == 0) svfs::vhost::Usage();
  try {
    return svfs::vhost::Run(a);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "svfs_inode_scale_bench: %s\n", e.what());
    return 1;
  }
}
