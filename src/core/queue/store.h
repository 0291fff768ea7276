// mailq — the queue's store: its messages in memory. Internal.
//
// One slot of 24 bytes per message (its id, its packed record, a generation and flags) in a
// vector, found through a flat index of slot numbers; each recipient carries the number of
// its interned destination. The store knows nothing of time or delivery: the schedule reads
// it, the queue changes it.
#pragma once

#include <cstdint>
#include <vector>

#include "core/queue/destinations.h"
#include "core/queue/id_index.h"
#include "core/queue/packed_record.h"
#include "mailq/message.h"

namespace mailq::detail {

using SlotId = std::uint32_t;
inline constexpr SlotId kNoSlot = IdIndex::kNone;

namespace slot_flag {
inline constexpr std::uint8_t held = 1;
inline constexpr std::uint8_t removed = 2;    // removed while a job was in flight: a tombstone
inline constexpr std::uint8_t in_flight = 4;  // the Deliverer holds a job of it
// Its jobs are in the destination heaps (Schedule::add ran, Schedule::withdraw did not since):
// what an event sink does to a message while the queue has its jobs withdrawn cannot withdraw
// them twice.
inline constexpr std::uint8_t scheduled = 8;
}  // namespace slot_flag

struct Slot {
  std::uint64_t id = 0;  // 0: free
  PackedRecord rec;
  // Bumped whenever the message's waiting jobs are withdrawn: a heap entry carrying an older
  // generation is stale and dropped when met.
  std::uint32_t gen = 0;
  std::uint8_t flags = 0;

  bool has(std::uint8_t f) const noexcept { return (flags & f) != 0; }
  void set(std::uint8_t f) noexcept { flags |= f; }
  void clear(std::uint8_t f) noexcept { flags = static_cast<std::uint8_t>(flags & ~f); }
  /// Queued and not removed: what inspection shows.
  bool live() const noexcept { return id != 0 && !has(slot_flag::removed); }
};

class MessageStore {
 public:
  explicit MessageStore(const RouteTable& routes) : routes_(routes) {}

  SlotId find(MessageId id) const;
  /// Adds a message (its recipients' destinations interned); throws std::bad_alloc when the
  /// store is full.
  SlotId add(const MessageRecord& m);
  /// Frees a slot and its destinations' references.
  void free(SlotId s);
  MessageRecord unpack(SlotId s) const;
  /// Replaces the record of a slot (same recipients, so the same destinations).
  void repack(SlotId s, const MessageRecord& m);

  Slot& at(SlotId s) { return slots_[s]; }
  const Slot& at(SlotId s) const { return slots_[s]; }
  SlotId end() const noexcept { return static_cast<SlotId>(slots_.size()); }
  std::size_t count() const noexcept { return count_; }  // slots in use, tombstones included

  DestinationTable& destinations() noexcept { return destinations_; }
  const DestinationTable& destinations() const noexcept { return destinations_; }

  /// Calls f(const Slot&) for every slot in use.
  template <class F>
  void each(F&& f) const {
    for (const Slot& s : slots_)
      if (s.id) f(s);
  }

 private:
  auto key_of() const {
    return [this](SlotId s) { return slots_[s].id; };
  }

  const RouteTable& routes_;
  std::vector<Slot> slots_;
  std::vector<SlotId> free_;
  IdIndex index_;
  std::size_t count_ = 0;
  DestinationTable destinations_;
};

}  // namespace mailq::detail
