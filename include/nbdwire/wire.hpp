// SPDX-License-Identifier: MIT
// nbdwire layer 1: every fixed-size wire record as a byte-exact type.
//
// A record is a struct of big-endian fields (bytes.hpp) with alignment 1 and the exact wire
// size, checked below. Records are built and read with constexpr functions, so a layout
// mistake fails at compile time (tests/wire_static.cpp turns the golden vectors into
// static_asserts). There is no reinterpret_cast of input: decode() copies the bytes and
// record_view reads one field at a time.
#pragma once

#include <algorithm>  // std::copy_n
#include <array>      // std::array
#include <bit>        // std::bit_cast
#include <cstddef>    // std::byte
#include <cstdint>    // fixed-width integers
#include <cstring>    // std::memcpy
#include <type_traits>  // std::is_constant_evaluated

#include "nbdwire/bytes.hpp"
#include "nbdwire/constants.hpp"

namespace nbdwire {
NBDWIRE_BEGIN_NAMESPACE

/// "Oldstyle negotiation": the server's only handshake message. 152 bytes.
struct oldstyle_greeting {
  be_u64 passwd;                 ///< NBDMAGIC
  be_u64 magic;                  ///< magic::oldstyle
  be_u64 export_size;
  be_u16 handshake_flags;        ///< MUST be 0 in oldstyle ("Handshake flags")
  be_u16 transmission_flags;
  std::array<std::byte, 124> reserved{};
};

/// "Newstyle negotiation": NBDMAGIC, IHAVEOPT, handshake flags. 18 bytes.
struct newstyle_greeting {
  be_u64 passwd;
  be_u64 magic;
  be_u16 handshake_flags;
};

/// "Client flags": the client's answer to the newstyle greeting. 4 bytes.
struct client_flags_record {
  be_u32 flags;
};

/// "Option haggling": header of every option request; `length` data bytes follow. 16 bytes.
struct option_header {
  be_u64 magic;  ///< IHAVEOPT
  be_u32 option;
  be_u32 length;
};

/// "Option reply": header of every option reply except EXPORT_NAME's. 20 bytes.
struct option_reply_header {
  be_u64 magic;  ///< magic::option_reply
  be_u32 option;
  be_u32 type;
  be_u32 length;
};

/// NBD_OPT_EXPORT_NAME reply with the 124 zero bytes. 134 bytes.
struct export_name_reply {
  be_u64 export_size;
  be_u16 transmission_flags;
  std::array<std::byte, 124> zeroes{};
};

/// NBD_OPT_EXPORT_NAME reply when both sides agreed on NO_ZEROES. 10 bytes.
struct export_name_reply_short {
  be_u64 export_size;
  be_u16 transmission_flags;
};

/// NBD_REP_INFO payload for NBD_INFO_EXPORT. 12 bytes.
struct info_export_payload {
  be_u16 type;
  be_u64 export_size;
  be_u16 transmission_flags;
};

/// NBD_REP_INFO payload for NBD_INFO_BLOCK_SIZE. 14 bytes.
struct info_block_size_payload {
  be_u16 type;
  be_u32 minimum;
  be_u32 preferred;
  be_u32 maximum;
};

/// NBD_REP_INFO payload for NBD_INFO_NAME and NBD_INFO_DESCRIPTION: the type, then the
/// string (length - 2 bytes). 2 bytes.
struct info_string_prefix {
  be_u16 type;
};

/// NBD_REP_SERVER payload prefix: the name length, then the name and a description. 4 bytes.
struct server_reply_prefix {
  be_u32 name_length;
};

/// NBD_REP_META_CONTEXT payload prefix: context id, then the name. 4 bytes.
struct meta_context_prefix {
  be_u32 context_id;
};

/// "Request message", compact form. WRITE data follows. 28 bytes.
struct request_header {
  be_u32 magic;  ///< magic::request
  be_u16 flags;
  be_u16 type;
  be_u64 cookie;
  be_u64 offset;
  be_u32 length;
};

/// [ext] Extended request: 64-bit length. 32 bytes.
struct extended_request_header {
  be_u32 magic;  ///< magic::extended_request
  be_u16 flags;
  be_u16 type;
  be_u64 cookie;
  be_u64 offset;
  be_u64 length;
};

/// "Simple reply message". READ data follows on success. 16 bytes.
struct simple_reply_header {
  be_u32 magic;  ///< magic::simple_reply
  be_u32 error;
  be_u64 cookie;
};

/// "Structured reply chunk message" header; `length` payload bytes follow. 20 bytes.
struct structured_reply_header {
  be_u32 magic;  ///< magic::structured_reply
  be_u16 flags;
  be_u16 type;
  be_u64 cookie;
  be_u32 length;
};

/// [ext] Extended reply chunk header. 32 bytes.
struct extended_reply_header {
  be_u32 magic;  ///< magic::extended_reply
  be_u16 flags;
  be_u16 type;
  be_u64 cookie;
  be_u64 offset;
  be_u64 length;
};

/// NBD_REPLY_TYPE_OFFSET_HOLE payload. 12 bytes.
struct offset_hole_payload {
  be_u64 offset;
  be_u32 hole_size;
};

/// Fixed start of every error chunk payload: error, message length. 6 bytes.
struct error_chunk_prefix {
  be_u32 error;
  be_u16 message_length;
};

/// One extent of NBD_REPLY_TYPE_BLOCK_STATUS. 8 bytes.
struct block_descriptor {
  be_u32 length;
  be_u32 status;
};

/// [ext] One extent of NBD_REPLY_TYPE_BLOCK_STATUS_EXT. 16 bytes.
struct block_descriptor_ext {
  be_u64 length;
  be_u64 status;
};

/// Linux 2.1.67 include/linux/nbd.h request: 32-bit offset and length, 8 opaque handle
/// bytes, type 0 read / 1 write. WRITE data follows. 24 bytes.
struct legacy_1997_request {
  be_u32 magic;  ///< magic::legacy_1997_request
  be_u32 from;
  be_u32 length;
  be_u64 handle;
  be_u32 type;
};

/// Linux 2.1.67 reply: magic, handle, error. READ data follows on success. 16 bytes.
struct legacy_1997_reply {
  be_u32 magic;  ///< magic::legacy_1997_reply
  be_u64 handle;
  be_u32 error;
};

#define NBDWIRE_RECORD_SIZE(T, N) \
  static_assert(sizeof(T) == (N) && alignof(T) == 1, #T " must have the wire layout")
NBDWIRE_RECORD_SIZE(oldstyle_greeting, 152);
NBDWIRE_RECORD_SIZE(newstyle_greeting, 18);
NBDWIRE_RECORD_SIZE(client_flags_record, 4);
NBDWIRE_RECORD_SIZE(option_header, 16);
NBDWIRE_RECORD_SIZE(option_reply_header, 20);
NBDWIRE_RECORD_SIZE(export_name_reply, 134);
NBDWIRE_RECORD_SIZE(export_name_reply_short, 10);
NBDWIRE_RECORD_SIZE(info_export_payload, 12);
NBDWIRE_RECORD_SIZE(info_block_size_payload, 14);
NBDWIRE_RECORD_SIZE(info_string_prefix, 2);
NBDWIRE_RECORD_SIZE(server_reply_prefix, 4);
NBDWIRE_RECORD_SIZE(meta_context_prefix, 4);
NBDWIRE_RECORD_SIZE(request_header, 28);
NBDWIRE_RECORD_SIZE(extended_request_header, 32);
NBDWIRE_RECORD_SIZE(simple_reply_header, 16);
NBDWIRE_RECORD_SIZE(structured_reply_header, 20);
NBDWIRE_RECORD_SIZE(extended_reply_header, 32);
NBDWIRE_RECORD_SIZE(offset_hole_payload, 12);
NBDWIRE_RECORD_SIZE(error_chunk_prefix, 6);
NBDWIRE_RECORD_SIZE(block_descriptor, 8);
NBDWIRE_RECORD_SIZE(block_descriptor_ext, 16);
NBDWIRE_RECORD_SIZE(legacy_1997_request, 24);
NBDWIRE_RECORD_SIZE(legacy_1997_reply, 16);
#undef NBDWIRE_RECORD_SIZE

/// The largest fixed header either machine ever assembles from split input.
inline constexpr std::size_t max_header_size = sizeof(oldstyle_greeting);

/// The bytes of a record, exactly as they go on the wire.
template <class Record>
[[nodiscard]] constexpr std::array<std::byte, sizeof(Record)> encode(const Record& r) noexcept {
  return std::bit_cast<std::array<std::byte, sizeof(Record)>>(r);
}

/// Reads a record from the first sizeof(Record) bytes of `in`. The caller guarantees the size
/// (machines only call it on a complete stashed header).
template <class Record>
[[nodiscard]] constexpr Record decode(bytes_view in) noexcept {
  if (std::is_constant_evaluated()) {
    std::array<std::byte, sizeof(Record)> a{};
    std::copy_n(in.begin(), sizeof(Record), a.begin());
    return std::bit_cast<Record>(a);
  }
  Record r;
  std::memcpy(&r, in.data(), sizeof(Record));
  return r;
}

/// Reads single fields of a record straight from its wire bytes, with no copy of the record:
/// `record_view<request_header>{in}.get(&request_header::cookie)`. On the transmission hot
/// path this is what the machines use, because GCC does not break decode()'s local copy into
/// fields and every field load then waits on that copy's stores (measured in
/// bench/wire.cpp). `in` must hold at least sizeof(Record) bytes; the view does not own them.
template <class Record>
class record_view {
 public:
  constexpr explicit record_view(bytes_view in) noexcept : in_(in) {}

  template <std::size_t N, class T>
  [[nodiscard]] constexpr T get(be_uint<N, T> Record::*field) const noexcept {
    if (std::is_constant_evaluated()) return (decode<Record>(in_).*field).get();
    return load_be<T>(in_.data() + offset_of(field));
  }

 private:
  // The field's offset in the record, taken from a probe object; the optimiser folds it to a
  // constant once `field` is known, so get() is one load and one byte swap.
  template <std::size_t N, class T>
  [[nodiscard]] static std::size_t offset_of(be_uint<N, T> Record::*field) noexcept {
    static constexpr Record probe{};
    return static_cast<std::size_t>(reinterpret_cast<const std::byte*>(&(probe.*field)) -
                                    reinterpret_cast<const std::byte*>(&probe));
  }

  bytes_view in_;
};

/// Writes a record into `out` and returns the bytes written, or 0 if `out` is too small.
template <class Record>
constexpr std::size_t encode_into(const Record& r, mutable_bytes out) noexcept {
  if (out.size() < sizeof(Record)) return 0;
  if (std::is_constant_evaluated()) {
    const auto b = encode(r);
    std::copy_n(b.begin(), b.size(), out.begin());
  } else {
    std::memcpy(out.data(), &r, sizeof(Record));  // the record's bytes are the wire bytes
  }
  return sizeof(Record);
}

// ---- constructors in protocol terms ------------------------------------------------------

[[nodiscard]] constexpr oldstyle_greeting make_oldstyle_greeting(std::uint64_t size,
                                                                 std::uint16_t tflags) noexcept {
  oldstyle_greeting g{};
  g.passwd.set(magic::nbdmagic);
  g.magic.set(magic::oldstyle);
  g.export_size.set(size);
  g.transmission_flags.set(tflags);
  return g;
}

[[nodiscard]] constexpr newstyle_greeting make_newstyle_greeting(std::uint16_t hflags) noexcept {
  newstyle_greeting g{};
  g.passwd.set(magic::nbdmagic);
  g.magic.set(magic::ihaveopt);
  g.handshake_flags.set(hflags);
  return g;
}

[[nodiscard]] constexpr client_flags_record make_client_flags(std::uint32_t flags) noexcept {
  client_flags_record c{};
  c.flags.set(flags);
  return c;
}

[[nodiscard]] constexpr option_header make_option_header(option o, std::uint32_t length) noexcept {
  option_header h{};
  h.magic.set(magic::ihaveopt);
  h.option.set(static_cast<std::uint32_t>(o));
  h.length.set(length);
  return h;
}

[[nodiscard]] constexpr option_reply_header make_option_reply_header(std::uint32_t opt, reply_type t,
                                                                     std::uint32_t length) noexcept {
  option_reply_header h{};
  h.magic.set(magic::option_reply);
  h.option.set(opt);
  h.type.set(static_cast<std::uint32_t>(t));
  h.length.set(length);
  return h;
}

[[nodiscard]] constexpr export_name_reply make_export_name_reply(std::uint64_t size,
                                                                 std::uint16_t tflags) noexcept {
  export_name_reply r{};
  r.export_size.set(size);
  r.transmission_flags.set(tflags);
  return r;
}

[[nodiscard]] constexpr export_name_reply_short make_export_name_reply_short(std::uint64_t size,
                                                                             std::uint16_t tflags) noexcept {
  export_name_reply_short r{};
  r.export_size.set(size);
  r.transmission_flags.set(tflags);
  return r;
}

[[nodiscard]] constexpr info_export_payload make_info_export(std::uint64_t size,
                                                             std::uint16_t tflags) noexcept {
  info_export_payload p{};
  p.type.set(static_cast<std::uint16_t>(info_type::export_info));
  p.export_size.set(size);
  p.transmission_flags.set(tflags);
  return p;
}

[[nodiscard]] constexpr info_block_size_payload make_info_block_size(std::uint32_t minimum,
                                                                     std::uint32_t preferred,
                                                                     std::uint32_t maximum) noexcept {
  info_block_size_payload p{};
  p.type.set(static_cast<std::uint16_t>(info_type::block_size));
  p.minimum.set(minimum);
  p.preferred.set(preferred);
  p.maximum.set(maximum);
  return p;
}

[[nodiscard]] constexpr request_header make_request(command c, std::uint16_t flags, std::uint64_t cookie,
                                                    std::uint64_t offset, std::uint32_t length) noexcept {
  request_header r{};
  r.magic.set(magic::request);
  r.flags.set(flags);
  r.type.set(static_cast<std::uint16_t>(c));
  r.cookie.set(cookie);
  r.offset.set(offset);
  r.length.set(length);
  return r;
}

[[nodiscard]] constexpr extended_request_header make_extended_request(command c, std::uint16_t flags,
                                                                      std::uint64_t cookie,
                                                                      std::uint64_t offset,
                                                                      std::uint64_t length) noexcept {
  extended_request_header r{};
  r.magic.set(magic::extended_request);
  r.flags.set(flags);
  r.type.set(static_cast<std::uint16_t>(c));
  r.cookie.set(cookie);
  r.offset.set(offset);
  r.length.set(length);
  return r;
}

[[nodiscard]] constexpr simple_reply_header make_simple_reply(nbd_error e, std::uint64_t cookie) noexcept {
  simple_reply_header r{};
  r.magic.set(magic::simple_reply);
  r.error.set(static_cast<std::uint32_t>(e));
  r.cookie.set(cookie);
  return r;
}

[[nodiscard]] constexpr structured_reply_header make_structured_reply(std::uint16_t flags, chunk_type t,
                                                                      std::uint64_t cookie,
                                                                      std::uint32_t length) noexcept {
  structured_reply_header r{};
  r.magic.set(magic::structured_reply);
  r.flags.set(flags);
  r.type.set(static_cast<std::uint16_t>(t));
  r.cookie.set(cookie);
  r.length.set(length);
  return r;
}

[[nodiscard]] constexpr extended_reply_header make_extended_reply(std::uint16_t flags, chunk_type t,
                                                                  std::uint64_t cookie, std::uint64_t offset,
                                                                  std::uint64_t length) noexcept {
  extended_reply_header r{};
  r.magic.set(magic::extended_reply);
  r.flags.set(flags);
  r.type.set(static_cast<std::uint16_t>(t));
  r.cookie.set(cookie);
  r.offset.set(offset);
  r.length.set(length);
  return r;
}

[[nodiscard]] constexpr legacy_1997_request make_legacy_1997_request(command c, std::uint64_t handle,
                                                                     std::uint32_t from,
                                                                     std::uint32_t length) noexcept {
  legacy_1997_request r{};
  r.magic.set(magic::legacy_1997_request);
  r.from.set(from);
  r.length.set(length);
  r.handle.set(handle);
  r.type.set(static_cast<std::uint32_t>(c));
  return r;
}

[[nodiscard]] constexpr legacy_1997_reply make_legacy_1997_reply(std::uint64_t handle,
                                                                 std::uint32_t error) noexcept {
  legacy_1997_reply r{};
  r.magic.set(magic::legacy_1997_reply);
  r.handle.set(handle);
  r.error.set(error);
  return r;
}

NBDWIRE_END_NAMESPACE
}  // namespace nbdwire
