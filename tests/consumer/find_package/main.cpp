// A program outside the mailq tree. Built against the installed package (and, the same file,
// against a vendored source tree), with -std=c++17 and no extensions: it proves that the
// public headers are C++17-clean and that mailq::mailq brings everything needed to link and
// run. It exercises a little of the real engine, so a library that links but misbehaves
// fails here too.
#include <mailq/mailq.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

static_assert(__cplusplus == 201703L, "the consumer must be compiled as exactly C++17");

namespace {

int failures = 0;

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "FAILED: %s\n", what);
    ++failures;
  }
}

}  // namespace

int main() {
  // Value types: a valid address parses, an injection attempt is refused with a clear error.
  auto address = mailq::Address::parse("User@Example.ORG");
  check(address.ok(), "Address::parse accepts User@Example.ORG");
  if (address.ok()) check(address->routing_domain() == "example.org", "routing_domain lowercases");
  auto injected = mailq::Address::parse("user@example.org\r\nRCPT TO:<x@y.z>");
  check(!injected.ok() && injected.error().code == mailq::errc::forbidden_character,
        "Address::parse refuses CR LF");

  // Routes: a smart host for one domain tree, MX lookup for the rest.
  mailq::RouteTable routes;
  mailq::Route relay;
  relay.name = "tcp_internal";
  auto host = mailq::RouteHost::parse("relay.example.net:2525");
  check(host.ok() && host->port == 2525, "RouteHost::parse reads the port");
  if (host.ok()) relay.hosts.push_back(*host);
  check(routes.add(relay).ok(), "RouteTable::add");
  check(routes.map(".example.com", "tcp_internal").ok(), "RouteTable::map");
  check(routes.lookup("mail.example.com").name == "tcp_internal", "wildcard route");
  check(routes.lookup("example.org").name == "default-non-local-route", "default route");

  // Domain state under a manual clock: two failures mark a destination down for 15 minutes.
  mailq::ManualClock clock;
  mailq::DomainStateTable domains(mailq::DomainStateConfig{2, std::chrono::minutes(15)});
  domains.record_failure("example.org", clock.now(), "connection refused");
  check(domains.record_failure("example.org", clock.now(), "connection refused"),
        "the second failure marks the destination down");
  clock.advance(std::chrono::minutes(14));
  check(domains.is_down("example.org", clock.now()), "down after 14 minutes");
  clock.advance(std::chrono::minutes(1));
  check(!domains.is_down("example.org", clock.now()), "up again after 15 minutes");
  check(mailq::replies::domain_marked_down().to_string() ==
            "451 4.4.1 [internal] connection was not attempted: domain is marked down (too "
            "many connection failures)",
        "the domain-down reply text");

  // The queue over in-memory storage: an enqueued message is stored and listed.
  mailq::MemoryStorage storage;
  mailq::MemorySink events;
  mailq::Queue queue(storage, routes, clock, &events);
  auto envelope = mailq::make_envelope("sender@example.net", {"user@example.org"});
  check(envelope.ok(), "make_envelope");
  bool stored = false;
  if (envelope.ok()) {
    queue.enqueue(*envelope, "Subject: hi\r\n\r\nhello\r\n",
                  [&](mailq::Result<mailq::MessageId> id) { stored = id.ok(); });
    clock.run_pending();
  }
  check(stored, "Queue::enqueue stores the message");
  check(queue.size() == 1 && storage.size() == 1, "one message queued and stored");
  check(!events.events.empty() && events.events.front().kind == mailq::EventKind::enqueued,
        "an E event for the enqueued recipient");

  if (failures != 0) {
    std::fprintf(stderr, "mailq consumer: %d check(s) failed\n", failures);
    return 1;
  }
  std::printf("mailq consumer: ok\n");
  return 0;
}
