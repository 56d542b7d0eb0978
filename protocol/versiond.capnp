# RPC between svfsd daemons (and svfsctl) and svfs-versiond, over a UNIX stream socket with
# Cap'n Proto's two-party protocol. The bootstrap capability is `Versiond`.
#
# Nothing here is on a request path. A slot is a pure function of the inode's identity
# (protocol/inode_identity.h), computed by each daemon and by versiond alike. A daemon calls
# attach() once per connection: that registers it (its pid, whose fanotify events versiond
# ignores since the daemon bumps its own changes; the directories whose filesystems versiond
# watches) for as long as the connection lasts, and ping() keeps showing it is alive.
# The file id was changed with the schema of computed slots (no acquire/release): an svfsd or
# svfsctl of the earlier schema then fails its calls cleanly (unknown interface) and serves
# unversioned, instead of misreading renumbered fields.
@0xc9e951f410ad802f;

$import "/capnp/c++.capnp".namespace("svfs::rpc");

struct TableInfo {
  name @0 :Text;           # shm object name (file /dev/shm/<name>)
  uuid @1 :Data;           # 16 bytes, as in the table header
  generation @2 :UInt64;   # as in the table header when attach was answered
  slotCount @3 :UInt64;    # including slot 0
  slotStride @4 :UInt32;
  mappedBytes @5 :UInt64;
}

struct ClientInfo {
  name @0 :Text;                 # e.g. "svfsd vm-1234" for logs and svfsctl
  pid @1 :UInt32;                # claimed pid; versiond trusts SO_PEERCRED's pid, not this
  sharedDirs @2 :List(Text);     # directories served: versiond marks their filesystems (fanotify)
}

struct ClientStats {
  id @0 :UInt64;
  name @1 :Text;
  pid @2 :UInt32;                # from SO_PEERCRED
  uid @3 :UInt32;
  sharedDirs @4 :List(Text);     # as registered
}

struct SlotInfo {
  slot @0 :UInt64;
  version @1 :UInt64;
}

struct Stats {
  table @0 :TableInfo;
  clients @1 :List(ClientStats);
  hottest @2 :List(SlotInfo);    # the slots with the highest versions, highest first
  hostBumps @3 :UInt64;          # bumps caused by fanotify events since start
  startedAtNs @4 :UInt64;        # CLOCK_REALTIME when this versiond started
  watchedFilesystems @5 :UInt64; # fanotify filesystem marks held
  federation @6 :List(FederatedVolumeStats);  # with --federation, one per --volume
}

# One federated volume (svfs-versiond --federation --volume NAME), counted from start.
struct FederatedVolumeStats {
  name @0 :Text;
  fsid @1 :UInt64;              # the volume's filesystem on this host (packed f_fsid)
  connected @2 :Bool;           # to a NATS server, now
  remoteBumps @3 :UInt64;       # slots bumped for other hosts' changes
  resyncs @4 :UInt64;           # bumps of every slot: joining, a gap, a reconnect, a marker, ...
  publishedHandles @5 :UInt64;  # changed inodes sent to the other hosts
  publishedMessages @6 :UInt64; # JetStream messages acknowledged (batches and markers)
  publishedBytes @7 :UInt64;    # their bodies
}

interface Versiond {
  # Registers the caller for the life of this connection. Fails for a second attach on one
  # connection, more than 16 directories, or when versiond already watches its limit of
  # filesystems (the daemon then serves unversioned).
  attach @0 (client :ClientInfo) -> (table :TableInfo);
  stats @1 (hottest :UInt32) -> (stats :Stats);
  # Answered at once: a daemon that gets no answer detaches (a wedged versiond sees no host edits).
  ping @2 () -> ();
}
