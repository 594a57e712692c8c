// SPDX-License-Identifier: MIT
// nbdwire-client read URI [--offset N] [--length N]: export data to stdout. Also the export
// side of `copy URI FILE`: pipelined READs, in order to a stream or spliced into a file.
#include <unistd.h>  // ftruncate

#include <algorithm>           // std::min
#include <condition_variable>  // the background writer
#include <cstring>             // std::memcpy, std::memset
#include <exception>           // std::exception_ptr: the first failure of a copy's connections
#include <functional>          // range source, output
#include <mutex>               // the background writer
#include <thread>              // the background writer, the copy's connections

#include "commands.hpp"
#include "interrupt.hpp"
#include "nbdwire/transfer.hpp"
#include "output.hpp"
#include "window.hpp"

namespace client_app {

namespace {

constexpr std::uint32_t max_chunk = 2u * 1024 * 1024;  // bytes per READ/WRITE request
constexpr std::uint64_t max_zero_run = 1u << 30;       // the longest zero range handed out at once
constexpr std::uint64_t copy_slice = 8u << 20;         // connections take a copy's data in slices of this

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
  explicit background_writer(const read_output& out) : out_(out), thread_([this] { run(); }) {}
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
                    std::size_t requests, int direct_file = -1, std::uint64_t direct_origin = 0) {
  const auto& neg = c.machine().negotiated();
  const std::uint32_t step = chunk_size(neg);
  const bool direct = direct_file >= 0;
  request_window window(step, requests);
  std::optional<background_writer> writer;
  if (!direct) writer.emplace(out);

  const callbacks_reset reset{c};
  if (direct) {
    c.payload_file = [&](const nbdwire::payload_span& p) -> connection::file_target {
      return {direct_file, static_cast<off_t>(p.offset - direct_origin)};
    };
  } else {
    c.payload_sink = [&](const nbdwire::payload_span& p) -> std::byte* {
      chunk* ch = window.holding(p.offset);
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
      if (!range->zero) c.submit(nbdwire::command::read, pos, n, window.next_tag(), "READ");
      chunk& ch = window.next(!range->zero && !direct);
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
      case event_kind::payload: {  // what came in with a header, through the input buffer
        chunk& ch = window.tagged(ev.tag);
        if (direct)
          examples::pwrite_all(direct_file, ev.data.data(), ev.data.size(),
                               static_cast<off_t>(ev.offset - direct_origin), "the output file");
        else
          std::memcpy(ch.data.get() + (ev.offset - ch.offset), ev.data.data(), ev.data.size());
        break;
      }
      case event_kind::read_hole: {  // structured replies: a range that reads as zeroes
        chunk& ch = window.tagged(ev.tag);
        if (!direct) std::memset(ch.data.get() + (ev.offset - ch.offset), 0, static_cast<std::size_t>(ev.length));
        break;
      }
      case event_kind::reply: {
        chunk& ch = window.tagged(ev.tag);
        if (ev.status != nbdwire::nbd_error::ok)
          fail(request_error("READ", ch.offset, ch.length, ev.status, c.take_error_message(ev.tag)));
        ch.done = true;
        break;
      }
      default: fail_event(ev, "while reading");
    }
  }
}

}  // namespace

std::uint32_t chunk_size(const nbdwire::negotiated& n) {
  // 2 MiB or what the connection allows, whichever is less (max_request_length is a multiple
  // of the minimum block size, and so is 2 MiB).
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

/// `skip_holes` (copy): READ only what base:allocation says may hold data; ranges that read
/// as zeroes are written as zeroes, or left as holes when `own_file`: fd is a regular file
/// this copy created (or truncated). Such a file is written at each piece's own offset, so
/// with an export that allows multi-conn, o.connections connections read at once, each
/// taking the next slice of the ranges when it can take more.
void export_to_fd(const options& o, const std::string& uri_text, std::uint64_t offset,
                  std::optional<std::uint64_t> length, int fd, const std::string& what, bool show_progress,
                  bool skip_holes, bool own_file) {
  const auto uri = examples::parse_client_uri(uri_text);
  const auto first_connection =
      open_connection(uri, o, skip_holes ? std::span<const std::string_view>(allocation_context) : std::span<const std::string_view>());
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
    // A signal stops the handing out; the requests in flight are still answered.
    if (error || interrupted() || next_range == ranges.size()) return std::nullopt;
    return ranges[next_range++];
  };
  const auto run = [&](connection& c) {
    try {
      pipelined_read(c, next, out, prog, o.requests, own_file ? fd : -1, offset);
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
  if (interrupted()) {
    first.shut_down();
    check_interrupted();
  }
  // A hole at the end is not written: the size makes it part of the file.
  if (own_file && ftruncate(fd, static_cast<off_t>(len)) != 0) examples::fail_errno("set the size of " + what);
  prog.finish();
  first.shut_down();
}

int cmd_read(const options& o) {
  need_args(o, 2, "read URI [--offset N] [--length N]");
  export_to_fd(o, o.positional[1], o.offset.value_or(0), o.length, 1, "stdout", false);
  return 0;
}

}  // namespace client_app
