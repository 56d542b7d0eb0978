#include "tests/vhost/fuse_client.h"

#include <fcntl.h>
#include <unistd.h>

#include <map>
#include <stdexcept>
#include <utility>

namespace svfs::vhost {

bool FuseReply::well_formed() const {
  if (!answered || bytes.size() < sizeof(fuse_out_header) || used_len != bytes.size()) return false;
  const fuse_out_header& h = header();
  return h.len == used_len && h.unique == unique && h.error <= 0;
}

std::vector<std::uint8_t> CName(std::string_view name) {
  std::vector<std::uint8_t> v(name.begin(), name.end());
  v.push_back(0);
  return v;
}

FuseRequest FuseClient::make(std::uint32_t opcode, std::uint64_t nodeid,
                             std::initializer_list<std::span<const std::uint8_t>> body,
                             std::uint32_t reply_capacity, unsigned queue) {
  fuse_in_header h{};
  h.opcode = opcode;
  h.unique = next_unique_++;
  h.nodeid = nodeid;
  h.uid = uid_;
  h.gid = gid_;
  h.pid = pid_;
  FuseRequest r;
  r.queue = queue;
  r.reply_capacity = reply_capacity;
  r.bytes.resize(sizeof(h));
  for (auto part : body) r.bytes.insert(r.bytes.end(), part.begin(), part.end());
  h.len = static_cast<std::uint32_t>(r.bytes.size());
  std::memcpy(r.bytes.data(), &h, sizeof(h));
  return r;
}

FuseClient::Placed FuseClient::place(const FuseRequest& r, bool publish) {
  if (r.indirect && !publish) throw std::invalid_argument("place: an indirect chain is always published");
  GuestMemory& mem = fe_.memory();
  std::uint64_t req_gpa = mem.alloc(r.bytes.size());
  std::memcpy(mem.ptr(req_gpa, r.bytes.size()), r.bytes.data(), r.bytes.size());
  // Each direction is one contiguous allocation, possibly described by several descriptors, so
  // the reply can be read back from one place.
  auto split = [&](std::uint64_t gpa, std::uint32_t len) {
    std::vector<Buffer> v;
    std::uint32_t seg = r.segment == 0 ? len : r.segment;
    for (std::uint32_t off = 0; off < len; off += seg) v.push_back({gpa + off, std::min(seg, len - off)});
    return v;
  };
  std::vector<Buffer> readable = split(req_gpa, static_cast<std::uint32_t>(r.bytes.size()));
  std::vector<Buffer> writable;
  std::uint64_t reply_gpa = 0;
  if (r.reply_capacity > 0) {
    reply_gpa = mem.alloc(r.reply_capacity);
    std::memset(mem.ptr(reply_gpa, r.reply_capacity), 0, r.reply_capacity);
    writable = split(reply_gpa, r.reply_capacity);
  }
  Virtqueue& q = fe_.queue(r.queue);
  std::uint16_t head = r.indirect ? q.add_indirect_chain(readable, writable)
                                  : q.add_chain(readable, writable, publish);
  return {head, reply_gpa};
}

std::vector<FuseReply> FuseClient::transact(std::span<const FuseRequest> requests,
                                            std::optional<std::chrono::milliseconds> timeout) {
  GuestMemory& mem = fe_.memory();
  std::size_t mark = mem.mark();
  std::vector<FuseReply> replies(requests.size());
  std::vector<std::uint64_t> reply_gpa(requests.size());
  std::map<std::pair<unsigned, std::uint16_t>, std::size_t> by_head;
  std::map<unsigned, std::size_t> pending;  // queue -> chains waiting

  for (std::size_t i = 0; i < requests.size(); ++i) {
    const FuseRequest& r = requests[i];
    fuse_in_header h;
    std::memcpy(&h, r.bytes.data(), std::min(sizeof(h), r.bytes.size()));
    replies[i].unique = h.unique;
    Placed placed = place(r);
    reply_gpa[i] = placed.reply;
    by_head[{r.queue, placed.head}] = i;
    ++pending[r.queue];
  }
  for (auto& [q, n] : pending) fe_.queue(q).kick();

  auto deadline = std::chrono::steady_clock::now() + timeout.value_or(fe_.options().reply_timeout);
  bool all_answered = true;
  for (auto& [q, n] : pending) {
    while (n > 0) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      auto used = fe_.queue(q).collect(1, std::max(left, std::chrono::milliseconds(0)));
      if (used.empty()) break;
      for (const UsedElem& u : used) {
        auto it = by_head.find({q, static_cast<std::uint16_t>(u.id)});
        if (u.id > 0xffff || it == by_head.end()) continue;  // not ours (or a buggy backend)
        std::size_t i = it->second;
        by_head.erase(it);
        --n;
        FuseReply& reply = replies[i];
        reply.answered = true;
        reply.used_len = u.len;
        std::uint32_t copy = std::min(u.len, requests[i].reply_capacity);
        if (copy > 0) {
          const std::uint8_t* p = mem.ptr(reply_gpa[i], copy);
          reply.bytes.assign(p, p + copy);
        }
      }
    }
    if (n > 0) all_answered = false;
  }
  // Buffers of unanswered chains still belong to the backend, which may write them later: only
  // recycle guest memory when every chain came back.
  if (all_answered) mem.release(mark);
  return replies;
}

FuseReply FuseClient::send(const FuseRequest& request, std::optional<std::chrono::milliseconds> timeout) {
  return std::move(transact(std::span(&request, 1), timeout).front());
}

namespace {
constexpr std::uint32_t kSmallReply = 4096;
constexpr std::uint32_t kEntryReply = sizeof(fuse_out_header) + sizeof(fuse_entry_out);
}  // namespace

FuseReply FuseClient::init(std::uint32_t minor, std::uint64_t flags) {
  fuse_init_in in{};
  in.major = FUSE_KERNEL_VERSION;
  in.minor = minor;
  in.max_readahead = 128 * 1024;
  in.flags = static_cast<std::uint32_t>(flags);
  in.flags2 = static_cast<std::uint32_t>(flags >> 32);
  FuseReply r = send(make(FUSE_INIT, 0, {Bytes(in)}, kSmallReply));
  if (auto out = r.as<fuse_init_out>(); out && out->max_write > 0) max_write_ = out->max_write;
  return r;
}

FuseRequest FuseClient::lookup_request(std::uint64_t parent, std::string_view name, unsigned queue) {
  return make(FUSE_LOOKUP, parent, {CName(name)}, kEntryReply + 256, queue);
}
FuseReply FuseClient::lookup(std::uint64_t parent, std::string_view name, unsigned queue) {
  return send(lookup_request(parent, name, queue));
}

FuseRequest FuseClient::getattr_request(std::uint64_t nodeid, unsigned queue) {
  fuse_getattr_in in{};
  return make(FUSE_GETATTR, nodeid, {Bytes(in)}, sizeof(fuse_out_header) + sizeof(fuse_attr_out),
              queue);
}
FuseReply FuseClient::getattr(std::uint64_t nodeid, unsigned queue) {
  return send(getattr_request(nodeid, queue));
}

FuseReply FuseClient::opendir(std::uint64_t nodeid, unsigned queue) {
  fuse_open_in in{};
  in.flags = O_RDONLY | O_DIRECTORY;
  return send(make(FUSE_OPENDIR, nodeid, {Bytes(in)}, kSmallReply, queue));
}

FuseReply FuseClient::readdirplus(std::uint64_t nodeid, std::uint64_t fh, std::uint64_t offset,
                                  std::uint32_t size, unsigned queue) {
  fuse_read_in in{};
  in.fh = fh;
  in.offset = offset;
  in.size = size;
  return send(make(FUSE_READDIRPLUS, nodeid, {Bytes(in)}, sizeof(fuse_out_header) + size, queue));
}

FuseReply FuseClient::releasedir(std::uint64_t nodeid, std::uint64_t fh, unsigned queue) {
  fuse_release_in in{};
  in.fh = fh;
  return send(make(FUSE_RELEASEDIR, nodeid, {Bytes(in)}, kSmallReply, queue));
}

FuseReply FuseClient::create(std::uint64_t parent, std::string_view name, std::uint32_t mode,
                             std::uint32_t flags, unsigned queue) {
  fuse_create_in in{};
  in.flags = flags;
  in.mode = mode;
  in.umask = 022;
  return send(make(FUSE_CREATE, parent, {Bytes(in), CName(name)}, kEntryReply + kSmallReply, queue));
}

FuseReply FuseClient::open(std::uint64_t nodeid, std::uint32_t flags, unsigned queue) {
  fuse_open_in in{};
  in.flags = flags;
  return send(make(FUSE_OPEN, nodeid, {Bytes(in)}, kSmallReply, queue));
}

FuseRequest FuseClient::read_request(std::uint64_t nodeid, std::uint64_t fh, std::uint64_t offset,
                                     std::uint32_t size, unsigned queue) {
  fuse_read_in in{};
  in.fh = fh;
  in.offset = offset;
  in.size = size;
  return make(FUSE_READ, nodeid, {Bytes(in)}, sizeof(fuse_out_header) + size, queue);
}
FuseReply FuseClient::read(std::uint64_t nodeid, std::uint64_t fh, std::uint64_t offset,
                           std::uint32_t size, unsigned queue) {
  return send(read_request(nodeid, fh, offset, size, queue));
}

FuseRequest FuseClient::write_request(std::uint64_t nodeid, std::uint64_t fh, std::uint64_t offset,
                                      std::span<const std::uint8_t> data, unsigned queue) {
  fuse_write_in in{};
  in.fh = fh;
  in.offset = offset;
  in.size = static_cast<std::uint32_t>(data.size());
  return make(FUSE_WRITE, nodeid, {Bytes(in), data}, kSmallReply, queue);
}
FuseReply FuseClient::write(std::uint64_t nodeid, std::uint64_t fh, std::uint64_t offset,
                            std::span<const std::uint8_t> data, unsigned queue) {
  return send(write_request(nodeid, fh, offset, data, queue));
}

FuseReply FuseClient::release(std::uint64_t nodeid, std::uint64_t fh, unsigned queue) {
  fuse_release_in in{};
  in.fh = fh;
  return send(make(FUSE_RELEASE, nodeid, {Bytes(in)}, kSmallReply, queue));
}

FuseReply FuseClient::unlink(std::uint64_t parent, std::string_view name, unsigned queue) {
  return send(make(FUSE_UNLINK, parent, {CName(name)}, kSmallReply, queue));
}

FuseReply FuseClient::forget(std::uint64_t nodeid, std::uint64_t nlookup, unsigned queue) {
  fuse_forget_in in{};
  in.nlookup = nlookup;
  return send(make(FUSE_FORGET, nodeid, {Bytes(in)}, 0, queue));
}

std::vector<DirEntryPlus> FuseClient::parse_direntplus(std::span<const std::uint8_t> body) {
  std::vector<DirEntryPlus> out;
  std::size_t pos = 0;
  while (body.size() - pos >= FUSE_NAME_OFFSET_DIRENTPLUS) {
    fuse_direntplus d;
    std::memcpy(&d, body.data() + pos, sizeof(d));
    std::size_t rec = FUSE_DIRENTPLUS_SIZE(&d);
    if (d.dirent.namelen == 0 || rec > body.size() - pos)
      throw std::runtime_error("READDIRPLUS reply: malformed entry");
    const char* name = reinterpret_cast<const char*>(body.data() + pos + FUSE_NAME_OFFSET_DIRENTPLUS);
    out.push_back({d.entry_out, d.dirent.off, d.dirent.type, std::string(name, d.dirent.namelen)});
    pos += rec;
  }
  return out;
}

}  // namespace svfs::vhost
