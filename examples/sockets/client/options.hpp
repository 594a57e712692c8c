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
  bool legacy = false;
  std::optional<std::uint64_t> legacy_size;
  bool json = false;
  std::optional<std::uint64_t> offset, length;
  bool no_flush = false;     ///< skip the FLUSH that ends write and copy-to-URI
  unsigned connections = 0;  ///< copies with a multi-conn export: connections to use (0: one per CPU, at most 4)
  std::vector<std::string> positional;
};

options parse_args(int argc, char** argv);
[[noreturn]] void usage_error(const std::string& msg);
/// Fails with the command's usage unless it got `n` positional arguments (the command included).
void need_args(const options& o, std::size_t n, const char* usage);

}  // namespace client_app
