// SPDX-License-Identifier: MIT
// Test support: the golden vectors G1-G24 (protocol checklist section 4) as compile-time byte
// arrays. tests/vectors/Gnn.hex holds the same bytes; tests/wire.cpp checks that the two agree.
#pragma once

#include "support/hex.hpp"

namespace nbdwire_test::vectors {
using namespace nbdwire_test::literals;

/// G1: Oldstyle greeting, export size 1 GiB, transmission flags HAS_FLAGS|SEND_FLUSH (0x0005)
inline constexpr auto G01 =
    "4e42444d41474943000042028186125300000000400000000000000500000000"
    "0000000000000000000000000000000000000000000000000000000000000000"
    "0000000000000000000000000000000000000000000000000000000000000000"
    "0000000000000000000000000000000000000000000000000000000000000000"
    "000000000000000000000000000000000000000000000000"_hex;

/// G2: Fixed-newstyle server greeting (FIXED_NEWSTYLE|NO_ZEROES)
inline constexpr auto G02 =
    "4e42444d4147494349484156454f50540003"_hex;

/// G3: Client flags C_FIXED_NEWSTYLE|C_NO_ZEROES
inline constexpr auto G03 =
    "00000003"_hex;

/// G4: NBD_OPT_GO, export "disk", one information request NBD_INFO_BLOCK_SIZE
inline constexpr auto G04 =
    "49484156454f5054000000070000000c000000046469736b00010003"_hex;

/// G5: NBD_REP_INFO carrying NBD_INFO_EXPORT in reply to GO: size 1 GiB, flags 0x0005
inline constexpr auto G05 =
    "0003e889045565a900000007000000030000000c000000000000400000000005"_hex;

/// G6: NBD_REP_INFO carrying NBD_INFO_BLOCK_SIZE: min 1, preferred 4096, max 32 MiB
inline constexpr auto G06 =
    "0003e889045565a900000007000000030000000e000300000001000010000200"
    "0000"_hex;

/// G7: NBD_REP_ACK to GO (end of handshake; transmission starts right after, no padding)
inline constexpr auto G07 =
    "0003e889045565a9000000070000000100000000"_hex;

/// G8: NBD_OPT_EXPORT_NAME reply without NO_ZEROES (size 1 GiB, flags 0x0005)
inline constexpr auto G08 =
    "0000000040000000000500000000000000000000000000000000000000000000"
    "0000000000000000000000000000000000000000000000000000000000000000"
    "0000000000000000000000000000000000000000000000000000000000000000"
    "0000000000000000000000000000000000000000000000000000000000000000"
    "000000000000"_hex;

/// G9: Compact request: NBD_CMD_READ, 4096 bytes at offset 1 MiB, cookie 0x0102030405060708
inline constexpr auto G09 =
    "25609513000000000102030405060708000000000010000000001000"_hex;

/// G10: Simple reply, success, to G9 (followed by 4096 data bytes)
inline constexpr auto G10 =
    "67446698000000000102030405060708"_hex;

/// G11: Structured reply chunk NBD_REPLY_TYPE_OFFSET_DATA with DONE, answering G9 (header + offset; 4096 data bytes follow)
inline constexpr auto G11 =
    "668e33ef000100010102030405060708000010080000000000100000"_hex;

/// G12: Structured NBD_REPLY_TYPE_OFFSET_HOLE with DONE (4096-byte hole at 1 MiB)
inline constexpr auto G12 =
    "668e33ef0001000201020304050607080000000c000000000010000000001000"_hex;

/// G13: Structured NBD_REPLY_TYPE_BLOCK_STATUS with DONE: context id 1, one extent of 1 GiB, flags HOLE|ZERO
inline constexpr auto G13 =
    "668e33ef0001000501020304050607080000000c000000014000000000000003"_hex;

/// G14: Structured NBD_REPLY_TYPE_ERROR with DONE, NBD_EINVAL, no message
inline constexpr auto G14 =
    "668e33ef00018001010203040506070800000006000000160000"_hex;

/// G15: Extended request (EXTENDED_HEADERS negotiated): NBD_CMD_READ, 4096 bytes at 1 MiB, cookie 0x0102030405060708
inline constexpr auto G15 =
    "21e41c7100000000010203040506070800000000001000000000000000001000"_hex;

/// G16: Extended request: NBD_CMD_WRITE 4096 bytes at 1 MiB (PAYLOAD_LEN mandatory; 4096 payload bytes follow)
inline constexpr auto G16 =
    "21e41c7100200001010203040506070800000000001000000000000000001000"_hex;

/// G17: Extended reply chunk OFFSET_DATA with DONE answering G15 (header + payload offset; data follows)
inline constexpr auto G17 =
    "6e8a278c00010001010203040506070800000000001000000000000000001008"
    "0000000000100000"_hex;

/// G18: Extended reply NBD_REPLY_TYPE_BLOCK_STATUS_EXT with DONE: ctx 1, 1 descriptor (1 GiB, status 3), request offset 0
inline constexpr auto G18 =
    "6e8a278c00010006010203040506070800000000000000000000000000000018"
    "000000010000000100000000400000000000000000000003"_hex;

/// G19: Legacy 1997 request (Linux <= 2.1.115): READ 4096 bytes at byte 1 MiB, handle bytes 01..08
inline constexpr auto G19 =
    "125609530010000000001000010203040506070800000000"_hex;

/// G20: Legacy 1997 reply, success (4096 data bytes follow for READ)
inline constexpr auto G20 =
    "96744668010203040506070800000000"_hex;

/// G21: NBD_OPT_SET_META_CONTEXT for export "disk", one query "base:allocation"
inline constexpr auto G21 =
    "49484156454f50540000000a0000001f000000046469736b000000010000000f"
    "626173653a616c6c6f636174696f6e"_hex;

/// G22: NBD_REP_META_CONTEXT reply to SET_META_CONTEXT: id 1, "base:allocation"
inline constexpr auto G22 =
    "0003e889045565a90000000a000000040000001300000001626173653a616c6c"
    "6f636174696f6e"_hex;

/// G23: NBD_CMD_DISC (compact)
inline constexpr auto G23 =
    "25609513000000020102030405060708000000000000000000000000"_hex;

/// G24: NBD_REP_ERR_UNSUP reply to an unknown option 4 (no message)
inline constexpr auto G24 =
    "0003e889045565a9000000048000000100000000"_hex;

}  // namespace nbdwire_test::vectors
