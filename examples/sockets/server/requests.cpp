// SPDX-License-Identifier: MIT
// nbdwire-server: requests. Each is answered as soon as it is carried out: the machine keeps
// room for the end of every reply it accepted, so a reply is never refused for room. Only
// the chunks of a sparse READ before its last one use room left over; when that runs out,
// one data chunk carries the rest of the range.
#include "requests.hpp"

#include <cerrno>  // EINVAL, EIO
#include <cstdint>
#include <string>

#include "nbdwire/posix.hpp"

namespace nbdwire_server {

namespace {

using nbdwire::nbd_error;
using nbdwire::to_nbd_error;

// The most outbox room a READ chunk that does not end its reply takes, besides its data: an
// extended chunk header (32 bytes) and an OFFSET_HOLE payload (12 bytes).
constexpr std::size_t max_partial_chunk = 32 + 12;

/// A reply call that failed for a reason other than room is a bug here: logged, and the
/// connection closes.
template <class Result>
bool accepted(const connection& c, const Result& res) {
  if (res) return true;
  log(c, "internal: reply refused: " + std::string(nbdwire::to_string(res.error())));
  return false;
}

bool answer(connection& c, const nbdwire::request& r, nbd_error e = nbd_error::ok) {
  return accepted(c, c.m.reply(r, e));
}

/// Makes the data of [off, off + len) ready for the reply about to be queued: read into the
/// staging buffer unless it goes out in place or by sendfile(). 0 or an errno value.
int stage(connection& c, std::uint64_t off, std::uint64_t len) {
  if (len == 0 || c.path_of(len) != data_path::staged) return 0;
  const auto n = static_cast<std::size_t>(len);
  const int err = c.store().read(off, c.staged.append(n), n);
  if (err) c.staged.drop_back(n);
  return err;
}
/// Takes back what stage() read when its reply was not queued after all.
void unstage(connection& c, std::uint64_t len) {
  if (len != 0 && c.path_of(len) == data_path::staged) c.staged.drop_back(static_cast<std::size_t>(len));
}

/// The READ data from `pos` on could not be read: the reply ends with the error, in an error
/// chunk when chunks went before it.
bool read_failed(connection& c, const nbdwire::request& r, std::uint64_t pos, int err) {
  if (pos == r.offset) return answer(c, r, to_nbd_error(err));
  return accepted(c, c.m.reply_error_chunk(r, to_nbd_error(err), {}, pos, true));
}

/// Ends a READ with the data of [pos, end): the whole reply, or one data chunk for the rest.
bool read_rest(connection& c, const nbdwire::request& r, std::uint64_t pos) {
  const std::uint64_t len = r.offset + r.length - pos;
  if (const int err = stage(c, pos, len)) return read_failed(c, r, pos, err);
  if (pos == r.offset) return answer(c, r);
  return accepted(c, c.m.reply_read_data(r, pos, len, true));
}

/// READ: one reply with the data, or with structured replies, data and hole chunks that
/// follow the backend's allocation. Memory exports send their data without any copy.
bool handle_read(connection& c, const nbdwire::request& r) {
  std::vector<alloc_run>& runs = c.runs;
  runs.clear();
  const bool chunked = c.m.negotiated().structured_replies && r.length != 0 &&
                       (r.flags & nbdwire::command_flag::df) == 0;  // DF: one data chunk
  if (chunked) {
    if (const int err = c.store().allocation(r.offset, r.length, SIZE_MAX, runs); err != 0)
      return answer(c, r, to_nbd_error(err));
  }
  std::uint64_t pos = r.offset;
  for (std::size_t i = 0; i < runs.size(); ++i) {
    const alloc_run& x = runs[i];
    const bool last = i + 1 == runs.size();
    // The end of the reply is reserved: a hole chunk fits, and so does a data chunk.
    if (last && x.hole) return accepted(c, c.m.reply_read_hole(r, pos, static_cast<std::uint32_t>(x.length), true));
    if (last || c.m.chunk_room(r) < max_partial_chunk) break;
    nbdwire::result<void> res;
    if (x.hole) {
      res = c.m.reply_read_hole(r, pos, static_cast<std::uint32_t>(x.length), false);
    } else {
      if (const int err = stage(c, pos, x.length)) return read_failed(c, r, pos, err);
      res = c.m.reply_read_data(r, pos, x.length, false);
      if (!res) unstage(c, x.length);
    }
    if (!res && res.error() != nbdwire::errc::outbox_full) return accepted(c, res);
    if (!res) break;  // no room left over: the rest goes in one data chunk
    pos += x.length;
  }
  return read_rest(c, r, pos);
}

/// BLOCK_STATUS: "base:allocation" extents from the backend, one status chunk per
/// negotiated context. More extents than the outbox holds are cut; the client asks again.
bool handle_block_status(connection& c, const nbdwire::request& r) {
  const auto& n = c.m.negotiated();
  if (r.length == 0 || n.meta_context_count == 0) return answer(c, r, nbd_error::einval);
  const std::size_t max_runs = (r.flags & nbdwire::command_flag::req_one) ? 1 : 1024;
  std::vector<alloc_run>& runs = c.runs;
  if (const int err = c.store().allocation(r.offset, r.length, max_runs, runs); err != 0 || runs.empty())
    return answer(c, r, to_nbd_error(err ? err : EIO));
  c.extents.clear();
  using namespace nbdwire::state_flag;
  for (const alloc_run& x : runs) c.extents.push_back({x.length, x.hole ? (hole | zero) : 0u});
  for (std::size_t i = 0; i < n.meta_context_count; ++i) {
    const bool done = i + 1 == n.meta_context_count;
    if (!accepted(c, c.m.reply_block_status(r, n.meta_contexts[i].id, c.extents, done))) return false;
  }
  return true;
}

}  // namespace

bool finish_write(connection& c) {
  int err = c.writing.err;
  if (err == 0 && (c.writing.req.flags & nbdwire::command_flag::fua)) err = c.store().flush();
  c.writing.active = false;
  return answer(c, c.writing.req, to_nbd_error(err));
}

bool on_payload(connection& c, const nbdwire::event& ev) {
  if (!c.writing.active || ev.req.cookie != c.writing.req.cookie) return true;
  if (c.writing.err == 0) c.writing.err = c.store().write(ev.offset, ev.data.data(), ev.data.size());
  return ev.remaining == 0 ? finish_write(c) : true;
}

bool on_request(connection& c, const nbdwire::event& ev) {
  using nbdwire::command;
  namespace cf = nbdwire::command_flag;
  const nbdwire::request& r = ev.req;
  backend& b = c.store();
  const bool fua = (r.flags & cf::fua) != 0;
  int err = 0;
  switch (r.cmd()) {
    case command::read: return handle_read(c, r);
    case command::block_status: return handle_block_status(c, r);
    case command::write:
      b.will_write(r.offset, r.length);
      c.writing = {true, r, 0};
      return ev.remaining == 0 ? finish_write(c) : true;  // the reply waits for the payload
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

}  // namespace nbdwire_server
