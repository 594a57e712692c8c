// SPDX-License-Identifier: MIT
// nbdwire: compile-time limits. Every buffer inside a machine is sized from these, so
// sizeof(client) and sizeof(server) are fixed and documented (docs/design.md).
// Override any of them with -D before including nbdwire.
#pragma once

#include <cstddef>  // std::size_t
#include <cstdint>  // std::uint32_t

#include "nbdwire/version.hpp"

/// Longest string accepted or sent: export names, descriptions, error messages, context names.
/// The spec caps strings at 4096 bytes ("Conventions"); a longer one is refused before it is
/// buffered.
#ifndef NBDWIRE_MAX_STRING
#define NBDWIRE_MAX_STRING 4096
#endif

/// Requests a client machine keeps in flight at once (its cookie table). The Linux client
/// uses 128 per hardware queue; 64 keeps the table at about 2 KiB.
#ifndef NBDWIRE_MAX_IN_FLIGHT
#define NBDWIRE_MAX_IN_FLIGHT 64
#endif

/// Bytes of the bounded outbox each machine owns for headers and handshake messages.
/// Payloads never pass through it. It must hold the largest single message a machine
/// produces: an option request or reply with two maximal strings.
#ifndef NBDWIRE_OUTBOX_SIZE
#define NBDWIRE_OUTBOX_SIZE (2 * NBDWIRE_MAX_STRING + 512)
#endif

/// Payloads (after a header) the outbox can reserve at once: one per READ reply or WRITE
/// request waiting to be sent, and one more for a READ split into two chunks.
#ifndef NBDWIRE_MAX_PAYLOAD_MARKS
#define NBDWIRE_MAX_PAYLOAD_MARKS (NBDWIRE_MAX_IN_FLIGHT + 1)
#endif

/// Metadata contexts one connection can select (NBD_OPT_SET_META_CONTEXT). A server that
/// selects more than this for a client is a hard error (errc::too_many_meta_contexts).
#ifndef NBDWIRE_MAX_META_CONTEXTS
#define NBDWIRE_MAX_META_CONTEXTS 8
#endif

/// Block descriptors accepted in one BLOCK_STATUS chunk: the spec's SHOULD-limit of 2^20.
/// Descriptors are never buffered (each becomes an `extent` event); the bound only stops a
/// server from streaming an endless chunk.
#ifndef NBDWIRE_MAX_EXTENTS_PER_CHUNK
#define NBDWIRE_MAX_EXTENTS_PER_CHUNK (1u << 20)
#endif

/// Disjoint ranges a client tracks per READ to prove structured chunks neither overlap nor
/// leave gaps. Servers send chunks in ascending order (one range); a reply needing more
/// ranges than this is refused (errc::reply_chunks_too_fragmented).
#ifndef NBDWIRE_MAX_READ_RANGES
#define NBDWIRE_MAX_READ_RANGES 4
#endif

/// Optional parts of the client machine, for firmware that only reads and writes blocks
/// (docs/firmware.md). 0 compiles a part out of nbdwire::client: its options are never sent,
/// calls that need it are refused with errc::feature_not_built, a configuration or hand-over
/// that needs it leaves the machine failed with that code, and a server that uses it anyway
/// breaks the protocol as it would with the feature not negotiated. The server machine is
/// unaffected.
///   NBDWIRE_CLIENT_STRUCTURED_REPLIES  structured replies, extended headers, metadata
///                                      contexts and BLOCK_STATUS: every reply is simple
///   NBDWIRE_CLIENT_STARTTLS            NBD_OPT_STARTTLS: client_tls::off only
///   NBDWIRE_CLIENT_LEGACY_1997         the 1997 framing (handshake_style::legacy_1997)
#ifndef NBDWIRE_CLIENT_STRUCTURED_REPLIES
#define NBDWIRE_CLIENT_STRUCTURED_REPLIES 1
#endif
#ifndef NBDWIRE_CLIENT_STARTTLS
#define NBDWIRE_CLIENT_STARTTLS 1
#endif
#ifndef NBDWIRE_CLIENT_LEGACY_1997
#define NBDWIRE_CLIENT_LEGACY_1997 1
#endif

namespace nbdwire {
NBDWIRE_BEGIN_NAMESPACE

inline constexpr bool client_has_structured_replies = NBDWIRE_CLIENT_STRUCTURED_REPLIES != 0;
inline constexpr bool client_has_starttls = NBDWIRE_CLIENT_STARTTLS != 0;
inline constexpr bool client_has_legacy_1997 = NBDWIRE_CLIENT_LEGACY_1997 != 0;

inline constexpr std::size_t max_string = NBDWIRE_MAX_STRING;
inline constexpr std::size_t max_in_flight = NBDWIRE_MAX_IN_FLIGHT;
inline constexpr std::size_t outbox_size = NBDWIRE_OUTBOX_SIZE;
inline constexpr std::size_t max_payload_marks = NBDWIRE_MAX_PAYLOAD_MARKS;
inline constexpr std::size_t max_meta_contexts = NBDWIRE_MAX_META_CONTEXTS;
inline constexpr std::uint32_t max_extents_per_chunk = NBDWIRE_MAX_EXTENTS_PER_CHUNK;
inline constexpr std::size_t max_read_ranges = NBDWIRE_MAX_READ_RANGES;

/// The conventional payload ceiling: a READ or WRITE of up to 32 MiB SHOULD NOT be taken for
/// a denial of service (spec "Size constraints"). Default maximum payload on both sides.
inline constexpr std::uint32_t default_max_payload = 32u * 1024u * 1024u;

static_assert(max_string >= 256 && max_string <= 65535, "strings must fit a u16 message length");
static_assert(max_in_flight >= 1 && max_in_flight <= 65535);
static_assert(max_meta_contexts >= 1 && max_meta_contexts <= 32, "contexts are tracked in a 32-bit mask");
static_assert(max_read_ranges >= 1);
static_assert(outbox_size >= 2 * max_string + 64, "the outbox must hold one maximal message");

NBDWIRE_END_NAMESPACE
}  // namespace nbdwire
