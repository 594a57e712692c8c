// SPDX-License-Identifier: MIT
// nbdwire-client: what `info` learns about an export, and how nbdinfo prints it.
#pragma once

#include <optional>  // facts a server may not send
#include <string>    // std::string
#include <vector>    // contexts

#include "connection.hpp"

namespace client_app {

/// One export as nbdinfo shows it.
struct export_report {
  std::string name;  ///< the server's canonical name (NBD_INFO_NAME), else the one asked for
  std::optional<std::string> description;
  std::optional<std::string> content;  ///< file(1)'s words for the first 8 KiB
  std::string uri;
  bool contexts_shown = false;  ///< the server answered LIST_META_CONTEXT
  std::vector<std::string> contexts;
  nbdwire::negotiated neg{};
  std::optional<nbdwire::block_size_constraints> block_size;  ///< only as the server sent them
};

/// Connects to export `name` at `uri`, asks for everything (GO with all INFO requests,
/// LIST_META_CONTEXT), reads the first 8 KiB for file(1) when `probe_content`, and
/// disconnects.
export_report probe_export(const options& o, const examples::client_uri& uri, const std::string& name,
                           bool probe_content);

/// The URI of export `name` on the server `uri` names, as libnbd's nbd_get_uri() makes it.
std::string export_uri(const examples::client_uri& uri, const std::string& name);

/// nbdinfo's first lines: the handshake of the connection (text), or the top-level keys
/// before "exports" (JSON, including the opening brace).
std::string connection_header(const nbdwire::negotiated& n, bool json);
/// One export in nbdinfo's layout; `first` and `last` place it in the "exports" array.
std::string export_text(const export_report& r, bool json, bool first, bool last);

/// nbdinfo's human size: the largest binary unit that divides the size exactly ("1M"),
/// and whether a unit was used.
std::string nbdinfo_size(std::uint64_t size, bool* unit = nullptr);

int info_list(const options& o);   // info --list (info_list.cpp)
int info_query(const options& o);  // info --size, --can, --is (query.cpp)

}  // namespace client_app
