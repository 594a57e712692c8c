// SPDX-License-Identifier: MIT
// nbdwire-client: the commands, one file each, and what they share.
#pragma once

#include <cstdint>   // fixed-width integers
#include <optional>  // lengths
#include <utility>   // std::pair
#include <string>    // std::string
#include <vector>    // allocation maps

#include "connection.hpp"
#include "options.hpp"

namespace client_app {

int cmd_info(const options& o);  // info.cpp
int cmd_list(const options& o);  // list.cpp
int cmd_map(const options& o);   // map.cpp
int cmd_read(const options& o);  // read.cpp
int cmd_write(const options& o); // write.cpp
int cmd_copy(const options& o);  // copy.cpp
int cmd_attach(const options& o);   // attach.cpp: an export as /dev/nbdN
int cmd_detach(const options& o);   // attach.cpp
int cmd_devices(const options& o);  // attach.cpp

/// The exports the server lists, name and description, on a connection of their own (info_list.cpp).
std::vector<std::pair<std::string, std::string>> list_exports(const options& o, const examples::client_uri& uri);

/// Export -> export (copy_nbd.cpp): SRC's data and holes onto DST.
void export_to_export(const options& o, const std::string& src, const std::string& dst);

/// One line of the allocation map: `length` bytes at `offset` with base:allocation `flags`.
struct map_extent {
  std::uint64_t offset = 0, length = 0, flags = 0;
};
/// The whole export's map of the context selected as query index 0, adjacent extents of
/// equal type merged (map.cpp). Without the context, fails, or with `missing_is_data`
/// returns the whole export as data.
std::vector<map_extent> context_map(connection& c, bool missing_is_data, const std::string& name);
/// The base:allocation map, the whole export as data when the server has none (map.cpp).
std::vector<map_extent> allocation_map(connection& c);

/// Export -> descriptor (read.cpp): stdout, or with `skip_holes` and `own_file` a regular
/// file this copy created, written by several connections when the export allows multi-conn.
void export_to_fd(const options& o, const std::string& uri_text, std::uint64_t offset,
                  std::optional<std::uint64_t> length, int fd, const std::string& what, bool show_progress,
                  bool skip_holes = false, bool own_file = false);

/// Descriptor -> export (write.cpp): stdin in order, or a regular file in parts.
void fd_to_export(const options& o, const std::string& uri_text, std::uint64_t offset, int fd,
                  const std::string& what, bool show_progress);

/// How many connections a copy uses: one unless the export allows multi-conn (copy.cpp).
unsigned connections_for(const options& o, const nbdwire::negotiated& neg);

/// One more connection to the export for a copy, or null when the server refuses it (copy.cpp).
std::unique_ptr<connection> open_another_connection(const examples::client_uri& uri, const options& o,
                                                    std::uint64_t size);

/// Whether n bytes are all zero (write.cpp).
bool all_zero(const std::byte* p, std::size_t n);

/// The largest request length a transfer uses on `n` (read.cpp).
std::uint32_t chunk_size(const nbdwire::negotiated& n);

/// Fails unless offset and length are multiples of the export's minimum block size (read.cpp).
void check_alignment(const nbdwire::negotiated& n, std::uint64_t offset, std::uint64_t length);

}  // namespace client_app
