// Scraping a daemon's /metrics as Prometheus would: an HTTP request on its UNIX socket or TCP
// port, and the body parsed by the real parser (python3's prometheus_client).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

namespace svfs_test {

// Sends `request` and reads until the server closes; nullopt if it cannot connect or the server
// is silent for 10 s.
std::optional<std::string> HttpExchange(const std::string& unix_path, const std::string& request);
std::optional<std::string> HttpExchange(uint16_t tcp_port, const std::string& request);
// A free TCP port on 127.0.0.1 (bound and released; good enough for a test).
uint16_t FreeTcpPort();

// The samples of a /metrics response, parsed by prometheus_client.parser, keyed
// `name{label="value",...}` (labels sorted, as the parser yields them); nullopt (and `error`
// set) if the status is not 200 or the parser refuses the body.
std::optional<std::map<std::string, double>> ParseMetrics(const std::string& response,
                                                          std::string* error);

}  // namespace svfs_test
