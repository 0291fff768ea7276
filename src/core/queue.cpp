#include "mailq/queue.h"

#include <algorithm>
#include <cmath>
#include <string_view>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "core/id_index.h"
#include "core/packed_record.h"
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

// --- the store ---------------------------------------------------------------------------

namespace {
constexpr std::uint8_t kHeld = 1;
constexpr std::uint8_t kRemoved = 2;   // removed while a job was in flight: a tombstone
constexpr std::uint8_t kInFlight = 4;  // the Deliverer holds a job (Store::in_flight)
// Its jobs are in the destination heaps (schedule_jobs ran, unschedule_jobs did not since):
// what an event sink does to a message while the queue has its jobs withdrawn cannot
// withdraw them twice.
constexpr std::uint8_t kScheduled = 8;
}  // namespace

// One message: 24 bytes here, its packed record, a slot number in the index, and one heap
// entry per destination it waits for.
struct Queue::Slot {
  std::uint64_t id = 0;  // 0: free
  detail::PackedRecord rec;
  // Bumped whenever the message's waiting jobs are withdrawn: a heap entry carrying an older
  // generation is stale and dropped when met.
  std::uint32_t gen = 0;
  std::uint8_t flags = 0;
};

struct Queue::DestQueue {
  struct Waiting {
    TimePoint due;
    std::uint32_t slot;
    std::uint32_t gen;
  };
  std::string key;
  std::vector<Waiting> waiting;  // a min-heap by (due, slot); stale entries dropped lazily
  std::size_t live = 0;          // entries in `waiting` that are not stale
  TimePoint not_before{};
  TimePoint order_key = TimePoint::max();  // its key in dest_order, max() = not there
};

namespace {
struct LaterDue {
  template <class W>
  bool operator()(const W& a, const W& b) const {
    return a.due != b.due ? a.due > b.due : a.slot > b.slot;
  }
};
using Expiry = std::pair<TimePoint, std::uint64_t>;  // (arrival + lifetime, id)
}  // namespace

struct Queue::Store {
  std::vector<Slot> slots;
  std::vector<std::uint32_t> free;
  detail::IdIndex index;
  std::size_t count = 0;  // slots in use (tombstones included)
  // Destinations with a job taken by the Deliverer, per message id (few: bounded by the
  // deliveries in progress).
  std::unordered_map<std::uint64_t, std::vector<std::string>> in_flight;
  std::unordered_map<std::string, std::unique_ptr<DestQueue>> dests;
  std::set<std::pair<TimePoint, DestQueue*>> dest_order;  // by effective due time
  std::vector<Expiry> expiry;  // a min-heap; entries of messages gone are dropped when met

  Slot& at(std::uint32_t s) { return slots[s]; }
  const Slot& at(std::uint32_t s) const { return slots[s]; }
  auto key_of() const {
    return [this](std::uint32_t s) { return slots[s].id; };
  }
  bool stale(const DestQueue::Waiting& w) const { return slots[w.slot].gen != w.gen; }
  void push_expiry(TimePoint when, std::uint64_t id) {
    expiry.emplace_back(when, id);
    std::push_heap(expiry.begin(), expiry.end(), std::greater<>());
  }
};

// --- Queue ------------------------------------------------------------------------------

Queue::Queue(Storage& storage, const RouteTable& routes, Clock& clock, EventSink* sink,
             QueueConfig config)
    : storage_(storage),
      routes_(routes),
      clock_(clock),
      sink_(sink),
      config_(std::move(config)),
      rng_(config_.random_seed ? config_.random_seed : std::random_device{}()),
      st_(std::make_unique<Store>()),
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

std::string Queue::destination_of(std::string_view address, std::string_view route_name) const {
  std::string_view domain = detail::domain_of(address);
  const Route* route = routes_.find(route_name);
  if (!route) route = &routes_.lookup(domain);
  return destination_key(*route, detail::to_lower(domain));
}

std::string Queue::destination_of(const RecipientRecord& r) const {
  return destination_of(r.address, r.route);
}

std::string Queue::queue_file(const MessageRecord& m) const {
  std::string channel = m.recipients.empty() ? std::string("local") : m.recipients[0].route;
  return "queue/" + channel + "/" + queue_file_name(m.id, m.attempts);
}

std::size_t Queue::size() const noexcept {
  return st_->count;
}

std::uint32_t Queue::find_slot(MessageId id) const {
  if (!id) return detail::IdIndex::kNone;
  return st_->index.find(id.value, st_->key_of());
}

std::uint32_t Queue::add_slot(const MessageRecord& m) {
  Store& st = *st_;
  std::uint32_t s;
  if (!st.free.empty()) {
    s = st.free.back();
    st.free.pop_back();
  } else {
    if (st.slots.size() >= detail::IdIndex::kNone) throw std::bad_alloc();
    s = static_cast<std::uint32_t>(st.slots.size());
    st.slots.emplace_back();
  }
  Slot& slot = st.at(s);
  slot.rec = detail::PackedRecord(m);
  slot.id = m.id.value;
  slot.flags = m.held ? kHeld : 0;
  st.index.insert(m.id.value, s, st.key_of());
  st.count++;
  st.push_expiry(m.arrival + config_.max_lifetime, m.id.value);
  return s;
}

void Queue::free_slot(std::uint32_t s) {
  Store& st = *st_;
  Slot& slot = st.at(s);
  st.index.erase(slot.id, st.key_of());
  st.in_flight.erase(slot.id);
  slot.id = 0;
  slot.rec = detail::PackedRecord();
  slot.gen++;
  slot.flags = 0;
  st.free.push_back(s);
  st.count--;
}

MessageRecord Queue::unpack(std::uint32_t s) const {
  const Slot& slot = st_->at(s);
  return slot.rec.unpack(MessageId{slot.id}, (slot.flags & kHeld) != 0);
}

void Queue::repack(std::uint32_t s, const MessageRecord& m) {
  Slot& slot = st_->at(s);
  slot.rec = detail::PackedRecord(m);
  slot.flags = static_cast<std::uint8_t>((slot.flags & ~kHeld) | (m.held ? kHeld : 0));
}

Queue::DestQueue& Queue::dest(const std::string& key) {
  auto it = st_->dests.find(key);
  if (it == st_->dests.end()) {
    auto d = std::make_unique<DestQueue>();
    d->key = key;
    it = st_->dests.emplace(key, std::move(d)).first;
  }
  return *it->second;
}

void Queue::touch_destination(DestQueue& d) {
  Store& st = *st_;
  while (!d.waiting.empty() && st.stale(d.waiting.front())) {
    std::pop_heap(d.waiting.begin(), d.waiting.end(), LaterDue());
    d.waiting.pop_back();
  }
  if (d.waiting.size() > 2 * d.live + 32) {
    // Withdrawn jobs deep in the heap: drop them so the heap stays within twice its jobs.
    d.waiting.erase(std::remove_if(d.waiting.begin(), d.waiting.end(),
                                   [&](const DestQueue::Waiting& w) { return st.stale(w); }),
                    d.waiting.end());
    std::make_heap(d.waiting.begin(), d.waiting.end(), LaterDue());
  }
  TimePoint key = TimePoint::max();
  if (!d.waiting.empty()) key = std::max(d.waiting.front().due, d.not_before);
  if (key == d.order_key) return;
  if (d.order_key != TimePoint::max()) st.dest_order.erase({d.order_key, &d});
  d.order_key = key;
  if (key != TimePoint::max()) st.dest_order.insert({key, &d});
  if (d.waiting.empty() && d.not_before == TimePoint{}) {
    // Forget empty destinations so that the map does not grow with every domain ever seen.
    st.dests.erase(d.key);
  }
}

std::vector<std::pair<std::string, TimePoint>> Queue::jobs_of(std::uint32_t s) const {
  std::vector<std::pair<std::string, TimePoint>> due;
  const Slot& slot = st_->at(s);
  if (slot.flags & (kHeld | kRemoved)) return due;
  const std::vector<std::string>* flying = nullptr;
  if (slot.flags & kInFlight) {
    auto it = st_->in_flight.find(slot.id);
    if (it != st_->in_flight.end()) flying = &it->second;
  }
  // Earliest due time of the pending recipients, per destination not already in flight.
  slot.rec.each_recipient([&](std::size_t, const detail::RecipientView& r) {
    if (is_final(r.state)) return;
    std::string key = destination_of(r.address, r.route);
    if (flying && std::find(flying->begin(), flying->end(), key) != flying->end()) return;
    auto it = std::find_if(due.begin(), due.end(), [&](auto& p) { return p.first == key; });
    if (it == due.end())
      due.emplace_back(std::move(key), r.next_attempt);
    else
      it->second = std::min(it->second, r.next_attempt);
  });
  return due;
}

void Queue::schedule_jobs(std::uint32_t s) {
  if (st_->at(s).flags & kScheduled) return;
  st_->at(s).flags |= kScheduled;
  for (auto& [key, when] : jobs_of(s)) {
    DestQueue& d = dest(key);
    d.waiting.push_back({when, s, st_->at(s).gen});
    std::push_heap(d.waiting.begin(), d.waiting.end(), LaterDue());
    d.live++;
    touch_destination(d);
  }
}

void Queue::unschedule_jobs(std::uint32_t s) {
  if (!(st_->at(s).flags & kScheduled)) return;
  auto jobs = jobs_of(s);
  st_->at(s).gen++;  // its heap entries are stale from here on
  st_->at(s).flags &= static_cast<std::uint8_t>(~kScheduled);
  for (auto& [key, when] : jobs) {
    auto it = st_->dests.find(key);
    if (it == st_->dests.end()) continue;
    DestQueue& d = *it->second;
    if (d.live) d.live--;
    touch_destination(d);
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
    const MessageRecord& m = *entry;
    schedule_jobs(add_slot(m));
    arm_expiry_timer();
    counters_.enqueued++;
    for (const auto& r : m.recipients) emit(make_event(EventKind::enqueued, m, r, 0));
    if (!m.held) notify_new_work(m.id);
    done(m.id);
  });
}

std::error_code Queue::recover(RecoveryReport* report) {
  auto ec = storage_.load(
      [this](MessageRecord&& rec) {
        if (find_slot(rec.id) != detail::IdIndex::kNone) return;
        last_id_ = std::max(last_id_, rec.id.value);
        schedule_jobs(add_slot(rec));
      },
      report);
#if defined(__GLIBC__)
  // A storage builds what it loads in memory before handing it over (the segment spool
  // replays every segment first); freed, those pages stay resident in glibc's heap unless
  // returned: a recovered million messages would keep twice their memory.
  malloc_trim(0);
#endif
  arm_expiry_timer();
  return ec;
}

// --- operator actions -------------------------------------------------------------------

std::error_code Queue::hold(MessageId id) {
  const std::uint32_t s = find_slot(id);
  if (s == detail::IdIndex::kNone) return make_error_code(errc::not_found);
  if (st_->at(s).flags & kHeld) return {};
  // The storage first: a hold the spool did not record would be gone after a restart, and
  // the operator is told it failed, so nothing changes.
  MessageRecord m = unpack(s);
  m.held = true;
  if (auto ec = storage_.update(m)) return ec;
  unschedule_jobs(s);
  st_->at(s).flags |= kHeld;
  return {};
}

std::error_code Queue::release(MessageId id) {
  const std::uint32_t s = find_slot(id);
  if (s == detail::IdIndex::kNone) return make_error_code(errc::not_found);
  if (!(st_->at(s).flags & kHeld)) return {};
  // The storage first: a message released in memory only would be delivered while its file
  // stays held, and come back held (and be sent again) after a restart.
  MessageRecord m = unpack(s);
  m.held = false;
  if (auto ec = storage_.update(m)) return ec;
  unschedule_jobs(s);
  st_->at(s).flags &= static_cast<std::uint8_t>(~kHeld);
  schedule_jobs(s);
  notify_new_work(id);
  return {};
}

std::vector<MessageId> Queue::pending_for(std::string_view destination, bool held) const {
  std::vector<MessageId> ids;
  for (const Slot& slot : st_->slots) {
    if (!slot.id || (slot.flags & kRemoved) || ((slot.flags & kHeld) != 0) != held) continue;
    bool any = false;
    slot.rec.each_recipient([&](std::size_t, const detail::RecipientView& r) {
      if (any || is_final(r.state)) return;
      any = r.route == destination || destination_of(r.address, r.route) == destination;
    });
    if (any) ids.push_back(MessageId{slot.id});
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

void Queue::erase_message(std::uint32_t s) {
  unschedule_jobs(s);
  Slot& slot = st_->at(s);
  if (slot.flags & kInFlight) {
    // The Deliverer still holds a job: keep a tombstone until it completes.
    slot.flags |= kRemoved;
    return;
  }
  free_slot(s);
}

std::error_code Queue::remove(MessageId id) {
  const std::uint32_t s = find_slot(id);
  if (s == detail::IdIndex::kNone || (st_->at(s).flags & kRemoved))
    return make_error_code(errc::not_found);
  auto ec = storage_.remove(id);
  erase_message(s);
  return ec;
}

std::error_code Queue::bounce(MessageId id, std::string_view reason) {
  std::uint32_t s = find_slot(id);
  if (s == detail::IdIndex::kNone || (st_->at(s).flags & kRemoved))
    return make_error_code(errc::not_found);
  MessageRecord m = unpack(s);
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
    emit(std::move(ev));
  }
  auto ec = send_dsn(m, bounced, DsnAction::failed, /*remove_original=*/true);
  s = find_slot(id);  // the sink or the DSN's enqueue may have changed the store
  if (s != detail::IdIndex::kNone && !(st_->at(s).flags & kRemoved)) erase_message(s);
  return ec;
}

std::size_t Queue::make_all_due() {
  TimePoint now = clock_.now();
  std::size_t n = 0;
  for (std::uint32_t s = 0; s < st_->slots.size(); ++s) {
    const Slot& slot = st_->at(s);
    if (!slot.id || (slot.flags & (kHeld | kRemoved))) continue;
    bool later = false;
    slot.rec.each_recipient([&](std::size_t, const detail::RecipientView& r) {
      later = later || (!is_final(r.state) && r.next_attempt > now);
    });
    if (!later) continue;
    unschedule_jobs(s);
    MessageRecord m = unpack(s);
    for (auto& r : m.recipients)
      if (!is_final(r.state) && r.next_attempt > now) r.next_attempt = now;
    repack(s, m);
    schedule_jobs(s);
    ++n;
  }
  if (n > 0 && due_now_listener_) {
    // On the next turn: an operator's flush from inside an event handler must not re-enter
    // the Deliverer.
    clock_.schedule(Duration{0}, [this] {
      if (due_now_listener_) due_now_listener_();
    });
  }
  return n;
}

// --- inspection -------------------------------------------------------------------------

std::optional<MessageRecord> Queue::find(MessageId id) const {
  const std::uint32_t s = find_slot(id);
  if (s == detail::IdIndex::kNone || (st_->at(s).flags & kRemoved)) return std::nullopt;
  return unpack(s);
}

bool Queue::contains(MessageId id) const {
  const std::uint32_t s = find_slot(id);
  return s != detail::IdIndex::kNone && !(st_->at(s).flags & kRemoved);
}

std::vector<MessageId> Queue::list(const QueueFilter& f) const {
  std::vector<MessageId> out;
  TimePoint now = clock_.now();
  for (const Slot& slot : st_->slots) {
    if (!slot.id || (slot.flags & kRemoved)) continue;
    if (f.held_only && !(slot.flags & kHeld)) continue;
    if (f.min_age > Duration{0} && now - slot.rec.arrival() < f.min_age) continue;
    bool any = false;
    slot.rec.each_recipient([&](std::size_t, const detail::RecipientView& r) {
      if (any) return;
      if (f.state ? r.state != *f.state : is_final(r.state)) return;
      if (!f.destination.empty() && r.route != f.destination &&
          destination_of(r.address, r.route) != f.destination)
        return;
      if (!f.error_contains.empty() &&
          Reply(r.reply_code, std::string(r.reply_enhanced), std::string(r.reply_text))
                  .to_string()
                  .find(f.error_contains) == std::string::npos)
        return;
      any = true;
    });
    if (any) out.push_back(MessageId{slot.id});
  }
  std::sort(out.begin(), out.end());
  return out;
}

Result<std::vector<AttemptRecord>> Queue::transient_attempts(MessageId id) const {
  return storage_.read_attempts(id);
}

std::vector<std::pair<std::string, std::size_t>> Queue::depth_by_destination() const {
  std::map<std::string, std::size_t> depth;
  for (const Slot& slot : st_->slots) {
    if (!slot.id || (slot.flags & kRemoved)) continue;
    slot.rec.each_recipient([&](std::size_t, const detail::RecipientView& r) {
      if (!is_final(r.state)) depth[destination_of(r.address, r.route)]++;
    });
  }
  return {depth.begin(), depth.end()};
}

QueueStats Queue::stats() const {
  QueueStats s = counters_;
  // Every destination with mail waiting, whether due, deferred, down or only held: the
  // schedule's own table leaves out destinations whose messages are all held.
  std::set<std::string> destinations;
  for (const Slot& slot : st_->slots) {
    if (!slot.id || (slot.flags & kRemoved)) continue;
    s.messages++;
    if (slot.flags & kHeld) s.held++;
    slot.rec.each_recipient([&](std::size_t, const detail::RecipientView& r) {
      if (is_final(r.state)) return;
      s.recipients_pending++;
      destinations.insert(destination_of(r.address, r.route));
    });
  }
  s.destinations = destinations.size();
  return s;
}

// --- the Deliverer's side ---------------------------------------------------------------

std::vector<std::string> Queue::due_destinations(TimePoint now, std::size_t max) const {
  std::vector<std::string> out;
  for (auto it = st_->dest_order.begin(); it != st_->dest_order.end() && out.size() < max; ++it) {
    if (it->first > now) break;
    out.push_back(it->second->key);
  }
  return out;
}

TimePoint Queue::next_due() const {
  return st_->dest_order.empty() ? TimePoint::max() : st_->dest_order.begin()->first;
}

std::vector<Job> Queue::take_due(std::string_view destination, TimePoint now, std::size_t max) {
  std::vector<Job> jobs;
  Store& st = *st_;
  auto dit = st.dests.find(std::string(destination));
  if (dit == st.dests.end()) return jobs;
  DestQueue& d = *dit->second;
  if (d.not_before > now) return jobs;
  while (!d.waiting.empty() && jobs.size() < max) {
    const DestQueue::Waiting top = d.waiting.front();
    if (!st.stale(top) && top.due > now) break;
    std::pop_heap(d.waiting.begin(), d.waiting.end(), LaterDue());
    d.waiting.pop_back();
    if (st.stale(top)) continue;
    d.live--;
    Slot& slot = st.at(top.slot);
    Job job;
    job.id = MessageId{slot.id};
    job.destination = d.key;
    slot.rec.each_recipient([&](std::size_t i, const detail::RecipientView& r) {
      if (!is_final(r.state) && r.next_attempt <= now &&
          destination_of(r.address, r.route) == d.key)
        job.recipients.push_back(i);
    });
    // In flight for this destination: its jobs elsewhere (still waiting) stay valid, since
    // jobs_of now leaves this destination out, as the popped entry does.
    st.in_flight[slot.id].push_back(d.key);
    slot.flags |= kInFlight;
    jobs.push_back(std::move(job));
  }
  touch_destination(d);  // may erase d
  return jobs;
}

std::vector<Job> Queue::take_message(MessageId id) {
  std::vector<Job> jobs;
  const std::uint32_t s = find_slot(id);
  if (s == detail::IdIndex::kNone) return jobs;
  if (st_->at(s).flags & (kRemoved | kHeld)) return jobs;
  auto waiting = jobs_of(s);
  if (waiting.empty()) return jobs;
  unschedule_jobs(s);
  Slot& slot = st_->at(s);
  auto& flying = st_->in_flight[id.value];
  for (const auto& waiting_at : waiting) {
    const std::string& key = waiting_at.first;  // named: a lambda below captures it
    Job job;
    job.id = id;
    job.destination = key;
    slot.rec.each_recipient([&](std::size_t i, const detail::RecipientView& r) {
      if (!is_final(r.state) && destination_of(r.address, r.route) == key)
        job.recipients.push_back(i);
    });
    flying.push_back(key);
    jobs.push_back(std::move(job));
  }
  slot.flags |= kInFlight;
  return jobs;
}

namespace {
// Drops one in-flight destination of a message; true when none is left.
bool land(std::unordered_map<std::uint64_t, std::vector<std::string>>& in_flight, std::uint64_t id,
          const std::string& destination) {
  auto it = in_flight.find(id);
  if (it == in_flight.end()) return true;
  auto f = std::find(it->second.begin(), it->second.end(), destination);
  if (f != it->second.end()) it->second.erase(f);
  if (!it->second.empty()) return false;
  in_flight.erase(it);
  return true;
}
}  // namespace

void Queue::untake(const Job& job) {
  const std::uint32_t s = find_slot(job.id);
  if (s == detail::IdIndex::kNone) return;
  unschedule_jobs(s);
  if (land(st_->in_flight, job.id.value, job.destination))
    st_->at(s).flags &= static_cast<std::uint8_t>(~kInFlight);
  const std::uint8_t flags = st_->at(s).flags;
  if (flags & kRemoved) {
    if (!(flags & kInFlight)) free_slot(s);
    return;
  }
  schedule_jobs(s);
}

void Queue::complete(const Job& job, const std::vector<RecipientOutcome>& outcomes,
                     bool attempted) {
  const MessageId id = job.id;
  std::uint32_t s = find_slot(id);
  if (s == detail::IdIndex::kNone) return;
  unschedule_jobs(s);
  if (land(st_->in_flight, id.value, job.destination))
    st_->at(s).flags &= static_cast<std::uint8_t>(~kInFlight);
  if (st_->at(s).flags & kRemoved) {
    if (!(st_->at(s).flags & kInFlight)) free_slot(s);
    return;
  }
  MessageRecord m = unpack(s);
  const TimePoint now = clock_.now();
  const std::uint32_t attempts_before = m.attempts;
  if (attempted) m.attempts++;

  std::vector<std::size_t> bounced;
  std::vector<std::size_t> delayed;
  std::vector<std::size_t> relayed;
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
      if (o.relayed_without_dsn) relayed.push_back(o.index);
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
  // An event sink may have removed the message meanwhile; the DSNs below enqueue (the slot
  // is looked up again after them).
  s = find_slot(id);
  if (s == detail::IdIndex::kNone || (st_->at(s).flags & kRemoved)) return;
  repack(s, m);

  bool all_final = std::all_of(m.recipients.begin(), m.recipients.end(),
                               [](const RecipientRecord& r) { return is_final(r.state); });
  if (all_final) {
    // The file goes once the notification is queued (see send_dsn): with the failure notice
    // when there is one, else with the "relayed" one.
    if (!relayed.empty() && bounced.empty()) {
      (void)send_dsn(m, relayed, DsnAction::relayed, /*remove_original=*/true);
    } else {
      if (!relayed.empty()) (void)send_dsn(m, relayed, DsnAction::relayed);
      (void)send_dsn(m, bounced, DsnAction::failed, /*remove_original=*/true);
    }
    s = find_slot(id);
    if (s != detail::IdIndex::kNone) erase_message(s);
    return;
  }
  if (!relayed.empty()) (void)send_dsn(m, relayed, DsnAction::relayed);
  if (!bounced.empty()) (void)send_dsn(m, bounced, DsnAction::failed);
  if (!delayed.empty()) (void)send_dsn(m, delayed, DsnAction::delayed);
  (void)storage_.update(m);
  s = find_slot(id);
  if (s == detail::IdIndex::kNone || (st_->at(s).flags & kRemoved)) return;
  schedule_jobs(s);
  if (now >= m.arrival + config_.max_lifetime && !(st_->at(s).flags & kInFlight))
    expire_message(s, now);
}

void Queue::set_not_before(std::string_view destination, TimePoint until) {
  if (until == TimePoint{}) {
    auto it = st_->dests.find(std::string(destination));
    if (it == st_->dests.end()) return;
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
  for (auto& [k, d] : st_->dests)
    if (d->not_before != TimePoint{}) all.push_back(d.get());
  for (DestQueue* d : all) {
    d->not_before = TimePoint{};
    touch_destination(*d);
  }
}

std::size_t Queue::pending_jobs(std::string_view destination) const {
  auto it = st_->dests.find(std::string(destination));
  return it == st_->dests.end() ? 0 : it->second->live;
}

bool Queue::in_flight(MessageId id) const {
  const std::uint32_t s = find_slot(id);
  return s != detail::IdIndex::kNone && (st_->at(s).flags & kInFlight);
}

// --- expiry and notifications ------------------------------------------------------------

void Queue::arm_expiry_timer() {
  Store& st = *st_;
  // Drop entries of messages that are gone (delivered, removed) from the top, and all of
  // them when they outnumber the messages.
  auto gone = [&](const Expiry& e) {
    return find_slot(MessageId{e.second}) == detail::IdIndex::kNone;
  };
  while (!st.expiry.empty() && gone(st.expiry.front())) {
    std::pop_heap(st.expiry.begin(), st.expiry.end(), std::greater<>());
    st.expiry.pop_back();
  }
  if (st.expiry.size() > 2 * st.count + 64) {
    st.expiry.erase(std::remove_if(st.expiry.begin(), st.expiry.end(), gone), st.expiry.end());
    std::make_heap(st.expiry.begin(), st.expiry.end(), std::greater<>());
  }
  TimePoint next = st.expiry.empty() ? TimePoint::max() : st.expiry.front().first;
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
  Store& st = *st_;
  std::vector<Expiry> due;
  while (!st.expiry.empty() && st.expiry.front().first <= now) {
    due.push_back(st.expiry.front());
    std::pop_heap(st.expiry.begin(), st.expiry.end(), std::greater<>());
    st.expiry.pop_back();
  }
  for (const auto& [when, id] : due) {
    const std::uint32_t s = find_slot(MessageId{id});
    if (s == detail::IdIndex::kNone || (st.at(s).flags & kRemoved)) continue;
    if (st.at(s).flags & kInFlight) {
      // It expires when that attempt completes; should the job come back unattempted, look
      // again in a second.
      st.push_expiry(now + std::chrono::seconds(1), id);
      continue;
    }
    expire_message(s, now);
  }
  arm_expiry_timer();
}

void Queue::expire_message(std::uint32_t s, TimePoint now) {
  MessageRecord m = unpack(s);
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
  (void)send_dsn(m, expired, DsnAction::failed, /*remove_original=*/true);
  s = find_slot(m.id);
  if (s != detail::IdIndex::kNone && !(st_->at(s).flags & kRemoved)) erase_message(s);
}

std::error_code Queue::send_dsn(const MessageRecord& m, const std::vector<std::size_t>& rcpts,
                                DsnAction action, bool remove_original) {
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
    const std::uint8_t want = action == DsnAction::delayed   ? kNotifyDelay
                              : action == DsnAction::relayed ? kNotifySuccess
                                                             : kNotifyFailure;
    if (r.notify & kNotifyNever) continue;
    // Without NOTIFY: failures (and delays, see QueueConfig) are reported, successes not.
    if (r.notify == kNotifyDefault ? action == DsnAction::relayed : !(r.notify & want)) continue;
    DsnRecipient d;
    d.final_recipient = r.address;
    d.original_recipient = r.orcpt;
    d.action = action;
    d.reply = r.last_reply;
    d.remote_mta = detail::remote_host_of(r.remote);
    d.last_attempt = in.now;
    if (action == DsnAction::delayed) d.will_retry_until = m.arrival + config_.max_lifetime;
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
