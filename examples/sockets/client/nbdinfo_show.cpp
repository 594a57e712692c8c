// SPDX-License-Identifier: MIT
// nbdwire-client: an export as nbdinfo prints it, in text and in JSON (libnbd's
// info/show.c): the same keys, in the same order, with the same types.
#include "nbdinfo.hpp"
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

const char* boolean(bool b) { return b ? "true" : "false"; }

/// The flags nbdinfo shows, in its order, as libnbd reports them: DF only with structured
/// replies, FAST_ZERO only with WRITE_ZEROES.
struct flag_line {
  const char* key;
  bool value;
};
std::vector<flag_line> flag_lines(const nbdwire::negotiated& n) {
  using namespace nbdwire::transmission_flag;
  return {
      {"is_rotational", n.has(rotational)},
      {"is_read_only", n.read_only()},
      {"can_cache", n.has(send_cache)},
      {"can_df", n.has(send_df) && n.structured_replies},
      {"can_fast_zero", n.has(send_fast_zero) && n.has(send_write_zeroes)},
      {"can_flush", n.has(send_flush)},
      {"can_fua", n.has(send_fua)},
      {"can_multi_conn", n.has(can_multi_conn)},
      {"can_trim", n.has(send_trim)},
      {"can_zero", n.has(send_write_zeroes)},
  };
}

}  // namespace

std::string connection_header(const nbdwire::negotiated& n, bool json) {
  const bool sr = n.structured_replies || n.extended_headers;
  if (json)
    return std::string("{\n\"protocol\": ") + json_string(protocol_name(n.style)) + ",\n\"TLS\": " + boolean(n.tls) +
           ",\n" +
           "\"structured\": " + boolean(sr) + ",\n";
  return std::string("protocol: ") + protocol_name(n.style) + (n.tls ? " with TLS" : " without TLS") + ", using " +
         (n.extended_headers ? "extended" : sr ? "structured" : "simple") + " packets\n";
}

std::string export_text(const export_report& r, bool json, bool first, bool last) {
  bool unit = false;
  const std::string size_str = nbdinfo_size(r.neg.export_size, &unit);
  const std::string size = std::to_string(r.neg.export_size);
  const bool described = r.description && !r.description->empty();
  std::string s;
  if (!json) {
    s += "export=" + json_string(r.name) + ":\n";
    if (described) s += "\tdescription: " + terminal_text(*r.description) + "\n";
    s += "\texport-size: " + size + (unit ? " (" + size_str + ")" : "") + "\n";
    if (r.content) s += "\tcontent: " + terminal_text(*r.content) + "\n";
    s += "\turi: " + terminal_text(r.uri) + "\n";
    if (r.contexts_shown) {
      s += "\tcontexts:\n";
      for (const auto& ctx : r.contexts) s += "\t\t" + terminal_text(ctx) + "\n";
    }
    for (const auto& f : flag_lines(r.neg)) s += std::string("\t") + f.key + ": " + boolean(f.value) + "\n";
    if (r.block_size) {
      s += "\tblock_size_minimum: " + std::to_string(r.block_size->minimum) + "\n";
      s += "\tblock_size_preferred: " + std::to_string(r.block_size->preferred) + "\n";
      s += "\tblock_size_maximum: " + std::to_string(r.block_size->maximum) + "\n";
    }
    return s;
  }
  if (first) s += "\"exports\": [\n";
  s += "\t{\n\t\"export-name\": " + json_string(r.name) + ",\n";
  if (described) s += "\t\"description\": " + json_string(*r.description) + ",\n";
  if (r.content) s += "\t\"content\": " + json_string(*r.content) + ",\n";
  s += "\t\"uri\": " + json_string(r.uri) + ",\n";
  if (r.contexts_shown) {
    s += "\t\"contexts\": [\n";
    for (std::size_t i = 0; i < r.contexts.size(); ++i)
      s += "\t\t" + json_string(r.contexts[i]) + (i + 1 != r.contexts.size() ? ",\n" : "\n");
    s += "\t],\n";
  }
  for (const auto& f : flag_lines(r.neg)) s += std::string("\t\"") + f.key + "\": " + boolean(f.value) + ",\n";
  if (r.block_size) {
    s += "\t\"block_size_minimum\": " + std::to_string(r.block_size->minimum) + ",\n";
    s += "\t\"block_size_preferred\": " + std::to_string(r.block_size->preferred) + ",\n";
    s += "\t\"block_size_maximum\": " + std::to_string(r.block_size->maximum) + ",\n";
  }
  s += "\t\"export-size\": " + size + ",\n";
  s += "\t\"export-size-str\": " + json_string(size_str) + "\n";
  s += last ? "\t} ]\n" : "\t},\n";
  return s;
}

}  // namespace client_app
