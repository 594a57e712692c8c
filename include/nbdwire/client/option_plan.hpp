// SPDX-License-Identifier: MIT
// nbdwire client: the option plan of go(), info() and list_meta_context() ("Option haggling":
// one option at a time). A plan is the preliminaries the connection still needs, in this
// order, then the caller's option:
//   NBD_OPT_EXTENDED_HEADERS   once per connection (client_config::request_extended_headers)
//   NBD_OPT_STRUCTURED_REPLY   once, unless structured replies are on already
//   NBD_OPT_SET_META_CONTEXT   go() only, with client_config::meta_contexts, structured replies on
//   the caller's option        GO, INFO or LIST_META_CONTEXT
// Which step is outstanding is the machine's state (client_transitions); the plan keeps only
// what the steps send (the name, the info requests, the queries) and which preliminaries
// were already asked on this connection. Option requests are written by the codec's
// encoders (codec/option_request.hpp).
#pragma once

#include <array>        // std::array: info request list
#include <cstdint>      // fixed-width integers
#include <span>         // std::span: queries
#include <string_view>  // names

#include "nbdwire/codec/option_request.hpp"  // encode_info_request, encode_meta_context_request, encode_export_name
#include "nbdwire/detail/outbox.hpp"         // body_buffer
#include "nbdwire/wire.hpp"                  // option_header
#include "nbdwire/client/states.hpp"         // client_config

namespace nbdwire {
NBDWIRE_BEGIN_NAMESPACE
namespace detail {

/// One option request as the outbox writes it: header, then the body the codec encodes.
struct option_request_out {
  option opt = option::abort;
  std::string_view name{};
  std::uint32_t info_requests = 0;                 ///< INFO / GO: info_request bits
  std::span<const std::string_view> queries{};     ///< LIST / SET_META_CONTEXT

  /// The NBD_INFO_* items `info_requests` names, in wire order.
  [[nodiscard]] std::size_t infos(std::array<info_type, 3>& out) const noexcept {
    std::size_t n = 0;
    for (auto t : {info_type::name, info_type::description, info_type::block_size})
      if (info_requests & (1u << static_cast<unsigned>(t))) out[n++] = t;
    return n;
  }
  /// Body length (option data), or encode error. Large bodies (many queries) are refused
  /// with encode_body_too_long.
  [[nodiscard]] encode_result body(mutable_bytes out) const noexcept {
    switch (opt) {
      case option::go:
      case option::info: {
        std::array<info_type, 3> t{};
        const std::size_t n = infos(t);
        return encode_info_request(out, name, std::span<const info_type>{t.data(), n});
      }
      case option::list_meta_context:
      case option::set_meta_context:
        if constexpr (!client_has_structured_replies) return {0, 0, body_errc::encode_body_too_long};  // never sent
        return encode_meta_context_request(out, name, queries);
      case option::export_name: return encode_export_name(out, name);
      default: return {};
    }
  }
  /// Header plus body bytes; 0 when the arguments cannot be encoded.
  [[nodiscard]] std::size_t size() const noexcept {
    const encode_result r = body({});
    if (r.error != body_errc::ok && r.error != body_errc::buffer_too_small) return 0;
    return sizeof(option_header) + r.required;
  }
};

/// outbox::put_record() hook: writes header and body into `out` (checked with size()).
inline std::size_t encode_into(const option_request_out& o, mutable_bytes out) noexcept {
  const encode_result r = o.body(out.subspan(sizeof(option_header)));
  if (!r.ok()) return 0;
  nbdwire::encode_into(make_option_header(o.opt, static_cast<std::uint32_t>(r.written)), out);
  return sizeof(option_header) + r.written;
}

class option_plan {
 public:
  /// Starts a plan for `final`. The name is copied; `queries` stay the caller's.
  void begin(option final, std::string_view name, std::uint32_t requests,
             std::span<const std::string_view> queries) noexcept {
    final_ = final;
    requests_ = requests;
    queries_ = queries;
    name_.clear();
    name_.fill(as_bytes(name), name.size());
  }

  /// The option to send after the step `done` of this plan (negotiating: none yet):
  /// the first preliminary still needed that comes after it, else the caller's option.
  [[nodiscard]] option next(client_state done, const client_config& cfg, const negotiated& n) const noexcept {
    const int at = done == client_state::awaiting_ext_headers_reply || done == client_state::ext_headers_reply_data ? 1
                   : done == client_state::awaiting_sr_reply || done == client_state::sr_reply_data             ? 2
                   : done == client_state::awaiting_set_meta_reply || done == client_state::set_meta_reply_data ? 3
                                                                                                              : 0;
    if constexpr (!client_has_structured_replies) return final_;  // no preliminaries in this build
    if (at < 1 && cfg.request_extended_headers && !asked_ext_) return option::extended_headers;
    if (at < 2 && cfg.request_structured_replies && !asked_sr_ && !n.structured_replies)
      return option::structured_reply;
    // SET_META_CONTEXT MUST NOT precede structured replies.
    if (at < 3 && final_ == option::go && !cfg.meta_contexts.empty() && n.structured_replies)
      return option::set_meta_context;
    return final_;
  }

  /// The request for option `o` of this plan.
  [[nodiscard]] option_request_out request(option o, const client_config& cfg) const noexcept {
    switch (o) {
      case option::extended_headers:
      case option::structured_reply: return {o};
      case option::set_meta_context: return {o, name(), 0, cfg.meta_contexts};
      case option::list_meta_context: return {o, name(), 0, queries_};
      default: return {o, name(), requests_, {}};
    }
  }
  /// Notes that `o` was sent (the preliminaries are asked once per connection).
  void sent(option o) noexcept {
    if (o == option::extended_headers) asked_ext_ = true;
    if (o == option::structured_reply) asked_sr_ = true;
  }

  /// LIST has no plan: the name buffer holds the export name of the NBD_REP_SERVER reply
  /// being decoded until its description arrives.
  void hold_name(bytes_view name) noexcept {
    name_.clear();
    name_.fill(name, name.size());
  }

  [[nodiscard]] std::string_view name() const noexcept { return as_chars(name_.view()); }

 private:
  body_buffer<max_string> name_{};
  std::span<const std::string_view> queries_{};
  std::uint32_t requests_ = 0;
  option final_ = option::go;
  bool asked_ext_ = false, asked_sr_ = false;  ///< connection history: never asked twice
};

}  // namespace detail
NBDWIRE_END_NAMESPACE
}  // namespace nbdwire
