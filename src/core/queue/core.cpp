#include "core/queue/core.h"

#include <algorithm>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "core/text.h"
#include "mailq/dsn.h"

namespace mailq::detail {

QueueCore::QueueCore(Storage& storage, const RouteTable& routes, Clock& clock, EventSink* sink,
                     QueueConfig config)
    : storage_(storage),
      routes_(routes),
      clock_(clock),
      sink_(sink),
      config_(std::move(config)),
      own_reporter_(config_.error_handler),
      reporter_(config_.error_reporter ? config_.error_reporter : &own_reporter_),
      rng_(config_.random_seed ? config_.random_seed : std::random_device{}()),
      store_(routes),
      schedule_(store_) {}

QueueCore::~QueueCore() {
  if (expiry_timer_ != kNoTimer) clock_.cancel(expiry_timer_);
  for (TimerId t : dsn_timers_) clock_.cancel(t);
  // What the storage could not record yet gets a last try (the storage outlives the queue);
  // what still fails is lost with the queue's memory, and a restart delivers from what the
  // storage holds (at least once).
  for (auto& [id, u] : unwritten_) {
    if (u.timer != kNoTimer) clock_.cancel(u.timer);
    (void)(u.removal ? storage_.remove(MessageId{id}) : storage_.update(u.change));
  }
}

MessageId QueueCore::new_id() {
  // Time-ordered: milliseconds since the epoch in the high bits, a sequence in the low 16.
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(clock_.now().time_since_epoch())
                .count();
  std::uint64_t candidate = (static_cast<std::uint64_t>(ms) << 16) | (rng_() & 0xff);
  if (candidate <= last_id_) candidate = last_id_ + 1;
  last_id_ = candidate;
  return MessageId{candidate};
}

MessageId QueueCore::take_id(MessageId requested) {
  // A requested id must be of the queue's kind: its time part not ahead of this clock by more
  // than a clock's skew (ids made later come after it, so one far in the future would end
  // their time order, and the largest would leave no id after it).
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(clock_.now().time_since_epoch())
          .count();
  constexpr std::int64_t kSkewMs = 10 * 60 * 1000;
  const bool plausible =
      ms >= 0 && (requested.value >> 16) <= static_cast<std::uint64_t>(ms) + kSkewMs;
  if (!requested || !plausible || store_.find(requested) != kNoSlot ||
      inserting_.contains(requested.value))
    return new_id();
  // Ids made later are above it: new_id never hands it out again.
  last_id_ = std::max(last_id_, requested.value);
  return requested;
}

std::string QueueCore::destination_of(std::string_view address, std::string_view route_name) const {
  std::string_view domain = domain_of(address);
  const Route* route = routes_.find(route_name);
  if (!route) route = &routes_.lookup(domain);
  return destination_key(*route, to_lower(domain));
}

std::string QueueCore::destination_of(const RecipientRecord& r) const {
  return destination_of(r.address, r.route);
}

void QueueCore::emit(Event&& ev) {
  reporter_->deliver(sink_, ev, clock_.now());
}

Event QueueCore::make_event(EventKind k, const MessageRecord& m, const RecipientRecord& r,
                            std::uint32_t attempts_before) const {
  return message_event(k, m, r, clock_.now(), storage_.locator(m, attempts_before),
                       destination_of(r));
}

void QueueCore::notify_new_work(MessageId id) {
  if (!listener_) return;
  std::weak_ptr<int> life = alive_;
  clock_.schedule(Duration{0}, [this, life, id] {
    if (!life.expired() && listener_) listener_->on_new_work(id);
  });
}

// --- enqueue and recovery -------------------------------------------------------------

void QueueCore::enqueue(const Envelope& envelope, std::string body, Queue::EnqueueDone done,
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
  if (auto problem = check_body(body)) {
    done(std::move(*problem));
    return;
  }

  auto entry = std::make_shared<MessageRecord>();
  MessageRecord& m = *entry;
  m.id = take_id(options.id);
  m.reverse_path = envelope.reverse_path ? envelope.reverse_path->to_string() : std::string();
  m.source_channel = options.source_channel;
  m.message_id = header_value(body, "Message-ID");
  if (check_envelope_value(m.message_id)) m.message_id.clear();
  m.envid = envelope.envid;
  m.ret = envelope.ret;
  m.arrival = clock_.now();
  if (options.arrival && *options.arrival < m.arrival) m.arrival = *options.arrival;
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

  std::weak_ptr<int> life = alive_;
  inserting_.insert(m.id.value);
  storage_.insert(m, body, [this, life, entry, done = std::move(done)](Result<void> stored) {
    if (life.expired()) {
      done(Error(errc::shutting_down, "the queue is gone"));
      return;
    }
    inserting_.erase(entry->id.value);
    if (!stored) {
      const Error& e = stored.error();
      // A full disk stays a full disk (452 4.3.1 for an SMTP client); anything else the
      // storage says is a storage failure.
      const errc code = e.code == errc::storage_full ? errc::storage_full : errc::storage_failure;
      done(Error(code, "could not store the message: " +
                           (e.message.empty() ? e.code.message() : e.message)));
      return;
    }
    const MessageRecord& m = *entry;
    const SlotId s = store_.add(m);
    schedule_.push_expiry(m.arrival + config_.max_lifetime, m.id);
    schedule_.add(s);
    arm_expiry_timer();
    counters_.enqueued++;
    for (const auto& r : m.recipients) emit(make_event(EventKind::enqueued, m, r, 0));
    if (!m.held) notify_new_work(m.id);
    done(m.id);
  });
}

Result<void> QueueCore::recover(RecoveryReport* report) {
  // A recipient's route names a route of the table it was queued with; one the table no
  // longer has is replaced by the route the table gives its domain now.
  std::size_t rerouted = 0;
  std::set<std::string> gone;
  std::string known;  // the last route name found (most recipients share a few)
  Result<void> loaded = storage_.load(
      [&](MessageRecord&& rec) {
        if (store_.find(rec.id) != kNoSlot) return;
        last_id_ = std::max(last_id_, rec.id.value);
        for (auto& r : rec.recipients) {
          if (r.route == known || is_final(r.state)) continue;
          if (routes_.find(r.route)) {
            known = r.route;
            continue;
          }
          gone.insert(r.route);
          r.route = routes_.lookup(domain_of(r.address)).name;
          ++rerouted;
        }
        const SlotId s = store_.add(rec);
        schedule_.push_expiry(rec.arrival + config_.max_lifetime, rec.id);
        schedule_.add(s);
      },
      report);
  if (report) {
    report->rerouted = rerouted;
    report->gone_routes.assign(gone.begin(), gone.end());
  }
#if defined(__GLIBC__)
  // A storage builds what it loads in memory before handing it over (the segment spool
  // replays every segment first); freed, those pages stay resident in glibc's heap unless
  // returned: a recovered million messages would keep twice their memory.
  malloc_trim(0);
#endif
  arm_expiry_timer();
  return loaded;
}

// --- expiry ----------------------------------------------------------------------------

void QueueCore::arm_expiry_timer() {
  const TimePoint next = schedule_.next_expiry();
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

void QueueCore::expire_due() {
  const TimePoint now = clock_.now();
  for (MessageId id : schedule_.pop_expired(now)) {
    const SlotId s = store_.find(id);
    if (s == kNoSlot || store_.at(s).has(slot_flag::removed)) continue;
    if (store_.at(s).has(slot_flag::in_flight)) {
      // It expires when that attempt completes; should the job come back unattempted, look
      // again in a second.
      schedule_.push_expiry(now + std::chrono::seconds(1), id);
      continue;
    }
    expire_message(s, now);
  }
  arm_expiry_timer();
}

void QueueCore::expire_message(SlotId s, TimePoint now) {
  MessageRecord m = store_.unpack(s);
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
    if (auto why = no_dsn_reason(m, r); !why.empty()) ev.diagnostic.push_back(std::move(why));
    emit(std::move(ev));
  }
  (void)send_dsn(m, expired, DsnAction::failed, /*remove_original=*/true);
  s = store_.find(m.id);
  if (s != kNoSlot && !store_.at(s).has(slot_flag::removed)) erase_message(s);
  message_done(m);
}

void QueueCore::message_done(const MessageRecord& m) {
  if (config_.on_message_done) config_.on_message_done(m);
}

// --- notifications ------------------------------------------------------------------------

Result<void> QueueCore::send_dsn(const MessageRecord& m, const std::vector<std::size_t>& rcpts,
                                 DsnAction action, bool remove_original) {
  // With `remove_original`, the message's storage is removed only once the notification is
  // durable: a full disk must not lose the sender's bounce together with the message.
  auto no_dsn = [&]() -> Result<void> { return remove_original ? remove_stored(m.id) : success(); };
  std::optional<DsnInput> in = dsn_due(m, rcpts, action, config_, clock_.now());
  if (!in) return no_dsn();
  auto body = storage_.read_body(m.id);
  std::string original = body ? std::move(body.value()) : std::string();
  in->original = original;
  std::string dsn = build_dsn(*in);

  auto sender = Address::parse(m.reverse_path);
  if (!sender) return no_dsn();  // validated at enqueue; cannot happen for a recovered spool
  auto pending = std::make_shared<PendingDsn>();
  pending->envelope.recipients.emplace_back(sender.value());
  pending->body = std::move(dsn);
  pending->about = m.id;
  pending->remove_original = remove_original;
  queue_dsn(std::move(pending));
  return success();
}

void QueueCore::queue_dsn(std::shared_ptr<PendingDsn> pending) {
  EnqueueOptions opts;
  opts.source_channel = "bounce";
  std::string body = pending->body;  // kept in `pending` for a retry
  std::weak_ptr<int> life = alive_;
  enqueue(
      pending->envelope, std::move(body),
      [this, life, pending](Result<MessageId> r) {
        if (life.expired()) return;
        if (r) {
          if (pending->remove_original) (void)remove_stored(pending->about);
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

}  // namespace mailq::detail
