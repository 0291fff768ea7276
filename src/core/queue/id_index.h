// mailq — a flat hash index from a 64-bit id to a 32-bit slot number.
//
// Open addressing with linear probing and backward-shift deletion; the table holds only slot
// numbers (4 bytes each, at most half full), the ids live in the slots: `key_of(slot)` gives
// a slot's id. A million entries cost 8 MiB, where an unordered_map costs 40 bytes a node.
#pragma once

#include <cstdint>
#include <vector>

namespace mailq::detail {

class IdIndex {
 public:
  static constexpr std::uint32_t kNone = 0xffffffffu;

  template <class KeyOf>
  std::uint32_t find(std::uint64_t id, KeyOf&& key_of) const {
    if (table_.empty()) return kNone;
    for (std::size_t i = home(id);; i = (i + 1) & mask_) {
      std::uint32_t s = table_[i];
      if (s == kNone) return kNone;
      if (key_of(s) == id) return s;
    }
  }

  /// `id` must not be present.
  template <class KeyOf>
  void insert(std::uint64_t id, std::uint32_t slot, KeyOf&& key_of) {
    if ((size_ + 1) * 2 > table_.size()) grow(key_of);
    std::size_t i = home(id);
    while (table_[i] != kNone) i = (i + 1) & mask_;
    table_[i] = slot;
    ++size_;
  }

  template <class KeyOf>
  void erase(std::uint64_t id, KeyOf&& key_of) {
    if (table_.empty()) return;
    std::size_t i = home(id);
    while (true) {
      if (table_[i] == kNone) return;
      if (key_of(table_[i]) == id) break;
      i = (i + 1) & mask_;
    }
    // Backward shift: move later members of the probe run into the hole when their home
    // position does not lie (cyclically) between the hole and them.
    std::size_t hole = i;
    for (std::size_t j = (i + 1) & mask_; table_[j] != kNone; j = (j + 1) & mask_) {
      std::size_t h = home(key_of(table_[j]));
      bool stays = hole <= j ? (hole < h && h <= j) : (hole < h || h <= j);
      if (stays) continue;
      table_[hole] = table_[j];
      hole = j;
    }
    table_[hole] = kNone;
    --size_;
  }

  std::size_t size() const noexcept { return size_; }

 private:
  std::size_t home(std::uint64_t id) const noexcept {
    // Fibonacci hashing: ids are time-ordered, so their low bits alone would cluster.
    return static_cast<std::size_t>((id * 0x9E3779B97F4A7C15ull) >> shift_) & mask_;
  }

  template <class KeyOf>
  void grow(KeyOf& key_of) {
    std::vector<std::uint32_t> old = std::move(table_);
    std::size_t cap = old.empty() ? 64 : old.size() * 2;
    table_.assign(cap, kNone);
    mask_ = cap - 1;
    int bits = 0;
    while ((std::size_t{1} << bits) < cap) ++bits;
    shift_ = 64 - bits;
    for (std::uint32_t s : old) {
      if (s == kNone) continue;
      std::size_t i = home(key_of(s));
      while (table_[i] != kNone) i = (i + 1) & mask_;
      table_[i] = s;
    }
  }

  std::vector<std::uint32_t> table_;
  std::size_t mask_ = 0;
  int shift_ = 64;
  std::size_t size_ = 0;
};

}  // namespace mailq::detail
