// The whole engine on a manual clock, a static resolver and the scripted transport.
#pragma once

#include <catch2/catch.hpp>

#include <memory>
#include <string>
#include <vector>

#include "core/queue/port.h"
#include "fake_transport.h"
#include "mailq/deliverer.h"
#include "mailq/domain_state.h"
#include "mailq/events.h"
#include "mailq/queue.h"
#include "mailq/resolver.h"
#include "mailq/route.h"
#include "mailq/storage.h"

namespace mailq::test {

using namespace std::chrono_literals;
using detail::Job;
using detail::RecipientOutcome;

inline detail::DeliveryPort& port_of(Queue& q) {
  return detail::delivery_port(q);
}

/// A job as the queue hands it out, for a destination known by its key.
inline Job make_job(MessageId id, const std::string& destination,
                    std::vector<std::size_t> recipients) {
  auto d = std::make_shared<detail::Destination>();
  d->key = destination;
  return Job{id, std::move(d), std::move(recipients)};
}

inline QueueConfig deterministic_queue_config() {
  QueueConfig q;
  q.retry.jitter = 0;
  q.random_seed = 42;
  q.reporting_mta = "mailq.test";
  return q;
}

/// The networks of the scripted servers, which MX routes must be allowed to dial.
inline std::vector<Network> loopback_networks() {
  return {Network::parse("127.0.0.0/8").value(), Network::parse("::1").value()};
}

struct Engine {
  ManualClock clock;
  MemoryStorage storage;
  RouteTable routes;
  MemorySink events;
  StaticResolver resolver{clock};
  FakeTransport transport{clock};
  std::unique_ptr<Queue> queue;
  std::unique_ptr<Deliverer> deliverer;

  explicit Engine(DomainStateConfig dc = {3, Duration(15min)},
                  QueueConfig qc = deterministic_queue_config(), DelivererConfig del = {}) {
    // The scripted servers are on loopback: let MX hosts resolve there.
    Route mx = routes.default_route();
    mx.allow_internal_mx = loopback_networks();
    REQUIRE(routes.add(mx));
    queue = std::make_unique<Queue>(storage, routes, clock, &events, qc);
    del.domain_state = dc;
    deliverer = std::make_unique<Deliverer>(*queue, resolver, transport, del);
  }

  /// The Deliverer's table of down destinations.
  const DomainStateTable& domains() const { return deliverer->domains(); }
  /// The Queue's side for the Deliverer (internal), for tests of the schedule.
  detail::DeliveryPort& port() { return detail::delivery_port(*queue); }

  /// Enqueues and returns the id (REQUIREs success).
  MessageId send(const std::string& from, const std::vector<std::string>& to,
                 std::string body = "Subject: test\r\nMessage-ID: <t1@test>\r\n\r\nhello\r\n") {
    auto env = make_envelope(from, to);
    REQUIRE(env);
    MessageId id;
    bool called = false;
    queue->enqueue(env.value(), std::move(body), [&](Result<MessageId> r) {
      called = true;
      REQUIRE(r);
      id = r.value();
    });
    REQUIRE(called);
    return id;
  }

  /// Lets zero-delay work (connections, replies) run without moving time.
  void settle() { clock.run_pending(); }

  RecipientRecord rcpt(MessageId id, std::size_t i = 0) {
    const auto m = queue->find(id);
    REQUIRE(m);
    return m->recipients.at(i);
  }

  std::size_t count(EventKind k) const {
    std::size_t n = 0;
    for (auto& e : events.events)
      if (e.kind == k) ++n;
    return n;
  }
};

/// example.com's MX, mx.example.com, at 127.0.0.10 (the transport's scripted server there).
inline void example_com(Engine& e) {
  e.resolver.set_mx("example.com", {{10, "mx.example.com"}});
  e.resolver.set_addresses("mx.example.com", {"127.0.0.10"});
}

}  // namespace mailq::test
