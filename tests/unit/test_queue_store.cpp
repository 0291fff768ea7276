// The queue's compact in-memory store: packed records, the flat id index, the lazily cleaned
// per-destination heaps and the expiry heap.
#include <random>
#include <unordered_map>

#include "core/queue/id_index.h"
#include "core/queue/packed_record.h"
#include "engine_fixture.h"
#include "support/spool_fixtures.h"

using namespace mailq;
using namespace mailq::test;

namespace {

MessageRecord full_record() {
  MessageRecord m;
  m.id = MessageId{0x0123456789abcdefull};
  m.reverse_path = "sender@example.org";
  m.source_channel = "tcp_internal";
  m.message_id = "<" + std::string(300, 'm') + "@example.org>";  // a 2-octet length
  m.envid = "ENV+2Bid";
  m.ret = DsnRet::headers;
  m.arrival = TimePoint(std::chrono::nanoseconds(1'763'900'000'123'456'789LL));
  m.size = (1ull << 40) + 7;
  m.attempts = 1u << 20;
  m.held = true;
  RecipientRecord a;
  a.address = "first@example.com";
  a.orcpt = "rfc822;First@Example.com";
  a.notify = kNotifyFailure | kNotifyDelay;
  a.route = "default-non-local-route";
  a.state = RecipientState::deferred;
  a.attempts = 3;
  a.next_attempt = m.arrival + std::chrono::hours(4) + std::chrono::nanoseconds(1);
  a.last_reply = Reply(451, "4.4.1", "[internal] domain is marked down");
  a.remote_mta = "mx.example.com";
  a.delay_notified = true;
  RecipientRecord b;  // every field at its default but the address and route
  b.address = "second@example.net";
  b.route = "tcp_sink";
  RecipientRecord c;
  c.address = std::string(200, 'l') + "@example.com";
  c.route = "tcp_sink";
  c.state = RecipientState::bounced;
  c.next_attempt = m.arrival - std::chrono::seconds(90);  // before arrival: a clock step back
  c.last_reply = Reply(550, "", std::string(1000, 't'));
  c.notify = kNotifyNever;
  m.recipients = {a, b, c};
  return m;
}

}  // namespace

TEST_CASE("A packed record gives back every field of the record it was packed from",
          "[queue][store]") {
  const MessageRecord m = full_record();
  detail::PackedRecord p(m);
  REQUIRE(p);
  mailq::spool_test::require_same(p.unpack(m.id, m.held), m);
  CHECK(p.arrival() == m.arrival);
  // One block, no slack: the strings and a few octets per number.
  std::size_t strings =
      m.reverse_path.size() + m.source_channel.size() + m.message_id.size() + m.envid.size();
  for (const auto& r : m.recipients)
    strings += r.address.size() + r.orcpt.size() + r.route.size() + r.last_reply.enhanced.size() +
               r.last_reply.text.size() + r.remote_mta.size();
  CHECK(p.size() > strings);
  CHECK(p.size() < strings + 100);

  std::vector<std::string> seen;
  p.each_recipient([&](std::size_t i, const detail::RecipientView& v) {
    const auto& r = m.recipients.at(i);
    CHECK(v.address == r.address);
    CHECK(v.route == r.route);
    CHECK(v.state == r.state);
    CHECK(v.next_attempt == r.next_attempt);
    CHECK(v.reply_code == r.last_reply.code);
    seen.emplace_back(v.address);
  });
  CHECK(seen.size() == 3);

  MessageRecord empty;
  empty.recipients.resize(1);
  detail::PackedRecord q(empty);
  mailq::spool_test::require_same(q.unpack(MessageId{}, false), empty);
}

TEST_CASE(
    "The id index finds exactly the ids inserted and not erased, across growth and "
    "backward-shift deletion",
    "[queue][store]") {
  std::vector<std::uint64_t> slots;  // slot -> id, 0 = free
  std::vector<std::uint32_t> free;
  std::unordered_map<std::uint64_t, std::uint32_t> model;
  detail::IdIndex index;
  auto key_of = [&](std::uint32_t s) { return slots[s]; };
  std::mt19937_64 rng(7);
  std::uint64_t next = 1'700'000'000'000ull << 16;  // time-ordered ids, as the queue makes
  auto check_all = [&] {
    for (const auto& [id, s] : model) REQUIRE(index.find(id, key_of) == s);
    REQUIRE(index.size() == model.size());
  };
  for (int round = 0; round < 200'000; ++round) {
    const bool insert = model.empty() || rng() % 100 < (round < 100'000 ? 70 : 30);
    if (insert) {
      // Mostly consecutive ids, some far apart (a recovered spool's ids).
      std::uint64_t id = rng() % 8 ? ++next : (rng() | 1);
      if (model.count(id)) continue;
      std::uint32_t s;
      if (!free.empty()) {
        s = free.back();
        free.pop_back();
        slots[s] = id;
      } else {
        s = static_cast<std::uint32_t>(slots.size());
        slots.push_back(id);
      }
      index.insert(id, s, key_of);
      model[id] = s;
    } else {
      auto it = model.begin();
      std::advance(it, static_cast<long>(rng() % std::min<std::size_t>(model.size(), 64)));
      const auto [id, s] = *it;
      index.erase(id, key_of);
      model.erase(it);
      CHECK(index.find(id, key_of) == detail::IdIndex::kNone);
      slots[s] = 0;
      free.push_back(s);
    }
    if (round % 20'000 == 0) check_all();
  }
  check_all();
  // Ids never inserted are not found.
  for (int i = 0; i < 1000; ++i) {
    std::uint64_t id = next + 1 + static_cast<std::uint64_t>(i);
    CHECK(index.find(id, key_of) == detail::IdIndex::kNone);
  }
}

TEST_CASE(
    "Jobs stay exact through hold, release, flush, take, untake and removal of messages "
    "with recipients at two destinations",
    "[queue][store]") {
  Engine e;  // the Deliverer is not started: the queue is driven by hand
  const MessageId m1 = e.send("s@example.org", {"a@x.test", "b@y.test"});
  const MessageId m2 = e.send("s@example.org", {"c@x.test"});
  const MessageId m3 = e.send("s@example.org", {"d@y.test"});
  CHECK(e.port().pending_jobs("x.test") == 2);
  CHECK(e.port().pending_jobs("y.test") == 2);

  // Withdrawn and put back a thousand times: still one job per destination, not 1001.
  for (int i = 0; i < 1000; ++i) {
    REQUIRE(e.queue->hold(m1));
    REQUIRE(e.queue->release(m1));
  }
  CHECK(e.queue->make_all_due() == 0);  // all due already
  CHECK(e.port().pending_jobs("x.test") == 2);
  CHECK(e.port().pending_jobs("y.test") == 2);

  REQUIRE(e.queue->hold(m1));
  CHECK(e.port().pending_jobs("x.test") == 1);
  CHECK(e.port().pending_jobs("y.test") == 1);

  const TimePoint now = e.clock.now();
  auto x = e.port().take_due("x.test", now, 10);
  REQUIRE(x.size() == 1);
  CHECK(x[0].id == m2);
  CHECK(x[0].recipients == std::vector<std::size_t>{0});
  CHECK(e.port().pending_jobs("x.test") == 0);
  CHECK(e.port().in_flight(m2));
  CHECK(e.port().due_destinations(now) == std::vector<std::string>{"y.test"});

  REQUIRE(e.queue->release(m1));
  x = e.port().take_due("x.test", now, 10);
  REQUIRE(x.size() == 1);
  CHECK(x[0].id == m1);
  CHECK(x[0].recipients == std::vector<std::size_t>{0});
  // m1's job at y.test is still waiting while its x.test job is in flight.
  CHECK(e.port().pending_jobs("y.test") == 2);
  e.port().untake(x[0]);
  CHECK(e.port().pending_jobs("x.test") == 1);
  CHECK(e.port().pending_jobs("y.test") == 2);

  // m2 deferred: it comes back at its retry time, and not before.
  RecipientOutcome o;
  o.index = 0;
  o.reply = Reply(451, "4.3.0", "try later");
  e.port().complete(make_job(m2, "x.test", {0}), {o}, true);
  CHECK_FALSE(e.port().in_flight(m2));
  CHECK(e.port().pending_jobs("x.test") == 2);
  x = e.port().take_due("x.test", now, 10);
  REQUIRE(x.size() == 1);
  CHECK(x[0].id == m1);
  e.port().untake(x[0]);

  REQUIRE(e.queue->remove(m1));
  CHECK(e.port().pending_jobs("x.test") == 1);
  CHECK(e.port().pending_jobs("y.test") == 1);
  auto y = e.port().take_due("y.test", now, 10);
  REQUIRE(y.size() == 1);
  CHECK(y[0].id == m3);
  CHECK(e.port().take_due("x.test", now, 10).empty());
  CHECK(e.queue->make_all_due() == 1);  // m2's retry made due now
  x = e.port().take_due("x.test", now, 10);
  REQUIRE(x.size() == 1);
  CHECK(x[0].id == m2);
  CHECK_FALSE(e.queue->contains(m1));
  CHECK(e.queue->size() == 2);
}

TEST_CASE(
    "A message whose lifetime ends while its job is in flight expires once the job "
    "comes back unattempted",
    "[queue][store][expiry]") {
  QueueConfig qc = deterministic_queue_config();
  qc.max_lifetime = Duration(1h);
  Engine e({3, Duration(15min)}, qc);
  const MessageId id = e.send("s@example.org", {"a@x.test"});
  auto jobs = e.port().take_due("x.test", e.clock.now(), 10);
  REQUIRE(jobs.size() == 1);
  e.clock.advance(Duration(1h) + Duration(1s));
  CHECK(e.queue->contains(id));  // in flight: not expired under the Deliverer's feet
  CHECK(e.count(EventKind::returned) == 0);
  e.port().untake(jobs[0]);
  e.clock.advance(Duration(2s));
  CHECK_FALSE(e.queue->contains(id));
  CHECK(e.count(EventKind::returned) == 1);
}

TEST_CASE(
    "A queue of 20,000 messages keeps its index and heaps right as they are delivered "
    "out of order",
    "[queue][store]") {
  Engine e;
  std::vector<MessageId> ids;
  for (int i = 0; i < 20'000; ++i)
    ids.push_back(e.send("s@example.org",
                         {"r" + std::to_string(i) + "@d" + std::to_string(i % 7) + ".test"}));
  CHECK(e.queue->size() == 20'000);
  // Deliver every third message of each destination, defer the others.
  RecipientOutcome ok;
  ok.reply = Reply(250, "2.0.0", "ok");
  RecipientOutcome later;
  later.reply = Reply(451, "4.3.0", "later");
  std::size_t delivered = 0;
  for (int d = 0; d < 7; ++d) {
    const std::string dest = "d" + std::to_string(d) + ".test";
    auto jobs = e.port().take_due(dest, e.clock.now(), SIZE_MAX);
    for (std::size_t j = 0; j < jobs.size(); ++j) {
      if (j % 3 == 0) {
        e.port().complete(jobs[j], {ok}, true);
        ++delivered;
      } else {
        e.port().complete(jobs[j], {later}, true);
      }
    }
    CHECK(e.port().pending_jobs(dest) == jobs.size() - (jobs.size() + 2) / 3);
  }
  CHECK(e.queue->size() == 20'000 - delivered);
  for (std::size_t i = 0; i < ids.size(); ++i) {
    const auto m = e.queue->find(ids[i]);
    if (!m) continue;
    REQUIRE(m->recipients.size() == 1);
    CHECK(m->recipients[0].state == RecipientState::deferred);
    CHECK(m->recipients[0].last_reply.to_string() == "451 4.3.0 later");
    CHECK(m->recipients[0].address ==
          "r" + std::to_string(i) + "@d" + std::to_string(i % 7) + ".test");
  }
  CHECK(e.queue->stats().recipients_pending == 20'000 - delivered);
}

namespace {
// Removes a message from inside the queue's event callback, as a host's sink may.
struct RemovingSink final : EventSink {
  Queue* queue = nullptr;
  EventKind on = EventKind::enqueued;
  std::string recipient;
  std::vector<std::error_code> results;
  void on_event(const Event& ev) override {
    if (queue && ev.kind == on && ev.recipient == recipient)
      results.push_back(queue->remove(ev.id).code());
  }
};
}  // namespace

TEST_CASE(
    "A message an event sink removes while the queue reports on it leaves the job counts "
    "exact",
    "[queue][store]") {
  ManualClock clock;
  MemoryStorage storage;
  RouteTable routes;
  RemovingSink sink;
  Queue queue(storage, routes, clock, &sink, deterministic_queue_config());
  sink.queue = &queue;
  auto enqueue = [&](const std::string& to) {
    MessageId id;
    queue.enqueue(make_envelope("s@example.org", {to}).value(), "Subject: t\r\n\r\nhello\r\n",
                  [&](Result<MessageId> r) {
                    REQUIRE(r);
                    id = r.value();
                  });
    return id;
  };

  SECTION("removed on its enqueued event") {
    sink.recipient = "gone@x.test";
    const MessageId gone = enqueue("gone@x.test");
    const MessageId kept = enqueue("kept@x.test");
    REQUIRE(sink.results.size() == 1);
    CHECK_FALSE(sink.results[0]);
    CHECK_FALSE(queue.contains(gone));
    CHECK(port_of(queue).pending_jobs("x.test") == 1);
    auto jobs = port_of(queue).take_due("x.test", clock.now(), 10);
    REQUIRE(jobs.size() == 1);
    CHECK(jobs[0].id == kept);
  }
  SECTION("removed on its deferred event, while the queue applies the outcome") {
    sink.on = EventKind::deferred;
    sink.recipient = "gone@x.test";
    const MessageId gone = enqueue("gone@x.test");
    const MessageId kept = enqueue("kept@x.test");
    const MessageId waiting = enqueue("waiting@x.test");
    auto jobs = port_of(queue).take_due("x.test", clock.now(), 2);
    REQUIRE(jobs.size() == 2);
    CHECK(port_of(queue).pending_jobs("x.test") == 1);
    RecipientOutcome later;
    later.reply = Reply(451, "4.3.0", "later");
    port_of(queue).complete(jobs[0], {later}, true);  // gone@: removed by the sink on its D event
    REQUIRE(sink.results.size() == 1);
    CHECK_FALSE(queue.contains(gone));
    CHECK(port_of(queue).pending_jobs("x.test") == 1);  // waiting@'s job, not withdrawn twice
    port_of(queue).complete(jobs[1], {later}, true);
    CHECK(queue.contains(kept));
    CHECK(queue.size() == 2);
    CHECK(port_of(queue).pending_jobs("x.test") == 2);
    jobs = port_of(queue).take_due("x.test", clock.now(), 10);
    REQUIRE(jobs.size() == 1);
    CHECK(jobs[0].id == waiting);
    clock.advance(Duration(16min));
    jobs = port_of(queue).take_due("x.test", clock.now(), 10);
    REQUIRE(jobs.size() == 1);
    CHECK(jobs[0].id == kept);
  }
}
