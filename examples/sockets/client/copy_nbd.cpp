// SPDX-License-Identifier: MIT
// nbdwire-client copy URI URI: one export onto another. The source's base:allocation map
// says what to read: its holes are never read and go to the target as WRITE_ZEROES (which
// lets the server keep them sparse), or not at all with --target-is-zero; data that reads
// as all zeroes goes the same way. Each pair of connections (source and target) keeps up to
// --requests requests in flight: a READ on the source, then the WRITE of its data on the
// target, one event loop waiting on both sockets. With multi-conn on both sides, --connections
// pairs copy at once, each taking the next slice of the map.
#include <poll.h>  // poll: both sockets of a pair

#include <algorithm>  // std::min, std::max
#include <cstring>    // std::memset
#include <exception>  // std::exception_ptr: the first failure of the pairs
#include <mutex>      // the shared work list
#include <thread>     // more pairs

#include "commands.hpp"
#include "interrupt.hpp"
#include "output.hpp"
#include "window.hpp"

namespace client_app {

namespace {

constexpr std::uint64_t copy_slice = 8u << 20;     // pairs take data in slices of this
constexpr std::uint64_t max_zero_run = 1u << 30;   // the longest WRITE_ZEROES sent

/// A stretch of the source: data to read, or (`zero`) a range that reads as zeroes.
struct stretch {
  std::uint64_t offset = 0, length = 0;
  bool zero = false;
};

/// The stretches, handed out in order to whichever pair asks; the first failure stops them.
struct work_list {
  std::mutex mu;
  std::vector<stretch> items;
  std::size_t next = 0;
  std::exception_ptr error;

  std::optional<stretch> take() {
    const std::lock_guard lock(mu);
    if (error || interrupted() || next == items.size()) return std::nullopt;
    return items[next++];
  }
  bool stopped() {
    const std::lock_guard lock(mu);
    return error || interrupted();
  }
  void failed(std::exception_ptr e) {
    const std::lock_guard lock(mu);
    if (!error) error = e;
  }
};

/// One source connection and one target connection copying stretches from a work list.
class pair_copy {
 public:
  pair_copy(connection& src, connection& dst, const options& o, work_list& work, progress& prog)
      : src_(src), dst_(dst), o_(o), work_(work), prog_(prog) {
    const auto& sn = src.machine().negotiated();
    const auto& dn = dst.machine().negotiated();
    step_ = std::min(chunk_size(sn), chunk_size(dn));
    limit_ = o.requests ? std::min<std::size_t>(o.requests, max_window) : max_window;
    can_zero_ = dn.has(nbdwire::transmission_flag::send_write_zeroes);
    const std::uint64_t align = std::max<std::uint64_t>({sn.block_size.minimum, dn.block_size.minimum, 1});
    zero_cap_ = std::min<std::uint64_t>(max_zero_run, dn.block_size.maximum) / align * align;
    if (zero_cap_ == 0) can_zero_ = false;
  }

  /// Copies until the work list is empty (or stopped), then flushes the target.
  void run() {
    const callbacks_reset src_reset{src_}, dst_reset{dst_};
    src_.payload_sink = [&](const nbdwire::payload_span& p) -> std::byte* {
      slot& s = slots_[p.tag];
      return s.data.get() + (p.offset - s.offset);
    };
    dst_.payload_source = [&](const nbdwire::payload_span& p) -> connection::payload_origin {
      slot& s = slots_[p.tag];
      return {s.data.get() + (p.offset - s.offset)};
    };
    for (;;) {
      issue();
      if (in_flight_ == 0 && (done_ || work_.stopped())) break;
      const bool moved_src = pump_source();
      const bool moved_dst = pump_target();
      if (!moved_src && !moved_dst) wait();
    }
    flush_target();
  }

 private:
  enum class state : std::uint8_t { free, reading, writing };
  struct slot {
    state st = state::free;
    std::uint64_t offset = 0;
    std::uint32_t length = 0;
    std::unique_ptr<std::byte[]> data;
  };

  /// A free slot's tag, with a buffer of step_ bytes.
  std::size_t free_slot() {
    for (std::size_t t = 0; t < limit_; ++t)
      if (slots_[t].st == state::free) {
        if (!slots_[t].data) slots_[t].data = std::make_unique_for_overwrite<std::byte[]>(step_);
        return t;
      }
    fail("internal: no free request slot");
  }

  /// Sends requests while slots are free and the work list has stretches.
  void issue() {
    while (!done_ && in_flight_ < limit_ && !work_.stopped()) {
      if (!cur_ || cur_done_ == cur_->length) {
        cur_ = work_.take();
        cur_done_ = 0;
        if (!cur_) {
          done_ = true;
          return;
        }
        if (!cur_->zero) {
          check_alignment(src_.machine().negotiated(), cur_->offset, cur_->length);
          check_alignment(dst_.machine().negotiated(), cur_->offset, cur_->length);
        }
        continue;
      }
      const std::uint64_t pos = cur_->offset + cur_done_, left = cur_->length - cur_done_;
      if (cur_->zero && o_.target_is_zero) {  // already zero: nothing to send
        prog_.add(left);
        cur_done_ = cur_->length;
        continue;
      }
      const std::size_t tag = free_slot();
      slot& s = slots_[tag];
      s.offset = pos;
      if (cur_->zero && can_zero_) {
        s.length = static_cast<std::uint32_t>(std::min(left, zero_cap_));
        s.st = state::writing;
        dst_.submit(nbdwire::command::write_zeroes, pos, s.length, tag, "WRITE_ZEROES");
      } else if (cur_->zero) {  // a target without WRITE_ZEROES gets the zeroes as data
        s.length = static_cast<std::uint32_t>(std::min<std::uint64_t>(left, step_));
        std::memset(s.data.get(), 0, s.length);
        s.st = state::writing;
        dst_.submit(nbdwire::command::write, pos, s.length, tag, "WRITE");
      } else {
        s.length = static_cast<std::uint32_t>(std::min<std::uint64_t>(left, step_));
        s.st = state::reading;
        src_.submit(nbdwire::command::read, pos, s.length, tag, "READ");
      }
      cur_done_ += s.length;
      ++in_flight_;
    }
  }

  /// The data of slot `tag` is read: written to the target, as WRITE_ZEROES when it is all
  /// zeroes, or not at all when the target is known to read as zeroes.
  void write_slot(std::size_t tag) {
    slot& s = slots_[tag];
    const bool zeroes = all_zero(s.data.get(), s.length);
    if (zeroes && o_.target_is_zero) {
      finish(tag);
      return;
    }
    s.st = state::writing;
    dst_.submit(zeroes && can_zero_ ? nbdwire::command::write_zeroes : nbdwire::command::write, s.offset, s.length,
                tag, "WRITE");
  }

  void finish(std::size_t tag) {
    prog_.add(slots_[tag].length);
    slots_[tag].st = state::free;
    --in_flight_;
  }

  slot& tagged(std::uint64_t tag) {
    if (tag >= limit_ || slots_[tag].st == state::free) fail("internal: an event for a request of no copy");
    return slots_[tag];
  }

  /// Handles what the source has sent; false when there was nothing.
  bool pump_source() {
    bool moved = false;
    for (;;) {
      const auto ev = src_.next(0);
      if (ev.kind == event_kind::need_more) return moved;
      moved = true;
      slot& s = tagged(ev.tag);
      switch (ev.kind) {
        case event_kind::payload:
          std::memcpy(s.data.get() + (ev.offset - s.offset), ev.data.data(), ev.data.size());
          break;
        case event_kind::read_hole:
          std::memset(s.data.get() + (ev.offset - s.offset), 0, static_cast<std::size_t>(ev.length));
          break;
        case event_kind::reply:
          if (ev.status != nbdwire::nbd_error::ok)
            fail(request_error("READ", s.offset, s.length, ev.status, src_.take_error_message(ev.tag)));
          write_slot(ev.tag);
          break;
        default: fail_event(ev, "while reading the source");
      }
    }
  }

  /// Handles what the target has sent; false when there was nothing.
  bool pump_target() {
    bool moved = false;
    for (;;) {
      const auto ev = dst_.next(0);
      if (ev.kind == event_kind::need_more) return moved;
      moved = true;
      if (ev.kind != event_kind::reply) fail_event(ev, "while writing the target");
      slot& s = tagged(ev.tag);
      if (ev.status != nbdwire::nbd_error::ok)
        fail(request_error("WRITE", s.offset, s.length, ev.status, dst_.take_error_message(ev.tag)));
      finish(ev.tag);
    }
  }

  /// Waits until either socket can go on; a signal ends the wait too.
  void wait() {
    if (src_.input_buffered() || dst_.input_buffered()) return;  // decrypted TLS bytes wait
    pollfd p[2] = {{src_.fd(), POLLIN, 0}, {dst_.fd(), POLLIN, 0}};
    if (src_.output_pending()) p[0].events |= POLLOUT;
    if (dst_.output_pending()) p[1].events |= POLLOUT;
    if (poll(p, 2, -1) < 0 && errno != EINTR) examples::fail_errno("poll");
  }

  /// FLUSH on the target (also after a signal: what was written is made durable).
  void flush_target() {
    const auto& dn = dst_.machine().negotiated();
    if (!dn.has(nbdwire::transmission_flag::send_flush) || o_.no_flush) return;
    dst_.submit(nbdwire::command::flush, 0, 0, 0, "FLUSH");
    const auto ev = dst_.next();
    if (ev.kind != event_kind::reply) fail_event(ev, "while flushing the target");
    if (ev.status != nbdwire::nbd_error::ok) fail("FLUSH failed: " + std::string(nbdwire::to_string(ev.status)));
  }

  connection& src_;
  connection& dst_;
  const options& o_;
  work_list& work_;
  progress& prog_;
  std::array<slot, max_window> slots_;
  std::size_t limit_ = max_window, in_flight_ = 0;
  std::uint32_t step_ = 0;
  bool can_zero_ = false, done_ = false;
  std::uint64_t zero_cap_ = 0;
  std::optional<stretch> cur_;
  std::uint64_t cur_done_ = 0;
};

}  // namespace

void export_to_export(const options& o, const std::string& src_text, const std::string& dst_text) {
  const auto src_uri = examples::parse_client_uri(src_text), dst_uri = examples::parse_client_uri(dst_text);
  const auto src = open_connection(src_uri, o, allocation_context);
  negotiate(*src, src_uri.export_name);
  const auto dst = open_connection(dst_uri, o);
  negotiate(*dst, dst_uri.export_name);
  const auto& sn = src->machine().negotiated();
  const auto& dn = dst->machine().negotiated();
  if (dn.read_only()) fail("the target export is read-only");
  const std::uint64_t size = sn.export_size;
  if (dn.export_size < size)
    fail("the target export (" + std::to_string(dn.export_size) + " bytes) is smaller than the source (" +
         std::to_string(size) + " bytes)");

  work_list work;
  for (const map_extent& e : allocation_map(*src)) {
    const bool zero = (e.flags & nbdwire::state_flag::zero) != 0;
    if (zero) {
      work.items.push_back({e.offset, e.length, true});
      continue;
    }
    for (std::uint64_t at = e.offset; at < e.offset + e.length; at += copy_slice)
      work.items.push_back({at, std::min(copy_slice, e.offset + e.length - at), false});
  }

  // More pairs only when both exports allow multi-conn.
  const unsigned pairs = std::min(connections_for(o, sn), connections_for(o, dn));
  progress prog(size, o.progress);
  const auto run = [&](connection& s, connection& d) {
    try {
      pair_copy(s, d, o, work, prog).run();
    } catch (...) {
      work.failed(std::current_exception());
    }
  };
  {
    std::vector<std::jthread> others;
    for (unsigned i = 1; i < pairs; ++i)
      others.emplace_back([&] {
        const auto s = open_another_connection(src_uri, o, size);
        const auto d = s ? open_another_connection(dst_uri, o, dn.export_size) : nullptr;
        if (s && d) run(*s, *d);
      });
    run(*src, *dst);
  }
  if (work.error) std::rethrow_exception(work.error);
  prog.finish();
  src->shut_down();
  dst->shut_down();
  check_interrupted();
}

}  // namespace client_app
