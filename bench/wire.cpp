// SPDX-License-Identifier: MIT
// Layer 1 records: nbdwire's constexpr encode/decode beside the hand-written memcpy + byte-swap
// code a C program would use, for the three headers that dominate transmission.
#include <nbdwire/wire.hpp>

#include <array>    // std::array: record buffers
#include <bit>      // std::endian: the baseline assumes a little-endian host
#include <cstdint>  // fixed-width integers
#include <cstring>  // std::memcpy: the baseline

#include "common.hpp"

namespace nw = nbdwire;
using nbdwire_bench::fail;

namespace {

static_assert(std::endian::native == std::endian::little, "the baseline swaps unconditionally");

// ---- the baseline: what hand-written code does -------------------------------------------

inline void put16(std::byte* p, std::uint16_t v) { v = __builtin_bswap16(v); std::memcpy(p, &v, 2); }
inline void put32(std::byte* p, std::uint32_t v) { v = __builtin_bswap32(v); std::memcpy(p, &v, 4); }
inline void put64(std::byte* p, std::uint64_t v) { v = __builtin_bswap64(v); std::memcpy(p, &v, 8); }
inline std::uint16_t get16(const std::byte* p) { std::uint16_t v; std::memcpy(&v, p, 2); return __builtin_bswap16(v); }
inline std::uint32_t get32(const std::byte* p) { std::uint32_t v; std::memcpy(&v, p, 4); return __builtin_bswap32(v); }
inline std::uint64_t get64(const std::byte* p) { std::uint64_t v; std::memcpy(&v, p, 8); return __builtin_bswap64(v); }

inline void baseline_encode_request(std::byte* p, std::uint16_t type, std::uint64_t cookie, std::uint64_t offset,
                                    std::uint32_t length) {
  put32(p, nw::magic::request);
  put16(p + 4, 0);
  put16(p + 6, type);
  put64(p + 8, cookie);
  put64(p + 16, offset);
  put32(p + 24, length);
}

inline void baseline_encode_reply(std::byte* p, std::uint32_t error, std::uint64_t cookie) {
  put32(p, nw::magic::simple_reply);
  put32(p + 4, error);
  put64(p + 8, cookie);
}

inline void baseline_encode_legacy(std::byte* p, std::uint32_t type, std::uint64_t handle, std::uint32_t from,
                                   std::uint32_t length) {
  put32(p, nw::magic::legacy_1997_request);
  put32(p + 4, from);
  put32(p + 8, length);
  put64(p + 12, handle);
  put32(p + 20, type);
}

template <std::size_t N>
void set_rates(benchmark::State& state) {
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(N));
}

// ---- compact request header (28 bytes) ---------------------------------------------------

void request_encode_nbdwire(benchmark::State& state) {
  std::uint64_t cookie = 1;
  std::array<std::byte, sizeof(nw::request_header)> b{};  // the caller's buffer, as for the baseline
  for (auto _ : state) {
    benchmark::DoNotOptimize(cookie);
    (void)nw::encode_into(nw::make_request(nw::command::read, 0, cookie, cookie << 12, 4096), b);
    benchmark::DoNotOptimize(b);
    if (b[0] != std::byte{0x25} || b[15] != static_cast<std::byte>(cookie & 0xff) || b[26] != std::byte{0x10}) {
      fail(state, "request header bytes are wrong");
      break;
    }
    ++cookie;
  }
  set_rates<sizeof(nw::request_header)>(state);
}
BENCHMARK(request_encode_nbdwire);

void request_encode_baseline(benchmark::State& state) {
  std::uint64_t cookie = 1;
  std::array<std::byte, 28> b{};
  for (auto _ : state) {
    benchmark::DoNotOptimize(cookie);
    baseline_encode_request(b.data(), 0, cookie, cookie << 12, 4096);
    benchmark::DoNotOptimize(b);
    if (b[0] != std::byte{0x25} || b[15] != static_cast<std::byte>(cookie & 0xff) || b[26] != std::byte{0x10}) {
      fail(state, "request header bytes are wrong");
      break;
    }
    ++cookie;
  }
  set_rates<28>(state);
}
BENCHMARK(request_encode_baseline);

// The input is not const, so ClobberMemory() forces the decoder to read it again each time.
// record_view: the fields read in place, as the machines do.
void request_decode_nbdwire(benchmark::State& state) {
  auto wire = nw::encode(nw::make_request(nw::command::write, nw::command_flag::fua, 0x1122334455667788u,
                                                1u << 20, 65536));
  for (auto _ : state) {
    benchmark::DoNotOptimize(wire.data());
    benchmark::ClobberMemory();
    using rec = nw::request_header;
    const nw::record_view<rec> h{nw::bytes_view{wire}};
    const std::uint32_t magic = h.get(&rec::magic);
    const std::uint16_t flags = h.get(&rec::flags), type = h.get(&rec::type);
    const std::uint64_t cookie = h.get(&rec::cookie), offset = h.get(&rec::offset);
    const std::uint32_t length = h.get(&rec::length);
    benchmark::DoNotOptimize(flags);
    benchmark::DoNotOptimize(offset);
    if (magic != nw::magic::request || type != 1 || cookie != 0x1122334455667788u || length != 65536) {
      fail(state, "request header decoded wrong");
      break;
    }
  }
  set_rates<sizeof(nw::request_header)>(state);
}
BENCHMARK(request_decode_nbdwire);

// decode<T>(): the whole record copied first, then its fields read (not a ratio target).
void request_decode_record_copy(benchmark::State& state) {
  auto wire = nw::encode(nw::make_request(nw::command::write, nw::command_flag::fua, 0x1122334455667788u,
                                                1u << 20, 65536));
  for (auto _ : state) {
    benchmark::DoNotOptimize(wire.data());
    benchmark::ClobberMemory();
    const auto h = nw::decode<nw::request_header>(nw::bytes_view{wire});
    const std::uint32_t magic = h.magic.get();
    const std::uint16_t flags = h.flags.get(), type = h.type.get();
    const std::uint64_t cookie = h.cookie.get(), offset = h.offset.get();
    const std::uint32_t length = h.length.get();
    benchmark::DoNotOptimize(flags);
    benchmark::DoNotOptimize(offset);
    if (magic != nw::magic::request || type != 1 || cookie != 0x1122334455667788u || length != 65536) {
      fail(state, "request header decoded wrong");
      break;
    }
  }
  set_rates<sizeof(nw::request_header)>(state);
}
BENCHMARK(request_decode_record_copy);

void request_decode_baseline(benchmark::State& state) {
  auto wire = nw::encode(nw::make_request(nw::command::write, nw::command_flag::fua, 0x1122334455667788u,
                                                1u << 20, 65536));
  for (auto _ : state) {
    benchmark::DoNotOptimize(wire.data());
    benchmark::ClobberMemory();
    const std::byte* p = wire.data();
    const std::uint32_t magic = get32(p);
    const std::uint16_t flags = get16(p + 4), type = get16(p + 6);
    const std::uint64_t cookie = get64(p + 8), offset = get64(p + 16);
    const std::uint32_t length = get32(p + 24);
    benchmark::DoNotOptimize(flags);
    benchmark::DoNotOptimize(offset);
    if (magic != nw::magic::request || type != 1 || cookie != 0x1122334455667788u || length != 65536) {
      fail(state, "request header decoded wrong");
      break;
    }
  }
  set_rates<28>(state);
}
BENCHMARK(request_decode_baseline);

// ---- simple reply header (16 bytes) ------------------------------------------------------

void reply_encode_nbdwire(benchmark::State& state) {
  std::uint64_t cookie = 1;
  std::array<std::byte, sizeof(nw::simple_reply_header)> b{};
  for (auto _ : state) {
    benchmark::DoNotOptimize(cookie);
    (void)nw::encode_into(nw::make_simple_reply(nw::nbd_error::ok, cookie), b);
    benchmark::DoNotOptimize(b);
    if (b[0] != std::byte{0x67} || b[15] != static_cast<std::byte>(cookie & 0xff)) {
      fail(state, "reply header bytes are wrong");
      break;
    }
    ++cookie;
  }
  set_rates<sizeof(nw::simple_reply_header)>(state);
}
BENCHMARK(reply_encode_nbdwire);

void reply_encode_baseline(benchmark::State& state) {
  std::uint64_t cookie = 1;
  std::array<std::byte, 16> b{};
  for (auto _ : state) {
    benchmark::DoNotOptimize(cookie);
    baseline_encode_reply(b.data(), 0, cookie);
    benchmark::DoNotOptimize(b);
    if (b[0] != std::byte{0x67} || b[15] != static_cast<std::byte>(cookie & 0xff)) {
      fail(state, "reply header bytes are wrong");
      break;
    }
    ++cookie;
  }
  set_rates<16>(state);
}
BENCHMARK(reply_encode_baseline);

void reply_decode_nbdwire(benchmark::State& state) {
  auto wire = nw::encode(nw::make_simple_reply(nw::nbd_error::eio, 0xa1b2c3d4e5f60718u));
  for (auto _ : state) {
    benchmark::DoNotOptimize(wire.data());
    benchmark::ClobberMemory();
    using rec = nw::simple_reply_header;
    const nw::record_view<rec> h{nw::bytes_view{wire}};
    if (h.get(&rec::magic) != nw::magic::simple_reply || h.get(&rec::error) != 5 ||
        h.get(&rec::cookie) != 0xa1b2c3d4e5f60718u) {
      fail(state, "reply header decoded wrong");
      break;
    }
  }
  set_rates<sizeof(nw::simple_reply_header)>(state);
}
BENCHMARK(reply_decode_nbdwire);

void reply_decode_baseline(benchmark::State& state) {
  auto wire = nw::encode(nw::make_simple_reply(nw::nbd_error::eio, 0xa1b2c3d4e5f60718u));
  for (auto _ : state) {
    benchmark::DoNotOptimize(wire.data());
    benchmark::ClobberMemory();
    const std::byte* p = wire.data();
    if (get32(p) != nw::magic::simple_reply || get32(p + 4) != 5 || get64(p + 8) != 0xa1b2c3d4e5f60718u) {
      fail(state, "reply header decoded wrong");
      break;
    }
  }
  set_rates<16>(state);
}
BENCHMARK(reply_decode_baseline);

// ---- Linux 2.1.67 request (24 bytes) -----------------------------------------------------

void legacy_encode_nbdwire(benchmark::State& state) {
  std::uint64_t handle = 1;
  std::array<std::byte, sizeof(nw::legacy_1997_request)> b{};
  for (auto _ : state) {
    benchmark::DoNotOptimize(handle);
    (void)nw::encode_into(nw::make_legacy_1997_request(nw::command::read, handle,
                                                       static_cast<std::uint32_t>(handle << 9), 1024), b);
    benchmark::DoNotOptimize(b);
    if (b[0] != std::byte{0x12} || b[19] != static_cast<std::byte>(handle & 0xff) || b[10] != std::byte{0x04}) {
      fail(state, "legacy request bytes are wrong");
      break;
    }
    ++handle;
  }
  set_rates<sizeof(nw::legacy_1997_request)>(state);
}
BENCHMARK(legacy_encode_nbdwire);

void legacy_encode_baseline(benchmark::State& state) {
  std::uint64_t handle = 1;
  std::array<std::byte, 24> b{};
  for (auto _ : state) {
    benchmark::DoNotOptimize(handle);
    baseline_encode_legacy(b.data(), 0, handle, static_cast<std::uint32_t>(handle << 9), 1024);
    benchmark::DoNotOptimize(b);
    if (b[0] != std::byte{0x12} || b[19] != static_cast<std::byte>(handle & 0xff) || b[10] != std::byte{0x04}) {
      fail(state, "legacy request bytes are wrong");
      break;
    }
    ++handle;
  }
  set_rates<24>(state);
}
BENCHMARK(legacy_encode_baseline);

void legacy_decode_nbdwire(benchmark::State& state) {
  auto wire = nw::encode(nw::make_legacy_1997_request(nw::command::write, 0x0102030405060708u, 0x00100000, 512));
  for (auto _ : state) {
    benchmark::DoNotOptimize(wire.data());
    benchmark::ClobberMemory();
    using rec = nw::legacy_1997_request;
    const nw::record_view<rec> h{nw::bytes_view{wire}};
    if (h.get(&rec::magic) != nw::magic::legacy_1997_request || h.get(&rec::from) != 0x00100000 ||
        h.get(&rec::length) != 512 || h.get(&rec::handle) != 0x0102030405060708u || h.get(&rec::type) != 1) {
      fail(state, "legacy request decoded wrong");
      break;
    }
  }
  set_rates<sizeof(nw::legacy_1997_request)>(state);
}
BENCHMARK(legacy_decode_nbdwire);

void legacy_decode_baseline(benchmark::State& state) {
  auto wire = nw::encode(nw::make_legacy_1997_request(nw::command::write, 0x0102030405060708u, 0x00100000, 512));
  for (auto _ : state) {
    benchmark::DoNotOptimize(wire.data());
    benchmark::ClobberMemory();
    const std::byte* p = wire.data();
    if (get32(p) != nw::magic::legacy_1997_request || get32(p + 4) != 0x00100000 || get32(p + 8) != 512 ||
        get64(p + 12) != 0x0102030405060708u || get32(p + 20) != 1) {
      fail(state, "legacy request decoded wrong");
      break;
    }
  }
  set_rates<24>(state);
}
BENCHMARK(legacy_decode_baseline);

}  // namespace
