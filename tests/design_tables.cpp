// SPDX-License-Identifier: MIT
// docs/design.md shows both transition tables as they are in the code: every row of
// detail::client_transitions and detail::server_transitions, and nothing else.
#include <doctest/doctest.h>

#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <tuple>

#include "nbdwire/client.hpp"
#include "nbdwire/server.hpp"

namespace {

using row = std::tuple<std::string, std::string, std::string>;

/// Rows "| `from` | `trigger` | `to` | ... |" of the table under `heading`.
std::set<row> doc_rows(const std::string& heading) {
  std::ifstream f(NBDWIRE_DESIGN_MD);
  REQUIRE(f.good());
  std::string line;
  bool in_section = false;
  std::set<row> rows;
  while (std::getline(f, line)) {
    if (line.rfind("## ", 0) == 0) in_section = line == heading;
    if (!in_section || line.rfind("| `", 0) != 0) continue;
    std::string cells[3];
    std::size_t at = 0;
    for (auto& c : cells) {
      const std::size_t a = line.find('`', at), b = line.find('`', a + 1);
      REQUIRE(b != std::string::npos);
      c = line.substr(a + 1, b - a - 1);
      at = b + 1;
    }
    rows.insert({cells[0], cells[1], cells[2]});
  }
  return rows;
}

template <class Table>
std::set<row> code_rows(const Table& t) {
  std::set<row> rows;
  for (const auto& x : t)
    rows.insert({std::string(nbdwire::to_string(x.from)), std::string(nbdwire::to_string(x.on)),
                 std::string(nbdwire::to_string(x.to))});
  return rows;
}

}  // namespace

TEST_CASE("design.md: the client's transition table is the code's") {
  const auto code = code_rows(nbdwire::detail::client_transitions);
  CHECK(code.size() == nbdwire::detail::client_transitions.size());
  CHECK(doc_rows("## The client machine") == code);
}

TEST_CASE("design.md: the server's transition table is the code's") {
  const auto code = code_rows(nbdwire::detail::server_transitions);
  CHECK(code.size() == nbdwire::detail::server_transitions.size());
  CHECK(doc_rows("## The server machine") == code);
}
