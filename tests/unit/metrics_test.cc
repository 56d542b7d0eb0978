// The /metrics pieces on their own: address parsing, the HTTP answer to request bytes, the text
// format (label escaping, histogram buckets), the request counters' labels, and the server on a
// real UNIX socket (stale and live socket files, silent clients, removal at exit).
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "common/metrics_server.h"
#include "common/metrics_text.h"
#include "common/unique_fd.h"
#include "daemon/fuse/stats.h"

namespace svfs::metrics {
namespace {

std::string Body(const std::string& response) {
  const size_t at = response.find("\r\n\r\n");
  return at == std::string::npos ? std::string() : response.substr(at + 4);
}

std::string StatusLine(const std::string& response) {
  return response.substr(0, response.find("\r\n"));
}

TEST(ParseTcpAddressTest, TakesNumericIpv4AndBracketedIpv6) {
  auto v4 = ParseTcpAddress("127.0.0.1:9100");
  ASSERT_TRUE(v4) << v4.error();
  const auto* in4 = reinterpret_cast<const sockaddr_in*>(&v4->storage);
  EXPECT_EQ(in4->sin_family, AF_INET);
  EXPECT_EQ(ntohs(in4->sin_port), 9100);
  EXPECT_EQ(ntohl(in4->sin_addr.s_addr), INADDR_LOOPBACK);
  EXPECT_EQ(v4->length, sizeof(sockaddr_in));

  auto v6 = ParseTcpAddress("[::1]:0");
  ASSERT_TRUE(v6) << v6.error();
  const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&v6->storage);
  EXPECT_EQ(in6->sin6_family, AF_INET6);
  EXPECT_EQ(ntohs(in6->sin6_port), 0);
  EXPECT_EQ(v6->length, sizeof(sockaddr_in6));
}

TEST(ParseTcpAddressTest, RefusesNamesBadPortsAndMissingParts) {
  for (const char* text : {"localhost:9100", "127.0.0.1", "127.0.0.1:", ":9100",
                           "127.0.0.1:65536", "127.0.0.1:-1", "127.0.0.1:91x", "::1:9100",
                           "[::1]", "[not-an-address]:1", "256.0.0.1:80"}) {
    auto parsed = ParseTcpAddress(text);
    EXPECT_FALSE(parsed) << text;
    if (!parsed) {
      EXPECT_NE(parsed.error().find("numeric"), std::string::npos) << parsed.error();
    }
  }
}

TEST(RespondTest, AnswersGetMetricsWithTheRenderedBodyAndItsLength) {
  const auto render = [] { return std::string("up 1\n"); };
  const std::string response = Respond("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", render);
  EXPECT_EQ(StatusLine(response), "HTTP/1.0 200 OK");
  EXPECT_NE(response.find("Content-Length: 5\r\n"), std::string::npos) << response;
  EXPECT_NE(response.find("Content-Type: text/plain; version=0.0.4"), std::string::npos);
  EXPECT_EQ(Body(response), "up 1\n");
  // A query string is ignored; a bare-LF head (netcat, printf) is accepted.
  EXPECT_EQ(StatusLine(Respond("GET /metrics?x=1 HTTP/1.0\r\n\r\n", render)), "HTTP/1.0 200 OK");
  EXPECT_EQ(StatusLine(Respond("GET /metrics HTTP/1.0\n\n", render)), "HTTP/1.0 200 OK");
}

TEST(RespondTest, WaitsForTheWholeHead) {
  int rendered = 0;
  const auto render = [&] { ++rendered; return std::string(); };
  EXPECT_EQ(Respond("GET /metrics HTTP/1.1\r\nHost: x\r\n", render), "");
  EXPECT_EQ(Respond("GET /met", render), "");
  EXPECT_EQ(rendered, 0);
}

TEST(RespondTest, RefusesOtherMethodsPathsAndGarbage) {
  int rendered = 0;
  const auto render = [&] { ++rendered; return std::string("x 1\n"); };
  EXPECT_EQ(StatusLine(Respond("POST /metrics HTTP/1.1\r\n\r\n", render)),
            "HTTP/1.0 405 Method Not Allowed");
  EXPECT_EQ(StatusLine(Respond("GET / HTTP/1.1\r\n\r\n", render)), "HTTP/1.0 404 Not Found");
  EXPECT_EQ(StatusLine(Respond("GET /metricsx HTTP/1.1\r\n\r\n", render)), "HTTP/1.0 404 Not Found");
  EXPECT_EQ(StatusLine(Respond("GET /metrics\r\n\r\n", render)), "HTTP/1.0 400 Bad Request");
  EXPECT_EQ(StatusLine(Respond(std::string("\0\xff junk\r\n\r\n", 11), render)),
            "HTTP/1.0 400 Bad Request");
  EXPECT_EQ(StatusLine(Respond("GET /metrics SPDY/3\r\n\r\n", render)), "HTTP/1.0 400 Bad Request");
  EXPECT_EQ(StatusLine(Respond("GET /metrics HTTP/1.1\r\nX: " + std::string(kMaxRequestBytes, 'a'),
                               render)),
            "HTTP/1.0 431 Request Header Fields Too Large");
  EXPECT_EQ(rendered, 0) << "an error answer rendered the metrics";
}

TEST(ExpositionTest, EscapesLabelValues) {
  Exposition out;
  out.family("x_total", Exposition::Type::kCounter, "Things.");
  out.sample("x_total", 3, "path", "a\\b\"c\nd");
  out.sample("y", 7);
  EXPECT_EQ(out.text(),
            "# HELP x_total Things.\n# TYPE x_total counter\n"
            "x_total{path=\"a\\\\b\\\"c\\nd\"} 3\n"
            "y 7\n");
}

TEST(Log2HistogramTest, BucketsHoldWhatIsBelowTheirBound) {
  Log2Histogram histogram;
  histogram.observe(0);
  histogram.observe(1023);           // below 1.024 µs: bucket 0
  histogram.observe(1024);           // bucket 1 (below 2.048 µs)
  histogram.observe(uint64_t{1} << 40);  // beyond the last finite bound: +Inf
  const auto snapshot = histogram.snapshot();
  EXPECT_EQ(snapshot.buckets[0], 2u);
  EXPECT_EQ(snapshot.buckets[1], 1u);
  EXPECT_EQ(snapshot.buckets[Log2Histogram::kBuckets], 1u);
  EXPECT_EQ(snapshot.count, 4u);
  EXPECT_EQ(snapshot.sum_ns, 1023u + 1024u + (uint64_t{1} << 40));
}

TEST(ExpositionTest, HistogramBucketsAreCumulativeWithExactDistinctBounds) {
  Log2Histogram histogram;
  histogram.observe(1500);     // bucket 1
  histogram.observe(3000);     // bucket 2
  histogram.observe(3000);
  histogram.observe(uint64_t{1} << 40);
  Exposition out;
  out.histogram("lat_seconds", histogram.snapshot(), "opcode", "LOOKUP");
  std::istringstream lines(out.text());
  std::string line;
  std::set<std::string> bounds;
  std::vector<uint64_t> cumulative;
  int finite = 0;
  while (std::getline(lines, line)) {
    if (!line.starts_with("lat_seconds_bucket{opcode=\"LOOKUP\",le=\"")) continue;
    const size_t start = line.find("le=\"") + 4;
    const std::string le = line.substr(start, line.find('"', start) - start);
    bounds.insert(le);
    cumulative.push_back(std::stoull(line.substr(line.rfind(' ') + 1)));
    if (le != "+Inf") {
      // Each bound is exactly 2^(10+k) ns in seconds, not a rounded neighbour.
      const double expected = std::ldexp(1.0, Log2Histogram::kFirstShift + finite) / 1e9;
      EXPECT_EQ(std::strtod(le.c_str(), nullptr), expected) << le;
      ++finite;
    }
  }
  EXPECT_EQ(finite, Log2Histogram::kBuckets);
  EXPECT_EQ(bounds.size(), static_cast<size_t>(Log2Histogram::kBuckets + 1));
  ASSERT_EQ(cumulative.size(), static_cast<size_t>(Log2Histogram::kBuckets + 1));
  EXPECT_EQ(cumulative[0], 0u);
  EXPECT_EQ(cumulative[1], 1u);
  EXPECT_EQ(cumulative[2], 3u);
  EXPECT_EQ(cumulative[Log2Histogram::kBuckets - 1], 3u);
  EXPECT_EQ(cumulative.back(), 4u);
  EXPECT_NE(out.text().find("lat_seconds_count{opcode=\"LOOKUP\"} 4\n"), std::string::npos);
  EXPECT_NE(out.text().find("lat_seconds_sum{opcode=\"LOOKUP\"} 1099.511635276\n"),
            std::string::npos)
      << out.text();
}

TEST(RequestStatsMetricsTest, EveryOpcodeSlotHasItsOwnLabel) {
  fuse::RequestStats stats;
  stats.count(FUSE_LOOKUP, false, 100);
  stats.count(60, true, 100);     // below the array's end, no name
  stats.count(63, false, 100);    // the last slot...
  stats.count(4096, false, 100);  // ...which everything beyond the array shares (CUSE_INIT)
  Exposition out;
  stats.write_metrics(out);
  const std::string& text = out.text();
  EXPECT_NE(text.find("svfsd_requests_total{opcode=\"LOOKUP\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("svfsd_requests_total{opcode=\"OP_60\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("svfsd_request_errors_total{opcode=\"OP_60\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("svfsd_requests_total{opcode=\"OTHER\"} 2\n"), std::string::npos) << text;
  // No two samples of one family share their labels.
  std::istringstream lines(text);
  std::string line;
  std::set<std::string> series;
  while (std::getline(lines, line)) {
    if (line.starts_with("#")) continue;
    EXPECT_TRUE(series.insert(line.substr(0, line.rfind(' '))).second) << "duplicate: " << line;
  }
}

// The server on a real UNIX socket in a fresh directory.
class MetricsServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/svfs-metrics-test.XXXXXX";
    ASSERT_NE(::mkdtemp(dir), nullptr);
    dir_ = dir;
    path_ = dir_ + "/metrics.sock";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::expected<std::unique_ptr<MetricsServer>, std::string> Listen() {
    return MetricsServer::Listen({.program = "test", .socket_path = path_, .address = {}});
  }

  UniqueFd Connect() const {
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    path_.copy(addr.sun_path, sizeof(addr.sun_path) - 1);
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) return {};
    return fd;
  }

  // GET /metrics on a new connection; what came back before the server closed (10 s at most).
  std::string Scrape() const {
    UniqueFd fd = Connect();
    if (!fd) return "connect failed";
    const std::string request = "GET /metrics HTTP/1.0\r\n\r\n";
    ::send(fd.get(), request.data(), request.size(), MSG_NOSIGNAL);
    const timeval timeout{.tv_sec = 10, .tv_usec = 0};
    ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    std::string out;
    char buffer[4096];
    ssize_t n;
    while ((n = ::read(fd.get(), buffer, sizeof(buffer))) > 0) out.append(buffer, n);
    return n < 0 ? "timed out after: " + out : out;
  }

  std::string dir_;
  std::string path_;
};

TEST_F(MetricsServerTest, ServesScrapesAndRemovesItsSocketAtExit) {
  auto server = Listen();
  ASSERT_TRUE(server) << server.error();
  struct stat st {};
  ASSERT_EQ(::stat(path_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ((*server)->addresses(), std::vector<std::string>{"unix:" + path_});
  (*server)->start([] { return std::string("up 1\n"); });
  EXPECT_EQ(Body(Scrape()), "up 1\n");
  server->reset();
  EXPECT_NE(::access(path_.c_str(), F_OK), 0) << "the socket file outlived its server";
}

TEST_F(MetricsServerTest, ReplacesAStaleSocketButNotALiveOneOrAFile) {
  {
    auto first = Listen();
    ASSERT_TRUE(first) << first.error();
    // A live one (listening, even if not started): refused, and left in place.
    auto second = Listen();
    ASSERT_FALSE(second);
    EXPECT_NE(second.error().find("another process serves this socket"), std::string::npos)
        << second.error();
    EXPECT_EQ(::access(path_.c_str(), F_OK), 0);
  }
  // A stale one (bound, nobody listening) is replaced.
  {
    UniqueFd stale(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    path_.copy(addr.sun_path, sizeof(addr.sun_path) - 1);
    ASSERT_EQ(::bind(stale.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  }
  auto replacing = Listen();
  ASSERT_TRUE(replacing) << replacing.error();
  (*replacing)->start([] { return std::string("up 1\n"); });
  EXPECT_EQ(Body(Scrape()), "up 1\n");
  replacing->reset();
  // Any other file is someone's: refused, untouched.
  { std::ofstream(path_) << "data"; }
  auto onto_file = Listen();
  ASSERT_FALSE(onto_file);
  EXPECT_NE(onto_file.error().find("is not a socket"), std::string::npos) << onto_file.error();
  EXPECT_EQ(std::filesystem::file_size(path_), 4u);
}

TEST_F(MetricsServerTest, SilentClientsMakeRoomForAScrape) {
  auto server = Listen();
  ASSERT_TRUE(server) << server.error();
  (*server)->start([] { return std::string("up 1\n"); });
  std::vector<UniqueFd> silent;
  for (size_t i = 0; i < kMaxConnections + 4; ++i) silent.push_back(Connect());
  for (const UniqueFd& fd : silent) ASSERT_TRUE(fd);
  // Served while every silent client still holds its connection open.
  EXPECT_EQ(Body(Scrape()), "up 1\n");
  // Each silent client is closed by the server within its request timeout.
  for (UniqueFd& fd : silent) {
    pollfd p{fd.get(), POLLIN, 0};
    ASSERT_EQ(::poll(&p, 1, 5000), 1) << "a silent client was not closed";
    char byte;
    EXPECT_EQ(::read(fd.get(), &byte, 1), 0);
  }
}

TEST_F(MetricsServerTest, AClientThatKeepsSendingStillGetsTheWholeAnswerOverTcp) {
  auto server = MetricsServer::Listen({.program = "test", .socket_path = {},
                                       .address = "127.0.0.1:0"});
  ASSERT_TRUE(server) << server.error();
  const std::string shown = (*server)->addresses().at(0);
  ASSERT_TRUE(shown.starts_with("127.0.0.1:")) << shown;
  const int port = std::stoi(shown.substr(shown.rfind(':') + 1));
  ASSERT_GT(port, 0) << "port 0 should show the port bound";
  const std::string body(300000, 'x');
  (*server)->start([&] { return body; });
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  // The request and much more after it, left unread by the server once it answers: closing
  // with unread input would send a reset, and the client could lose the end of the answer.
  const std::string request = "GET /metrics HTTP/1.0\r\n\r\n" + std::string(60000, 'y');
  ASSERT_EQ(::send(fd.get(), request.data(), request.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(request.size()));
  const timeval timeout{.tv_sec = 10, .tv_usec = 0};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  // Read slowly at first, so the server is done writing before the client has everything.
  ::usleep(300'000);
  std::string out;
  char buffer[4096];
  ssize_t n;
  while ((n = ::read(fd.get(), buffer, sizeof(buffer))) > 0) out.append(buffer, n);
  EXPECT_EQ(n, 0) << "the connection ended with an error: " << std::strerror(errno);
  EXPECT_EQ(Body(out).size(), body.size());
}

}  // namespace
}  // namespace svfs::metrics
