// Static helper for the e2e guest (busybox has no xattr or lock applets). Built by
// scripts/guest-image.sh with `gcc -static` and installed in the initramfs as /bin/svfs-guest-tool.
//   svfs-guest-tool setxattr FILE NAME VALUE | getxattr FILE NAME | listxattr FILE |
//                   removexattr FILE NAME
//   svfs-guest-tool flock FILE    exclusive flock excludes a second open file description
//   svfs-guest-tool posixlock FILE  F_SETLK write lock is seen by another process via F_GETLK
//   svfs-guest-tool mmap FILE     MAP_SHARED write + msync is visible through read()
//   svfs-guest-tool mmap-hold FILE WOFF TEXT ROFF LEN READY GO
//                   maps FILE MAP_SHARED, stores TEXT at WOFF ("-": nothing; no msync), creates
//                   READY, waits (up to 120 s) for GO to exist, then prints LEN bytes at ROFF of
//                   the same mapping ("<zeros>" if all are 0, "SIGBUS" if reading raised it). For DAX: the host sees
//                   the store while the mapping is held, and the mapping sees the host's writes.
//   svfs-guest-tool write-from-map FILE DEST
//                   maps FILE MAP_SHARED read-only and write()s the whole mapping to DEST (created
//                   or truncated) in one call, then fsyncs DEST. With DAX the buffer is the
//                   window itself: svfsd cannot reach it and asks the VMM (FS_IO).
//   svfs-guest-tool readbench FILE seq|rand COUNT
//                   reads FILE in 4 KiB preads, in order (seq: the whole file; COUNT ignored) or
//                   at COUNT page-aligned offsets from a fixed pseudo-random sequence (rand: the
//                   same offsets every run), and prints "BYTES bytes USEC us MIBS MiB/s".
//   svfs-guest-tool runas UID GID[,GROUP...] CMD [ARGS]
//                   runs CMD as UID with primary group GID and exactly the supplementary groups
//                   listed (none if only GID is given): busybox's su and chpst set no chosen list.
// Exit 0 on success; on failure prints what went wrong to stderr and exits 1.
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

static int fail(const char* what) {
  fprintf(stderr, "%s: %s\n", what, strerror(errno));
  return 1;
}

static int child_status(pid_t pid) {
  int status = 0;
  if (waitpid(pid, &status, 0) < 0) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

static int do_flock(const char* path) {
  int a = open(path, O_RDWR | O_CREAT, 0644);
  if (a < 0) return fail("open");
  if (flock(a, LOCK_EX) < 0) return fail("flock LOCK_EX");
  pid_t pid = fork();
  if (pid == 0) {
    int b = open(path, O_RDWR);
    if (b < 0) _exit(2);
    if (flock(b, LOCK_EX | LOCK_NB) == 0) _exit(3);  // must conflict
    if (errno != EWOULDBLOCK) _exit(4);
    _exit(0);
  }
  int rc = child_status(pid);
  if (rc != 0) {
    fprintf(stderr, "second exclusive flock while held: child status %d (3 = not excluded)\n", rc);
    return 1;
  }
  if (flock(a, LOCK_UN) < 0) return fail("flock LOCK_UN");
  int b = open(path, O_RDWR);
  if (b < 0) return fail("open 2");
  if (flock(b, LOCK_EX | LOCK_NB) < 0) return fail("flock after unlock");
  return 0;
}

static int do_posixlock(const char* path) {
  int fd = open(path, O_RDWR | O_CREAT, 0644);
  if (fd < 0) return fail("open");
  struct flock lk = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 100};
  if (fcntl(fd, F_SETLK, &lk) < 0) return fail("F_SETLK");
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid == 0) {
    int fd2 = open(path, O_RDWR);
    if (fd2 < 0) _exit(2);
    struct flock q = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 10, .l_len = 5};
    if (fcntl(fd2, F_GETLK, &q) < 0) _exit(3);
    if (q.l_type != F_WRLCK || q.l_pid != parent) _exit(4);
    struct flock w = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 10, .l_len = 5};
    if (fcntl(fd2, F_SETLK, &w) == 0) _exit(5);
    _exit(0);
  }
  int rc = child_status(pid);
  if (rc != 0) {
    fprintf(stderr, "conflicting posix lock not seen: child status %d\n", rc);
    return 1;
  }
  return 0;
}

static int do_mmap(const char* path) {
  int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return fail("open");
  if (ftruncate(fd, 8192) < 0) return fail("ftruncate");
  char* p = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return fail("mmap MAP_SHARED");
  memcpy(p + 4096, "svfs-mmap", 9);
  if (msync(p, 8192, MS_SYNC) < 0) return fail("msync");
  munmap(p, 8192);
  close(fd);
  fd = open(path, O_RDONLY);
  char buf[9];
  if (pread(fd, buf, 9, 4096) != 9) return fail("pread");
  if (memcmp(buf, "svfs-mmap", 9) != 0) {
    fprintf(stderr, "read back differs from the mmap write\n");
    return 1;
  }
  return 0;
}

static sigjmp_buf sigbus_jump;
static void on_sigbus(int sig) {
  (void)sig;
  siglongjmp(sigbus_jump, 1);
}

static int do_mmap_hold(char** argv) {
  const char* path = argv[2];
  long woff = atol(argv[3]);
  const char* text = argv[4];
  long roff = atol(argv[5]);
  long len = atol(argv[6]);
  const char* ready = argv[7];
  const char* go = argv[8];
  size_t tlen = strcmp(text, "-") ? strlen(text) : 0;
  long end = woff + (long)tlen > roff + len ? woff + (long)tlen : roff + len;
  long page = sysconf(_SC_PAGESIZE);
  size_t size = (size_t)((end + page - 1) / page * page);
  int fd = open(path, O_RDWR);
  if (fd < 0) return fail("open");
  char* p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return fail("mmap MAP_SHARED");
  memcpy(p + woff, text, tlen);
  int rfd = open(ready, O_WRONLY | O_CREAT, 0644);
  if (rfd < 0) return fail("create READY");
  close(rfd);
  for (int i = 0; i < 2400 && access(go, F_OK) != 0; i++) usleep(50000);
  if (access(go, F_OK) != 0) {
    fprintf(stderr, "mmap-hold: %s did not appear\n", go);
    return 1;
  }
  char* out = malloc((size_t)len + 1);
  signal(SIGBUS, on_sigbus);
  if (sigsetjmp(sigbus_jump, 1) == 0) {
    memcpy(out, p + roff, (size_t)len);
    out[len] = 0;
    long zeros = 0;
    while (zeros < len && out[zeros] == 0) zeros++;
    printf("%s\n", zeros == len ? "<zeros>" : out);
  } else {
    printf("SIGBUS\n");
  }
  munmap(p, size);
  close(fd);
  return 0;
}

static int do_write_from_map(const char* path, const char* dest) {
  int fd = open(path, O_RDONLY);
  if (fd < 0) return fail("open FILE");
  struct stat st;
  if (fstat(fd, &st) < 0 || st.st_size == 0) return fail("stat FILE (empty?)");
  char* p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return fail("mmap FILE");
  int out = open(dest, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (out < 0) return fail("open DEST");
  ssize_t n = write(out, p, (size_t)st.st_size);
  if (n < 0) return fail("write DEST from the mapping");
  if (n != st.st_size) {
    fprintf(stderr, "write-from-map: wrote %zd of %lld bytes\n", n, (long long)st.st_size);
    return 1;
  }
  if (fsync(out) < 0) return fail("fsync DEST");
  printf("%zd\n", n);
  return 0;
}

static long long now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (long long)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

static int do_read_bench(const char* path, const char* order, const char* count_arg) {
  enum { kPage = 4096 };
  char* end;
  errno = 0;
  long count = strtol(count_arg, &end, 10);
  if (errno || end == count_arg || *end) {
    fprintf(stderr, "readbench: COUNT %s: not a number\n", count_arg);
    return 2;
  }
  int fd = open(path, O_RDONLY);
  if (fd < 0) return fail("open");
  struct stat st;
  if (fstat(fd, &st) < 0) return fail("fstat");
  long long pages = st.st_size / kPage;
  if (pages == 0) {
    fprintf(stderr, "readbench: %s is smaller than a page\n", path);
    return 1;
  }
  int random_order = !strcmp(order, "rand");
  if (!random_order && strcmp(order, "seq")) {
    fprintf(stderr, "readbench: order %s: seq or rand\n", order);
    return 2;
  }
  if (random_order && count <= 0) {
    fprintf(stderr, "readbench: rand needs a COUNT above 0 (got %ld)\n", count);
    return 2;
  }
  long long reads = random_order ? count : pages;
  static char buf[kPage];
  unsigned long long state = 0x9e3779b97f4a7c15ull;  // xorshift64: the same offsets every run
  long long start = now_us();
  for (long long i = 0; i < reads; i++) {
    long long page = i;
    if (random_order) {
      state ^= state << 13;
      state ^= state >> 7;
      state ^= state << 17;
      page = (long long)(state % (unsigned long long)pages);
    }
    ssize_t n = pread(fd, buf, kPage, (off_t)page * kPage);
    if (n != kPage) {
      if (n < 0) return fail("pread");
      fprintf(stderr, "readbench: short read at page %lld\n", page);
      return 1;
    }
  }
  long long us = now_us() - start;
  if (us <= 0) us = 1;
  printf("%lld bytes %lld us %.1f MiB/s\n", reads * kPage, us,
         (double)reads * kPage / 1048576.0 / ((double)us / 1e6));
  close(fd);
  return 0;
}

// runas UID GID[,GROUP...] CMD [ARGS]: setgroups, setgid, setuid, then exec CMD.
static int do_runas(char** argv) {
  char* end = NULL;
  const uid_t uid = (uid_t)strtoul(argv[2], &end, 10);
  if (*end || end == argv[2]) return fprintf(stderr, "runas: bad uid %s\n", argv[2]), 2;
  gid_t groups[64];
  size_t count = 0;
  for (char* item = strtok(argv[3], ","); item; item = strtok(NULL, ",")) {
    if (count == sizeof groups / sizeof groups[0]) return fprintf(stderr, "runas: too many groups\n"), 2;
    groups[count++] = (gid_t)strtoul(item, &end, 10);
    if (*end || end == item) return fprintf(stderr, "runas: bad group %s\n", item), 2;
  }
  if (count == 0) return fprintf(stderr, "runas: no gid\n"), 2;
  if (setgroups(count - 1, groups + 1) < 0) return fail("setgroups");
  if (setgid(groups[0]) < 0) return fail("setgid");
  if (setuid(uid) < 0) return fail("setuid");
  execvp(argv[4], argv + 4);
  return fail(argv[4]);
}

int main(int argc, char** argv) {
  if (argc >= 5 && !strcmp(argv[1], "runas")) return do_runas(argv);
  if (argc < 3) {
    fprintf(stderr, "usage: svfs-guest-tool CMD FILE [ARGS]\n");
    return 2;
  }
  const char* cmd = argv[1];
  const char* path = argv[2];
  if (!strcmp(cmd, "setxattr") && argc == 5) {
    if (setxattr(path, argv[3], argv[4], strlen(argv[4]), 0) < 0) return fail("setxattr");
    return 0;
  }
  if (!strcmp(cmd, "getxattr") && argc == 4) {
    char buf[4096];
    ssize_t n = getxattr(path, argv[3], buf, sizeof buf);
    if (n < 0) return fail("getxattr");
    fwrite(buf, 1, (size_t)n, stdout);
    putchar('\n');
    return 0;
  }
  if (!strcmp(cmd, "listxattr") && argc == 3) {
    char buf[65536];
    ssize_t n = listxattr(path, buf, sizeof buf);
    if (n < 0) return fail("listxattr");
    for (ssize_t i = 0; i < n; i += (ssize_t)strlen(buf + i) + 1) puts(buf + i);
    return 0;
  }
  if (!strcmp(cmd, "removexattr") && argc == 4) {
    if (removexattr(path, argv[3]) < 0) return fail("removexattr");
    return 0;
  }
  if (!strcmp(cmd, "flock") && argc == 3) return do_flock(path);
  if (!strcmp(cmd, "posixlock") && argc == 3) return do_posixlock(path);
  if (!strcmp(cmd, "mmap") && argc == 3) return do_mmap(path);
  if (!strcmp(cmd, "mmap-hold") && argc == 9) return do_mmap_hold(argv);
  if (!strcmp(cmd, "write-from-map") && argc == 4) return do_write_from_map(path, argv[3]);
  if (!strcmp(cmd, "readbench") && argc == 5) return do_read_bench(path, argv[3], argv[4]);
  fprintf(stderr, "svfs-guest-tool: bad command %s\n", cmd);
  return 2;
}
