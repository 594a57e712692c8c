// SPDX-License-Identifier: MIT
// Handing a connection to the Linux kernel's NBD driver (kernel.hpp): the handshake a client
// asks for, and what the kernel is told about the export.
#include <doctest/doctest.h>

#include "nbdwire/nbdwire.hpp"
#include "support/pump.hpp"

namespace tf = nbdwire::transmission_flag;
using nbdwire::errc;

namespace {
nbdwire::negotiated plain(std::uint64_t size, std::uint32_t minimum = 1) {
  nbdwire::negotiated n;
  n.export_size = size;
  n.transmission_flags = tf::has_flags | tf::send_flush | tf::send_fua | tf::send_trim;
  n.block_size = {minimum, 4096, 32u << 20};
  return n;
}
}  // namespace

TEST_CASE("kernel: the client configuration asks for nothing the kernel cannot read") {
  nbdwire::client_config base;
  static constexpr std::string_view ctx[] = {"base:allocation"};
  base.meta_contexts = ctx;
  base.tls = nbdwire::client_tls::require;
  base.style = nbdwire::handshake_style::fixed_newstyle;
  constexpr auto k = nbdwire::kernel_client_config();
  static_assert(!k.request_extended_headers && !k.request_structured_replies);
  const auto c = nbdwire::kernel_client_config(base);
  CHECK_FALSE(c.request_extended_headers);
  CHECK_FALSE(c.request_structured_replies);
  CHECK(c.meta_contexts.empty());
  CHECK(c.tls == nbdwire::client_tls::off);
  CHECK(c.no_zeroes == base.no_zeroes);  // the rest is kept
}

TEST_CASE("kernel: a handshake with the kernel's configuration against the server machine ends in simple replies") {
  // A server that offers everything: the client asks for none of it.
  nbdwire::export_config e;
  e.name = "disk";
  e.size = 1u << 20;
  e.transmission_flags = tf::send_flush | tf::send_fua | tf::send_trim | tf::send_write_zeroes | tf::can_multi_conn;
  const nbdwire::export_config exports[] = {e};
  static constexpr std::string_view ctx[] = {"base:allocation"};
  nbdwire::server_config scfg;
  scfg.exports = exports;
  scfg.meta_contexts = ctx;
  nbdwire::server srv(scfg);
  nbdwire::client cli(nbdwire::kernel_client_config());
  nbdwire_test::machine_pair p(cli, srv, 1u << 20);
  p.run();
  REQUIRE(cli.go("disk").has_value());
  p.run();
  REQUIRE(cli.state() == nbdwire::client_state::transmission);
  const auto& n = cli.negotiated();
  CHECK_FALSE(n.structured_replies);
  CHECK_FALSE(n.extended_headers);
  CHECK(n.meta_context_count == 0);
  const auto k = nbdwire::kernel_device_config_for(n);
  REQUIRE(k.has_value());
  CHECK(k.value().size == (1u << 20));
  CHECK(k.value().block_size == 512);
  CHECK((k.value().transmission_flags & tf::can_multi_conn) != 0);
  CHECK((k.value().transmission_flags & tf::send_write_zeroes) != 0);
}

TEST_CASE("kernel: size rounded down to the block size, block size from the server's minimum") {
  SUBCASE("a partial last block is not part of the device") {
    const auto k = nbdwire::kernel_device_config_for(plain(100'001'000));
    REQUIRE(k.has_value());
    CHECK(k.value().size == 100'000'768);
    CHECK(k.value().block_size == 512);
  }
  SUBCASE("--block-size 4096") {
    const auto k = nbdwire::kernel_device_config_for(plain(100'001'000), 4096, 4096);
    REQUIRE(k.has_value());
    CHECK(k.value().size == 99'999'744);
    CHECK(k.value().block_size == 4096);
  }
  SUBCASE("a server minimum of 4096 raises the block size") {
    const auto k = nbdwire::kernel_device_config_for(plain(1u << 20, 4096));
    REQUIRE(k.has_value());
    CHECK(k.value().block_size == 4096);
  }
  SUBCASE("a server minimum above the page size cannot be met") {
    CHECK(nbdwire::kernel_device_config_for(plain(1u << 20, 8192)).error() == errc::kernel_block_size_unsupported);
    CHECK(nbdwire::kernel_device_config_for(plain(1u << 20, 8192), 65536).has_value());
  }
  SUBCASE("a block size that is no power of two, or beyond the page") {
    CHECK(nbdwire::kernel_device_config_for(plain(1u << 20), 4096, 1000).error() == errc::kernel_block_size_unsupported);
    CHECK(nbdwire::kernel_device_config_for(plain(1u << 20), 4096, 256).error() == errc::kernel_block_size_unsupported);
    CHECK(nbdwire::kernel_device_config_for(plain(1u << 20), 4096, 8192).error() == errc::kernel_block_size_unsupported);
  }
  SUBCASE("an export smaller than one block") {
    CHECK(nbdwire::kernel_device_config_for(plain(511)).error() == errc::kernel_export_too_small);
    CHECK(nbdwire::kernel_device_config_for(plain(0)).error() == errc::kernel_export_too_small);
    CHECK(nbdwire::kernel_device_config_for(plain(512)).has_value());
  }
  SUBCASE("a page size that is no power of two is the caller's mistake") {
    CHECK(nbdwire::kernel_device_config_for(plain(1u << 20), 3000).error() == errc::invalid_config);
  }
}

TEST_CASE("kernel: flags pass through; read-only added on request; HAS_FLAGS always") {
  auto n = plain(1u << 20);
  n.transmission_flags = tf::send_flush;  // a server that forgot HAS_FLAGS
  auto k = nbdwire::kernel_device_config_for(n);
  REQUIRE(k.has_value());
  CHECK(k.value().transmission_flags == (tf::has_flags | tf::send_flush));
  k = nbdwire::kernel_device_config_for(n, 4096, 0, true);
  REQUIRE(k.has_value());
  CHECK(k.value().transmission_flags == (tf::has_flags | tf::send_flush | tf::read_only));
}

TEST_CASE("kernel: what the kernel cannot carry is refused with its reason") {
  auto n = plain(1u << 20);
  n.structured_replies = true;
  CHECK(nbdwire::kernel_device_config_for(n).error() == errc::kernel_needs_simple_replies);
  n = plain(1u << 20);
  n.extended_headers = true;
  CHECK(nbdwire::kernel_device_config_for(n).error() == errc::kernel_needs_simple_replies);
  n = plain(1u << 20);
  n.tls = true;
  CHECK(nbdwire::kernel_device_config_for(n).error() == errc::kernel_tls);
  CHECK(nbdwire::category(errc::kernel_needs_simple_replies) == nbdwire::error_category::caller_misuse);
  CHECK_FALSE(nbdwire::is_fatal(errc::kernel_tls));
}
