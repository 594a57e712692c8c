// SPDX-License-Identifier: MIT
// nbdwire-client info URI --size | --can FEATURE | --is FEATURE (and --cannot, --is-not):
// nbdinfo's scripting queries. --size prints the size in bytes; the others print nothing
// and exit 0 when the answer is yes, 2 when it is no (the other way round for --cannot and
// --is-not), 1 on an error, as nbdinfo does.
#include <algorithm>  // std::transform
#include <cstdio>     // std::printf

#include "commands.hpp"
#include "nbdinfo.hpp"

namespace client_app {

namespace {

/// The answer for FEATURE (spelt as nbdinfo accepts it: any case, '-', '_' or ' ' between
/// words, or none), or nothing for an unknown one.
std::optional<bool> feature(std::string f, const nbdwire::negotiated& n, bool allocation) {
  std::transform(f.begin(), f.end(), f.begin(), [](char c) {
    return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
  });
  std::erase_if(f, [](char c) { return c == '-' || c == '_' || c == ' '; });
  using namespace nbdwire::transmission_flag;
  const bool sr = n.structured_replies || n.extended_headers;
  if (f == "connect" || f == "read") return true;
  if (f == "tls") return n.tls;  // TLS is up on the connection (nbds://)
  if (f == "sr" || f == "structured" || f == "structuredreply" || f == "structuredreplies") return sr;
  if (f == "extended" || f == "extendedheaders" || f == "extendedheader") return n.extended_headers;
  if (f == "blockstatus" || f == "metacontext" || f == "map") return allocation;
  if (f == "readonly") return n.read_only();
  if (f == "write") return !n.read_only();
  if (f == "rotational") return n.has(rotational);
  if (f == "cache") return n.has(send_cache);
  if (f == "df") return n.has(send_df) && sr;
  if (f == "fastzero") return n.has(send_fast_zero) && n.has(send_write_zeroes);
  if (f == "flush") return n.has(send_flush);
  if (f == "fua") return n.has(send_fua);
  if (f == "multiconn") return n.has(can_multi_conn);
  if (f == "trim") return n.has(send_trim);
  if (f == "zero") return n.has(send_write_zeroes);
  return std::nullopt;
}

}  // namespace

int info_query(const options& o) {
  const auto uri = examples::parse_client_uri(o.positional[1]);
  // An unknown feature is an error before any connection is made.
  if (o.can && !feature(*o.can, {}, false)) fail("unknown --can or --is option: " + *o.can);
  // base:allocation is asked for so that --can block-status can be answered.
  auto c = open_connection(uri, o, allocation_context);
  negotiate(*c, uri.export_name);
  const auto n = c->machine().negotiated();
  c->shut_down();
  if (o.size_only) {
    std::printf("%llu\n", static_cast<unsigned long long>(n.export_size));
    return 0;
  }
  bool allocation = false;
  for (std::size_t i = 0; i < n.meta_context_count; ++i) allocation |= n.meta_contexts[i].query_index == 0;
  const bool yes = *feature(*o.can, n, allocation);
  return yes != o.can_negated ? 0 : 2;
}

}  // namespace client_app
