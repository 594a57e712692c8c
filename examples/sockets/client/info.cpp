// SPDX-License-Identifier: MIT
// nbdwire-client info URI [--json]: what the server says about an export.
#include <cstdio>  // std::printf

#include "commands.hpp"
#include "output.hpp"

namespace client_app {

namespace {

const char* protocol_name(nbdwire::handshake_style s) {
  switch (s) {
    case nbdwire::handshake_style::fixed_newstyle: return "newstyle-fixed";
    case nbdwire::handshake_style::newstyle: return "newstyle";
    case nbdwire::handshake_style::oldstyle: return "oldstyle";
    case nbdwire::handshake_style::legacy_1997: return "legacy1997";
  }
  return "unknown";
}

}  // namespace

int cmd_info(const options& o) {
  using namespace std::string_literals;
  need_args(o, 2, "info URI [--json]");
  const auto uri = examples::parse_nbd_uri(o.positional[1]);
  auto c = open_connection(uri, o);
  const auto facts = negotiate(*c, uri.export_name, true);
  const auto n = c->machine().negotiated();
  c->shut_down();

  using namespace nbdwire::transmission_flag;
  const struct {
    const char* key;
    bool value;
  } flags[] = {
      {"read-only", n.has(read_only)},     {"can-flush", n.has(send_flush)},
      {"can-fua", n.has(send_fua)},        {"can-trim", n.has(send_trim)},
      {"can-zero", n.has(send_write_zeroes)}, {"can-fast-zero", n.has(send_fast_zero)},
      {"can-cache", n.has(send_cache)},    {"can-multi-conn", n.has(can_multi_conn)},
  };
  if (o.json) {
    std::string j = "{\n";
    j += "  \"export-name\": " + json_string(facts.requested_name) + ",\n";
    j += "  \"export-size\": " + std::to_string(n.export_size) + ",\n";
    j += "  \"transmission-flags\": " + std::to_string(n.transmission_flags) + ",\n";
    for (const auto& f : flags) j += "  \""s + f.key + "\": " + (f.value ? "true" : "false") + ",\n";
    j += "  \"block-size-minimum\": " + std::to_string(n.block_size.minimum) + ",\n";
    j += "  \"block-size-preferred\": " + std::to_string(n.block_size.preferred) + ",\n";
    j += "  \"block-size-maximum\": " + std::to_string(n.block_size.maximum) + ",\n";
    j += "  \"description\": " + (facts.description ? json_string(*facts.description) : "null"s) + ",\n";
    j += "  \"structured-replies\": "s + (n.structured_replies ? "true" : "false") + ",\n";
    j += "  \"extended-headers\": "s + (n.extended_headers ? "true" : "false") + ",\n";
    j += "  \"contexts\": [";
    for (std::size_t i = 0; i < facts.contexts.size(); ++i) j += (i ? ", " : "") + json_string(facts.contexts[i]);
    j += "],\n";
    j += "  \"protocol\": \""s + protocol_name(n.style) + "\"\n}\n";
    std::fputs(j.c_str(), stdout);
  } else {
    std::printf("export-name: %s\n", facts.requested_name.c_str());
    std::printf("protocol: %s\n", protocol_name(n.style));
    std::printf("export-size: %llu (%s)\n", static_cast<unsigned long long>(n.export_size),
                examples::human_size(n.export_size).c_str());
    std::printf("transmission-flags: 0x%04x\n", n.transmission_flags);
    for (const auto& f : flags) std::printf("  %s: %s\n", f.key, f.value ? "yes" : "no");
    std::printf("block-size-minimum: %u\n", n.block_size.minimum);
    std::printf("block-size-preferred: %u\n", n.block_size.preferred);
    std::printf("block-size-maximum: %u\n", n.block_size.maximum);
    if (facts.description) std::printf("description: %s\n", facts.description->c_str());
    std::printf("structured-replies: %s\n", n.structured_replies ? "yes" : "no");
    std::printf("extended-headers: %s\n", n.extended_headers ? "yes" : "no");
    std::printf("contexts:%s\n", facts.contexts.empty() ? " none" : "");
    for (const auto& ctx : facts.contexts) std::printf("  %s\n", ctx.c_str());
  }
  return 0;
}

}  // namespace client_app
