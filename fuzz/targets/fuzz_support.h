// Shared by the fuzz targets and by tests/*/test_fuzz_*.cpp, which replay the seed corpora
// (and every crash found) through the same entry points in the normal builds.
//
// A target's entry point is `void mailq::fuzz::run_<name>(std::string_view data)`, defined
// inline in fuzz/targets/<name>.h; fuzz/<name>.cpp only wraps it in LLVMFuzzerTestOneInput.
// Checks use MAILQ_FUZZ_CHECK: a broken invariant aborts with the condition and a note, which
// libFuzzer reports as a crash (and a Catch2 replay reports as a fatal error).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

namespace mailq::fuzz {

/// The input being replayed, named in failure messages (set by the corpus replay tests;
/// libFuzzer names the input itself).
inline std::string& current_input() {
  static std::string name;
  return name;
}

[[noreturn]] inline void check_failed(const char* cond, const char* file, int line,
                                      std::string_view note) {
  std::fprintf(stderr, "%s:%d: fuzz invariant broken: %s%s%.*s\n", file, line, cond,
               note.empty() ? "" : " -- ", static_cast<int>(note.size()), note.data());
  if (!current_input().empty()) std::fprintf(stderr, "input: %s\n", current_input().c_str());
  std::fflush(stderr);
  std::abort();
}

#define MAILQ_FUZZ_CHECK(cond, note)                                           \
  do {                                                                         \
    if (!(cond)) ::mailq::fuzz::check_failed(#cond, __FILE__, __LINE__, note); \
  } while (0)

/// Reads the fuzz input front to back; past the end every read gives zeros / empty, so a
/// short input still runs (to its end).
class Input {
 public:
  explicit Input(std::string_view data) : data_(data) {}

  bool empty() const noexcept { return data_.empty(); }
  std::size_t size() const noexcept { return data_.size(); }

  std::uint8_t byte() {
    if (data_.empty()) return 0;
    auto b = static_cast<std::uint8_t>(data_.front());
    data_.remove_prefix(1);
    return b;
  }
  std::uint16_t u16() { return static_cast<std::uint16_t>(byte() | byte() << 8); }
  std::uint32_t u32() { return static_cast<std::uint32_t>(u16() | std::uint32_t{u16()} << 16); }
  bool flag() { return (byte() & 1) != 0; }

  /// Up to `n` bytes.
  std::string_view take(std::size_t n) {
    std::string_view s = data_.substr(0, n);
    data_.remove_prefix(s.size());
    return s;
  }
  /// Everything up to (not including) `delim`, which is consumed; the rest when absent.
  std::string_view until(char delim) {
    std::size_t i = data_.find(delim);
    std::string_view s = data_.substr(0, i);
    data_.remove_prefix(i == std::string_view::npos ? data_.size() : i + 1);
    return s;
  }
  std::string_view rest() {
    std::string_view s = data_;
    data_ = {};
    return s;
  }

 private:
  std::string_view data_;
};

/// A small deterministic generator (xorshift32) for choices derived from a seed in the input,
/// so that a seed's mutations explore the choices and the server bytes independently.
class Rng {
 public:
  explicit Rng(std::uint32_t seed) : s_(seed == 0 ? 0x9E3779B9u : seed) {}
  std::uint32_t next() {
    s_ ^= s_ << 13;
    s_ ^= s_ >> 17;
    s_ ^= s_ << 5;
    return s_;
  }
  /// In [0, n).
  std::uint32_t below(std::uint32_t n) { return n == 0 ? 0 : next() % n; }

 private:
  std::uint32_t s_;
};

inline bool has_control(std::string_view s) {
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) return true;
  }
  return false;
}

}  // namespace mailq::fuzz
