// SPDX-License-Identifier: MIT
// nbdwire-client info --list URI [--json]: every export the server lists, each shown as
// `info` shows one (nbdinfo --list). `list` (list.cpp) prints names and descriptions only.
#include <cstdio>  // std::fputs

#include "commands.hpp"
#include "nbdinfo.hpp"
#include "output.hpp"

namespace client_app {

std::vector<std::pair<std::string, std::string>> list_exports(const options& o, const examples::client_uri& uri) {
  // Bounds on what a listing keeps (a hostile server can stream replies forever).
  constexpr std::size_t max_listed_exports = 100000, max_listed_bytes = std::size_t{64} << 20;
  std::size_t kept = 0;
  if (o.legacy) fail("the 1997 framing has no handshake, so no export list");
  auto c = open_connection(uri, o);
  auto& m = c->machine();
  std::vector<std::pair<std::string, std::string>> exports;
  for (;;) {
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
        // A server may stream NBD_REP_SERVER without end: what is kept is bounded.
        kept += ev.data.size() + ev.text.size();
        if (exports.size() == max_listed_exports || kept > max_listed_bytes)
          fail("the server listed more than " + std::to_string(max_listed_exports) + " exports or " +
               std::to_string(max_listed_bytes >> 20) + " MiB of names and descriptions; giving up");
        exports.emplace_back(std::string(nbdwire::as_chars(ev.data)), std::string(nbdwire::as_chars(ev.text)));
        break;
      case event_kind::option_done:
        c->shut_down();  // NBD_OPT_ABORT
        return exports;
      case event_kind::option_refused:
        if (examples::tls_required_refusal(ev)) fail(examples::tls_required_text);
        fail("the server refused to list its exports: " + refusal_text(ev));
      default: fail_event(ev, "while listing exports");
    }
  }
}

int info_list(const options& o) {
  const auto uri = examples::parse_client_uri(o.positional[1]);
  const auto exports = list_exports(o, uri);
  // Each export on a connection of its own; one the server will not serve is reported and
  // skipped, and the command then fails, as nbdinfo does.
  bool all_shown = true;
  std::string out;
  std::optional<nbdwire::negotiated> header;
  std::vector<export_report> reports;
  for (const auto& [name, desc] : exports) {
    try {
      export_report r = probe_export(o, uri, name, o.content.value_or(false));
      // As nbdinfo: the description is the one the list gave.
      r.description = desc;
      if (!header) header = r.neg;
      reports.push_back(std::move(r));
    } catch (const examples::failure& f) {
      std::fprintf(stderr, "nbdwire-client: %s for export: %s\n", f.what(), terminal_text(name).c_str());
      all_shown = false;
    }
  }
  if (!header) {
    // The protocol line needs a connection: the one that listed was fixed newstyle.
    header.emplace();
    header->style = nbdwire::handshake_style::fixed_newstyle;
    header->structured_replies = false;
    header->tls = uri.tls;
  }
  out = connection_header(*header, o.json);
  if (o.json && reports.empty()) out += "\"exports\": []\n";
  for (std::size_t i = 0; i < reports.size(); ++i)
    out += export_text(reports[i], o.json, i == 0, i + 1 == reports.size());
  if (o.json) out += "}\n";
  std::fputs(out.c_str(), stdout);
  return all_shown ? 0 : 1;
}

}  // namespace client_app
