// SPDX-License-Identifier: MIT
// nbdwire-client: the command line.
#pragma once

#include <cstdint>   // fixed-width integers
#include <optional>  // options given or not
#include <string>    // std::string
#include <vector>    // positional arguments

namespace client_app {

constexpr unsigned max_connections = 16;  // --connections

struct options {
  // The 1997 framing (no handshake): --style legacy1997 --legacy-size SIZE.
  bool legacy = false;
  std::optional<std::uint64_t> legacy_size;

  bool json = false;
  // nbdinfo's queries (info, or no command at all): at most one of them.
  bool size_only = false;              ///< --size: the size in bytes
  std::optional<std::string> can;      ///< --can/--is FEATURE, --cannot/--is-not FEATURE
  bool can_negated = false;            ///< --cannot / --is-not: exit 0 when false, 2 when true
  std::optional<std::string> map;      ///< --map[=CONTEXT]: a metadata context's map
  bool totals = false;                 ///< --totals: the map summed by type
  bool list_all = false;               ///< --list / -L: every export, as info shows one
  std::optional<bool> content;         ///< --content / --no-content: probe the data with file(1)

  // read and write
  std::optional<std::uint64_t> offset, length;
  // copy (and write)
  bool no_flush = false;       ///< skip the FLUSH that ends write and copy-to-URI
  bool flush = false;          ///< --flush: also flush (fsync) a file target
  bool progress = false;       ///< -p / --progress: progress on stderr
  bool target_is_zero = false; ///< --target-is-zero: zero ranges are not written
  unsigned connections = 0;    ///< copies with a multi-conn export: connections to use (0: one per CPU, at most 4)
  unsigned requests = 0;       ///< requests in flight per connection (0: the most, max_window)
  int timeout_ms = 0;          ///< --timeout: no progress from the server this long fails (0: none)
  bool debug = false;          ///< --debug: every state change of each connection's machine on stderr
  // attach
  std::optional<std::uint64_t> dead_conn_timeout_s;  ///< --dead-conn-timeout SECONDS
  std::uint32_t block_size = 0;  ///< --block-size: the device's logical block size (0: the smallest that works)
  bool persist = false;          ///< --persist: reconnect lost connections (NBD_CMD_RECONFIGURE)
  bool foreground = false;       ///< --foreground: --persist without going to the background
  bool read_only = false;        ///< --read-only: a read-only device
  bool ioctl = false;            ///< --ioctl: the ioctl interface, not netlink
  std::vector<std::string> positional;
};

options parse_args(int argc, char** argv);
[[noreturn]] void usage_error(const std::string& msg);
/// Fails with the command's usage unless it got `n` positional arguments (the command included).
void need_args(const options& o, std::size_t n, const char* usage);

}  // namespace client_app
