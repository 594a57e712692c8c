// SPDX-License-Identifier: MIT
// uri.hpp: every scheme, authorities (user, names, IPv4, IPv6 with zones, ports, vsock
// CIDs), export names and percent-decoding, query parameters, and every refusal.
#include <doctest/doctest.h>

#include <string>
#include <string_view>
#include <vector>

#include "nbdwire/uri.hpp"

using namespace nbdwire;
using namespace std::string_view_literals;

namespace {

uri parse_ok(std::string_view text) {
  const auto r = parse_uri(text);
  INFO(text, " -> ", to_string(r.error()));
  REQUIRE(r.has_value());
  return r.value();
}

uri_errc parse_err(std::string_view text) {
  const auto r = parse_uri(text);
  INFO(text);
  REQUIRE_FALSE(r.has_value());
  return r.error();
}

// Parsed at compile time: the parser is usable in constant expressions.
constexpr auto compile_time = parse_uri("nbds://alice@[fe80::1%25eth0]:10810/my%20disk?tls-verify-peer=0");
static_assert(compile_time.has_value());
static_assert(compile_time.value().transport == uri_transport::tcp && compile_time.value().tls);
static_assert(compile_time.value().host() == "fe80::1%eth0");
static_assert(compile_time.value().port == 10810);
static_assert(compile_time.value().export_name() == "my disk");
static_assert(compile_time.value().user == "alice");
static_assert(compile_time.value().tls_verify_peer == false);
static_assert(parse_uri("nbd://h/%00").error() == uri_errc::nul_character);
static_assert(parse_uri("nbd+unix:///").error() == uri_errc::socket_missing);
static_assert(is_nbd_uri("nbd+vsock:///") && !is_nbd_uri("/dev/sda") && !is_nbd_uri("http://x"));

}  // namespace

TEST_CASE("uri: the six schemes, case-insensitive") {
  struct row {
    std::string_view text;
    uri_transport transport;
    bool tls;
  };
  const row rows[] = {
      {"nbd://h", uri_transport::tcp, false},
      {"nbds://h", uri_transport::tcp, true},
      {"nbd+unix:///?socket=/s", uri_transport::unix_socket, false},
      {"nbds+unix:///?socket=/s", uri_transport::unix_socket, true},
      {"nbd+vsock:///", uri_transport::vsock, false},
      {"nbds+vsock:///", uri_transport::vsock, true},
      {"NBD://h", uri_transport::tcp, false},
      {"Nbds+Unix:///?socket=/s", uri_transport::unix_socket, true},
  };
  for (const auto& r : rows) {
    const uri u = parse_ok(r.text);
    CHECK(u.transport == r.transport);
    CHECK(u.tls == r.tls);
    CHECK(u.wants_tls() == r.tls);
    CHECK(is_nbd_uri(r.text));
  }
  CHECK(parse_err("http://h") == uri_errc::unknown_scheme);
  CHECK(parse_err("nbd+tcp://h") == uri_errc::unknown_scheme);
  CHECK(parse_err("example.com") == uri_errc::no_scheme);
  CHECK(parse_err("") == uri_errc::no_scheme);
  CHECK(parse_err(":x") == uri_errc::no_scheme);
  CHECK_FALSE(is_nbd_uri("disk.img"));
  CHECK_FALSE(is_nbd_uri("nbdx://h"));
}

TEST_CASE("uri: TCP authority, host kinds and ports") {
  uri u = parse_ok("nbd://example.com");
  CHECK(u.host() == "example.com");
  CHECK(std::string_view(u.host_c_str()) == "example.com");
  CHECK(u.host_kind == uri_host_kind::name);
  CHECK(u.port == 10809);
  CHECK(u.tcp_port() == 10809);
  CHECK(u.export_name().empty());
  CHECK(u.user.empty());

  u = parse_ok("nbd://192.168.0.1:1");
  CHECK(u.host_kind == uri_host_kind::ipv4);
  CHECK(u.host() == "192.168.0.1");
  CHECK(u.port == 1);

  u = parse_ok("nbd://256.1.1.1:65535");  // not an IPv4 address: a (numeric-looking) name
  CHECK(u.host_kind == uri_host_kind::name);
  CHECK(u.port == 65535);

  u = parse_ok("nbd://bob@host");
  CHECK(u.user == "bob");
  CHECK(u.host() == "host");
  CHECK_FALSE(u.wants_tls());

  u = parse_ok("nbd://a%40b@ho%2Dst/");  // percent-encoded user (kept raw) and host (decoded)
  CHECK(u.user == "a%40b");
  char buf[8] = {};
  const auto n = uri_decode(u.user, buf);
  REQUIRE(n.has_value());
  CHECK(std::string_view(buf, n.value()) == "a@b");
  CHECK(u.host() == "ho-st");

  u = parse_ok("nbd:///disk");  // no host: the client picks its default
  CHECK(u.host_kind == uri_host_kind::none);
  CHECK(u.host().empty());
  CHECK(u.export_name() == "disk");

  u = parse_ok("nbd:/disk");  // no authority at all
  CHECK(u.host_kind == uri_host_kind::none);
  CHECK(u.export_name() == "disk");

  CHECK(parse_err("nbd://h:0") == uri_errc::port_out_of_range);
  CHECK(parse_err("nbd://h:65536") == uri_errc::port_out_of_range);
  CHECK(parse_err("nbd://h:99999999999999999999999") == uri_errc::port_out_of_range);
  CHECK(parse_err("nbd://h:") == uri_errc::bad_port);
  CHECK(parse_err("nbd://h:-1") == uri_errc::bad_port);
  CHECK(parse_err("nbd://h:1x") == uri_errc::bad_port);
  CHECK(parse_err("nbd://h:+80") == uri_errc::bad_port);
  CHECK(parse_err("nbd://h<x>") == uri_errc::bad_host);
  CHECK(parse_err("nbd://h%zz") == uri_errc::bad_percent_escape);
  CHECK(parse_err("nbd://h%00x") == uri_errc::nul_character);
  CHECK(parse_err("nbd://h x") == uri_errc::invalid_character);
  CHECK(parse_err("nbd://h\tx") == uri_errc::invalid_character);
  CHECK(parse_err("nbd://h/\x7f") == uri_errc::invalid_character);
  CHECK(parse_err("nbd://u%zz@h") == uri_errc::bad_percent_escape);

  // the host bound: uri_max_host bytes, decoded
  const std::string longest(uri_max_host, 'a');
  CHECK(parse_ok("nbd://" + longest).host().size() == uri_max_host);
  CHECK(parse_err("nbd://" + longest + "a") == uri_errc::host_too_long);
  std::string encoded;
  for (std::size_t i = 0; i < uri_max_host; ++i) encoded += "%61";
  CHECK(parse_ok("nbd://" + encoded).host() == longest);
}

TEST_CASE("uri: IPv6 literals and zones") {
  struct row {
    std::string_view text, host;
    std::uint32_t port;
  };
  const row good[] = {
      {"nbd://[::1]", "::1", 10809},
      {"nbd://[::1]:7", "::1", 7},
      {"nbd://[::]/", "::", 10809},
      {"nbd://[2001:db8::8:800:200c:417a]:10810", "2001:db8::8:800:200c:417a", 10810},
      {"nbd://[1:2:3:4:5:6:7:8]", "1:2:3:4:5:6:7:8", 10809},
      {"nbd://[1:2:3:4:5:6:7::]", "1:2:3:4:5:6:7::", 10809},
      {"nbd://[::ffff:192.0.2.1]", "::ffff:192.0.2.1", 10809},
      {"nbd://[1:2:3:4:5:6:1.2.3.4]", "1:2:3:4:5:6:1.2.3.4", 10809},
      {"nbd://[fe80::1%25eth0]", "fe80::1%eth0", 10809},
      {"nbd://[fe80::1%25en%2D1]:5", "fe80::1%en-1", 5},
  };
  for (const auto& r : good) {
    const uri u = parse_ok(r.text);
    CHECK(u.host_kind == uri_host_kind::ipv6);
    CHECK(u.host() == r.host);
    CHECK(u.port == r.port);
  }
  const std::string_view bad[] = {
      "nbd://[]",           "nbd://[1:2:3:4:5:6:7:8:9]", "nbd://[1::2::3]",   "nbd://[:1]",
      "nbd://[1:]",         "nbd://[12345::]",           "nbd://[g::1]",      "nbd://[::1",
      "nbd://[fe80::1%eth0]", "nbd://[fe80::1%25]",      "nbd://[::1.2.3]",   "nbd://[1.2.3.4::]",
      "nbd://[1:2:3:4:5:6:7:1.2.3.4]",
  };
  for (const auto text : bad) CHECK(parse_err(text) == uri_errc::bad_ipv6);
  CHECK(parse_err("nbd://::1") == uri_errc::bad_host);          // bare IPv6 needs brackets
  CHECK(parse_err("nbd://[::1]x") == uri_errc::bad_host);       // junk after ']'
  CHECK(parse_err("nbd://[::1]:") == uri_errc::bad_port);
  CHECK(parse_err("nbd://[::1]:70000") == uri_errc::port_out_of_range);
}

TEST_CASE("uri: export names and percent-decoding") {
  CHECK(parse_ok("nbd://example.com/disk").export_name() == "disk");
  CHECK(parse_ok("nbd://example.com/").export_name().empty());
  CHECK(parse_ok("nbd://example.com").export_name().empty());
  CHECK(parse_ok("nbd://example.com//disk").export_name() == "/disk");
  CHECK(parse_ok("nbd://example.com/hello%20world").export_name() == "hello world");
  CHECK(parse_ok("nbd://h/a%2fb%2Fc/d").export_name() == "a/b/c/d");
  CHECK(parse_ok("nbd://h/%41%62%7e").export_name() == "Ab~");
  CHECK(parse_ok("nbd://h/caf\xc3\xa9").export_name() == "caf\xc3\xa9");  // UTF-8 kept as bytes
  CHECK(parse_ok("nbd://h/%e2%82%ac").export_name() == "\xe2\x82\xac");
  CHECK(parse_ok("nbd://h/x#fragment").export_name() == "x");            // fragment ignored
  CHECK(parse_ok("nbd://h/x?").export_name() == "x");

  CHECK(parse_err("nbd://h/%") == uri_errc::bad_percent_escape);
  CHECK(parse_err("nbd://h/%4") == uri_errc::bad_percent_escape);
  CHECK(parse_err("nbd://h/%4g") == uri_errc::bad_percent_escape);
  CHECK(parse_err("nbd://h/%g4") == uri_errc::bad_percent_escape);
  CHECK(parse_err("nbd://h/a%%41") == uri_errc::bad_percent_escape);
  CHECK(parse_err("nbd://h/%00") == uri_errc::nul_character);            // export names have no NUL
  CHECK(parse_err("nbd://h/a%00b") == uri_errc::nul_character);
  CHECK(parse_err("nbd:disk") == uri_errc::path_not_absolute);

  // bound: max_string decoded bytes, however they were written
  const std::string longest(max_string, 'x');
  CHECK(parse_ok("nbd://h/" + longest).export_name() == longest);
  CHECK(parse_err("nbd://h/" + longest + "x") == uri_errc::export_name_too_long);
  std::string encoded;
  for (std::size_t i = 0; i < max_string; ++i) encoded += "%78";
  CHECK(parse_ok("nbd://h/" + encoded).export_name() == longest);
  CHECK(parse_err("nbd://h/" + encoded + "%78") == uri_errc::export_name_too_long);
}

TEST_CASE("uri: Unix sockets") {
  uri u = parse_ok("nbd+unix:///disk?socket=/tmp/nbd.sock");
  CHECK(u.transport == uri_transport::unix_socket);
  CHECK(u.socket() == "/tmp/nbd.sock");
  CHECK(u.export_name() == "disk");
  CHECK(u.host_kind == uri_host_kind::none);

  u = parse_ok("nbd+unix:///?socket=sock%20dir/s%3F");
  CHECK(u.socket() == "sock dir/s?");
  CHECK(u.export_name().empty());

  u = parse_ok("nbd+unix:/e?socket=s");  // no authority
  CHECK(u.socket() == "s");
  CHECK(u.export_name() == "e");

  u = parse_ok("nbds+unix://alice@/?socket=/tmp/nbd.sock&tls-certificates=certs");  // libnbd's example
  CHECK(u.user == "alice");
  CHECK(u.tls_certificates == "certs");
  CHECK(u.wants_tls());

  u = parse_ok("nbd+unix:///?socket=%00/abstract");  // abstract namespace: NUL first only
  CHECK(u.socket() == "\0/abstract"sv);
  CHECK(parse_err("nbd+unix:///?socket=/a%00b") == uri_errc::nul_character);

  CHECK(parse_err("nbd+unix:///disk") == uri_errc::socket_missing);
  CHECK(parse_err("nbd+unix:///disk?socket=") == uri_errc::socket_missing);
  CHECK(parse_err("nbds+unix:///disk?tls-type=x509") == uri_errc::socket_missing);
  CHECK(parse_err("nbd+unix://h/?socket=/s") == uri_errc::host_not_allowed);
  CHECK(parse_err("nbd+unix://:1/?socket=/s") == uri_errc::host_not_allowed);
  CHECK(parse_err("nbd+unix://[::1]/?socket=/s") == uri_errc::host_not_allowed);
  CHECK(parse_err("nbd+unix:///?socket=/a&socket=/b") == uri_errc::duplicate_parameter);
  CHECK(parse_err("nbd+unix:///?socket=/a%zz") == uri_errc::bad_percent_escape);
  CHECK(parse_err("nbd://h/?socket=/s") == uri_errc::socket_not_allowed);
  CHECK(parse_err("nbd+vsock:///?socket=/s") == uri_errc::socket_not_allowed);

  const std::string longest(uri_max_socket, 's');
  CHECK(parse_ok("nbd+unix:///?socket=" + longest).socket() == longest);
  CHECK(parse_err("nbd+unix:///?socket=" + longest + "s") == uri_errc::socket_too_long);
}

TEST_CASE("uri: vsock CIDs and ports") {
  uri u = parse_ok("nbd+vsock:///");
  CHECK(u.vsock_cid == vsock_cid_host);
  CHECK(u.port == 10809);
  u = parse_ok("nbd+vsock://3/disk");
  CHECK(u.vsock_cid == 3);
  CHECK(u.export_name() == "disk");
  u = parse_ok("nbd+vsock://4294967295:4294967295");
  CHECK(u.vsock_cid == 0xffffffffu);
  CHECK(u.port == 0xffffffffu);
  u = parse_ok("nbd+vsock://:0");  // vsock ports are not TCP's: any 32-bit value
  CHECK(u.vsock_cid == vsock_cid_host);
  CHECK(u.port == 0);
  CHECK(parse_err("nbd+vsock://4294967296") == uri_errc::bad_vsock_cid);
  CHECK(parse_err("nbd+vsock://host") == uri_errc::bad_vsock_cid);
  CHECK(parse_err("nbd+vsock://[::1]") == uri_errc::bad_vsock_cid);
  CHECK(parse_err("nbd+vsock://3:4294967296") == uri_errc::port_out_of_range);
  CHECK(parse_err("nbd+vsock://3:x") == uri_errc::bad_port);
}

TEST_CASE("uri: TLS and other query parameters") {
  const uri u = parse_ok(
      "nbds://h/e?tls-type=psk&tls-hostname=srv%2Eexample&tls-verify-peer=1&tls-psk-file=%2Fkeys%2Fpsk"
      "&tls-certificates=%2Fetc%2Fpki&x-experimental=1&&other");
  CHECK(u.tls_type == "psk");
  CHECK(u.tls_hostname == "srv%2Eexample");
  CHECK(u.tls_verify_peer == true);
  CHECK(u.tls_psk_file == "%2Fkeys%2Fpsk");
  CHECK(u.tls_certificates == "%2Fetc%2Fpki");
  CHECK(u.unknown_parameters == 2);
  CHECK(u.has_tls_parameters());
  CHECK(uri_decoded_size(u.tls_psk_file) == 9);
  char path[16] = {};
  const auto n = uri_decode(u.tls_psk_file, path);
  REQUIRE(n.has_value());
  CHECK(std::string_view(path, n.value()) == "/keys/psk");
  char small[4] = {};
  CHECK(uri_decode(u.tls_psk_file, small).error() == uri_errc::buffer_too_small);

  // every parameter, in order, unknown ones included
  std::vector<std::pair<std::string_view, std::string_view>> seen;
  for (const uri_parameter p : u.parameters()) seen.emplace_back(p.key, p.value);
  REQUIRE(seen.size() == 7);
  CHECK(seen[0] == std::pair{"tls-type"sv, "psk"sv});
  CHECK(seen[5] == std::pair{"x-experimental"sv, "1"sv});
  CHECK(seen[6] == std::pair{"other"sv, ""sv});

  CHECK(parse_ok("nbd://h?tls-verify-peer=0").tls_verify_peer == false);
  CHECK(parse_ok("nbd://h?tls-verify-peer=false").tls_verify_peer == false);
  CHECK(parse_ok("nbd://h?tls-verify-peer=true").tls_verify_peer == true);
  CHECK_FALSE(parse_ok("nbd://h").tls_verify_peer.has_value());
  CHECK(parse_ok("nbd://h?tls-username=bob").has_tls_parameters());  // unknown, but TLS
  CHECK(parse_ok("nbd://h?tls-username=bob").wants_tls());
  CHECK_FALSE(parse_ok("nbd://h?x-a=1").has_tls_parameters());
  CHECK(parse_err("nbd://h?tls-verify-peer=yes") == uri_errc::bad_tls_verify_peer);
  CHECK(parse_err("nbd://h?tls-verify-peer=") == uri_errc::bad_tls_verify_peer);
  CHECK(parse_err("nbd://h?tls-type=x509&tls-type=psk") == uri_errc::duplicate_parameter);
  CHECK(parse_err("nbd://h?tls-hostname=&tls-hostname=a") == uri_errc::duplicate_parameter);
  CHECK(parse_err("nbd://h?tls-verify-peer=1&tls-verify-peer=1") == uri_errc::duplicate_parameter);
  CHECK(parse_err("nbd://h?tls-certificates=%zz") == uri_errc::bad_percent_escape);
  CHECK(parse_err("nbd://h?tls-certificates=a%00") == uri_errc::nul_character);
  CHECK(parse_err("nbd://h?x-unknown=%4") == uri_errc::bad_percent_escape);
  CHECK(parse_err("nbd://h?k%zz=1") == uri_errc::bad_percent_escape);
}

TEST_CASE("uri: the parser fills caller storage and resets it") {
  static uri u;  // as firmware keeps it: static storage
  REQUIRE(parse_uri("nbd://a:1/first?x=1", u) == uri_errc::ok);
  REQUIRE(parse_uri("nbd://b/", u) == uri_errc::ok);
  CHECK(u.host() == "b");
  CHECK(u.port == 10809);
  CHECK(u.export_name().empty());
  CHECK(u.unknown_parameters == 0);
  CHECK(parse_uri("nbd://b:0/", u) == uri_errc::port_out_of_range);
  CHECK(sizeof(uri) <= max_string + 640);  // the documented bound
}

TEST_CASE("uri: every error has a name") {
  for (unsigned e = 0; e <= static_cast<unsigned>(uri_errc::buffer_too_small); ++e)
    CHECK(to_string(static_cast<uri_errc>(e)) != "unknown URI error");
  CHECK(to_string(static_cast<uri_errc>(200)) == "unknown URI error");
}
