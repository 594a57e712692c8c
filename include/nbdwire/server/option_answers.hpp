// SPDX-License-Identifier: MIT
// nbdwire server: the option replies the handshake queues ("Option reply types"), each body
// encoded by the codec (codec/option_reply.hpp) straight into the outbox. Every writer
// checks room first and changes nothing when the reply does not fit, so an answer can wait
// for the caller to drain the outbox (the answering_option state) and be retried.
//
// LIST and LIST_/SET_META_CONTEXT answers are one reply per export or context, then ACK;
// they stream as the outbox drains, and an answer_cursor says where the answer continues.
#pragma once

#include <cstddef>      // std::size_t
#include <cstdint>      // fixed-width integers
#include <span>         // the offered contexts
#include <string_view>  // names, messages

#include "nbdwire/codec/option_reply.hpp"
#include "nbdwire/detail/outbox.hpp"
#include "nbdwire/server/config.hpp"
#include "nbdwire/wire.hpp"

namespace nbdwire {
NBDWIRE_BEGIN_NAMESPACE
namespace detail {

/// One option reply: the header, then a body of `body_size` bytes that `encode` writes.
/// False (nothing queued) when the outbox has no room for both.
template <class Encode>
[[nodiscard]] bool put_option_reply(outbox& out, std::uint32_t opt, reply_type t, std::size_t body_size,
                                    const Encode& encode) noexcept {
  if (!out.room_for(sizeof(option_reply_header) + body_size)) return false;
  // The body goes in after the header's place; the header then says how long it came out.
  const encode_result r = encode(out.writable().subspan(sizeof(option_reply_header)));
  out.put_record(make_option_reply_header(opt, t, static_cast<std::uint32_t>(r.written)));
  out.commit(r.written);
  return true;
}

/// NBD_REP_ACK (no message), or an NBD_REP_ERR_* with `message` as its data.
[[nodiscard]] inline bool put_simple_reply(outbox& out, std::uint32_t opt, reply_type t,
                                           std::string_view message) noexcept {
  return put_option_reply(out, opt, t, static_cast<std::size_t>(error_reply_size(message)),
                          [&](mutable_bytes b) { return encode_error_reply(b, message); });
}

/// Where a streamed answer continues: the next export (LIST) or context (META_CONTEXT) to
/// consider. The answer's own progress, as a body decoder has its position; the protocol
/// state is answering_option throughout.
struct answer_cursor {
  std::size_t next = 0;
};

/// "NBD_OPT_LIST": one NBD_REP_SERVER per export. True once all are queued (ACK is the
/// caller's), false while the outbox needs draining.
[[nodiscard]] inline bool put_export_list(outbox& out, std::uint32_t opt, std::span<const export_config> exports,
                                          answer_cursor& at, bool hide_tls_only) noexcept {
  for (; at.next < exports.size(); ++at.next) {
    const export_config& e = exports[at.next];
    if (hide_tls_only && e.tls_only) continue;  // SELECTIVETLS before TLS: "MAY" hide them
    if (!put_option_reply(out, opt, reply_type::server, static_cast<std::size_t>(server_reply_size(e.name, e.description)),
                          [&](mutable_bytes b) { return encode_server_reply(b, e.name, e.description); }))
      return false;
  }
  return true;
}

/// "NBD_OPT_LIST_META_CONTEXT" / "NBD_OPT_SET_META_CONTEXT": one NBD_REP_META_CONTEXT per
/// context in `selected` (bit i = context i). LIST ids SHOULD be 0 and are disregarded;
/// SET ids are the index of the context. True once all are queued (ACK is the caller's).
[[nodiscard]] inline bool put_meta_contexts(outbox& out, std::uint32_t opt, std::span<const std::string_view> contexts,
                                            std::uint32_t selected, bool set, answer_cursor& at) noexcept {
  for (; at.next < contexts.size(); ++at.next) {
    if (!(selected & (1u << at.next))) continue;
    const std::string_view name = contexts[at.next];
    const auto id = set ? static_cast<std::uint32_t>(at.next) : 0u;
    if (!put_option_reply(out, opt, reply_type::meta_context, static_cast<std::size_t>(meta_context_reply_size(name)),
                          [&](mutable_bytes b) { return encode_meta_context_reply(b, id, name); }))
      return false;
  }
  return true;
}

/// Outbox room an INFO/GO answer takes at most: its four NBD_REP_INFO replies, and the ACK
/// or error that ends it (with a message of at most 64 bytes).
[[nodiscard]] inline std::size_t info_answer_room(const export_config& e) noexcept {
  return 4 * sizeof(option_reply_header) + info_export_size + info_block_size_size + 4 + e.name.size() +
         e.description.size() + 64;
}

/// "NBD_OPT_INFO" / "NBD_OPT_GO": NBD_INFO_EXPORT, NAME and DESCRIPTION when asked for, and
/// NBD_INFO_BLOCK_SIZE always (harmless when not asked for, and it precedes
/// ERR_BLOCK_SIZE_REQD as it SHOULD). The caller made sure info_answer_room() fits.
inline void put_info_items(outbox& out, std::uint32_t opt, const export_config& e, std::uint16_t flags,
                           bool name, bool description) noexcept {
  (void)put_option_reply(out, opt, reply_type::info, info_export_size,
                         [&](mutable_bytes b) { return encode_info_export(b, e.size, flags); });
  if (name)
    (void)put_option_reply(out, opt, reply_type::info, static_cast<std::size_t>(info_string_size(e.name)),
                           [&](mutable_bytes b) { return encode_info_string(b, info_type::name, e.name); });
  if (description)
    (void)put_option_reply(out, opt, reply_type::info, static_cast<std::size_t>(info_string_size(e.description)),
                           [&](mutable_bytes b) { return encode_info_string(b, info_type::description, e.description); });
  (void)put_option_reply(out, opt, reply_type::info, info_block_size_size,
                         [&](mutable_bytes b) { return encode_info_block_size(b, e.block_size); });
}

}  // namespace detail
NBDWIRE_END_NAMESPACE
}  // namespace nbdwire
