// SPDX-License-Identifier: MIT
// nbdwire-client: the command line.
#include "options.hpp"

#include <cstdio>   // std::printf
#include <cstdlib>  // std::exit

#include "../common.hpp"

namespace client_app {

void usage_error(const std::string& msg) { examples::fail(msg + " (try --help)"); }

void need_args(const options& o, std::size_t n, const char* usage) {
  if (o.positional.size() != n) usage_error(std::string("usage: nbdwire-client ") + usage);
}

namespace {

void print_usage() {
  std::printf(
      "usage: nbdwire-client [--style legacy1997 --size SIZE] COMMAND URI [OPTIONS]\n"
      "  info URI [--json]                    export size, flags, block sizes, description\n"
      "  list URI [--json]                    exports offered by the server\n"
      "  map URI [--json]                     allocation map (like nbdinfo --map)\n"
      "  read URI [--offset N] [--length N]   export data to stdout\n"
      "  write URI [--offset N] [--no-flush]  stdin to the export (then FLUSH)\n"
      "  copy SRC DST [--connections N]       URI to file or file to URI ('-' = stdin/stdout);\n"
      "                                       between a file and an export with multi-conn,\n"
      "                                       over N connections at once (default: one per\n"
      "                                       CPU, at most 4)\n"
      "URI: nbd://HOST[:PORT][/EXPORT] or nbd+unix:///EXPORT?socket=PATH\n"
      "SIZE and N accept K, M, G, T (binary) suffixes.\n");
}

std::uint64_t size_arg(const std::string& opt, const std::string& v) {
  const auto s = examples::parse_size(v);
  if (!s) usage_error("bad value for " + opt + ": '" + v + "'");
  return *s;
}

}  // namespace

options parse_args(int argc, char** argv) {
  options o;
  for (examples::arguments args(argc, argv); args.next();) {
    const std::string& a = args.current();
    const auto value = [&] { return args.value(); };
    if (args.help()) {
      print_usage();
      std::exit(0);
    } else if (a == "--style") {
      // fixed newstyle, newstyle and oldstyle are told apart by the server's greeting.
      const std::string s = value();
      if (s == "legacy1997")
        o.legacy = true;
      else if (s != "fixed-newstyle" && s != "newstyle" && s != "oldstyle")
        usage_error("unknown --style '" + s + "'");
    } else if (a == "--size") {
      o.legacy_size = size_arg(a, value());
    } else if (a == "--json") {
      o.json = true;
    } else if (a == "--offset") {
      o.offset = size_arg(a, value());
    } else if (a == "--length") {
      o.length = size_arg(a, value());
    } else if (a == "--connections") {
      const std::uint64_t n = size_arg(a, value());
      if (n < 1 || n > max_connections) usage_error("--connections takes 1 to " + std::to_string(max_connections));
      o.connections = static_cast<unsigned>(n);
    } else if (a == "--no-flush") {
      o.no_flush = true;
    } else if (a.size() > 1 && a[0] == '-' && a != "-") {
      usage_error("unknown option " + a);
    } else {
      o.positional.push_back(a);
    }
  }
  if (o.legacy && !o.legacy_size) usage_error("--style legacy1997 needs --size");
  if (!o.legacy && o.legacy_size) usage_error("--size is only for --style legacy1997");
  return o;
}

}  // namespace client_app
