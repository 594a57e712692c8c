// SPDX-License-Identifier: MIT
// nbdwire-client list URI [--json]: the exports a server offers, a name (and description)
// a line. A name that is empty or holds anything but printable ASCII (spaces, quotes,
// backslashes, control characters, any byte above 0x7e) is printed as a JSON string, so ""
// is the default export and a bare name never starts with a quote.
#include <cstdio>   // std::printf
#include <utility>  // std::pair

#include "commands.hpp"
#include "output.hpp"

namespace client_app {

namespace {

std::string shown_name(const std::string& name) {
  bool plain = !name.empty();
  for (const char ch : name) {
    const auto c = static_cast<unsigned char>(ch);
    if (c <= ' ' || c == '"' || c == '\\' || c >= 0x7f) plain = false;
  }
  return plain ? name : json_string(name);
}

}  // namespace

int cmd_list(const options& o) {
  need_args(o, 2, "list URI [--json]");
  const auto exports = list_exports(o, examples::parse_client_uri(o.positional[1]));
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
    std::string out;
    for (const auto& [name, desc] : exports) {
      out += shown_name(name);
      if (!desc.empty()) {
        out += '\t';
        out += terminal_text(desc);
      }
      out += '\n';
    }
    std::fputs(out.c_str(), stdout);
  }
  return 0;
}

}  // namespace client_app
