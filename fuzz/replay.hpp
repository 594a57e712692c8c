// SPDX-License-Identifier: MIT
// Corpus replay without libFuzzer: runs every input named, or every file of the directories
// named (in name order), once through a fuzz entry point. A failing invariant aborts.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace nbdwire_fuzz {

using entry_point = int (*)(const std::uint8_t*, std::size_t);

inline bool replay_file(entry_point entry, const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  if (!f) {
    std::fprintf(stderr, "replay: cannot read %s\n", p.string().c_str());
    return false;
  }
  const std::vector<char> raw((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  // An exact-size heap copy, so the target sees the input as libFuzzer would hand it over.
  std::vector<std::uint8_t> data(raw.begin(), raw.end());
  data.shrink_to_fit();
  entry(data.empty() ? nullptr : data.data(), data.size());
  return true;
}

/// Replays `paths` (files or directories; arguments starting with '-' are libFuzzer flags
/// and are skipped). Returns the process exit status: 0 when every input was read and at
/// least one was run.
inline int replay(entry_point entry, const std::vector<std::string>& paths, const char* label) {
  std::size_t runs = 0;
  bool ok = true;
  for (const std::string& arg : paths) {
    if (arg.starts_with("-")) continue;
    const std::filesystem::path p(arg);
    if (std::filesystem::is_directory(p)) {
      std::vector<std::filesystem::path> files;
      for (const auto& e : std::filesystem::directory_iterator(p))
        if (e.is_regular_file()) files.push_back(e.path());
      std::sort(files.begin(), files.end());
      for (const auto& f : files) ok = replay_file(entry, f) && ok, ++runs;
    } else {
      ok = replay_file(entry, p) && ok;
      ++runs;
    }
  }
  std::printf("replay%s%s: %zu inputs run\n", *label ? " " : "", label, runs);
  return ok && runs != 0 ? 0 : 1;
}

}  // namespace nbdwire_fuzz
