// SPDX-License-Identifier: MIT
// nbdwire client: the one body decoder alive at a time. An option reply's data and a
// structured chunk's payload are decoded by the codec's streaming decoders (codec/); the
// machine holds them in one union, so its memory is that of the largest (one max_string
// buffer), never one buffer per kind.
#pragma once

#include <cstdint>  // std::uint16_t
#include <new>      // placement new: a decoder built in its union member

#include "nbdwire/codec/chunk.hpp"         // chunk payload decoders
#include "nbdwire/codec/option_reply.hpp"  // option reply decoders

namespace nbdwire {
NBDWIRE_BEGIN_NAMESPACE
namespace detail {

class client_body_decoder {
 public:
  enum class kind : std::uint8_t {
    none, server, info, meta_context, error_reply, offset_data, offset_hole, block_status, error_chunk
  };

  constexpr client_body_decoder() noexcept : u_{} {}

  // Each start_*() replaces the decoder in use; the decoder checks at once what the body's
  // length alone decides (error() is then set).
  void start_server(std::uint64_t n) noexcept {
    set(kind::server);
    ::new (&u_.server) server_reply_decoder{n};
  }
  void start_info(std::uint64_t n) noexcept {
    set(kind::info);
    ::new (&u_.info) info_reply_decoder{n};
  }
  void start_meta_context(std::uint64_t n) noexcept {
    set(kind::meta_context);
    ::new (&u_.meta) meta_context_reply_decoder{n};
  }
  void start_error_reply(std::uint64_t n) noexcept {
    set(kind::error_reply);
    ::new (&u_.err_reply) error_reply_decoder{n};
  }
  void start_offset_data(std::uint64_t n) noexcept {
    set(kind::offset_data);
    ::new (&u_.data) offset_data_decoder{n};
  }
  void start_offset_hole(std::uint64_t n) noexcept {
    set(kind::offset_hole);
    ::new (&u_.hole) offset_hole_decoder{n};
  }
  void start_block_status(std::uint64_t n, bool ext) noexcept {
    set(kind::block_status);
    ::new (&u_.status) block_status_chunk_decoder{n, ext};
  }
  void start_error_chunk(std::uint16_t type, std::uint64_t n) noexcept {
    set(kind::error_chunk);
    ::new (&u_.err_chunk) tolerant_error_chunk_decoder{type, n};
  }

  // A build without structured replies (config.hpp) starts none of their decoders: kind_
  // never names one, and `sr` keeps their code out of the program.
  [[nodiscard]] body_step decode(bytes_view in) noexcept {
    constexpr bool sr = client_has_structured_replies;
    switch (kind_) {
      case kind::server: return u_.server.decode(in);
      case kind::info: return u_.info.decode(in);
      case kind::meta_context: if constexpr (sr) return u_.meta.decode(in); break;
      case kind::error_reply: return u_.err_reply.decode(in);
      case kind::offset_data: if constexpr (sr) return u_.data.decode(in); break;
      case kind::offset_hole: if constexpr (sr) return u_.hole.decode(in); break;
      case kind::block_status: if constexpr (sr) return u_.status.decode(in); break;
      case kind::error_chunk: if constexpr (sr) return u_.err_chunk.decode(in); break;
      case kind::none: break;
    }
    return {0, {.kind = body_item::done}};
  }
  [[nodiscard]] body_errc error() const noexcept {
    constexpr bool sr = client_has_structured_replies;
    switch (kind_) {
      case kind::server: return u_.server.error();
      case kind::info: return u_.info.error();
      case kind::meta_context: if constexpr (sr) return u_.meta.error(); break;
      case kind::error_reply: return u_.err_reply.error();
      case kind::offset_data: if constexpr (sr) return u_.data.error(); break;
      case kind::offset_hole: if constexpr (sr) return u_.hole.error(); break;
      case kind::block_status: if constexpr (sr) return u_.status.error(); break;
      case kind::error_chunk: if constexpr (sr) return u_.err_chunk.error(); break;
      case kind::none: break;
    }
    return body_errc::ok;
  }

 private:
  void set(kind k) noexcept { kind_ = k; }
  // Trivially destructible decoders: constructing one in its member starts its lifetime
  // (in place: no temporary decoder on the stack).
  union storage {
    constexpr storage() noexcept : none{} {}
    char none;
    server_reply_decoder server;
    info_reply_decoder info;
    meta_context_reply_decoder meta;
    error_reply_decoder err_reply;
    offset_data_decoder data;
    offset_hole_decoder hole;
    block_status_chunk_decoder status;
    tolerant_error_chunk_decoder err_chunk;
  } u_;
  kind kind_ = kind::none;
};

}  // namespace detail
NBDWIRE_END_NAMESPACE
}  // namespace nbdwire
