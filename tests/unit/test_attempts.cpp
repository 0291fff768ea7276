// What one delivery attempt of a destination is: its hosts tried in order before the
// destination is judged, failed hosts logged, and an attempt that ends.
#include "engine_fixture.h"

using namespace mailq;
using namespace mailq::test;

namespace {

void three_mx(Engine& e) {
  e.resolver.set_mx("example.com",
                    {{10, "mx10.example.com"}, {20, "mx20.example.com"}, {30, "mx30.example.com"}});
  e.resolver.set_addresses("mx10.example.com", {"127.0.0.10"});
  e.resolver.set_addresses("mx20.example.com", {"127.0.0.20"});
  e.resolver.set_addresses("mx30.example.com", {"127.0.0.30"});
  e.transport.at("127.0.0.10").mode = FakeTransport::Mode::refuse;
  e.transport.at("127.0.0.20").mode = FakeTransport::Mode::refuse;
}

std::vector<std::string> notices(const Engine& e) {
  std::vector<std::string> out;
  for (const auto& ev : e.events.events)
    if (ev.kind == EventKind::notice)
      for (const auto& d : ev.diagnostic) out.push_back(ev.destination + ": " + d);
  return out;
}

}  // namespace

TEST_CASE(
    "An attempt tries the destination's hosts before the destination is judged: a threshold "
    "of 2 does not stop the third MX, which delivers",
    "[deliverer][attempt]") {
  Engine e({2, Duration(15min)});
  three_mx(e);
  e.deliverer->start();
  MessageId id = e.send("s@example.org", {"u@example.com"});
  e.settle();
  CHECK(e.queue->find(id) == std::nullopt);  // delivered by MX 30
  CHECK(e.transport.connects ==
        std::vector<std::string>{"127.0.0.10:25", "127.0.0.20:25", "127.0.0.30:25"});
  CHECK_FALSE(e.domains().is_down("example.com", e.clock.now()));
  CHECK(e.count(EventKind::destination_down) == 0);
  // The failed hosts are in the log, each with its address and error.
  CHECK(notices(e) ==
        std::vector<std::string>{
            "example.com: host mx10.example.com (127.0.0.10:25) failed: TCP active open: Failed "
            "connect() Error: connection refused; trying the next host",
            "example.com: host mx20.example.com (127.0.0.20:25) failed: TCP active open: Failed "
            "connect() Error: connection refused; trying the next host"});
}

TEST_CASE(
    "The failure threshold counts attempts that ran out of hosts, not hosts: two refusing "
    "MX hosts are one failure",
    "[deliverer][attempt]") {
  Engine e({2, Duration(15min)});
  three_mx(e);
  e.transport.at("127.0.0.30").mode = FakeTransport::Mode::refuse;
  e.deliverer->start();
  MessageId first = e.send("s@example.org", {"u@example.com"});
  e.settle();
  CHECK(e.transport.connects.size() == 3);
  CHECK(e.rcpt(first).state == RecipientState::deferred);
  CHECK(e.rcpt(first).attempts == 1);
  CHECK_FALSE(e.domains().is_down("example.com", e.clock.now()));
  REQUIRE(e.domains().state("example.com"));
  CHECK(e.domains().state("example.com")->consecutive_failures == 1);
  // The last host's failure is what the recipient got; the two before it are notices.
  CHECK(e.rcpt(first).last_reply.to_string() ==
        "421 4.4.1 [internal] TCP active open: Failed connect() Error: connection refused");
  CHECK(notices(e).size() == 2);

  e.send("s@example.org", {"v@example.com"});
  e.settle();
  CHECK(e.transport.connects.size() == 6);
  CHECK(e.domains().is_down("example.com", e.clock.now()));
  CHECK(e.count(EventKind::destination_down) == 1);
}

TEST_CASE(
    "An attempt that outlives its resolution goes on through its hosts and ends with a "
    "deferral, instead of starting over at the first host",
    "[deliverer][attempt]") {
  Engine e;
  Route slow;
  slow.name = "tcp_slow";
  slow.allow_internal_mx = loopback_networks();
  slow.timeouts.greeting = Duration(65s);  // longer than the minute a resolution is fresh
  REQUIRE(e.routes.add(slow));
  REQUIRE(e.routes.set_default("tcp_slow"));
  e.resolver.set_mx("example.com", {{10, "silent.example.com"}});
  e.resolver.set_addresses("silent.example.com", {"127.0.0.40"});
  // It connects, then never finishes its greeting.
  e.transport.at("127.0.0.40").script.greeting = "220-still thinking";
  e.deliverer->start();
  MessageId id = e.send("s@example.org", {"u@example.com"});
  e.settle();
  e.clock.advance(Duration(70s));
  // One session, timed out, and the attempt is over: a Q record, not a redial.
  CHECK(e.transport.connects.size() == 1);
  CHECK(e.rcpt(id).state == RecipientState::deferred);
  CHECK(e.rcpt(id).attempts == 1);
  CHECK(e.rcpt(id).last_reply.code == 421);
  e.clock.advance(Duration(10min));
  CHECK(e.transport.connects.size() == 1);  // the next try waits for the retry time
  CHECK(e.deliverer->jobs() == 0);
}

TEST_CASE(
    "A 421 to MAIL ends the session and the next MX host is tried in the same attempt, with "
    "no host left the recipients get the 421",
    "[deliverer][attempt]") {
  Engine e;
  e.resolver.set_mx("example.com", {{10, "mx10.example.com"}, {20, "mx20.example.com"}});
  e.resolver.set_addresses("mx10.example.com", {"127.0.0.10"});
  e.resolver.set_addresses("mx20.example.com", {"127.0.0.20"});
  e.transport.at("127.0.0.10").script.mail_reply = "421 4.3.2 Service shutting down";
  e.deliverer->start();
  MessageId id = e.send("s@example.org", {"u@example.com"});
  e.settle();
  CHECK(e.queue->find(id) == std::nullopt);
  REQUIRE(e.transport.received.size() == 1);
  CHECK(e.transport.received[0].server == "127.0.0.20:25");
  const auto n = notices(e);
  REQUIRE(n.size() == 1);
  CHECK(n[0].find("host mx10.example.com (127.0.0.10:25) failed:") != std::string::npos);
  CHECK(n[0].find("421 4.3.2 Service shutting down; trying the next host") != std::string::npos);

  // Only that host: deferred with the server's own 421, one real attempt.
  Engine single;
  single.resolver.set_mx("example.com", {{10, "mx10.example.com"}});
  single.resolver.set_addresses("mx10.example.com", {"127.0.0.10"});
  single.transport.at("127.0.0.10").script.mail_reply = "421 4.3.2 Service shutting down";
  single.deliverer->start();
  MessageId deferred = single.send("s@example.org", {"u@example.com"});
  single.settle();
  CHECK(single.rcpt(deferred).state == RecipientState::deferred);
  CHECK(single.rcpt(deferred).last_reply.to_string() == "421 4.3.2 Service shutting down");
  CHECK(single.rcpt(deferred).attempts == 1);
  CHECK(single.transport.connects.size() == 1);
}

TEST_CASE(
    "A server's recipient limit: the rest go in the next transactions at once, each recipient "
    "delivered once, with 452 or with 552 (taken as 452, RFC 5321 4.5.3.1.10)",
    "[deliverer][attempt]") {
  for (const char* over :
       {"452 4.5.3 Error: too many recipients", "552 5.5.3 too many recipients"}) {
    INFO(over);
    Engine e;
    e.resolver.set_mx("example.com", {{10, "mx.example.com"}});
    e.resolver.set_addresses("mx.example.com", {"127.0.0.10"});
    auto& s = e.transport.at("127.0.0.10").script;
    s.max_recipients = 2;
    s.over_limit = over;
    e.deliverer->start();
    std::vector<std::string> to;
    for (int i = 0; i < 5; ++i) to.push_back("r" + std::to_string(i) + "@example.com");
    MessageId id = e.send("s@example.org", to);
    e.settle();
    CHECK(e.queue->find(id) == std::nullopt);
    REQUIRE(e.transport.received.size() == 3);
    std::vector<std::string> got;
    for (auto& m : e.transport.received) got.insert(got.end(), m.rcpt_to.begin(), m.rcpt_to.end());
    std::sort(got.begin(), got.end());
    CHECK(got == to);
    CHECK(e.count(EventKind::delivered) == 5);
    CHECK(e.count(EventKind::deferred) == 0);
    CHECK(e.count(EventKind::returned) == 0);
  }
}

TEST_CASE("A recipient the server refuses with 452 for its own reasons is deferred, not resent",
          "[deliverer][attempt]") {
  Engine e;
  e.resolver.set_mx("example.com", {{10, "mx.example.com"}});
  e.resolver.set_addresses("mx.example.com", {"127.0.0.10"});
  e.transport.at("127.0.0.10").script.rcpt_replies["full@example.com"] = "452 4.2.2 mailbox full";
  e.deliverer->start();
  MessageId id = e.send("s@example.org", {"ok@example.com", "full@example.com"});
  e.settle();
  // Resent once at once (the limit case looks the same), refused alone, then deferred.
  CHECK(e.transport.received.size() == 1);
  CHECK(e.rcpt(id, 1).state == RecipientState::deferred);
  CHECK(e.rcpt(id, 1).last_reply.to_string() == "452 4.2.2 mailbox full");
  CHECK(e.count(EventKind::deferred) == 1);
}

TEST_CASE(
    "An MX pointing at an address or at an internal network is not followed there: a notice "
    "in the log, and a bounce when no MX host is left",
    "[deliverer][attempt]") {
  Engine e;
  Route plain = e.routes.default_route();
  plain.allow_internal_mx.clear();  // the default: no internal network allowed
  REQUIRE(e.routes.add(plain));
  e.resolver.set_mx("t.test", {{10, "127.0.1.18"}, {20, "mx.t.test"}});
  e.resolver.set_addresses("mx.t.test", {"127.0.0.10"});
  e.deliverer->start();
  MessageId id = e.send("s@example.org", {"u@t.test"});
  e.settle();
  CHECK(e.transport.connects.empty());  // nothing dialled
  CHECK(notices(e) ==
        std::vector<std::string>{
            "t.test: MX host 127.0.1.18 of t.test is an address, not a host name (RFC 5321 "
            "section 5.1): not used",
            "t.test: MX host mx.t.test of t.test has the internal address 127.0.0.10: not "
            "dialled (not in the route's allow_internal_mx)"});
  CHECK(e.queue->find(id) == std::nullopt);
  CHECK(e.count(EventKind::returned) == 1);
}

TEST_CASE(
    "Timeouts as configured: a server that stops taking the body is left data_block after the "
    "last write, one that never answers the dot data_term after it was written",
    "[deliverer][attempt][timeout]") {
  Engine e;
  Route r = e.routes.default_route();
  r.timeouts.data_block = Duration(2s);
  r.timeouts.data_term = Duration(3s);
  REQUIRE(e.routes.add(r));
  e.resolver.set_mx("example.com", {{10, "mx.example.com"}});
  e.resolver.set_addresses("mx.example.com", {"127.0.0.10"});
  const bool stall = GENERATE(true, false);
  if (stall)
    e.transport.at("127.0.0.10").script.stall_body = true;
  else
    e.transport.at("127.0.0.10").script.no_final_reply = true;
  e.deliverer->start();
  // Five MiB: the old allowance would have been 5 x data_block + data_term = 13 s.
  std::string body = "Subject: big\r\n\r\n";
  while (body.size() < (5u << 20)) body += std::string(76, 'a') + "\r\n";
  MessageId id = e.send("s@example.org", {"u@example.com"}, body);
  e.settle();  // connected, MAIL, RCPT, DATA, 354: the body went out (or stalled) now
  REQUIRE(e.rcpt(id).state == RecipientState::queued);
  const Duration limit = stall ? Duration(2s) : Duration(3s);
  e.clock.advance(limit - Duration(1));
  CHECK(e.rcpt(id).state == RecipientState::queued);  // still in its transaction
  e.clock.advance(Duration(1));
  CHECK(e.rcpt(id).state == RecipientState::deferred);
  CHECK(e.rcpt(id).last_reply.to_string() ==
        (stall ? "421 4.4.2 [internal] timeout sending the message body"
               : "421 4.4.2 [internal] timeout waiting for reply to end of data"));
}

TEST_CASE(
    "A host that failed to connect is passed over during its backoff while its destination has "
    "another host, then tried again, and flush ends the backoff",
    "[deliverer][attempt][backoff]") {
  DelivererConfig dc;
  dc.host_backoff = Duration(5min);
  Engine e({3, Duration(15min)}, deterministic_queue_config(), dc);
  e.resolver.set_mx("example.com", {{10, "mx10.example.com"}, {20, "mx20.example.com"}});
  e.resolver.set_mx("example.net", {{10, "mx10.example.com"}, {20, "mx20.example.com"}});
  e.resolver.set_addresses("mx10.example.com", {"127.0.0.10"});
  e.resolver.set_addresses("mx20.example.com", {"127.0.0.20"});
  e.transport.at("127.0.0.10").mode = FakeTransport::Mode::refuse;
  e.deliverer->start();

  MessageId first = e.send("s@example.org", {"u@example.com"});
  e.settle();
  CHECK(e.queue->find(first) == std::nullopt);
  CHECK(e.transport.connects == std::vector<std::string>{"127.0.0.10:25", "127.0.0.20:25"});

  // Another message, and another destination on the same hosts: straight to MX 20.
  e.clock.advance(Duration(10s));
  MessageId second = e.send("s@example.org", {"v@example.com"});
  MessageId third = e.send("s@example.org", {"w@example.net"});
  e.settle();
  CHECK(e.queue->find(second) == std::nullopt);
  CHECK(e.queue->find(third) == std::nullopt);
  CHECK(std::count(e.transport.connects.begin(), e.transport.connects.end(), "127.0.0.10:25") == 1);
  const auto n = notices(e);
  CHECK(std::count_if(n.begin(), n.end(), [](const std::string& s) {
          return s.find(
                     "host mx10.example.com (127.0.0.10:25) not tried: in its connection "
                     "backoff for 290 s more after TCP active open: Failed connect() Error: "
                     "connection refused; trying the next host") != std::string::npos;
        }) >= 1);

  // After the backoff the host is tried again (it still refuses: a new backoff).
  e.clock.advance(Duration(5min));
  MessageId fourth = e.send("s@example.org", {"x@example.com"});
  e.settle();
  CHECK(e.queue->find(fourth) == std::nullopt);
  CHECK(std::count(e.transport.connects.begin(), e.transport.connects.end(), "127.0.0.10:25") == 2);

  // The host is back; flush: tried at once, no backoff left (once the idle connection to
  // MX 20 has closed, so that a new one is opened).
  e.clock.advance(Duration(10s));
  e.settle();
  e.transport.at("127.0.0.10").mode = FakeTransport::Mode::smtp;
  e.deliverer->flush();
  MessageId fifth = e.send("s@example.org", {"y@example.com"});
  e.settle();
  CHECK(e.queue->find(fifth) == std::nullopt);
  CHECK(e.transport.connects.back() == "127.0.0.10:25");
}

TEST_CASE(
    "When every host of a destination is in its backoff the attempt connects as before: the "
    "destination is judged on real connections (seed 000)",
    "[deliverer][attempt][backoff]") {
  DelivererConfig dc;
  dc.host_backoff = Duration(5min);
  Engine e({2, Duration(15min)}, deterministic_queue_config(), dc);
  e.resolver.set_mx("example.com", {{10, "mx10.example.com"}});
  e.resolver.set_addresses("mx10.example.com", {"127.0.0.10"});
  e.transport.at("127.0.0.10").mode = FakeTransport::Mode::refuse;
  e.deliverer->start();
  e.send("s@example.org", {"u@example.com"});
  e.settle();
  e.send("s@example.org", {"v@example.com"});
  e.settle();
  CHECK(e.transport.connects == std::vector<std::string>{"127.0.0.10:25", "127.0.0.10:25"});
  CHECK(e.domains().is_down("example.com", e.clock.now()));
}
