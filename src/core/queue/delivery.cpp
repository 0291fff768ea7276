// The Queue's port for the Deliverer: due jobs out, outcomes in.
#include "core/queue/core.h"

namespace mailq::detail {

std::vector<std::string> QueueCore::due_destinations(TimePoint now, std::size_t max) const {
  std::vector<std::string> keys;
  for (DestinationId d : schedule_.due(now, max)) keys.push_back(store_.destinations()[d].key);
  return keys;
}

Job QueueCore::job_of(TakenJob&& taken) const {
  Job job;
  job.id = taken.id;
  job.destination = store_.destinations().shared(taken.destination);
  job.recipients = std::move(taken.recipients);
  return job;
}

std::vector<Job> QueueCore::take_due(std::string_view destination, TimePoint now, std::size_t max) {
  std::vector<Job> jobs;
  auto d = store_.destinations().find(destination);
  if (!d) return jobs;
  for (auto& t : schedule_.take_due(*d, now, max)) jobs.push_back(job_of(std::move(t)));
  return jobs;
}

std::vector<Job> QueueCore::take_message(MessageId id) {
  std::vector<Job> jobs;
  const SlotId s = store_.find(id);
  if (s == kNoSlot) return jobs;
  if (store_.at(s).has(slot_flag::removed) || store_.at(s).has(slot_flag::held)) return jobs;
  for (auto& t : schedule_.take_message(s)) jobs.push_back(job_of(std::move(t)));
  return jobs;
}

std::optional<Job> QueueCore::take_again(const Job& job) {
  const SlotId s = store_.find(job.id);
  if (s == kNoSlot || store_.at(s).has(slot_flag::removed) || store_.at(s).has(slot_flag::held))
    return std::nullopt;
  auto d = store_.destinations().find(job.destination->key);
  if (!d) return std::nullopt;
  auto taken = schedule_.take_job(s, *d);
  if (!taken) return std::nullopt;
  return job_of(std::move(*taken));
}

bool QueueCore::land(const Job& job, SlotId s) {
  schedule_.withdraw(s);
  auto d = store_.destinations().find(job.destination->key);
  if (d) schedule_.land(s, *d);
  Slot& slot = store_.at(s);
  if (slot.has(slot_flag::removed)) {
    if (!slot.has(slot_flag::in_flight)) store_.free(s);
    return false;
  }
  return true;
}

void QueueCore::untake(const Job& job) {
  const SlotId s = store_.find(job.id);
  if (s == kNoSlot) return;
  if (land(job, s)) schedule_.add(s);
}

std::optional<Result<JobMessage>> QueueCore::load(const Job& job) {
  const SlotId s = store_.find(job.id);
  if (s == kNoSlot || store_.at(s).has(slot_flag::removed)) return std::nullopt;
  JobMessage jm;
  jm.record = store_.unpack(s);
  auto body = storage_.read_body(job.id);
  if (!body) return Result<JobMessage>(body.error());
  jm.body = std::move(body.value());
  return Result<JobMessage>(std::move(jm));
}

void QueueCore::complete(const Job& job, const std::vector<RecipientOutcome>& outcomes,
                         bool attempted) {
  const MessageId id = job.id;
  SlotId s = store_.find(id);
  if (s == kNoSlot || !land(job, s)) return;
  MessageRecord m = store_.unpack(s);
  const std::uint32_t attempts_before = m.attempts;
  const TimePoint now = clock_.now();
  const Applied a = apply_outcomes(m, outcomes, attempted, now, config_, rng_);
  counters_.delivered += a.delivered_count;
  counters_.bounced += a.bounced_count;
  counters_.deferred += a.deferred_count;
  std::size_t row = 0;
  for (const auto& t : a.touched) {
    const RecipientRecord& r = m.recipients[t.index];
    if (t.kind == EventKind::deferred) {
      if (auto appended = storage_.append_attempt(m.id, a.attempt_rows[row++]); !appended)
        storage_trouble("a transient attempt", m.id, appended.error());
    }
    Event ev = make_event(t.kind, m, r, attempts_before);
    ev.diagnostic = t.diagnostic;
    ev.hop = t.hop;
    if (t.kind == EventKind::returned)
      if (auto why = no_dsn_reason(m, r); !why.empty()) ev.diagnostic.push_back(std::move(why));
    emit(std::move(ev));
  }
  // An event sink may have removed the message meanwhile; the DSNs below enqueue (the slot
  // is looked up again after them).
  s = store_.find(id);
  if (s == kNoSlot || store_.at(s).has(slot_flag::removed)) return;
  store_.repack(s, m);
  finish_record(m, a);
}

void QueueCore::finish_record(MessageRecord& m, const Applied& a) {
  bool all_final = std::all_of(m.recipients.begin(), m.recipients.end(),
                               [](const RecipientRecord& r) { return is_final(r.state); });
  if (all_final) {
    // The storage goes once the notification is queued (see send_dsn): with the failure
    // notice when there is one, else with the "relayed" one.
    if (!a.relayed.empty() && a.bounced.empty()) {
      (void)send_dsn(m, a.relayed, DsnAction::relayed, /*remove_original=*/true);
    } else {
      if (!a.relayed.empty()) (void)send_dsn(m, a.relayed, DsnAction::relayed);
      (void)send_dsn(m, a.bounced, DsnAction::failed, /*remove_original=*/true);
    }
    const SlotId s = store_.find(m.id);
    if (s != kNoSlot) erase_message(s);
    message_done(m);
    return;
  }
  if (!a.relayed.empty()) (void)send_dsn(m, a.relayed, DsnAction::relayed);
  if (!a.bounced.empty()) (void)send_dsn(m, a.bounced, DsnAction::failed);
  if (!a.delayed.empty()) (void)send_dsn(m, a.delayed, DsnAction::delayed);
  // The change: the recipients the outcomes touched, and the message's attempts.
  std::vector<std::size_t> touched;
  touched.reserve(a.touched.size());
  for (const auto& t : a.touched) touched.push_back(t.index);
  write_change(change_of(m, std::move(touched)));
  const SlotId s = store_.find(m.id);
  if (s == kNoSlot || store_.at(s).has(slot_flag::removed)) return;
  schedule_.add(s);
  const TimePoint now = clock_.now();
  if (now >= m.arrival + config_.max_lifetime && !store_.at(s).has(slot_flag::in_flight))
    expire_message(s, now);
}

void QueueCore::set_not_before(std::string_view destination, TimePoint until) {
  if (auto d = store_.destinations().find(destination)) schedule_.set_not_before(*d, until);
}

std::size_t QueueCore::pending_jobs(std::string_view destination) const {
  auto d = store_.destinations().find(destination);
  return d ? schedule_.pending(*d) : 0;
}

bool QueueCore::in_flight(MessageId id) const {
  const SlotId s = store_.find(id);
  return s != kNoSlot && store_.at(s).has(slot_flag::in_flight);
}

}  // namespace mailq::detail
