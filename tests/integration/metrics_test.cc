// svfsd's /metrics on a real mount: scraped over --metrics-socket and --metrics-address as
// Prometheus would, parsed by prometheus_client, and checked against what the test did; hostile
// clients (garbage, an endless header, silence) do not stop it serving.
#include <sys/socket.h>
#include <sys/un.h>

#include "svfsd_fixture.h"
#include "tests/support/metrics_scrape.h"

namespace svfs_it {
namespace {

constexpr const char* kGet = "GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n";

class MetricsTest : public SvfsdFixture {
 protected:
  DaemonOptions Options() override {
    port_ = svfs_test::FreeTcpPort();
    socket_ = base_ + "/metrics.sock";
    DaemonOptions opt;
    opt.extra_args = {"--metrics-socket", socket_, "--metrics-address",
                      "127.0.0.1:" + std::to_string(port_)};
    return opt;
  }

  std::map<std::string, double> Scrape(bool tcp) {
    auto response = tcp ? svfs_test::HttpExchange(port_, kGet)
                        : svfs_test::HttpExchange(socket_, kGet);
    EXPECT_TRUE(response) << "cannot connect to " << (tcp ? "the TCP port" : socket_);
    std::string error;
    auto samples = svfs_test::ParseMetrics(response.value_or(""), &error);
    EXPECT_TRUE(samples) << error;
    return samples.value_or(std::map<std::string, double>{});
  }

  static double Get(const std::map<std::string, double>& samples, const std::string& key) {
    auto it = samples.find(key);
    return it == samples.end() ? 0 : it->second;
  }

  uint16_t port_ = 0;
  std::string socket_;
};

TEST_F(MetricsTest, CountsWhatTheMountDidOnBothListeners) {
  if (NoDaemonMode()) GTEST_SKIP();
  const auto before = Scrape(/*tcp=*/true);
  // 20 names that do not exist: each stat is at least one LOOKUP (a negative entry, no error).
  for (int i = 0; i < 20; ++i) {
    struct stat st {};
    ASSERT_NE(::stat((mount_ + "/missing-" + std::to_string(i)).c_str(), &st), 0);
  }
  ASSERT_EQ(WriteFile(mount_ + "/kept", "data"), 0);
  const auto after = Scrape(/*tcp=*/false);

  const std::string lookup = "svfsd_requests_total{opcode=\"LOOKUP\"}";
  const std::string lookup_errors = "svfsd_request_errors_total{opcode=\"LOOKUP\"}";
  EXPECT_GE(Get(after, lookup) - Get(before, lookup), 20);
  EXPECT_TRUE(after.contains(lookup_errors));
  EXPECT_LE(Get(after, lookup_errors), Get(after, lookup));
  EXPECT_GE(Get(after, "svfsd_requests_total{opcode=\"CREATE\"}"), 1);
  // Every request is timed once: each opcode's histogram counts exactly its requests, and the
  // +Inf bucket holds them all.
  for (const char* op : {"LOOKUP", "CREATE", "INIT"}) {
    const std::string label = std::string("opcode=\"") + op + "\"";
    const double requests = Get(after, "svfsd_requests_total{" + label + "}");
    EXPECT_GT(requests, 0) << op;
    EXPECT_EQ(Get(after, "svfsd_request_duration_seconds_count{" + label + "}"), requests) << op;
    EXPECT_EQ(Get(after, "svfsd_request_duration_seconds_bucket{le=\"+Inf\"," + label + "}"),
              requests)
        << op;
    EXPECT_GT(Get(after, "svfsd_request_duration_seconds_sum{" + label + "}"), 0) << op;
  }
  // The created file is an inode the kernel holds (with its O_PATH fd), besides the root.
  EXPECT_GE(Get(after, "svfsd_inodes"), 2);
  EXPECT_GE(Get(after, "svfsd_inode_fds"), 2);
  EXPECT_TRUE(after.contains("svfsd_open_handles"));
  EXPECT_FALSE(after.contains("svfsd_version_bumps_total"));  // not in --cache shared
}

TEST_F(MetricsTest, OtherPathsAndMethodsGetErrorStatuses) {
  if (NoDaemonMode()) GTEST_SKIP();
  auto status = [&](const std::string& request) {
    auto response = svfs_test::HttpExchange(socket_, request).value_or("");
    return response.substr(0, response.find("\r\n"));
  };
  EXPECT_EQ(status("GET / HTTP/1.0\r\n\r\n"), "HTTP/1.0 404 Not Found");
  EXPECT_EQ(status("POST /metrics HTTP/1.0\r\n\r\n"), "HTTP/1.0 405 Method Not Allowed");
  EXPECT_EQ(status("\x16\x03\x01 hello garbage\r\n\r\n"), "HTTP/1.0 400 Bad Request");
  EXPECT_EQ(status("GET /metrics?x=1 HTTP/1.0\r\n\r\n"), "HTTP/1.0 200 OK");
}

int ConnectUnix(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path.c_str());
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Whether the server closed `fd` within `seconds` (reading and discarding what it sends).
bool ClosedWithin(int fd, int seconds) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  while (std::chrono::steady_clock::now() < until) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 100) == 1) {
      char buffer[4096];
      ssize_t n = ::read(fd, buffer, sizeof(buffer));
      if (n <= 0) return true;
    }
  }
  return false;
}

TEST_F(MetricsTest, HostileClientsAreClosedAndScrapesGoOn) {
  if (NoDaemonMode()) GTEST_SKIP();
  // Silent clients, more than the server keeps open at once: a scrape on the same socket is
  // served while they still hold their connections (the longest waiting make room).
  std::vector<Fd> silent;
  for (int i = 0; i < 20; ++i) silent.emplace_back(ConnectUnix(socket_));
  EXPECT_GE(Get(Scrape(/*tcp=*/false), "svfsd_requests_total{opcode=\"INIT\"}"), 1)
      << "a scrape behind 20 silent clients was not served";
  // An endless header: refused once it passes the bound.
  Fd endless(ConnectUnix(socket_));
  ASSERT_GE(endless.get(), 0);
  std::string header = "GET /metrics HTTP/1.1\r\nX-Long: ";
  header.append(16384, 'a');
  ::send(endless.get(), header.data(), header.size(), MSG_NOSIGNAL);
  // Garbage without an end of head.
  Fd garbage(ConnectUnix(socket_));
  const char junk[] = "\x00\xff\xfe garbage";
  ::send(garbage.get(), junk, sizeof(junk), MSG_NOSIGNAL);

  // The file system is served meanwhile.
  ASSERT_EQ(WriteFile(mount_ + "/during", "x"), 0);
  EXPECT_TRUE(ClosedWithin(endless.get(), 10)) << "the endless header was not cut off";
  EXPECT_TRUE(ClosedWithin(garbage.get(), 10)) << "the garbage client was not closed";
  for (Fd& fd : silent) EXPECT_TRUE(ClosedWithin(fd.get(), 12)) << "a silent client stayed";
  const auto samples = Scrape(/*tcp=*/true);
  EXPECT_GE(Get(samples, "svfsd_requests_total{opcode=\"CREATE\"}"), 1);
  EXPECT_EQ(::kill(daemon_.pid(), 0), 0);
}

}  // namespace
}  // namespace svfs_it
