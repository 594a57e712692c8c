// SPDX-License-Identifier: MIT
// bytes.hpp, constants.hpp and errors.hpp: field codecs, range arithmetic, names, categories.
#include <doctest/doctest.h>

#include <array>
#include <cstdint>
#include <limits>
#include <set>
#include <string>

#include "nbdwire/bytes.hpp"
#include "nbdwire/constants.hpp"
#include "nbdwire/errors.hpp"
#include "nbdwire/events.hpp"
#include "support/hex.hpp"

using namespace nbdwire;
using namespace nbdwire_test::literals;
using nbdwire_test::to_hex;

TEST_CASE("bytes: be_uint get and set are big-endian") {
  be_u16 a;
  a.set(0x1234);
  CHECK(to_hex(a.raw) == "1234");
  CHECK(a.get() == 0x1234);
  be_u32 b;
  b.set(0x25609513u);
  CHECK(to_hex(b.raw) == "25609513");
  CHECK(b.get() == 0x25609513u);
  be_u64 c;
  c.set(0x0102030405060708ull);
  CHECK(to_hex(c.raw) == "0102030405060708");
  CHECK(c.get() == 0x0102030405060708ull);
  c.set(std::numeric_limits<std::uint64_t>::max());
  CHECK(to_hex(c.raw) == "ffffffffffffffff");
  CHECK(c.get() == std::numeric_limits<std::uint64_t>::max());
  be_u64 d;
  d.set(0x0102030405060708ull);
  CHECK(!(c == d));
  c.set(0x0102030405060708ull);
  CHECK(c == d);
}

TEST_CASE("bytes: load_be and store_be round-trip at every width") {
  std::array<std::byte, 8> buf{};
  store_be<std::uint16_t>(buf.data(), 0xbeef);
  CHECK(to_hex(std::span(buf).first(2)) == "beef");
  CHECK(load_be<std::uint16_t>(buf.data()) == 0xbeef);
  store_be<std::uint32_t>(buf.data(), 0x96744668u);
  CHECK(to_hex(std::span(buf).first(4)) == "96744668");
  CHECK(load_be<std::uint32_t>(buf.data()) == 0x96744668u);
  store_be<std::uint64_t>(buf.data(), 0x0003e889045565a9ull);
  CHECK(to_hex(buf) == "0003e889045565a9");
  CHECK(load_be<std::uint64_t>(buf.data()) == 0x0003e889045565a9ull);
  store_be<std::uint8_t>(buf.data() + 7, 0xab);
  CHECK(load_be<std::uint8_t>(buf.data() + 7) == 0xab);
  // Unaligned reads: every start offset gives the same big-endian reading.
  constexpr auto seq = "00 01 02 03 04 05 06 07 08 09 0a 0b"_hex;
  for (std::size_t i = 0; i + 4 <= seq.size(); ++i) {
    const auto v = load_be<std::uint32_t>(seq.data() + i);
    const auto n = static_cast<std::uint32_t>(i);
    CHECK(v == ((n << 24) | ((n + 1) << 16) | ((n + 2) << 8) | (n + 3)));
  }
  // A named constant: clang 14 crashes evaluating a pointer into a temporary here.
  static constexpr auto legacy_magic = "12560953"_hex;
  static_assert(load_be<std::uint32_t>(legacy_magic.data()) == magic::legacy_1997_request);
}

TEST_CASE("bytes: range_within at the 64-bit edges") {
  constexpr std::uint64_t max = std::numeric_limits<std::uint64_t>::max();
  CHECK(range_within(0, 0, 0));
  CHECK(range_within(0, 10, 10));
  CHECK_FALSE(range_within(0, 11, 10));
  CHECK(range_within(10, 0, 10));
  CHECK_FALSE(range_within(11, 0, 10));
  CHECK(range_within(5, 5, 10));
  CHECK_FALSE(range_within(6, 5, 10));
  // offset + length wraps around to a small number: must still be out of range.
  CHECK_FALSE(range_within(max, 2, 10));
  CHECK_FALSE(range_within(2, max, 10));
  CHECK_FALSE(range_within(max - 1, 2, max));
  CHECK(range_within(max - 1, 1, max));
  CHECK(range_within(0, max, max));
  CHECK(range_within(max, 0, max));
  CHECK_FALSE(range_within(1, max, max));
  CHECK_FALSE(range_within(0x8000000000000000ull, 0x8000000000000000ull, max));
  CHECK(range_within(0x8000000000000000ull, 0x7fffffffffffffffull, max));
  static_assert(!range_within(max, max, max));
}

TEST_CASE("bytes: is_power_of_two") {
  CHECK_FALSE(is_power_of_two(0));
  CHECK(is_power_of_two(1));
  CHECK(is_power_of_two(2));
  CHECK_FALSE(is_power_of_two(3));
  CHECK(is_power_of_two(512));
  CHECK_FALSE(is_power_of_two(513));
  CHECK(is_power_of_two(65536));
  CHECK(is_power_of_two(1ull << 63));
  CHECK_FALSE(is_power_of_two((1ull << 63) + 1));
  CHECK_FALSE(is_power_of_two(std::numeric_limits<std::uint64_t>::max()));
  for (unsigned i = 0; i < 64; ++i) {
    CHECK(is_power_of_two(1ull << i));
    if (i > 1) CHECK_FALSE(is_power_of_two((1ull << i) - 1));
  }
}

TEST_CASE("bytes: as_bytes and as_chars are inverse views") {
  const std::string s = "disk";
  const auto b = as_bytes(s);
  CHECK(b.size() == 4);
  CHECK(to_hex(b) == "6469736b");
  CHECK(as_chars(b) == "disk");
}

TEST_CASE("constants: magic numbers have the spec values") {
  CHECK(magic::nbdmagic == 0x4e42444d41474943ull);
  CHECK(magic::oldstyle == 0x0000420281861253ull);
  CHECK(magic::ihaveopt == 0x49484156454F5054ull);
  CHECK(magic::option_reply == 0x0003e889045565a9ull);
  CHECK(magic::request == 0x25609513u);
  CHECK(magic::simple_reply == 0x67446698u);
  CHECK(magic::structured_reply == 0x668e33efu);
  CHECK(magic::extended_request == 0x21e41c71u);
  CHECK(magic::extended_reply == 0x6e8a278cu);
  CHECK(magic::legacy_1997_request == 0x12560953u);
  CHECK(magic::legacy_1997_reply == 0x96744668u);
  CHECK(default_port == 10809);
  CHECK(transmission_flag::send_fast_zero == 0x0800);
  CHECK(command_flag::fast_zero == 0x0010);
  CHECK(static_cast<std::uint32_t>(reply_type::err_unsup) == 0x80000001u);
}

TEST_CASE("constants: every enumerator has a name") {
  for (auto o : {option::export_name, option::abort, option::list, option::peek_export, option::starttls,
                 option::info, option::go, option::structured_reply, option::list_meta_context,
                 option::set_meta_context, option::extended_headers}) {
    CHECK(to_string(o).find("unknown") == std::string_view::npos);
  }
  CHECK(to_string(static_cast<option>(99)).find("unknown") != std::string_view::npos);

  for (auto t : {reply_type::ack, reply_type::server, reply_type::info, reply_type::meta_context,
                 reply_type::err_unsup, reply_type::err_policy, reply_type::err_invalid, reply_type::err_platform,
                 reply_type::err_tls_reqd, reply_type::err_unknown, reply_type::err_shutdown,
                 reply_type::err_block_size_reqd, reply_type::err_too_big, reply_type::err_ext_header_reqd}) {
    CHECK(to_string(t).find("unknown") == std::string_view::npos);
    CHECK(is_error(t) == (static_cast<std::uint32_t>(t) >= 0x80000000u));
  }
  CHECK(to_string(static_cast<reply_type>(0x8000007fu)).find("unknown") != std::string_view::npos);

  for (auto t : {info_type::export_info, info_type::name, info_type::description, info_type::block_size})
    CHECK(to_string(t).find("unknown") == std::string_view::npos);

  for (auto c : {command::read, command::write, command::disc, command::flush, command::trim, command::cache,
                 command::write_zeroes, command::block_status, command::resize})
    CHECK(to_string(c).find("unknown") == std::string_view::npos);
  CHECK(to_string(static_cast<command>(42)).find("unknown") != std::string_view::npos);

  for (auto t : {chunk_type::none, chunk_type::offset_data, chunk_type::offset_hole, chunk_type::block_status,
                 chunk_type::block_status_ext, chunk_type::error, chunk_type::error_offset})
    CHECK(to_string(t).find("unknown") == std::string_view::npos);

  for (auto e : {nbd_error::ok, nbd_error::eperm, nbd_error::eio, nbd_error::enomem, nbd_error::einval,
                 nbd_error::enospc, nbd_error::eoverflow, nbd_error::enotsup, nbd_error::eshutdown})
    CHECK(to_string(e).find("unknown") == std::string_view::npos);

  for (auto s : {handshake_style::fixed_newstyle, handshake_style::newstyle, handshake_style::oldstyle,
                 handshake_style::legacy_1997})
    CHECK(to_string(s) != "unknown");

  for (int k = 0; k <= static_cast<int>(event_kind::failed); ++k)
    CHECK(to_string(static_cast<event_kind>(k)) != "unknown");
}

TEST_CASE("constants: normalize_error maps unexpected values to EINVAL") {
  CHECK(normalize_error(0) == nbd_error::ok);
  CHECK(normalize_error(1) == nbd_error::eperm);
  CHECK(normalize_error(5) == nbd_error::eio);
  CHECK(normalize_error(12) == nbd_error::enomem);
  CHECK(normalize_error(22) == nbd_error::einval);
  CHECK(normalize_error(28) == nbd_error::enospc);
  CHECK(normalize_error(75) == nbd_error::eoverflow);
  CHECK(normalize_error(95) == nbd_error::enotsup);
  CHECK(normalize_error(108) == nbd_error::eshutdown);
  for (std::uint32_t v : {2u, 4u, 13u, 30u, 110u, 0x80000000u, 0xffffffffu})
    CHECK(normalize_error(v) == nbd_error::einval);
}

namespace {
// Every errc, by its stable number. Kept in step with errors.hpp: the name test below fails
// if a listed number is not an enumerator.
constexpr std::array all_errc_numbers{
    0,   100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111, 112, 113, 114, 115, 116,
    200, 201, 202, 203, 204, 205, 206, 207, 300, 301, 400, 401, 402, 403, 500, 501,
    600, 601, 602, 603, 604, 605, 606, 607, 608, 609, 610, 611, 612, 613, 614, 615, 616, 617};
}  // namespace

TEST_CASE("errors: every errc has a distinct name") {
  for (int n : all_errc_numbers) {
    INFO("errc number " << n);
    CHECK(to_string(static_cast<errc>(n)) != "unknown_error");
  }
  // Scan the whole number space: every named number (including ones added after this list)
  // has its own name, and the names are unique.
  std::set<std::string_view> names;
  std::size_t named = 0;
  for (int n = 0; n < 1000; ++n) {
    const auto name = to_string(static_cast<errc>(n));
    if (name == "unknown_error") continue;
    ++named;
    INFO("errc number " << n << " named " << std::string(name));
    CHECK(names.insert(name).second);
  }
  CHECK(named >= all_errc_numbers.size());
  for (int n : {1, 99, 199, 299, 399, 499, 502, 999})
    CHECK(to_string(static_cast<errc>(n)) == "unknown_error");
}

TEST_CASE("errors: category and is_fatal") {
  CHECK(category(errc::ok) == error_category::none);
  CHECK_FALSE(is_fatal(errc::ok));
  CHECK(category(errc::bad_greeting_magic) == error_category::peer_violation);
  CHECK(is_fatal(errc::bad_greeting_magic));
  CHECK(category(errc::bad_client_flags) == error_category::peer_violation);
  CHECK(is_fatal(errc::bad_client_flags));
  CHECK(category(errc::reply_cookie_unknown) == error_category::peer_violation);
  CHECK(category(errc::too_many_options) == error_category::limit_exceeded);
  CHECK(is_fatal(errc::too_many_options));
  CHECK(category(errc::unexpected_eof) == error_category::peer_closed);
  CHECK(is_fatal(errc::eof_with_requests_in_flight));
  CHECK(category(errc::wrong_state) == error_category::caller_misuse);
  CHECK_FALSE(is_fatal(errc::wrong_state));
  CHECK(category(errc::command_not_advertised) == error_category::caller_misuse);
  CHECK(category(errc::too_many_in_flight) == error_category::limit_exceeded);
  CHECK_FALSE(is_fatal(errc::too_many_in_flight));
  CHECK(category(errc::outbox_full) == error_category::buffer_too_small);
  CHECK_FALSE(is_fatal(errc::outbox_full));
  for (int n : all_errc_numbers) {
    const auto e = static_cast<errc>(n);
    INFO("errc " << to_string(e));
    CHECK((category(e) == error_category::none) == (e == errc::ok));
    // A fatal error is the peer's doing or a limit it pushed past, except the caller's
    // misuse that leaves a machine failed: a constructor given an invalid configuration, or
    // receive() of bytes that belong to TLS.
    if (is_fatal(e) && category(e) == error_category::caller_misuse)
      CHECK((e == errc::invalid_config || e == errc::feature_not_built || e == errc::receive_while_tls_starting));
  }
}

TEST_CASE("errors: result holds a value or an error") {
  result<std::uint64_t> v = std::uint64_t{42};
  CHECK(v.has_value());
  CHECK(static_cast<bool>(v));
  CHECK(v.error() == errc::ok);
  CHECK(v.value() == 42);
  CHECK(*v == 42);
  result<std::uint64_t> e = errc::too_many_in_flight;
  CHECK_FALSE(e.has_value());
  CHECK_FALSE(static_cast<bool>(e));
  CHECK(e.error() == errc::too_many_in_flight);
  result<void> ok{};
  CHECK(ok.has_value());
  result<void> bad = errc::wrong_state;
  CHECK_FALSE(bad);
  CHECK(bad.error() == errc::wrong_state);
  static_assert(result<int>(7).value() == 7);
  static_assert(!result<int>(errc::zero_length).has_value());
}

TEST_CASE("events: block size constraints validity") {
  CHECK(valid(block_size_constraints{}));
  CHECK(valid(block_size_constraints{1, 512, 512}));
  CHECK(valid(block_size_constraints{65536, 65536, 0xffffffffu}));
  CHECK_FALSE(valid(block_size_constraints{0, 4096, 4096}));
  CHECK_FALSE(valid(block_size_constraints{3, 4096, 4096}));
  CHECK_FALSE(valid(block_size_constraints{131072, 131072, 131072}));
  CHECK_FALSE(valid(block_size_constraints{1, 256, 4096}));
  CHECK_FALSE(valid(block_size_constraints{1, 4095, 4096}));
  CHECK_FALSE(valid(block_size_constraints{4096, 2048, 4096}));
  CHECK_FALSE(valid(block_size_constraints{1, 4096, 4095}));
  CHECK(valid(block_size_constraints{1, 4096, 4097}));  // maximum need not be a power of two
}

#include "nbdwire/client.hpp"
#include "nbdwire/server.hpp"

TEST_CASE("memory: machine sizes stay within the documented bounds") {
  // docs/design.md "Memory bounds" (x86-64, default limits: client 28,904, server 19,096,
  // event 168 bytes); a growth past these bounds must update the document.
  if constexpr (sizeof(void*) == 8) {
    CHECK(sizeof(nbdwire::client) <= 29u * 1024u);
    CHECK(sizeof(nbdwire::server) <= 19u * 1024u);
    CHECK(sizeof(nbdwire::event) <= 168u);
  }
}
