// Federation of svfs-versiond instances over NATS JetStream: the versionds of the hosts that
// mount one shared volume (NFS, CephFS) tell each other which inodes changed, so that each bumps
// the slots its own guests use. Stream svfs-<volume>, subject svfs.<volume>.bumps.
//
// An inode is named on the wire by its file handle (type and bytes) alone: on a shared
// filesystem that is what all hosts agree on, while the fsid differs per host. Each receiver
// computes the slot with its own fsid for the volume and its own table size, as its svfsd do.
//
// Safety over speed: whatever may have been lost (a sequence gap, a reconnect, a full queue, a
// malformed message) becomes "every slot changed" for whoever may have missed it.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/result.h"
#include "shm/version_table.h"

namespace svfs::versiond {

// One federated volume: its name on every host, and its filesystem on this one.
struct FederatedVolume {
  std::string name;   // [A-Za-z0-9_-]+
  uint64_t fsid = 0;  // PackFsid of the volume's filesystem on this host
};

struct FederationOptions {
  std::vector<std::string> servers;      // nats://HOST:PORT each
  std::vector<FederatedVolume> volumes;  // at least one
  int replicas = 1;                      // of each stream this versiond creates (<= cluster size)
  // Passed to the NATS client as given (empty: not used). A user and password or a token go in
  // the server URLs (nats://USER:PASS@HOST:PORT); tls:// URLs or a CA turn TLS on.
  std::string credentials_file;  // a .creds file (JWT and NKey seed), read when connecting
  std::string tls_ca_file;       // CA certificates the servers' must chain to
  std::string tls_cert_file;     // this host's client certificate chain, with
  std::string tls_key_file;      // its private key (servers that verify clients)
  // The TLS files' contents (PEM), read before the lock-down drops the capabilities that may be
  // needed to read them; the names above are for messages.
  std::string tls_ca_pem, tls_cert_pem, tls_key_pem;
};

// What svfsctl and /metrics show of one volume. Counters count from start.
struct VolumeStatus {
  std::string name;
  uint64_t fsid = 0;
  bool connected = false;           // to a NATS server, now
  uint64_t remote_bumps = 0;        // slots bumped for other hosts' changes
  uint64_t resyncs = 0;             // bumps of every slot (joining, a gap, a reconnect, ...)
  uint64_t published_handles = 0;   // changed inodes sent
  uint64_t published_messages = 0;  // JetStream messages acknowledged (batches, markers)
  uint64_t published_bytes = 0;     // their bodies
};

// `servers` for messages: a user and password or a token in a URL shown as "***".
inline std::string RedactedServers(const std::vector<std::string>& servers) {
  std::string out;
  for (const std::string& url : servers) {
    // scheme://[USER[:PASS]@|TOKEN@]HOST:PORT: what precedes the last '@' is a secret.
    const size_t scheme = url.find("://");
    const size_t start = scheme == std::string::npos ? 0 : scheme + 3;
    const size_t at = url.rfind('@');
    out += out.empty() ? "" : ",";
    out += at == std::string::npos || at < start
               ? url
               : url.substr(0, start) + "***@" + url.substr(at + 1);
  }
  return out;
}

// Whether a volume name is usable as a NATS subject token and stream name.
inline bool ValidVolumeName(const std::string& name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

class Federation {
 public:
  // Connects once per volume, creates each stream if missing, subscribes, then bumps every slot
  // of `table` once per volume (changes made before the subscription cannot be known). `table`
  // must outlive the result. Call after LockDown (the client's threads must start with
  // versiond's reduced privileges).
  static std::expected<std::unique_ptr<Federation>, std::string> Start(
      const FederationOptions& options, shm::VersionTable& table);
  virtual ~Federation() = default;

  // One changed inode on filesystem `fsid`, from the event loop: queued for every volume on that
  // filesystem (two volumes on one filesystem both get it), never waits for NATS. A full queue
  // turns into one volume-wide bump for the other hosts.
  virtual void Publish(uint64_t fsid, int32_t handle_type, std::span<const unsigned char> handle) = 0;
  // Everything on every volume may have changed (fanotify overflow).
  virtual void PublishAll() = 0;
  // For svfsctl and /metrics, from any thread.
  virtual std::vector<VolumeStatus> status() const = 0;
};

}  // namespace svfs::versiond
