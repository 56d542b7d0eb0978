# RPC between svfsd daemons (and svfsctl) and svfs-versiond, over a UNIX stream socket with
# Cap'n Proto's two-party protocol. The bootstrap capability is `Versiond`.
#
# A daemon calls attach() once per connection and keeps the returned Session for as long as it
# serves. All references it takes through acquire() belong to that session: when the session is
# dropped (the daemon disconnects or dies), versiond releases them all.
@0x9208e6969802e66c;

$import "/capnp/c++.capnp".namespace("svfs::rpc");

# Identity of one host inode, the same in every daemon that serves it. (dev, ino) always; the file
# handle (name_to_handle_at, without AT_HANDLE_FID) and the statfs f_fsid when the filesystem
# exports handles: versiond matches fanotify's FID records against (fsid, handleType, handle).
struct InodeKey {
  dev @0 :UInt64;          # st_dev
  ino @1 :UInt64;          # st_ino
  fsid @2 :UInt64;         # statfs f_fsid as val[0] | val[1] << 32; 0 if unknown
  handleType @3 :Int32;    # file_handle.handle_type; meaningful only when handle is non-empty
  handle @4 :Data;         # file_handle.f_handle bytes; empty if the filesystem has none
}

# One acquired slot. slot == 0: none could be given (table full); reply unversioned.
struct SlotGrant {
  slot @0 :UInt64;
  version @1 :UInt64;      # the slot's version when granted
}

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
  references @4 :UInt64;         # acquire references held
  slots @5 :UInt64;              # distinct slots held
}

struct SlotInfo {
  slot @0 :UInt64;
  version @1 :UInt64;
  references @2 :UInt64;         # over all clients
  key @3 :InodeKey;
}

struct Stats {
  table @0 :TableInfo;
  slotsInUse @1 :UInt64;
  slotsFree @2 :UInt64;          # slots that can still be handed out (free list + never used)
  highWater @3 :UInt64;          # slots ever handed out since the table was created, + 1
  clients @4 :List(ClientStats);
  hottest @5 :List(SlotInfo);    # in-use slots with the highest versions, highest first
  hostBumps @6 :UInt64;          # bumps caused by fanotify events since start
  startedAtNs @7 :UInt64;        # CLOCK_REALTIME when this versiond started
}

interface Session {
  # Takes one reference per key (repeats allowed) and returns its slot, in the order given. The
  # same key always maps to the same slot while any client holds a reference to it.
  acquire @0 (keys :List(InodeKey)) -> (grants :List(SlotGrant));
  # Drops one reference per listed slot. Slots this session holds no reference to are ignored.
  release @1 (slots :List(UInt64)) -> ();
}

interface Versiond {
  attach @0 (client :ClientInfo) -> (session :Session, table :TableInfo);
  stats @1 (hottest :UInt32) -> (stats :Stats);
  # The key behind a slot; found = false if the slot is not in use.
  slot @2 (slot :UInt64) -> (found :Bool, info :SlotInfo);
}
