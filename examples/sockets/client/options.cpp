// SPDX-License-Identifier: MIT
// nbdwire-client: the command line.
#include "options.hpp"

#include <cstdio>   // std::printf
#include <cstdlib>  // std::exit

#include "../common.hpp"
#include "connection.hpp"  // max_window
#include "nbdwire/version.hpp"  // NBDWIRE_VERSION_STRING: --version

namespace client_app {

void usage_error(const std::string& msg) { examples::fail(msg + " (try --help)"); }

void need_args(const options& o, std::size_t n, const char* usage) {
  if (o.positional.size() != n) usage_error(std::string("usage: nbdwire-client ") + usage);
}

namespace {

void print_usage() {
  std::printf(
      "usage: nbdwire-client [GLOBAL OPTIONS] COMMAND ARGS [OPTIONS]\n"
      "       nbdwire-client [--json] [--size | --can F | --is F | --map[=CTX] [--totals] | --list] URI\n"
      "commands:\n"
      "  info URI [--json]                    what the server says about an export, as nbdinfo\n"
      "                                       (takes the nbdinfo options below too)\n"
      "  list URI [--json]                    names and descriptions of the server's exports\n"
      "  map URI [--json] [--map=CTX] [--totals]  a metadata context's map (like nbdinfo --map)\n"
      "  read URI [--offset N] [--length N]   export data to stdout\n"
      "  write URI [--offset N] [--no-flush]  stdin to the export (then FLUSH)\n"
      "  copy SRC DST [COPY OPTIONS]          URI to URI, URI to file, file to URI ('-' is\n"
      "                                       stdin or stdout); holes stay holes\n"
      "  attach URI /dev/nbdN [ATTACH OPTIONS]  the export as a Linux block device (the\n"
      "                                       kernel's NBD driver; root)\n"
      "  detach /dev/nbdN                     disconnect the device\n"
      "  devices [--json]                     the kernel's NBD devices and their state\n"
      "nbdinfo options (info, or no command):\n"
      "  --json                               JSON output\n"
      "  --size                               the export size in bytes\n"
      "  --can F, --is F                      exit 0 if the export has feature F, 2 if not,\n"
      "                                       1 on error; F: connect read write read-only\n"
      "                                       rotational tls structured-reply extended-headers\n"
      "                                       block-status cache df fast-zero flush fua\n"
      "                                       multi-conn trim zero\n"
      "  --cannot F, --is-not F               the opposite: exit 0 if not, 2 if it has F\n"
      "  --map[=CTX]                          the map of CTX (default base:allocation)\n"
      "  --totals                             with --map: bytes and percent of each type\n"
      "  -L, --list                           every export, each shown as info shows one\n"
      "  --content, --no-content              probe the first 8 KiB with file(1) (default:\n"
      "                                       on for info, off for --list)\n"
      "copy options:\n"
      "  -p, --progress                       progress on stderr\n"
      "  --flush                              flush the target at the end (an NBD target is\n"
      "                                       flushed anyway unless --no-flush; a file is fsynced)\n"
      "  --no-flush                           no FLUSH at the end of write and copy to a URI\n"
      "  --target-is-zero                     the target reads as zeroes: zero ranges are skipped\n"
      "  --connections N                      connections per side when the exports allow\n"
      "                                       multi-conn (default: one per CPU, at most 4)\n"
      "  --requests N                         requests in flight per connection (1-%zu, default %zu)\n"
      "  --timeout SECONDS                    fail when the server sends or takes nothing for this\n"
      "                                       long while the client waits for it (default 0: wait)\n"
      "attach options:\n"
      "  --connections N                      connections the device uses (default 1; more\n"
      "                                       need a multi-conn or read-only export)\n"
      "  --timeout SECONDS                    the kernel fails a request unanswered this long\n"
      "                                       (and the handshake must end within it)\n"
      "  --dead-conn-timeout SECONDS          I/O waits this long for a reconnect when every\n"
      "                                       connection is lost (default with --persist: 60)\n"
      "  --persist                            stay in the background and reconnect lost\n"
      "                                       connections (the device survives a server restart)\n"
      "  --foreground                         with --persist: do not go to the background\n"
      "  --read-only                          a read-only device\n"
      "  --block-size N                       the device's block size (512 to the page size)\n"
      "  --ioctl                              the ioctl interface instead of netlink (no --persist)\n"
      "global options:\n"
      "  --style legacy1997 --legacy-size SIZE  a server of the 1997 framing (no handshake);\n"
      "                                       the old spelling --size SIZE is still taken\n"
      "                                       before the command\n"
      "  --debug                              log every state change of each connection's\n"
      "                                       protocol machine to stderr\n"
      "  --version                            print the version and exit\n"
      "  -h, --help                           this help\n"
      "URI: nbd://HOST[:PORT][/EXPORT] or nbd+unix:///EXPORT?socket=PATH; nbds:// and nbds+unix://\n"
      "  require TLS: ?tls-certificates=DIR (ca-cert.pem, client-cert.pem, client-key.pem) or\n"
      "  nbds://USER@...?tls-psk-file=FILE, and tls-hostname=NAME, tls-verify-peer=0, tls-type=x509|psk\n"
      "SIZE and N accept K, M, G, T (binary) suffixes.\n"
      "Exit status: 0 success, 1 error, 2 --can/--is false (--cannot/--is-not true),\n"
      "130 interrupted by SIGINT, 143 by SIGTERM.\n",
      max_window, max_window);
}

std::uint64_t size_arg(const std::string& opt, const std::string& v) {
  const auto s = examples::parse_size(v);
  if (!s) usage_error("bad value for " + opt + ": '" + v + "'");
  return *s;
}

unsigned count_arg(const std::string& opt, const std::string& v, unsigned most) {
  const std::uint64_t n = size_arg(opt, v);
  if (n < 1 || n > most) usage_error(opt + " takes 1 to " + std::to_string(most));
  return static_cast<unsigned>(n);
}

}  // namespace

options parse_args(int argc, char** argv) {
  options o;
  int queries = 0;  // --size, --can/--is, --map, --list: at most one, as nbdinfo has it
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage_error(a + " needs a value");
      return argv[++i];
    };
    // --option=VALUE is taken as --option VALUE.
    const auto eq = a.find('=');
    const std::string name = a.rfind("--", 0) == 0 && eq != std::string::npos ? a.substr(0, eq) : a;
    const std::optional<std::string> inline_value =
        name.size() != a.size() ? std::optional<std::string>(a.substr(eq + 1)) : std::nullopt;
    const auto take = [&] { return inline_value ? *inline_value : value(); };
    if (inline_value && name != "--map" && name != "--can" && name != "--is" && name != "--cannot" &&
        name != "--is-not" && name != "--style" && name != "--legacy-size" && name != "--offset" &&
        name != "--length" && name != "--connections" && name != "--requests" && name != "--timeout" &&
        name != "--dead-conn-timeout" && name != "--block-size")
      usage_error("option " + name + " takes no value");
    if (a == "--help" || a == "-h") {
      print_usage();
      std::exit(0);
    } else if (a == "--version" || a == "-V") {
      std::printf("nbdwire-client %s\n", NBDWIRE_VERSION_STRING);
      std::exit(0);
    } else if (name == "--style") {
      // fixed newstyle, newstyle and oldstyle are told apart by the server's greeting.
      const std::string s = take();
      if (s == "legacy1997")
        o.legacy = true;
      else if (s != "fixed-newstyle" && s != "newstyle" && s != "oldstyle")
        usage_error("unknown --style '" + s + "'");
    } else if (name == "--legacy-size") {
      o.legacy_size = size_arg(name, take());
    } else if (a == "--size") {
      // Before the command and followed by a size, it is the old spelling of --legacy-size;
      // anywhere else it is nbdinfo's --size.
      if (o.positional.empty() && i + 1 < argc && examples::parse_size(argv[i + 1])) {
        o.legacy_size = size_arg(a, value());
      } else {
        o.size_only = true;
        ++queries;
      }
    } else if (a == "--json") {
      o.json = true;
    } else if (name == "--can" || name == "--is" || name == "--cannot" || name == "--is-not") {
      o.can = take();
      o.can_negated = name == "--cannot" || name == "--is-not";
      ++queries;
    } else if (name == "--map") {
      o.map = inline_value ? *inline_value : "base:allocation";
      if (o.map->empty()) usage_error("--map= needs a context name");
      ++queries;
    } else if (a == "--totals" || a == "--total") {
      o.totals = true;
    } else if (a == "--list" || a == "-L") {
      o.list_all = true;
      ++queries;
    } else if (a == "--content") {
      o.content = true;
    } else if (a == "--no-content") {
      o.content = false;
    } else if (name == "--offset") {
      o.offset = size_arg(name, take());
    } else if (name == "--length") {
      o.length = size_arg(name, take());
    } else if (name == "--connections") {
      o.connections = count_arg(name, take(), max_connections);
    } else if (name == "--requests") {
      o.requests = count_arg(name, take(), static_cast<unsigned>(max_window));
    } else if (name == "--timeout") {
      const std::string v = take();
      char* end = nullptr;
      const double t = std::strtod(v.c_str(), &end);
      if (v.empty() || *end != '\0' || !(t >= 0) || t > 86400) usage_error("bad --timeout '" + v + "' (seconds)");
      o.timeout_ms = static_cast<int>(t * 1000);
    } else if (name == "--dead-conn-timeout") {
      const std::uint64_t t = size_arg(name, take());
      if (t > 86400) usage_error("--dead-conn-timeout takes 0 to 86400 (seconds)");
      o.dead_conn_timeout_s = t;
    } else if (name == "--block-size") {
      const std::uint64_t b = size_arg(name, take());
      if (b < 512 || b > 65536 || (b & (b - 1)) != 0) usage_error("--block-size takes a power of two from 512");
      o.block_size = static_cast<std::uint32_t>(b);
    } else if (a == "--persist") {
      o.persist = true;
    } else if (a == "--foreground") {
      o.foreground = true;
    } else if (a == "--read-only" || a == "-r") {
      o.read_only = true;
    } else if (a == "--ioctl") {
      o.ioctl = true;
    } else if (a == "--no-flush") {
      o.no_flush = true;
    } else if (a == "--flush") {
      o.flush = true;
    } else if (a == "-p" || a == "--progress") {
      o.progress = true;
    } else if (a == "--target-is-zero") {
      o.target_is_zero = true;
    } else if (a == "--debug") {
      o.debug = true;
    } else if (a.size() > 1 && a[0] == '-' && a != "-") {
      usage_error("unknown option " + a);
    } else {
      o.positional.push_back(a);
    }
  }
  if (o.legacy && !o.legacy_size) usage_error("--style legacy1997 needs --legacy-size");
  if (!o.legacy && o.legacy_size) usage_error("--legacy-size is only for --style legacy1997");
  if (queries > 1) usage_error("--size, --can/--is, --map and --list cannot be used together");
  if (o.totals && !o.map) o.map = "base:allocation";  // --totals implies --map
  if (o.no_flush && o.flush) usage_error("--flush and --no-flush contradict each other");
  if (o.persist && o.ioctl) usage_error("--persist needs the netlink interface; it cannot be used with --ioctl");
  return o;
}

}  // namespace client_app
