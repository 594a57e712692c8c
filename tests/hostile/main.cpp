// SPDX-License-Identifier: MIT
// A hostile client against nbdwire-server over real sockets. Each case sends what a broken or
// malicious client might send and checks the answer the NBD protocol requires; between cases
// a well-behaved client keeps reading and writing on its own connection, and at the end a
// fresh connection verifies every byte the good client wrote.
//
//   nbdwire-hostile SERVER-BINARY            the attack cases
//   nbdwire-hostile SERVER-BINARY --deadline clients that never finish the handshake
//                                            (needs nbdwire-server --handshake-timeout)
// Exit status: 0 all passed, 1 a case failed, 77 the server lacks what the mode needs.
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "nbdwire/wire.hpp"

namespace {

using bytes = std::vector<std::byte>;
using namespace nbdwire;

constexpr std::uint64_t export_size = 64u << 20;
constexpr int io_timeout_ms = 20000;  // a bound on waiting, never an assertion about speed

int failures = 0;
std::string current_case;

void fail(const std::string& what) {
  std::fprintf(stderr, "FAIL [%s]: %s\n", current_case.c_str(), what.c_str());
  ++failures;
}
#define EXPECT(cond)                                                   \
  do {                                                                 \
    if (!(cond)) fail(std::string(#cond) + " (line " + std::to_string(__LINE__) + ")"); \
  } while (0)

struct abort_case {};  // thrown when a case cannot continue

template <class Record>
void put(bytes& b, const Record& r) {
  const auto e = encode(r);
  b.insert(b.end(), e.begin(), e.end());
}
void put_u32(bytes& b, std::uint32_t v) {
  std::array<std::byte, 4> a{};
  store_be(a.data(), v);
  b.insert(b.end(), a.begin(), a.end());
}
void put_u16(bytes& b, std::uint16_t v) {
  std::array<std::byte, 2> a{};
  store_be(a.data(), v);
  b.insert(b.end(), a.begin(), a.end());
}
void put_str(bytes& b, std::string_view s) {
  const auto v = as_bytes(s);
  b.insert(b.end(), v.begin(), v.end());
}
std::byte pattern(std::uint64_t off, std::uint8_t salt) {
  return static_cast<std::byte>((off * 167u + salt) & 0xffu);
}

// ---- the server process ---------------------------------------------------------------------

class server_process {
 public:
  server_process(const std::string& binary, const std::string& sock, std::vector<std::string> extra) : sock_(sock) {
    ::unlink(sock.c_str());
    std::vector<std::string> args{binary, "--unix", sock};
    args.insert(args.end(), extra.begin(), extra.end());
    pid_ = ::fork();
    if (pid_ == 0) {
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(binary.c_str(), argv.data());
      std::_Exit(127);
    }
    for (int i = 0; i < 400; ++i) {
      struct stat st {};
      if (::stat(sock.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) return;
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    std::fprintf(stderr, "nbdwire-server did not come up on %s\n", sock.c_str());
    std::exit(1);
  }
  ~server_process() { stop(); }
  server_process(const server_process&) = delete;
  server_process& operator=(const server_process&) = delete;

  /// Still running (it must survive every attack).
  bool alive() const {
    int status = 0;
    return pid_ > 0 && ::waitpid(pid_, &status, WNOHANG) == 0;
  }
  /// Resident memory in KiB.
  long rss_kib() const {
    std::ifstream f("/proc/" + std::to_string(pid_) + "/status");
    std::string line;
    while (std::getline(f, line))
      if (line.rfind("VmRSS:", 0) == 0) return std::atol(line.c_str() + 6);
    return -1;
  }
  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    ::unlink(sock_.c_str());
  }
  const std::string& path() const { return sock_; }

 private:
  std::string sock_;
  pid_t pid_ = -1;
};

// ---- a connection ---------------------------------------------------------------------------

class conn {
 public:
  explicit conn(const std::string& path) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
    if (fd_ < 0 || ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      fail("connect: " + std::string(std::strerror(errno)));
      throw abort_case{};
    }
  }
  ~conn() { close(); }
  conn(const conn&) = delete;
  conn& operator=(const conn&) = delete;
  conn(conn&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }

  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  void shutdown_write() { ::shutdown(fd_, SHUT_WR); }

  /// Sends everything; false if the server closed first (which some cases expect).
  bool send(const bytes& b) {
    std::size_t off = 0;
    while (off < b.size()) {
      const ssize_t n = ::send(fd_, b.data() + off, b.size() - off, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        return false;
      }
      off += static_cast<std::size_t>(n);
    }
    return true;
  }

  /// Exactly n bytes, or a failed case.
  bytes recv(std::size_t n) {
    bytes b(n);
    std::size_t off = 0;
    while (off < n) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, io_timeout_ms) <= 0) {
        fail("no answer from the server (" + std::to_string(off) + "/" + std::to_string(n) + " bytes)");
        throw abort_case{};
      }
      const ssize_t r = ::recv(fd_, b.data() + off, n - off, 0);
      if (r <= 0) {
        if (r < 0 && errno == EINTR) continue;
        fail("server closed after " + std::to_string(off) + "/" + std::to_string(n) + " bytes");
        throw abort_case{};
      }
      off += static_cast<std::size_t>(r);
    }
    return b;
  }

  /// The server closes the connection (after sending nothing more than `allowed` bytes).
  bool closed_by_server(std::size_t allowed = 0, int timeout_ms = io_timeout_ms) {
    std::size_t extra = 0;
    std::array<std::byte, 65536> buf{};
    for (;;) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, timeout_ms) <= 0) return false;
      const ssize_t r = ::recv(fd_, buf.data(), buf.size(), 0);
      if (r == 0 || (r < 0 && errno == ECONNRESET)) return extra <= allowed;
      if (r < 0) return false;
      extra += static_cast<std::size_t>(r);
      if (extra > allowed) return false;
    }
  }

  int fd() const { return fd_; }

 private:
  int fd_ = -1;
};

// ---- protocol helpers -----------------------------------------------------------------------

struct opt_reply {
  std::uint32_t option = 0, type = 0;
  bytes data;
};

opt_reply read_opt_reply(conn& c) {
  const auto h = decode<option_reply_header>(c.recv(sizeof(option_reply_header)));
  if (h.magic.get() != magic::option_reply) {
    fail("bad option reply magic");
    throw abort_case{};
  }
  opt_reply r{h.option.get(), h.type.get(), {}};
  if (h.length.get() > 1u << 20) {
    fail("option reply too long");
    throw abort_case{};
  }
  r.data = c.recv(h.length.get());
  return r;
}

/// Reads replies until the final one; returns it.
opt_reply final_reply(conn& c) {
  for (;;) {
    opt_reply r = read_opt_reply(c);
    if (r.type == static_cast<std::uint32_t>(reply_type::ack) || (r.type & reply_type_error_bit)) return r;
  }
}

/// Greeting + client flags (fixed newstyle, NO_ZEROES).
void start_handshake(conn& c) {
  const auto g = decode<newstyle_greeting>(c.recv(sizeof(newstyle_greeting)));
  if (g.passwd.get() != magic::nbdmagic || g.magic.get() != magic::ihaveopt) {
    fail("not a newstyle greeting");
    throw abort_case{};
  }
  bytes b;
  put(b, make_client_flags(client_flag::fixed_newstyle | client_flag::no_zeroes));
  c.send(b);
}

bytes option(std::uint32_t opt, const bytes& data) {
  bytes b;
  put(b, make_option_header(static_cast<nbdwire::option>(opt), static_cast<std::uint32_t>(data.size())));
  b.insert(b.end(), data.begin(), data.end());
  return b;
}

bytes go_body(std::string_view name) {
  bytes d;
  put_u32(d, static_cast<std::uint32_t>(name.size()));
  put_str(d, name);
  put_u16(d, 1);
  put_u16(d, static_cast<std::uint16_t>(info_type::block_size));
  return d;
}

/// A connection in transmission on export "disk"; returns its transmission flags.
std::uint16_t open_export(conn& c, std::string_view name = "disk") {
  start_handshake(c);
  c.send(option(static_cast<std::uint32_t>(nbdwire::option::go), go_body(name)));
  std::uint16_t flags = 0;
  for (;;) {
    opt_reply r = read_opt_reply(c);
    if (r.type == static_cast<std::uint32_t>(reply_type::info) && r.data.size() == 12)
      flags = decode<info_export_payload>(r.data).transmission_flags.get();
    if (r.type == static_cast<std::uint32_t>(reply_type::ack)) return flags;
    if (r.type & reply_type_error_bit) {
      fail("GO refused");
      throw abort_case{};
    }
  }
}

bytes request(command cmd, std::uint64_t cookie, std::uint64_t off, std::uint32_t len, std::uint16_t flags = 0) {
  bytes b;
  put(b, make_request(cmd, flags, cookie, off, len));
  return b;
}
bytes raw_request(std::uint16_t type, std::uint64_t cookie, std::uint64_t off, std::uint32_t len, std::uint16_t flags) {
  request_header h = make_request(command::read, flags, cookie, off, len);
  h.type.set(type);
  bytes b;
  put(b, h);
  return b;
}

struct reply {
  std::uint32_t error = 0;
  std::uint64_t cookie = 0;
};
reply read_reply(conn& c) {
  const auto h = decode<simple_reply_header>(c.recv(sizeof(simple_reply_header)));
  if (h.magic.get() != magic::simple_reply) {
    fail("bad reply magic");
    throw abort_case{};
  }
  return {h.error.get(), h.cookie.get()};
}

// ---- the good client ------------------------------------------------------------------------

/// Writes its own region between cases and remembers what it wrote, for the final check.
class good_client {
 public:
  explicit good_client(const std::string& path) : c_(path) { open_export(c_); }

  /// One WRITE and a READ back of the next 4 KiB block of its region (the first 16 MiB).
  void round() {
    const std::uint64_t off = (block_++ % 4096) * 4096;
    const auto salt = static_cast<std::uint8_t>(block_);
    bytes b = request(command::write, 1000 + block_, off, 4096);
    for (std::uint64_t i = 0; i < 4096; ++i) b.push_back(pattern(off + i, salt));
    const bytes rd = request(command::read, 2000 + block_, off, 4096);
    b.insert(b.end(), rd.begin(), rd.end());
    EXPECT(c_.send(b));
    const reply w = read_reply(c_);
    EXPECT(w.cookie == 1000 + block_ && w.error == 0);
    const reply r = read_reply(c_);
    EXPECT(r.cookie == 2000 + block_ && r.error == 0);
    const bytes data = c_.recv(4096);
    for (std::uint64_t i = 0; i < 4096; ++i)
      if (data[i] != pattern(off + i, salt)) {
        fail("good client read back other data");
        break;
      }
    for (std::uint64_t i = 0; i < 4096; ++i) written_[off + i] = static_cast<std::uint8_t>(pattern(off + i, salt));
  }
  const std::map<std::uint64_t, std::uint8_t>& written() const { return written_; }

 private:
  conn c_;
  std::uint64_t block_ = 0;
  std::map<std::uint64_t, std::uint8_t> written_;
};

// ---- the cases ------------------------------------------------------------------------------

using case_fn = std::function<void(const server_process&)>;

void bad_client_flags(const server_process& s) {
  conn c(s.path());
  c.recv(sizeof(newstyle_greeting));
  bytes b;
  put(b, make_client_flags(0x80000001u));
  c.send(b);
  EXPECT(c.closed_by_server());  // "MUST drop the connection"
}

void bad_option_magic(const server_process& s) {
  conn c(s.path());
  start_handshake(c);
  bytes b;
  option_header h = make_option_header(nbdwire::option::list, 0);
  h.magic.set(0x1122334455667788u);
  put(b, h);
  c.send(b);
  EXPECT(c.closed_by_server());
}

void unknown_options(const server_process& s) {
  conn c(s.path());
  start_handshake(c);
  // Unknown option with data: ERR_UNSUP after the data is consumed; the connection goes on.
  c.send(option(0x12345678u, bytes(300, std::byte{0x41})));
  opt_reply r = final_reply(c);
  EXPECT(r.option == 0x12345678u && r.type == static_cast<std::uint32_t>(reply_type::err_unsup));
  // Withdrawn and unsupported options too.
  c.send(option(static_cast<std::uint32_t>(nbdwire::option::peek_export), {}));
  r = final_reply(c);
  EXPECT(r.type & reply_type_error_bit);
  // LIST still works, and lists "disk".
  c.send(option(static_cast<std::uint32_t>(nbdwire::option::list), {}));
  bool listed = false;
  for (;;) {
    r = read_opt_reply(c);
    if (r.type == static_cast<std::uint32_t>(reply_type::server) && r.data.size() >= 8 &&
        as_chars(bytes_view(r.data).subspan(4, 4)) == "disk")
      listed = true;
    if (r.type != static_cast<std::uint32_t>(reply_type::server)) break;
  }
  EXPECT(listed && r.type == static_cast<std::uint32_t>(reply_type::ack));
  // LIST with data is invalid (the data is consumed).
  c.send(option(static_cast<std::uint32_t>(nbdwire::option::list), bytes(5, std::byte{1})));
  r = final_reply(c);
  EXPECT(r.type == static_cast<std::uint32_t>(reply_type::err_invalid));
  // ABORT: ACK, then the server closes.
  c.send(option(static_cast<std::uint32_t>(nbdwire::option::abort), {}));
  r = read_opt_reply(c);
  EXPECT(r.type == static_cast<std::uint32_t>(reply_type::ack));
  EXPECT(c.closed_by_server());
}

void lying_lengths(const server_process& s) {
  conn c(s.path());
  start_handshake(c);
  // INFO whose name length runs past the option: ERR_INVALID, data consumed.
  bytes d;
  put_u32(d, 100);
  put_str(d, "disk");
  put_u16(d, 0);
  c.send(option(static_cast<std::uint32_t>(nbdwire::option::info), d));
  EXPECT(final_reply(c).type == static_cast<std::uint32_t>(reply_type::err_invalid));
  // Info count that disagrees with the length.
  d.clear();
  put_u32(d, 4);
  put_str(d, "disk");
  put_u16(d, 7);
  put_u16(d, 3);
  c.send(option(static_cast<std::uint32_t>(nbdwire::option::info), d));
  EXPECT(final_reply(c).type == static_cast<std::uint32_t>(reply_type::err_invalid));
  // INFO shorter than its fixed part.
  c.send(option(static_cast<std::uint32_t>(nbdwire::option::info), bytes(3, std::byte{0})));
  EXPECT(final_reply(c).type == static_cast<std::uint32_t>(reply_type::err_invalid));
  // A 4096-byte name is legal and unknown; a 4097-byte one is invalid.
  c.send(option(static_cast<std::uint32_t>(nbdwire::option::info), go_body(std::string(4096, 'x'))));
  EXPECT(final_reply(c).type == static_cast<std::uint32_t>(reply_type::err_unknown));
  c.send(option(static_cast<std::uint32_t>(nbdwire::option::go), go_body(std::string(4097, 'x'))));
  EXPECT(final_reply(c).type == static_cast<std::uint32_t>(reply_type::err_invalid));
  // Still negotiating: GO for the real export succeeds.
  c.send(option(static_cast<std::uint32_t>(nbdwire::option::go), go_body("disk")));
  EXPECT(final_reply(c).type == static_cast<std::uint32_t>(reply_type::ack));
}

void export_name_too_long(const server_process& s) {
  conn c(s.path());
  start_handshake(c);
  bytes d;
  put_str(d, std::string(4097, 'y'));
  c.send(option(static_cast<std::uint32_t>(nbdwire::option::export_name), d));
  EXPECT(c.closed_by_server());  // EXPORT_NAME can only be refused by closing
}

void huge_option_length(const server_process& s) {
  const long before = s.rss_kib();
  conn c(s.path());
  start_handshake(c);
  bytes b;
  put(b, make_option_header(static_cast<nbdwire::option>(0x7777u), 0xffffffffu));
  b.insert(b.end(), 4096, std::byte{0x5a});
  c.send(b);
  EXPECT(c.closed_by_server());
  const long after = s.rss_kib();
  EXPECT(before > 0 && after > 0 && after - before < 16 * 1024);  // nothing near 4 GiB reserved
}

void truncations(const server_process& s) {
  // A whole valid session; the client hangs up after every prefix of it.
  bytes session;
  put(session, make_client_flags(client_flag::fixed_newstyle | client_flag::no_zeroes));
  const bytes go = option(static_cast<std::uint32_t>(nbdwire::option::go), go_body("disk"));
  session.insert(session.end(), go.begin(), go.end());
  const std::size_t tx = session.size();
  bytes w = request(command::write, 7, 32u << 20, 512);
  for (int i = 0; i < 512; ++i) w.push_back(std::byte{0xee});
  session.insert(session.end(), w.begin(), w.end());
  const bytes r = request(command::read, 8, 0, 4096);
  session.insert(session.end(), r.begin(), r.end());
  std::vector<std::size_t> cuts;
  for (std::size_t k = 0; k <= tx + 40; ++k) cuts.push_back(k);
  for (std::size_t k = tx + 40; k < session.size(); k += 37) cuts.push_back(k);
  for (std::size_t k : cuts) {
    conn c(s.path());
    c.recv(sizeof(newstyle_greeting));
    c.send(bytes(session.begin(), session.begin() + static_cast<std::ptrdiff_t>(k)));
    if (k % 2) c.shutdown_write();  // half-close, or a plain close
    else c.close();
  }
  EXPECT(s.alive());
}

void transmission_errors(const server_process& s) {
  conn c(s.path());
  open_export(c);
  bytes b;
  // READ past the end, and ranges whose end overflows 64 bits: EINVAL.
  b = request(command::read, 1, export_size - 512, 1024);
  c.send(b);
  reply r = read_reply(c);
  EXPECT(r.cookie == 1 && r.error == static_cast<std::uint32_t>(nbd_error::einval));
  c.send(request(command::read, 2, 0xffffffffffffff00u, 0x200));
  r = read_reply(c);
  EXPECT(r.cookie == 2 && r.error == static_cast<std::uint32_t>(nbd_error::einval));
  // WRITE past the end: ENOSPC, and its data is consumed (the next request parses).
  b = request(command::write, 3, export_size - 256, 512);
  b.insert(b.end(), 512, std::byte{0x77});
  c.send(b);
  r = read_reply(c);
  EXPECT(r.cookie == 3 && r.error == static_cast<std::uint32_t>(nbd_error::enospc));
  b = request(command::write, 4, 0xfffffffffffffe00u, 1024);
  b.insert(b.end(), 1024, std::byte{0x78});
  c.send(b);
  r = read_reply(c);
  EXPECT(r.cookie == 4 && r.error == static_cast<std::uint32_t>(nbd_error::enospc));
  // Unknown command, unknown flag, flag for another command: EINVAL.
  c.send(raw_request(99, 5, 0, 512, 0));
  r = read_reply(c);
  EXPECT(r.cookie == 5 && r.error == static_cast<std::uint32_t>(nbd_error::einval));
  c.send(raw_request(0, 6, 0, 512, 0x8000));
  r = read_reply(c);
  EXPECT(r.cookie == 6 && r.error == static_cast<std::uint32_t>(nbd_error::einval));
  c.send(raw_request(0, 7, 0, 512, command_flag::fast_zero));
  r = read_reply(c);
  EXPECT(r.cookie == 7 && r.error == static_cast<std::uint32_t>(nbd_error::einval));
  // BLOCK_STATUS without a negotiated context: EINVAL.
  c.send(raw_request(7, 8, 0, 512, 0));
  r = read_reply(c);
  EXPECT(r.cookie == 8 && r.error == static_cast<std::uint32_t>(nbd_error::einval));
  // A valid READ still works after all that.
  c.send(request(command::read, 9, 48u << 20, 512));
  r = read_reply(c);
  EXPECT(r.cookie == 9 && r.error == 0);
  c.recv(512);
}

void oversize_payload(const server_process& s) {
  conn c(s.path());
  open_export(c);
  // A WRITE announcing 64 MiB: beyond what any server must read, so a hard disconnect.
  bytes b = request(command::write, 1, 0, 64u << 20);
  b.insert(b.end(), 4096, std::byte{1});
  c.send(b);
  EXPECT(c.closed_by_server());
}

void bad_request_magic(const server_process& s) {
  conn c(s.path());
  open_export(c);
  bytes b = request(command::read, 1, 0, 512);
  b[0] = std::byte{0x12};
  c.send(b);
  EXPECT(c.closed_by_server());
}

void disc_with_requests_in_flight(const server_process& s) {
  conn c(s.path());
  open_export(c);
  const std::uint64_t off = 40u << 20;
  bytes b = request(command::write, 1, off, 8192);
  for (std::uint64_t i = 0; i < 8192; ++i) b.push_back(pattern(off + i, 0x3c));
  const bytes rd = request(command::read, 2, off, 8192);
  b.insert(b.end(), rd.begin(), rd.end());
  const bytes disc = request(command::disc, 3, 0, 0);
  b.insert(b.end(), disc.begin(), disc.end());
  b.insert(b.end(), 100, std::byte{0x99});  // after DISC: never read
  c.send(b);
  reply r = read_reply(c);
  EXPECT(r.cookie == 1 && r.error == 0);
  r = read_reply(c);
  EXPECT(r.cookie == 2 && r.error == 0);
  const bytes data = c.recv(8192);
  bool same = true;
  for (std::uint64_t i = 0; i < 8192; ++i) same = same && data[i] == pattern(off + i, 0x3c);
  EXPECT(same);
  EXPECT(c.closed_by_server());
  // The write survived the disconnect.
  conn v(s.path());
  open_export(v);
  v.send(request(command::read, 4, off, 8192));
  r = read_reply(v);
  EXPECT(r.error == 0);
  const bytes again = v.recv(8192);
  EXPECT(again == data);
}

void read_only_export(const server_process& ro) {
  conn c(ro.path());
  const std::uint16_t flags = open_export(c);
  EXPECT(flags & transmission_flag::read_only);
  for (auto [cmd, cookie] : {std::pair{command::write, 1u}, {command::trim, 2u}, {command::write_zeroes, 3u}}) {
    bytes b = request(cmd, cookie, 0, 512);
    if (cmd == command::write) b.insert(b.end(), 512, std::byte{0x42});
    c.send(b);
    const reply r = read_reply(c);
    // EPERM; a server that did not advertise TRIM/WRITE_ZEROES may say EINVAL.
    EXPECT(r.cookie == cookie);
    EXPECT(r.error == static_cast<std::uint32_t>(nbd_error::eperm) ||
           (cmd != command::write && r.error == static_cast<std::uint32_t>(nbd_error::einval)));
  }
  c.send(request(command::read, 4, 0, 512));
  const reply r = read_reply(c);
  EXPECT(r.cookie == 4 && r.error == 0);
  c.recv(512);
}

void pipelined(const server_process& s) {
  conn c(s.path());
  open_export(c);
  constexpr std::uint64_t count = 5000;
  const std::uint64_t base = 20u << 20;
  // Writes first (in one burst), then reads of them, sent by a thread while this one reads.
  std::thread sender([&] {
    bytes b;
    for (std::uint64_t i = 0; i < count; ++i) {
      const std::uint64_t off = base + (i % 1024) * 1024;
      if (i < 1024) {
        const bytes h = request(command::write, i, off, 1024);
        b.insert(b.end(), h.begin(), h.end());
        for (std::uint64_t k = 0; k < 1024; ++k) b.push_back(pattern(off + k, 0x5e));
      } else {
        const bytes h = request(command::read, i, off, 1024);
        b.insert(b.end(), h.begin(), h.end());
      }
    }
    c.send(b);
  });
  std::map<std::uint64_t, bool> seen;
  bool data_ok = true, all_ok = true;
  try {
    for (std::uint64_t n = 0; n < count; ++n) {
      const reply r = read_reply(c);
      all_ok = all_ok && r.error == 0 && r.cookie < count && !seen[r.cookie];
      seen[r.cookie] = true;
      if (r.cookie >= 1024 && r.error == 0) {
        const std::uint64_t off = base + (r.cookie % 1024) * 1024;
        const bytes d = c.recv(1024);
        for (std::uint64_t k = 0; k < 1024; ++k) data_ok = data_ok && d[k] == pattern(off + k, 0x5e);
      }
    }
  } catch (const abort_case&) {
    sender.join();
    throw;
  }
  sender.join();
  EXPECT(all_ok && seen.size() == count);
  EXPECT(data_ok);
}

void idle_next_to_busy(const server_process& s, good_client& good) {
  std::vector<conn> idle;
  for (int i = 0; i < 300; ++i) {
    idle.emplace_back(s.path());
    if (i % 3 == 1) start_handshake(idle.back());  // some stop mid-handshake
    if (i % 3 == 2) open_export(idle.back());       // some sit in transmission
  }
  for (int i = 0; i < 200; ++i) good.round();
  EXPECT(s.alive());
}

/// Waits until the server drops a connection that never finishes the handshake.
void deadline(const server_process& s) {
  conn silent(s.path());                 // never reads the greeting, never answers
  conn flags_only(s.path());
  start_handshake(flags_only);           // stops in option haggling
  conn half_option(s.path());
  start_handshake(half_option);
  bytes partial = option(static_cast<std::uint32_t>(nbdwire::option::go), go_body("disk"));
  partial.resize(10);
  half_option.send(partial);             // stops inside an option header
  conn done(s.path());
  open_export(done);                     // finished: must not be dropped
  EXPECT(silent.closed_by_server(sizeof(newstyle_greeting), 30000));
  EXPECT(flags_only.closed_by_server(0, 30000));
  EXPECT(half_option.closed_by_server(0, 30000));
  done.send(request(command::read, 1, 0, 512));
  const reply r = read_reply(done);
  EXPECT(r.cookie == 1 && r.error == 0);
  done.recv(512);
}

bool server_has_flag(const std::string& binary, const std::string& flag) {
  const std::string cmd = "'" + binary + "' --help 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return false;
  std::string out;
  char buf[512];
  while (std::fgets(buf, sizeof buf, p)) out += buf;
  ::pclose(p);
  return out.find(flag) != std::string::npos;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: nbdwire-hostile SERVER-BINARY [--deadline]\n");
    return 2;
  }
  ::signal(SIGPIPE, SIG_IGN);
  const std::string binary = argv[1];
  const bool deadline_mode = argc > 2 && std::string(argv[2]) == "--deadline";
  char tmpl[] = "/tmp/nbdwire-hostile-XXXXXX";
  const char* dir = ::mkdtemp(tmpl);
  if (!dir) return 1;
  const std::string d = dir;
  auto run = [](const std::string& name, const std::function<void()>& f) {
    current_case = name;
    const int before = failures;
    try {
      f();
    } catch (const abort_case&) {
    }
    std::printf("%s %s\n", failures == before ? "ok  " : "FAIL", name.c_str());
    std::fflush(stdout);
  };

  if (deadline_mode) {
    if (!server_has_flag(binary, "--handshake-timeout")) {
      std::printf("SKIP: nbdwire-server has no --handshake-timeout SECONDS setting\n");
      ::rmdir(d.c_str());
      return 77;
    }
    {
      server_process s(binary, d + "/deadline.sock", {"--handshake-timeout", "1", "disk=memory:1M"});
      run("negotiation deadline", [&] { deadline(s); });
      run("server alive", [&] { EXPECT(s.alive()); });
    }
    ::rmdir(d.c_str());
    return failures ? 1 : 0;
  }

  {
    server_process s(binary, d + "/rw.sock", {"disk=memory:" + std::to_string(export_size)});
    server_process ro(binary, d + "/ro.sock", {"--read-only", "disk=memory:1M"});
    std::optional<good_client> good;
    run("good client connects", [&] { good.emplace(s.path()); });
    if (!good) return 1;
    const std::vector<std::pair<std::string, case_fn>> cases{
        {"bad client flags", bad_client_flags},
        {"bad option magic", bad_option_magic},
        {"unknown options", unknown_options},
        {"lying option and name lengths", lying_lengths},
        {"EXPORT_NAME longer than 4096", export_name_too_long},
        {"4 GiB option length", huge_option_length},
        {"truncation and hang-up at every stage", truncations},
        {"out of range, overflowing, unknown commands and flags", transmission_errors},
        {"oversize WRITE payload", oversize_payload},
        {"bad request magic", bad_request_magic},
        {"DISC with requests in flight", disc_with_requests_in_flight},
        {"thousands of pipelined requests", pipelined},
    };
    for (const auto& [name, attack] : cases) {
      const case_fn& fn = attack;
      run(name, [&] { fn(s); });
      run("good client after: " + name, [&] { good->round(); });
    }
    run("write to a read-only export", [&] { read_only_export(ro); });
    run("many idle connections next to a busy one", [&] { idle_next_to_busy(s, *good); });
    run("good client data intact", [&] {
      conn v(s.path());
      open_export(v);
      const auto& w = good->written();
      std::uint64_t lo = w.begin()->first, hi = w.rbegin()->first + 1;
      v.send(request(command::read, 1, lo, static_cast<std::uint32_t>(hi - lo)));
      const reply r = read_reply(v);
      EXPECT(r.error == 0);
      const bytes data = v.recv(hi - lo);
      std::size_t bad = 0;
      for (const auto& [off, val] : w) bad += static_cast<std::uint8_t>(data[off - lo]) != val;
      EXPECT(bad == 0);
    });
    run("servers alive", [&] { EXPECT(s.alive() && ro.alive()); });
  }
  ::rmdir(d.c_str());
  std::printf("%s\n", failures ? "hostile-server: FAILED" : "hostile-server: all cases passed");
  return failures ? 1 : 0;
}
