// SPDX-License-Identifier: MIT
// nbdwire-client write URI [--offset N] [--no-flush]: stdin to the export, then FLUSH. Also
// the export side of `copy FILE URI`: pipelined WRITEs, all-zero blocks and file holes as
// WRITE_ZEROES, a regular file's data sent with sendfile() over one or more connections.
#include <sys/stat.h>  // fstat: input sizes
#include <unistd.h>    // lseek, pread

#include <algorithm>   // std::min
#include <atomic>      // a copy's connections stop together
#include <cstring>     // std::memcmp
#include <exception>   // std::exception_ptr
#include <functional>  // write sources
#include <mutex>       // the first failure of a copy's connections
#include <thread>      // a copy's connections

#include "commands.hpp"
#include "interrupt.hpp"
#include "output.hpp"
#include "window.hpp"

namespace client_app {

namespace {

constexpr std::uint64_t max_zero_run = 1u << 30;  // the longest WRITE_ZEROES sent
constexpr std::size_t probe_size = 4096;          // read of a file piece's start: all zeroes?

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
/// end of the export. Ends with FLUSH unless `no_flush`. Returns the bytes written.
std::uint64_t pipelined_write(connection& c, std::uint64_t offset, const write_source& in, progress& prog,
                              const options& o) {
  const auto& neg = c.machine().negotiated();
  if (neg.read_only()) fail("the export is read-only");
  check_alignment(neg, offset, 0);
  const std::uint32_t step = chunk_size(neg);
  const std::uint64_t size = neg.export_size;
  if (offset > size) fail("offset " + std::to_string(offset) + " is past the end of the export");
  const bool can_zero = neg.has(nbdwire::transmission_flag::send_write_zeroes);
  request_window window(step, o.requests);
  const callbacks_reset reset{c};
  c.payload_source = [&](const nbdwire::payload_span& p) -> connection::payload_origin {
    const chunk* ch = window.holding(p.offset);
    if (!ch) return {};
    if (ch->file >= 0) return {nullptr, ch->file, ch->file_offset + static_cast<off_t>(p.offset - ch->offset)};
    return {ch->data.get() + (p.offset - ch->offset)};
  };

  std::uint64_t pos = offset;
  bool input_done = false;
  while (!input_done || !window.empty()) {
    while (!input_done && !window.full()) {
      const std::uint64_t tag = window.next_tag();
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
      // All zeroes: WRITE_ZEROES sends no payload and lets the server punch a hole; on a
      // target that reads as zeroes already (--target-is-zero) nothing is sent at all.
      if (piece.zero && ((!can_zero && !o.target_is_zero) || got > max_zero_run))
        fail("internal: zero run the export cannot take");
      const bool zeroes = piece.zero || ((can_zero || o.target_is_zero) && piece.file < 0 &&
                                         all_zero(ch->data.get(), ch->length));
      if (zeroes && o.target_is_zero) {
        pos += got;
        prog.add(got);
        continue;
      }
      c.submit(zeroes ? nbdwire::command::write_zeroes : nbdwire::command::write, pos, ch->length, tag, "WRITE");
      pos += got;
      window.push();
    }
    if (window.empty()) break;
    const auto ev = c.next();
    if (ev.kind != event_kind::reply) fail_event(ev, "while writing");
    chunk& ch = window.tagged(ev.tag);
    if (ev.status != nbdwire::nbd_error::ok)
      fail(request_error("WRITE", ch.offset, ch.length, ev.status, c.take_error_message(ev.tag)));
    prog.add(ch.length);
    ch.done = true;
    while (!window.empty() && window.front().done) window.pop();
  }

  // A refused FLUSH means the data may not be durable, so it always fails the command;
  // --no-flush is for servers that advertise FLUSH and cannot do it (nbdkit --oldstyle).
  // A copy stopped by a signal flushes what it wrote too.
  if (neg.has(nbdwire::transmission_flag::send_flush) && !o.no_flush) {
    c.submit(nbdwire::command::flush, 0, 0, 0, "FLUSH");
    const auto ev = c.next();
    if (ev.kind != event_kind::reply) fail_event(ev, "while flushing");
    if (ev.status != nbdwire::nbd_error::ok) fail("FLUSH failed: " + std::string(nbdwire::to_string(ev.status)));
  }
  return pos - offset;
}

/// A write source over [pos, end) of a regular file: holes (SEEK_DATA / SEEK_HOLE) become
/// zero runs that are never read, and data is left in the file for sendfile() unless its
/// first block is all zeroes (then it is read, to go as WRITE_ZEROES if it all is).
class file_source {
 public:
  file_source(int fd, off_t from, off_t to, const nbdwire::negotiated& neg, const std::string& what,
              const std::atomic<bool>& stop, bool target_is_zero)
      : fd_(fd), pos_(from), end_(to), what_(what), stop_(stop) {
    // Zero runs are sent as WRITE_ZEROES, or skipped on a target known to read as zeroes.
    can_zero_ = neg.has(nbdwire::transmission_flag::send_write_zeroes) || target_is_zero;
    align_ = std::max<std::uint64_t>(neg.block_size.minimum, 1);
    // Zero runs stay within the maximum payload: a server MAY refuse longer payload-less
    // requests with EOVERFLOW (spec "Block size constraints").
    zero_cap_ = std::min<std::uint64_t>(max_zero_run, neg.block_size.maximum) / align_ * align_;
  }

  source_piece operator()(std::byte* p, std::size_t n) {
    if (pos_ >= end_ || stop_ || interrupted()) return {};
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

/// Reads until `len` bytes or the end of a stream; a signal ends the input early (what was
/// read is still written).
std::size_t read_stream(int fd, std::byte* p, std::size_t len, const std::string& what) {
  std::size_t got = 0;
  while (got < len && !interrupted()) {
    const ssize_t n = read(fd, p + got, len - got);
    if (n < 0) {
      if (errno == EINTR) continue;
      examples::fail_errno("read from " + what);
    }
    if (n == 0) break;
    got += static_cast<std::size_t>(n);
  }
  return got;
}

}  // namespace

/// The first 16 are zero, and every byte equals the one 16 before it.
bool all_zero(const std::byte* p, std::size_t n) {
  const std::size_t head = std::min<std::size_t>(n, 16);
  for (std::size_t i = 0; i < head; ++i)
    if (p[i] != std::byte{0}) return false;
  return n <= head || std::memcmp(p, p + head, n - head) == 0;
}

/// A regular file is read from its current offset with pread(); with an export that allows
/// multi-conn it is cut into one part per connection (o.connections, as for copies from an
/// export), each written on its own.
void fd_to_export(const options& o, const std::string& uri_text, std::uint64_t offset, int fd, const std::string& what,
                  bool show_progress) {
  const auto uri = examples::parse_client_uri(uri_text);
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
      return source_piece{read_stream(fd, p, n, what), false};
    };
    pipelined_write(first, offset, stream, prog, o);
    prog.finish();
    first.shut_down();
    check_interrupted();
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
      file_source in(fd, static_cast<off_t>(start + from), static_cast<off_t>(start + to), neg, what, stop,
                     o.target_is_zero);
      pipelined_write(c, offset + from, std::ref(in), prog, o);
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
  if (interrupted()) {
    first.shut_down();
    check_interrupted();
  }
  (void)lseek(fd, static_cast<off_t>(fsize), SEEK_SET);  // as if read: the offset ends past the input
  prog.finish();
  first.shut_down();
}

int cmd_write(const options& o) {
  need_args(o, 2, "write URI [--offset N]");
  if (o.length) usage_error("write takes no --length (it writes until the end of stdin)");
  fd_to_export(o, o.positional[1], o.offset.value_or(0), 0, "stdin", false);
  return 0;
}

}  // namespace client_app
