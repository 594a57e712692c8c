// SPDX-License-Identifier: MIT
// nbdwire-server: the command line.
#include "options.hpp"

#include <cstdio>       // std::printf
#include <cstdlib>      // std::strtod, std::strtol, std::exit
#include <optional>     // --port
#include <string_view>  // backend kinds

#include "nbdwire/constants.hpp"
#include "nbdwire/version.hpp"  // NBDWIRE_VERSION_STRING: --version

namespace nbdwire_server {

using examples::fail;

namespace {

[[noreturn]] void usage_error(const std::string& msg) { fail(msg + " (try --help)"); }

void print_usage() {
  std::printf(
      "usage: nbdwire-server [--listen HOST:PORT]... [--unix PATH]... [--port N]\n"
      "                      [--style fixed-newstyle|newstyle|oldstyle|legacy1997] [--read-only]\n"
      "                      [--max-connections N] [--pidfile FILE] [-v|--verbose] [--debug]\n"
      "                      [--handshake-timeout SECONDS] [--shutdown-timeout SECONDS]\n"
      "                      [--threads N]\n"
      "                      [--tls=off|on|require] [--tls-certificates=DIR | --tls-psk=FILE]\n"
      "                      [--tls-verify-peer] [--busy-poll USEC] [--device /dev/nbdN [--ioctl]]\n"
      "                      NAME=BACKEND[,read-only][,tls-only][,description=TEXT]...\n"
      "       nbdwire-server --help | --version\n"
      "BACKEND: memory:SIZE (K/M/G/T binary suffixes) or file:PATH (file or block device).\n"
      "  ,read-only serves that export read-only; ,tls-only (with --tls=on) only once TLS is up;\n"
      "  ,description=TEXT (the rest of the argument) is sent to clients that ask.\n"
      "--tls=on offers TLS (STARTTLS), --tls=require insists on it; the credentials are\n"
      "--tls-certificates=DIR (ca-cert.pem, server-cert.pem, server-key.pem) or --tls-psk=FILE\n"
      "(username:hexkey lines, as psktool writes); --tls-verify-peer requires a client\n"
      "certificate signed by DIR/ca-cert.pem. TLS 1.2 and 1.3 only.\n"
      "The first export is also the default (empty name); names must be unique.\n"
      "--listen and --unix may be repeated; without either, sockets passed by systemd socket\n"
      "activation (LISTEN_FDS) are used, else 127.0.0.1:%u (--port changes the port).\n"
      "--max-connections N serves at most N clients at once; others wait to be accepted.\n"
      "--threads N runs N event loops on N threads (default: one per CPU); each connection is\n"
      "served by one loop, and a new one goes to the loop serving the fewest.\n"
      "--pidfile FILE is written once the server listens. -v logs each connection to stderr;\n"
      "--debug also logs every state change of each connection's protocol machine.\n"
      "SIGTERM or SIGINT: new requests get NBD_ESHUTDOWN, requests in flight are answered, and\n"
      "connections still open after --shutdown-timeout seconds (default 5) are closed; file\n"
      "exports are flushed. A second signal stops at once.\n"
      "--device /dev/nbdN serves the one export to this machine's kernel instead of listening:\n"
      "it appears as that block device (root; the nbd module loaded), through netlink, or the\n"
      "ioctl interface with --ioctl. SIGTERM or SIGINT disconnects the device, then flushes.\n"
      "--version prints the program's name and version.\n",
      nbdwire::default_port);
}

/// Splits the per-export options off "BACKEND[,read-only][,description=TEXT]": the backend
/// ends at the first ',' followed by an option name; description= takes the rest.
void split_export_options(export_entry& e, const std::string& arg) {
  for (std::size_t comma = e.spec.find(','); comma != std::string::npos; comma = e.spec.find(',', comma + 1)) {
    const std::string_view rest = std::string_view(e.spec).substr(comma + 1);
    if (!rest.starts_with("read-only") && !rest.starts_with("tls-only") && !rest.starts_with("description=")) continue;
    std::string_view opts = rest;
    while (!opts.empty()) {
      if (opts.starts_with("description=")) {
        e.description = std::string(opts.substr(12));
        if (e.description.size() > nbdwire::max_string) fail("export description too long in '" + arg + "'");
        break;
      }
      const std::size_t next = opts.find(',');
      const std::string_view opt = opts.substr(0, next);
      if (opt == "read-only") e.read_only = true;
      else if (opt == "tls-only") e.tls_only = true;
      else usage_error("unknown export option '" + std::string(opt) + "' in '" + arg + "'");
      opts = next == std::string_view::npos ? std::string_view{} : opts.substr(next + 1);
    }
    e.spec.resize(comma);
    return;
  }
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
  split_export_options(e, arg);
  e.read_only = e.read_only || read_only;
  if (e.name.size() > nbdwire::max_string) fail("export name too long: " + e.name.substr(0, 40) + "...");
  if (e.spec.starts_with("memory:")) {
    const auto size = examples::parse_size(std::string_view(e.spec).substr(7));
    if (!size) usage_error("bad memory size in '" + arg + "'");
    e.store = make_memory_backend(*size);
  } else {
    const std::string path = e.spec.substr(5);
    if (path.empty()) usage_error("missing path in '" + arg + "'");
    e.store = make_file_backend(path, e.read_only);
  }
  return e;
}

}  // namespace

settings parse_args(int argc, char** argv) {
  settings s;
  std::vector<std::string> specs;
  std::optional<std::uint16_t> port;  // --port: the default listener's port
  bool tls_verify = false;            // --tls-verify-peer given
  s.tls_settings.server = true;
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
      const auto e = examples::parse_host_port(v, port ? *port : nbdwire::default_port);
      if (!e) usage_error("bad --listen '" + v + "' (HOST:PORT or [IPv6]:PORT)");
      s.listeners.push_back(*e);
    } else if (a == "--unix") {
      examples::endpoint e;
      e.is_unix = true;
      e.path = value();
      if (e.path.empty()) usage_error("empty --unix path");
      s.listeners.push_back(e);
    } else if (a == "--port") {
      const std::string v = value();
      port = examples::parse_port(v);
      if (!port) usage_error("bad --port '" + v + "'");
    } else if (a == "--max-connections" || a == "-e") {
      const std::string v = value();
      char* end = nullptr;
      const long n = std::strtol(v.c_str(), &end, 10);
      if (v.empty() || *end != '\0' || n < 1 || n > 1000000) usage_error("bad --max-connections '" + v + "' (1 or more)");
      s.max_connections = static_cast<unsigned>(n);
    } else if (a == "--threads") {
      const std::string v = value();
      char* end = nullptr;
      const long n = std::strtol(v.c_str(), &end, 10);
      if (v.empty() || *end != '\0' || n < 1 || n > 1024) usage_error("bad --threads '" + v + "' (1 to 1024)");
      s.threads = static_cast<unsigned>(n);
    } else if (a == "--pidfile") {
      s.pidfile = value();
      if (s.pidfile.empty()) usage_error("empty --pidfile");
    } else if (a == "--verbose" || a == "-v") {
      s.verbose = true;
    } else if (a == "--debug") {
      s.verbose = s.debug = true;
    } else if (a == "--tls") {
      const std::string v = value();
      if (v == "off") s.tls = nbdwire::server_tls::off;
      else if (v == "on") s.tls = nbdwire::server_tls::optional;
      else if (v == "require") s.tls = nbdwire::server_tls::required;
      else usage_error("bad --tls '" + v + "' (off, on or require)");
    } else if (a == "--tls-certificates") {
      s.tls_settings.certificates = value();
    } else if (a == "--tls-psk") {
      s.tls_settings.psk_file = value();
    } else if (a == "--tls-verify-peer") {
      s.tls_settings.verify_peer = true;
      tls_verify = true;
    } else if (a == "--shutdown-timeout") {
      const std::string v = value();
      char* end = nullptr;
      const double t = std::strtod(v.c_str(), &end);
      if (v.empty() || *end != '\0' || !(t >= 0) || t > 86400) usage_error("bad --shutdown-timeout '" + v + "'");
      s.shutdown_timeout = t;
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
    } else if (a == "--device") {
      s.device = value();
      if (s.device.empty()) usage_error("empty --device");
    } else if (a == "--ioctl") {
      s.device_ioctl = true;
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
  // --port alone changes the default listener's port (socket activation is then off).
  if (port && s.listeners.empty()) {
    s.listeners.emplace_back();
    s.listeners.back().port = *port;
  }
  s.tls_settings.verify_peer = tls_verify;
  if (s.tls != nbdwire::server_tls::off) {
    if (s.tls_settings.certificates.empty() == s.tls_settings.psk_file.empty())
      usage_error("--tls=on and --tls=require need one of --tls-certificates=DIR and --tls-psk=FILE");
    if (tls_verify && s.tls_settings.psk()) usage_error("--tls-verify-peer is for certificates, not --tls-psk");
    if (s.style != nbdwire::handshake_style::fixed_newstyle) usage_error("TLS needs --style fixed-newstyle");
  } else if (!s.tls_settings.certificates.empty() || !s.tls_settings.psk_file.empty() || tls_verify) {
    usage_error("TLS credentials given without --tls=on or --tls=require");
  }
  for (const auto& spec : specs) {
    export_entry e = parse_export(spec, s.read_only);
    if (e.tls_only && s.tls != nbdwire::server_tls::optional)
      usage_error("export '" + e.name + "' is tls-only, which needs --tls=on");
    for (const auto& other : s.exports)
      if (other.name == e.name) fail("export name '" + e.name + "' given twice");
    s.exports.push_back(std::move(e));
  }
  if (!s.device.empty()) {
    if (!s.listeners.empty() || port) usage_error("--device serves the kernel only: no --listen, --unix or --port");
    if (s.tls != nbdwire::server_tls::off) usage_error("--device cannot use TLS: the kernel's NBD driver does not do it");
    if (s.exports.size() != 1) usage_error("--device serves exactly one export");
    if (s.style != nbdwire::handshake_style::fixed_newstyle)
      usage_error("--device has no handshake, and the kernel speaks the newstyle transmission framing: no --style");
  } else if (s.device_ioctl) {
    usage_error("--ioctl goes with --device");
  }
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
