// SPDX-License-Identifier: MIT
// nbdwire-server: the command line.
#include "options.hpp"

#include <cstdio>       // std::printf
#include <cstdlib>      // std::strtod, std::strtol, std::exit
#include <string_view>  // backend kinds

#include "nbdwire/constants.hpp"
#include "nbdwire/version.hpp"  // NBDWIRE_VERSION_STRING: --version

namespace nbdwire_server {

using examples::fail;

namespace {

[[noreturn]] void usage_error(const std::string& msg) { fail(msg + " (try --help)"); }

void print_usage() {
  std::printf(
      "usage: nbdwire-server [--listen HOST:PORT | --unix PATH | --port N]\n"
      "                      [--style fixed-newstyle|newstyle|oldstyle|legacy1997] [--read-only]\n"
      "                      [--handshake-timeout SECONDS] [--busy-poll USEC] NAME=BACKEND...\n"
      "       nbdwire-server --help | --version\n"
      "BACKEND: memory:SIZE (K/M/G/T binary suffixes) or file:PATH (file or block device).\n"
      "The first export is also the default (empty name). Default listen 127.0.0.1:%u.\n"
      "--version prints the program's name and version.\n",
      nbdwire::default_port);
}

export_entry parse_export(const std::string& arg, bool read_only) {
  // NAME=BACKEND: the '=' is the one before the backend kind, so names may contain '='.
  std::size_t eq = std::string::npos;
  for (std::size_t i = arg.find('='); i != std::string::npos; i = arg.find('=', i + 1)) {
    const std::string_view rest = std::string_view(arg).substr(i + 1);
    if (rest.starts_with("memory:") || rest.starts_with("file:")) {
      eq = i;
      break;
    }
  }
  if (eq == std::string::npos) usage_error("bad export '" + arg + "': expected NAME=memory:SIZE or NAME=file:PATH");
  export_entry e;
  e.name = arg.substr(0, eq);
  e.spec = arg.substr(eq + 1);
  if (e.name.size() > nbdwire::max_string) fail("export name too long: " + e.name.substr(0, 40) + "...");
  if (e.spec.starts_with("memory:")) {
    const auto size = examples::parse_size(std::string_view(e.spec).substr(7));
    if (!size) usage_error("bad memory size in '" + arg + "'");
    e.store = make_memory_backend(*size);
  } else {
    const std::string path = e.spec.substr(5);
    if (path.empty()) usage_error("missing path in '" + arg + "'");
    e.store = make_file_backend(path, read_only);
  }
  return e;
}

}  // namespace

settings parse_args(int argc, char** argv) {
  settings s;
  std::vector<std::string> specs;
  examples::arguments args(argc, argv);
  while (args.next()) {
    const std::string& a = args.current();
    auto value = [&] { return args.value(); };
    if (args.help()) {
      print_usage();
      std::exit(0);
    } else if (a == "--version") {
      std::printf("nbdwire-server %s\n", NBDWIRE_VERSION_STRING);
      std::exit(0);
    } else if (a == "--listen") {
      const std::string v = value();
      const auto e = examples::parse_host_port(v, nbdwire::default_port);
      if (!e) usage_error("bad --listen '" + v + "' (HOST:PORT or [IPv6]:PORT)");
      s.where = *e;
    } else if (a == "--unix") {
      s.where.is_unix = true;
      s.where.path = value();
    } else if (a == "--port") {
      const std::string v = value();
      const auto p = examples::parse_port(v);
      if (!p) usage_error("bad --port '" + v + "'");
      s.where.port = *p;
    } else if (a == "--style") {
      const std::string v = value();
      using hs = nbdwire::handshake_style;
      if (v == "fixed-newstyle") s.style = hs::fixed_newstyle;
      else if (v == "newstyle") s.style = hs::newstyle;
      else if (v == "oldstyle") s.style = hs::oldstyle;
      else if (v == "legacy1997") s.style = hs::legacy_1997;
      else usage_error("unknown --style '" + v + "'");
    } else if (a == "--read-only" || a == "-r") {
      s.read_only = true;
    } else if (a == "--handshake-timeout") {
      const std::string v = value();
      char* end = nullptr;
      const double t = std::strtod(v.c_str(), &end);
      if (v.empty() || *end != '\0' || !(t >= 0) || t > 86400) usage_error("bad --handshake-timeout '" + v + "'");
      s.handshake_timeout = t;
    } else if (a == "--busy-poll") {
      const std::string v = value();
      char* end = nullptr;
      const long us = std::strtol(v.c_str(), &end, 10);
      if (v.empty() || *end != '\0' || us < 0 || us > 1000000) usage_error("bad --busy-poll '" + v + "' (0 to 1000000 microseconds)");
      s.busy_poll_us = us;
    } else if (a.starts_with("-") && a.find('=') == std::string::npos) {
      usage_error("unknown option " + a);
    } else {
      specs.push_back(a);
    }
  }
  if (specs.empty()) usage_error("no export given (NAME=memory:SIZE or NAME=file:PATH)");
  for (const auto& spec : specs) s.exports.push_back(parse_export(spec, s.read_only));
  const bool single = s.style == nbdwire::handshake_style::oldstyle || s.style == nbdwire::handshake_style::legacy_1997;
  if (single && s.exports.size() != 1)
    fail(std::string(nbdwire::to_string(s.style)) + " serves exactly one export; " + std::to_string(s.exports.size()) +
         " given");
  if (s.style == nbdwire::handshake_style::legacy_1997 && s.exports[0].store->size() > 0xffffffffu)
    fail("the 1997 framing addresses less than 4 GiB; the export is " + std::to_string(s.exports[0].store->size()) +
         " bytes");
  return s;
}

}  // namespace nbdwire_server
