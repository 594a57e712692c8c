// SPDX-License-Identifier: MIT
// nbdwire-client: what the commands print: escaped strings and the progress indicator.
#include "output.hpp"

#include <time.h>    // clock_gettime: progress throttling
#include <unistd.h>  // isatty

#include <cstdio>  // std::fprintf

#include "../common.hpp"

namespace client_app {

namespace {

/// The code point of the UTF-8 sequence at s[i], advancing i past it; or -1 for a byte
/// that does not start a valid, shortest-form sequence of a scalar value (i then moves by
/// one byte only). The one UTF-8 decoder behind both escapers.
long next_code_point(std::string_view s, std::size_t& i) {
  const auto b = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  if (c < 0x80) {
    ++i;
    return c;
  }
  std::size_t n = 0;
  long cp = 0, min = 0;
  if (c >= 0xc2 && c <= 0xdf) n = 1, cp = c & 0x1f, min = 0x80;
  else if (c >= 0xe0 && c <= 0xef) n = 2, cp = c & 0x0f, min = 0x800;
  else if (c >= 0xf0 && c <= 0xf4) n = 3, cp = c & 0x07, min = 0x10000;
  else {
    ++i;
    return -1;
  }
  if (i + n >= s.size()) {  // truncated sequence
    ++i;
    return -1;
  }
  for (std::size_t k = 1; k <= n; ++k) {
    if ((b(i + k) & 0xc0) != 0x80) {
      ++i;
      return -1;
    }
    cp = (cp << 6) | (b(i + k) & 0x3f);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
    ++i;
    return -1;
  }
  i += n + 1;
  return cp;
}

bool is_control(long cp) { return cp < 0x20 || (cp >= 0x7f && cp <= 0x9f); }

}  // namespace

std::string json_string(std::string_view s) {
  std::string out = "\"";
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t at = i;
    const long cp = next_code_point(s, i);
    char buf[24];
    if (cp < 0) {
      out += "\xef\xbf\xbd";  // U+FFFD REPLACEMENT CHARACTER
    } else if (cp == '"' || cp == '\\') {
      out += '\\';
      out += static_cast<char>(cp);
    } else if (cp == '\n') {
      out += "\\n";
    } else if (cp == '\r') {
      out += "\\r";
    } else if (cp == '\t') {
      out += "\\t";
    } else if (is_control(cp)) {
      std::snprintf(buf, sizeof buf, "\\u%04lx", static_cast<unsigned long>(cp));
      out += buf;
    } else {
      out.append(s.substr(at, i - at));
    }
  }
  return out + "\"";
}

std::string terminal_text(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t at = i;
    const long cp = next_code_point(s, i);
    char buf[24];
    if (cp == '\\') {
      out += "\\\\";
    } else if (cp == '\n') {
      out += "\\n";
    } else if (cp == '\t') {
      out += "\\t";
    } else if (cp == '\r') {
      out += "\\r";
    } else if (cp < 0 || is_control(cp)) {
      // Each byte of an invalid or control sequence on its own (C1 controls are 2 bytes).
      for (std::size_t k = at; k < i; ++k) {
        std::snprintf(buf, sizeof buf, "\\x%02x", static_cast<unsigned>(static_cast<unsigned char>(s[k])));
        out += buf;
      }
    } else {
      out.append(s.substr(at, i - at));
    }
  }
  return out;
}

progress::progress(std::uint64_t total, bool wanted) : total_(total), on_(wanted), tty_(isatty(2) != 0) {}

void progress::add(std::uint64_t n) {
  const std::lock_guard lock(mu_);
  done_ += n;
  if (!on_) return;
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  const double now = static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
  if (tty_ && now - last_ < 0.1 && done_ < total_) return;
  last_ = now;
  draw();
}

void progress::finish() {
  const std::lock_guard lock(mu_);
  if (!on_) return;
  if (total_ == 0) done_ = 0;
  draw();
  if (tty_) std::fputc('\n', stderr);
  on_ = false;
}

void progress::draw() {
  const double frac = total_ ? static_cast<double>(done_) / static_cast<double>(total_) : 1.0;
  if (!tty_) {
    // Not a terminal (a log, a pipe to a GUI): nbdcopy's "NN%" lines, each percent once.
    const int percent = static_cast<int>(frac * 100.0);
    if (percent == last_percent_) return;
    last_percent_ = percent;
    std::fprintf(stderr, "%d%%\n", percent);
    return;
  }
  constexpr int width = 40;
  const int filled = static_cast<int>(frac * width);
  std::string bar(static_cast<std::size_t>(filled), '#');
  bar.resize(width, ' ');
  std::fprintf(stderr, "\r[%s] %5.1f%% %s / %s ", bar.c_str(), frac * 100.0, examples::human_size(done_).c_str(),
               examples::human_size(total_).c_str());
}

}  // namespace client_app
