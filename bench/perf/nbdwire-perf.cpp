// SPDX-License-Identifier: MIT
// nbdwire-perf: an NBD load generator built on nbdwire's client machine.
//
//   nbdwire-perf URI [--rw=MODE] [--bs=SIZE] [--iodepth=N] [--connections=N] [--runtime=S] ...
//
// Every connection runs in its own thread: a socket, an nbdwire::client, one input buffer and
// one data buffer per request slot, all allocated before the first request. The machine does
// the handshake (fixed newstyle, newstyle or oldstyle, whatever the server offers), encodes
// the requests and decodes the replies. A burst of requests goes out in one sendmsg() (headers
// from the machine's outbox and WRITE data from the slot buffers, nbdwire::send_plan); replies
// come in with one recv() into a 256 KiB buffer (large READ data straight into its slot
// buffer). When replies come a few at a time (a slow server), the connection sleeps for the
// time several of them take before the next recv() (--coalesce), so one wakeup takes several:
// the sleep and the wakeup are most of a blocking client's CPU per I/O. Latency is taken from
// CLOCK_MONOTONIC once per burst sent and once per recv(), into a log-linear histogram; CPU per I/O is the threads' user + system time (RUSAGE_THREAD) over
// the measured window divided by the I/Os completed in it. `--help` documents the options,
// the output and the exit codes; bench/README.md has the same.
#include <nbdwire/nbdwire.hpp>
#include <nbdwire/transfer.hpp>
#include <nbdwire/uri.hpp>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <latch>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "../../examples/sockets/common.hpp"  // parse_size: the sizes every nbdwire tool takes
#if NBDWIRE_PERF_TLS
#include <fcntl.h>

#include "../../examples/sockets/tls_uri.hpp"  // nbds:// URIs, credentials, STARTTLS (GnuTLS)
#endif

namespace {

// ---- options ------------------------------------------------------------------------------

enum class mode : std::uint8_t { randread, randwrite, read, write, randrw, rw };

constexpr std::string_view mode_name(mode m) {
  switch (m) {
    case mode::randread: return "randread";
    case mode::randwrite: return "randwrite";
    case mode::read: return "read";
    case mode::write: return "write";
    case mode::randrw: return "randrw";
    case mode::rw: return "rw";
  }
  return "?";
}
constexpr bool is_random(mode m) { return m == mode::randread || m == mode::randwrite || m == mode::randrw; }
constexpr bool reads_only(mode m) { return m == mode::randread || m == mode::read; }

struct options {
  std::string uri_text;
  mode rw = mode::randread;
  unsigned rwmixread = 50;
  std::uint64_t bs = 4096;
  unsigned iodepth = 1;
  unsigned connections = 1;
  double runtime = 5;
  bool runtime_given = false;
  double ramp = 0;
  std::optional<std::uint64_t> size;
  std::uint64_t offset = 0;
  std::uint64_t ios = 0;  // 0: no count limit
  bool verify = false;
  bool json = false;
  std::uint64_t seed = 1;
  bool structured_replies = true;
  bool extended_headers = false;
  std::optional<unsigned> coalesce;  // replies per wakeup to wait for; default iodepth / 8
};

constexpr const char* usage_text =
    "usage: nbdwire-perf URI [OPTIONS]\n"
    "\n"
    "An NBD load generator. URI is nbd://HOST[:PORT][/EXPORT] or nbd+unix:///EXPORT?socket=PATH,\n"
    "or nbds:// and nbds+unix:// for TLS, with nbdwire-client's tls-* parameters (tls-certificates=DIR,\n"
    "tls-psk-file=FILE, tls-hostname=, tls-verify-peer=, tls-type=).\n"
    "Options take --name=value or --name value. SIZE accepts k, m, g, t (binary: 4k = 4096).\n"
    "\n"
    "  --rw=MODE           randread (default), randwrite, read, write, randrw, rw\n"
    "                      (read/write/rw are sequential; randrw and rw mix reads and writes)\n"
    "  --rwmixread=PCT     share of reads in randrw and rw, 0-100 (default 50)\n"
    "  --bs=SIZE           bytes per request (default 4k)\n"
    "  --iodepth=N         requests in flight per connection, 1-64 (default 1)\n"
    "  --connections=N     connections, one thread each, 1-256 (default 1)\n"
    "  --runtime=SECONDS   measured time (default 5; with --ios and no --runtime: no limit)\n"
    "  --ramp=SECONDS      run this long before measuring (default 0)\n"
    "  --size=SIZE         bytes of the export to use (default: export size - offset)\n"
    "  --offset=SIZE       first byte of the export to use (default 0)\n"
    "  --ios=N             stop after N I/Os (all connections together; each connection\n"
    "                      does its share in its own slice of the range)\n"
    "  --seed=N            random offsets and write data (default 1)\n"
    "  --verify            writes carry a pattern made from their offset and a generation;\n"
    "                      reads check it. Blocks written in this run must hold exactly their\n"
    "                      last generation; with read-only modes every block read must hold\n"
    "                      a pattern (from an earlier run with the same --bs and --offset).\n"
    "                      Each connection works in its own slice, with at most one request\n"
    "                      per block in flight.\n"
    "  --no-structured-replies  do not ask for structured replies (asked for by default)\n"
    "  --extended-headers  ask for extended headers (not asked for by default)\n"
    "  --coalesce=K        when replies arrive fewer than K at a time, sleep for the time K of\n"
    "                      them take before the next recv(), instead of waking for each; only\n"
    "                      with 2*K requests in flight, requests below 64 KiB. 0 or 1: never.\n"
    "                      Default iodepth/8 (4 at --iodepth=32; off below 16). Latency is taken\n"
    "                      when a reply is read, so it includes that sleep\n"
    "  --json              print one JSON object instead of the summary\n"
    "  -h, --help          this text\n"
    "\n"
    "The summary and --json report I/Os completed in the measured window, IOPS and bytes per\n"
    "second, latency (submit to reply, microseconds: min, mean, p50, p99, p99.9, max, from a\n"
    "log-linear histogram with 1/64 of a power of two resolution), and the client's own CPU\n"
    "(user + system of its connection threads over the window) per I/O.\n"
    "JSON keys: uri, rw, bs, iodepth, connections, rwmixread, offset, size, ramp_s, runtime_s,\n"
    "  structured_replies, extended_headers, ios, reads, writes, bytes, errors, iops,\n"
    "  bytes_per_s, mib_per_s, lat_min_us, lat_mean_us, lat_p50_us, lat_p99_us, lat_p999_us,\n"
    "  lat_max_us, cpu_user_s, cpu_sys_s, cpu_us_per_io, coalesce, recv_calls (blocking recv()\n"
    "  calls in the window, all connections), naps (--coalesce sleeps), verify, verified_reads,\n"
    "  unverified_reads, mismatches, first_mismatch_offset (null when none), error (null or\n"
    "  the first error).\n"
    "\n"
    "Exit status: 0 success; 1 connection, protocol or handshake failure, any error reply,\n"
    "or any verify mismatch; 2 usage error.\n";

[[noreturn]] void usage_error(const std::string& why) {
  std::fprintf(stderr, "nbdwire-perf: %s (try --help)\n", why.c_str());
  std::exit(2);
}

std::optional<double> parse_seconds(std::string_view s) {
  if (s.empty() || s.size() > 30) return std::nullopt;
  char buf[32];
  std::memcpy(buf, s.data(), s.size());
  buf[s.size()] = '\0';
  char* end = nullptr;
  const double v = std::strtod(buf, &end);
  if (end == buf || *end != '\0' || !(v >= 0) || v > 1e6) return std::nullopt;
  return v;
}

options parse_options(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "-h" || a == "--help") {
      std::fputs(usage_text, stdout);
      std::exit(0);
    }
    if (!a.starts_with("--")) {
      if (!o.uri_text.empty()) usage_error("more than one URI: " + std::string(a));
      o.uri_text = std::string(a);
      continue;
    }
    std::string_view name = a.substr(2), value;
    bool has_value = false;
    if (const auto eq = name.find('='); eq != std::string_view::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    auto flag = [&] {
      if (has_value) usage_error("--" + std::string(name) + " takes no value");
    };
    if (name == "verify") { flag(); o.verify = true; continue; }
    if (name == "json") { flag(); o.json = true; continue; }
    if (name == "no-structured-replies") { flag(); o.structured_replies = false; continue; }
    if (name == "extended-headers") { flag(); o.extended_headers = true; continue; }
    if (!has_value) {
      if (i + 1 >= argc) usage_error("--" + std::string(name) + " needs a value");
      value = argv[++i];
    }
    const std::string what = "--" + std::string(name) + "=" + std::string(value);
    auto number = [&](std::uint64_t lo, std::uint64_t hi) {
      const auto v = examples::parse_size(value);
      if (!v || *v < lo || *v > hi) usage_error("bad " + what);
      return *v;
    };
    if (name == "rw" || name == "readwrite") {
      if (value == "randread") o.rw = mode::randread;
      else if (value == "randwrite") o.rw = mode::randwrite;
      else if (value == "read") o.rw = mode::read;
      else if (value == "write") o.rw = mode::write;
      else if (value == "randrw") o.rw = mode::randrw;
      else if (value == "rw" || value == "readwrite") o.rw = mode::rw;
      else usage_error("bad " + what);
    } else if (name == "rwmixread") {
      o.rwmixread = static_cast<unsigned>(number(0, 100));
    } else if (name == "bs") {
      o.bs = number(1, 0xffffffffu);
    } else if (name == "iodepth") {
      o.iodepth = static_cast<unsigned>(number(1, nbdwire::max_in_flight));
    } else if (name == "connections") {
      o.connections = static_cast<unsigned>(number(1, 256));
    } else if (name == "runtime" || name == "ramp") {
      const auto v = parse_seconds(value);
      if (!v) usage_error("bad " + what);
      if (name == "ramp") o.ramp = *v;
      else o.runtime = *v, o.runtime_given = true;
    } else if (name == "size") {
      o.size = number(1, UINT64_MAX);
    } else if (name == "offset") {
      o.offset = number(0, UINT64_MAX);
    } else if (name == "ios") {
      o.ios = number(1, UINT64_MAX);
    } else if (name == "coalesce") {
      o.coalesce = static_cast<unsigned>(number(0, nbdwire::max_in_flight));
    } else if (name == "seed") {
      o.seed = number(0, UINT64_MAX);
    } else {
      usage_error("unknown option --" + std::string(name));
    }
  }
  if (o.uri_text.empty()) usage_error("no URI");
  if (!o.coalesce) o.coalesce = o.iodepth / 8;
  if (*o.coalesce < 2 || o.bs >= 64 * 1024) o.coalesce = 0;  // large payloads bypass the input buffer
  if (o.ios && !o.runtime_given) o.runtime = 0;
  if (!o.ios && o.runtime <= 0) usage_error("--runtime must be above 0 without --ios");
  if (o.verify && (o.bs < 16 || o.bs % 8 != 0)) usage_error("--verify needs --bs a multiple of 8, at least 16");
  return o;
}

// ---- time, CPU, random numbers --------------------------------------------------------------

std::int64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

struct cpu_times {
  double user = 0, sys = 0;
};
cpu_times thread_cpu() {
  rusage ru{};
  getrusage(RUSAGE_THREAD, &ru);
  return {static_cast<double>(ru.ru_utime.tv_sec) + static_cast<double>(ru.ru_utime.tv_usec) * 1e-6,
          static_cast<double>(ru.ru_stime.tv_sec) + static_cast<double>(ru.ru_stime.tv_usec) * 1e-6};
}

// splitmix64: the generator for offsets and write data, and the mixer of the verify pattern.
constexpr std::uint64_t mix64(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
struct rng {
  std::uint64_t state;
  std::uint64_t next() { return mix64(state += 0x9e3779b97f4a7c15ull); }
};

// ---- latency histogram ------------------------------------------------------------------------

/// Log-linear: values below 64 ns exactly, then 64 buckets per power of two (within 1/64, about
/// 1.6 %, of the true value). Fixed size, no per-sample storage; merged across connections.
class histogram {
 public:
  static constexpr unsigned sub_bits = 6, sub = 1u << sub_bits, groups = 64 - sub_bits + 1;

  void add(std::uint64_t v) {
    ++counts_[index(v)];
    ++n_;
    sum_ += v;
    min_ = std::min(min_, v);
    max_ = std::max(max_, v);
  }
  void merge(const histogram& o) {
    for (std::size_t i = 0; i < counts_.size(); ++i) counts_[i] += o.counts_[i];
    n_ += o.n_;
    sum_ += o.sum_;
    min_ = std::min(min_, o.min_);
    max_ = std::max(max_, o.max_);
  }
  [[nodiscard]] std::uint64_t count() const { return n_; }
  [[nodiscard]] double mean() const { return n_ ? static_cast<double>(sum_) / static_cast<double>(n_) : 0; }
  [[nodiscard]] std::uint64_t min() const { return n_ ? min_ : 0; }
  [[nodiscard]] std::uint64_t max() const { return max_; }
  /// The value below which `pct` percent of the samples lie (the middle of its bucket).
  [[nodiscard]] double percentile(double pct) const {
    if (n_ == 0) return 0;
    auto rank = static_cast<std::uint64_t>(pct / 100.0 * static_cast<double>(n_) + 0.999999);
    rank = std::clamp<std::uint64_t>(rank, 1, n_);
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < counts_.size(); ++i) {
      if ((seen += counts_[i]) < rank) continue;
      const std::uint64_t g = i / sub, s = i % sub;
      const std::uint64_t lo = g == 0 ? s : (sub + s) << (g - 1);
      const std::uint64_t width = g == 0 ? 1 : std::uint64_t{1} << (g - 1);
      const double mid = static_cast<double>(lo) + static_cast<double>(width - 1) / 2.0;
      return std::clamp(mid, static_cast<double>(min_), static_cast<double>(max_));
    }
    return static_cast<double>(max_);
  }

 private:
  static std::size_t index(std::uint64_t v) {
    if (v < sub) return static_cast<std::size_t>(v);
    const unsigned msb = 63u - static_cast<unsigned>(std::countl_zero(v));
    const unsigned shift = msb - sub_bits;
    return static_cast<std::size_t>((shift + 1) * sub + ((v >> shift) - sub));
  }
  std::array<std::uint64_t, groups * sub> counts_{};
  std::uint64_t n_ = 0, sum_ = 0, min_ = UINT64_MAX, max_ = 0;
};

// ---- the verify pattern -------------------------------------------------------------------------

/// A block written with --verify: word 0 is the magic and the generation, word 1 the block's
/// export offset, every other 8-byte word a hash of (offset, generation, word index).
constexpr std::uint64_t pattern_magic = 0x6e62777000000000ull;  // "nbwp" in the high half

std::uint64_t pattern_word(std::uint64_t off, std::uint32_t gen, std::uint64_t k) {
  return mix64(off * 0x9e3779b97f4a7c15ull ^ (static_cast<std::uint64_t>(gen) << 40) ^ k);
}

void fill_pattern(std::byte* p, std::uint64_t len, std::uint64_t off, std::uint32_t gen) {
  const std::uint64_t head[2] = {pattern_magic | gen, off};
  std::memcpy(p, head, sizeof head);
  for (std::uint64_t k = 2; k < len / 8; ++k) {
    const std::uint64_t w = pattern_word(off, gen, k);
    std::memcpy(p + k * 8, &w, 8);
  }
}

/// The generation a block holds when it holds a whole pattern for `off`; nullopt otherwise,
/// with `bad_at` set to the first byte that is wrong.
std::optional<std::uint32_t> check_pattern(const std::byte* p, std::uint64_t len, std::uint64_t off,
                                           std::uint64_t& bad_at) {
  std::uint64_t head[2];
  std::memcpy(head, p, sizeof head);
  if ((head[0] & 0xffffffff00000000ull) != pattern_magic || (head[0] & 0xffffffffu) == 0) return bad_at = 0, std::nullopt;
  if (head[1] != off) return bad_at = 8, std::nullopt;
  const auto gen = static_cast<std::uint32_t>(head[0]);
  for (std::uint64_t k = 2; k < len / 8; ++k) {
    std::uint64_t w;
    std::memcpy(&w, p + k * 8, 8);
    if (const std::uint64_t want = pattern_word(off, gen, k); w != want) {
      unsigned char a[8], b[8];
      std::memcpy(a, &w, 8);
      std::memcpy(b, &want, 8);
      unsigned j = 0;
      while (a[j] == b[j]) ++j;
      return bad_at = k * 8 + j, std::nullopt;
    }
  }
  return gen;
}

// ---- connecting -----------------------------------------------------------------------------

std::string errno_text(int e) { return std::strerror(e); }

int dial(const nbdwire::uri& u, std::string& err) {
  if (u.transport == nbdwire::uri_transport::unix_socket) {
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::memcpy(a.sun_path, u.socket().data(), u.socket().size());
    const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + u.socket().size());
    if (fd >= 0 && connect(fd, reinterpret_cast<sockaddr*>(&a), len) == 0) return fd;
    err = "cannot connect to " + std::string(u.socket()) + ": " + errno_text(errno);
    if (fd >= 0) close(fd);
    return -1;
  }
  addrinfo hints{}, *res = nullptr;
  hints.ai_socktype = SOCK_STREAM;
  const std::string host = u.host().empty() ? "localhost" : std::string(u.host());
  if (const int g = getaddrinfo(host.c_str(), std::to_string(u.port).c_str(), &hints, &res)) {
    err = "cannot resolve " + host + ": " + gai_strerror(g);
    return -1;
  }
  int fd = -1, last = 0;
  for (auto* ai = res; ai && fd < 0; ai = ai->ai_next) {
    fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
      last = errno;
      close(fd);
      fd = -1;
    }
  }
  freeaddrinfo(res);
  if (fd < 0) {
    err = "cannot connect to " + host + ":" + std::to_string(u.port) + ": " + errno_text(last);
    return -1;
  }
  const int one = 1;
  (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

// ---- one connection -------------------------------------------------------------------------

/// What every connection shares: set by main before the start signal.
struct plan {
  const options* o = nullptr;
  std::uint64_t base = 0;    // first byte used
  std::uint64_t blocks = 0;  // blocks of bs bytes used
  std::int64_t ramp_end = 0, deadline = 0;  // ns; deadline 0: none
  std::vector<std::uint32_t>* gens = nullptr;  // --verify: per block, generation | busy bit
};

constexpr std::uint32_t busy_bit = 0x80000000u;

struct slot {
  std::uint64_t offset = 0;
  std::uint64_t block = 0;
  std::int64_t start = 0;
  std::byte* buf = nullptr;
  std::uint32_t gen = 0;
  bool write = false;
};

struct aligned_free {
  void operator()(std::byte* p) const { std::free(p); }
};

#if NBDWIRE_PERF_TLS
using tls_credentials_ptr = std::shared_ptr<const examples::tls_credentials>;
#else
using tls_credentials_ptr = std::shared_ptr<const void>;
#endif

class worker {
 public:
  worker(const nbdwire::uri& u, const options& o, unsigned index, nbdwire::client_tls tls, tls_credentials_ptr creds)
      : u_(u), o_(o), index_(index), creds_(std::move(creds)) {
    nbdwire::client_config cfg;
    cfg.request_structured_replies = o.structured_replies;
    cfg.request_extended_headers = o.extended_headers;
    cfg.tls = tls;
    c_ = std::make_unique<nbdwire::client>(cfg);
    in_.reset(static_cast<std::byte*>(std::aligned_alloc(4096, in_cap)));
  }
  worker(const worker&) = delete;
  worker& operator=(const worker&) = delete;
  ~worker() {
#if NBDWIRE_PERF_TLS
    if (tls_) tls_->bye();
#endif
    if (fd_ >= 0) close(fd_);
  }

  // Results (read by main after join).
  histogram hist;
  std::uint64_t ios = 0, reads = 0, writes = 0, bytes = 0, errors = 0;
  std::uint64_t verified = 0, unverified = 0, mismatches = 0;
  std::optional<std::uint64_t> first_mismatch;
  std::string mismatch_text, error_text, fatal;
  cpu_times cpu{};
  std::int64_t window_start = 0, window_end = 0;
  std::uint64_t recv_calls = 0, naps = 0;  // in the window: blocking recv() calls that returned; sleeps

  [[nodiscard]] const nbdwire::negotiated& negotiated() const { return c_->negotiated(); }

  /// Connects and runs the handshake; false (with `fatal`) on failure.
  bool handshake() {
    fd_ = dial(u_, fatal);
    if (fd_ < 0) return false;
    timeval tv{30, 0};  // a server silent this long while a reply is due is an error
    (void)setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    const std::string name = "export '" + std::string(u_.export_name()) + "'";
    for (;;) {
#if NBDWIRE_PERF_TLS
      if (tls_) {
        if (examples::send_queued_tls(*tls_, *c_) != examples::send_status::done)
          return fail_with("send: " + (errno == EIO ? tls_->error() : errno_text(errno)));
      } else
#endif
      for (auto out = c_->pending_output(); !out.empty(); out = c_->pending_output()) {
        const ssize_t n = send(fd_, out.data(), out.size(), MSG_NOSIGNAL);
        if (n < 0) return fail_with("send: " + errno_text(errno));
        c_->consume_output(static_cast<std::size_t>(n));
      }
      const ssize_t got = receive(in_.get(), in_cap);
      if (got < 0) {
#if NBDWIRE_PERF_TLS
        if (tls_) return fail_with(name + ": " + (errno == EIO && tls_->error().find("alert") != std::string::npos
                                                      ? tls_->error()
                                                      : std::string(examples::tls_closed_text)));
#endif
        return fail_with("handshake: " + errno_text(errno));
      }
      if (got == 0) {
#if NBDWIRE_PERF_TLS
        if (tls_) return fail_with(name + ": " + examples::tls_closed_text);
#endif
        const auto ev = c_->on_eof();
        return fail_with(name + ": the server closed the connection during the handshake" +
                         (ev.kind == nbdwire::event_kind::failed ? " (" + std::string(to_string(ev.error)) + ")" : ""));
      }
      nbdwire::bytes_view in(in_.get(), static_cast<std::size_t>(got));
      nbdwire::receive_result r;
      bool tls_began = false;  // then the machine is asked again (with no input) for its next step
      do {
        tls_began = false;
        r = c_->receive(in);
        in = in.subspan(r.consumed);
        switch (r.ev.kind) {
          case nbdwire::event_kind::start_tls:  // STARTTLS acknowledged: the rest of the input is TLS's
#if NBDWIRE_PERF_TLS
            try {
              tls_ = examples::start_client_tls(fd_, *c_, in, creds_);
            } catch (const examples::failure& e) {
              return fail_with(name + ": " + e.what());
            }
            in = {};
            tls_began = true;
            break;
#else
            return fail_with(name + ": this nbdwire-perf has no TLS");
#endif
          case nbdwire::event_kind::greeting:
            if (const auto g = c_->go(u_.export_name()); !g) return fail_with("GO: " + std::string(to_string(g.error())));
            break;
          case nbdwire::event_kind::option_refused:
            if (r.ev.reply == nbdwire::reply_type::err_tls_reqd)
              return fail_with(name + ": the server requires TLS (use nbds:// or nbds+unix://)");
            return fail_with(name + " refused: " + std::string(to_string(r.ev.reply)) +
                             (r.ev.data.empty() ? "" : ": " + std::string(reinterpret_cast<const char*>(r.ev.data.data()),
                                                                        r.ev.data.size())));
          case nbdwire::event_kind::ready:
            if (!in.empty()) return fail_with(name + ": the server sent data before any request");
#if NBDWIRE_PERF_TLS
            // TLS: the socket is non-blocking from here (a blocking send() inside GnuTLS could
            // wait for a server that waits for us to read); run() waits in poll().
            if (tls_ && fcntl(fd_, F_SETFL, fcntl(fd_, F_GETFL) | O_NONBLOCK) != 0)
              return fail_with("fcntl: " + errno_text(errno));
#endif
            return true;
          case nbdwire::event_kind::failed:
#if NBDWIRE_PERF_TLS
            if (const auto t = examples::tls_failure_text(r.ev.error)) return fail_with(name + ": " + *t);
#endif
            return fail_with(name + ": " + std::string(to_string(r.ev.error)));
          case nbdwire::event_kind::closed:
          case nbdwire::event_kind::disconnected: return fail_with(name + ": the server ended the handshake");
          default: break;
        }
      } while (tls_began || r.call_again());
    }
  }

  /// Allocates the slots and this connection's slice of the range (after the handshake).
  void prepare(const plan& p) {
    p_ = &p;
    const std::uint64_t n = o_.connections;
    first_ = p.blocks * index_ / n;
    count_ = p.blocks * (index_ + 1) / n - first_;
    next_seq_ = first_;
    quota_ = o_.ios ? o_.ios * (index_ + 1) / n - o_.ios * index_ / n : 0;
    r_.state = mix64(o_.seed * 0x100000001b3ull + index_ + 1);
    const std::size_t bs = static_cast<std::size_t>(o_.bs);
    const std::size_t stride = (bs + 4095) / 4096 * 4096;
    bufs_.reset(static_cast<std::byte*>(std::aligned_alloc(4096, stride * o_.iodepth)));
    for (std::size_t i = 0; i < stride * o_.iodepth; i += 8) {  // write data: random, once
      const std::uint64_t w = r_.next();
      std::memcpy(bufs_.get() + i, &w, std::min<std::size_t>(8, stride * o_.iodepth - i));
    }
    slots_.resize(o_.iodepth);
    free_.clear();
    for (unsigned i = 0; i < o_.iodepth; ++i) {
      slots_[i].buf = bufs_.get() + stride * i;
      free_.push_back(o_.iodepth - 1 - i);
    }
  }

  /// The transmission phase until the deadline or quota, then NBD_CMD_DISC and the close.
  void run() {
    bool measuring = false, stopping = false, disc = false;
    std::int64_t now = now_ns();
    for (;;) {
      if (!measuring && now >= p_->ramp_end) {
        measuring = true;
        cpu0_ = thread_cpu();
        recv0_ = recv_calls_, naps0_ = naps_;
        window_start = p_->ramp_end;
      }
      if (!stopping && ((p_->deadline && now >= p_->deadline) || (quota_ && completed_ == quota_))) {
        stopping = true;
        end_measuring(p_->deadline && now >= p_->deadline ? p_->deadline : last_done_);
      }
      if (!stopping && !submit(now)) return;
      if (stopping && !disc && c_->in_flight() == 0) {
        (void)c_->disconnect();
        disc = true;
      }
      if (!send_output()) return;
      const bool queued = output_queued();
      if (disc && !queued) break;  // NBD_CMD_DISC is out and nothing is in flight: done
      // Coalescing (--coalesce=K): the last wakeup brought fewer than K replies, so the server
      // answers a few at a time. Sleep for the time K replies take (measured over the last
      // wakeups) before the recv(), so that one wakeup takes K of them; the server keeps at
      // least K requests to work on. A sleep and a wakeup cost the same for 1 reply or for K.
      const unsigned k = *o_.coalesce;
      if (ipos_ == iend_ && !queued && k && last_batch_ < k && c_->in_flight() >= 2 * k && gap_ns_ > 0 &&
          (!tls_active() || (tls_drained_ && !tls_pending()))) {
        const std::int64_t nap = std::min<std::int64_t>(gap_ns_ * k, max_nap_ns);
        timespec ts{0, static_cast<long>(nap)};
        (void)nanosleep(&ts, nullptr);
        ++naps_;
      }
      // Wait for input, or for room to send when output is queued (then without blocking in
      // recv). Over TLS the socket is non-blocking: wait in poll() unless TLS holds decrypted
      // input already.
      int flags = 0;
      const bool must_poll = queued || (tls_active() && ipos_ == iend_ && tls_drained_ && !tls_pending());
      if (must_poll) {
        pollfd pf{fd_, static_cast<short>(POLLIN | (queued ? POLLOUT : 0)), 0};
        const int pr = poll(&pf, 1, 30000);
        if (pr < 0 && errno != EINTR) return set_fatal("poll: " + errno_text(errno));
        if (pr == 0) return set_fatal("the server took nothing and sent nothing for 30 s");
        if (!(pf.revents & (POLLIN | POLLHUP | POLLERR))) {
          now = now_ns();
          continue;
        }
        flags = MSG_DONTWAIT;
      }
      if (tls_active()) flags = MSG_DONTWAIT;
      if (ipos_ == iend_) {
        const auto pay = c_->incoming_payload();
        ssize_t n;
        if (pay && pay->length >= direct_min) {  // large READ data: straight into its slot buffer
          slot& s = slots_[pay->tag];
          n = receive(s.buf + (pay->offset - s.offset), static_cast<std::size_t>(pay->length), flags);
          if (n > 0) (void)c_->consume_incoming_payload(static_cast<std::uint64_t>(n));
        } else {
          n = receive(in_.get(), in_cap, flags);
          if (n > 0) ipos_ = 0, iend_ = static_cast<std::size_t>(n);
        }
        if (n < 0) {
          if (errno == EINTR || (flags && errno == EAGAIN)) {
            now = now_ns();
            if (tls_active() && errno == EAGAIN) {  // TLS: the wakeup has taken all there was
              tls_drained_ = true;
              end_wakeup(now);
            }
            continue;
          }
          return set_fatal(errno == EAGAIN ? "no reply from the server for 30 s"
                           : tls_active() && errno == EIO ? "TLS: " + tls_error()
                                                          : "recv: " + errno_text(errno));
        }
        if (tls_active()) {
          if (tls_drained_) ++recv_calls_;  // the first read after a wait
          tls_drained_ = false;
        } else if (!flags) {
          ++recv_calls_;
        }
        if (n == 0) {
          const auto ev = c_->on_eof();
          if (ev.kind == nbdwire::event_kind::disconnected && stopping) break;
          return set_fatal(ev.kind == nbdwire::event_kind::failed
                               ? "the server closed the connection: " + std::string(to_string(ev.error))
                               : "the server closed the connection");
        }
      }
      now = now_ns();
      const std::uint64_t done_before = completed_;
      if (!drain_input(now)) return;
      wake_replies_ += completed_ - done_before;
      if (!tls_active()) end_wakeup(now);  // TLS reads one record per call: its wakeup ends at EAGAIN
      if (c_->finished()) break;
    }
    if (!stopping) end_measuring(last_done_);
  }

 private:
  static constexpr std::size_t in_cap = 256 * 1024;
  static constexpr std::uint64_t direct_min = 64 * 1024;
  static constexpr std::int64_t max_nap_ns = 1000000;  // --coalesce sleeps at most 1 ms

  [[nodiscard]] bool tls_active() const {
#if NBDWIRE_PERF_TLS
    return tls_ != nullptr;
#else
    return false;
#endif
  }
  [[nodiscard]] bool tls_pending() const {
#if NBDWIRE_PERF_TLS
    return tls_ && tls_->pending() > 0;
#else
    return false;
#endif
  }
  [[nodiscard]] std::string tls_error() const {
#if NBDWIRE_PERF_TLS
    if (tls_) return tls_->error();
#endif
    return {};
  }
  /// recv() from the socket, or from the TLS session (always non-blocking; `flags` unused).
  ssize_t receive(void* dst, std::size_t len, int flags = 0) {
#if NBDWIRE_PERF_TLS
    if (tls_) return tls_->recv(dst, len);
#endif
    return recv(fd_, dst, len, flags);
  }

  /// A wakeup ends: the time per reply since the last one that brought any (for --coalesce).
  void end_wakeup(std::int64_t now) {
    if (wake_replies_ == 0) return;
    if (prev_wake_) {
      const std::int64_t sample = (now - prev_wake_) / static_cast<std::int64_t>(wake_replies_);
      gap_ns_ = gap_ns_ ? gap_ns_ + (sample - gap_ns_) / 8 : sample;
    }
    prev_wake_ = now;
    last_batch_ = wake_replies_;
    wake_replies_ = 0;
  }

  bool fail_with(std::string why) {
    fatal = std::move(why);
    return false;
  }
  void set_fatal(std::string why) {
    fatal = std::move(why);
    if (window_end == 0) end_measuring(last_done_ ? last_done_ : now_ns());
  }
  void end_measuring(std::int64_t at) {
    const cpu_times c1 = thread_cpu();
    cpu = {c1.user - cpu0_.user, c1.sys - cpu0_.sys};
    recv_calls = recv_calls_ - recv0_, naps = naps_ - naps0_;
    window_end = std::max(at, window_start);
  }
  [[nodiscard]] bool output_queued() const { return !c_->pending_output().empty() || c_->pending_payload(); }

  bool write_next() {
    switch (o_.rw) {
      case mode::randread:
      case mode::read: return false;
      case mode::randwrite:
      case mode::write: return true;
      default: return r_.next() % 100 >= o_.rwmixread;
    }
  }

  /// Fills the queue up to iodepth; false on a request the machine refuses.
  bool submit(std::int64_t now) {
    while (c_->in_flight() < o_.iodepth && !free_.empty() && (!quota_ || issued_ < quota_)) {
      std::uint64_t b;
      if (is_random(o_.rw)) {
        b = first_ + r_.next() % count_;
      } else {
        b = next_seq_;
        next_seq_ = next_seq_ + 1 == first_ + count_ ? first_ : next_seq_ + 1;
      }
      if (p_->gens) {  // at most one request per block in flight: take the next free block
        auto& g = *p_->gens;
        for (std::uint64_t tries = 0; g[b] & busy_bit; ++tries) {
          if (tries == count_) return true;  // cannot happen (count_ >= iodepth): wait
          b = b + 1 == first_ + count_ ? first_ : b + 1;
        }
      }
      const unsigned idx = free_.back();
      free_.pop_back();
      slot& s = slots_[idx];
      s.block = b;
      s.offset = p_->base + b * o_.bs;
      s.write = write_next();
      s.start = now;
      if (p_->gens) {
        auto& g = (*p_->gens)[b];
        if (s.write) {
          s.gen = (g & ~busy_bit) + 1;
          if (s.gen >= busy_bit) s.gen = 1;
          fill_pattern(s.buf, o_.bs, s.offset, s.gen);
        }
        g |= busy_bit;
      }
      const auto len = static_cast<std::uint32_t>(o_.bs);
      const auto r = s.write ? c_->write(s.offset, len, 0, idx) : c_->read(s.offset, len, 0, idx);
      if (!r) {
        set_fatal(std::string(s.write ? "WRITE" : "READ") + " at " + std::to_string(s.offset) +
                  " refused by the client machine: " + std::string(to_string(r.error())));
        return false;
      }
      ++issued_;
    }
    return true;
  }

  /// Headers from the outbox and WRITE data from the slot buffers, one sendmsg() per plan.
  bool send_output() {
    const auto map = [&](const nbdwire::payload_span& p) {
      const slot& s = slots_[p.tag];
      return nbdwire::bytes_view{s.buf + (p.offset - s.offset), static_cast<std::size_t>(p.length)};
    };
#if NBDWIRE_PERF_TLS
    if (tls_) {  // one TLS record (at most 16 KiB) per send(), as nbdwire-client sends
      const auto st = examples::send_queued_tls(*tls_, *c_, map, [](const nbdwire::payload_span&) {});
      if (st != examples::send_status::failed) return true;  // done, or the socket is full
      set_fatal("send: " + (errno == EIO ? "TLS: " + tls_->error() : errno_text(errno)));
      return false;
    }
#endif
    for (;;) {
      nbdwire::send_plan<64> plan(*c_, map);
      if (plan.empty()) return true;
      iovec iov[64];
      msghdr mh{};
      mh.msg_iov = iov;
      for (const auto& seg : plan.segments()) iov[mh.msg_iovlen++] = {const_cast<std::byte*>(seg.base), seg.len};
      const ssize_t sent = sendmsg(fd_, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (sent < 0) {
        if (errno == EAGAIN || errno == EINTR) return true;
        set_fatal("send: " + errno_text(errno));
        return false;
      }
      (void)plan.advance(*c_, static_cast<std::size_t>(sent));
      if (static_cast<std::size_t>(sent) < plan.size()) return true;  // the socket is full
    }
  }

  /// Feeds the received input to the machine and acts on its events.
  bool drain_input(std::int64_t now) {
    for (;;) {
      nbdwire::receive_result r;
      do {
        r = c_->receive({in_.get() + ipos_, iend_ - ipos_});
        ipos_ += r.consumed;
        const nbdwire::event& ev = r.ev;
        switch (ev.kind) {
          case nbdwire::event_kind::payload: {
            slot& s = slots_[ev.tag];
            std::memcpy(s.buf + (ev.offset - s.offset), ev.data.data(), ev.data.size());
            break;
          }
          case nbdwire::event_kind::read_hole: {
            slot& s = slots_[ev.tag];
            std::memset(s.buf + (ev.offset - s.offset), 0, static_cast<std::size_t>(ev.length));
            break;
          }
          case nbdwire::event_kind::error_chunk:
            if (error_text.empty() && !ev.data.empty())
              chunk_message_.assign(reinterpret_cast<const char*>(ev.data.data()), ev.data.size());
            break;
          case nbdwire::event_kind::reply: complete(ev, now); break;
          case nbdwire::event_kind::failed:
            set_fatal("protocol error: " + std::string(to_string(ev.error)));
            return false;
          case nbdwire::event_kind::closed:
          case nbdwire::event_kind::disconnected: return true;
          default: break;
        }
      } while (r.call_again());
      if (r.ev.kind != nbdwire::event_kind::blocked) break;
      if (!send_output()) return false;  // the machine holds input back until its output is out
    }
    if (ipos_ == iend_) ipos_ = iend_ = 0;
    return true;
  }

  void complete(const nbdwire::event& ev, std::int64_t now) {
    const auto idx = static_cast<unsigned>(ev.tag);
    slot& s = slots_[idx];
    free_.push_back(idx);
    ++completed_;
    std::uint32_t* g = p_->gens ? &(*p_->gens)[s.block] : nullptr;
    if (ev.status != nbdwire::nbd_error::ok) {
      ++errors;
      if (error_text.empty())
        error_text = std::string(s.write ? "WRITE" : "READ") + " at " + std::to_string(s.offset) + ": " +
                     std::string(to_string(ev.status)) + (chunk_message_.empty() ? "" : ": " + chunk_message_);
      if (g) *g = s.write ? 0 : *g & ~busy_bit;  // after a failed write the block's content is unknown
      return;
    }
    if (g) {
      if (s.write) {
        *g = s.gen;
      } else {
        *g &= ~busy_bit;
        verify_read(s, *g);
      }
    }
    if (now >= p_->ramp_end && (!p_->deadline || now < p_->deadline)) {
      hist.add(static_cast<std::uint64_t>(std::max<std::int64_t>(now - s.start, 0)));
      ++ios;
      ++(s.write ? writes : reads);
      bytes += o_.bs;
      last_done_ = now;
    }
  }

  void verify_read(const slot& s, std::uint32_t& known) {
    std::uint64_t bad_at = 0;
    const auto found = check_pattern(s.buf, o_.bs, s.offset, bad_at);
    if (known != 0) {
      if (found && *found == known) return (void)++verified;
      if (found) bad_at = 0;
      return mismatch(s.offset + bad_at, "block at " + std::to_string(s.offset) + " should hold generation " +
                                              std::to_string(known) +
                                              (found ? ", holds generation " + std::to_string(*found)
                                                     : ", differs at byte " + std::to_string(bad_at)));
    }
    if (found) {  // written before this run, or not yet by it: the pattern is whole
      known = *found;
      return (void)++verified;
    }
    if (!reads_only(o_.rw)) return (void)++unverified;  // not written by this run yet: anything goes
    mismatch(s.offset + bad_at, "block at " + std::to_string(s.offset) +
                                    " holds no verify pattern (differs at byte " + std::to_string(bad_at) + ")");
  }

  void mismatch(std::uint64_t at, std::string text) {
    ++mismatches;
    if (!first_mismatch) {
      first_mismatch = at;
      mismatch_text = std::move(text);
    }
  }

  const nbdwire::uri& u_;
  const options& o_;
  unsigned index_;
  std::unique_ptr<nbdwire::client> c_;
  int fd_ = -1;
  std::unique_ptr<std::byte, aligned_free> in_, bufs_;
  std::size_t ipos_ = 0, iend_ = 0;
  const plan* p_ = nullptr;
  std::vector<slot> slots_;
  std::vector<unsigned> free_;
  std::uint64_t first_ = 0, count_ = 0, next_seq_ = 0, quota_ = 0, issued_ = 0, completed_ = 0;
  std::int64_t last_done_ = 0;
  std::int64_t prev_wake_ = 0, gap_ns_ = 0;  // --coalesce: the last wakeup with replies, time per reply
  std::uint64_t last_batch_ = 0;             // replies taken by the last wakeup with any
  std::uint64_t wake_replies_ = 0;           // replies taken by this wakeup so far
  bool tls_drained_ = true;                  // TLS: the last read found nothing (wait in poll next)
  std::uint64_t recv_calls_ = 0, naps_ = 0, recv0_ = 0, naps0_ = 0;
  rng r_{1};
  cpu_times cpu0_{};
  std::string chunk_message_;
  tls_credentials_ptr creds_;
#if NBDWIRE_PERF_TLS
  std::unique_ptr<examples::tls_session> tls_;
#endif
};

// ---- output ---------------------------------------------------------------------------------

std::string json_string(std::string_view s) {
  std::string o = "\"";
  for (const char ch : s) {
    const auto u = static_cast<unsigned char>(ch);
    if (ch == '"' || ch == '\\') o += '\\', o += ch;
    else if (u < 0x20) {
      char b[8];
      std::snprintf(b, sizeof b, "\\u%04x", u);
      o += b;
    } else o += ch;
  }
  return o + "\"";
}

}  // namespace

int main(int argc, char** argv) {
  const options o = parse_options(argc, argv);
  const auto u = nbdwire::parse_uri(o.uri_text);
  if (!u) usage_error("bad URI " + o.uri_text + ": " + std::string(to_string(u.error())));
  if (u->transport == nbdwire::uri_transport::vsock) usage_error("vsock URIs are not supported by nbdwire-perf");
  // TLS: nbds:// requires it, nbd:// with tls-certificates= or tls-psk-file= tries it; the
  // URI's TLS settings as nbdwire-client takes them, credentials loaded once for all connections.
  nbdwire::client_tls tls = nbdwire::client_tls::off;
  tls_credentials_ptr creds;
  if (u->wants_tls()) {
#if NBDWIRE_PERF_TLS
    examples::client_uri cu;
    try {
      cu = examples::parse_client_uri(o.uri_text);
    } catch (const examples::failure& e) {
      usage_error(e.what());
    }
    tls = examples::tls_policy(cu);
    try {
      if (examples::may_use_tls(cu)) creds = examples::client_credentials(cu.tls_config);
    } catch (const examples::failure& e) {
      std::fprintf(stderr, "nbdwire-perf: %s\n", e.what());
      return 1;
    }
#else
    usage_error("TLS (nbds://, tls-* parameters): this nbdwire-perf was built without GnuTLS");
#endif
  }

  std::vector<std::unique_ptr<worker>> workers;
  for (unsigned i = 0; i < o.connections; ++i) workers.push_back(std::make_unique<worker>(*u, o, i, tls, creds));
  plan p;
  p.o = &o;
  std::vector<std::uint32_t> gens;
  std::latch connected(o.connections);
  std::atomic<int> go{0};  // 1: run, 2: give up
  std::vector<std::thread> threads;
  for (auto& w : workers) {
    threads.emplace_back([&, wp = w.get()] {
      const bool ok = wp->handshake();
      connected.count_down();
      go.wait(0);
      if (ok && go.load() == 1) wp->run();
    });
  }
  connected.wait();

  // Every connection has done its handshake: check the export against the options.
  std::string setup_error;
  for (const auto& w : workers)
    if (!w->fatal.empty() && setup_error.empty()) setup_error = w->fatal;
  const nbdwire::negotiated& n = workers[0]->negotiated();
  std::uint64_t size = 0;
  if (setup_error.empty()) {
    const auto& bsz = n.block_size;
    if (o.offset >= n.export_size) setup_error = "--offset is not below the export size " + std::to_string(n.export_size);
    else if (o.size && *o.size > n.export_size - o.offset)
      setup_error = "--offset + --size is beyond the export size " + std::to_string(n.export_size);
    else if (!reads_only(o.rw) && n.read_only()) setup_error = "the export is read-only, and --rw=" +
                                                               std::string(mode_name(o.rw)) + " writes";
    else if (o.bs % bsz.minimum != 0 || o.offset % bsz.minimum != 0)
      setup_error = "--bs and --offset must be multiples of the export's minimum block size " +
                    std::to_string(bsz.minimum);
    else if (o.bs > max_request_length(n, nbdwire::command::read))
      setup_error = "--bs is above the export's maximum request size " +
                    std::to_string(max_request_length(n, nbdwire::command::read));
    size = o.size.value_or(n.export_size - o.offset);
    p.base = o.offset;
    p.blocks = size / o.bs;
    if (setup_error.empty() && p.blocks < o.connections)
      setup_error = "the range (" + std::to_string(size) + " bytes) holds fewer blocks than --connections";
    if (setup_error.empty() && o.verify) {
      if (p.blocks / o.connections < o.iodepth)
        setup_error = "--verify needs at least --iodepth blocks per connection";
      else if (p.blocks > (std::uint64_t{1} << 30))
        setup_error = "--verify keeps 4 bytes per block: the range has too many blocks (use a larger --bs or a smaller --size)";
      else {
        gens.assign(static_cast<std::size_t>(p.blocks), 0);
        p.gens = &gens;
      }
    }
  }
  if (setup_error.empty())
    for (auto& w : workers) w->prepare(p);
  const std::int64_t t0 = now_ns();
  p.ramp_end = t0 + static_cast<std::int64_t>(o.ramp * 1e9);
  p.deadline = o.runtime > 0 ? p.ramp_end + static_cast<std::int64_t>(o.runtime * 1e9) : 0;
  go.store(setup_error.empty() ? 1 : 2);
  go.notify_all();
  for (auto& t : threads) t.join();
  if (!setup_error.empty()) {
    std::fprintf(stderr, "nbdwire-perf: %s\n", setup_error.c_str());
    return 1;
  }

  histogram h;
  std::uint64_t ios = 0, reads = 0, writes = 0, bytes = 0, errors = 0, verified = 0, unverified = 0, mismatches = 0;
  double user = 0, sys = 0;
  std::uint64_t recv_calls = 0, naps = 0;
  std::int64_t window = 0;
  std::optional<std::uint64_t> first_mismatch;
  std::string mismatch_text, first_error, fatal;
  for (const auto& w : workers) {
    h.merge(w->hist);
    ios += w->ios, reads += w->reads, writes += w->writes, bytes += w->bytes, errors += w->errors;
    verified += w->verified, unverified += w->unverified, mismatches += w->mismatches;
    user += w->cpu.user, sys += w->cpu.sys;
    recv_calls += w->recv_calls, naps += w->naps;
    window = std::max(window, w->window_end - w->window_start);
    if (w->first_mismatch && (!first_mismatch || *w->first_mismatch < *first_mismatch))
      first_mismatch = w->first_mismatch, mismatch_text = w->mismatch_text;
    if (first_error.empty()) first_error = w->error_text;
    if (fatal.empty()) fatal = w->fatal;
  }
  const double secs = static_cast<double>(window) * 1e-9;
  const double iops = secs > 0 ? static_cast<double>(ios) / secs : 0;
  const double bps = secs > 0 ? static_cast<double>(bytes) / secs : 0;
  const double cpu_per_io = ios ? (user + sys) / static_cast<double>(ios) * 1e6 : 0;
  const std::string error = !fatal.empty() ? fatal : first_error;
  const bool ok = fatal.empty() && errors == 0 && mismatches == 0;

  if (o.json) {
    std::printf(
        "{\"uri\": %s, \"rw\": \"%s\", \"bs\": %llu, \"iodepth\": %u, \"connections\": %u, \"rwmixread\": %u, "
        "\"offset\": %llu, \"size\": %llu, \"ramp_s\": %.3f, \"runtime_s\": %.6f, \"structured_replies\": %s, "
        "\"extended_headers\": %s, \"ios\": %llu, \"reads\": %llu, \"writes\": %llu, \"bytes\": %llu, "
        "\"errors\": %llu, \"iops\": %.1f, \"bytes_per_s\": %.0f, \"mib_per_s\": %.2f, \"lat_min_us\": %.3f, "
        "\"lat_mean_us\": %.3f, \"lat_p50_us\": %.3f, \"lat_p99_us\": %.3f, \"lat_p999_us\": %.3f, "
        "\"lat_max_us\": %.3f, \"cpu_user_s\": %.3f, \"cpu_sys_s\": %.3f, \"cpu_us_per_io\": %.3f, "
        "\"coalesce\": %u, \"recv_calls\": %llu, \"naps\": %llu, "
        "\"verify\": %s, \"verified_reads\": %llu, \"unverified_reads\": %llu, \"mismatches\": %llu, "
        "\"first_mismatch_offset\": %s, \"error\": %s}\n",
        json_string(o.uri_text).c_str(), mode_name(o.rw).data(), static_cast<unsigned long long>(o.bs), o.iodepth,
        o.connections, o.rwmixread, static_cast<unsigned long long>(o.offset), static_cast<unsigned long long>(size),
        o.ramp, secs, n.structured_replies ? "true" : "false", n.extended_headers ? "true" : "false",
        static_cast<unsigned long long>(ios), static_cast<unsigned long long>(reads),
        static_cast<unsigned long long>(writes), static_cast<unsigned long long>(bytes),
        static_cast<unsigned long long>(errors), iops, bps, bps / 1048576.0, static_cast<double>(h.min()) / 1e3,
        h.mean() / 1e3, h.percentile(50) / 1e3, h.percentile(99) / 1e3, h.percentile(99.9) / 1e3,
        static_cast<double>(h.max()) / 1e3, user, sys, cpu_per_io, *o.coalesce,
        static_cast<unsigned long long>(recv_calls), static_cast<unsigned long long>(naps), o.verify ? "true" : "false",
        static_cast<unsigned long long>(verified), static_cast<unsigned long long>(unverified),
        static_cast<unsigned long long>(mismatches),
        first_mismatch ? std::to_string(*first_mismatch).c_str() : "null",
        error.empty() ? "null" : json_string(error).c_str());
  } else {
    std::printf("nbdwire-perf: %s bs=%llu iodepth=%u connections=%u%s, %.2f s measured\n", mode_name(o.rw).data(),
                static_cast<unsigned long long>(o.bs), o.iodepth, o.connections,
                n.structured_replies ? ", structured replies" : "", secs);
    std::printf("  ios:     %llu (reads %llu, writes %llu), errors %llu\n", static_cast<unsigned long long>(ios),
                static_cast<unsigned long long>(reads), static_cast<unsigned long long>(writes),
                static_cast<unsigned long long>(errors));
    std::printf("  rate:    %.0f IOPS, %.2f MiB/s\n", iops, bps / 1048576.0);
    std::printf("  latency: p50 %.1f us, p99 %.1f us, p99.9 %.1f us (min %.1f, mean %.1f, max %.1f)\n",
                h.percentile(50) / 1e3, h.percentile(99) / 1e3, h.percentile(99.9) / 1e3,
                static_cast<double>(h.min()) / 1e3, h.mean() / 1e3, static_cast<double>(h.max()) / 1e3);
    std::printf("  client CPU: %.2f us per I/O (user %.3f s, system %.3f s); %.2f I/Os per recv(), %llu sleeps\n",
                cpu_per_io, user, sys, recv_calls ? static_cast<double>(ios) / static_cast<double>(recv_calls) : 0.0,
                static_cast<unsigned long long>(naps));
    if (o.verify)
      std::printf("  verify:  %llu reads checked, %llu not checkable (never written), %llu mismatches\n",
                  static_cast<unsigned long long>(verified), static_cast<unsigned long long>(unverified),
                  static_cast<unsigned long long>(mismatches));
  }
  std::fflush(stdout);
  if (!fatal.empty()) std::fprintf(stderr, "nbdwire-perf: %s\n", fatal.c_str());
  if (errors) std::fprintf(stderr, "nbdwire-perf: %llu error replies; the first: %s\n",
                           static_cast<unsigned long long>(errors), first_error.c_str());
  if (first_mismatch)
    std::fprintf(stderr, "nbdwire-perf: verify: %llu mismatches; the first at offset %llu: %s\n",
                 static_cast<unsigned long long>(mismatches), static_cast<unsigned long long>(*first_mismatch),
                 mismatch_text.c_str());
  return ok ? 0 : 1;
}
