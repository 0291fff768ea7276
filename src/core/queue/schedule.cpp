#include "core/queue/schedule.h"

#include <algorithm>

namespace mailq::detail {

namespace {
struct LaterDue {
  template <class W>
  bool operator()(const W& a, const W& b) const {
    return a.due != b.due ? a.due > b.due : a.slot > b.slot;
  }
};
}  // namespace

Schedule::DestQueue& Schedule::queue_of(DestinationId d) {
  if (queues_.size() <= d) queues_.resize(static_cast<std::size_t>(d) + 1);
  DestQueue& q = queues_[d];
  if (!q.referenced) {
    store_.destinations().retain(d);
    q.referenced = true;
  }
  return q;
}

void Schedule::touch(DestinationId d) {
  DestQueue& q = queues_[d];
  while (!q.waiting.empty() && stale(q.waiting.front())) {
    std::pop_heap(q.waiting.begin(), q.waiting.end(), LaterDue());
    q.waiting.pop_back();
  }
  if (q.waiting.size() > 2 * q.live + 32) {
    // Withdrawn jobs deep in the heap: drop them so the heap stays within twice its jobs.
    q.waiting.erase(std::remove_if(q.waiting.begin(), q.waiting.end(),
                                   [&](const Waiting& w) { return stale(w); }),
                    q.waiting.end());
    std::make_heap(q.waiting.begin(), q.waiting.end(), LaterDue());
  }
  TimePoint key = TimePoint::max();
  if (!q.waiting.empty()) key = std::max(q.waiting.front().due, q.not_before);
  if (key != q.order_key) {
    if (q.order_key != TimePoint::max()) order_.erase({q.order_key, d});
    q.order_key = key;
    if (key != TimePoint::max()) order_.insert({key, d});
  }
  if (q.waiting.empty() && q.not_before == TimePoint{} && q.referenced) {
    // Forget empty destinations, so that nothing grows with every domain ever seen.
    q = DestQueue{};
    store_.destinations().release(d);
  }
}

std::vector<std::pair<DestinationId, TimePoint>> Schedule::jobs_of(SlotId s) const {
  std::vector<std::pair<DestinationId, TimePoint>> due;
  const Slot& slot = store_.at(s);
  if (slot.has(slot_flag::held) || slot.has(slot_flag::removed)) return due;
  const std::vector<DestinationId>* in_flight =
      slot.has(slot_flag::in_flight) ? flying(s) : nullptr;
  // Earliest due time of the pending recipients, per destination not already in flight.
  slot.rec.each_recipient([&](std::size_t, const RecipientView& r) {
    if (is_final(r.state)) return;
    const DestinationId d = r.destination;
    if (in_flight && std::find(in_flight->begin(), in_flight->end(), d) != in_flight->end()) return;
    auto it = std::find_if(due.begin(), due.end(), [&](auto& p) { return p.first == d; });
    if (it == due.end())
      due.emplace_back(d, r.next_attempt);
    else
      it->second = std::min(it->second, r.next_attempt);
  });
  return due;
}

void Schedule::add(SlotId s) {
  Slot& slot = store_.at(s);
  if (slot.has(slot_flag::scheduled)) return;
  slot.set(slot_flag::scheduled);
  for (auto& [d, when] : jobs_of(s)) {
    DestQueue& q = queue_of(d);
    q.waiting.push_back({when, s, slot.gen});
    std::push_heap(q.waiting.begin(), q.waiting.end(), LaterDue());
    q.live++;
    touch(d);
  }
}

void Schedule::withdraw(SlotId s) {
  Slot& slot = store_.at(s);
  if (!slot.has(slot_flag::scheduled)) return;
  auto jobs = jobs_of(s);
  slot.gen++;  // its heap entries are stale from here on
  slot.clear(slot_flag::scheduled);
  for (auto& [d, when] : jobs) {
    if (d >= queues_.size() || !queues_[d].referenced) continue;
    DestQueue& q = queues_[d];
    if (q.live) q.live--;
    touch(d);
  }
}

std::vector<DestinationId> Schedule::due(TimePoint now, std::size_t max) const {
  std::vector<DestinationId> out;
  for (auto it = order_.begin(); it != order_.end() && out.size() < max; ++it) {
    if (it->first > now) break;
    out.push_back(it->second);
  }
  return out;
}

TimePoint Schedule::next_due() const {
  return order_.empty() ? TimePoint::max() : order_.begin()->first;
}

std::vector<TakenJob> Schedule::take_due(DestinationId d, TimePoint now, std::size_t max) {
  std::vector<TakenJob> jobs;
  if (d >= queues_.size() || !queues_[d].referenced) return jobs;
  DestQueue& q = queues_[d];
  if (q.not_before > now) return jobs;
  while (!q.waiting.empty() && jobs.size() < max) {
    const Waiting top = q.waiting.front();
    if (!stale(top) && top.due > now) break;
    std::pop_heap(q.waiting.begin(), q.waiting.end(), LaterDue());
    q.waiting.pop_back();
    if (stale(top)) continue;
    q.live--;
    Slot& slot = store_.at(top.slot);
    TakenJob job;
    job.id = MessageId{slot.id};
    job.destination = d;
    slot.rec.each_recipient([&](std::size_t i, const RecipientView& r) {
      if (!is_final(r.state) && r.next_attempt <= now && r.destination == d)
        job.recipients.push_back(i);
    });
    // In flight for this destination: its jobs elsewhere (still waiting) stay valid, since
    // jobs_of now leaves this destination out, as the popped entry does.
    in_flight_[slot.id].push_back(d);
    slot.set(slot_flag::in_flight);
    jobs.push_back(std::move(job));
  }
  touch(d);  // may forget the destination
  return jobs;
}

std::vector<TakenJob> Schedule::take_message(SlotId s) {
  std::vector<TakenJob> jobs;
  auto waiting = jobs_of(s);
  if (waiting.empty()) return jobs;
  withdraw(s);
  Slot& slot = store_.at(s);
  auto& flying = in_flight_[slot.id];
  for (const auto& waiting_at : waiting) {
    const DestinationId d = waiting_at.first;
    TakenJob job;
    job.id = MessageId{slot.id};
    job.destination = d;
    slot.rec.each_recipient([&](std::size_t i, const RecipientView& r) {
      if (!is_final(r.state) && r.destination == d) job.recipients.push_back(i);
    });
    flying.push_back(d);
    jobs.push_back(std::move(job));
  }
  slot.set(slot_flag::in_flight);
  return jobs;
}

std::optional<TakenJob> Schedule::take_job(SlotId s, DestinationId d) {
  auto waiting = jobs_of(s);
  if (std::none_of(waiting.begin(), waiting.end(), [d](auto& w) { return w.first == d; }))
    return std::nullopt;
  withdraw(s);
  Slot& slot = store_.at(s);
  TakenJob job;
  job.id = MessageId{slot.id};
  job.destination = d;
  slot.rec.each_recipient([&](std::size_t i, const RecipientView& r) {
    if (!is_final(r.state) && r.destination == d) job.recipients.push_back(i);
  });
  in_flight_[slot.id].push_back(d);
  slot.set(slot_flag::in_flight);
  add(s);  // its jobs elsewhere wait as they did
  return job;
}

void Schedule::land(SlotId s, DestinationId d) {
  Slot& slot = store_.at(s);
  auto it = in_flight_.find(slot.id);
  if (it != in_flight_.end()) {
    auto f = std::find(it->second.begin(), it->second.end(), d);
    if (f != it->second.end()) it->second.erase(f);
    if (!it->second.empty()) return;
    in_flight_.erase(it);
  }
  slot.clear(slot_flag::in_flight);
}

const std::vector<DestinationId>* Schedule::flying(SlotId s) const {
  auto it = in_flight_.find(store_.at(s).id);
  return it == in_flight_.end() ? nullptr : &it->second;
}

void Schedule::set_not_before(DestinationId d, TimePoint until) {
  if (until == TimePoint{}) {
    if (d >= queues_.size() || !queues_[d].referenced) return;
    queues_[d].not_before = TimePoint{};
    touch(d);
    return;
  }
  queue_of(d).not_before = until;
  touch(d);
}

void Schedule::clear_not_before() {
  for (DestinationId d = 0; d < queues_.size(); ++d) {
    if (!queues_[d].referenced || queues_[d].not_before == TimePoint{}) continue;
    queues_[d].not_before = TimePoint{};
    touch(d);
  }
}

std::size_t Schedule::pending(DestinationId d) const {
  return d < queues_.size() ? queues_[d].live : 0;
}

// --- expiry -----------------------------------------------------------------------------

void Schedule::push_expiry(TimePoint when, MessageId id) {
  expiry_.emplace_back(when, id.value);
  std::push_heap(expiry_.begin(), expiry_.end(), std::greater<>());
}

std::vector<MessageId> Schedule::pop_expired(TimePoint now) {
  std::vector<MessageId> due;
  while (!expiry_.empty() && expiry_.front().first <= now) {
    due.push_back(MessageId{expiry_.front().second});
    std::pop_heap(expiry_.begin(), expiry_.end(), std::greater<>());
    expiry_.pop_back();
  }
  return due;
}

TimePoint Schedule::next_expiry() {
  // Drop entries of messages that are gone (delivered, removed) from the top, and all of
  // them when they outnumber the messages.
  auto gone = [&](const Expiry& e) { return store_.find(MessageId{e.second}) == kNoSlot; };
  while (!expiry_.empty() && gone(expiry_.front())) {
    std::pop_heap(expiry_.begin(), expiry_.end(), std::greater<>());
    expiry_.pop_back();
  }
  if (expiry_.size() > 2 * store_.count() + 64) {
    expiry_.erase(std::remove_if(expiry_.begin(), expiry_.end(), gone), expiry_.end());
    std::make_heap(expiry_.begin(), expiry_.end(), std::greater<>());
  }
  return expiry_.empty() ? TimePoint::max() : expiry_.front().first;
}

}  // namespace mailq::detail
