// SPDX-License-Identifier: MIT
// Test support: byte builders for handshake and transmission messages, and factories that
// bring a machine to a known state, for the client and server tests.
#pragma once

#include <array>
#include <initializer_list>
#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "nbdwire/client.hpp"
#include "nbdwire/server.hpp"
#include "nbdwire/wire.hpp"
#include "support/hex.hpp"
#include "support/split.hpp"

namespace nbdwire_test {

template <class Record>
bytes rec(const Record& r) {
  const auto a = nbdwire::encode(r);
  return {a.begin(), a.end()};
}

inline bytes operator+(bytes a, const bytes& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// ---- server -> client ---------------------------------------------------------------------

inline bytes greeting(std::uint16_t hflags) { return rec(nbdwire::make_newstyle_greeting(hflags)); }

inline bytes option_reply(std::uint32_t opt, nbdwire::reply_type t, const bytes& data = {}) {
  return rec(nbdwire::make_option_reply_header(opt, t, static_cast<std::uint32_t>(data.size()))) + data;
}
inline bytes option_reply(nbdwire::option o, nbdwire::reply_type t, const bytes& data = {}) {
  return option_reply(static_cast<std::uint32_t>(o), t, data);
}

inline bytes info_export(nbdwire::option o, std::uint64_t size, std::uint16_t tflags) {
  return option_reply(o, nbdwire::reply_type::info, rec(nbdwire::make_info_export(size, tflags)));
}
inline bytes info_block_size(nbdwire::option o, std::uint32_t mn, std::uint32_t pref, std::uint32_t mx) {
  return option_reply(o, nbdwire::reply_type::info, rec(nbdwire::make_info_block_size(mn, pref, mx)));
}
inline bytes info_string(nbdwire::option o, nbdwire::info_type t, std::string_view s) {
  return option_reply(o, nbdwire::reply_type::info, be<std::uint16_t>(static_cast<std::uint16_t>(t)) + str_bytes(s));
}
inline bytes ack(nbdwire::option o) { return option_reply(o, nbdwire::reply_type::ack); }
inline bytes server_record(std::string_view name, std::string_view description) {
  return option_reply(nbdwire::option::list, nbdwire::reply_type::server,
                      be<std::uint32_t>(static_cast<std::uint32_t>(name.size())) + str_bytes(name) +
                          str_bytes(description));
}

// ---- client -> server ---------------------------------------------------------------------

inline bytes client_flags(std::uint32_t f) { return rec(nbdwire::make_client_flags(f)); }

inline bytes option_request(std::uint32_t opt, const bytes& data = {}) {
  return rec(nbdwire::make_option_header(static_cast<nbdwire::option>(opt), static_cast<std::uint32_t>(data.size()))) +
         data;
}
inline bytes option_request(nbdwire::option o, const bytes& data = {}) {
  return option_request(static_cast<std::uint32_t>(o), data);
}

/// INFO/GO body: name length, name, count, info types.
inline bytes info_body(std::string_view name, std::initializer_list<std::uint16_t> types) {
  bytes b = be<std::uint32_t>(static_cast<std::uint32_t>(name.size())) + str_bytes(name) +
            be<std::uint16_t>(static_cast<std::uint16_t>(types.size()));
  for (auto t : types) b = b + be<std::uint16_t>(t);
  return b;
}

inline bytes request_bytes(nbdwire::command c, std::uint16_t flags, std::uint64_t cookie, std::uint64_t offset,
                     std::uint32_t length) {
  return rec(nbdwire::make_request(c, flags, cookie, offset, length));
}
inline bytes request_raw(std::uint16_t type, std::uint16_t flags, std::uint64_t cookie, std::uint64_t offset,
                         std::uint32_t length) {
  return rec(nbdwire::make_request(static_cast<nbdwire::command>(type), flags, cookie, offset, length));
}
inline bytes simple_reply(nbdwire::nbd_error e, std::uint64_t cookie) {
  return rec(nbdwire::make_simple_reply(e, cookie));
}

// ---- factories ----------------------------------------------------------------------------

/// Output of a machine drained into bytes (payload marks filled with the pattern).
template <class Machine>
bytes take_output(Machine& m) {
  bytes out;
  drain(m, out, default_source);
  return out;
}

/// Feeds all of `in` and returns the events (need_more dropped); stops at a terminal event.
template <class Machine>
std::vector<recorded> feed(Machine& m, const bytes& in) {
  std::vector<recorded> log;
  nbdwire::bytes_view rest(in);
  for (int guard = 0; guard < 1000000; ++guard) {
    const auto r = m.receive(rest);
    rest = rest.subspan(r.consumed);
    if (r.ev.kind == nbdwire::event_kind::need_more) break;
    append(log, r.ev);
    if (r.ev.kind == nbdwire::event_kind::failed || r.ev.kind == nbdwire::event_kind::blocked ||
        r.ev.kind == nbdwire::event_kind::closed || r.ev.kind == nbdwire::event_kind::disconnected)
      break;
  }
  return log;
}

/// A client that negotiates simple replies only: no EXTENDED_HEADERS or STRUCTURED_REPLY
/// before GO, so its handshake bytes are exactly those of the simple-reply vectors.
inline nbdwire::client_config simple_client() {
  nbdwire::client_config cfg;
  cfg.request_extended_headers = false;
  cfg.request_structured_replies = false;
  return cfg;
}

/// A fixed-newstyle client that completed GO for an export of `size` bytes and `tflags`,
/// optionally with block size constraints; its output is drained.
inline std::unique_ptr<nbdwire::client> client_in_transmission(std::uint64_t size, std::uint16_t tflags,
                                                               const nbdwire::block_size_constraints* bs = nullptr,
                                                               nbdwire::client_config cfg = simple_client()) {
  auto c = std::make_unique<nbdwire::client>(cfg);
  auto ev = feed(*c, greeting(nbdwire::handshake_flag::fixed_newstyle | nbdwire::handshake_flag::no_zeroes));
  REQUIRE(ev.size() == 1);
  REQUIRE(ev[0].kind == nbdwire::event_kind::greeting);
  REQUIRE(c->go("disk").has_value());
  bytes replies = info_export(nbdwire::option::go, size, tflags);
  if (bs) replies = replies + info_block_size(nbdwire::option::go, bs->minimum, bs->preferred, bs->maximum);
  ev = feed(*c, replies + ack(nbdwire::option::go));
  REQUIRE(!ev.empty());
  REQUIRE(ev.back().kind == nbdwire::event_kind::ready);
  REQUIRE(c->state() == nbdwire::client_state::transmission);
  (void)take_output(*c);
  return c;
}

/// A server (fixed newstyle unless told otherwise) over `exports`, greeting drained.
inline std::unique_ptr<nbdwire::server> make_server(std::span<const nbdwire::export_config> exports,
                                                     nbdwire::server_config cfg = {}) {
  cfg.exports = exports;
  auto s = std::make_unique<nbdwire::server>(cfg);
  (void)take_output(*s);
  return s;
}

/// A fixed-newstyle server that completed GO on export 0 (client flags FIXED|NO_ZEROES).
inline std::unique_ptr<nbdwire::server> server_in_transmission(std::span<const nbdwire::export_config> exports,
                                                                nbdwire::server_config cfg = {}) {
  auto s = make_server(exports, cfg);
  const auto ev = feed(*s, client_flags(3) + option_request(nbdwire::option::go, info_body("", {3})));
  REQUIRE(!ev.empty());
  REQUIRE(ev.back().kind == nbdwire::event_kind::ready);
  REQUIRE(s->state() == nbdwire::server_state::transmission);
  (void)take_output(*s);
  return s;
}


// ---- structured replies, metadata contexts, extended headers --------------------------------

/// A structured reply chunk: header (length = payload size unless `length` says otherwise)
/// and payload.
inline bytes chunk(std::uint16_t flags, std::uint16_t type, std::uint64_t cookie, const bytes& payload = {}) {
  return rec(nbdwire::make_structured_reply(flags, static_cast<nbdwire::chunk_type>(type), cookie,
                                            static_cast<std::uint32_t>(payload.size()))) +
         payload;
}
inline bytes chunk(std::uint16_t flags, nbdwire::chunk_type t, std::uint64_t cookie, const bytes& payload = {}) {
  return chunk(flags, static_cast<std::uint16_t>(t), cookie, payload);
}
/// A structured chunk header alone, with any length.
inline bytes chunk_header(std::uint16_t flags, std::uint16_t type, std::uint64_t cookie, std::uint32_t length) {
  return rec(nbdwire::make_structured_reply(flags, static_cast<nbdwire::chunk_type>(type), cookie, length));
}
/// [ext] An extended reply chunk: header carrying `offset`, and payload.
inline bytes ext_chunk(std::uint16_t flags, std::uint16_t type, std::uint64_t cookie, std::uint64_t offset,
                       const bytes& payload = {}) {
  return rec(nbdwire::make_extended_reply(flags, static_cast<nbdwire::chunk_type>(type), cookie, offset,
                                          payload.size())) +
         payload;
}
inline bytes ext_chunk(std::uint16_t flags, nbdwire::chunk_type t, std::uint64_t cookie, std::uint64_t offset,
                       const bytes& payload = {}) {
  return ext_chunk(flags, static_cast<std::uint16_t>(t), cookie, offset, payload);
}
inline bytes ext_chunk_header(std::uint16_t flags, std::uint16_t type, std::uint64_t cookie, std::uint64_t offset,
                              std::uint64_t length) {
  return rec(nbdwire::make_extended_reply(flags, static_cast<nbdwire::chunk_type>(type), cookie, offset, length));
}

/// Chunk payloads.
inline bytes data_payload(std::uint64_t offset, const bytes& data) { return be<std::uint64_t>(offset) + data; }
inline bytes hole_payload(std::uint64_t offset, std::uint32_t size) {
  return be<std::uint64_t>(offset) + be<std::uint32_t>(size);
}
struct extent_desc {
  std::uint64_t length = 0;
  std::uint64_t flags = 0;
};
inline bytes status_payload(std::uint32_t id, std::initializer_list<extent_desc> extents) {
  bytes b = be<std::uint32_t>(id);
  for (const auto& e : extents)
    b = b + be<std::uint32_t>(static_cast<std::uint32_t>(e.length)) + be<std::uint32_t>(static_cast<std::uint32_t>(e.flags));
  return b;
}
/// [ext] BLOCK_STATUS_EXT payload; `count` is written as given (the real count by default).
inline bytes status_ext_payload(std::uint32_t id, std::initializer_list<extent_desc> extents,
                                std::optional<std::uint32_t> count = std::nullopt) {
  bytes b = be<std::uint32_t>(id) + be<std::uint32_t>(count ? *count : static_cast<std::uint32_t>(extents.size()));
  for (const auto& e : extents) b = b + be<std::uint64_t>(e.length) + be<std::uint64_t>(e.flags);
  return b;
}
inline bytes error_payload(std::uint32_t err, std::string_view message) {
  return be<std::uint32_t>(err) + be<std::uint16_t>(static_cast<std::uint16_t>(message.size())) + str_bytes(message);
}
inline bytes error_offset_payload(std::uint32_t err, std::string_view message, std::uint64_t offset) {
  return error_payload(err, message) + be<std::uint64_t>(offset);
}

/// [ext] An extended request.
inline bytes ext_request_bytes(std::uint16_t type, std::uint16_t flags, std::uint64_t cookie, std::uint64_t offset,
                               std::uint64_t length) {
  return rec(nbdwire::make_extended_request(static_cast<nbdwire::command>(type), flags, cookie, offset, length));
}
inline bytes ext_request_bytes(nbdwire::command c, std::uint16_t flags, std::uint64_t cookie, std::uint64_t offset,
                               std::uint64_t length) {
  return ext_request_bytes(static_cast<std::uint16_t>(c), flags, cookie, offset, length);
}

/// LIST_/SET_META_CONTEXT body: export name, query count, queries.
inline bytes meta_body(std::string_view name, std::initializer_list<std::string_view> queries) {
  bytes b = be<std::uint32_t>(static_cast<std::uint32_t>(name.size())) + str_bytes(name) +
            be<std::uint32_t>(static_cast<std::uint32_t>(queries.size()));
  for (auto q : queries) b = b + be<std::uint32_t>(static_cast<std::uint32_t>(q.size())) + str_bytes(q);
  return b;
}
/// NBD_REP_META_CONTEXT for option `o`.
inline bytes meta_reply(nbdwire::option o, std::uint32_t id, std::string_view name) {
  return option_reply(o, nbdwire::reply_type::meta_context, be<std::uint32_t>(id) + str_bytes(name));
}

/// Context names used by client factories (static: a client keeps a view of them).
inline constexpr std::array<std::string_view, 3> context_names{"base:allocation", "qemu:dirty-bitmap:b0",
                                                                "qemu:allocation-depth"};

/// How a client factory negotiates: which reply framing, and which context ids the server
/// "chooses" for context_names[0..n).
enum class framing : std::uint8_t { simple, structured, extended };
struct modern_setup {
  framing mode = framing::structured;
  std::vector<std::uint32_t> context_ids{};
  std::uint64_t size = 1ull << 30;
  std::uint16_t tflags = nbdwire::transmission_flag::has_flags | nbdwire::transmission_flag::send_flush;
};

/// A client that negotiated `setup` through the go() plan against scripted server replies;
/// its output is drained.
inline std::unique_ptr<nbdwire::client> modern_client(const modern_setup& setup) {
  using nbdwire::option;
  nbdwire::client_config cfg;
  cfg.request_extended_headers = setup.mode == framing::extended;
  cfg.request_structured_replies = setup.mode == framing::structured;
  cfg.meta_contexts = std::span<const std::string_view>(context_names.data(), setup.context_ids.size());
  auto c = std::make_unique<nbdwire::client>(cfg);
  auto ev = feed(*c, greeting(nbdwire::handshake_flag::fixed_newstyle | nbdwire::handshake_flag::no_zeroes));
  REQUIRE(ev.size() == 1);
  REQUIRE(c->go("disk").has_value());
  bytes replies;
  if (setup.mode == framing::extended) replies = ack(option::extended_headers);
  if (setup.mode == framing::structured) replies = ack(option::structured_reply);
  if (setup.mode != framing::simple && !setup.context_ids.empty()) {
    for (std::size_t i = 0; i < setup.context_ids.size(); ++i)
      replies = replies + meta_reply(option::set_meta_context, setup.context_ids[i], context_names[i]);
    replies = replies + ack(option::set_meta_context);
  }
  replies = replies + info_export(option::go, setup.size, setup.tflags) + ack(option::go);
  ev = feed(*c, replies);
  REQUIRE(!ev.empty());
  REQUIRE(ev.back().kind == nbdwire::event_kind::ready);
  REQUIRE(c->negotiated().structured_replies == (setup.mode != framing::simple));
  REQUIRE(c->negotiated().extended_headers == (setup.mode == framing::extended));
  REQUIRE(c->negotiated().meta_context_count == (setup.mode == framing::simple ? 0 : setup.context_ids.size()));
  (void)take_output(*c);
  return c;
}

/// A server that completed GO for `export_name` after the given preliminary options
/// (e.g. EXTENDED_HEADERS, SET_META_CONTEXT); output drained.
inline std::unique_ptr<nbdwire::server> modern_server(std::span<const nbdwire::export_config> exports,
                                                      nbdwire::server_config cfg, const bytes& preliminaries,
                                                      std::string_view export_name = "") {
  auto s = make_server(exports, cfg);
  const auto ev =
      feed(*s, client_flags(3) + preliminaries + option_request(nbdwire::option::go, info_body(export_name, {3})));
  REQUIRE(!ev.empty());
  REQUIRE(ev.back().kind == nbdwire::event_kind::ready);
  (void)take_output(*s);
  return s;
}

}  // namespace nbdwire_test
