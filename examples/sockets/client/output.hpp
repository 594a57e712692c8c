// SPDX-License-Identifier: MIT
// nbdwire-client: what the commands print: JSON strings and a progress bar.
#pragma once

#include <cstdint>      // fixed-width integers
#include <mutex>        // connections of one copy share a progress bar
#include <string>       // std::string
#include <string_view>  // std::string_view

namespace client_app {

std::string json_string(std::string_view s);

/// A progress bar on stderr, only when stderr is a terminal.
class progress {
 public:
  explicit progress(std::uint64_t total, bool wanted);
  void add(std::uint64_t n);
  void finish();

 private:
  void draw() const;
  std::mutex mu_;
  std::uint64_t total_, done_ = 0;
  bool on_;
  double last_ = 0;
};

}  // namespace client_app
