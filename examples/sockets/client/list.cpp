// SPDX-License-Identifier: MIT
// nbdwire-client list URI [--json]: the exports a server offers.
#include <cstdio>   // std::printf
#include <utility>  // std::pair

#include "commands.hpp"
#include "output.hpp"

namespace client_app {

int cmd_list(const options& o) {
  need_args(o, 2, "list URI [--json]");
  if (o.legacy) fail("the 1997 framing has no handshake, so no export list");
  const auto uri = examples::parse_nbd_uri(o.positional[1]);
  auto c = open_connection(uri, o);
  auto& m = c->machine();
  std::vector<std::pair<std::string, std::string>> exports;
  bool listed = false;
  while (!listed) {
    const auto ev = handshake_event(*c);
    switch (ev.kind) {
      case event_kind::greeting:
        if (const auto r = m.list(); !r) {
          if (r.error() == nbdwire::errc::option_needs_fixed_newstyle)
            fail("the server does not use fixed newstyle negotiation, so it cannot list exports");
          fail("cannot send LIST: " + errc_text(r.error()));
        }
        break;
      case event_kind::ready: fail("the server uses oldstyle negotiation, which has no export list");
      case event_kind::export_listed:
        exports.emplace_back(std::string(nbdwire::as_chars(ev.data)), std::string(nbdwire::as_chars(ev.text)));
        break;
      case event_kind::option_done: listed = true; break;
      case event_kind::option_refused: fail("the server refused to list its exports: " + refusal_text(ev));
      default: fail_event(ev, "while listing exports");
    }
  }
  c->shut_down();  // NBD_OPT_ABORT

  if (o.json) {
    std::string j = "{\n  \"exports\": [";
    for (std::size_t i = 0; i < exports.size(); ++i) {
      j += i ? ",\n    " : "\n    ";
      j += "{\"export-name\": " + json_string(exports[i].first) +
           ", \"description\": " + json_string(exports[i].second) + "}";
    }
    j += exports.empty() ? "]\n}\n" : "\n  ]\n}\n";
    std::fputs(j.c_str(), stdout);
  } else {
    for (const auto& [name, desc] : exports) {
      if (desc.empty())
        std::printf("%s\n", name.c_str());
      else
        std::printf("%s\t%s\n", name.c_str(), desc.c_str());
    }
  }
  return 0;
}

}  // namespace client_app
