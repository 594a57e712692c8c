// SPDX-License-Identifier: MIT
// nbdwire-client: a small NBD client over POSIX sockets, built on nbdwire::client.
//
//   nbdwire-client [--style legacy1997 --size SIZE] COMMAND URI [OPTIONS]
//     info URI [--json]                 what the server says about an export
//     list URI [--json]                 the exports a server offers
//     map URI [--json]                  allocation map (base:allocation), as nbdinfo --map
//     read URI [--offset N] [--length N]    export data to stdout
//     write URI [--offset N] [--no-flush] stdin to the export, then FLUSH
//     copy SRC DST [--connections N]    export <-> file ('-' is stdin/stdout); reads only what
//                                       base:allocation calls data (holes stay holes in a file),
//                                       over N connections (default: one per CPU, at most 4)
//                                       when the export allows multi-conn and the other side
//                                       is a file; writes all-zero blocks as WRITE_ZEROES
//
// Extended headers and structured replies are used when the server offers them.
// The adapter only moves bytes: the socket loop below feeds the machine and sends what it
// queues. READ data is received straight into the request's buffer when the machine says it
// comes next (or, copying into a file, spliced from the socket into the file); WRITE data
// goes from the request's buffer into sendmsg() beside its header (or, from a regular file,
// with sendfile() after it).
#include <fcntl.h>       // splice, F_SETPIPE_SZ: READ data from the socket into a file
#include <poll.h>        // poll: one loop sends and receives without blocking either way
#include <sys/sendfile.h>  // sendfile: WRITE payloads from a file without a copy through user space
#include <sys/socket.h>  // sendmsg, recv
#include <sys/stat.h>    // fstat: input sizes
#include <sys/uio.h>     // iovec
#include <time.h>        // clock_gettime: progress throttling
#include <unistd.h>      // isatty, close

#include <algorithm>      // std::min
#include <array>          // iovecs of a send_plan
#include <atomic>         // a copy's connections stop together
#include <condition_variable>  // the background writer
#include <csignal>        // std::signal: SIGPIPE is reported as EPIPE instead
#include <cstdio>         // std::printf, std::fprintf
#include <cstring>        // std::memset
#include <exception>      // std::exception_ptr: the first failure of a copy's connections
#include <functional>     // std::function: payload source and sink
#include <memory>         // std::unique_ptr
#include <mutex>          // the background writer
#include <optional>       // the ranges of a read, one at a time
#include <string>         // std::string
#include <thread>         // the background writer
#include <unordered_map>  // cookie -> request buffer
#include <vector>         // buffers, argument lists

#include "common.hpp"
#include "nbdwire/client.hpp"
#include "nbdwire/transfer.hpp"

namespace {

using namespace std::string_literals;
using examples::fail;
using examples::failure;
using nbdwire::event_kind;

constexpr std::size_t input_buffer_size = 256 * 1024;
constexpr std::uint32_t max_chunk = 2u * 1024 * 1024;  // bytes per READ/WRITE request
constexpr std::size_t max_window = 16;                 // requests in flight at once
constexpr std::uint64_t max_zero_run = 1u << 30;       // the longest WRITE_ZEROES sent
constexpr std::size_t probe_size = 4096;               // read of a file piece's start: all zeroes?
constexpr unsigned max_connections = 16;               // --connections
constexpr std::uint64_t copy_slice = 8u << 20;         // connections take a copy's data in slices of this

std::string errc_text(nbdwire::errc e) { return std::string(nbdwire::to_string(e)); }

// ---- one connection: a socket and a machine -----------------------------------------------

class connection {
 public:
  connection(int fd, const nbdwire::client_config& cfg) : fd_(fd), m_(cfg), buf_(input_buffer_size) {
    examples::set_nonblocking(fd_);
  }
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;
  ~connection() {
    shut_down();
    for (const int p : pipe_)
      if (p >= 0) close(p);
  }

  nbdwire::client& machine() { return m_; }

  /// Where a WRITE payload's bytes are: `data` (p.length bytes in memory), or a regular
  /// `file` at `file_offset`, sent with sendfile() so they never pass through user space.
  struct payload_origin {
    const std::byte* data = nullptr;
    int file = -1;
    off_t file_offset = 0;
  };
  /// Where WRITE payload bytes come from, asked for each part of a payload as it is sent.
  std::function<payload_origin(const nbdwire::payload_span&)> payload_source;
  /// Where READ payload may be received directly, or nullptr to take it through receive().
  std::function<std::byte*(const nbdwire::payload_span&)> payload_sink;
  /// A regular file READ payload goes straight into, at this offset of it: spliced from the
  /// socket through a pipe, never copied through user space. Asked before payload_sink.
  struct file_target {
    int file = -1;
    off_t offset = 0;
  };
  std::function<file_target(const nbdwire::payload_span&)> payload_file;

  /// The server's message from an error chunk for request `cookie`, taken once.
  std::string take_error_message(std::uint64_t cookie) {
    const auto it = error_messages_.find(cookie);
    if (it == error_messages_.end()) return {};
    std::string m = std::move(it->second);
    error_messages_.erase(it);
    return m;
  }

  /// The next event other than need_more/blocked, doing socket I/O as needed. A timeout
  /// (timeout_ms >= 0) returns a need_more event. Error chunks are kept for
  /// take_error_message(); the request's `reply` event carries their status.
  nbdwire::event next(int timeout_ms = -1) {
    for (;;) {
      if (eof_) fail("the server closed the connection");
      const auto r = m_.receive(nbdwire::bytes_view{buf_.data() + start_, end_ - start_});
      start_ += r.consumed;
      if (start_ == end_) start_ = end_ = 0;
      if (r.ev.kind == event_kind::error_chunk) {
        if (!r.ev.data.empty() && !error_messages_.contains(r.ev.req.cookie))
          error_messages_[r.ev.req.cookie] = std::string(nbdwire::as_chars(r.ev.data));
        continue;
      }
      if (r.ev.kind != event_kind::need_more && r.ev.kind != event_kind::blocked) return r.ev;
      if (r.ev.kind == event_kind::blocked && !output_pending())
        fail("internal: the client machine is blocked with nothing to send");

      send_some();
      pollfd p{fd_, 0, 0};
      if (output_pending()) p.events |= POLLOUT;
      if (end_ < buf_.size()) p.events |= POLLIN;
      const int rc = poll(&p, 1, timeout_ms);
      if (rc < 0) {
        if (errno == EINTR) continue;
        examples::fail_errno("poll");
      }
      if (rc == 0) return {};  // timed out
      if (p.revents & POLLOUT) send_some();
      if (!(p.revents & (POLLIN | POLLHUP | POLLERR))) continue;

      // READ data due next with nothing buffered: receive it where it belongs.
      if (start_ == end_ && payload_file) {
        if (const auto ip = m_.incoming_payload()) {
          if (const file_target t = payload_file(*ip); t.file >= 0) {
            const ssize_t n = receive_into_file(t, ip->length);
            if (n > 0) {
              if (!m_.consume_incoming_payload(static_cast<std::uint64_t>(n)))
                fail("internal: payload accounting went wrong");
              continue;
            }
            if (n == 0) return end_of_input();
            if (errno == EAGAIN || errno == EINTR) continue;
            examples::fail_errno("receive from the server");
          }
        }
      }
      if (start_ == end_ && payload_sink) {
        if (const auto ip = m_.incoming_payload()) {
          if (std::byte* dst = payload_sink(*ip)) {
            const ssize_t n = recv(fd_, dst, static_cast<std::size_t>(ip->length), 0);
            if (n > 0) {
              if (!m_.consume_incoming_payload(static_cast<std::uint64_t>(n)))
                fail("internal: payload accounting went wrong");
              nbdwire::event ev{};
              ev.kind = event_kind::payload;
              ev.req.cookie = ip->cookie;
              ev.offset = ip->offset;
              ev.data = {dst, static_cast<std::size_t>(n)};
              return ev;
            }
            if (n == 0) return end_of_input();
            if (errno == EAGAIN || errno == EINTR) continue;
            examples::fail_errno("receive from the server");
          }
        }
      }
      const ssize_t n = recv(fd_, buf_.data() + end_, buf_.size() - end_, 0);
      if (n > 0) {
        end_ += static_cast<std::size_t>(n);
      } else if (n == 0) {
        return end_of_input();
      } else if (errno != EAGAIN && errno != EINTR) {
        examples::fail_errno("receive from the server");
      }
    }
  }

  [[nodiscard]] bool output_pending() const {
    return !m_.pending_output().empty() || m_.pending_payload().has_value();
  }

  /// Sends everything queued; gives up silently after timeout_ms (>= 0) without progress.
  void flush(int timeout_ms = -1) {
    while (output_pending()) {
      if (send_some()) continue;
      pollfd p{fd_, POLLOUT, 0};
      const int rc = poll(&p, 1, timeout_ms);
      if (rc < 0 && errno != EINTR) examples::fail_errno("poll");
      if (rc == 0) return;
    }
  }

  /// Ends the session politely: NBD_CMD_DISC in transmission, NBD_OPT_ABORT during the
  /// handshake, then close. Never throws; used on error paths too.
  void shut_down() noexcept {
    if (fd_ < 0) return;
    try {
      using nbdwire::client_state;
      const auto st = m_.state();
      if (!eof_ && st == client_state::transmission) {
        if (m_.disconnect()) flush(2000);
      } else if (!eof_ && st == client_state::negotiating) {
        if (m_.abort()) {
          flush(2000);
          // The server may ACK or simply close; either ends it (bounded wait).
          for (int i = 0; i < 4 && !eof_; ++i) {
            const auto ev = next(500);
            if (ev.kind == event_kind::need_more || ev.kind == event_kind::disconnected ||
                ev.kind == event_kind::closed || ev.kind == event_kind::failed)
              break;
          }
        }
      }
    } catch (...) {
      // Best effort: the connection is being dropped anyway.
    }
    close(fd_);
    fd_ = -1;
  }

 private:
  nbdwire::event end_of_input() {
    eof_ = true;
    return m_.on_eof();
  }

  /// Sends what it can without blocking; false when the socket is full. Payloads in memory
  /// go out with their headers in one sendmsg() (a send_plan); one in a file goes after its
  /// header with sendfile().
  bool send_some() {
    for (;;) {
      nbdwire::send_plan<> plan(m_, [&](const nbdwire::payload_span& p) -> nbdwire::bytes_view {
        const payload_origin src = payload_source ? payload_source(p) : payload_origin{};
        if (src.file < 0 && !src.data) fail("internal: no data for a WRITE payload");
        if (!src.data) return {};  // from the file, after the header
        return {src.data, static_cast<std::size_t>(p.length)};
      });
      if (plan.segments().empty()) {
        if (!plan.empty()) {  // zero-length payloads only
          if (!plan.advance(m_, 0)) fail("internal: payload accounting went wrong");
          continue;
        }
        const auto pay = plan.stopped_at();
        if (!pay) return true;
        if (!send_from_file(payload_source(*pay), *pay)) return false;
        continue;
      }
      std::array<iovec, 16> iov;
      const msghdr mh = examples::plan_message(plan, iov);
      // The header alone now, its payload from the file right after: let TCP join them.
      const bool more = plan.stopped_at().has_value();
      const ssize_t w = sendmsg(fd_, &mh, MSG_NOSIGNAL | (more ? MSG_MORE : 0));
      if (w < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) return false;
        examples::fail_errno("send to the server");
      }
      if (!plan.advance(m_, static_cast<std::size_t>(w)))
        fail("internal: payload accounting went wrong");
    }
  }

  /// Moves up to `length` bytes of READ payload from the socket into t.file at t.offset: with
  /// splice() through a pipe of this connection's, or, where a file or socket cannot splice,
  /// through a small buffer. Returns the bytes moved, 0 at the end of input, -1 with errno.
  ssize_t receive_into_file(const file_target& t, std::uint64_t length) {
    if (!no_splice_ && pipe_[0] < 0) {
      if (pipe2(pipe_, O_CLOEXEC) != 0) examples::fail_errno("pipe");
      // A bigger pipe moves more per call (at most /proc/sys/fs/pipe-max-size; best effort).
      pipe_size_ = fcntl(pipe_[1], F_SETPIPE_SZ, 1 << 20);
      if (pipe_size_ <= 0) pipe_size_ = fcntl(pipe_[1], F_GETPIPE_SZ);
      if (pipe_size_ <= 0) pipe_size_ = 64 * 1024;
    }
    if (!no_splice_) {
      const auto want = static_cast<std::size_t>(std::min<std::uint64_t>(length, static_cast<std::uint64_t>(pipe_size_)));
      const ssize_t n = splice(fd_, nullptr, pipe_[1], nullptr, want, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n > 0) {
        // The pipe was empty and now holds n bytes: all of them go to the file before
        // anything else is received.
        off_t at = t.offset;
        for (std::size_t left = static_cast<std::size_t>(n); left > 0;) {
          const ssize_t w = splice(pipe_[0], nullptr, t.file, &at, left, SPLICE_F_MOVE);
          if (w > 0) {
            left -= static_cast<std::size_t>(w);
            continue;
          }
          if (w < 0 && errno == EINTR) continue;
          if (w < 0 && errno != EINVAL) examples::fail_errno("write the READ data");
          // The file cannot take a splice: the rest goes through a buffer, now and from now on.
          no_splice_ = true;
          std::byte bounce[64 * 1024];
          while (left > 0) {
            const ssize_t got = read(pipe_[0], bounce, std::min(left, sizeof bounce));
            if (got <= 0) examples::fail_errno("read back the READ data");
            examples::pwrite_all(t.file, bounce, static_cast<std::size_t>(got), at, "the output file");
            at += got;
            left -= static_cast<std::size_t>(got);
          }
        }
        return n;
      }
      if (n == 0 || errno != EINVAL) return n;
      no_splice_ = true;  // this socket cannot splice
    }
    std::byte bounce[64 * 1024];
    const ssize_t n = recv(fd_, bounce, std::min<std::uint64_t>(length, sizeof bounce), 0);
    if (n > 0) examples::pwrite_all(t.file, bounce, static_cast<std::size_t>(n), t.offset, "the output file");
    return n;
  }

  /// Sends what the socket takes of a payload that is in a file; false when it is full.
  bool send_from_file(const payload_origin& src, const nbdwire::payload_span& pay) {
    off_t off = src.file_offset;
    std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(pay.length, 1u << 30));
    ssize_t w = -1;
    if (!no_sendfile_) {
      w = sendfile(fd_, src.file, &off, want);
      // A file system without splice support: read and send through a small buffer instead.
      if (w < 0 && (errno == EINVAL || errno == ENOSYS)) no_sendfile_ = true;
    }
    if (no_sendfile_) {
      std::byte bounce[64 * 1024];
      want = std::min(want, sizeof bounce);
      const ssize_t got = pread(src.file, bounce, want, off);
      if (got < 0) examples::fail_errno("read the input file");
      w = got == 0 ? 0 : send(fd_, bounce, static_cast<std::size_t>(got), MSG_NOSIGNAL);
    }
    if (w < 0) {
      if (errno == EINTR) return true;
      if (errno == EAGAIN) return false;
      examples::fail_errno("send to the server");
    }
    // The request's length is on the wire already: a file that shrank cannot make it up.
    if (w == 0) fail("the input file ended before the data of a WRITE (did it shrink during the copy?)");
    if (!m_.consume_payload(static_cast<std::uint64_t>(w))) fail("internal: payload accounting went wrong");
    return true;
  }

  int fd_;
  nbdwire::client m_;
  std::vector<std::byte> buf_;
  std::size_t start_ = 0, end_ = 0;
  bool eof_ = false;
  bool no_sendfile_ = false;  // the input file cannot be spliced: payloads go through a buffer
  bool no_splice_ = false;    // READ payload into a file goes through a buffer, not a pipe
  int pipe_[2] = {-1, -1};    // receive_into_file(): socket -> pipe -> file
  int pipe_size_ = 0;
  std::unordered_map<std::uint64_t, std::string> error_messages_;
};

// ---- command line ---------------------------------------------------------------------------

struct options {
  bool legacy = false;
  std::optional<std::uint64_t> legacy_size;
  bool json = false;
  std::optional<std::uint64_t> offset, length;
  bool no_flush = false;  ///< skip the FLUSH that ends write and copy-to-URI
  unsigned connections = 0;  ///< copies with a multi-conn export: connections to use (0: one per CPU, at most 4)
  std::vector<std::string> positional;
};

bool g_no_flush = false;

[[noreturn]] void usage_error(const std::string& msg) {
  fail(msg + " (try --help)");
}

void print_usage() {
  std::printf(
      "usage: nbdwire-client [--style legacy1997 --size SIZE] COMMAND URI [OPTIONS]\n"
      "  info URI [--json]                    export size, flags, block sizes, description\n"
      "  list URI [--json]                    exports offered by the server\n"
      "  map URI [--json]                     allocation map (like nbdinfo --map)\n"
      "  read URI [--offset N] [--length N]   export data to stdout\n"
      "  write URI [--offset N] [--no-flush]  stdin to the export (then FLUSH)\n"
      "  copy SRC DST [--connections N]       URI to file or file to URI ('-' = stdin/stdout);\n"
      "                                       between a file and an export with multi-conn,\n"
      "                                       over N connections at once (default: one per\n"
      "                                       CPU, at most 4)\n"
      "URI: nbd://HOST[:PORT][/EXPORT] or nbd+unix:///EXPORT?socket=PATH\n"
      "SIZE and N accept K, M, G, T (binary) suffixes.\n");
}

std::uint64_t size_arg(const std::string& opt, const std::string& v) {
  const auto s = examples::parse_size(v);
  if (!s) usage_error("bad value for " + opt + ": '" + v + "'");
  return *s;
}

options parse_args(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage_error(a + " needs a value");
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      print_usage();
      std::exit(0);
    } else if (a == "--style") {
      const std::string s = value();
      if (s == "legacy1997")
        o.legacy = true;
      else if (s != "fixed-newstyle" && s != "newstyle" && s != "oldstyle")
        usage_error("unknown --style '" + s + "'");
      // Other styles are detected from the server's greeting.
    } else if (a == "--size") {
      o.legacy_size = size_arg(a, value());
    } else if (a == "--json") {
      o.json = true;
    } else if (a == "--offset") {
      o.offset = size_arg(a, value());
    } else if (a == "--length") {
      o.length = size_arg(a, value());
    } else if (a == "--connections") {
      const std::uint64_t n = size_arg(a, value());
      if (n < 1 || n > max_connections) usage_error("--connections takes 1 to " + std::to_string(max_connections));
      o.connections = static_cast<unsigned>(n);
    } else if (a == "--no-flush") {
      o.no_flush = g_no_flush = true;
    } else if (a.size() > 1 && a[0] == '-' && a != "-") {
      usage_error("unknown option " + a);
    } else {
      o.positional.push_back(a);
    }
  }
  if (o.legacy && !o.legacy_size) usage_error("--style legacy1997 needs --size");
  if (!o.legacy && o.legacy_size) usage_error("--size is only for --style legacy1997");
  return o;
}

// ---- handshake --------------------------------------------------------------------------------

/// What GO (or the greeting, for oldstyle) taught us beyond negotiated().
struct export_facts {
  std::string requested_name;
  std::optional<std::string> description;
  std::vector<std::string> contexts;  ///< LIST_META_CONTEXT's answer, when asked for
};

/// The metadata context `map` selects.
constexpr std::string_view allocation_context[] = {"base:allocation"};

std::unique_ptr<connection> open_connection(const examples::nbd_uri& uri, const options& o,
                                            bool want_allocation = false) {
  nbdwire::client_config cfg;
  if (want_allocation) cfg.meta_contexts = allocation_context;
  if (o.legacy) {
    if (*o.legacy_size > 0xffffffffu) fail("the 1997 framing addresses less than 4 GiB; --size is too large");
    cfg.style = nbdwire::handshake_style::legacy_1997;
    cfg.legacy_export_size = *o.legacy_size;
  }
  const int fd = examples::connect_to(uri.where);
  return std::make_unique<connection>(fd, cfg);
}

std::string refusal_text(const nbdwire::event& ev) {
  std::string s(nbdwire::to_string(ev.reply));
  if (!ev.data.empty()) s += ": " + std::string(nbdwire::as_chars(ev.data));
  return s;
}

[[noreturn]] void fail_event(const nbdwire::event& ev, const std::string& during) {
  switch (ev.kind) {
    case event_kind::failed:
      if (ev.error == nbdwire::errc::export_name_refused)
        fail("the server closed the connection: export refused (" + during + ")");
      if (ev.error == nbdwire::errc::unexpected_eof || ev.error == nbdwire::errc::eof_with_requests_in_flight)
        fail("the server closed the connection " + during + " (" + errc_text(ev.error) + ")");
      fail("protocol error " + during + ": " + errc_text(ev.error));
    case event_kind::closed:
    case event_kind::disconnected: fail("the server closed the connection " + during);
    default: fail("unexpected " + std::string(nbdwire::to_string(ev.kind)) + " event " + during);
  }
}

/// The next handshake event. Every handshake style has the server speak first, so silence
/// at the start means a server that expects the 1997 framing (or no NBD server at all).
nbdwire::event handshake_event(connection& c) {
  constexpr int greeting_timeout_ms = 10000;
  const bool greeted = c.machine().state() != nbdwire::client_state::awaiting_greeting;
  const auto ev = c.next(greeted ? -1 : greeting_timeout_ms);
  if (ev.kind == event_kind::need_more)
    fail("no greeting from the server within 10 s (a server using the 1997 framing needs "
         "--style legacy1997 --size SIZE)");
  return ev;
}

/// Handshake up to transmission with GO (all info requested); EXPORT_NAME as fallback.
/// With `list_contexts`, first asks which metadata contexts the export has (fixed newstyle
/// only; a refusal just means none are listed).
export_facts negotiate(connection& c, const std::string& name, bool list_contexts = false) {
  export_facts f;
  f.requested_name = name;
  auto& m = c.machine();
  if (m.state() == nbdwire::client_state::transmission) return f;  // legacy 1997: no handshake
  auto go = [&] {
    if (const auto r = m.go(name, nbdwire::info_request::all); !r)
      fail("cannot request export '" + name + "': " + errc_text(r.error()));
  };
  bool listing = false;
  for (;;) {
    const auto ev = handshake_event(c);
    const bool list_answer = listing && ev.option == static_cast<std::uint32_t>(nbdwire::option::list_meta_context);
    switch (ev.kind) {
      case event_kind::greeting:
        if (list_contexts && m.list_meta_context(name)) {
          listing = true;
          break;
        }
        go();
        break;
      case event_kind::meta_context: f.contexts.emplace_back(nbdwire::as_chars(ev.data)); break;
      case event_kind::option_done:
        if (!list_answer) fail_event(ev, "during the handshake");
        listing = false;
        go();
        break;
      case event_kind::info:
        if (ev.info == nbdwire::info_type::description) f.description = std::string(nbdwire::as_chars(ev.data));
        break;
      case event_kind::ready: return f;
      case event_kind::option_refused:
        if (list_answer) {
          listing = false;
          f.contexts.clear();
          go();
          break;
        }
        fail("the server refused export '" + name + "': " + refusal_text(ev));
      default: fail_event(ev, "during the handshake");
    }
  }
}

// ---- output helpers ----------------------------------------------------------------------------

std::string json_string(std::string_view s) {
  std::string out = "\"";
  for (const char raw : s) {
    const auto ch = static_cast<unsigned char>(raw);
    switch (ch) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (ch < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", ch);
          out += buf;
        } else {
          out += static_cast<char>(ch);
        }
    }
  }
  return out + "\"";
}

const char* protocol_name(nbdwire::handshake_style s) {
  switch (s) {
    case nbdwire::handshake_style::fixed_newstyle: return "newstyle-fixed";
    case nbdwire::handshake_style::newstyle: return "newstyle";
    case nbdwire::handshake_style::oldstyle: return "oldstyle";
    case nbdwire::handshake_style::legacy_1997: return "legacy1997";
  }
  return "unknown";
}

/// A progress bar on stderr, only when stderr is a terminal.
class progress {
 public:
  explicit progress(std::uint64_t total, bool wanted) : total_(total), on_(wanted && isatty(2)) {}
  void add(std::uint64_t n) {
    const std::lock_guard lock(mu_);  // connections of one copy share it
    done_ += n;
    if (!on_) return;
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    const double now = static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
    if (now - last_ < 0.1 && done_ < total_) return;
    last_ = now;
    draw();
  }
  void finish() {
    if (!on_) return;
    draw();
    std::fputc('\n', stderr);
  }

 private:
  void draw() const {
    const double frac = total_ ? static_cast<double>(done_) / static_cast<double>(total_) : 1.0;
    constexpr int width = 40;
    const int filled = static_cast<int>(frac * width);
    std::string bar(static_cast<std::size_t>(filled), '#');
    bar.resize(width, ' ');
    std::fprintf(stderr, "\r[%s] %5.1f%% %s / %s ", bar.c_str(), frac * 100.0, examples::human_size(done_).c_str(),
                 examples::human_size(total_).c_str());
  }
  std::mutex mu_;
  std::uint64_t total_, done_ = 0;
  bool on_;
  double last_ = 0;
};

// ---- pipelined transfers ----------------------------------------------------------------------

/// Detaches a transfer's payload callbacks when it ends, normally or by a failure, so the
/// connection never reaches into buffers that are gone.
struct callbacks_reset {
  connection& c;
  ~callbacks_reset() {
    c.payload_source = nullptr;
    c.payload_sink = nullptr;
    c.payload_file = nullptr;
  }
};

struct chunk {
  std::uint64_t cookie = 0, offset = 0;
  std::uint32_t length = 0;
  bool zero = false;    // READ: a piece of a range that reads as zeroes; no request, no data
  bool done = false;    // answered
  bool queued = false;  // READ data handed to the background writer, as its number `seq`
  std::uint64_t seq = 0;
  std::unique_ptr<std::byte[]> data;
  int file = -1;  // WRITE: the payload is in this file at file_offset, not in `data`
  off_t file_offset = 0;
};

/// The requests of one pipelined transfer, oldest first: at most max_window, each with a
/// buffer of `step` bytes allocated the first time its slot is used, so a transfer allocates
/// nothing per request. Slots are retired from the front once done, which keeps READ data in
/// export order.
class request_window {
 public:
  explicit request_window(std::uint32_t step) : step_(step) {}
  [[nodiscard]] bool full() const { return count_ == max_window; }
  [[nodiscard]] bool empty() const { return count_ == 0; }
  /// The slot push() will take, with its buffer unless `buffer` is false.
  chunk& next(bool buffer = true) {
    chunk& c = slots_[(head_ + count_) % max_window];
    if (buffer && !c.data) c.data = std::make_unique_for_overwrite<std::byte[]>(step_);
    c.zero = c.done = c.queued = false;
    c.file = -1;
    return c;
  }
  void push() { ++count_; }
  [[nodiscard]] std::size_t size() const { return count_; }
  /// The k-th oldest request.
  [[nodiscard]] chunk& at(std::size_t k) { return slots_[(head_ + k) % max_window]; }
  /// The request in flight with this cookie, or null.
  chunk* find(std::uint64_t cookie) {
    for (std::size_t k = 0; k < count_; ++k) {
      chunk& c = slots_[(head_ + k) % max_window];
      if (!c.done && c.cookie == cookie) return &c;
    }
    return nullptr;
  }
  [[nodiscard]] chunk& front() { return slots_[head_]; }
  void pop() {
    head_ = (head_ + 1) % max_window;
    --count_;
  }

 private:
  std::array<chunk, max_window> slots_;
  std::size_t head_ = 0, count_ = 0;
  std::uint32_t step_;
};

/// The largest request length used: 2 MiB or what the connection allows, whichever is less
/// (max_request_length is a multiple of the minimum block size, and so is 2 MiB).
std::uint32_t chunk_size(const nbdwire::negotiated& n) {
  const std::uint32_t min = n.block_size.minimum ? n.block_size.minimum : 1;
  const auto c = static_cast<std::uint32_t>(
      std::min<std::uint64_t>(max_chunk, nbdwire::max_request_length(n, nbdwire::command::read)));
  return c ? c : min;
}

void check_alignment(const nbdwire::negotiated& n, std::uint64_t offset, std::uint64_t length) {
  const std::uint32_t min = n.block_size.minimum;
  if (min > 1 && (offset % min != 0 || length % min != 0))
    fail("offset and length must be multiples of the export's minimum block size (" + std::to_string(min) + ")");
}

std::string request_error(const char* what, const chunk& c, nbdwire::nbd_error e, const std::string& message) {
  return std::string(what) + " of " + std::to_string(c.length) + " bytes at offset " + std::to_string(c.offset) +
         " failed: " + std::string(nbdwire::to_string(e)) + (message.empty() ? "" : " (" + message + ")");
}

/// A stretch of the export in a read: data to READ, or (`zero`) a range that reads as zeroes,
/// which is never asked for.
struct read_range {
  std::uint64_t offset = 0, length = 0;
  bool zero = false;
};

/// The next stretch a read should take on, or nothing when there is no more.
using range_source = std::function<std::optional<read_range>()>;

/// Where READ data goes, in export order: `n` bytes at `p`, or `n` zero bytes when p is null.
using read_output = std::function<void(const std::byte* p, std::size_t n)>;

/// Writes READ data to the output on a thread of its own, in order, while the connection's
/// thread goes on receiving: receiving from the socket and writing the file then overlap
/// instead of taking turns. At most max_window pieces are queued (the request window's
/// bound); a piece's buffer is reused only once it is written. A failed write is rethrown on
/// the connection's thread.
class background_writer {
 public:
  explicit background_writer(const read_output& out)
      : out_(out), thread_([this] { run(); }) {}
  ~background_writer() {
    {
      const std::lock_guard lock(mu_);
      stop_ = true;
    }
    work_.notify_all();
    thread_.join();
  }
  background_writer(const background_writer&) = delete;
  background_writer& operator=(const background_writer&) = delete;

  /// Queues n bytes at p (zeroes if null); returns the piece's number.
  std::uint64_t push(const std::byte* p, std::size_t n) {
    const std::lock_guard lock(mu_);
    ring_[queued_ % max_window] = {p, n};
    work_.notify_all();
    return queued_++;
  }
  /// Whether piece `seq` is written.
  [[nodiscard]] bool written(std::uint64_t seq) {
    const std::lock_guard lock(mu_);
    if (error_) std::rethrow_exception(error_);
    return written_ > seq;
  }
  /// Waits until piece `seq` is written.
  void wait(std::uint64_t seq) {
    std::unique_lock lock(mu_);
    done_.wait(lock, [&] { return written_ > seq || error_; });
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void run() {
    std::unique_lock lock(mu_);
    for (;;) {
      work_.wait(lock, [&] { return stop_ || written_ < queued_; });
      if (written_ == queued_) return;  // stopping, all written
      const auto [p, n] = ring_[written_ % max_window];
      lock.unlock();
      try {
        out_(p, n);
      } catch (...) {
        lock.lock();
        error_ = std::current_exception();
        done_.notify_all();
        return;
      }
      lock.lock();
      ++written_;
      done_.notify_all();
    }
  }

  const read_output& out_;
  std::mutex mu_;
  std::condition_variable work_, done_;
  std::array<std::pair<const std::byte*, std::size_t>, max_window> ring_{};
  std::uint64_t queued_ = 0, written_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
  std::thread thread_;  // last: starts once everything above is built
};

/// Reads what `next` hands out, in order, with up to max_window requests in flight across
/// ranges, and hands the data to `out` in export order. A zero range takes a window slot but
/// sends nothing; it goes to `out` in pieces of at most max_zero_run. With a `direct_file`
/// (a new regular file, whose byte 0 is export offset `direct_origin`), READ data goes
/// straight from the socket into it instead, at its own offset, and holes are left alone:
/// `out` is not used, and no writer thread or request buffers are needed.
void pipelined_read(connection& c, const range_source& next, const read_output& out, progress& prog,
                    int direct_file = -1, std::uint64_t direct_origin = 0) {
  auto& m = c.machine();
  const auto& neg = m.negotiated();
  const std::uint32_t step = chunk_size(neg);
  const bool direct = direct_file >= 0;
  request_window window(step);
  std::optional<background_writer> writer;
  if (!direct) writer.emplace(out);

  const callbacks_reset reset{c};
  if (direct) {
    c.payload_file = [&](const nbdwire::payload_span& p) -> connection::file_target {
      if (!window.find(p.cookie)) return {};
      return {direct_file, static_cast<off_t>(p.offset - direct_origin)};
    };
  } else {
    c.payload_sink = [&](const nbdwire::payload_span& p) -> std::byte* {
      chunk* ch = window.find(p.cookie);
      return ch ? ch->data.get() + (p.offset - ch->offset) : nullptr;
    };
  }
  std::optional<read_range> range;  // the one being read
  std::uint64_t done_in_range = 0;
  bool ranges_done = false;
  // Takes up free slots: a READ of at most `step` bytes, or a piece of a zero range.
  const auto fill = [&] {
    while (!ranges_done && !window.full()) {
      if (!range || done_in_range == range->length) {
        range = next();
        done_in_range = 0;
        if (!range) {
          ranges_done = true;
          break;
        }
        if (!range->zero) check_alignment(neg, range->offset, range->length);
        continue;
      }
      const std::uint64_t pos = range->offset + done_in_range, left = range->length - done_in_range;
      const auto n = static_cast<std::uint32_t>(std::min<std::uint64_t>(range->zero ? max_zero_run : step, left));
      std::uint64_t cookie = 0;
      if (!range->zero) {
        const auto sent = m.read(pos, n);
        if (!sent) {
          if (sent.error() == nbdwire::errc::outbox_full && c.output_pending()) {
            c.flush();
            continue;
          }
          fail("cannot send READ at offset " + std::to_string(pos) + ": " + errc_text(sent.error()));
        }
        cookie = *sent;
      }
      chunk& ch = window.next(!range->zero && !direct);
      ch.cookie = cookie;
      ch.offset = pos;
      ch.length = n;
      ch.zero = ch.done = range->zero;  // nothing to wait for
      window.push();
      done_in_range += n;
    }
  };
  for (;;) {
    fill();
    // Answered pieces go to the writer in export order; written ones free their slots.
    for (std::size_t k = 0; k < window.size() && window.at(k).done; ++k) {
      chunk& x = window.at(k);
      if (!x.queued) {
        if (writer) x.seq = writer->push(x.zero ? nullptr : x.data.get(), x.length);
        x.queued = true;
      }
    }
    bool freed = false;
    while (!window.empty() && window.front().queued && (!writer || writer->written(window.front().seq))) {
      prog.add(window.front().length);
      window.pop();
      freed = true;
    }
    if (window.empty() && ranges_done) break;
    if (freed) continue;  // fill the slots again first
    bool waiting = false;  // for a reply
    for (std::size_t k = 0; k < window.size() && !waiting; ++k) waiting = !window.at(k).done;
    if (!waiting) {  // everything answered: only the writer can free a slot
      if (!writer) fail("internal: answered READs left in the window");
      writer->wait(window.front().seq);
      continue;
    }
    const auto ev = c.next();
    switch (ev.kind) {
      case event_kind::payload: {
        chunk* ch = window.find(ev.req.cookie);
        if (!ch) fail("internal: READ data for an unknown request");
        if (direct) {  // what came in with a header, through the input buffer
          examples::pwrite_all(direct_file, ev.data.data(), ev.data.size(),
                               static_cast<off_t>(ev.offset - direct_origin), "the output file");
          break;
        }
        std::byte* dst = ch->data.get() + (ev.offset - ch->offset);
        if (dst != ev.data.data()) std::memcpy(dst, ev.data.data(), ev.data.size());
        break;
      }
      case event_kind::read_hole: {  // structured replies: a range that reads as zeroes
        chunk* ch = window.find(ev.req.cookie);
        if (!ch) fail("internal: READ hole for an unknown request");
        if (!direct) std::memset(ch->data.get() + (ev.offset - ch->offset), 0, static_cast<std::size_t>(ev.length));
        break;
      }
      case event_kind::reply: {
        chunk* ch = window.find(ev.req.cookie);
        if (!ch) fail("internal: reply for an unknown request");
        if (ev.status != nbdwire::nbd_error::ok)
          fail(request_error("READ", *ch, ev.status, c.take_error_message(ev.req.cookie)));
        ch->done = true;
        break;
      }
      default: fail_event(ev, "while reading");
    }
  }
}

/// Whether n bytes are all zero: the first 16 are, and every byte equals the one 16 before it.
bool all_zero(const std::byte* p, std::size_t n) {
  const std::size_t head = std::min<std::size_t>(n, 16);
  for (std::size_t i = 0; i < head; ++i)
    if (p[i] != std::byte{0}) return false;
  return n <= head || std::memcmp(p, p + head, n - head) == 0;
}

/// What a write source yields: `length` bytes of data in the caller's buffer; or (`zero`) a
/// run of zeroes it did not read, such as a hole of a sparse file, which may be longer than
/// the buffer; or `length` bytes it left in regular `file` at `file_offset`, to be sent from
/// there. Length 0 ends the input.
struct source_piece {
  std::uint64_t length = 0;
  bool zero = false;
  int file = -1;
  off_t file_offset = 0;
};
using write_source = std::function<source_piece(std::byte*, std::size_t)>;

/// Writes what `in` yields from `offset` on, pipelined. Data that is all zeroes and zero runs
/// go as WRITE_ZEROES when the export supports it. Fails before sending anything past the
/// end of the export. Returns the bytes written.
std::uint64_t pipelined_write(connection& c, std::uint64_t offset, const write_source& in, progress& prog) {
  auto& m = c.machine();
  const auto& neg = m.negotiated();
  if (neg.read_only()) fail("the export is read-only");
  check_alignment(neg, offset, 0);
  const std::uint32_t step = chunk_size(neg);
  const std::uint64_t size = neg.export_size;
  if (offset > size) fail("offset " + std::to_string(offset) + " is past the end of the export");
  const bool can_zero = neg.has(nbdwire::transmission_flag::send_write_zeroes);
  request_window window(step);
  const callbacks_reset reset{c};
  c.payload_source = [&](const nbdwire::payload_span& p) -> connection::payload_origin {
    const chunk* ch = window.find(p.cookie);
    if (!ch) return {};
    if (ch->file >= 0) return {nullptr, ch->file, ch->file_offset + static_cast<off_t>(p.offset - ch->offset)};
    return {ch->data.get() + (p.offset - ch->offset)};
  };

  std::uint64_t pos = offset;
  bool input_done = false;
  while (!input_done || !window.empty()) {
    while (!input_done && !window.full()) {
      chunk* ch = &window.next();
      const source_piece piece = in(ch->data.get(), step);
      const std::uint64_t got = piece.length;
      if (got == 0) {
        input_done = true;
        break;
      }
      if (got > size - pos)
        fail("the input does not fit: the export is " + std::to_string(size) + " bytes and writing started at " +
             std::to_string(offset));
      if (neg.block_size.minimum > 1 && got % neg.block_size.minimum != 0)
        fail("the input is not a multiple of the export's minimum block size (" +
             std::to_string(neg.block_size.minimum) + ")");
      ch->offset = pos;
      ch->length = static_cast<std::uint32_t>(got);
      ch->file = piece.file;
      ch->file_offset = piece.file_offset;
      // All zeroes: WRITE_ZEROES sends no payload and lets the server punch a hole.
      if (piece.zero && (!can_zero || got > max_zero_run)) fail("internal: zero run the export cannot take");
      const bool zeroes = piece.zero || (can_zero && piece.file < 0 && all_zero(ch->data.get(), ch->length));
      for (;;) {
        const auto r = zeroes ? m.write_zeroes(pos, ch->length) : m.write(pos, ch->length);
        if (r) {
          ch->cookie = *r;
          break;
        }
        if (r.error() == nbdwire::errc::outbox_full && c.output_pending()) {
          c.flush();
          continue;
        }
        fail("cannot send WRITE at offset " + std::to_string(pos) + ": " + errc_text(r.error()));
      }
      pos += got;
      window.push();
    }
    if (window.empty()) break;
    const auto ev = c.next();
    if (ev.kind != event_kind::reply) fail_event(ev, "while writing");
    chunk* ch = window.find(ev.req.cookie);
    if (!ch) fail("internal: reply for an unknown request");
    if (ev.status != nbdwire::nbd_error::ok)
      fail(request_error("WRITE", *ch, ev.status, c.take_error_message(ev.req.cookie)));
    prog.add(ch->length);
    ch->done = true;
    while (!window.empty() && window.front().done) window.pop();
  }

  // A refused FLUSH means the data may not be durable, so it always fails the command;
  // --no-flush is for servers that advertise FLUSH and cannot do it (nbdkit --oldstyle).
  if (neg.has(nbdwire::transmission_flag::send_flush) && !g_no_flush) {
    const auto r = m.flush();
    if (!r) fail("cannot send FLUSH: " + errc_text(r.error()));
    const auto ev = c.next();
    if (ev.kind != event_kind::reply) fail_event(ev, "while flushing");
    if (ev.status != nbdwire::nbd_error::ok) fail("FLUSH failed: " + std::string(nbdwire::to_string(ev.status)));
  }
  return pos - offset;
}

// ---- commands ------------------------------------------------------------------------------------

void need_args(const options& o, std::size_t n, const char* usage) {
  if (o.positional.size() != n) usage_error(std::string("usage: nbdwire-client ") + usage);
}

int cmd_info(const options& o) {
  need_args(o, 2, "info URI [--json]");
  const auto uri = examples::parse_nbd_uri(o.positional[1]);
  auto c = open_connection(uri, o);
  const auto facts = negotiate(*c, uri.export_name, true);
  const auto n = c->machine().negotiated();
  c->shut_down();

  using namespace nbdwire::transmission_flag;
  const struct {
    const char* key;
    bool value;
  } flags[] = {
      {"read-only", n.has(read_only)},     {"can-flush", n.has(send_flush)},
      {"can-fua", n.has(send_fua)},        {"can-trim", n.has(send_trim)},
      {"can-zero", n.has(send_write_zeroes)}, {"can-fast-zero", n.has(send_fast_zero)},
      {"can-cache", n.has(send_cache)},    {"can-multi-conn", n.has(can_multi_conn)},
  };
  if (o.json) {
    std::string j = "{\n";
    j += "  \"export-name\": " + json_string(facts.requested_name) + ",\n";
    j += "  \"export-size\": " + std::to_string(n.export_size) + ",\n";
    j += "  \"transmission-flags\": " + std::to_string(n.transmission_flags) + ",\n";
    for (const auto& f : flags) j += "  \""s + f.key + "\": " + (f.value ? "true" : "false") + ",\n";
    j += "  \"block-size-minimum\": " + std::to_string(n.block_size.minimum) + ",\n";
    j += "  \"block-size-preferred\": " + std::to_string(n.block_size.preferred) + ",\n";
    j += "  \"block-size-maximum\": " + std::to_string(n.block_size.maximum) + ",\n";
    j += "  \"description\": " + (facts.description ? json_string(*facts.description) : "null"s) + ",\n";
    j += "  \"structured-replies\": "s + (n.structured_replies ? "true" : "false") + ",\n";
    j += "  \"extended-headers\": "s + (n.extended_headers ? "true" : "false") + ",\n";
    j += "  \"contexts\": [";
    for (std::size_t i = 0; i < facts.contexts.size(); ++i) j += (i ? ", " : "") + json_string(facts.contexts[i]);
    j += "],\n";
    j += "  \"protocol\": \""s + protocol_name(n.style) + "\"\n}\n";
    std::fputs(j.c_str(), stdout);
  } else {
    std::printf("export-name: %s\n", facts.requested_name.c_str());
    std::printf("protocol: %s\n", protocol_name(n.style));
    std::printf("export-size: %llu (%s)\n", static_cast<unsigned long long>(n.export_size),
                examples::human_size(n.export_size).c_str());
    std::printf("transmission-flags: 0x%04x\n", n.transmission_flags);
    for (const auto& f : flags) std::printf("  %s: %s\n", f.key, f.value ? "yes" : "no");
    std::printf("block-size-minimum: %u\n", n.block_size.minimum);
    std::printf("block-size-preferred: %u\n", n.block_size.preferred);
    std::printf("block-size-maximum: %u\n", n.block_size.maximum);
    if (facts.description) std::printf("description: %s\n", facts.description->c_str());
    std::printf("structured-replies: %s\n", n.structured_replies ? "yes" : "no");
    std::printf("extended-headers: %s\n", n.extended_headers ? "yes" : "no");
    std::printf("contexts:%s\n", facts.contexts.empty() ? " none" : "");
    for (const auto& ctx : facts.contexts) std::printf("  %s\n", ctx.c_str());
  }
  return 0;
}

/// One line of the allocation map: `length` bytes at `offset` with base:allocation `flags`.
struct map_extent {
  std::uint64_t offset = 0, length = 0, flags = 0;
};

/// nbdinfo's words for base:allocation flags.
const char* allocation_description(std::uint64_t flags) {
  switch (flags) {
    case 0: return "data";
    case nbdwire::state_flag::hole: return "hole";
    case nbdwire::state_flag::zero: return "zero";
    case nbdwire::state_flag::hole | nbdwire::state_flag::zero: return "hole,zero";
    default: return nullptr;
  }
}

/// The whole export's base:allocation map, adjacent extents with equal flags merged. A server
/// without the context has no holes to report, so everything is data.
std::vector<map_extent> allocation_map(connection& c) {
  auto& m = c.machine();
  const auto& n = m.negotiated();
  const std::uint64_t size = n.export_size;
  std::vector<map_extent> map;
  auto add = [&](std::uint64_t off, std::uint64_t len, std::uint64_t flags) {
    if (!map.empty() && map.back().flags == flags && map.back().offset + map.back().length == off)
      map.back().length += len;
    else
      map.push_back({off, len, flags});
  };
  std::optional<std::uint32_t> id;
  for (std::size_t i = 0; i < n.meta_context_count; ++i)
    if (n.meta_contexts[i].query_index == 0) id = n.meta_contexts[i].id;
  if (!id) {
    std::fprintf(stderr, "nbdwire-client: the server offers no base:allocation context; the whole export is data\n");
    if (size != 0) add(0, size, 0);
    return map;
  }
  // Ask for up to almost 4 GiB at a time (a whole number of minimum blocks). A server may
  // describe less than asked, and its last extent may run past the request.
  const std::uint32_t min = n.block_size.minimum ? n.block_size.minimum : 1;
  const std::uint32_t most = 0xfffff000u - 0xfffff000u % min;
  std::uint64_t pos = 0;
  while (pos < size) {
    const auto len = static_cast<std::uint32_t>(std::min<std::uint64_t>(size - pos, most));
    const auto r = m.block_status(pos, len);
    if (!r) fail("cannot send BLOCK_STATUS at offset " + std::to_string(pos) + ": " + errc_text(r.error()));
    std::uint64_t covered = pos;
    for (;;) {
      const auto ev = c.next();
      if (ev.kind == event_kind::extent) {
        if (ev.context_id != *id || ev.offset != covered || ev.offset >= size) continue;
        const std::uint64_t end = std::min(size, ev.offset + std::min(ev.length, size - ev.offset));
        add(ev.offset, end - ev.offset, ev.extent_flags);
        covered = end;
        continue;
      }
      if (ev.kind != event_kind::reply) fail_event(ev, "while mapping");
      if (ev.status != nbdwire::nbd_error::ok) {
        const std::string msg = c.take_error_message(ev.req.cookie);
        fail("BLOCK_STATUS at offset " + std::to_string(pos) + " failed: " + std::string(nbdwire::to_string(ev.status)) +
             (msg.empty() ? "" : " (" + msg + ")"));
      }
      break;
    }
    if (covered == pos) fail("the server described nothing at offset " + std::to_string(pos));
    pos = covered;
  }
  return map;
}

int cmd_map(const options& o) {
  need_args(o, 2, "map URI [--json]");
  const auto uri = examples::parse_nbd_uri(o.positional[1]);
  auto c = open_connection(uri, o, true);
  negotiate(*c, uri.export_name);
  const auto map = allocation_map(*c);
  c->shut_down();
  // The layout of nbdinfo --map, so the two can be compared line by line.
  std::string out = o.json ? "[\n" : "";
  char line[160];
  for (std::size_t i = 0; i < map.size(); ++i) {
    const auto& e = map[i];
    const char* d = allocation_description(e.flags);
    const auto off = static_cast<unsigned long long>(e.offset), len = static_cast<unsigned long long>(e.length),
               type = static_cast<unsigned long long>(e.flags);
    if (o.json) {
      std::snprintf(line, sizeof line, "%s{ \"offset\": %llu, \"length\": %llu, \"type\": %llu", i ? ",\n" : "", off,
                    len, type);
      out += line;
      if (d) out += ", \"description\": \""s + d + "\"";
      out += "}";
    } else {
      std::snprintf(line, sizeof line, "%10llu  %10llu  %3llu", off, len, type);
      out += line;
      if (d) out += "  "s + d;
      out += "\n";
    }
  }
  if (o.json) out += "\n]\n";
  std::fputs(out.c_str(), stdout);
  return 0;
}

int cmd_list(const options& o) {
  need_args(o, 2, "list URI [--json]");
  if (o.legacy) fail("the 1997 framing has no handshake, so no export list");
  const auto uri = examples::parse_nbd_uri(o.positional[1]);
  auto c = open_connection(uri, o);
  auto& m = c->machine();
  std::vector<std::pair<std::string, std::string>> exports;
  bool listed = false;
  while (!listed) {
    const auto ev = handshake_event(*c);
    switch (ev.kind) {
      case event_kind::greeting:
        if (const auto r = m.list(); !r) {
          if (r.error() == nbdwire::errc::option_needs_fixed_newstyle)
            fail("the server does not use fixed newstyle negotiation, so it cannot list exports");
          fail("cannot send LIST: " + errc_text(r.error()));
        }
        break;
      case event_kind::ready: fail("the server uses oldstyle negotiation, which has no export list");
      case event_kind::export_listed:
        exports.emplace_back(std::string(nbdwire::as_chars(ev.data)), std::string(nbdwire::as_chars(ev.text)));
        break;
      case event_kind::option_done: listed = true; break;
      case event_kind::option_refused: fail("the server refused to list its exports: " + refusal_text(ev));
      default: fail_event(ev, "while listing exports");
    }
  }
  c->shut_down();  // NBD_OPT_ABORT

  if (o.json) {
    std::string j = "{\n  \"exports\": [";
    for (std::size_t i = 0; i < exports.size(); ++i) {
      j += i ? ",\n    " : "\n    ";
      j += "{\"export-name\": " + json_string(exports[i].first) +
           ", \"description\": " + json_string(exports[i].second) + "}";
    }
    j += exports.empty() ? "]\n}\n" : "\n  ]\n}\n";
    std::fputs(j.c_str(), stdout);
  } else {
    for (const auto& [name, desc] : exports) {
      if (desc.empty())
        std::printf("%s\n", name.c_str());
      else
        std::printf("%s\t%s\n", name.c_str(), desc.c_str());
    }
  }
  return 0;
}

/// How many connections a copy uses: one unless the export allows multi-conn; then
/// --connections, by default one per CPU and at most 4 (more than the CPUs only adds
/// contention: a 1 GiB download into tmpfs took 0.69-0.87 s with two, 0.90-0.95 with four).
unsigned connections_for(const options& o, const nbdwire::negotiated& neg) {
  // Each connection must see the same export: multi-conn (spec "Transmission flags").
  if (!neg.has(nbdwire::transmission_flag::can_multi_conn) || neg.style == nbdwire::handshake_style::legacy_1997)
    return 1;
  if (o.connections) return o.connections;
  return std::min(4u, std::max(1u, std::thread::hardware_concurrency()));
}

/// One more connection to the export for a copy, or null: a server may allow fewer
/// connections than it has multi-conn for, and the copy then goes on with those that open.
std::unique_ptr<connection> open_another_connection(const examples::nbd_uri& uri, const options& o,
                                                    std::uint64_t size) {
  try {
    auto c = open_connection(uri, o);
    negotiate(*c, uri.export_name);
    if (c->machine().negotiated().export_size != size) fail("the export's size differs on this connection");
    return c;
  } catch (const failure& f) {
    std::fprintf(stderr, "nbdwire-client: copying without one of the extra connections: %s\n", f.what());
    return nullptr;
  }
}

/// Export -> descriptor (stdout or a file). `skip_holes` (copy): READ only what
/// base:allocation says may hold data; ranges that read as zeroes are written as zeroes, or
/// left as holes when `own_file`: fd is a regular file this copy created (or truncated).
/// Such a file is written at each piece's own offset, so with an export that allows
/// multi-conn, o.connections connections read at once, each taking the next slice of the
/// ranges when it can take more.
void export_to_fd(const options& o, const std::string& uri_text, std::uint64_t offset,
                  std::optional<std::uint64_t> length, int fd, const std::string& what, bool show_progress,
                  bool skip_holes = false, bool own_file = false) {
  const auto uri = examples::parse_nbd_uri(uri_text);
  const auto first_connection = open_connection(uri, o, skip_holes);
  connection& first = *first_connection;
  negotiate(first, uri.export_name);
  const auto& neg = first.machine().negotiated();
  const std::uint64_t size = neg.export_size;
  if (offset > size) fail("offset " + std::to_string(offset) + " is past the end of the export (" + std::to_string(size) + " bytes)");
  const std::uint64_t len = length ? *length : size - offset;
  if (len > size - offset) fail("offset + length is past the end of the export (" + std::to_string(size) + " bytes)");
  progress prog(len, show_progress);
  // A file of our own gets READ data spliced in by each connection; anything else, in order.
  const read_output out = [&](const std::byte* p, std::size_t n) {
    if (p) {
      examples::write_all(fd, p, n, what);
    } else {
      static const std::vector<std::byte> zeroes(1024 * 1024);
      for (std::size_t done = 0; done < n;) {
        const std::size_t k = std::min(n - done, zeroes.size());
        examples::write_all(fd, zeroes.data(), k, what);
        done += k;
      }
    }
  };
  // What base:allocation says may hold data is read; what reads as zeroes is not.
  std::vector<read_range> extents;
  if (!skip_holes) {
    extents.push_back({offset, len, false});
  } else {
    const std::uint64_t end = offset + len;
    for (const map_extent& e : allocation_map(first)) {
      const std::uint64_t from = std::max(offset, e.offset), to = std::min(end, e.offset + e.length);
      if (from >= to) continue;
      const bool zero = (e.flags & nbdwire::state_flag::zero) != 0;
      if (!extents.empty() && extents.back().zero == zero && extents.back().offset + extents.back().length == from)
        extents.back().length += to - from;
      else
        extents.push_back({from, to - from, zero});
    }
  }
  // Data in slices, which the connections take one at a time.
  std::vector<read_range> ranges;
  for (const read_range& e : extents) {
    if (e.zero || e.length == 0) {
      ranges.push_back(e);
      continue;
    }
    for (std::uint64_t at = e.offset; at < e.offset + e.length; at += copy_slice)
      ranges.push_back({at, std::min(copy_slice, e.offset + e.length - at), false});
  }

  // More connections only where the output takes pieces out of order.
  const unsigned wanted = own_file ? connections_for(o, neg) : 1;
  std::mutex mu;  // guards the two below
  std::size_t next_range = 0;
  std::exception_ptr error;
  const range_source next = [&]() -> std::optional<read_range> {
    const std::lock_guard lock(mu);
    if (error || next_range == ranges.size()) return std::nullopt;
    return ranges[next_range++];
  };
  const auto run = [&](connection& c) {
    try {
      pipelined_read(c, next, out, prog, own_file ? fd : -1, offset);
    } catch (...) {
      const std::lock_guard lock(mu);  // the others stop taking ranges; the first error wins
      if (!error) error = std::current_exception();
    }
  };
  // The other connections open on threads of their own while the first one reads already.
  const auto run_another = [&] {
    if (const auto c = open_another_connection(uri, o, size)) run(*c);
  };
  {
    std::vector<std::jthread> others;
    for (unsigned i = 1; i < wanted; ++i) others.emplace_back(run_another);
    run(first);
  }
  if (error) std::rethrow_exception(error);
  // A hole at the end is not written: the size makes it part of the file.
  if (own_file && ftruncate(fd, static_cast<off_t>(len)) != 0) examples::fail_errno("set the size of " + what);
  prog.finish();
  first.shut_down();
}

/// A write source over [pos, end) of a regular file: holes (SEEK_DATA / SEEK_HOLE) become
/// zero runs that are never read, and data is left in the file for sendfile() unless its
/// first block is all zeroes (then it is read, to go as WRITE_ZEROES if it all is).
class file_source {
 public:
  file_source(int fd, off_t from, off_t to, const nbdwire::negotiated& neg, const std::string& what,
              const std::atomic<bool>& stop)
      : fd_(fd), pos_(from), end_(to), what_(what), stop_(stop) {
    can_zero_ = neg.has(nbdwire::transmission_flag::send_write_zeroes);
    align_ = std::max<std::uint64_t>(neg.block_size.minimum, 1);
    // Zero runs stay within the maximum payload: a server MAY refuse longer payload-less
    // requests with EOVERFLOW (spec "Block size constraints").
    zero_cap_ = std::min<std::uint64_t>(max_zero_run, neg.block_size.maximum) / align_ * align_;
  }

  source_piece operator()(std::byte* p, std::size_t n) {
    if (pos_ >= end_ || stop_) return {};
    // The next data run at or after `asked_`, [run_start_, run_end_) within this source,
    // found once with SEEK_DATA / SEEK_HOLE and kept while pos_ is in [asked_, run_end_): on
    // tmpfs each SEEK_HOLE walks the page cache up to the hole, so asking for every request
    // would walk the rest of the file each time (a dense 512 MiB file took 3x longer to copy).
    if (pos_ < asked_ || pos_ >= run_end_) {
      asked_ = pos_;
      run_start_ = lseek(fd_, pos_, SEEK_DATA);
      if (run_start_ < 0) run_start_ = errno == ENXIO ? end_ : pos_;  // ENXIO: a hole up to the end
      run_start_ = std::min(run_start_, end_);
      run_end_ = run_start_ < end_ ? lseek(fd_, run_start_, SEEK_HOLE) : end_;
      if (run_end_ <= run_start_ || run_end_ > end_) run_end_ = end_;
    }
    // Only whole blocks of the export become zero runs; a partial block is read as data.
    const auto hole = static_cast<std::uint64_t>(std::max<off_t>(run_start_ - pos_, 0)) / align_ * align_;
    if (can_zero_ && hole != 0 && zero_cap_ != 0) {
      const std::uint64_t run = std::min(hole, zero_cap_);
      pos_ += static_cast<off_t>(run);
      return {run, true};
    }
    // Up to the next hole, rounded up to a whole block (reading into a hole gives zeroes).
    std::uint64_t want = static_cast<std::uint64_t>(std::max(run_end_, pos_ + 1) - pos_);
    want = std::min<std::uint64_t>(n, (want + align_ - 1) / align_ * align_);
    if (want <= static_cast<std::uint64_t>(end_ - pos_)) {
      std::size_t probe = 0;
      if (can_zero_) {
        const ssize_t got = pread(fd_, p, std::min<std::uint64_t>(want, probe_size), pos_);
        if (got < 0) examples::fail_errno("read " + what_);
        probe = static_cast<std::size_t>(got);
      }
      if (!can_zero_ || !all_zero(p, probe)) {
        const source_piece in_file{want, false, fd_, pos_};
        pos_ += static_cast<off_t>(want);
        return in_file;
      }
    }
    const ssize_t got = pread(fd_, p, want, pos_);
    if (got < 0) examples::fail_errno("read " + what_);
    pos_ += got;
    return {static_cast<std::uint64_t>(got), false};
  }

 private:
  int fd_;
  off_t pos_, end_;
  off_t asked_ = -1, run_start_ = -1, run_end_ = -1;
  bool can_zero_ = false;
  std::uint64_t align_ = 1, zero_cap_ = 0;
  const std::string& what_;
  const std::atomic<bool>& stop_;
};

/// Descriptor (stdin or a file) -> export. A regular file is read from its current offset
/// with pread(); with an export that allows multi-conn it is cut into one part per
/// connection (o.connections, as for copies from an export), each written on its own.
void fd_to_export(const options& o, const std::string& uri_text, std::uint64_t offset, int fd, const std::string& what,
                  bool show_progress) {
  const auto uri = examples::parse_nbd_uri(uri_text);
  const auto first_connection = open_connection(uri, o);
  connection& first = *first_connection;
  negotiate(first, uri.export_name);
  const auto& neg = first.machine().negotiated();
  const std::uint64_t size = neg.export_size;
  struct stat st{};
  const off_t here = lseek(fd, 0, SEEK_CUR);
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || here < 0) {
    // A stream: read in order, on one connection.
    progress prog(0, show_progress);
    const write_source stream = [&](std::byte* p, std::size_t n) {
      return source_piece{examples::read_full(fd, p, n, what), false};
    };
    pipelined_write(first, offset, stream, prog);
    prog.finish();
    first.shut_down();
    return;
  }
  const auto fsize = static_cast<std::uint64_t>(st.st_size);
  const std::uint64_t start = std::min(fsize, static_cast<std::uint64_t>(here));
  const std::uint64_t total = fsize - start;
  if (offset > size || total > size - offset)
    fail(what + " (" + std::to_string(total) + " bytes) does not fit in the export (" + std::to_string(size) +
         " bytes" + (offset ? " from offset " + std::to_string(offset) : "") + ")");
  progress prog(total, show_progress);

  // Parts of whole requests, one per connection, so no request crosses a part's end.
  const std::uint64_t step = chunk_size(neg);
  const std::uint64_t most = std::max<std::uint64_t>(1, (total + step - 1) / step);
  const auto parts = static_cast<unsigned>(std::min<std::uint64_t>(connections_for(o, neg), most));
  const std::uint64_t part = (total / parts + step - 1) / step * step;
  std::atomic<bool> stop{false};
  std::mutex mu;  // guards the two below
  std::exception_ptr error;
  std::vector<bool> written(parts, false);
  const auto write_part = [&](connection& c, unsigned i) {
    const std::uint64_t from = std::min(total, i * part), to = std::min(total, from + part);
    try {
      file_source in(fd, static_cast<off_t>(start + from), static_cast<off_t>(start + to), neg, what, stop);
      pipelined_write(c, offset + from, std::ref(in), prog);
      const std::lock_guard lock(mu);
      written[i] = true;
    } catch (...) {
      stop = true;  // the others stop reading their parts
      const std::lock_guard lock(mu);
      if (!error) error = std::current_exception();
    }
  };
  {
    std::vector<std::jthread> others;
    for (unsigned i = 1; i < parts; ++i)
      others.emplace_back([&, i] {
        // Without it, the first connection writes this part afterwards.
        if (const auto c = open_another_connection(uri, o, size)) write_part(*c, i);
      });
    write_part(first, 0);
  }
  // Parts whose connection the server refused.
  for (unsigned i = 1; i < parts && !error; ++i)
    if (!written[i]) write_part(first, i);
  if (error) std::rethrow_exception(error);
  (void)lseek(fd, static_cast<off_t>(fsize), SEEK_SET);  // as if read: the offset ends past the input
  prog.finish();
  first.shut_down();
}

int cmd_read(const options& o) {
  need_args(o, 2, "read URI [--offset N] [--length N]");
  export_to_fd(o, o.positional[1], o.offset.value_or(0), o.length, 1, "stdout", false);
  return 0;
}

int cmd_write(const options& o) {
  need_args(o, 2, "write URI [--offset N]");
  if (o.length) usage_error("write takes no --length (it writes until the end of stdin)");
  fd_to_export(o, o.positional[1], o.offset.value_or(0), 0, "stdin", false);
  return 0;
}

int cmd_copy(const options& o) {
  need_args(o, 3, "copy SRC DST");
  const std::string& src = o.positional[1];
  const std::string& dst = o.positional[2];
  const bool src_uri = nbdwire::is_nbd_uri(src), dst_uri = nbdwire::is_nbd_uri(dst);
  if (src_uri == dst_uri) fail("copy needs exactly one NBD URI and one file (or '-')");
  if (src_uri) {
    int fd = 1;
    bool own_file = false;
    if (dst != "-") {
      fd = open(dst.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
      if (fd < 0) examples::fail_errno("cannot open " + dst);
      struct stat st{};
      own_file = fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
    }
    export_to_fd(o, src, 0, std::nullopt, fd, dst == "-" ? "stdout" : dst, true, true, own_file);
    if (fd != 1 && close(fd) < 0) examples::fail_errno("close " + dst);
  } else {
    int fd = 0;
    if (src != "-") {
      fd = open(src.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) examples::fail_errno("cannot open " + src);
    }
    fd_to_export(o, dst, 0, fd, src == "-" ? "stdin" : src, true);
    if (fd != 0) close(fd);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  try {
    const options o = parse_args(argc, argv);
    if (o.positional.empty()) usage_error("missing command");
    const std::string& cmd = o.positional[0];
    if (cmd == "info") return cmd_info(o);
    if (cmd == "list") return cmd_list(o);
    if (cmd == "map") return cmd_map(o);
    if (cmd == "read") return cmd_read(o);
    if (cmd == "write") return cmd_write(o);
    if (cmd == "copy") return cmd_copy(o);
    usage_error("unknown command '" + cmd + "'");
  } catch (const failure& f) {
    std::fflush(stdout);
    std::fprintf(stderr, "nbdwire-client: %s\n", f.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "nbdwire-client: %s\n", e.what());
    return 1;
  }
}
