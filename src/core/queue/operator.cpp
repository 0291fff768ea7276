// The Queue's operator actions and inspection.
#include <algorithm>
#include <map>

#include "core/queue/core.h"

namespace mailq::detail {

namespace {

Error not_queued(const char* what, MessageId id) {
  return Error(errc::not_found,
               std::string(what) + " " + id.to_string() + ": no such message in the queue");
}

// The storage's error, saying which operator action it stopped.
Error refused(const char* what, MessageId id, const Error& e) {
  return Error(e.code, std::string(what) + " " + id.to_string() + ": " + e.message);
}

}  // namespace

Result<void> QueueCore::hold(MessageId id) {
  const SlotId s = store_.find(id);
  if (s == kNoSlot || store_.at(s).has(slot_flag::removed)) return not_queued("hold", id);
  if (store_.at(s).has(slot_flag::held)) return success();
  // The storage first: a hold the spool did not record would be gone after a restart, and
  // the operator is told it failed, so nothing changes.
  MessageRecord m = store_.unpack(s);
  m.held = true;
  if (auto r = storage_.update(with_unwritten(change_of(m))); !r)
    return refused("hold", id, r.error());
  written(id);
  schedule_.withdraw(s);
  store_.at(s).set(slot_flag::held);
  return success();
}

Result<void> QueueCore::release(MessageId id) {
  const SlotId s = store_.find(id);
  if (s == kNoSlot || store_.at(s).has(slot_flag::removed)) return not_queued("release", id);
  if (!store_.at(s).has(slot_flag::held)) return success();
  // The storage first: a message released in memory only would be delivered while its file
  // stays held, and come back held (and be sent again) after a restart.
  MessageRecord m = store_.unpack(s);
  m.held = false;
  if (auto r = storage_.update(with_unwritten(change_of(m))); !r)
    return refused("release", id, r.error());
  written(id);
  schedule_.withdraw(s);
  store_.at(s).clear(slot_flag::held);
  schedule_.add(s);
  notify_new_work(id);
  return success();
}

std::vector<MessageId> QueueCore::pending_for(std::string_view destination, bool held) const {
  std::vector<MessageId> ids;
  const DestinationTable& dests = store_.destinations();
  store_.each([&](const Slot& slot) {
    if (slot.has(slot_flag::removed) || slot.has(slot_flag::held) != held) return;
    bool any = false;
    slot.rec.each_recipient([&](std::size_t, const RecipientView& r) {
      if (any || is_final(r.state)) return;
      any = r.route == destination || dests[r.destination].key == destination;
    });
    if (any) ids.push_back(MessageId{slot.id});
  });
  return ids;
}

std::size_t QueueCore::hold_destination(std::string_view destination) {
  std::size_t n = 0;
  for (auto id : pending_for(destination, false))
    if (hold(id)) ++n;
  return n;
}

std::size_t QueueCore::release_destination(std::string_view destination) {
  std::size_t n = 0;
  for (auto id : pending_for(destination, true))
    if (release(id)) ++n;
  return n;
}

void QueueCore::erase_message(SlotId s) {
  schedule_.withdraw(s);
  Slot& slot = store_.at(s);
  if (slot.has(slot_flag::in_flight)) {
    // The Deliverer still holds a job: keep a tombstone until it completes.
    slot.set(slot_flag::removed);
    return;
  }
  store_.free(s);
}

Result<void> QueueCore::remove(MessageId id) {
  const SlotId s = store_.find(id);
  if (s == kNoSlot || store_.at(s).has(slot_flag::removed)) return not_queued("remove", id);
  const Result<void> removed = remove_stored(id);
  erase_message(s);
  // Gone from the storage already is what was asked; any other failure is retried and said.
  if (!removed && removed.code() != errc::not_found) return refused("remove", id, removed.error());
  return success();
}

Result<void> QueueCore::bounce(MessageId id, std::string_view reason) {
  SlotId s = store_.find(id);
  if (s == kNoSlot || store_.at(s).has(slot_flag::removed)) return not_queued("bounce", id);
  MessageRecord m = store_.unpack(s);
  std::vector<std::size_t> bounced;
  Reply reply(550, "5.0.0", "[internal] " + std::string(reason));
  for (std::size_t i = 0; i < m.recipients.size(); ++i) {
    auto& r = m.recipients[i];
    if (is_final(r.state)) continue;
    r.state = RecipientState::bounced;
    r.last_reply = reply;
    bounced.push_back(i);
    counters_.bounced++;
    Event ev = make_event(EventKind::returned, m, r, m.attempts);
    ev.diagnostic.push_back(reply.to_string());
    if (auto why = no_dsn_reason(m, r); !why.empty()) ev.diagnostic.push_back(std::move(why));
    emit(std::move(ev));
  }
  const auto sent = send_dsn(m, bounced, DsnAction::failed, /*remove_original=*/true);
  s = store_.find(id);  // the sink or the DSN's enqueue may have changed the store
  if (s != kNoSlot && !store_.at(s).has(slot_flag::removed)) erase_message(s);
  message_done(m);
  if (!sent) return refused("bounce", id, sent.error());
  return success();
}

std::size_t QueueCore::make_all_due() {
  const TimePoint now = clock_.now();
  std::size_t n = 0;
  for (SlotId s = 0; s < store_.end(); ++s) {
    const Slot& slot = store_.at(s);
    if (!slot.id || slot.has(slot_flag::held) || slot.has(slot_flag::removed)) continue;
    bool later = false;
    slot.rec.each_recipient([&](std::size_t, const RecipientView& r) {
      later = later || (!is_final(r.state) && r.next_attempt > now);
    });
    if (!later) continue;
    schedule_.withdraw(s);
    MessageRecord m = store_.unpack(s);
    for (auto& r : m.recipients)
      if (!is_final(r.state) && r.next_attempt > now) r.next_attempt = now;
    store_.repack(s, m);
    schedule_.add(s);
    ++n;
  }
  if (n > 0 && listener_) {
    // On the next turn: an operator's flush from inside an event handler must not re-enter
    // the Deliverer.
    std::weak_ptr<int> life = alive_;
    clock_.schedule(Duration{0}, [this, life] {
      if (!life.expired() && listener_) listener_->on_due_now();
    });
  }
  return n;
}

// --- inspection -------------------------------------------------------------------------

std::optional<MessageRecord> QueueCore::find(MessageId id) const {
  const SlotId s = store_.find(id);
  if (s == kNoSlot || store_.at(s).has(slot_flag::removed)) return std::nullopt;
  return store_.unpack(s);
}

bool QueueCore::contains(MessageId id) const {
  const SlotId s = store_.find(id);
  return s != kNoSlot && !store_.at(s).has(slot_flag::removed);
}

std::vector<MessageId> QueueCore::list(const QueueFilter& f) const {
  std::vector<MessageId> out;
  const TimePoint now = clock_.now();
  const DestinationTable& dests = store_.destinations();
  store_.each([&](const Slot& slot) {
    if (slot.has(slot_flag::removed)) return;
    if (f.held_only && !slot.has(slot_flag::held)) return;
    if (f.min_age > Duration{0} && now - slot.rec.arrival() < f.min_age) return;
    bool any = false;
    slot.rec.each_recipient([&](std::size_t, const RecipientView& r) {
      if (any) return;
      if (f.state ? r.state != *f.state : is_final(r.state)) return;
      if (!f.destination.empty() && r.route != f.destination &&
          dests[r.destination].key != f.destination)
        return;
      if (!f.error_contains.empty() &&
          Reply(r.reply_code, std::string(r.reply_enhanced), std::string(r.reply_text))
                  .to_string()
                  .find(f.error_contains) == std::string::npos)
        return;
      any = true;
    });
    if (any) out.push_back(MessageId{slot.id});
  });
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::pair<std::string, std::size_t>> QueueCore::depth_by_destination() const {
  std::map<std::string, std::size_t> depth;
  const DestinationTable& dests = store_.destinations();
  store_.each([&](const Slot& slot) {
    if (slot.has(slot_flag::removed)) return;
    slot.rec.each_recipient([&](std::size_t, const RecipientView& r) {
      if (!is_final(r.state)) depth[dests[r.destination].key]++;
    });
  });
  return {depth.begin(), depth.end()};
}

QueueStats QueueCore::stats() const {
  QueueStats s = counters_;
  // Every destination with mail waiting, whether due, deferred, down or only held.
  std::vector<bool> seen(store_.destinations().capacity(), false);
  store_.each([&](const Slot& slot) {
    if (slot.has(slot_flag::removed)) return;
    s.messages++;
    if (slot.has(slot_flag::held)) s.held++;
    slot.rec.each_recipient([&](std::size_t, const RecipientView& r) {
      if (is_final(r.state)) return;
      s.recipients_pending++;
      if (!seen[r.destination]) {
        seen[r.destination] = true;
        s.destinations++;
      }
    });
  });
  s.unwritten = unwritten_.size();
  return s;
}

}  // namespace mailq::detail
