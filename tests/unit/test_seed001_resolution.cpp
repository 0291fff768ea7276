// Seed 001: "421 4.4.4 [internal] domain does not resolve", and MX selection.
#include <set>

#include "engine_fixture.h"
#include "mailq/dsn.h"

using namespace mailq;
using namespace mailq::test;

namespace {
const char* kNoResolve = "421 4.4.4 [internal] domain does not resolve";
}

TEST_CASE("Seed 001: NXDOMAIN defers with exactly 421 4.4.4 by default", "[seed001][deliverer]") {
  Engine e;
  e.deliverer->start();
  MessageId id = e.send("s@example.org", {"user@nowhere.example"});
  e.settle();
  const auto& r = e.rcpt(id);
  CHECK(r.state == RecipientState::deferred);
  CHECK(r.attempts == 1);
  CHECK(r.last_reply.to_string() == kNoResolve);
  CHECK(r.last_reply.transient());
  CHECK(e.transport.connects.empty());
  auto attempts = e.queue->transient_attempts(id);
  REQUIRE(attempts);
  REQUIRE(attempts->size() == 1);
  CHECK(attempts->at(0).reply.to_string() == kNoResolve);
  CHECK(attempts->at(0).diagnostic.find("NXDOMAIN") != std::string::npos);
}

TEST_CASE(
    "Seed 001: SERVFAIL, REFUSED and timeouts are always transient, even when NXDOMAIN "
    "bounces",
    "[seed001][deliverer]") {
  for (DnsStatus st : {DnsStatus::servfail, DnsStatus::refused, DnsStatus::timeout}) {
    Engine e;
    Route r;
    r.name = "strict";
    r.allow_internal_mx = loopback_networks();
    r.nxdomain_is_permanent = true;
    REQUIRE(e.routes.add(r));
    REQUIRE(e.routes.set_default("strict"));
    e.resolver.set_mx_status("flaky.example", st);
    e.deliverer->start();
    MessageId id = e.send("s@example.org", {"user@flaky.example"});
    e.settle();
    INFO(to_string(st));
    CHECK(e.rcpt(id).state == RecipientState::deferred);
    CHECK(e.rcpt(id).last_reply.to_string() == kNoResolve);
    auto attempts = e.queue->transient_attempts(id);
    REQUIRE(attempts);
    CHECK(attempts->at(0).diagnostic.find("4.4.3") != std::string::npos);
  }
}

TEST_CASE(
    "Seed 001: NXDOMAIN bounces with 550 5.1.2 when the route says so, and a DSN goes to "
    "the sender",
    "[seed001][deliverer][dsn]") {
  Engine e;
  Route r;
  r.name = "strict";
  r.allow_internal_mx = loopback_networks();
  r.nxdomain_is_permanent = true;
  REQUIRE(e.routes.add(r));
  REQUIRE(e.routes.set_default("strict"));
  e.resolver.set_mx("example.org", {{10, "mx.example.org"}});
  e.resolver.set_addresses("mx.example.org", {"127.0.0.20"});
  e.deliverer->start();
  MessageId id = e.send("sender@example.org", {"user@nowhere.example"});
  e.settle();
  CHECK(e.queue->find(id) == std::nullopt);  // bounced: final
  CHECK(e.count(EventKind::returned) == 1);
  // The DSN was queued with the null reverse path to the sender and delivered.
  REQUIRE(e.transport.received.size() == 1);
  const auto& dsn = e.transport.received[0];
  CHECK(dsn.mail_from.find("MAIL FROM:<>") == 0);
  REQUIRE(dsn.rcpt_to == std::vector<std::string>{"sender@example.org"});
  CHECK(dsn.data.find("report-type=delivery-status") != std::string::npos);
  CHECK(dsn.data.find("Status: 5.1.2") != std::string::npos);
  CHECK(dsn.data.find("Final-Recipient: rfc822; user@nowhere.example") != std::string::npos);
}

TEST_CASE("Null MX bounces with 556 5.1.10 and no connection", "[seed001][deliverer]") {
  Engine e;
  e.resolver.set_mx("nullmx.example", {{0, ""}});
  e.deliverer->start();
  MessageId id = e.send("<>", {"user@nullmx.example"});  // null sender: no DSN
  e.settle();
  CHECK(e.queue->find(id) == std::nullopt);
  REQUIRE(e.count(EventKind::returned) == 1);
  for (auto& ev : e.events.events)
    if (ev.kind == EventKind::returned) {
      CHECK(ev.reply.code == 556);
      CHECK(ev.reply.enhanced == "5.1.10");
    }
  CHECK(e.transport.connects.empty());
  CHECK(e.queue->size() == 0);  // never a DSN for a <> sender
}

TEST_CASE("MX hosts are tried in preference order, the next host on a connection failure",
          "[seed001][deliverer]") {
  Engine e;
  e.resolver.set_mx("example.com", {{20, "backup.example.com"}, {10, "primary.example.com"}});
  e.resolver.set_addresses("primary.example.com", {"127.0.0.11", "127.0.0.12"});
  e.resolver.set_addresses("backup.example.com", {"127.0.0.13"});
  e.transport.at("127.0.0.11").mode = FakeTransport::Mode::refuse;
  e.transport.at("127.0.0.12").error = std::errc::host_unreachable;
  e.transport.at("127.0.0.12").mode = FakeTransport::Mode::refuse;
  e.deliverer->start();
  MessageId id = e.send("s@example.org", {"user@example.com"});
  e.settle();
  CHECK(e.queue->find(id) == std::nullopt);
  CHECK(e.transport.connects ==
        std::vector<std::string>{"127.0.0.11:25", "127.0.0.12:25", "127.0.0.13:25"});
  REQUIRE(e.transport.received.size() == 1);
  CHECK(e.transport.received[0].server == "127.0.0.13:25");
  // The delivery record names the host that took it, as in seed 002.
  const Event& d = e.events.events.back();
  CHECK(d.kind == EventKind::delivered);
  REQUIRE_FALSE(d.diagnostic.empty());
  CHECK(d.diagnostic[0] == "dns;backup.example.com (TCP|127.0.0.1|40000|127.0.0.13|25)");
  CHECK(d.diagnostic.back() == "smtp; 250 2.0.0 Ok: queued");
}

TEST_CASE("Equal MX preferences are tried in random order", "[seed001][deliverer]") {
  Engine e;
  e.resolver.set_mx("example.com", {{10, "a.example.com"}, {10, "b.example.com"}});
  e.resolver.set_addresses("a.example.com", {"127.0.0.21"});
  e.resolver.set_addresses("b.example.com", {"127.0.0.22"});
  e.deliverer->start();
  std::set<std::string> first_choice;
  for (int i = 0; i < 40; ++i) {
    e.send("s@example.org", {"user@example.com"});
    e.settle();
    e.clock.advance(Duration(10s));  // let the idle connection close: a fresh choice each time
  }
  for (auto& c : e.transport.connects) first_choice.insert(c);
  CHECK(first_choice == std::set<std::string>{"127.0.0.21:25", "127.0.0.22:25"});
  CHECK(e.transport.received.size() == 40);
}

TEST_CASE("Implicit MX: a domain without MX records is delivered to its own address",
          "[seed001][deliverer]") {
  Engine e;
  e.resolver.set_addresses("plain.example", {"127.0.0.30"});
  e.deliverer->start();
  MessageId id = e.send("s@example.org", {"user@plain.example"});
  e.settle();
  CHECK(e.queue->find(id) == std::nullopt);
  CHECK(e.transport.connects == std::vector<std::string>{"127.0.0.30:25"});
}

TEST_CASE("An MX list whose best host is this host is a loop: 554 5.4.6, never delivered",
          "[seed001][deliverer]") {
  DelivererConfig dc;
  dc.local_names = {"mx.self.example"};
  Engine e({3, Duration(15min)}, deterministic_queue_config(), dc);
  e.resolver.set_mx("self.example", {{10, "mx.self.example"}, {20, "backup.example"}});
  e.resolver.set_addresses("mx.self.example", {"127.0.0.40"});
  e.resolver.set_addresses("backup.example", {"127.0.0.41"});
  e.deliverer->start();
  MessageId id = e.send("<>", {"user@self.example"});
  e.settle();
  CHECK(e.queue->find(id) == std::nullopt);
  CHECK(e.transport.connects.empty());
  CHECK(e.events.events.back().reply.enhanced == "5.4.6");
}

TEST_CASE(
    "An MX host without an address is skipped: when none has one the message bounces with "
    "5.4.4, when a lookup failed for now it is deferred with 421 4.4.4",
    "[seed001][deliverer]") {
  Engine e;
  e.resolver.set_mx("example.com", {{10, "ghost.example.com"}, {20, "real.example.com"}});
  e.resolver.set_addresses("real.example.com", {"127.0.0.50"});
  e.resolver.set_mx("ghosts.example", {{10, "ghost.example.com"}, {20, "ghost2.example.com"}});
  e.resolver.set_mx("flaky.example", {{10, "ghost.example.com"}, {20, "flaky.example.com"}});
  e.resolver.set_addresses_status("flaky.example.com", DnsStatus::servfail);
  e.deliverer->start();
  MessageId ok = e.send("s@example.org", {"user@example.com"});
  MessageId bad = e.send("s@example.org", {"user@ghosts.example"});
  MessageId later = e.send("s@example.org", {"user@flaky.example"});
  e.settle();
  CHECK(e.queue->find(ok) == std::nullopt);
  // Every MX host definitely without an address: nothing will ever answer (Postfix bounces).
  CHECK(e.queue->find(bad) == std::nullopt);
  const Event* r = nullptr;
  for (const auto& ev : e.events.events)
    if (ev.kind == EventKind::returned && ev.recipient == "user@ghosts.example") r = &ev;
  REQUIRE(r);
  CHECK(r->reply.to_string() == "550 5.4.4 [internal] no MX host has a valid address");
  CHECK(r->diagnostic == std::vector<std::string>{"dns; no address for any MX host of "
                                                  "ghosts.example; ghost.example.com: nxdomain; "
                                                  "ghost2.example.com: nxdomain"});
  // One lookup failed for now: a deferral.
  CHECK(e.rcpt(later).last_reply.to_string() == kNoResolve);
}
