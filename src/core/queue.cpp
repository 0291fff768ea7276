#include "mailq/queue.h"

#include <algorithm>
#include <cmath>
#include <string_view>

#include "core/text.h"
#include "mailq/dsn.h"

namespace mailq {

// --- RetryPolicy ------------------------------------------------------------------------

Duration RetryPolicy::delay(std::uint32_t failures, double unit) const {
  if (failures == 0) failures = 1;
  Duration base;
  if (!schedule.empty()) {
    base = schedule[std::min<std::size_t>(failures, schedule.size()) - 1];
  } else {
    double ms = static_cast<double>(floor.count()) * std::pow(factor, failures - 1);
    double cap = static_cast<double>(ceiling.count());
    base = Duration{static_cast<Duration::rep>(std::min(ms, cap))};
    if (base < floor) base = floor;
  }
  if (jitter > 0) {
    double spread = (unit * 2.0 - 1.0) * jitter;  // in [-jitter, +jitter)
    base = Duration{static_cast<Duration::rep>(static_cast<double>(base.count()) * (1.0 + spread))};
  }
  return std::max(base, Duration{0});
}

// --- Queue ------------------------------------------------------------------------------

Queue::Queue(Storage& storage, const RouteTable& routes, Clock& clock, EventSink* sink,
             QueueConfig config)
    : storage_(storage),
      routes_(routes),
      clock_(clock),
      sink_(sink),
      config_(std::move(config)),
      rng_(config_.random_seed ? config_.random_seed : std::random_device{}()),
      sink_guard_(std::make_unique<detail::SinkGuard>()) {}

Queue::~Queue() {
  if (expiry_timer_ != kNoTimer) clock_.cancel(expiry_timer_);
  for (TimerId t : dsn_timers_) clock_.cancel(t);
}

MessageId Queue::new_id() {
  // Time-ordered: milliseconds since the epoch in the high bits, a sequence in the low 16.
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(clock_.now().time_since_epoch())
                .count();
  std::uint64_t candidate = (static_cast<std::uint64_t>(ms) << 16) | (rng_() & 0xff);
  if (candidate <= last_id_) candidate = last_id_ + 1;
  last_id_ = candidate;
  return MessageId{candidate};
}

std::string Queue::destination_of(const RecipientRecord& r) const {
  std::string_view domain = detail::domain_of(r.address);
  const Route* route = routes_.find(r.route);
  if (!route) route = &routes_.lookup(domain);
  return destination_key(*route, detail::to_lower(domain));
}

std::string Queue::queue_file(const MessageRecord& m) const {
  std::string channel = m.recipients.empty() ? std::string("local") : m.recipients[0].route;
  return "queue/" + channel + "/" + queue_file_name(m.id, m.attempts);
}

Queue::DestQueue& Queue::dest(const std::string& key) {
  auto it = dests_.find(key);
  if (it == dests_.end()) {
    auto d = std::make_unique<DestQueue>();
    d->key = key;
    it = dests_.emplace(key, std::move(d)).first;
  }
  return *it->second;
}

void Queue::touch_destination(DestQueue& d) {
  TimePoint key = TimePoint::max();
  if (!d.waiting.empty()) key = std::max(d.waiting.begin()->first, d.not_before);
  if (key == d.order_key) return;
  if (d.order_key != TimePoint::max()) dest_order_.erase({d.order_key, &d});
  d.order_key = key;
  if (key != TimePoint::max()) dest_order_.insert({key, &d});
  if (d.waiting.empty() && d.not_before == TimePoint{}) {
    // Forget empty destinations so that the map does not grow with every domain ever seen.
    dests_.erase(d.key);
    return;
  }
  if (schedule_listener_) schedule_listener_();
}

void Queue::schedule_jobs(Entry& e) {
  MessageRecord& m = e.record;
  if (m.held || e.removed) return;
  // Earliest due time of the pending recipients, per destination not already in flight.
  std::vector<std::pair<std::string, TimePoint>> due;
  for (const auto& r : m.recipients) {
    if (is_final(r.state)) continue;
    std::string key = destination_of(r);
    if (std::find(e.in_flight.begin(), e.in_flight.end(), key) != e.in_flight.end()) continue;
    auto it = std::find_if(due.begin(), due.end(), [&](auto& p) { return p.first == key; });
    if (it == due.end())
      due.emplace_back(std::move(key), r.next_attempt);
    else
      it->second = std::min(it->second, r.next_attempt);
  }
  for (auto& [key, when] : due) {
    DestQueue& d = dest(key);
    bool already =
        std::any_of(e.scheduled.begin(), e.scheduled.end(), [&](auto& s) { return s.first == &d; });
    if (already) continue;
    d.waiting.insert({when, m.id.value});
    e.scheduled.emplace_back(&d, when);
    touch_destination(d);
  }
}

void Queue::unschedule_jobs(Entry& e) {
  auto scheduled = std::move(e.scheduled);
  e.scheduled.clear();
  for (auto& [d, when] : scheduled) {
    d->waiting.erase({when, e.record.id.value});
    touch_destination(*d);
  }
}

void Queue::emit(Event&& ev) {
  sink_guard_->deliver(sink_, ev, config_.error_handler, clock_.now());
}

Event Queue::make_event(EventKind k, const MessageRecord& m, const RecipientRecord& r,
                        std::uint32_t attempts_before) const {
  Event ev;
  ev.kind = k;
  ev.time = clock_.now();
  ev.size = m.size;
  ev.sender = m.reverse_path;
  ev.original_recipient = r.orcpt.empty() ? "rfc822;" + r.address : r.orcpt;
  ev.recipient = r.address;
  std::string channel = m.recipients.empty() ? std::string("local") : m.recipients[0].route;
  ev.queue_file = "queue/" + channel + "/" + queue_file_name(m.id, attempts_before);
  ev.message_id = m.message_id;
  ev.id = m.id;
  ev.arrival = m.arrival;
  ev.reply = r.last_reply;
  ev.destination = destination_of(r);
  if (k == EventKind::enqueued) {
    ev.source_channel = m.source_channel;
    ev.dest_channel = r.route;
  } else {
    ev.source_channel = r.route;
  }
  return ev;
}

void Queue::notify_new_work(MessageId id) {
  if (!listener_) return;
  clock_.schedule(Duration{0}, [this, id] {
    if (listener_) listener_(id);
  });
}

void Queue::enqueue(const Envelope& envelope, std::string body, EnqueueDone done,
                    const EnqueueOptions& options) {
  std::string why;
  if (auto ec = envelope.validate(&why)) {
    done(Error(ec, why));
    return;
  }
  if (auto ec = check_envelope_value(options.source_channel, &why)) {
    done(Error(ec, "source channel: " + why));
    return;
  }
  if (config_.max_message_size && body.size() > config_.max_message_size) {
    done(Error(errc::message_too_large, "message of " + std::to_string(body.size()) +
                                            " octets exceeds the limit of " +
                                            std::to_string(config_.max_message_size)));
    return;
  }
  if (body.empty()) {
    done(Error(errc::invalid_parameter, "empty message body"));
    return;
  }
  if (auto problem = detail::check_body(body)) {
    done(std::move(*problem));
    return;
  }

  auto entry = std::make_shared<MessageRecord>();
  MessageRecord& m = *entry;
  m.id = new_id();
  m.reverse_path = envelope.reverse_path ? envelope.reverse_path->to_string() : std::string();
  m.source_channel = options.source_channel;
  m.message_id = detail::header_value(body, "Message-ID");
  if (check_envelope_value(m.message_id)) m.message_id.clear();
  m.envid = envelope.envid;
  m.ret = envelope.ret;
  m.arrival = clock_.now();
  m.size = body.size();
  m.held = options.hold;
  m.recipients.reserve(envelope.recipients.size());
  for (const auto& rc : envelope.recipients) {
    RecipientRecord r;
    r.address = rc.address.to_string();
    r.orcpt = rc.orcpt;
    r.notify = rc.notify;
    r.route = routes_.lookup(rc.address.routing_domain()).name;
    r.state = RecipientState::queued;
    r.next_attempt = m.arrival;
    m.recipients.push_back(std::move(r));
  }

  storage_.insert(m, body, [this, entry, done = std::move(done)](std::error_code ec) {
    if (ec) {
      std::string why = storage_.last_error_text();
      done(Error(errc::storage_failure,
                 "could not store the message: " + (why.empty() ? ec.message() : why)));
      return;
    }
    MessageId id = entry->id;
    Entry e;
    e.record = std::move(*entry);
    auto [it, ok] = messages_.emplace(id.value, std::move(e));
    Entry& stored = it->second;
    expiry_.insert({stored.record.arrival + config_.max_lifetime, id.value});
    arm_expiry_timer();
    counters_.enqueued++;
    for (const auto& r : stored.record.recipients)
      emit(make_event(EventKind::enqueued, stored.record, r, 0));
    schedule_jobs(stored);
    if (!stored.record.held) notify_new_work(id);
    done(id);
  });
}

std::error_code Queue::recover(RecoveryReport* report) {
  auto ec = storage_.load(
      [this](MessageRecord&& rec) {
        MessageId id = rec.id;
        if (messages_.count(id.value)) return;
        last_id_ = std::max(last_id_, id.value);
        Entry e;
        e.record = std::move(rec);
        auto [it, ok] = messages_.emplace(id.value, std::move(e));
        expiry_.insert({it->second.record.arrival + config_.max_lifetime, id.value});
        schedule_jobs(it->second);
      },
      report);
  arm_expiry_timer();
  if (schedule_listener_) schedule_listener_();
  return ec;
}

// --- operator actions -------------------------------------------------------------------

std::error_code Queue::hold(MessageId id) {
  auto it = messages_.find(id.value);
  if (it == messages_.end()) return make_error_code(errc::not_found);
  Entry& e = it->second;
  if (e.record.held) return {};
  // The storage first: a hold the spool did not record would be gone after a restart, and
  // the operator is told it failed, so nothing changes.
  e.record.held = true;
  if (auto ec = storage_.update(e.record)) {
    e.record.held = false;
    return ec;
  }
  unschedule_jobs(e);
  return {};
}

std::error_code Queue::release(MessageId id) {
  auto it = messages_.find(id.value);
  if (it == messages_.end()) return make_error_code(errc::not_found);
  Entry& e = it->second;
  if (!e.record.held) return {};
  // The storage first: a message released in memory only would be delivered while its file
  // stays held, and come back held (and be sent again) after a restart.
  e.record.held = false;
  if (auto ec = storage_.update(e.record)) {
    e.record.held = true;
    return ec;
  }
  schedule_jobs(e);
  notify_new_work(id);
  return {};
}

std::vector<MessageId> Queue::pending_for(std::string_view destination, bool held) const {
  std::vector<MessageId> ids;
  for (const auto& [k, e] : messages_) {
    if (e.removed || e.record.held != held) continue;
    for (const auto& r : e.record.recipients) {
      if (!is_final(r.state) && (destination_of(r) == destination || r.route == destination)) {
        ids.push_back(e.record.id);
        break;
      }
    }
  }
  return ids;
}

std::size_t Queue::hold_destination(std::string_view destination) {
  std::size_t n = 0;
  for (auto id : pending_for(destination, false))
    if (!hold(id)) ++n;
  return n;
}

std::size_t Queue::release_destination(std::string_view destination) {
  std::size_t n = 0;
  for (auto id : pending_for(destination, true))
    if (!release(id)) ++n;
  return n;
}

void Queue::erase_message(std::uint64_t id) {
  auto it = messages_.find(id);
  if (it == messages_.end()) return;
  Entry& e = it->second;
  unschedule_jobs(e);
  expiry_.erase({e.record.arrival + config_.max_lifetime, id});
  if (!e.in_flight.empty()) {
    // The Deliverer still holds a job: keep a tombstone until it completes.
    e.removed = true;
    return;
  }
  messages_.erase(it);
}

std::error_code Queue::remove(MessageId id) {
  auto it = messages_.find(id.value);
  if (it == messages_.end() || it->second.removed) return make_error_code(errc::not_found);
  auto ec = storage_.remove(id);
  erase_message(id.value);
  return ec;
}

std::error_code Queue::bounce(MessageId id, std::string_view reason) {
  auto it = messages_.find(id.value);
  if (it == messages_.end() || it->second.removed) return make_error_code(errc::not_found);
  Entry& e = it->second;
  std::vector<std::size_t> bounced;
  Reply reply(550, "5.0.0", "[internal] " + std::string(reason));
  for (std::size_t i = 0; i < e.record.recipients.size(); ++i) {
    auto& r = e.record.recipients[i];
    if (is_final(r.state)) continue;
    r.state = RecipientState::bounced;
    r.last_reply = reply;
    bounced.push_back(i);
    counters_.bounced++;
    Event ev = make_event(EventKind::returned, e.record, r, e.record.attempts);
    ev.diagnostic.push_back(reply.to_string());
    emit(std::move(ev));
  }
  auto ec = send_dsn(e.record, bounced, false, /*remove_original=*/true);
  erase_message(id.value);
  return ec;
}

std::size_t Queue::make_all_due() {
  TimePoint now = clock_.now();
  std::size_t n = 0;
  for (auto& [k, e] : messages_) {
    if (e.record.held || e.removed) continue;
    bool changed = false;
    for (auto& r : e.record.recipients) {
      if (!is_final(r.state) && r.next_attempt > now) {
        r.next_attempt = now;
        changed = true;
      }
    }
    if (changed) {
      unschedule_jobs(e);
      schedule_jobs(e);
      ++n;
    }
  }
  return n;
}

// --- inspection -------------------------------------------------------------------------

const MessageRecord* Queue::find(MessageId id) const {
  auto it = messages_.find(id.value);
  if (it == messages_.end() || it->second.removed) return nullptr;
  return &it->second.record;
}

std::vector<MessageId> Queue::list(const QueueFilter& f) const {
  std::vector<MessageId> out;
  TimePoint now = clock_.now();
  for (const auto& [k, e] : messages_) {
    const MessageRecord& m = e.record;
    if (e.removed) continue;
    if (f.held_only && !m.held) continue;
    if (f.min_age > Duration{0} && now - m.arrival < f.min_age) continue;
    bool any = false;
    for (const auto& r : m.recipients) {
      if (f.state ? r.state != *f.state : is_final(r.state)) continue;
      if (!f.destination.empty() && destination_of(r) != f.destination && r.route != f.destination)
        continue;
      if (!f.error_contains.empty() &&
          r.last_reply.to_string().find(f.error_contains) == std::string::npos)
        continue;
      any = true;
      break;
    }
    if (any) out.push_back(m.id);
  }
  std::sort(out.begin(), out.end());
  return out;
}

Result<std::vector<AttemptRecord>> Queue::transient_attempts(MessageId id) const {
  return storage_.read_attempts(id);
}

std::vector<std::pair<std::string, std::size_t>> Queue::depth_by_destination() const {
  std::map<std::string, std::size_t> depth;
  for (const auto& [k, e] : messages_) {
    if (e.removed) continue;
    for (const auto& r : e.record.recipients)
      if (!is_final(r.state)) depth[destination_of(r)]++;
  }
  return {depth.begin(), depth.end()};
}

QueueStats Queue::stats() const {
  QueueStats s = counters_;
  for (const auto& [k, e] : messages_) {
    if (e.removed) continue;
    s.messages++;
    if (e.record.held) s.held++;
    for (const auto& r : e.record.recipients)
      if (!is_final(r.state)) s.recipients_pending++;
  }
  s.destinations = dests_.size();
  return s;
}

// --- the Deliverer's side ---------------------------------------------------------------

std::vector<std::string> Queue::due_destinations(TimePoint now, std::size_t max) const {
  std::vector<std::string> out;
  for (auto it = dest_order_.begin(); it != dest_order_.end() && out.size() < max; ++it) {
    if (it->first > now) break;
    out.push_back(it->second->key);
  }
  return out;
}

TimePoint Queue::next_due() const {
  return dest_order_.empty() ? TimePoint::max() : dest_order_.begin()->first;
}

std::vector<Job> Queue::take_due(std::string_view destination, TimePoint now, std::size_t max) {
  std::vector<Job> jobs;
  auto dit = dests_.find(std::string(destination));
  if (dit == dests_.end()) return jobs;
  DestQueue& d = *dit->second;
  if (d.not_before > now) return jobs;
  while (!d.waiting.empty() && jobs.size() < max) {
    auto [due, id] = *d.waiting.begin();
    if (due > now) break;
    d.waiting.erase(d.waiting.begin());
    Entry& e = messages_.at(id);
    e.scheduled.erase(std::remove_if(e.scheduled.begin(), e.scheduled.end(),
                                     [&](auto& s) { return s.first == &d; }),
                      e.scheduled.end());
    Job job;
    job.id = e.record.id;
    job.destination = d.key;
    for (std::size_t i = 0; i < e.record.recipients.size(); ++i) {
      const auto& r = e.record.recipients[i];
      if (!is_final(r.state) && r.next_attempt <= now && destination_of(r) == d.key)
        job.recipients.push_back(i);
    }
    e.in_flight.push_back(d.key);
    jobs.push_back(std::move(job));
  }
  std::string key = d.key;
  touch_destination(d);  // may erase d
  return jobs;
}

std::vector<Job> Queue::take_message(MessageId id) {
  std::vector<Job> jobs;
  auto it = messages_.find(id.value);
  if (it == messages_.end()) return jobs;
  Entry& e = it->second;
  if (e.removed || e.record.held) return jobs;
  auto scheduled = e.scheduled;
  for (auto& [d, when] : scheduled) {
    Job job;
    job.id = id;
    job.destination = d->key;
    for (std::size_t i = 0; i < e.record.recipients.size(); ++i) {
      const auto& r = e.record.recipients[i];
      if (!is_final(r.state) && destination_of(r) == d->key) job.recipients.push_back(i);
    }
    d->waiting.erase({when, id.value});
    e.in_flight.push_back(d->key);
    jobs.push_back(std::move(job));
    touch_destination(*d);
  }
  e.scheduled.clear();
  return jobs;
}

void Queue::untake(const Job& job) {
  auto it = messages_.find(job.id.value);
  if (it == messages_.end()) return;
  Entry& e = it->second;
  auto f = std::find(e.in_flight.begin(), e.in_flight.end(), job.destination);
  if (f != e.in_flight.end()) e.in_flight.erase(f);
  if (e.removed) {
    if (e.in_flight.empty()) messages_.erase(it);
    return;
  }
  schedule_jobs(e);
}

void Queue::complete(const Job& job, const std::vector<RecipientOutcome>& outcomes,
                     bool attempted) {
  auto it = messages_.find(job.id.value);
  if (it == messages_.end()) return;
  Entry& e = it->second;
  auto f = std::find(e.in_flight.begin(), e.in_flight.end(), job.destination);
  if (f != e.in_flight.end()) e.in_flight.erase(f);
  if (e.removed) {
    if (e.in_flight.empty()) messages_.erase(it);
    return;
  }
  MessageRecord& m = e.record;
  const TimePoint now = clock_.now();
  const std::uint32_t attempts_before = m.attempts;
  if (attempted) m.attempts++;

  std::vector<std::size_t> bounced;
  std::vector<std::size_t> delayed;
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  for (const auto& o : outcomes) {
    if (o.index >= m.recipients.size()) continue;
    RecipientRecord& r = m.recipients[o.index];
    if (is_final(r.state)) continue;
    r.last_reply = o.reply;
    r.remote = o.remote;
    EventKind kind;
    if (o.reply.positive()) {
      r.state = RecipientState::delivered;
      if (o.counts_as_attempt) r.attempts++;
      kind = EventKind::delivered;
      counters_.delivered++;
    } else if (o.reply.permanent()) {
      r.state = RecipientState::bounced;
      if (o.counts_as_attempt) r.attempts++;
      kind = EventKind::returned;
      bounced.push_back(o.index);
      counters_.bounced++;
    } else {
      r.state = RecipientState::deferred;
      kind = EventKind::deferred;
      counters_.deferred++;
      if (o.counts_as_attempt) {
        r.attempts++;
        r.next_attempt = now + config_.retry.delay(r.attempts, unit(rng_));
      }
      // A "delayed" notice, once per recipient, when it has waited long enough (real or
      // self-imposed deferral alike: the sender's mail is late either way).
      if (config_.delay_notice_after > Duration{0} && !r.delay_notified &&
          now - m.arrival >= config_.delay_notice_after) {
        r.delay_notified = true;
        delayed.push_back(o.index);
      }
      AttemptRecord a;
      a.route = r.route;
      a.time = now;
      a.reply = o.reply;
      a.recipient = r.address;
      for (const auto& line : o.diagnostic) {
        if (!a.diagnostic.empty()) a.diagnostic += "; ";
        a.diagnostic += line;
      }
      (void)storage_.append_attempt(m.id, a);
    }
    Event ev = make_event(kind, m, r, attempts_before);
    ev.diagnostic = o.diagnostic;
    if (ev.diagnostic.empty()) ev.diagnostic.push_back(o.reply.to_string());
    emit(std::move(ev));
  }

  bool all_final = std::all_of(m.recipients.begin(), m.recipients.end(),
                               [](const RecipientRecord& r) { return is_final(r.state); });
  if (all_final) {
    // The file goes once the notification is queued (see send_dsn).
    (void)send_dsn(m, bounced, false, /*remove_original=*/true);
    expiry_.erase({m.arrival + config_.max_lifetime, m.id.value});
    messages_.erase(it);
    return;
  }
  if (!bounced.empty()) (void)send_dsn(m, bounced, false);
  if (!delayed.empty()) (void)send_dsn(m, delayed, true);
  (void)storage_.update(m);
  if (now >= m.arrival + config_.max_lifetime && e.in_flight.empty()) {
    expire_message(e, now);
    return;
  }
  schedule_jobs(e);
}

void Queue::set_not_before(std::string_view destination, TimePoint until) {
  if (until == TimePoint{}) {
    auto it = dests_.find(std::string(destination));
    if (it == dests_.end()) return;
    it->second->not_before = TimePoint{};
    touch_destination(*it->second);
    return;
  }
  DestQueue& d = dest(std::string(destination));
  d.not_before = until;
  touch_destination(d);
}

void Queue::clear_not_before() {
  std::vector<DestQueue*> all;
  for (auto& [k, d] : dests_)
    if (d->not_before != TimePoint{}) all.push_back(d.get());
  for (DestQueue* d : all) {
    d->not_before = TimePoint{};
    touch_destination(*d);
  }
}

std::size_t Queue::pending_jobs(std::string_view destination) const {
  auto it = dests_.find(std::string(destination));
  return it == dests_.end() ? 0 : it->second->waiting.size();
}

bool Queue::in_flight(MessageId id) const {
  auto it = messages_.find(id.value);
  return it != messages_.end() && !it->second.in_flight.empty();
}

// --- expiry and notifications ------------------------------------------------------------

void Queue::arm_expiry_timer() {
  TimePoint next = expiry_.empty() ? TimePoint::max() : expiry_.begin()->first;
  if (next == expiry_timer_at_) return;
  if (expiry_timer_ != kNoTimer) clock_.cancel(expiry_timer_);
  expiry_timer_ = kNoTimer;
  expiry_timer_at_ = next;
  if (next == TimePoint::max()) return;
  auto delay = std::chrono::duration_cast<Duration>(next - clock_.now());
  expiry_timer_ = clock_.schedule(std::max(delay, Duration{0}), [this] {
    expiry_timer_ = kNoTimer;
    expiry_timer_at_ = TimePoint::max();
    expire_due();
  });
}

void Queue::expire_due() {
  const TimePoint now = clock_.now();
  std::vector<std::uint64_t> due;
  for (auto it = expiry_.begin(); it != expiry_.end() && it->first <= now; ++it)
    due.push_back(it->second);
  for (auto id : due) {
    auto it = messages_.find(id);
    if (it == messages_.end()) {
      continue;
    }
    // A message with a job in flight expires when that attempt completes.
    if (!it->second.in_flight.empty()) continue;
    expire_message(it->second, now);
  }
  // Keep entries that are still in flight; re-arm for the rest.
  arm_expiry_timer();
}

void Queue::expire_message(Entry& e, TimePoint now) {
  MessageRecord& m = e.record;
  std::vector<std::size_t> expired;
  for (std::size_t i = 0; i < m.recipients.size(); ++i) {
    auto& r = m.recipients[i];
    if (is_final(r.state)) continue;
    std::string last = r.last_reply.empty() ? std::string("no delivery attempt completed")
                                            : r.last_reply.to_string();
    r.state = RecipientState::expired;
    r.last_reply = replies::expired(last);
    expired.push_back(i);
    counters_.expired++;
    Event ev = make_event(EventKind::returned, m, r, m.attempts);
    ev.time = now;
    ev.diagnostic.push_back(r.last_reply.to_string());
    emit(std::move(ev));
  }
  std::uint64_t id = m.id.value;
  (void)send_dsn(m, expired, false, /*remove_original=*/true);
  erase_message(id);
}

std::error_code Queue::send_dsn(const MessageRecord& m, const std::vector<std::size_t>& rcpts,
                                bool delayed, bool remove_original) {
  // With `remove_original`, the message's file is removed only once the notification is
  // durable: a full disk must not lose the sender's bounce together with the message.
  auto no_dsn = [&]() -> std::error_code {
    return remove_original ? storage_.remove(m.id) : std::error_code();
  };
  // Never a notification about a notification (null reverse path), and only to recipients
  // whose NOTIFY asks for it (no NOTIFY parameter means failures are reported).
  if (m.reverse_path.empty() || rcpts.empty()) return no_dsn();
  DsnInput in;
  in.reporting_mta = config_.reporting_mta;
  in.from_address = "MAILER-DAEMON@" + config_.reporting_mta;
  in.to_address = m.reverse_path;
  in.envid = m.envid;
  in.ret = m.ret;
  in.arrival = m.arrival;
  in.now = clock_.now();
  in.original_message_id = m.message_id;
  in.boundary_seed = m.id.to_string();
  for (auto i : rcpts) {
    const RecipientRecord& r = m.recipients[i];
    std::uint8_t want = delayed ? kNotifyDelay : kNotifyFailure;
    if (r.notify & kNotifyNever) continue;
    if (r.notify != kNotifyDefault && !(r.notify & want)) continue;
    DsnRecipient d;
    d.final_recipient = r.address;
    d.original_recipient = r.orcpt;
    d.action = delayed ? DsnAction::delayed : DsnAction::failed;
    d.reply = r.last_reply;
    d.remote_mta = detail::remote_host_of(r.remote);
    d.last_attempt = in.now;
    if (delayed) d.will_retry_until = m.arrival + config_.max_lifetime;
    in.recipients.push_back(std::move(d));
  }
  if (in.recipients.empty()) return no_dsn();
  auto body = storage_.read_body(m.id);
  std::string original = body ? std::move(body.value()) : std::string();
  in.original = original;
  std::string dsn = build_dsn(in);

  auto sender = Address::parse(m.reverse_path);
  if (!sender) return no_dsn();  // validated at enqueue; cannot happen for a recovered spool
  auto pending = std::make_shared<PendingDsn>();
  pending->envelope.recipients.emplace_back(sender.value());
  pending->body = std::move(dsn);
  pending->about = m.id;
  pending->remove_original = remove_original;
  queue_dsn(std::move(pending));
  return {};
}

void Queue::queue_dsn(std::shared_ptr<PendingDsn> pending) {
  EnqueueOptions opts;
  opts.source_channel = "bounce";
  std::string body = pending->body;  // kept in `pending` for a retry
  enqueue(
      pending->envelope, std::move(body),
      [this, pending](Result<MessageId> r) {
        if (r) {
          if (pending->remove_original) (void)storage_.remove(pending->about);
          return;
        }
        // Kept in memory and tried again; the original stays in the storage meanwhile, so a
        // restart brings the message (and its bounce) back.
        const Duration retry = std::min<Duration>(config_.retry.floor, std::chrono::minutes(1));
        Event ev;
        ev.kind = EventKind::notice;
        ev.time = clock_.now();
        ev.id = pending->about;
        ev.diagnostic.push_back(
            "could not queue the delivery status notification for " + pending->about.to_string() +
            ": " + r.error().message + "; trying again in " +
            std::to_string(std::chrono::duration_cast<std::chrono::seconds>(retry).count()) + " s");
        emit(std::move(ev));
        auto id = std::make_shared<TimerId>(kNoTimer);
        *id = clock_.schedule(retry, [this, pending, id] {
          dsn_timers_.erase(*id);
          queue_dsn(pending);
        });
        if (*id != kNoTimer) dsn_timers_.insert(*id);
      },
      opts);
}

}  // namespace mailq
