// SPDX-License-Identifier: MIT
// nbdwire-client: what the commands print: strings the server sent (escaped for JSON or for
// a terminal) and the copy progress indicator.
#pragma once

#include <cstdint>      // fixed-width integers
#include <mutex>        // connections of one copy share a progress indicator
#include <string>       // std::string
#include <string_view>  // std::string_view

namespace client_app {

/// `s` as a JSON string literal, quotes included. Valid UTF-8 is kept as it is; each byte
/// that is not part of a valid UTF-8 sequence becomes U+FFFD, so the document stays valid
/// UTF-8. Control characters (C0, DEL and C1) are escaped as \uXXXX, which also makes the
/// result safe to print on a terminal.
std::string json_string(std::string_view s);

/// `s` made safe for a terminal: printable UTF-8 is kept; control characters, backslashes
/// and bytes that are not valid UTF-8 become C-style escapes (\n, \t, \\, \xNN).
std::string terminal_text(std::string_view s);

/// A progress indicator on stderr (copy -p): a bar redrawn in place when stderr is a
/// terminal, otherwise one line per whole percent, as nbdcopy prints them.
class progress {
 public:
  explicit progress(std::uint64_t total, bool wanted);
  void add(std::uint64_t n);
  void finish();

 private:
  void draw();
  std::mutex mu_;
  std::uint64_t total_, done_ = 0;
  bool on_, tty_;
  double last_ = 0;
  int last_percent_ = -1;
};

}  // namespace client_app
