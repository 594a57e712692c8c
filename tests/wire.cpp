// SPDX-License-Identifier: MIT
// Layer 1 records against the golden vector files (tests/vectors/Gnn.hex): encode with the
// constexpr constructors, compare byte for byte, then decode the file and check every field.
#include <doctest/doctest.h>

#include <string>

#include "nbdwire/wire.hpp"
#include "support/golden.hpp"
#include "support/golden_encode.hpp"
#include "support/hex.hpp"

using namespace nbdwire;
using nbdwire_test::bytes;
using nbdwire_test::golden;
using nbdwire_test::to_hex;
namespace enc = nbdwire_test::encoded;
namespace vec = nbdwire_test::vectors;

namespace {
constexpr std::uint64_t cookie = 0x0102030405060708ull;
constexpr std::uint64_t gib = 0x40000000ull;
constexpr std::uint64_t mib = 0x100000ull;

template <class Record>
Record decode_at(const bytes& b, std::size_t at) {
  REQUIRE(b.size() >= at + sizeof(Record));
  return decode<Record>(bytes_view(b).subspan(at));
}

bool all_zero(bytes_view b) {
  for (auto x : b)
    if (x != std::byte{0}) return false;
  return true;
}
}  // namespace

TEST_CASE("wire: vector files match the compile-time literals") {
  const std::array<std::string, 24> got{
      to_hex(golden("G01")), to_hex(golden("G02")), to_hex(golden("G03")), to_hex(golden("G04")),
      to_hex(golden("G05")), to_hex(golden("G06")), to_hex(golden("G07")), to_hex(golden("G08")),
      to_hex(golden("G09")), to_hex(golden("G10")), to_hex(golden("G11")), to_hex(golden("G12")),
      to_hex(golden("G13")), to_hex(golden("G14")), to_hex(golden("G15")), to_hex(golden("G16")),
      to_hex(golden("G17")), to_hex(golden("G18")), to_hex(golden("G19")), to_hex(golden("G20")),
      to_hex(golden("G21")), to_hex(golden("G22")), to_hex(golden("G23")), to_hex(golden("G24"))};
  const std::array<std::string, 24> lit{
      to_hex(vec::G01), to_hex(vec::G02), to_hex(vec::G03), to_hex(vec::G04), to_hex(vec::G05), to_hex(vec::G06),
      to_hex(vec::G07), to_hex(vec::G08), to_hex(vec::G09), to_hex(vec::G10), to_hex(vec::G11), to_hex(vec::G12),
      to_hex(vec::G13), to_hex(vec::G14), to_hex(vec::G15), to_hex(vec::G16), to_hex(vec::G17), to_hex(vec::G18),
      to_hex(vec::G19), to_hex(vec::G20), to_hex(vec::G21), to_hex(vec::G22), to_hex(vec::G23), to_hex(vec::G24)};
  for (std::size_t i = 0; i < got.size(); ++i) {
    INFO("G" << i + 1);
    CHECK(got[i] == lit[i]);
  }
}

TEST_CASE("wire: hex loader ignores whitespace and rejects junk") {
  CHECK(to_hex(nbdwire_test::from_hex(" 01 0a\n\tFF ")) == "010aff");
  CHECK_THROWS(nbdwire_test::from_hex("0g"));
  CHECK_THROWS(nbdwire_test::from_hex("012"));
}

TEST_CASE("wire: G01 oldstyle greeting") {
  const bytes f = golden("G01");
  CHECK(f.size() == 152);
  CHECK(to_hex(enc::G01()) == to_hex(f));
  const auto g = decode_at<oldstyle_greeting>(f, 0);
  CHECK(g.passwd.get() == magic::nbdmagic);
  CHECK(g.magic.get() == magic::oldstyle);
  CHECK(g.export_size.get() == gib);
  CHECK(g.handshake_flags.get() == 0);
  CHECK(g.transmission_flags.get() == (transmission_flag::has_flags | transmission_flag::send_flush));
  CHECK(all_zero(g.reserved));
  CHECK(g.reserved.size() == 124);
}

TEST_CASE("wire: G02 fixed-newstyle greeting") {
  const bytes f = golden("G02");
  CHECK(f.size() == 18);
  CHECK(to_hex(enc::G02()) == to_hex(f));
  const auto g = decode_at<newstyle_greeting>(f, 0);
  CHECK(g.passwd.get() == magic::nbdmagic);
  CHECK(g.magic.get() == magic::ihaveopt);
  CHECK(g.handshake_flags.get() == (handshake_flag::fixed_newstyle | handshake_flag::no_zeroes));
}

TEST_CASE("wire: G03 client flags") {
  const bytes f = golden("G03");
  CHECK(to_hex(enc::G03()) == to_hex(f));
  CHECK(decode_at<client_flags_record>(f, 0).flags.get() == (client_flag::fixed_newstyle | client_flag::no_zeroes));
}

TEST_CASE("wire: G04 NBD_OPT_GO with one info request") {
  const bytes f = golden("G04");
  CHECK(f.size() == 28);
  CHECK(to_hex(enc::G04()) == to_hex(f));
  const auto h = decode_at<option_header>(f, 0);
  CHECK(h.magic.get() == magic::ihaveopt);
  CHECK(h.option.get() == static_cast<std::uint32_t>(option::go));
  CHECK(h.length.get() == f.size() - sizeof(option_header));
  CHECK(load_be<std::uint32_t>(f.data() + 16) == 4);
  CHECK(as_chars(bytes_view(f).subspan(20, 4)) == "disk");
  CHECK(load_be<std::uint16_t>(f.data() + 24) == 1);
  CHECK(load_be<std::uint16_t>(f.data() + 26) == static_cast<std::uint16_t>(info_type::block_size));
}

TEST_CASE("wire: G05 NBD_REP_INFO export") {
  const bytes f = golden("G05");
  CHECK(f.size() == 32);
  CHECK(to_hex(enc::G05()) == to_hex(f));
  const auto h = decode_at<option_reply_header>(f, 0);
  CHECK(h.magic.get() == magic::option_reply);
  CHECK(h.option.get() == 7);
  CHECK(h.type.get() == static_cast<std::uint32_t>(reply_type::info));
  CHECK(h.length.get() == 12);
  const auto p = decode_at<info_export_payload>(f, 20);
  CHECK(p.type.get() == static_cast<std::uint16_t>(info_type::export_info));
  CHECK(p.export_size.get() == gib);
  CHECK(p.transmission_flags.get() == 0x0005);
}

TEST_CASE("wire: G06 NBD_REP_INFO block size") {
  const bytes f = golden("G06");
  CHECK(f.size() == 34);
  CHECK(to_hex(enc::G06()) == to_hex(f));
  const auto h = decode_at<option_reply_header>(f, 0);
  CHECK(h.option.get() == 7);
  CHECK(h.type.get() == static_cast<std::uint32_t>(reply_type::info));
  CHECK(h.length.get() == 14);
  const auto p = decode_at<info_block_size_payload>(f, 20);
  CHECK(p.type.get() == static_cast<std::uint16_t>(info_type::block_size));
  CHECK(p.minimum.get() == 1);
  CHECK(p.preferred.get() == 4096);
  CHECK(p.maximum.get() == 32u * 1024u * 1024u);
}

TEST_CASE("wire: G07 NBD_REP_ACK") {
  const bytes f = golden("G07");
  CHECK(to_hex(enc::G07()) == to_hex(f));
  const auto h = decode_at<option_reply_header>(f, 0);
  CHECK(h.magic.get() == magic::option_reply);
  CHECK(h.option.get() == 7);
  CHECK(h.type.get() == static_cast<std::uint32_t>(reply_type::ack));
  CHECK(h.length.get() == 0);
}

TEST_CASE("wire: G08 EXPORT_NAME reply with zeroes and its short form") {
  const bytes f = golden("G08");
  CHECK(f.size() == 134);
  CHECK(to_hex(enc::G08()) == to_hex(f));
  const auto r = decode_at<export_name_reply>(f, 0);
  CHECK(r.export_size.get() == gib);
  CHECK(r.transmission_flags.get() == 0x0005);
  CHECK(all_zero(r.zeroes));
  // NO_ZEROES on both sides: the first 10 bytes only.
  const auto s = decode_at<export_name_reply_short>(f, 0);
  CHECK(s.export_size.get() == gib);
  CHECK(s.transmission_flags.get() == 0x0005);
  export_name_reply_short built{};
  built.export_size.set(gib);
  built.transmission_flags.set(0x0005);
  CHECK(to_hex(encode(built)) == to_hex(bytes_view(f).first(10)));
}

TEST_CASE("wire: G09 compact READ request") {
  const bytes f = golden("G09");
  CHECK(f.size() == 28);
  CHECK(to_hex(enc::G09()) == to_hex(f));
  const auto r = decode_at<request_header>(f, 0);
  CHECK(r.magic.get() == magic::request);
  CHECK(r.flags.get() == 0);
  CHECK(r.type.get() == static_cast<std::uint16_t>(command::read));
  CHECK(r.cookie.get() == cookie);
  CHECK(r.offset.get() == mib);
  CHECK(r.length.get() == 4096);
}

TEST_CASE("wire: G10 simple reply") {
  const bytes f = golden("G10");
  CHECK(to_hex(enc::G10()) == to_hex(f));
  const auto r = decode_at<simple_reply_header>(f, 0);
  CHECK(r.magic.get() == magic::simple_reply);
  CHECK(r.error.get() == 0);
  CHECK(r.cookie.get() == cookie);
}

TEST_CASE("wire: G11 structured OFFSET_DATA") {
  const bytes f = golden("G11");
  CHECK(to_hex(enc::G11()) == to_hex(f));
  const auto r = decode_at<structured_reply_header>(f, 0);
  CHECK(r.magic.get() == magic::structured_reply);
  CHECK(r.flags.get() == reply_flag::done);
  CHECK(r.type.get() == static_cast<std::uint16_t>(chunk_type::offset_data));
  CHECK(r.cookie.get() == cookie);
  CHECK(r.length.get() == 8 + 4096);
  CHECK(load_be<std::uint64_t>(f.data() + 20) == mib);
}

TEST_CASE("wire: G12 structured OFFSET_HOLE") {
  const bytes f = golden("G12");
  CHECK(to_hex(enc::G12()) == to_hex(f));
  const auto r = decode_at<structured_reply_header>(f, 0);
  CHECK(r.flags.get() == reply_flag::done);
  CHECK(r.type.get() == static_cast<std::uint16_t>(chunk_type::offset_hole));
  CHECK(r.cookie.get() == cookie);
  CHECK(r.length.get() == sizeof(offset_hole_payload));
  const auto p = decode_at<offset_hole_payload>(f, 20);
  CHECK(p.offset.get() == mib);
  CHECK(p.hole_size.get() == 4096);
}

TEST_CASE("wire: G13 structured BLOCK_STATUS") {
  const bytes f = golden("G13");
  CHECK(to_hex(enc::G13()) == to_hex(f));
  const auto r = decode_at<structured_reply_header>(f, 0);
  CHECK(r.type.get() == static_cast<std::uint16_t>(chunk_type::block_status));
  CHECK(r.length.get() == 12);
  CHECK(decode_at<meta_context_prefix>(f, 20).context_id.get() == 1);
  const auto d = decode_at<block_descriptor>(f, 24);
  CHECK(d.length.get() == 0x40000000u);
  CHECK(d.status.get() == (state_flag::hole | state_flag::zero));
}

TEST_CASE("wire: G14 structured ERROR") {
  const bytes f = golden("G14");
  CHECK(to_hex(enc::G14()) == to_hex(f));
  const auto r = decode_at<structured_reply_header>(f, 0);
  CHECK(r.flags.get() == reply_flag::done);
  CHECK(r.type.get() == static_cast<std::uint16_t>(chunk_type::error));
  CHECK((r.type.get() & chunk_type_error_bit) != 0);
  CHECK(r.length.get() == 6);
  const auto e = decode_at<error_chunk_prefix>(f, 20);
  CHECK(e.error.get() == static_cast<std::uint32_t>(nbd_error::einval));
  CHECK(e.message_length.get() == 0);
}

TEST_CASE("wire: G15 extended READ request") {
  const bytes f = golden("G15");
  CHECK(to_hex(enc::G15()) == to_hex(f));
  const auto r = decode_at<extended_request_header>(f, 0);
  CHECK(r.magic.get() == magic::extended_request);
  CHECK(r.flags.get() == 0);
  CHECK(r.type.get() == static_cast<std::uint16_t>(command::read));
  CHECK(r.cookie.get() == cookie);
  CHECK(r.offset.get() == mib);
  CHECK(r.length.get() == 4096);
}

TEST_CASE("wire: G16 extended WRITE request with PAYLOAD_LEN") {
  const bytes f = golden("G16");
  CHECK(to_hex(enc::G16()) == to_hex(f));
  const auto r = decode_at<extended_request_header>(f, 0);
  CHECK(r.flags.get() == command_flag::payload_len);
  CHECK(r.type.get() == static_cast<std::uint16_t>(command::write));
  CHECK(r.cookie.get() == cookie);
  CHECK(r.offset.get() == mib);
  CHECK(r.length.get() == 4096);
}

TEST_CASE("wire: G17 extended OFFSET_DATA chunk") {
  const bytes f = golden("G17");
  CHECK(to_hex(enc::G17()) == to_hex(f));
  const auto r = decode_at<extended_reply_header>(f, 0);
  CHECK(r.magic.get() == magic::extended_reply);
  CHECK(r.flags.get() == reply_flag::done);
  CHECK(r.type.get() == static_cast<std::uint16_t>(chunk_type::offset_data));
  CHECK(r.cookie.get() == cookie);
  CHECK(r.offset.get() == mib);
  CHECK(r.length.get() == 8 + 4096);
  CHECK(load_be<std::uint64_t>(f.data() + 32) == mib);
}

TEST_CASE("wire: G18 extended BLOCK_STATUS_EXT chunk") {
  const bytes f = golden("G18");
  CHECK(to_hex(enc::G18()) == to_hex(f));
  const auto r = decode_at<extended_reply_header>(f, 0);
  CHECK(r.type.get() == static_cast<std::uint16_t>(chunk_type::block_status_ext));
  CHECK(r.offset.get() == 0);
  CHECK(r.length.get() == 24);
  CHECK(load_be<std::uint32_t>(f.data() + 32) == 1);
  CHECK(load_be<std::uint32_t>(f.data() + 36) == 1);
  const auto d = decode_at<block_descriptor_ext>(f, 40);
  CHECK(d.length.get() == gib);
  CHECK(d.status.get() == 3);
}

TEST_CASE("wire: G19 legacy 1997 request") {
  const bytes f = golden("G19");
  CHECK(f.size() == 24);
  CHECK(to_hex(enc::G19()) == to_hex(f));
  const auto r = decode_at<legacy_1997_request>(f, 0);
  CHECK(r.magic.get() == magic::legacy_1997_request);
  CHECK(r.from.get() == 0x100000u);
  CHECK(r.length.get() == 4096);
  CHECK(r.handle.get() == cookie);
  CHECK(r.type.get() == 0);
  // The handle is 8 opaque bytes, echoed verbatim in the order they were sent.
  CHECK(to_hex(r.handle.raw) == "0102030405060708");
  CHECK(to_hex(encode(make_legacy_1997_request(command::write, 7, 512, 1024))) ==
        "12560953" "00000200" "00000400" "0000000000000007" "00000001");
}

TEST_CASE("wire: G20 legacy 1997 reply") {
  const bytes f = golden("G20");
  CHECK(f.size() == 16);
  CHECK(to_hex(enc::G20()) == to_hex(f));
  const auto r = decode_at<legacy_1997_reply>(f, 0);
  CHECK(r.magic.get() == magic::legacy_1997_reply);
  CHECK(r.handle.get() == cookie);
  CHECK(r.error.get() == 0);
}

TEST_CASE("wire: G21 NBD_OPT_SET_META_CONTEXT") {
  const bytes f = golden("G21");
  CHECK(f.size() == 47);
  CHECK(to_hex(enc::G21()) == to_hex(f));
  const auto h = decode_at<option_header>(f, 0);
  CHECK(h.option.get() == static_cast<std::uint32_t>(option::set_meta_context));
  CHECK(h.length.get() == 31);
  CHECK(load_be<std::uint32_t>(f.data() + 16) == 4);
  CHECK(as_chars(bytes_view(f).subspan(20, 4)) == "disk");
  CHECK(load_be<std::uint32_t>(f.data() + 24) == 1);
  CHECK(load_be<std::uint32_t>(f.data() + 28) == 15);
  CHECK(as_chars(bytes_view(f).subspan(32)) == "base:allocation");
}

TEST_CASE("wire: G22 NBD_REP_META_CONTEXT") {
  const bytes f = golden("G22");
  CHECK(to_hex(enc::G22()) == to_hex(f));
  const auto h = decode_at<option_reply_header>(f, 0);
  CHECK(h.option.get() == static_cast<std::uint32_t>(option::set_meta_context));
  CHECK(h.type.get() == static_cast<std::uint32_t>(reply_type::meta_context));
  CHECK(h.length.get() == 19);
  CHECK(decode_at<meta_context_prefix>(f, 20).context_id.get() == 1);
  CHECK(as_chars(bytes_view(f).subspan(24)) == "base:allocation");
}

TEST_CASE("wire: G23 NBD_CMD_DISC") {
  const bytes f = golden("G23");
  CHECK(to_hex(enc::G23()) == to_hex(f));
  const auto r = decode_at<request_header>(f, 0);
  CHECK(r.magic.get() == magic::request);
  CHECK(r.type.get() == static_cast<std::uint16_t>(command::disc));
  CHECK(r.cookie.get() == cookie);
  CHECK(r.offset.get() == 0);
  CHECK(r.length.get() == 0);
}

TEST_CASE("wire: G24 NBD_REP_ERR_UNSUP") {
  const bytes f = golden("G24");
  CHECK(to_hex(enc::G24()) == to_hex(f));
  const auto h = decode_at<option_reply_header>(f, 0);
  CHECK(h.option.get() == 4);
  CHECK(h.type.get() == static_cast<std::uint32_t>(reply_type::err_unsup));
  CHECK(is_error(static_cast<reply_type>(h.type.get())));
  CHECK(h.length.get() == 0);
}

TEST_CASE("wire: encode_into refuses a short buffer and writes nothing") {
  std::array<std::byte, 27> small{};
  small.fill(std::byte{0xee});
  CHECK(encode_into(make_request(command::read, 0, cookie, mib, 4096), small) == 0);
  for (auto b : small) CHECK(b == std::byte{0xee});
  std::array<std::byte, 30> big{};
  CHECK(encode_into(make_request(command::read, 0, cookie, mib, 4096), big) == 28);
  CHECK(to_hex(std::span(big).first(28)) == to_hex(golden("G09")));
  CHECK(big[28] == std::byte{0});
}

TEST_CASE("wire: every record round-trips through decode") {
  const auto req = make_request(command::write_zeroes, command_flag::fua | command_flag::no_hole,
                                0xfffffffffffffffeull, 0xfffffffffffff000ull, 0xffffffffu);
  const auto b = encode(req);
  CHECK(encode(decode<request_header>(b)) == b);
  const auto back = decode<request_header>(b);
  CHECK(back.flags.get() == (command_flag::fua | command_flag::no_hole));
  CHECK(back.cookie.get() == 0xfffffffffffffffeull);
  CHECK(back.offset.get() == 0xfffffffffffff000ull);
  CHECK(back.length.get() == 0xffffffffu);
  const auto x = make_extended_request(command::block_status, command_flag::req_one, 9, 1, 0x100000000ull);
  CHECK(decode<extended_request_header>(encode(x)).length.get() == 0x100000000ull);
  const auto s = make_simple_reply(static_cast<nbd_error>(0xdeadbeefu), 3);
  CHECK(decode<simple_reply_header>(encode(s)).error.get() == 0xdeadbeefu);
}

TEST_CASE("wire: record_view reads every field as decode does, at any alignment") {
  // Each record at offsets 0..7 of a larger buffer: the view reads unaligned input in place.
  const auto req = encode(make_extended_request(command::write, command_flag::fua | command_flag::payload_len,
                                                0x8877665544332211ull, 0x0123456789abcdefull, 0xfedcba9876543210ull));
  const auto leg = encode(make_legacy_1997_request(command::write, 0x0102030405060708ull, 0xa0b0c0d0u, 0x11223344u));
  const auto rep = encode(make_simple_reply(static_cast<nbd_error>(0x01020304u), 0xf0e0d0c0b0a09080ull));
  for (std::size_t at = 0; at < 8; ++at) {
    CAPTURE(at);
    std::array<std::byte, 64> buf{};
    std::copy(req.begin(), req.end(), buf.begin() + static_cast<std::ptrdiff_t>(at));
    using x = extended_request_header;
    const record_view<x> v{bytes_view(buf).subspan(at)};
    const auto d = decode<x>(bytes_view(buf).subspan(at));
    CHECK(v.get(&x::magic) == magic::extended_request);
    CHECK(v.get(&x::flags) == d.flags.get());
    CHECK(v.get(&x::type) == static_cast<std::uint16_t>(command::write));
    CHECK(v.get(&x::cookie) == 0x8877665544332211ull);
    CHECK(v.get(&x::offset) == 0x0123456789abcdefull);
    CHECK(v.get(&x::length) == 0xfedcba9876543210ull);

    std::copy(leg.begin(), leg.end(), buf.begin() + static_cast<std::ptrdiff_t>(at));
    using l = legacy_1997_request;
    const record_view<l> lv{bytes_view(buf).subspan(at)};
    CHECK(lv.get(&l::magic) == magic::legacy_1997_request);
    CHECK(lv.get(&l::handle) == 0x0102030405060708ull);
    CHECK(lv.get(&l::from) == 0xa0b0c0d0u);
    CHECK(lv.get(&l::length) == 0x11223344u);
    CHECK(lv.get(&l::type) == 1u);

    std::copy(rep.begin(), rep.end(), buf.begin() + static_cast<std::ptrdiff_t>(at));
    using s = simple_reply_header;
    const record_view<s> sv{bytes_view(buf).subspan(at)};
    CHECK(sv.get(&s::error) == 0x01020304u);
    CHECK(sv.get(&s::cookie) == 0xf0e0d0c0b0a09080ull);
  }
}
