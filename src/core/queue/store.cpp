#include "core/queue/store.h"

#include <new>

namespace mailq::detail {

SlotId MessageStore::find(MessageId id) const {
  if (!id) return kNoSlot;
  return index_.find(id.value, key_of());
}

SlotId MessageStore::add(const MessageRecord& m) {
  SlotId s;
  if (!free_.empty()) {
    s = free_.back();
    free_.pop_back();
  } else {
    if (slots_.size() >= kNoSlot) throw std::bad_alloc();
    s = static_cast<SlotId>(slots_.size());
    slots_.emplace_back();
  }
  std::vector<DestinationId> dests;
  dests.reserve(m.recipients.size());
  for (const auto& r : m.recipients)
    dests.push_back(destinations_.acquire(routes_, r.route, r.address));
  Slot& slot = slots_[s];
  slot.rec = PackedRecord(m, dests.data());
  slot.id = m.id.value;
  slot.flags = m.held ? slot_flag::held : 0;
  index_.insert(m.id.value, s, key_of());
  count_++;
  return s;
}

void MessageStore::free(SlotId s) {
  Slot& slot = slots_[s];
  slot.rec.each_recipient(
      [&](std::size_t, const RecipientView& r) { destinations_.release(r.destination); });
  index_.erase(slot.id, key_of());
  slot.id = 0;
  slot.rec = PackedRecord();
  slot.gen++;
  slot.flags = 0;
  free_.push_back(s);
  count_--;
}

MessageRecord MessageStore::unpack(SlotId s) const {
  const Slot& slot = slots_[s];
  return slot.rec.unpack(MessageId{slot.id}, slot.has(slot_flag::held));
}

void MessageStore::repack(SlotId s, const MessageRecord& m) {
  Slot& slot = slots_[s];
  std::vector<DestinationId> dests;
  dests.reserve(m.recipients.size());
  slot.rec.each_recipient(
      [&](std::size_t, const RecipientView& r) { dests.push_back(r.destination); });
  slot.rec = PackedRecord(m, dests.data());
  slot.flags =
      static_cast<std::uint8_t>((slot.flags & ~slot_flag::held) | (m.held ? slot_flag::held : 0));
}

}  // namespace mailq::detail
