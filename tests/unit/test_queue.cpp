// Queue: per-recipient results, retry schedule, lifetime, operator actions.
#include <limits>
#include <optional>

#include "engine_fixture.h"
#include "mailq/log.h"

using namespace mailq;
using namespace mailq::test;

TEST_CASE(
    "One transaction per message and destination, per-recipient 250/550/450 results, only "
    "the 4xx recipient is retried, the 5xx one bounces with a DSN",
    "[queue][deliverer][dsn]") {
  Engine e;
  example_com(e);
  auto& s = e.transport.at("127.0.0.10").script;
  s.rcpt_replies["bad@example.com"] = "550 5.1.1 <bad@example.com>: Recipient address rejected";
  s.rcpt_replies["later@example.com"] = "450 4.2.0 <later@example.com>: greylisted";
  e.deliverer->start();
  MessageId id =
      e.send("sender@example.org", {"good@example.com", "bad@example.com", "later@example.com"});
  e.settle();

  // One connection, one transaction for the three recipients; then the DSN goes elsewhere.
  REQUIRE(e.transport.received.size() >= 1);
  CHECK(e.transport.received[0].rcpt_to == std::vector<std::string>{"good@example.com"});
  CHECK(e.rcpt(id, 0).state == RecipientState::delivered);
  CHECK(e.rcpt(id, 1).state == RecipientState::bounced);
  CHECK(e.rcpt(id, 1).last_reply.code == 550);
  CHECK(e.rcpt(id, 2).state == RecipientState::deferred);
  CHECK(e.rcpt(id, 2).last_reply.to_string() == "450 4.2.0 <later@example.com>: greylisted");

  // The DSN for bad@ is addressed to the sender (example.org has no MX here: it waits).
  auto dsns = e.queue->list();
  bool found_dsn = false;
  for (auto d : dsns) {
    const auto m = e.queue->find(d);
    if (m->reverse_path.empty()) {
      found_dsn = true;
      CHECK(m->recipients.at(0).address == "sender@example.org");
    }
  }
  CHECK(found_dsn);

  // Retry: only later@ goes again, at its retry time.
  s.rcpt_replies.erase("later@example.com");
  e.transport.received.clear();
  e.clock.advance(Duration(15min) + Duration(1s));
  REQUIRE(e.transport.received.size() == 1);
  CHECK(e.transport.received[0].rcpt_to == std::vector<std::string>{"later@example.com"});
  CHECK(e.queue->find(id) == std::nullopt);
}

TEST_CASE("No DSN is ever produced for a message with the null reverse path", "[queue][dsn]") {
  Engine e;
  example_com(e);
  e.transport.at("127.0.0.10").script.rcpt_replies["bad@example.com"] = "550 5.1.1 no such user";
  e.deliverer->start();
  MessageId id = e.send("<>", {"bad@example.com"});
  e.settle();
  CHECK(e.queue->find(id) == std::nullopt);
  CHECK(e.queue->size() == 0);
  CHECK(e.count(EventKind::returned) == 1);
  // The R record says why no notification went out.
  bool said = false;
  for (const auto& ev : e.events.events)
    if (ev.kind == EventKind::returned)
      for (const auto& d : ev.diagnostic)
        said = said || d == "no delivery status notification: the sender is <> (RFC 5321 "
                            "section 4.5.5)";
  CHECK(said);
}

TEST_CASE("RetryPolicy: exponential with floor and ceiling, jitter bounded, explicit schedule",
          "[queue][retry]") {
  RetryPolicy p;
  p.floor = Duration(5min);
  p.ceiling = Duration(1h);
  p.factor = 2;
  p.jitter = 0;
  CHECK(p.delay(1, 0.5) == Duration(5min));
  CHECK(p.delay(2, 0.5) == Duration(10min));
  CHECK(p.delay(3, 0.5) == Duration(20min));
  CHECK(p.delay(5, 0.5) == Duration(1h));
  CHECK(p.delay(50, 0.5) == Duration(1h));
  p.jitter = 0.1;
  CHECK(p.delay(1, 0.0) == Duration(4min + 30s));
  CHECK(p.delay(1, 0.999999) <= Duration(5min + 30s));
  CHECK(p.delay(1, 0.999999) > Duration(5min + 29s));
  RetryPolicy s;
  s.jitter = 0;
  s.schedule = {Duration(1min), Duration(10min), Duration(1h)};
  CHECK(s.delay(1, 0) == Duration(1min));
  CHECK(s.delay(2, 0) == Duration(10min));
  CHECK(s.delay(3, 0) == Duration(1h));
  CHECK(s.delay(9, 0) == Duration(1h));
}

TEST_CASE(
    "Deferred recipients are retried on the schedule, at the first queue cycle after their "
    "retry time",
    "[queue][retry][deliverer]") {
  QueueConfig qc = deterministic_queue_config();
  qc.retry.floor = Duration(15min);
  Engine e({100, Duration(15min)}, qc);
  example_com(e);
  e.transport.at("127.0.0.10").mode = FakeTransport::Mode::refuse;
  e.deliverer->start();
  MessageId id = e.send("s@example.org", {"u@example.com"});
  e.settle();
  CHECK(e.transport.connects.size() == 1);
  CHECK(e.rcpt(id).next_attempt == e.clock.now() + Duration(15min));
  e.clock.advance(Duration(15min));  // cycle 1: due (15 min)
  CHECK(e.transport.connects.size() == 2);
  CHECK(e.rcpt(id).attempts == 2);
  CHECK(e.rcpt(id).next_attempt == e.clock.now() + Duration(30min));
  e.clock.advance(Duration(15min));  // cycle 2: not due
  CHECK(e.transport.connects.size() == 2);
  e.clock.advance(Duration(15min));  // cycle 3: due
  CHECK(e.transport.connects.size() == 3);
}

TEST_CASE(
    "A message older than the maximal lifetime expires and bounces with the last real "
    "reply, wherever it sits",
    "[queue][expiry][dsn]") {
  QueueConfig qc = deterministic_queue_config();
  qc.max_lifetime = Duration(std::chrono::hours(24 * 5));
  Engine e({3, Duration(15min)}, qc);
  example_com(e);
  e.transport.at("127.0.0.10").mode = FakeTransport::Mode::refuse;
  e.deliverer->start();
  MessageId id = e.send("sender@example.org", {"u@example.com"});
  MessageId held = e.send("sender@example.org", {"v@example.com"});
  REQUIRE(e.queue->hold(held));
  e.settle();
  e.clock.advance(Duration(std::chrono::hours(24 * 5)) - Duration(1min));
  REQUIRE(e.queue->find(id) != std::nullopt);
  e.clock.advance(Duration(2min));
  CHECK(e.queue->find(id) == std::nullopt);
  CHECK(e.queue->find(held) == std::nullopt);  // held messages expire too
  std::size_t expired = 0;
  for (auto& ev : e.events.events) {
    if (ev.kind != EventKind::returned) continue;
    ++expired;
    CHECK(ev.reply.enhanced == "5.4.7");
  }
  CHECK(expired == 2);
  // The notification for u@ quotes the last real reply.
  bool quoted = false;
  for (auto mid : e.queue->list()) {
    auto body = e.queue->read_body(mid);
    REQUIRE(body);
    if (body->find("connection refused") != std::string::npos) quoted = true;
  }
  CHECK(quoted);
}

TEST_CASE("hold / release / delete / bounce", "[queue][operator]") {
  Engine e;
  example_com(e);
  e.deliverer->start();
  MessageId a = e.send("s@example.org", {"u@example.com"}, "Subject: a\r\n\r\na\r\n");
  REQUIRE(e.queue->hold(a));
  e.settle();
  // Held before its first attempt: not attempted.
  CHECK(e.transport.received.empty());
  CHECK(e.queue->find(a)->held);
  CHECK(e.queue->list({.held_only = true}) == std::vector<MessageId>{a});
  e.deliverer->flush();
  e.settle();
  CHECK(e.transport.received.empty());
  REQUIRE(e.queue->release(a));
  e.settle();
  CHECK(e.transport.received.size() == 1);
  CHECK(e.queue->find(a) == std::nullopt);

  e.clock.advance(Duration(10s));  // the idle connection closes
  e.transport.at("127.0.0.10").mode = FakeTransport::Mode::refuse;
  MessageId b = e.send("s@example.org", {"u@example.com"});
  e.settle();
  REQUIRE(e.queue->find(b));
  CHECK(e.queue->remove(b));
  CHECK(e.queue->find(b) == std::nullopt);
  auto again = e.queue->remove(b);
  REQUIRE(again.code() == errc::not_found);
  CHECK(again.error().message == "remove " + b.to_string() + ": no such message in the queue");
  CHECK(e.storage.read_body(b).ok() == false);

  MessageId c = e.send("s@example.org", {"u@example.com"});
  e.settle();
  CHECK(e.queue->bounce(c));
  CHECK(e.queue->find(c) == std::nullopt);
  // A DSN to s@example.org is now queued.
  auto all = e.queue->list();
  REQUIRE(all.size() == 1);
  CHECK(e.queue->find(all[0])->reverse_path.empty());
}

TEST_CASE("Queue::list filters by destination, age and last error", "[queue][operator]") {
  Engine e;
  example_com(e);
  e.transport.at("127.0.0.10").mode = FakeTransport::Mode::refuse;
  e.deliverer->start();
  MessageId a = e.send("s@example.org", {"u@example.com"});
  e.settle();
  e.clock.advance(Duration(1h));
  MessageId b = e.send("s@example.org", {"u@nowhere.example"});
  e.settle();
  CHECK(e.queue->list({.destination = "example.com"}) == std::vector<MessageId>{a});
  CHECK(e.queue->list({.destination = "nowhere.example"}) == std::vector<MessageId>{b});
  CHECK(e.queue->list({.min_age = Duration(30min)}) == std::vector<MessageId>{a});
  CHECK(e.queue->list({.error_contains = "does not resolve"}) == std::vector<MessageId>{b});
  CHECK(e.queue->list({.error_contains = "connection refused"}) == std::vector<MessageId>{a});
}

TEST_CASE("Enqueue rejects bad input with a clear error and queues nothing", "[queue]") {
  Engine e;
  auto env = make_envelope("s@example.org", {"u@example.com"});
  REQUIRE(env);
  auto try_body = [&](std::string body) {
    std::optional<Error> err;
    e.queue->enqueue(env.value(), std::move(body), [&](Result<MessageId> r) {
      if (!r) err = r.error();
    });
    return err;
  };
  auto nul = try_body(std::string("Subject: x\r\n\r\na\0b\r\n", 19));
  REQUIRE(nul);
  CHECK(nul->code == make_error_code(errc::forbidden_character));
  auto longline = try_body("Subject: x\r\n\r\n" + std::string(1200, 'a') + "\r\n");
  REQUIRE(longline);
  CHECK(longline->code == make_error_code(errc::too_long));
  CHECK(longline->message.find("998") != std::string::npos);
  auto empty = try_body("");
  REQUIRE(empty);

  e.storage.fail_inserts(std::make_error_code(std::errc::no_space_on_device));
  auto full = try_body("Subject: x\r\n\r\nbody\r\n");
  REQUIRE(full);
  CHECK(full->code == make_error_code(errc::storage_failure));
  CHECK(e.queue->size() == 0);
  CHECK(e.events.events.empty());
}

TEST_CASE("Recipients of one message for several destinations travel in separate transactions",
          "[queue][deliverer]") {
  Engine e;
  example_com(e);
  e.resolver.set_mx("example.net", {{10, "mx.example.net"}});
  e.resolver.set_addresses("mx.example.net", {"127.0.0.11"});
  e.deliverer->start();
  MessageId id = e.send("s@example.org", {"a@example.com", "b@example.net", "c@example.com"});
  e.settle();
  CHECK(e.queue->find(id) == std::nullopt);
  REQUIRE(e.transport.received.size() == 2);
  for (auto& m : e.transport.received) {
    if (m.server == "127.0.0.10:25")
      CHECK(m.rcpt_to == std::vector<std::string>{"a@example.com", "c@example.com"});
    else
      CHECK(m.rcpt_to == std::vector<std::string>{"b@example.net"});
  }
}

TEST_CASE("Connection reuse: several messages for one destination share a connection",
          "[deliverer]") {
  Engine e;
  example_com(e);
  e.deliverer->start();
  for (int i = 0; i < 5; ++i) e.send("s@example.org", {"u@example.com"});
  e.settle();
  CHECK(e.transport.received.size() == 5);
  CHECK(e.transport.connects.size() <= 2);
  // Idle connections are closed after the idle timeout.
  e.clock.advance(Duration(10s));
  CHECK(e.transport.open_connections() == 0);
  CHECK(e.deliverer->idle());
}

TEST_CASE("A static route sends everything for its domains to the smart host",
          "[route][deliverer]") {
  Engine e;
  Route smart;
  smart.name = "tcp_internal";
  smart.hosts = {{"127.0.0.60", 2525}};
  REQUIRE(e.routes.add(smart));
  REQUIRE(e.routes.map(".corp.example", "tcp_internal"));
  e.deliverer->start();
  MessageId id = e.send("s@example.org", {"a@x.corp.example", "b@y.corp.example"});
  e.settle();
  CHECK(e.queue->find(id) == std::nullopt);
  REQUIRE(e.transport.received.size() == 1);  // one destination: the route
  CHECK(e.transport.received[0].server == "127.0.0.60:2525");
  CHECK(e.transport.received[0].rcpt_to.size() == 2);
  CHECK(e.resolver.queries() == 0);
}

TEST_CASE(
    "TLS required but not offered: deferred, never sent in plaintext, not a connection "
    "failure",
    "[deliverer][tls]") {
  Engine e;
  Route r;
  r.name = "secure";
  r.allow_internal_mx = loopback_networks();
  r.tls = TlsPolicy::required;
  REQUIRE(e.routes.add(r));
  REQUIRE(e.routes.set_default("secure"));
  example_com(e);  // the fake server offers no STARTTLS
  e.deliverer->start();
  MessageId id = e.send("s@example.org", {"u@example.com"});
  e.settle();
  CHECK(e.transport.received.empty());
  CHECK(e.rcpt(id).state == RecipientState::deferred);
  CHECK(e.rcpt(id).last_reply.transient());
  CHECK(e.rcpt(id).last_reply.enhanced.rfind("4.7.", 0) == 0);
  CHECK(e.rcpt(id).last_reply.text.find("STARTTLS") != std::string::npos);
  CHECK_FALSE(e.domains().is_down("example.com", e.clock.now()));
}

TEST_CASE("A 5xx before the transaction (HELO refused) defers instead of bouncing", "[deliverer]") {
  Engine e;
  example_com(e);
  auto& s = e.transport.at("127.0.0.10").script;
  s.ehlo_supported = false;
  s.helo_reply = "550 5.7.1 go away";
  e.deliverer->start();
  MessageId id = e.send("s@example.org", {"u@example.com"});
  e.settle();
  CHECK(e.rcpt(id).state == RecipientState::deferred);
  CHECK(e.rcpt(id).last_reply.to_string() == "451 4.7.1 go away");
  CHECK(e.count(EventKind::returned) == 0);
}

TEST_CASE("EHLO refused falls back to HELO and delivers", "[deliverer]") {
  Engine e;
  example_com(e);
  e.transport.at("127.0.0.10").script.ehlo_supported = false;
  e.deliverer->start();
  MessageId id = e.send("s@example.org", {"u@example.com"});
  e.settle();
  CHECK(e.queue->find(id) == std::nullopt);
  CHECK(e.transport.received.size() == 1);
}

TEST_CASE(
    "Opportunistic TLS: a failed handshake is retried once in plaintext on a new "
    "connection, and the host is remembered as broken-TLS",
    "[deliverer][tls]") {
  Engine e;
  example_com(e);
  e.transport.at("127.0.0.10").script.ehlo_lines.push_back("STARTTLS");
  e.deliverer->start();
  MessageId a = e.send("s@example.org", {"u@example.com"});
  e.settle();
  CHECK(e.queue->find(a) == std::nullopt);  // delivered over the plaintext retry
  CHECK(e.transport.starttls_commands == 1);
  CHECK(e.transport.connects.size() == 2);
  CHECK_FALSE(e.domains().is_down("example.com", e.clock.now()));
  e.clock.advance(Duration(10s));  // idle connection closes
  MessageId b = e.send("s@example.org", {"u@example.com"});
  e.settle();
  CHECK(e.queue->find(b) == std::nullopt);
  CHECK(e.transport.starttls_commands == 1);  // not tried again while remembered
  CHECK(e.transport.connects.size() == 3);
}

TEST_CASE("TLS policy required: a failed handshake is never retried in plaintext",
          "[deliverer][tls]") {
  Engine e;
  Route r;
  r.name = "secure";
  r.allow_internal_mx = loopback_networks();
  r.tls = TlsPolicy::required;
  REQUIRE(e.routes.add(r));
  REQUIRE(e.routes.set_default("secure"));
  example_com(e);
  e.transport.at("127.0.0.10").script.ehlo_lines.push_back("STARTTLS");
  e.deliverer->start();
  MessageId a = e.send("s@example.org", {"u@example.com"});
  e.settle();
  CHECK(e.transport.received.empty());
  CHECK(e.rcpt(a).state == RecipientState::deferred);
  CHECK(e.transport.connects.size() == 1);
}

namespace {
struct ThrowingSink final : EventSink {
  void on_event(const Event&) override { throw std::runtime_error("disk on fire"); }
};
}  // namespace

TEST_CASE(
    "A host sink that throws never unwinds the engine, the error handler hears of it, rate "
    "limited",
    "[queue][deliverer][events]") {
  std::vector<std::string> reports;
  QueueConfig qc = deterministic_queue_config();
  qc.error_handler = [&](const std::string& m) { reports.push_back(m); };
  ManualClock clock;
  MemoryStorage storage;
  RouteTable routes;
  ThrowingSink sink;
  StaticResolver resolver(clock);
  FakeTransport transport(clock);
  resolver.set_mx("example.com", {{10, "mx.example.com"}});
  resolver.set_addresses("mx.example.com", {"127.0.0.10"});
  Route mx = routes.default_route();
  mx.allow_internal_mx = loopback_networks();
  REQUIRE(routes.add(mx));
  Queue queue(storage, routes, clock, &sink, qc);
  Deliverer deliverer(queue, resolver, transport);
  deliverer.start();
  for (int i = 0; i < 5; ++i) {
    auto env = make_envelope("s@example.org", {"u@example.com"});
    queue.enqueue(env.value(), "Subject: x\r\n\r\nx\r\n", [](Result<MessageId> r) { REQUIRE(r); });
  }
  clock.run_pending();
  CHECK(transport.received.size() == 5);  // delivery went on
  CHECK(queue.size() == 0);
  REQUIRE(reports.size() == 1);  // 10 throws (E and D per message), one report
  CHECK(reports[0] == "mailq: the event sink threw: disk on fire");
  clock.advance(Duration(11s));
  auto env = make_envelope("s@example.org", {"u@example.com"});
  queue.enqueue(env.value(), "Subject: x\r\n\r\nx\r\n", [](Result<MessageId> r) { REQUIRE(r); });
  clock.run_pending();
  REQUIRE(reports.size() == 2);
  CHECK(reports[1].find("more since the last report") != std::string::npos);
}

TEST_CASE(
    "A backlog larger than one cycle's share is delivered without waiting for the next "
    "cycle",
    "[deliverer]") {
  DelivererConfig dc;
  dc.max_jobs_per_destination_per_cycle = 2;
  Engine e({3, Duration(15min)}, deterministic_queue_config(), dc);
  example_com(e);
  for (int i = 0; i < 7; ++i) e.send("s@example.org", {"u@example.com"});
  e.settle();  // not started: the new-work notices are ignored, the backlog waits for a cycle
  e.deliverer->start();
  e.settle();
  CHECK(e.transport.received.size() == 7);
  CHECK(e.queue->size() == 0);
}

TEST_CASE(
    "Concurrency: a destination never gets more than its route's connections, the engine "
    "never more than its total, a connection carries at most max_messages_per_connection",
    "[deliverer][limits]") {
  SECTION("per destination") {
    Engine e;
    Route r = *e.routes.find("default-non-local-route");
    r.max_connections = 2;
    REQUIRE(e.routes.add(r));
    example_com(e);
    e.deliverer->start();
    for (int i = 0; i < 40; ++i) e.send("s@example.org", {"u@example.com"});
    e.settle();
    CHECK(e.transport.received.size() == 40);
    CHECK(e.transport.max_open_connections() == 2);
  }
  SECTION("total") {
    DelivererConfig dc;
    dc.max_connections = 3;
    Engine e({3, Duration(15min)}, deterministic_queue_config(), dc);
    for (int d = 0; d < 6; ++d) {
      std::string dom = "d" + std::to_string(d) + ".example";
      e.resolver.set_mx(dom, {{10, "mx." + dom}});
      e.resolver.set_addresses("mx." + dom, {"127.0.1." + std::to_string(d + 1)});
    }
    e.deliverer->start();
    for (int i = 0; i < 60; ++i)
      e.send("s@example.org", {"u@d" + std::to_string(i % 6) + ".example"});
    e.settle();
    e.clock.advance(Duration(10s));  // idle sessions close, waiting destinations get theirs
    CHECK(e.transport.received.size() == 60);
    CHECK(e.transport.max_open_connections() <= 3);
    CHECK(e.queue->size() == 0);
  }
  SECTION("messages per connection") {
    Engine e;
    Route r = *e.routes.find("default-non-local-route");
    r.max_connections = 1;
    r.max_messages_per_connection = 3;
    REQUIRE(e.routes.add(r));
    example_com(e);
    e.deliverer->start();
    for (int i = 0; i < 9; ++i) e.send("s@example.org", {"u@example.com"});
    e.settle();
    CHECK(e.transport.received.size() == 9);
    CHECK(e.transport.connects.size() == 3);
  }
}

TEST_CASE(
    "Delay notices: one 'delayed' DSN per recipient once it has waited long enough, never "
    "for NOTIFY=NEVER",
    "[queue][dsn][delay]") {
  QueueConfig qc = deterministic_queue_config();
  qc.delay_notice_after = Duration(4h);
  qc.retry.schedule = {Duration(1h)};
  Engine e({100, Duration(15min)}, qc);
  example_com(e);
  e.transport.at("127.0.0.10").mode = FakeTransport::Mode::refuse;
  e.deliverer->start();
  auto env = make_envelope("sender@example.org", {"a@example.com", "b@example.com"});
  REQUIRE(env);
  env->recipients[1].notify = kNotifyNever;
  MessageId id;
  e.queue->enqueue(env.value(), "Subject: late\r\n\r\nlate\r\n", [&](Result<MessageId> r) {
    REQUIRE(r);
    id = r.value();
  });
  e.settle();
  auto dsns = [&] {
    std::vector<std::string> out;
    for (auto m : e.queue->list()) {
      const auto rec = e.queue->find(m);
      if (rec->reverse_path.empty()) out.push_back(e.queue->read_body(m).value());
    }
    return out;
  };
  e.clock.advance(Duration(3h) + Duration(30min));
  CHECK(dsns().empty());
  e.clock.advance(Duration(2h));  // an attempt after 4 hours of waiting
  auto d = dsns();
  REQUIRE(d.size() == 1);
  CHECK(d[0].find("Action: delayed") != std::string::npos);
  CHECK(d[0].find("Final-Recipient: rfc822; a@example.com") != std::string::npos);
  CHECK(d[0].find("b@example.com") == std::string::npos);  // NOTIFY=NEVER
  CHECK(d[0].find("Will-Retry-Until:") != std::string::npos);
  CHECK(e.rcpt(id, 0).delay_notified);
  e.clock.advance(Duration(5h));  // more attempts: no second notice
  CHECK(dsns().size() == 1);
}

TEST_CASE(
    "hold_destination / release_destination act on every message with a pending recipient "
    "there",
    "[queue][operator]") {
  Engine e;
  example_com(e);
  e.transport.at("127.0.0.10").mode = FakeTransport::Mode::refuse;
  e.deliverer->start();
  MessageId a = e.send("s@example.org", {"u@example.com"});
  MessageId b = e.send("s@example.org", {"v@example.com", "w@nowhere.example"});
  MessageId c = e.send("s@example.org", {"x@nowhere.example"});
  e.settle();
  CHECK(e.queue->hold_destination("example.com") == 2);
  CHECK(e.queue->find(a)->held);
  CHECK(e.queue->find(b)->held);
  CHECK_FALSE(e.queue->find(c)->held);
  CHECK(e.queue->hold_destination("example.com") == 0);  // already held
  e.transport.at("127.0.0.10").mode = FakeTransport::Mode::smtp;
  e.deliverer->flush();
  e.settle();
  CHECK(e.transport.received.empty());  // held: not attempted
  CHECK(e.queue->release_destination("example.com") == 2);
  e.settle();
  CHECK(e.queue->find(a) == std::nullopt);
  REQUIRE(e.queue->find(b) != std::nullopt);  // w@nowhere.example still pending
  CHECK(e.queue->find(b)->recipients[0].state == RecipientState::delivered);
}

TEST_CASE(
    "A next hop without DSN: the sender gets a 'relayed' notice for the recipients that asked "
    "for NOTIFY=SUCCESS, and none when the next hop offers DSN",
    "[queue][dsn][relayed]") {
  const bool next_hop_dsn = GENERATE(false, true);
  Engine e;
  example_com(e);
  auto& lines = e.transport.at("127.0.0.10").script.ehlo_lines;
  if (!next_hop_dsn) lines.erase(std::remove(lines.begin(), lines.end(), "DSN"), lines.end());
  e.deliverer->start();
  auto env = make_envelope("sender@example.org",
                           {"a@example.com", "b@example.com", "c@example.com", "d@example.com"});
  REQUIRE(env);
  env->recipients[0].notify = kNotifySuccess;
  env->recipients[1].notify = kNotifySuccess | kNotifyFailure;
  // c@ has no NOTIFY (successes are not reported), d@ NOTIFY=FAILURE only.
  env->recipients[3].notify = kNotifyFailure;
  MessageId id;
  e.queue->enqueue(env.value(), "Subject: report\r\nMessage-ID: <r@test>\r\n\r\nhi\r\n",
                   [&](Result<MessageId> r) {
                     REQUIRE(r);
                     id = r.value();
                   });
  e.settle();
  REQUIRE(e.transport.received.size() == 1);
  CHECK(e.transport.received[0].rcpt_to.size() == 4);
  CHECK_FALSE(e.queue->contains(id));  // delivered to all four: gone

  std::vector<std::string> dsns;
  for (auto m : e.queue->list()) {
    const auto rec = e.queue->find(m);
    REQUIRE(rec->reverse_path.empty());
    dsns.push_back(e.queue->read_body(m).value());
  }
  if (next_hop_dsn) {
    CHECK(dsns.empty());  // NOTIFY went on to the next hop with the message
    return;
  }
  REQUIRE(dsns.size() == 1);
  const std::string& d = dsns[0];
  CHECK(d.find("Subject: Successful Mail Delivery Report\r\n") != std::string::npos);
  CHECK(d.find("Final-Recipient: rfc822; a@example.com\r\nAction: relayed\r\nStatus: 2.0.0") !=
        std::string::npos);
  CHECK(d.find("Final-Recipient: rfc822; b@example.com\r\nAction: relayed\r\nStatus: 2.0.0") !=
        std::string::npos);
  CHECK(d.find("c@example.com") == std::string::npos);
  CHECK(d.find("d@example.com") == std::string::npos);
  CHECK(d.find("Action: failed") == std::string::npos);
}

TEST_CASE(
    "Queue::make_all_due on its own delivers deferred mail at once: a flush wakes the "
    "Deliverer",
    "[queue][operator]") {
  Engine e;
  example_com(e);
  auto& s = e.transport.at("127.0.0.10").script;
  s.rcpt_replies["later@example.com"] = "450 4.2.0 <later@example.com>: greylisted";
  e.deliverer->start();
  MessageId id = e.send("s@example.org", {"later@example.com"});
  e.settle();
  REQUIRE(e.rcpt(id).state == RecipientState::deferred);
  e.clock.advance(Duration(10s));  // the idle connection closes (a new one gets the new script)
  s.rcpt_replies.erase("later@example.com");
  e.transport.received.clear();

  CHECK(e.queue->make_all_due() == 1);
  e.settle();  // no time passes: not the next queue cycle
  REQUIRE(e.transport.received.size() == 1);
  CHECK(e.transport.received[0].rcpt_to == std::vector<std::string>{"later@example.com"});
  CHECK(e.queue->find(id) == std::nullopt);
  CHECK(e.queue->make_all_due() == 0);
}

TEST_CASE("QueueStats::destinations counts every destination holding mail, held-only ones too",
          "[queue][operator]") {
  Engine e;
  for (const char* d : {"a.test", "b.test", "c.test"}) {
    e.resolver.set_mx(d, {{10, std::string("mx.") + d}});
    e.resolver.set_addresses(std::string("mx.") + d, {"127.0.0.10"});
  }
  e.transport.at("127.0.0.10").mode = FakeTransport::Mode::refuse;
  e.deliverer->start();
  e.send("s@example.org", {"u@a.test"});
  e.send("s@example.org", {"u@b.test"});
  MessageId held = e.send("s@example.org", {"u@c.test"});
  REQUIRE(e.queue->hold(held));
  e.settle();
  const QueueStats st = e.queue->stats();
  CHECK(st.messages == 3);
  CHECK(st.held == 1);
  CHECK(st.destinations == 3);
  REQUIRE(e.queue->remove(held));
  CHECK(e.queue->stats().destinations == 2);
}

TEST_CASE(
    "QueueConfig::on_message_done gets the final record of a message whose recipients are all "
    "final, and not of a removed one",
    "[queue]") {
  QueueConfig qc = deterministic_queue_config();
  std::vector<MessageRecord> done;
  qc.on_message_done = [&](const MessageRecord& m) { done.push_back(m); };
  Engine e({3, Duration(15min)}, qc);
  example_com(e);
  e.transport.at("127.0.0.10").script.rcpt_replies["no@example.com"] =
      "550 5.1.1 <no@example.com>: no such user";
  e.deliverer->start();
  MessageId mixed = e.send("s@example.org", {"yes@example.com", "no@example.com"});
  e.settle();
  REQUIRE(done.size() == 1);
  CHECK(done[0].id == mixed);
  CHECK(done[0].recipients[0].state == RecipientState::delivered);
  CHECK(done[0].recipients[0].remote_mta == "mx.example.com");
  CHECK(done[0].recipients[1].state == RecipientState::bounced);
  CHECK(done[0].recipients[1].last_reply.code == 550);
  CHECK_FALSE(e.queue->contains(mixed));  // gone by the time the handler runs

  MessageId held = e.send("s@example.org", {"later@example.com"}, "Subject: x\r\n\r\nx\r\n");
  REQUIRE(e.queue->hold(held));
  MessageId removed = e.send("s@example.org", {"gone@example.com"}, "Subject: x\r\n\r\nx\r\n");
  REQUIRE(e.queue->hold(removed));
  REQUIRE(e.queue->remove(removed));
  REQUIRE(e.queue->bounce(held, "no longer wanted"));
  // The bounce (an operator's) finishes the message; the removal does not. The DSNs the
  // bounces caused are messages of their own.
  std::vector<std::uint64_t> ids;
  for (auto& m : done) ids.push_back(m.id.value);
  CHECK(std::count(ids.begin(), ids.end(), held.value) == 1);
  CHECK(std::count(ids.begin(), ids.end(), removed.value) == 0);
}

namespace {

// A MemoryStorage whose inserts complete when the test says (a spool's group commit).
class DeferredInserts final : public Storage {
 public:
  void insert(const MessageRecord& record, std::string_view body, Done done) override {
    waiting_.push_back([this, record, b = std::string(body), done = std::move(done)]() mutable {
      inner_.insert(record, b, std::move(done));
    });
  }
  void complete() {
    auto w = std::move(waiting_);
    waiting_.clear();
    for (auto& f : w) f();
  }
  Result<void> update(const RecordChange& c) override { return inner_.update(c); }
  Result<void> append_attempt(MessageId id, const AttemptRecord& a) override {
    return inner_.append_attempt(id, a);
  }
  Result<void> remove(MessageId id) override { return inner_.remove(id); }
  Result<std::string> read_body(MessageId id) const override { return inner_.read_body(id); }
  Result<std::vector<AttemptRecord>> read_attempts(MessageId id) const override {
    return inner_.read_attempts(id);
  }
  Result<void> load(const std::function<void(MessageRecord&&)>& each,
                    RecoveryReport* report) override {
    return inner_.load(each, report);
  }

 private:
  MemoryStorage inner_;
  std::vector<std::function<void()>> waiting_;
};

}  // namespace

TEST_CASE("enqueue takes a reserved id when free and the submitter's time when earlier",
          "[queue][enqueue]") {
  ManualClock clock(TimePoint(std::chrono::hours(24 * 365 * 50)));
  DeferredInserts storage;
  RouteTable routes;
  Queue q(storage, routes, clock);
  auto env = make_envelope("a@example.org", {"b@example.com"});
  REQUIRE(env);
  std::vector<Result<MessageId>> got;
  auto done = [&](Result<MessageId> r) { got.push_back(std::move(r)); };

  EnqueueOptions eo;
  // Reserved a second ahead of this queue's clock (another machine's time, say).
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(clock.now().time_since_epoch()).count();
  eo.id = MessageId{(static_cast<std::uint64_t>(ms + 1000) << 16) | 5};
  eo.arrival = clock.now() - std::chrono::hours(2);
  q.enqueue(env.value(), "Subject: x\r\n\r\nx\r\n", done, eo);
  // The same id again while the first is being stored, and then once it is: a new id each.
  q.enqueue(env.value(), "Subject: y\r\n\r\ny\r\n", done, eo);
  storage.complete();
  q.enqueue(env.value(), "Subject: z\r\n\r\nz\r\n", done, eo);
  // An arrival in the future is now.
  EnqueueOptions later;
  later.arrival = clock.now() + std::chrono::hours(1);
  q.enqueue(env.value(), "Subject: w\r\n\r\nw\r\n", done, later);
  storage.complete();
  REQUIRE(got.size() == 4);
  for (const auto& r : got) REQUIRE(r);
  CHECK(got[0].value() == eo.id);
  CHECK(got[1].value() != eo.id);
  CHECK(got[2].value() != eo.id);
  CHECK(got[1].value() != got[2].value());
  // Ids made after a reserved one are above it: none is handed out twice.
  CHECK(eo.id < got[1].value());
  CHECK(got[1].value() < got[2].value());
  CHECK(q.find(got[0].value())->arrival == clock.now() - std::chrono::hours(2));
  CHECK(q.find(got[1].value())->arrival == clock.now() - std::chrono::hours(2));
  CHECK(q.find(got[3].value())->arrival == clock.now());
  CHECK(q.size() == 4);

  // An id from far in the future (or the largest there is) is not taken: it would end the
  // time order of the ids made after it.
  for (std::uint64_t wild : {(static_cast<std::uint64_t>(ms + 3600 * 1000) << 16),
                             std::numeric_limits<std::uint64_t>::max()}) {
    EnqueueOptions far;
    far.id = MessageId{wild};
    std::optional<MessageId> id;
    q.enqueue(
        env.value(), "Subject: f\r\n\r\nf\r\n", [&](Result<MessageId> r) { id = *r; }, far);
    storage.complete();
    REQUIRE(id);
    CHECK(id->value != wild);
    CHECK((id->value >> 16) <= static_cast<std::uint64_t>(ms) + 1000);
  }
}
