// SPDX-License-Identifier: MIT
// nbdwire-server: an NBD server over POSIX sockets, built on nbdwire::server.
//
//   nbdwire-server [--listen HOST:PORT | --unix PATH | --port N]
//                  [--style fixed-newstyle|newstyle|oldstyle|legacy1997] [--read-only]
//                  [--handshake-timeout SECONDS] [--busy-poll USEC] NAME=BACKEND...
//   BACKEND: memory:SIZE (sparse, lazily allocated) or file:PATH (file or block device)
//
// With structured replies, READs of sparse ranges answer holes with OFFSET_HOLE chunks, and
// BLOCK_STATUS reports "base:allocation" from the backend: for memory, the pages ever written
// (pages given back by TRIM or zeroing are holes again); for files, SEEK_DATA/SEEK_HOLE.
//
// One epoll loop serves every client; sockets are non-blocking, so a slow or idle client never
// holds up another. The adapter only moves bytes: the machine validates and answers the
// protocol, this file carries out requests against storage. READ data goes from storage
// straight into sendmsg() beside its reply header (memory exports without any copy; large file
// READs go from the page cache to the socket with sendfile()), and the replies to a burst of
// requests leave in one sendmsg(); large WRITE payloads to a memory
// export are received straight into the export. Buffers are reused, so serving a request
// allocates nothing.
#include <fcntl.h>         // open, fallocate flags
#include <linux/falloc.h>  // FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE
#include <linux/fs.h>      // BLKGETSIZE64
#include <sys/epoll.h>     // epoll: one loop for every connection
#include <sys/ioctl.h>     // ioctl: block device size
#include <sys/mman.h>      // mmap, madvise: sparse memory exports
#include <sys/sendfile.h>  // sendfile: large file READs without a copy through user space
#include <sys/signalfd.h>  // signalfd: SIGINT/SIGTERM as a readable descriptor
#include <sys/socket.h>    // accept4, sendmsg, recv
#include <sys/stat.h>      // fstat
#include <sys/uio.h>       // iovec
#include <unistd.h>        // pread, pwrite, fdatasync, close

#include <algorithm>      // std::min
#include <bit>            // std::bit_ceil
#include <chrono>         // handshake deadlines
#include <csignal>        // sigset_t
#include <cstdio>         // std::printf, std::fprintf
#include <cstdlib>        // std::strtod
#include <cstring>        // std::memcpy, std::memset
#include <deque>          // per-connection queues
#include <memory>         // std::unique_ptr
#include <string>         // std::string
#include <unordered_map>  // fd -> connection
#include <vector>         // exports, buffers

#include "common.hpp"
#include "nbdwire/server.hpp"
#include "nbdwire/posix.hpp"

namespace {

using examples::fail;
using nbdwire::event_kind;
using nbdwire::nbd_error;

constexpr std::size_t input_buffer_size = 256 * 1024;
// File exports read data at request time; past this many buffered bytes per connection the
// server stops taking requests until the client has read its replies.
constexpr std::uint64_t read_buffer_limit = 64u * 1024 * 1024;
constexpr int recvs_per_wakeup = 16;  // fairness between busy connections
// File READs go through per-connection buffers that are reused: powers of two from 64 KiB,
// at most 16 MiB of them per connection (more is allocated per request).
constexpr std::size_t min_pooled_buffer = 64 * 1024;
constexpr std::size_t max_pooled_bytes = 16u * 1024 * 1024;
// WRITE payloads from this size on are received straight into a memory export.
constexpr std::uint64_t direct_receive_min = 64 * 1024;
// File READs from this size on are sent with sendfile() at send time instead of pread() now:
// one copy instead of two. Smaller ones stay with pread, where the extra system call costs
// more than the copy saves.
constexpr std::uint64_t sendfile_min = 64 * 1024;

/// errno from a storage call -> the NBD error it is reported as ("Error values").
using nbdwire::to_nbd_error;

// ---- storage -----------------------------------------------------------------------------------

/// A stretch of an export that is either data or a hole (reads as zeroes, not allocated).
struct alloc_run {
  std::uint64_t length = 0;
  bool hole = false;
};

/// Appends a run, merging it with the previous one of the same kind.
void add_run(std::vector<alloc_run>& out, std::uint64_t length, bool hole) {
  if (length == 0) return;
  if (!out.empty() && out.back().hole == hole)
    out.back().length += length;
  else
    out.push_back({length, hole});
}

/// What an export is stored in. Calls return 0 or an errno value.
class backend {
 public:
  virtual ~backend() = default;
  [[nodiscard]] virtual std::uint64_t size() const = 0;
  /// Whether zeroing is always cheap (so NBD_FLAG_SEND_FAST_ZERO can be honoured).
  [[nodiscard]] virtual bool can_fast_zero() const = 0;
  /// Export bytes addressable in place, or nullptr when they must be read or written by copy.
  [[nodiscard]] virtual std::byte* in_place(std::uint64_t) { return nullptr; }
  /// A regular file whose bytes at export offset X are at file offset X, for sendfile(); -1 if none.
  [[nodiscard]] virtual int sendfile_source() const { return -1; }
  virtual int read(std::uint64_t off, std::byte* dst, std::size_t len) = 0;
  virtual int write(std::uint64_t off, const std::byte* src, std::size_t len) = 0;
  virtual int flush() = 0;
  virtual int trim(std::uint64_t off, std::uint64_t len) = 0;
  /// Zeroes a range. `may_punch`: holes are fine (no NBD_CMD_FLAG_NO_HOLE); `fast_only`:
  /// fail with ENOTSUP rather than write zeroes slowly (NBD_CMD_FLAG_FAST_ZERO).
  virtual int zero(std::uint64_t off, std::uint64_t len, bool may_punch, bool fast_only) = 0;
  virtual int cache(std::uint64_t off, std::uint64_t len) = 0;
  /// A WRITE of [off, off + len) is about to arrive (its data may be received in place).
  virtual void will_write(std::uint64_t, std::uint64_t) {}
  /// Describes [off, off + len) as alternating data and hole runs, from `off` on. Stops after
  /// `max_runs` runs, so the runs may cover less than `len`; they never cover more.
  virtual int allocation(std::uint64_t off, std::uint64_t len, std::size_t max_runs, std::vector<alloc_run>& out) {
    (void)off;
    (void)max_runs;
    out.clear();
    add_run(out, len, false);
    return 0;
  }
};

/// A sparse in-memory export: private anonymous pages, reserved lazily, so an untouched
/// 1 GiB export costs no memory.
class memory_backend final : public backend {
 public:
  explicit memory_backend(std::uint64_t size) : size_(size) {
    page_ = static_cast<std::uint64_t>(sysconf(_SC_PAGESIZE));
    if (size_ == 0) return;
    map_len_ = (size_ + page_ - 1) / page_ * page_;
    void* p = mmap(nullptr, map_len_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) examples::fail_errno("cannot map a memory export of " + std::to_string(size) + " bytes");
    base_ = static_cast<std::byte*>(p);
    written_.assign(static_cast<std::size_t>((map_len_ / page_ + 63) / 64), 0);
  }
  ~memory_backend() override {
    if (base_) munmap(base_, map_len_);
  }
  memory_backend(const memory_backend&) = delete;
  memory_backend& operator=(const memory_backend&) = delete;

  [[nodiscard]] std::uint64_t size() const override { return size_; }
  [[nodiscard]] bool can_fast_zero() const override { return true; }
  [[nodiscard]] std::byte* in_place(std::uint64_t off) override { return base_ ? base_ + off : nullptr; }
  int read(std::uint64_t off, std::byte* dst, std::size_t len) override {
    std::memcpy(dst, base_ + off, len);
    return 0;
  }
  int write(std::uint64_t off, const std::byte* src, std::size_t len) override {
    will_write(off, len);
    std::memcpy(base_ + off, src, len);
    return 0;
  }
  void will_write(std::uint64_t off, std::uint64_t len) override {
    if (len != 0) mark(off / page_, (off + len - 1) / page_ + 1, true);
  }
  int flush() override { return 0; }
  int trim(std::uint64_t off, std::uint64_t len) override {
    discard(off, len);
    return 0;
  }
  int zero(std::uint64_t off, std::uint64_t len, bool may_punch, bool) override {
    // Both ways are at least as fast as writing, so FAST_ZERO never fails here.
    if (may_punch) {
      discard(off, len);
    } else {
      will_write(off, len);  // NO_HOLE: the range stays allocated
      std::memset(base_ + off, 0, static_cast<std::size_t>(len));
    }
    return 0;
  }
  int cache(std::uint64_t, std::uint64_t) override { return 0; }

  int allocation(std::uint64_t off, std::uint64_t len, std::size_t max_runs, std::vector<alloc_run>& out) override {
    out.clear();
    const std::uint64_t end = off + len;
    std::uint64_t pos = off;
    while (pos < end && out.size() < max_runs) {
      const std::uint64_t p = pos / page_;
      const bool data = bit(p);
      const std::uint64_t stop = std::min(end, next_change(p, data, (end + page_ - 1) / page_) * page_);
      add_run(out, stop - pos, !data);
      pos = stop;
    }
    return 0;
  }

 private:
  /// Gives whole pages back (they read as zeroes again) and zeroes the partial edges.
  void discard(std::uint64_t off, std::uint64_t len) {
    if (len == 0) return;
    const std::uint64_t end = off + len;
    const std::uint64_t first = (off + page_ - 1) / page_ * page_;
    const std::uint64_t last = end / page_ * page_;
    if (first >= last) {
      std::memset(base_ + off, 0, static_cast<std::size_t>(len));
      return;
    }
    std::memset(base_ + off, 0, static_cast<std::size_t>(first - off));
    if (madvise(base_ + first, static_cast<std::size_t>(last - first), MADV_DONTNEED) != 0)
      std::memset(base_ + first, 0, static_cast<std::size_t>(last - first));
    else
      mark(first / page_, last / page_, false);  // given back: a hole again
    std::memset(base_ + last, 0, static_cast<std::size_t>(end - last));
  }

  // One bit per page: set once the page was written, cleared when it is given back.
  [[nodiscard]] bool bit(std::uint64_t p) const { return (written_[p / 64] >> (p % 64)) & 1u; }
  void mark(std::uint64_t from, std::uint64_t to, bool value) {
    for (std::uint64_t p = from; p < to;) {
      std::uint64_t& w = written_[p / 64];
      if (p % 64 == 0 && to - p >= 64) {  // whole words at once
        w = value ? ~std::uint64_t{0} : 0;
        p += 64;
        continue;
      }
      const std::uint64_t m = std::uint64_t{1} << (p % 64);
      w = value ? (w | m) : (w & ~m);
      ++p;
    }
  }
  /// The first page in [p, limit) whose bit differs from `value`, or `limit`.
  [[nodiscard]] std::uint64_t next_change(std::uint64_t p, bool value, std::uint64_t limit) const {
    const std::uint64_t same = value ? ~std::uint64_t{0} : 0;
    while (p < limit) {
      if (p % 64 == 0 && written_[p / 64] == same) {
        p += 64;
        continue;
      }
      if (bit(p) != value) return p;
      ++p;
    }
    return limit;
  }

  std::uint64_t size_, page_ = 4096, map_len_ = 0;
  std::byte* base_ = nullptr;
  std::vector<std::uint64_t> written_;
};

/// An existing file or block device, accessed with pread/pwrite.
class file_backend final : public backend {
 public:
  file_backend(const std::string& path, bool read_only) {
    fd_ = open(path.c_str(), (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    if (fd_ < 0) examples::fail_errno("cannot open " + path);
    struct stat st{};
    if (fstat(fd_, &st) != 0) examples::fail_errno("stat " + path);
    if (S_ISREG(st.st_mode)) {
      size_ = static_cast<std::uint64_t>(st.st_size);
      regular_ = true;
      // Punching beyond the end changes nothing, and tells whether the file system can.
      fast_zero_ = !read_only && fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, st.st_size, 1) == 0;
    } else if (S_ISBLK(st.st_mode)) {
      if (ioctl(fd_, BLKGETSIZE64, &size_) != 0) examples::fail_errno("BLKGETSIZE64 " + path);
    } else {
      close(fd_);
      fail(path + " is neither a regular file nor a block device");
    }
  }
  ~file_backend() override { close(fd_); }
  file_backend(const file_backend&) = delete;
  file_backend& operator=(const file_backend&) = delete;

  [[nodiscard]] std::uint64_t size() const override { return size_; }
  [[nodiscard]] bool can_fast_zero() const override { return fast_zero_; }
  [[nodiscard]] int sendfile_source() const override { return regular_ ? fd_ : -1; }
  int read(std::uint64_t off, std::byte* dst, std::size_t len) override {
    while (len > 0) {
      const ssize_t n = pread(fd_, dst, len, static_cast<off_t>(off));
      if (n < 0) {
        if (errno == EINTR) continue;
        return errno;
      }
      if (n == 0) return EIO;  // the file shrank under us
      dst += n;
      off += static_cast<std::uint64_t>(n);
      len -= static_cast<std::size_t>(n);
    }
    return 0;
  }
  int write(std::uint64_t off, const std::byte* src, std::size_t len) override {
    while (len > 0) {
      const ssize_t n = pwrite(fd_, src, len, static_cast<off_t>(off));
      if (n < 0) {
        if (errno == EINTR) continue;
        return errno;
      }
      src += n;
      off += static_cast<std::uint64_t>(n);
      len -= static_cast<std::size_t>(n);
    }
    return 0;
  }
  int flush() override { return fdatasync(fd_) == 0 ? 0 : errno; }
  int trim(std::uint64_t off, std::uint64_t len) override {
    forget_data();
    // TRIM is advisory: where the file system cannot punch, doing nothing is correct.
    if (fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(off), static_cast<off_t>(len)) == 0)
      return 0;
    return errno == EOPNOTSUPP || errno == ENOSYS ? 0 : errno;
  }
  int zero(std::uint64_t off, std::uint64_t len, bool may_punch, bool fast_only) override {
    forget_data();
    const auto o = static_cast<off_t>(off), l = static_cast<off_t>(len);
    if (may_punch && fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, o, l) == 0) return 0;
    if (fallocate(fd_, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, o, l) == 0) return 0;
    if (fast_only) return ENOTSUP;
    static const std::vector<std::byte> zeroes(1024 * 1024);
    while (len > 0) {
      const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(len, zeroes.size()));
      if (const int e = write(off, zeroes.data(), n)) return e;
      off += n;
      len -= n;
    }
    return 0;
  }
  int cache(std::uint64_t off, std::uint64_t len) override {
    (void)posix_fadvise(fd_, static_cast<off_t>(off), static_cast<off_t>(len), POSIX_FADV_WILLNEED);
    return 0;
  }

  int allocation(std::uint64_t off, std::uint64_t len, std::size_t max_runs, std::vector<alloc_run>& out) override {
    out.clear();
    const std::uint64_t end = off + len;
    // Inside the data run found last time: no system call. SEEK_HOLE can cost time in
    // proportion to the run's length (tmpfs walks its pages), so random reads of a large
    // allocated file would otherwise scan it on every request. A stale answer can only say
    // "data" for what became a hole elsewhere, which is always correct.
    if (off >= data_from_ && end <= data_to_) {
      add_run(out, len, false);
      return 0;
    }
    std::uint64_t pos = off;
    while (pos < end && out.size() < max_runs) {
      const off_t d = lseek(fd_, static_cast<off_t>(pos), SEEK_DATA);
      if (d < 0) {
        // ENXIO: no data from here to the end of the file. Anything else (a block device, a
        // file system without SEEK_DATA): report data, which is always correct.
        add_run(out, end - pos, errno == ENXIO);
        return 0;
      }
      const std::uint64_t data = std::min(end, static_cast<std::uint64_t>(d));
      add_run(out, data - pos, true);
      pos = data;
      if (pos >= end) break;
      const off_t h = lseek(fd_, static_cast<off_t>(pos), SEEK_HOLE);
      if (h > 0 && static_cast<std::uint64_t>(h) > pos) {
        data_from_ = pos;
        data_to_ = static_cast<std::uint64_t>(h);
      }
      const std::uint64_t hole = h < 0 ? end : std::min(end, std::max(pos + 1, static_cast<std::uint64_t>(h)));
      add_run(out, hole - pos, false);
      pos = hole;
    }
    return 0;
  }

 private:
  /// Our own TRIM or zeroing may punch holes: forget the known data run.
  void forget_data() { data_from_ = data_to_ = 0; }

  int fd_ = -1;
  std::uint64_t size_ = 0;
  bool fast_zero_ = false;
  bool regular_ = false;
  std::uint64_t data_from_ = 0, data_to_ = 0;  // a run known to be data, [from, to)
};

// ---- exports and command line ----------------------------------------------------------------------

struct export_entry {
  std::string name;
  std::string spec;  // BACKEND as given, for messages
  std::unique_ptr<backend> store;
};

struct settings {
  examples::endpoint where;
  nbdwire::handshake_style style = nbdwire::handshake_style::fixed_newstyle;
  bool read_only = false;
  /// Clients that have not finished the handshake this long after connecting are dropped
  /// (0: never). A setting of this adapter: the protocol core has no clock.
  double handshake_timeout = 30;
  /// After each batch of events, keep asking epoll for more (without sleeping) for this many
  /// microseconds before blocking (0: block at once). Answers the next request of a client
  /// at queue depth 1 without waking a sleeping CPU, at the price of a busy CPU while the
  /// client keeps coming back within that time.
  long busy_poll_us = 0;
  std::vector<export_entry> exports;
};

[[noreturn]] void usage_error(const std::string& msg) { fail(msg + " (try --help)"); }

void print_usage() {
  std::printf(
      "usage: nbdwire-server [--listen HOST:PORT | --unix PATH | --port N]\n"
      "                      [--style fixed-newstyle|newstyle|oldstyle|legacy1997] [--read-only]\n"
      "                      [--handshake-timeout SECONDS] [--busy-poll USEC] NAME=BACKEND...\n"
      "BACKEND: memory:SIZE (K/M/G/T binary suffixes) or file:PATH (file or block device).\n"
      "The first export is also the default (empty name). Default listen 127.0.0.1:%u.\n",
      nbdwire::default_port);
}

export_entry parse_export(const std::string& arg, bool read_only) {
  // NAME=BACKEND: the '=' is the one before the backend kind, so names may contain '='.
  std::size_t eq = std::string::npos;
  for (std::size_t i = arg.find('='); i != std::string::npos; i = arg.find('=', i + 1)) {
    const std::string_view rest = std::string_view(arg).substr(i + 1);
    if (rest.starts_with("memory:") || rest.starts_with("file:")) {
      eq = i;
      break;
    }
  }
  if (eq == std::string::npos) usage_error("bad export '" + arg + "': expected NAME=memory:SIZE or NAME=file:PATH");
  export_entry e;
  e.name = arg.substr(0, eq);
  e.spec = arg.substr(eq + 1);
  if (e.name.size() > nbdwire::max_string) fail("export name too long: " + e.name.substr(0, 40) + "...");
  if (e.spec.starts_with("memory:")) {
    const auto size = examples::parse_size(std::string_view(e.spec).substr(7));
    if (!size) usage_error("bad memory size in '" + arg + "'");
    e.store = std::make_unique<memory_backend>(*size);
  } else {
    const std::string path = e.spec.substr(5);
    if (path.empty()) usage_error("missing path in '" + arg + "'");
    e.store = std::make_unique<file_backend>(path, read_only);
  }
  return e;
}

settings parse_args(int argc, char** argv) {
  settings s;
  std::vector<std::string> specs;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage_error(a + " needs a value");
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      print_usage();
      std::exit(0);
    } else if (a == "--listen") {
      const std::string v = value();
      const auto e = examples::parse_host_port(v, nbdwire::default_port);
      if (!e) usage_error("bad --listen '" + v + "' (HOST:PORT or [IPv6]:PORT)");
      s.where = *e;
    } else if (a == "--unix") {
      s.where.is_unix = true;
      s.where.path = value();
    } else if (a == "--port") {
      const std::string v = value();
      const auto p = examples::parse_port(v);
      if (!p) usage_error("bad --port '" + v + "'");
      s.where.port = *p;
    } else if (a == "--style") {
      const std::string v = value();
      using hs = nbdwire::handshake_style;
      if (v == "fixed-newstyle") s.style = hs::fixed_newstyle;
      else if (v == "newstyle") s.style = hs::newstyle;
      else if (v == "oldstyle") s.style = hs::oldstyle;
      else if (v == "legacy1997") s.style = hs::legacy_1997;
      else usage_error("unknown --style '" + v + "'");
    } else if (a == "--read-only" || a == "-r") {
      s.read_only = true;
    } else if (a == "--handshake-timeout") {
      const std::string v = value();
      char* end = nullptr;
      const double t = std::strtod(v.c_str(), &end);
      if (v.empty() || *end != '\0' || !(t >= 0) || t > 86400) usage_error("bad --handshake-timeout '" + v + "'");
      s.handshake_timeout = t;
    } else if (a == "--busy-poll") {
      const std::string v = value();
      char* end = nullptr;
      const long us = std::strtol(v.c_str(), &end, 10);
      if (v.empty() || *end != '\0' || us < 0 || us > 1000000) usage_error("bad --busy-poll '" + v + "' (0 to 1000000 microseconds)");
      s.busy_poll_us = us;
    } else if (a.starts_with("-") && a.find('=') == std::string::npos) {
      usage_error("unknown option " + a);
    } else {
      specs.push_back(a);
    }
  }
  if (specs.empty()) usage_error("no export given (NAME=memory:SIZE or NAME=file:PATH)");
  for (const auto& spec : specs) s.exports.push_back(parse_export(spec, s.read_only));
  const bool single = s.style == nbdwire::handshake_style::oldstyle || s.style == nbdwire::handshake_style::legacy_1997;
  if (single && s.exports.size() != 1)
    fail(std::string(nbdwire::to_string(s.style)) + " serves exactly one export; " + std::to_string(s.exports.size()) +
         " given");
  if (s.style == nbdwire::handshake_style::legacy_1997 && s.exports[0].store->size() > 0xffffffffu)
    fail("the 1997 framing addresses less than 4 GiB; the export is " + std::to_string(s.exports[0].store->size()) +
         " bytes");
  return s;
}

// ---- connections ---------------------------------------------------------------------------------

/// READ data owed to the client, one per payload mark the machine queued, in that order.
struct read_source {
  std::uint64_t cookie = 0, offset = 0, length = 0;
  const std::byte* data = nullptr;         // in place (memory) or inside `owned`
  std::shared_ptr<std::byte[]> owned;      // file exports: read at request time
  std::uint64_t buffered = 0;              // bytes of `owned` this piece accounts for
  int file = -1;                           // else: sendfile() from this file at `offset`
};

/// One call on the machine that answers (part of) a request.
struct reply_step {
  enum class kind : std::uint8_t { whole, data, hole, status } what = kind::whole;
  nbd_error status = nbd_error::ok;               // whole
  std::uint64_t offset = 0, length = 0;           // data, hole
  std::optional<read_source> src;                 // whole (successful READ), data
  std::uint32_t context = 0;                      // status
  std::vector<nbdwire::block_extent> extents;     // status
  bool done = true;                               // the reply's last chunk

  static reply_step whole(nbd_error e, std::optional<read_source> src = {}) {
    reply_step s;
    s.status = e;
    s.src = std::move(src);
    return s;
  }
  static reply_step chunk(kind k, std::uint64_t offset, std::uint64_t length, std::optional<read_source> src) {
    reply_step s;
    s.what = k;
    s.offset = offset;
    s.length = length;
    s.src = std::move(src);
    s.done = false;
    return s;
  }
  static reply_step block_status(std::uint32_t context, std::vector<nbdwire::block_extent> extents, bool done) {
    reply_step s;
    s.what = kind::status;
    s.context = context;
    s.extents = std::move(extents);
    s.done = done;
    return s;
  }
};

/// A reply as a sequence of steps; `next` is the first not yet accepted by the machine.
struct pending_reply {
  nbdwire::request req;
  std::vector<reply_step> steps;
  std::size_t next = 0;
};

struct connection {
  connection(int sock, const nbdwire::server_config& cfg, std::string who)
      : fd(sock), peer(std::move(who)), m(cfg), in(std::make_unique_for_overwrite<std::byte[]>(input_buffer_size)) {}
  int fd;
  std::chrono::steady_clock::time_point accepted = std::chrono::steady_clock::now();
  std::string peer;
  nbdwire::server m;
  // Left uninitialised: the pages an idle connection never receives into cost no memory.
  std::unique_ptr<std::byte[]> in;
  std::size_t start = 0, end = 0;
  // Data for pending_payload(), front (reads[reads_head]) first. A vector that is emptied
  // rather than freed, so steady traffic reuses its storage.
  std::vector<read_source> reads;
  std::size_t reads_head = 0;
  std::deque<pending_reply> deferred; // replies waiting for outbox room, in order
  // Reused for every request, so the steady state allocates nothing per request.
  std::vector<alloc_run> runs;
  std::vector<reply_step> steps;
  struct pooled_buffer {
    std::shared_ptr<std::byte[]> data;  // free when use_count() == 1
    std::size_t size = 0;
  };
  std::vector<pooled_buffer> buffers;   // file READ buffers, reused
  std::size_t pooled_bytes = 0, next_buffer = 0;
  std::uint64_t read_buffered = 0;    // bytes held in owned read buffers
  bool finishing = false;             // DISC or end of input: flush, then close
  std::uint32_t epoll_mask = 0;
  // The socket said EAGAIN: no send is tried again before epoll reports it writable, which
  // would otherwise cost a failing system call per request while the client catches up.
  bool send_blocked = false;
  // The WRITE whose payload is arriving.
  struct {
    bool active = false;
    nbdwire::request req{};
    std::uint64_t received = 0;
    int err = 0;
  } wr;

  [[nodiscard]] bool reads_empty() const { return reads_head == reads.size(); }
  [[nodiscard]] const read_source& reads_front() const { return reads[reads_head]; }
  void reads_pop() {
    reads[reads_head++].owned.reset();  // the buffer is free again
    if (reads_head == reads.size()) {
      reads.clear();
      reads_head = 0;
    } else if (reads_head >= 64 && reads_head * 2 >= reads.size()) {
      reads.erase(reads.begin(), reads.begin() + static_cast<std::ptrdiff_t>(reads_head));
      reads_head = 0;
    }
  }
  /// A buffer for a file READ of `len` bytes: a free pooled one if there is one big enough,
  /// else a new one, kept for reuse while the pool is under its limit. Fresh memory would
  /// cost a page fault per 4 KiB on every large READ.
  std::shared_ptr<std::byte[]> read_buffer(std::uint64_t len) {
    // Starting after the last buffer taken finds the oldest, most likely sent, first.
    for (std::size_t i = 0; i < buffers.size(); ++i) {
      pooled_buffer& b = buffers[(next_buffer + i) % buffers.size()];
      if (b.data.use_count() == 1 && b.size >= len) {
        next_buffer = (next_buffer + i + 1) % buffers.size();
        return b.data;
      }
    }
    const std::size_t size = std::max<std::size_t>(min_pooled_buffer, std::bit_ceil(static_cast<std::size_t>(len)));
    auto b = std::make_shared_for_overwrite<std::byte[]>(size);
    if (pooled_bytes + size <= max_pooled_bytes) {
      buffers.push_back({b, size});
      pooled_bytes += size;
    }
    return b;
  }

  // What gather() took from the machine and flush() has not sent yet: header bytes copied
  // into `headers`, READ data by reference (`keep` holds a file READ's buffer).
  struct piece {
    std::size_t header_offset = 0, length = 0;
    const std::byte* data = nullptr;  // null: bytes of `headers` (or of `file`)
    std::uint64_t buffered = 0;
    std::shared_ptr<std::byte[]> keep;
    int file = -1;                    // sendfile() from this file at `file_offset`
    std::uint64_t file_offset = 0;
  };
  std::vector<std::byte> headers;
  std::vector<piece> sendq;
  std::size_t sendq_head = 0, sent_of_head = 0;
  [[nodiscard]] std::size_t queued_pieces() const { return sendq.size() - sendq_head; }

  [[nodiscard]] bool output_pending() const {
    return sendq_head < sendq.size() || !m.pending_output().empty() || m.pending_payload().has_value();
  }
};

class server_loop {
 public:
  explicit server_loop(settings s) : s_(std::move(s)) {
    using namespace nbdwire::transmission_flag;
    configs_.reserve(s_.exports.size());
    for (const auto& e : s_.exports) {
      nbdwire::export_config c;
      c.name = e.name;
      c.size = e.store->size();
      std::uint16_t f = send_flush | send_fua | send_trim | send_write_zeroes | send_cache | can_multi_conn;
      if (e.store->can_fast_zero()) f |= send_fast_zero;
      if (s_.read_only) f |= read_only;
      c.transmission_flags = f;
      // Byte-granular requests work; 4 KiB is the page size of memory exports and a usual
      // file system block; 32 MiB is the payload every client may send.
      c.block_size = {1, 4096, nbdwire::default_max_payload};
      configs_.push_back(c);
    }
    cfg_.style = s_.style;
    cfg_.meta_contexts = contexts_;
    cfg_.exports = configs_;
    cfg_.default_export = 0;
    // An export explicitly named "" is the default one.
    for (std::size_t i = 0; i < s_.exports.size(); ++i)
      if (s_.exports[i].name.empty()) cfg_.default_export = i;
    // Check the configuration once, with a throwaway machine, before listening.
    const nbdwire::server probe(cfg_);
    if (probe.state() == nbdwire::server_state::failed)
      fail("invalid export configuration: " + std::string(nbdwire::to_string(probe.error())));
  }

  int run() {
    listen_fd_ = examples::listen_on(s_.where);
    ep_ = epoll_create1(EPOLL_CLOEXEC);
    if (ep_ < 0) examples::fail_errno("epoll_create1");
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    if (sigprocmask(SIG_BLOCK, &sigs, nullptr) != 0) examples::fail_errno("sigprocmask");
    sig_fd_ = signalfd(-1, &sigs, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sig_fd_ < 0) examples::fail_errno("signalfd");
    add(listen_fd_, EPOLLIN);
    add(sig_fd_, EPOLLIN);

    const std::size_t n = s_.exports.size();
    std::printf("nbdwire-server: listening on %s (%s, %zu export%s)\n", s_.where.to_string().c_str(),
                std::string(nbdwire::to_string(s_.style)).c_str(), n, n == 1 ? "" : "s");
    std::fflush(stdout);

    epoll_event evs[64];
    for (;;) {
      const int k = wait_for_events(evs, 64);
      if (k < 0) {
        if (errno == EINTR) continue;
        examples::fail_errno("epoll_wait");
      }
      for (int i = 0; i < k; ++i) {
        const int fd = evs[i].data.fd;
        if (fd == sig_fd_) {
          stop();
          return 0;
        }
        if (fd == listen_fd_) {
          accept_all();
          continue;
        }
        const auto it = conns_.find(fd);
        if (it == conns_.end()) continue;  // closed earlier in this batch
        if (evs[i].events & EPOLLOUT) it->second->send_blocked = false;
        // Woken only because the socket is writable: epoll said nothing is waiting to be read,
        // so this turn sends and does not try a recv() that would say EAGAIN.
        if (!service(*it->second, (evs[i].events & ~std::uint32_t{EPOLLOUT}) != 0)) drop(fd);
      }
    }
  }

 private:
  /// epoll_wait(), after polling for up to --busy-poll microseconds first.
  int wait_for_events(epoll_event* evs, int max) {
    if (s_.busy_poll_us > 0) {
      using clock = std::chrono::steady_clock;
      const auto until = clock::now() + std::chrono::microseconds(s_.busy_poll_us);
      do {
        const int k = epoll_wait(ep_, evs, max, 0);
        if (k != 0) return k;
      } while (clock::now() < until);
    }
    return epoll_wait(ep_, evs, max, drop_late_handshakes());
  }

  /// Drops connections still negotiating past the handshake deadline; returns the epoll
  /// timeout (ms) until the next deadline, or -1.
  int drop_late_handshakes() {
    if (s_.handshake_timeout <= 0) return -1;
    using clock = std::chrono::steady_clock;
    const auto limit = std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(s_.handshake_timeout));
    const auto now = clock::now();
    auto next = clock::time_point::max();
    std::vector<int> late;
    for (const auto& [fd, c] : conns_) {
      const auto st = c->m.state();
      if (st != nbdwire::server_state::awaiting_client_flags && st != nbdwire::server_state::negotiating) continue;
      if (now - c->accepted >= limit)
        late.push_back(fd);
      else
        next = std::min(next, c->accepted + limit);
    }
    for (const int fd : late) {
      log(*conns_.at(fd), "handshake not finished within the deadline; dropped");
      drop(fd);
    }
    if (next == clock::time_point::max()) return -1;
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(next - now).count() + 1;
    return static_cast<int>(std::min<long long>(ms, 60000));
  }

  void add(int fd, std::uint32_t mask) {
    epoll_event ev{};
    ev.events = mask;
    ev.data.fd = fd;
    if (epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev) != 0) examples::fail_errno("epoll_ctl");
  }

  void accept_all() {
    for (;;) {
      const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (errno != EAGAIN) std::fprintf(stderr, "nbdwire-server: accept: %s\n", std::strerror(errno));
        return;
      }
      if (!s_.where.is_unix) examples::set_nodelay(fd);
      if (s_.where.is_unix) examples::set_unix_send_buffer(fd);
      auto c = std::make_unique<connection>(fd, cfg_, s_.where.is_unix ? "unix client " + std::to_string(fd)
                                                                         : examples::peer_name(fd));
      c->epoll_mask = EPOLLIN | EPOLLOUT;  // the greeting is queued already
      add(fd, c->epoll_mask);
      auto& ref = *c;
      conns_.emplace(fd, std::move(c));
      if (!service(ref, true)) drop(fd);
    }
  }

  void drop(int fd) {
    epoll_ctl(ep_, EPOLL_CTL_DEL, fd, nullptr);
    close(fd);
    conns_.erase(fd);
  }

  void stop() {
    for (auto& [fd, c] : conns_) close(fd);
    conns_.clear();
    close(listen_fd_);
    if (s_.where.is_unix) unlink(s_.where.path.c_str());
    close(sig_fd_);
    close(ep_);
  }

  static void log(const connection& c, const std::string& what) {
    std::fprintf(stderr, "nbdwire-server: %s: %s\n", c.peer.c_str(), what.c_str());
  }

  backend& store_of(const connection& c) { return *s_.exports[c.m.negotiated().export_index].store; }

  // -- output --

  /// Moves everything the machine has to send into the connection's send queue: header bytes
  /// are copied (they are small), READ data is referenced in place. The machine's outbox is
  /// then free for more replies, and one sendmsg() can carry the replies of many requests.
  /// False on an internal error.
  bool gather(connection& c) {
    for (;;) {
      const auto out = c.m.pending_output();
      if (!out.empty()) {
        if (c.sendq.empty() || c.sendq.back().data || c.sendq.back().file >= 0)
          c.sendq.push_back({c.headers.size(), 0, nullptr, 0, {}});
        c.sendq.back().length += out.size();
        c.headers.insert(c.headers.end(), out.begin(), out.end());
        c.m.consume_output(out.size());
      }
      const auto pay = c.m.pending_payload();
      if (!pay) {
        if (c.m.pending_output().empty()) return true;
        continue;
      }
      if (c.reads_empty() || c.reads_front().cookie != pay->cookie || c.reads_front().offset > pay->offset) {
        log(c, "internal: READ data owed for an unknown request");
        return false;
      }
      const read_source& src = c.reads_front();
      if (src.file >= 0)
        c.sendq.push_back({0, static_cast<std::size_t>(pay->length), nullptr, 0, {}, src.file, pay->offset});
      else
        c.sendq.push_back({0, static_cast<std::size_t>(pay->length), src.data + (pay->offset - src.offset),
                           src.buffered, src.owned});
      (void)c.m.consume_payload(pay->length);
      c.reads_pop();
    }
  }

  /// Sends what the socket takes from the send queue. False on a socket error.
  bool flush(connection& c) {
    while (c.sendq_head < c.sendq.size()) {
      const connection::piece& head = c.sendq[c.sendq_head];
      ssize_t w = 0;
      std::size_t asked = head.length - c.sent_of_head;
      if (head.file >= 0) {
        // The reply header has gone out: a file that cannot give its bytes now leaves no way
        // to report the error, so the connection closes rather than send wrong data.
        auto off = static_cast<off_t>(head.file_offset + c.sent_of_head);
        w = sendfile(c.fd, head.file, &off, head.length - c.sent_of_head);
        if (w == 0) {
          log(c, "sendfile: the file ended before the READ's data");
          return false;
        }
      } else {
        iovec iov[64];
        int n = 0;
        std::size_t i = c.sendq_head;
        for (; i < c.sendq.size() && n < 64 && c.sendq[i].file < 0; ++i) {
          const connection::piece& pc = c.sendq[i];
          const std::byte* base = pc.data ? pc.data : c.headers.data() + pc.header_offset;
          const std::size_t skip = i == c.sendq_head ? c.sent_of_head : 0;
          iov[n++] = {const_cast<std::byte*>(base + skip), pc.length - skip};
          if (i != c.sendq_head) asked += pc.length;
        }
        msghdr mh{};
        mh.msg_iov = iov;
        mh.msg_iovlen = static_cast<std::size_t>(n);
        // MSG_MORE when file data follows: TCP joins the header to it.
        const int more = i < c.sendq.size() && c.sendq[i].file >= 0 ? MSG_MORE : 0;
        w = sendmsg(c.fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT | more);
      }
      if (w < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) {
          c.send_blocked = true;
          return true;
        }
        if (errno != EPIPE && errno != ECONNRESET) log(c, std::string("send: ") + std::strerror(errno));
        return false;
      }
      auto sent = static_cast<std::size_t>(w);
      while (sent > 0) {
        connection::piece& pc = c.sendq[c.sendq_head];
        const std::size_t left = pc.length - c.sent_of_head;
        if (sent < left) {
          c.sent_of_head += sent;
          break;
        }
        sent -= left;
        c.read_buffered -= pc.buffered;
        pc.keep.reset();  // a pooled read buffer is free again
        ++c.sendq_head;
        c.sent_of_head = 0;
      }
      // A short write means the socket buffer is full: the next try would only say EAGAIN.
      if (static_cast<std::size_t>(w) < asked) {
        c.send_blocked = true;
        return true;
      }
    }
    c.sendq.clear();
    c.sendq_head = 0;
    c.headers.clear();
    return true;
  }

  /// Gathers the machine's output, and sends once enough is queued. False: close.
  bool send_some(connection& c, bool force) {
    if (!gather(c)) return false;
    if (c.send_blocked) return true;
    if (force || c.queued_pieces() >= 32 || c.headers.size() >= 64 * 1024) return flush(c);
    return true;
  }

  /// Hands one step to the machine. True: taken (or failed for good, which was logged and
  /// makes `fatal` true); false: the outbox is full, try again once it drains.
  bool run_step(connection& c, const nbdwire::request& r, reply_step& st, bool& fatal) {
    using k = reply_step::kind;
    nbdwire::errc e = nbdwire::errc::ok;
    switch (st.what) {
      case k::whole:
        if (const auto res = c.m.reply(r, st.status); !res) e = res.error();
        break;
      case k::data:
        if (const auto res = c.m.reply_read_data(r, st.offset, st.length, st.done); !res) e = res.error();
        break;
      case k::hole:
        if (const auto res = c.m.reply_read_hole(r, st.offset, static_cast<std::uint32_t>(st.length), st.done); !res)
          e = res.error();
        break;
      case k::status:
        if (const auto res = c.m.reply_block_status(r, st.context, st.extents, st.done); !res) e = res.error();
        break;
    }
    if (e == nbdwire::errc::outbox_full) return false;
    if (e != nbdwire::errc::ok) {
      log(c, "internal: reply refused: " + std::string(nbdwire::to_string(e)));
      fatal = true;
      return true;
    }
    // A payload mark was queued: its data is sent from this source.
    if (st.src && st.src->length != 0 && (st.what == k::data || st.status == nbd_error::ok))
      c.reads.push_back(std::move(*st.src));
    return true;
  }

  /// Runs a reply's steps from `p.next` on; false when the outbox filled up first.
  bool run_steps(connection& c, pending_reply& p, bool& fatal) {
    while (p.next < p.steps.size()) {
      if (!run_step(c, p.req, p.steps[p.next], fatal)) return false;
      if (fatal) return true;
      ++p.next;
    }
    return true;
  }

  /// Answers a request now, or queues (the rest of) the answer while the outbox is full.
  bool answer(connection& c, pending_reply&& p) {
    bool fatal = false;
    if (c.deferred.empty() && run_steps(c, p, fatal)) {
      p.steps.clear();  // keep the storage for the next request
      c.steps = std::move(p.steps);
      return !fatal;
    }
    c.deferred.push_back(std::move(p));
    return true;
  }
  /// An empty reply for `r`, on the connection's reused step storage.
  static pending_reply start_reply(connection& c, const nbdwire::request& r) {
    pending_reply p{r, std::move(c.steps), 0};
    p.steps.clear();
    return p;
  }
  bool answer(connection& c, const nbdwire::request& r, nbd_error status, std::optional<read_source> src = {}) {
    pending_reply p = start_reply(c, r);
    p.steps.push_back(reply_step::whole(status, std::move(src)));
    return answer(c, std::move(p));
  }

  /// Retries deferred replies in order. `blocked` is set while the outbox is still full.
  bool retry_deferred(connection& c, bool& blocked) {
    blocked = false;
    while (!c.deferred.empty()) {
      bool fatal = false;
      if (!run_steps(c, c.deferred.front(), fatal)) {
        blocked = true;
        return true;
      }
      if (fatal) return false;
      c.deferred.pop_front();
    }
    return true;
  }

  // -- requests --

  bool finish_write(connection& c) {
    int err = c.wr.err;
    if (err == 0 && (c.wr.req.flags & nbdwire::command_flag::fua)) err = store_of(c).flush();
    c.wr.active = false;
    return answer(c, c.wr.req, to_nbd_error(err));
  }

  /// READ: one data chunk (or simple reply), or with structured replies, data and hole
  /// chunks following the backend's allocation. Data is never copied for memory exports.
  bool handle_read(connection& c, const nbdwire::request& r) {
    backend& b = store_of(c);
    using k = reply_step::kind;
    std::vector<alloc_run>& runs = c.runs;
    runs.clear();
    const bool chunked = c.m.negotiated().structured_replies && r.length != 0 &&
                         (r.flags & nbdwire::command_flag::df) == 0;  // DF: one data chunk
    if (chunked) {
      if (const int err = b.allocation(r.offset, r.length, SIZE_MAX, runs); err != 0)
        return answer(c, r, to_nbd_error(err));
    }
    if (runs.size() <= 1 && !(runs.size() == 1 && runs[0].hole)) runs.assign(1, alloc_run{r.length, false});
    // The data: in place, sent from the file when it is sent, or read now into one buffer
    // (holes are left unread).
    std::byte* in_place = r.length ? b.in_place(r.offset) : nullptr;
    const int file = in_place || r.length < sendfile_min ? -1 : b.sendfile_source();
    std::shared_ptr<std::byte[]> owned;
    if (!in_place && file < 0 && r.length != 0) {
      std::uint64_t pos = r.offset;
      for (const alloc_run& x : runs) {
        if (!x.hole) {
          if (!owned) owned = c.read_buffer(r.length);
          if (const int err = b.read(pos, owned.get() + (pos - r.offset), static_cast<std::size_t>(x.length)))
            return answer(c, r, to_nbd_error(err));
        }
        pos += x.length;
      }
    }
    const std::byte* base = in_place ? in_place : owned.get();
    auto source = [&](std::uint64_t off, std::uint64_t len) {
      const std::uint64_t buffered = owned ? len : 0;
      c.read_buffered += buffered;
      return read_source{r.cookie, off, len, base ? base + (off - r.offset) : nullptr, owned, buffered, file};
    };
    pending_reply p = start_reply(c, r);
    if (!chunked || (runs.size() == 1 && !runs[0].hole)) {
      p.steps.push_back(reply_step::whole(nbd_error::ok, source(r.offset, r.length)));
      return answer(c, std::move(p));
    }
    std::uint64_t pos = r.offset;
    for (const alloc_run& x : runs) {
      p.steps.push_back(reply_step::chunk(x.hole ? k::hole : k::data, pos, x.length,
                                          x.hole ? std::nullopt : std::optional<read_source>(source(pos, x.length))));
      pos += x.length;
    }
    p.steps.back().done = true;
    return answer(c, std::move(p));
  }

  /// BLOCK_STATUS: "base:allocation" extents from the backend, for every negotiated context.
  bool handle_block_status(connection& c, const nbdwire::request& r) {
    if (r.length == 0) return answer(c, r, nbd_error::einval);
    const auto& n = c.m.negotiated();
    // More than one outbox holds; the machine sends what fits and the client asks again.
    const std::size_t max_runs = (r.flags & nbdwire::command_flag::req_one) ? 1 : 1024;
    std::vector<alloc_run> runs;
    if (const int err = store_of(c).allocation(r.offset, r.length, max_runs, runs); err != 0 || runs.empty())
      return answer(c, r, to_nbd_error(err ? err : EIO));
    std::vector<nbdwire::block_extent> extents;
    extents.reserve(runs.size());
    using namespace nbdwire::state_flag;
    for (const alloc_run& x : runs) extents.push_back({x.length, x.hole ? (hole | zero) : 0u});
    pending_reply p{r, {}, 0};
    for (std::size_t i = 0; i < n.meta_context_count; ++i)
      p.steps.push_back(reply_step::block_status(n.meta_contexts[i].id, extents, i + 1 == n.meta_context_count));
    return answer(c, std::move(p));
  }

  bool handle_request(connection& c, const nbdwire::request& r) {
    using nbdwire::command;
    namespace cf = nbdwire::command_flag;
    backend& b = store_of(c);
    const bool fua = (r.flags & cf::fua) != 0;
    int err = 0;
    switch (r.cmd()) {
      case command::read: return handle_read(c, r);
      case command::block_status: return handle_block_status(c, r);
      case command::write:
        b.will_write(r.offset, r.length);
        c.wr.active = true;
        c.wr.req = r;
        c.wr.received = 0;
        c.wr.err = 0;
        return r.length == 0 ? finish_write(c) : true;  // the reply waits for the payload
      case command::flush: err = b.flush(); break;
      case command::trim:
        err = b.trim(r.offset, r.length);
        if (err == 0 && fua) err = b.flush();
        break;
      case command::write_zeroes:
        err = b.zero(r.offset, r.length, (r.flags & cf::no_hole) == 0, (r.flags & cf::fast_zero) != 0);
        if (err == 0 && fua) err = b.flush();
        break;
      case command::cache: err = b.cache(r.offset, r.length); break;
      default: err = EINVAL; break;
    }
    return answer(c, r, to_nbd_error(err));
  }

  bool handle_payload(connection& c, const nbdwire::event& ev) {
    if (!c.wr.active || ev.req.cookie != c.wr.req.cookie) return true;
    if (c.wr.err == 0) c.wr.err = store_of(c).write(ev.offset, ev.data.data(), ev.data.size());
    c.wr.received += ev.data.size();
    return c.wr.received == c.wr.req.length ? finish_write(c) : true;
  }

  // -- the per-connection loop --

  /// Runs a connection as far as it can go without blocking; `readable`: epoll reported input
  /// (or a hang-up), so recv() is worth trying. False: close it now.
  bool service(connection& c, bool readable) {
    int recvs = recvs_per_wakeup;
    bool drained = false;  // the last recv() was short: the socket is most likely empty
    for (;;) {
      // Replies are gathered as requests are handled and sent together when the input runs
      // dry (or the queue grows), so a burst of requests is answered with one sendmsg().
      if (!send_some(c, false)) return false;
      bool blocked = false;
      if (!retry_deferred(c, blocked)) return false;
      if (blocked || c.queued_pieces() >= 256 || c.finishing || c.read_buffered > read_buffer_limit) {
        if (!send_some(c, true)) return false;
        if (c.finishing && !c.output_pending()) return false;  // all answered: close
        if (blocked || c.finishing || c.read_buffered > read_buffer_limit) break;  // wait until writable
        if (c.queued_pieces() >= 256) break;  // the client is not reading: stop taking requests
      }

      const auto r = c.m.receive(nbdwire::bytes_view{c.in.get() + c.start, c.end - c.start});
      c.start += r.consumed;
      if (c.start == c.end) c.start = c.end = 0;
      const auto& ev = r.ev;
      switch (ev.kind) {
        case event_kind::need_more: break;
        case event_kind::blocked:
          // The machine waits for its outbox to drain: gathering it may be enough.
          if (!c.m.pending_output().empty() || c.m.pending_payload()) continue;
          log(c, "internal: machine blocked with nothing to send");
          return false;
        case event_kind::request:
          if (!handle_request(c, ev.req)) return false;
          continue;
        case event_kind::payload:
          if (!handle_payload(c, ev)) return false;
          continue;
        case event_kind::disconnected:
        case event_kind::closed: c.finishing = true; continue;
        case event_kind::failed:
          log(c, "protocol error: " + std::string(nbdwire::to_string(ev.error)));
          (void)send_some(c, true);  // best effort: an error reply may be queued
          return false;
        default: continue;  // ready, option_answered, request_refused: nothing to do
      }

      // need_more: send what is gathered, then read from the socket.
      if (!send_some(c, true)) return false;
      // Level-triggered epoll comes back if more is waiting, so a short read ends the turn
      // without a recv() that would only say EAGAIN.
      if (!readable || drained || recvs-- == 0) break;
      ssize_t n = -1;
      std::byte* direct = nullptr;
      std::size_t want = 0;
      if (c.start == c.end && c.wr.active) {
        // WRITE data due next with nothing buffered: receive it straight into the export.
        // Small payloads come through the input buffer with the next headers instead: one
        // recv() and a small copy are cheaper than a recv() per payload.
        if (const auto ip = c.m.incoming_payload();
            ip && ip->cookie == c.wr.req.cookie && ip->length >= direct_receive_min) {
          direct = store_of(c).in_place(ip->offset);
          want = static_cast<std::size_t>(ip->length);
        }
      }
      if (!direct && c.end == input_buffer_size) {
        // Buffer full with an unconsumed tail: move it to the front (a recv of 0 bytes would
        // look like the client closing).
        std::memmove(c.in.get(), c.in.get() + c.start, c.end - c.start);
        c.end -= c.start;
        c.start = 0;
      }
      if (!direct) want = input_buffer_size - c.end;
      n = recv(c.fd, direct ? direct : c.in.get() + c.end, want, 0);
      if (n > 0) {
        // Mid-WRITE the rest of the payload is usually on its way (clients often send header
        // and data separately): only a short read at a request boundary ends the turn.
        drained = static_cast<std::size_t>(n) < want && !c.wr.active;
        if (direct) {
          (void)c.m.consume_incoming_payload(static_cast<std::uint64_t>(n));
          c.wr.received += static_cast<std::uint64_t>(n);
          if (c.wr.received == c.wr.req.length && !finish_write(c)) return false;
        } else {
          c.end += static_cast<std::size_t>(n);
        }
        continue;
      }
      if (n == 0) {
        const auto e = c.m.on_eof();
        if (e.kind == event_kind::failed)
          log(c, "protocol error: " + std::string(nbdwire::to_string(e.error)));
        return false;  // the client is gone: nothing more can be delivered
      }
      if (errno == EINTR) continue;
      if (errno == EAGAIN) break;
      if (errno != ECONNRESET) log(c, std::string("receive: ") + std::strerror(errno));
      return false;
    }
    std::uint32_t mask = 0;
    const bool paused = !c.deferred.empty() || c.read_buffered > read_buffer_limit || c.finishing ||
                        c.queued_pieces() >= 256;
    if (!paused) mask |= EPOLLIN;
    if (c.output_pending()) mask |= EPOLLOUT;
    if (mask == 0) mask = EPOLLIN;  // never leave a connection with nothing to wake it
    if (mask != c.epoll_mask) {
      epoll_event ev{};
      ev.events = mask;
      ev.data.fd = c.fd;
      if (epoll_ctl(ep_, EPOLL_CTL_MOD, c.fd, &ev) != 0) return false;
      c.epoll_mask = mask;
    }
    return true;
  }

  settings s_;
  std::vector<nbdwire::export_config> configs_;
  // Context id 0: the only one offered.
  static constexpr std::string_view contexts_[] = {"base:allocation"};
  nbdwire::server_config cfg_;
  int listen_fd_ = -1, ep_ = -1, sig_fd_ = -1;
  std::unordered_map<int, std::unique_ptr<connection>> conns_;
};

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  try {
    server_loop loop(parse_args(argc, argv));
    return loop.run();
  } catch (const examples::failure& f) {
    std::fprintf(stderr, "nbdwire-server: %s\n", f.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "nbdwire-server: %s\n", e.what());
    return 1;
  }
}
