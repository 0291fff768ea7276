// A misbehaving nameserver (issue 7): the whole engine with the c-ares resolver against a DNS
// server on 127.0.0.1 that answers garbage, answers with wrong ids, truncates its answers and
// then misbehaves over TCP too, or never answers. Every case ends in seed 001's transient
// outcome, `421 4.4.4 [internal] domain does not resolve`, with the resolver's reason in the
// log line (4.4.3: a DNS failure, not a definite answer), no bounce, no crash, no hang.
#include <catch2/catch.hpp>

#include <string>

#include "core/queue/port.h"
#include "mailq/ares/resolver.h"
#include "support/hostile_dns.h"
#include "support/hostile_engine.h"

using namespace mailq;
using namespace mailq::test;
using namespace std::chrono_literals;
using Catch::Matchers::Contains;

namespace {

struct DnsEngine {
  HostileDns dns;
  std::unique_ptr<HostileEngine> engine;

  DnsEngine(HostileDns::Udp udp, HostileDns::Tcp tcp, Duration timeout = Duration(200ms))
      : dns(udp, tcp) {
    std::string err;
    REQUIRE(dns.start(&err));
    INFO(err);
    HostileEngineOptions o;
    o.port = 25;  // never reached
    const std::string ns = dns.address();
    o.resolver = [ns, timeout](uv_loop_t* loop, Clock& clock) -> std::unique_ptr<Resolver> {
      ares::AresResolverOptions ro;
      ro.nameservers = {ns};
      ro.timeout = timeout;
      ro.tries = 2;
      ro.cache.enabled = false;
      ro.query_deadline = Duration(5s);
      auto r = ares::AresResolver::open(loop, clock, ro);
      REQUIRE(r);
      return std::move(r.value());
    };
    engine = std::make_unique<HostileEngine>(o);
  }
  ~DnsEngine() {
    engine.reset();
    dns.stop();
  }

  // The deferral's diagnostic line ("dns; example.com MX lookup failed: ...").
  std::string deferred_detail() {
    MessageId id = engine->send();
    REQUIRE(engine->settle(id));
    const auto r = engine->rcpt(id);
    REQUIRE(r);  // still queued: nothing lost, never bounced
    CHECK(r->state == RecipientState::deferred);
    CHECK(r->last_reply.to_string() == "421 4.4.4 [internal] domain does not resolve");
    CHECK(r->attempts == 1);
    std::string detail;
    for (const auto& e : engine->events.events)
      if (e.kind == EventKind::deferred && e.id == id && !e.diagnostic.empty())
        detail = e.diagnostic.front();
    auto attempts = engine->queue->transient_attempts(id);
    REQUIRE(attempts);
    REQUIRE(attempts.value().size() == 1);
    CHECK(attempts.value()[0].reply.to_string() == "421 4.4.4 [internal] domain does not resolve");
    CHECK(engine->deliverer->stats().dns_failures == 1);
    CHECK(engine->deliverer->stats().connections_opened == 0);
    return detail;
  }
};

}  // namespace

TEST_CASE("hostile DNS: every broken answer defers with 421 4.4.4 and the resolver's reason",
          "[hostile][dns]") {
  using U = HostileDns::Udp;
  using T = HostileDns::Tcp;
  struct Case {
    const char* name;
    U udp;
    T tcp;
    const char* status;  // DnsStatus in the detail
    const char* reason;  // the c-ares adapter's text
  };
  const Case c = GENERATE(
      Case{"never answering", U::silent, T::none, "timeout",
           "timed out, no answer from the nameservers"},
      Case{"wrong query ids", U::wrong_id, T::none, "timeout",
           "timed out, no answer from the nameservers"},
      Case{"random octets after the right id", U::random_garbage, T::none, "timeout",
           "timed out, no answer from the nameservers"},
      Case{"packets shorter than a header", U::short_packet, T::none, "timeout",
           "timed out, no answer from the nameservers"},
      Case{"a garbage answer section", U::garbage_answer, T::none, "error",
           "malformed response from the nameservers"},
      Case{"truncated, TCP refused", U::truncated, T::none, "servfail",
           "SERVFAIL or REFUSED from every nameserver, or connection refused"},
      Case{"truncated, TCP closed at once", U::truncated, T::close, "servfail",
           "SERVFAIL or REFUSED from every nameserver, or connection refused"},
      Case{"truncated, TCP never answering", U::truncated, T::hang, "timeout",
           "timed out, no answer from the nameservers"},
      Case{"truncated, TCP garbage answer", U::truncated, T::garbage_answer, "error",
           "malformed response from the nameservers"},
      Case{"truncated, TCP length longer than the answer", U::truncated, T::short_length,
           "servfail", "SERVFAIL or REFUSED from every nameserver, or connection refused"});
  INFO(c.name);
  DnsEngine d(c.udp, c.tcp);
  const std::string detail = d.deferred_detail();
  INFO(d.engine->diagnostics());
  CHECK(detail == std::string("dns; example.com MX lookup failed: ") + c.status +
                      " (example.com MX: " + c.reason + " (" + d.dns.address() +
                      ")); 4.4.3 directory server failure");
  CHECK(d.dns.udp_queries() >= 1);
  if (c.udp == U::truncated && c.tcp != T::none) CHECK(d.dns.tcp_connections() >= 1);
}

TEST_CASE("hostile DNS: destroying the engine while a query hangs puts the job back unattempted",
          "[hostile][dns]") {
  DnsEngine d(HostileDns::Udp::silent, HostileDns::Tcp::none, Duration(5s));
  auto env = make_envelope("sender@example.org", {"user@example.com"});
  REQUIRE(env);
  std::optional<MessageId> id;
  d.engine->queue->enqueue(env.value(), HostileEngine::kBody,
                           [&](Result<MessageId> r) { id = r.value(); });
  REQUIRE(d.engine->poll_until([&] { return d.dns.udp_queries() >= 1; }, 10s));
  REQUIRE(id);
  INFO(d.engine->diagnostics());
  CHECK(mailq::detail::delivery_port(*d.engine->queue).in_flight(*id));
  // Destroying the Deliverer cancels the query; the job goes back unattempted.
  d.engine->deliverer.reset();
  d.engine->loop.run_for(50ms);
  REQUIRE(d.engine->rcpt(*id));
  CHECK(d.engine->rcpt(*id)->state == RecipientState::queued);
  CHECK(d.engine->rcpt(*id)->attempts == 0);
  CHECK_FALSE(mailq::detail::delivery_port(*d.engine->queue).in_flight(*id));
}
