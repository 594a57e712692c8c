// SPDX-License-Identifier: MIT
// Test support: every golden vector rebuilt from the constexpr record constructors of
// nbdwire/wire.hpp. wire_static.cpp compares these with the literals at compile time,
// wire.cpp with the vector files at run time.
#pragma once

#include "nbdwire/wire.hpp"
#include "support/hex.hpp"

namespace nbdwire_test::encoded {
using namespace nbdwire;
using namespace nbdwire_test::literals;

inline constexpr std::uint64_t cookie = 0x0102030405060708ull;
inline constexpr std::uint64_t gib = 0x40000000ull;
inline constexpr std::uint64_t mib = 0x100000ull;

constexpr auto G01() { return encode(make_oldstyle_greeting(gib, transmission_flag::has_flags | transmission_flag::send_flush)); }
constexpr auto G02() { return encode(make_newstyle_greeting(handshake_flag::fixed_newstyle | handshake_flag::no_zeroes)); }
constexpr auto G03() { return encode(make_client_flags(client_flag::fixed_newstyle | client_flag::no_zeroes)); }
constexpr auto G04() {
  return cat(encode(make_option_header(option::go, 12)), be_array<std::uint32_t>(4), "disk"_raw,
             be_array<std::uint16_t>(1), be_array(static_cast<std::uint16_t>(info_type::block_size)));
}
constexpr auto G05() {
  return cat(encode(make_option_reply_header(7, reply_type::info, 12)), encode(make_info_export(gib, 0x0005)));
}
constexpr auto G06() {
  return cat(encode(make_option_reply_header(7, reply_type::info, 14)),
             encode(make_info_block_size(1, 4096, 32u * 1024u * 1024u)));
}
constexpr auto G07() { return encode(make_option_reply_header(7, reply_type::ack, 0)); }
constexpr auto G08() { return encode(make_export_name_reply(gib, 0x0005)); }
constexpr auto G09() { return encode(make_request(command::read, 0, cookie, mib, 4096)); }
constexpr auto G10() { return encode(make_simple_reply(nbd_error::ok, cookie)); }
constexpr auto G11() {
  return cat(encode(make_structured_reply(reply_flag::done, chunk_type::offset_data, cookie, 8 + 4096)),
             be_array<std::uint64_t>(mib));
}
constexpr auto G12() {
  offset_hole_payload p{};
  p.offset.set(mib);
  p.hole_size.set(4096);
  return cat(encode(make_structured_reply(reply_flag::done, chunk_type::offset_hole, cookie, 12)), encode(p));
}
constexpr auto G13() {
  meta_context_prefix id{};
  id.context_id.set(1);
  block_descriptor d{};
  d.length.set(0x40000000u);
  d.status.set(state_flag::hole | state_flag::zero);
  return cat(encode(make_structured_reply(reply_flag::done, chunk_type::block_status, cookie, 12)), encode(id),
             encode(d));
}
constexpr auto G14() {
  error_chunk_prefix e{};
  e.error.set(static_cast<std::uint32_t>(nbd_error::einval));
  e.message_length.set(0);
  return cat(encode(make_structured_reply(reply_flag::done, chunk_type::error, cookie, 6)), encode(e));
}
constexpr auto G15() { return encode(make_extended_request(command::read, 0, cookie, mib, 4096)); }
constexpr auto G16() {
  return encode(make_extended_request(command::write, command_flag::payload_len, cookie, mib, 4096));
}
constexpr auto G17() {
  return cat(encode(make_extended_reply(reply_flag::done, chunk_type::offset_data, cookie, mib, 8 + 4096)),
             be_array<std::uint64_t>(mib));
}
constexpr auto G18() {
  block_descriptor_ext d{};
  d.length.set(gib);
  d.status.set(3);
  return cat(encode(make_extended_reply(reply_flag::done, chunk_type::block_status_ext, cookie, 0, 8 + 16)),
             be_array<std::uint32_t>(1), be_array<std::uint32_t>(1), encode(d));
}
constexpr auto G19() { return encode(make_legacy_1997_request(command::read, cookie, 0x100000u, 4096)); }
constexpr auto G20() { return encode(make_legacy_1997_reply(cookie, 0)); }
constexpr auto G21() {
  return cat(encode(make_option_header(option::set_meta_context, 31)), be_array<std::uint32_t>(4), "disk"_raw,
             be_array<std::uint32_t>(1), be_array<std::uint32_t>(15), "base:allocation"_raw);
}
constexpr auto G22() {
  meta_context_prefix id{};
  id.context_id.set(1);
  return cat(encode(make_option_reply_header(10, reply_type::meta_context, 19)), encode(id),
             "base:allocation"_raw);
}
constexpr auto G23() { return encode(make_request(command::disc, 0, cookie, 0, 0)); }
constexpr auto G24() { return encode(make_option_reply_header(4, reply_type::err_unsup, 0)); }

}  // namespace nbdwire_test::encoded
