// Seed 000: "domain is marked down (too many connection failures)".
#include "engine_fixture.h"

using namespace mailq;
using namespace mailq::test;

namespace {
const char* kDown =
    "451 4.4.1 [internal] connection was not attempted: domain is marked down (too many "
    "connection failures)";

void refusing_example_com(Engine& e) {
  e.resolver.set_mx("example.com", {{10, "mx.example.com"}});
  e.resolver.set_addresses("mx.example.com", {"127.0.0.10"});
  e.transport.at("127.0.0.10").mode = FakeTransport::Mode::refuse;
}
}  // namespace

TEST_CASE(
    "Seed 000: connection failures mark the domain down, the next message is queued with "
    "the exact 451 4.4.1 record and no connection is attempted",
    "[seed000][deliverer]") {
  Engine e;  // threshold 3, 15 minutes
  refusing_example_com(e);
  e.deliverer->start();

  std::vector<MessageId> failed;
  for (int i = 0; i < 3; ++i) {
    failed.push_back(e.send("sender@example.org", {"user@example.com"}));
    e.settle();
    // A real attempt: counted, with the connect diagnostic of seed 002.
    const auto& r = e.rcpt(failed.back());
    CHECK(r.state == RecipientState::deferred);
    CHECK(r.attempts == 1);
    CHECK(r.last_reply.code == 421);
    CHECK(r.last_reply.text.find("connection refused") != std::string::npos);
  }
  REQUIRE(e.transport.connects.size() == 3);
  REQUIRE(e.domains().is_down("example.com", e.clock.now()));
  REQUIRE(e.domains().down_until("example.com", e.clock.now()) == e.clock.now() + Duration(15min));

  MessageId held = e.send("sender@example.org", {"user@example.com"});
  e.settle();
  CHECK(e.transport.connects.size() == 3);  // no connection attempted
  const auto& r = e.rcpt(held);
  CHECK(r.state == RecipientState::deferred);
  CHECK(r.attempts == 0);  // self-imposed: not a delivery attempt
  CHECK(r.last_reply.to_string() == kDown);

  // The queue's transient delivery attempts table, as in the seed.
  auto attempts = e.queue->transient_attempts(held);
  REQUIRE(attempts);
  REQUIRE(attempts->size() == 1);
  CHECK(attempts->at(0).route == "default-non-local-route");
  CHECK(attempts->at(0).reply.to_string() == kDown);
  CHECK(attempts->at(0).recipient == "user@example.com");
  CHECK(attempts->at(0).time == e.clock.now());

  // The Q record carries the same text.
  const Event& q = e.events.events.back();
  CHECK(q.kind == EventKind::deferred);
  CHECK(q.reply.to_string() == kDown);
}

TEST_CASE("Seed 000: a flush does not retry a down domain before its period has expired",
          "[seed000][deliverer]") {
  Engine e;
  refusing_example_com(e);
  e.deliverer->start();
  for (int i = 0; i < 3; ++i) {
    e.send("s@example.org", {"user@example.com"});
    e.settle();
  }
  MessageId held = e.send("s@example.org", {"user@example.com"});
  e.settle();
  REQUIRE(e.transport.connects.size() == 3);
  e.transport.at("127.0.0.10").mode = FakeTransport::Mode::smtp;  // the server is back

  e.clock.advance(Duration(5min));
  e.deliverer->flush();
  e.settle();
  CHECK(e.transport.connects.size() == 3);
  CHECK(e.transport.received.empty());
  CHECK(e.rcpt(held).state == RecipientState::deferred);
}

TEST_CASE(
    "Seed 000: after the down period new messages go at once, the backlog at the next "
    "queue cycle",
    "[seed000][deliverer]") {
  Engine e;
  refusing_example_com(e);
  // Start the queue cycle 5 minutes before the failures so that cycles do not coincide with
  // the end of the down period: cycles at T+10min and T+25min.
  e.deliverer->start();
  e.clock.advance(Duration(5min));
  const TimePoint t = e.clock.now();
  std::vector<MessageId> backlog;
  for (int i = 0; i < 3; ++i) {
    backlog.push_back(e.send("s@example.org", {"user@example.com"}));
    e.settle();
  }
  backlog.push_back(e.send("s@example.org", {"user@example.com"}));  // held back by the mark
  e.settle();
  e.transport.at("127.0.0.10").mode = FakeTransport::Mode::smtp;

  // The cycle at T+10min still sees the mark: nothing is attempted.
  e.clock.advance(Duration(11min));
  CHECK(e.transport.connects.size() == 3);

  // T+16min: the mark has expired. A new message is attempted immediately...
  e.clock.advance(Duration(5min));
  REQUIRE(e.clock.now() == t + Duration(16min));
  MessageId fresh = e.send("s@example.org", {"user@example.com"});
  e.settle();
  CHECK(e.queue->find(fresh) == std::nullopt);  // delivered and gone
  REQUIRE(e.transport.received.size() == 1);
  // ...the backlog waits for the next queue cycle.
  for (auto id : backlog) CHECK(e.rcpt(id).state == RecipientState::deferred);

  e.clock.advance(Duration(9min) + Duration(1s));  // the cycle at T+25min
  CHECK(e.transport.received.size() == 5);
  for (auto id : backlog) CHECK(e.queue->find(id) == std::nullopt);
  CHECK(e.count(EventKind::delivered) == 5);
}

TEST_CASE(
    "Seed 000: a reset (restart) clears the marks, messages held back only by the mark "
    "go at once, messages with a real failed attempt keep their retry time",
    "[seed000][deliverer]") {
  Engine e;
  refusing_example_com(e);
  e.deliverer->start();
  std::vector<MessageId> real;
  for (int i = 0; i < 3; ++i) {
    real.push_back(e.send("s@example.org", {"user@example.com"}));
    e.settle();
  }
  MessageId held = e.send("s@example.org", {"user@example.com"});
  e.settle();
  e.transport.at("127.0.0.10").mode = FakeTransport::Mode::smtp;
  e.clock.advance(Duration(1min));

  e.deliverer->reset_domains();
  e.settle();
  CHECK_FALSE(e.domains().is_down("example.com", e.clock.now()));
  CHECK(e.queue->find(held) == std::nullopt);  // tried at once and delivered
  REQUIRE(e.transport.received.size() == 1);
  for (auto id : real) {
    CHECK(e.rcpt(id).state == RecipientState::deferred);
    CHECK(e.rcpt(id).next_attempt > e.clock.now());
  }
  // Their retry time (15 minutes after the failure) comes with the cycle at 15 minutes.
  e.clock.advance(Duration(14min) + Duration(1s));
  CHECK(e.transport.received.size() == 4);
}

TEST_CASE(
    "Seed 000: a down destination with 100,000 queued messages costs no per-message work "
    "per queue cycle",
    "[seed000][deliverer][scale]") {
  Engine e;
  refusing_example_com(e);
  e.deliverer->start();
  for (int i = 0; i < 3; ++i) {
    e.send("s@example.org", {"user@example.com"});
    e.settle();
  }
  constexpr int kBacklog = 100000;
  for (int i = 0; i < kBacklog; ++i) {
    e.send("s@example.org", {"user@example.com"}, "x\r\n");
    if (i % 1000 == 999) {
      e.settle();
      e.events.events.clear();  // keep memory flat: each message logs E and Q
    }
  }
  e.settle();
  REQUIRE(e.queue->size() == kBacklog + 3);
  REQUIRE(e.port().pending_jobs("example.com") == kBacklog + 3);

  const auto events_before = e.events.events.size();
  const auto queries_before = e.resolver.queries();
  // Nothing of the destination is due while it is down: a cycle does not even look at it.
  CHECK(e.port().due_destinations(e.clock.now()).empty());
  CHECK(e.port().next_due() == e.domains().down_until("example.com", e.clock.now()));
  for (int i = 0; i < 10; ++i) e.deliverer->run_cycle();
  e.deliverer->flush();  // a flush touches every message once to make it due, but no delivery
  e.settle();
  CHECK(e.events.events.size() == events_before);
  CHECK(e.resolver.queries() == queries_before);
  CHECK(e.transport.connects.size() == 3);
}

TEST_CASE(
    "Domain state counts connection failures only: replies after the greeting do not mark "
    "a destination down",
    "[seed000][deliverer]") {
  Engine e;
  e.resolver.set_mx("example.com", {{10, "mx.example.com"}});
  e.resolver.set_addresses("mx.example.com", {"127.0.0.10"});
  auto& b = e.transport.at("127.0.0.10");
  b.script.mail_reply = "451 4.3.0 try later";
  e.deliverer->start();
  for (int i = 0; i < 6; ++i) {
    MessageId id = e.send("s@example.org", {"user@example.com"});
    e.settle();
    CHECK(e.rcpt(id).last_reply.to_string() == "451 4.3.0 try later");
  }
  CHECK_FALSE(e.domains().is_down("example.com", e.clock.now()));
  CHECK(e.transport.connects.size() >= 1);
}

TEST_CASE("Seed 000: the end of a down period is told as destination_up, once per mark",
          "[seed000][deliverer]") {
  Engine e;  // threshold 3, 15 minutes
  refusing_example_com(e);
  e.deliverer->start();
  for (int i = 0; i < 3; ++i) {
    e.send("sender@example.org", {"user@example.com"});
    e.settle();
  }
  REQUIRE(e.count(EventKind::destination_down) == 1);
  CHECK(e.count(EventKind::destination_up) == 0);
  e.clock.advance(Duration(15min) - Duration(1));
  CHECK(e.count(EventKind::destination_up) == 0);
  e.clock.advance(Duration(1));
  REQUIRE(e.count(EventKind::destination_up) == 1);
  const Event& up =
      *std::find_if(e.events.events.begin(), e.events.events.end(),
                    [](const Event& ev) { return ev.kind == EventKind::destination_up; });
  CHECK(up.destination == "example.com");
  CHECK(up.diagnostic ==
        std::vector<std::string>{
            "destination example.com: down period ended, the next connection is a probe"});

  // The probe fails: down again, and up again when that period ends.
  e.send("sender@example.org", {"user@example.com"});
  e.settle();
  REQUIRE(e.count(EventKind::destination_down) == 2);
  e.transport.at("127.0.0.10").mode = FakeTransport::Mode::smtp;
  e.clock.advance(Duration(15min));
  CHECK(e.count(EventKind::destination_up) == 2);
  e.clock.advance(Duration(1h));  // the retries deliver: no mark, no further event
  CHECK(e.count(EventKind::delivered) >= 1);
  CHECK(e.count(EventKind::destination_up) == 2);
}
