// SPDX-License-Identifier: MIT
// nbdwire-client: the commands, one file each, and what they share.
#pragma once

#include <cstdint>   // fixed-width integers
#include <optional>  // lengths
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

/// One line of the allocation map: `length` bytes at `offset` with base:allocation `flags`.
struct map_extent {
  std::uint64_t offset = 0, length = 0, flags = 0;
};
/// The whole export's base:allocation map, adjacent extents with equal flags merged (map.cpp).
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
std::unique_ptr<connection> open_another_connection(const examples::nbd_uri& uri, const options& o,
                                                    std::uint64_t size);

/// The largest request length a transfer uses on `n` (read.cpp).
std::uint32_t chunk_size(const nbdwire::negotiated& n);

/// Fails unless offset and length are multiples of the export's minimum block size (read.cpp).
void check_alignment(const nbdwire::negotiated& n, std::uint64_t offset, std::uint64_t length);

}  // namespace client_app
