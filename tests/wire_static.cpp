// SPDX-License-Identifier: MIT
// The golden vectors as static_asserts: a layout or byte-order regression in wire.hpp stops
// the build instead of failing a test at run time.
#include <doctest/doctest.h>

#include "support/golden.hpp"
#include "support/golden_encode.hpp"

namespace enc = nbdwire_test::encoded;
namespace vec = nbdwire_test::vectors;
using namespace nbdwire;

static_assert(enc::G01() == vec::G01, "G1 differs from the constexpr encoding");
static_assert(enc::G02() == vec::G02, "G2 differs from the constexpr encoding");
static_assert(enc::G03() == vec::G03, "G3 differs from the constexpr encoding");
static_assert(enc::G04() == vec::G04, "G4 differs from the constexpr encoding");
static_assert(enc::G05() == vec::G05, "G5 differs from the constexpr encoding");
static_assert(enc::G06() == vec::G06, "G6 differs from the constexpr encoding");
static_assert(enc::G07() == vec::G07, "G7 differs from the constexpr encoding");
static_assert(enc::G08() == vec::G08, "G8 differs from the constexpr encoding");
static_assert(enc::G09() == vec::G09, "G9 differs from the constexpr encoding");
static_assert(enc::G10() == vec::G10, "G10 differs from the constexpr encoding");
static_assert(enc::G11() == vec::G11, "G11 differs from the constexpr encoding");
static_assert(enc::G12() == vec::G12, "G12 differs from the constexpr encoding");
static_assert(enc::G13() == vec::G13, "G13 differs from the constexpr encoding");
static_assert(enc::G14() == vec::G14, "G14 differs from the constexpr encoding");
static_assert(enc::G15() == vec::G15, "G15 differs from the constexpr encoding");
static_assert(enc::G16() == vec::G16, "G16 differs from the constexpr encoding");
static_assert(enc::G17() == vec::G17, "G17 differs from the constexpr encoding");
static_assert(enc::G18() == vec::G18, "G18 differs from the constexpr encoding");
static_assert(enc::G19() == vec::G19, "G19 differs from the constexpr encoding");
static_assert(enc::G20() == vec::G20, "G20 differs from the constexpr encoding");
static_assert(enc::G21() == vec::G21, "G21 differs from the constexpr encoding");
static_assert(enc::G22() == vec::G22, "G22 differs from the constexpr encoding");
static_assert(enc::G23() == vec::G23, "G23 differs from the constexpr encoding");
static_assert(enc::G24() == vec::G24, "G24 differs from the constexpr encoding");

// Decoding at compile time as well: the fields read back from the literal bytes.
static_assert(decode<oldstyle_greeting>(vec::G01).export_size.get() == 0x40000000u);
static_assert(decode<oldstyle_greeting>(vec::G01).transmission_flags.get() == 0x0005);
static_assert(decode<newstyle_greeting>(vec::G02).magic.get() == magic::ihaveopt);
static_assert(decode<option_header>(vec::G04).length.get() == 12);
static_assert(decode<request_header>(vec::G09).cookie.get() == 0x0102030405060708ull);
static_assert(decode<request_header>(vec::G09).offset.get() == 0x100000u);
static_assert(decode<simple_reply_header>(vec::G10).magic.get() == magic::simple_reply);
static_assert(decode<extended_request_header>(vec::G16).flags.get() == command_flag::payload_len);
static_assert(decode<legacy_1997_request>(vec::G19).from.get() == 0x100000u);
static_assert(decode<legacy_1997_reply>(vec::G20).handle.get() == 0x0102030405060708ull);
static_assert(decode<request_header>(vec::G23).type.get() == static_cast<std::uint16_t>(command::disc));
// record_view works at compile time too (through decode there).
static_assert(record_view<request_header>(bytes_view(vec::G09)).get(&request_header::offset) == 0x100000u);
static_assert(record_view<legacy_1997_reply>(bytes_view(vec::G20)).get(&legacy_1997_reply::handle) ==
              0x0102030405060708ull);

// The static_asserts above are the test; this case keeps the file visible in the test list.
TEST_CASE("wire: golden vectors hold at compile time") {
  CHECK(enc::G01() == vec::G01);
  CHECK(enc::G24() == vec::G24);
}
