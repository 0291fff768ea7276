// A compact map from a 64-bit message id to a value, for the segment spool's in-memory index
// (docs/spool-format.md, "The segment spool", Memory). Internal to the spool.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <utility>
#include <vector>

namespace mailq {
namespace spool {
namespace detail {

// The values sit in one dense vector (no allocation per message, iteration in memory order);
// the lookup structure is an open-addressing table of 32-bit slots with linear probing and
// backward-shift deletion, a few bytes per message where a node-based map costs ~40. A slot
// holds a value's position + 1 in its low `index_bits_` bits (0: empty) and the low bits of
// the id's hash above them, so a probe rarely reads a value that is not the one looked for.
//
// T needs a `std::uint64_t id` member and must be movable. Pointers and references to values
// are valid until the next insert, erase, reserve or clear.
template <class T>
class IdTable {
 public:
  std::size_t size() const noexcept { return values_.size(); }
  bool empty() const noexcept { return values_.empty(); }

  T* begin() noexcept { return values_.data(); }
  T* end() noexcept { return values_.data() + values_.size(); }
  const T* begin() const noexcept { return values_.data(); }
  const T* end() const noexcept { return values_.data() + values_.size(); }

  T* find(std::uint64_t id) noexcept {
    const std::size_t slot = find_slot(id);
    return slot == kNone ? nullptr : &values_[position(slots_[slot])];
  }
  const T* find(std::uint64_t id) const noexcept {
    const std::size_t slot = find_slot(id);
    return slot == kNone ? nullptr : &values_[position(slots_[slot])];
  }
  bool contains(std::uint64_t id) const noexcept { return find_slot(id) != kNone; }

  // Makes room for `n` values without growing the table again (an exact-size load).
  void reserve(std::size_t n) {
    values_.reserve(n);
    if (slots_.size() < slots_for(n)) rebuild(slots_for(n));
  }

  // Inserts `value`, whose id must not be present (the caller checks). Returns the stored value.
  T& insert(T&& value) {
    if ((values_.size() + 1) * kMaxLoadDen > slots_.size() * kMaxLoadNum) {
      // To 3/5 full: growth stays frequent (a pass over the values each time, amortized), and
      // the slots stay below 7 bytes per value.
      const std::size_t n = values_.size() + 1;
      const std::size_t want = n / 3 * 5 + (n % 3) * 5 / 3 + 1;
      rebuild(std::max(std::min(want, kMaxSlots), slots_for(n)));
    }
    const std::uint64_t h = mix(value.id);
    values_.push_back(std::move(value));
    std::size_t slot = home(h);
    while (slots_[slot] != 0) slot = next(slot);
    slots_[slot] = tag(h) | static_cast<std::uint32_t>(values_.size());
    return values_.back();
  }

  // Removes the value with `id`; false when there is none. The last value moves into its place.
  bool erase(std::uint64_t id) {
    std::size_t slot = find_slot(id);
    if (slot == kNone) return false;
    const std::size_t pos = position(slots_[slot]);
    erase_slot(slot);
    const std::size_t last = values_.size() - 1;
    if (pos != last) {
      // The last value moves to `pos`: its slot is found by position, not by comparing ids.
      const std::uint64_t h = mix(values_[last].id);
      std::size_t s = home(h);
      while (position(slots_[s]) != last) s = next(s);
      slots_[s] = tag(h) | static_cast<std::uint32_t>(pos + 1);
      values_[pos] = std::move(values_[last]);
    }
    values_.pop_back();
    // Give memory back after a large queue drained (not on every removal: a rebuild costs a
    // pass over the values).
    if (slots_.size() > kMinSlots && values_.size() * 8 < slots_.size()) {
      rebuild(slots_for(values_.size()));
    }
    if (values_.capacity() > 1024 && values_.size() * 4 < values_.capacity()) {
      values_.shrink_to_fit();
    }
    return true;
  }

  // Removes every value and frees the memory.
  void clear() noexcept {
    std::vector<T>().swap(values_);
    std::vector<std::uint32_t>().swap(slots_);
    index_bits_ = 0;
  }

 private:
  static constexpr std::size_t kNone = SIZE_MAX;
  static constexpr std::size_t kMinSlots = 16;
  // At most 4/5 of the slots are used (linear probing degrades quickly above that); a reserve
  // sizes for 7/10, a growth for 3/5.
  static constexpr std::size_t kMaxLoadNum = 4, kMaxLoadDen = 5;
  // More slots than this cannot be told apart by a 32-bit slot word.
  static constexpr std::size_t kMaxSlots = std::size_t{1} << 31;

  static std::size_t slots_for(std::size_t n) {
    std::size_t want = n / 7 * 10 + (n % 7) * 10 / 7 + 1;
    if (want < kMinSlots) want = kMinSlots;
    if (want > kMaxSlots) throw std::length_error("mailq spool index: too many messages");
    return want;
  }

  // The finalizer of MurmurHash3: ids are often sequential.
  static std::uint64_t mix(std::uint64_t x) noexcept {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
  }
  // The high half picks the home slot (multiply-shift: any table size), the low half the tag.
  std::size_t home(std::uint64_t h) const noexcept {
    return static_cast<std::size_t>(((h >> 32) * slots_.size()) >> 32);
  }
  std::uint32_t tag(std::uint64_t h) const noexcept {
    return static_cast<std::uint32_t>(h) & ~index_mask();
  }
  std::uint32_t index_mask() const noexcept {
    return index_bits_ >= 32 ? 0xFFFFFFFFu : (std::uint32_t{1} << index_bits_) - 1;
  }
  std::size_t position(std::uint32_t slot) const noexcept { return (slot & index_mask()) - 1; }
  std::size_t next(std::size_t slot) const noexcept {
    return slot + 1 == slots_.size() ? 0 : slot + 1;
  }

  std::size_t find_slot(std::uint64_t id) const noexcept {
    if (slots_.empty()) return kNone;
    const std::uint64_t h = mix(id);
    const std::uint32_t t = tag(h), mask = index_mask();
    for (std::size_t slot = home(h);; slot = next(slot)) {
      const std::uint32_t s = slots_[slot];
      if (s == 0) return kNone;
      if ((s & ~mask) == t && values_[(s & mask) - 1].id == id) return slot;
    }
  }

  // Empties `slot`, moving later members of its cluster back so that every value stays
  // reachable from its home slot without a tombstone.
  void erase_slot(std::size_t slot) {
    std::size_t hole = slot;
    for (std::size_t s = next(slot); slots_[s] != 0; s = next(s)) {
      const std::size_t h = home(mix(values_[position(slots_[s])].id));
      // The value at s stays when its home lies cyclically in (hole, s].
      const bool stays = hole < s ? (hole < h && h <= s) : (hole < h || h <= s);
      if (stays) continue;
      slots_[hole] = slots_[s];
      hole = s;
    }
    slots_[hole] = 0;
  }

  void rebuild(std::size_t count) {
    slots_.assign(count, 0);
    index_bits_ = 0;
    while (index_bits_ < 32 && (std::size_t{1} << index_bits_) <= count) ++index_bits_;
    for (std::size_t i = 0; i < values_.size(); ++i) {
      const std::uint64_t h = mix(values_[i].id);
      std::size_t slot = home(h);
      while (slots_[slot] != 0) slot = next(slot);
      slots_[slot] = tag(h) | static_cast<std::uint32_t>(i + 1);
    }
  }

  std::vector<T> values_;
  std::vector<std::uint32_t> slots_;
  unsigned index_bits_ = 0;  // bits of a slot that hold a position + 1
};

}  // namespace detail
}  // namespace spool
}  // namespace mailq
