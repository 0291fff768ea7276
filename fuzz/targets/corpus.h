// For the replay tests (tests/*/test_fuzz_*.cpp): the seed files of a target.
#pragma once

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_support.h"

namespace mailq::fuzz {

/// fuzz/corpus/<target>/ of the source tree holding `here`, the __FILE__ of a test under
/// tests/<kind>/ (CMake compiles sources by absolute path).
inline std::filesystem::path corpus_dir(std::string_view here, std::string_view target) {
  return std::filesystem::path(here).parent_path().parent_path().parent_path() / "fuzz" / "corpus" /
         std::string(target);
}

/// Every regular file in the target's corpus, sorted by name.
inline std::vector<std::string> corpus_files(std::string_view here, std::string_view target) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(corpus_dir(here, target), ec)) {
    if (e.is_regular_file()) out.push_back(e.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

/// Runs `run` on every seed file of `target` (current_input() names the file for a failure
/// message); returns how many there were. `here` as in corpus_dir.
template <class Run>
std::size_t replay_corpus(std::string_view here, std::string_view target, Run run) {
  const auto files = corpus_files(here, target);
  for (const std::string& f : files) {
    current_input() = f;
    run(read_file(f));
  }
  current_input().clear();
  return files.size();
}

}  // namespace mailq::fuzz
