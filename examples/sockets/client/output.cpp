// SPDX-License-Identifier: MIT
// nbdwire-client: what the commands print: JSON strings and a progress bar.
#include "output.hpp"

#include <time.h>    // clock_gettime: progress throttling
#include <unistd.h>  // isatty

#include <cstdio>  // std::fprintf

#include "../common.hpp"

namespace client_app {

std::string json_string(std::string_view s) {
  std::string out = "\"";
  for (const char raw : s) {
    const auto ch = static_cast<unsigned char>(raw);
    switch (ch) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (ch < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", ch);
          out += buf;
        } else {
          out += static_cast<char>(ch);
        }
    }
  }
  return out + "\"";
}

progress::progress(std::uint64_t total, bool wanted) : total_(total), on_(wanted && isatty(2)) {}

void progress::add(std::uint64_t n) {
  const std::lock_guard lock(mu_);
  done_ += n;
  if (!on_) return;
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  const double now = static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
  if (now - last_ < 0.1 && done_ < total_) return;
  last_ = now;
  draw();
}

void progress::finish() {
  if (!on_) return;
  draw();
  std::fputc('\n', stderr);
}

void progress::draw() const {
  const double frac = total_ ? static_cast<double>(done_) / static_cast<double>(total_) : 1.0;
  constexpr int width = 40;
  const int filled = static_cast<int>(frac * width);
  std::string bar(static_cast<std::size_t>(filled), '#');
  bar.resize(width, ' ');
  std::fprintf(stderr, "\r[%s] %5.1f%% %s / %s ", bar.c_str(), frac * 100.0, examples::human_size(done_).c_str(),
               examples::human_size(total_).c_str());
}

}  // namespace client_app
