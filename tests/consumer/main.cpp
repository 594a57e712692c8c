// SPDX-License-Identifier: MIT
// Uses nbdwire as a downstream program does (installed, or as a subproject): encodes a request
// header and checks the bytes on the wire, creates a client machine, and prints the version of
// the headers it was built against.
#include <nbdwire/nbdwire.hpp>

#include <cstdio>   // std::fprintf, std::printf: the verdict
#include <string>   // std::to_string: build the version string

int main() {
  namespace nw = nbdwire;
  const auto hdr = nw::make_request(nw::command::read, 0, 0x0102030405060708u, 4096, 512);
  const auto bytes = nw::encode(hdr);

  int failures = 0;
  const auto expect = [&](std::size_t at, unsigned want) {
    if (std::to_integer<unsigned>(bytes[at]) != want) {
      std::fprintf(stderr, "byte %zu: got 0x%02x, want 0x%02x\n", at, std::to_integer<unsigned>(bytes[at]), want);
      ++failures;
    }
  };
  if (bytes.size() != 28) {
    std::fprintf(stderr, "request header is %zu bytes, want 28\n", bytes.size());
    return 1;
  }
  expect(0, 0x25);   // NBD_REQUEST_MAGIC, big-endian
  expect(3, 0x13);
  expect(8, 0x01);   // cookie, most significant byte first
  expect(15, 0x08);
  expect(22, 0x10);  // offset 4096
  expect(26, 0x02);  // length 512

  const auto back = nw::decode<nw::request_header>(nw::bytes_view{bytes});
  if (back.offset.get() != 4096 || back.length.get() != 512 || back.cookie.get() != 0x0102030405060708u) {
    std::fprintf(stderr, "decode does not give back the encoded fields\n");
    ++failures;
  }

  // The machines compile and start in their documented states.
  const nw::client c{};
  if (c.state() != nw::client_state::awaiting_greeting || !c.pending_output().empty()) {
    std::fprintf(stderr, "a new client is not waiting for the greeting\n");
    ++failures;
  }

  const std::string version = std::to_string(NBDWIRE_VERSION_MAJOR) + "." + std::to_string(NBDWIRE_VERSION_MINOR) +
                              "." + std::to_string(NBDWIRE_VERSION_PATCH);
  if (version != CONSUMER_EXPECTED_VERSION) {
    std::fprintf(stderr, "headers say version %s, package says %s\n", version.c_str(), CONSUMER_EXPECTED_VERSION);
    ++failures;
  }
  if (version != NBDWIRE_VERSION_STRING) {
    std::fprintf(stderr, "NBDWIRE_VERSION_STRING is %s, the numbers say %s\n", NBDWIRE_VERSION_STRING, version.c_str());
    ++failures;
  }
  if (failures == 0) std::printf("consumer: nbdwire %s works\n", NBDWIRE_VERSION_STRING);
  return failures == 0 ? 0 : 1;
}
