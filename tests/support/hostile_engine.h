// The real engine for the hostile-peer and resource-exhaustion tests: Queue + Deliverer over
// UvTransport and LoopClock on a TestLoop, with a StaticResolver (or any Resolver) and a
// MemoryStorage (or any Storage, such as a SpoolStorage), and short SMTP timeouts so that no
// misbehaving peer can hang a test.
//
// Every recipient goes to "example.com", whose MX is `mx_host` at 127.0.0.1:`port` unless the
// test brings its own resolver. Destroying the engine closes everything and requires that the
// loop closes cleanly (no handle left behind).
#pragma once

#include <catch2/catch.hpp>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/queue/port.h"
#include "mailq/deliverer.h"
#include "mailq/domain_state.h"
#include "mailq/queue.h"
#include "mailq/resolver.h"
#include "mailq/route.h"
#include "mailq/storage.h"
#include "mailq/uv/loop_clock.h"
#include "mailq/uv/transport.h"
#include "support/test_loop.h"

namespace mailq {
namespace test {

using namespace std::chrono_literals;

/// Timeouts short enough for tests, long enough for a loaded machine to answer in time.
inline SmtpTimeouts short_timeouts() {
  SmtpTimeouts t;
  t.connect = Duration(3s);
  t.greeting = Duration(2s);
  t.ehlo = Duration(2s);
  t.starttls = Duration(2s);
  t.mail = Duration(2s);
  t.rcpt = Duration(2s);
  t.data_init = Duration(2s);
  t.data_block = Duration(1s);
  t.data_term = Duration(1s);
  t.rset = Duration(2s);
  t.quit = Duration(1s);
  return t;
}

struct HostileEngineOptions {
  std::uint16_t port = 25;
  TlsPolicy tls = TlsPolicy::none;
  std::string ca_file;
  std::string mx_host = "mx.hostile.test";
  DomainStateConfig domains{5, Duration(15min)};
  SmtpTimeouts timeouts = short_timeouts();
  /// Builds the storage (called again by `restart()`); null: a MemoryStorage.
  std::function<std::unique_ptr<Storage>(Clock&)> storage;
  /// Builds the resolver; null: a StaticResolver with example.com -> mx_host -> 127.0.0.1.
  std::function<std::unique_ptr<Resolver>(uv_loop_t*, Clock&)> resolver;
};

class HostileEngine {
 public:
  explicit HostileEngine(HostileEngineOptions o) : options(std::move(o)) {
    clock = std::make_unique<uv::LoopClock>(loop.get());
    Route r;
    r.name = "tcp_local";
    r.mx_port = options.port;
    r.allow_internal_mx = {Network::parse("127.0.0.0/8").value(),
                           Network::parse("::1").value()};  // the peers are on loopback
    r.tls = options.tls;
    r.ca_file = options.ca_file;
    r.timeouts = options.timeouts;
    REQUIRE(routes.add(r));
    REQUIRE(routes.set_default("tcp_local"));
    if (options.resolver) {
      resolver = options.resolver(loop.get(), *clock);
    } else {
      auto s = std::make_unique<StaticResolver>(*clock);
      s->set_mx("example.com", {{10, options.mx_host}});
      s->set_addresses(options.mx_host, {"127.0.0.1"});
      resolver = std::move(s);
    }
    REQUIRE(resolver);
    transport = std::make_unique<uv::UvTransport>(loop.get(), *clock);
    open_queue(false);
  }

  ~HostileEngine() {
    close_queue();
    storage.reset();
    transport.reset();
    resolver.reset();
    clock.reset();
    std::string leftovers;
    const int r = loop.close(&leftovers);
    INFO("handles left open: " << leftovers);
    CHECK(r == 0);
  }

  /// What a process restart does: a new Queue and Deliverer on a new storage, recovered.
  void restart() {
    close_queue();
    storage.reset();
    open_queue(true);
  }

  /// Enqueues one message and runs the loop until the storage said yes or no.
  Result<MessageId> try_send(const std::string& to, std::string body = kBody) {
    auto env = make_envelope("sender@example.org", {to});
    REQUIRE(env);
    std::optional<Result<MessageId>> result;
    queue->enqueue(env.value(), std::move(body), [&](Result<MessageId> r) { result = r; });
    REQUIRE(loop.run_until([&] { return result.has_value(); }, 20s));
    return *result;
  }
  MessageId send(const std::string& to = "user@example.com", std::string body = kBody) {
    auto r = try_send(to, std::move(body));
    INFO((r ? std::string() : r.error().message));
    REQUIRE(r);
    return r.value();
  }

  /// The first recipient of a message; nullopt once the message left the queue.
  std::optional<RecipientRecord> rcpt(MessageId id) const {
    const auto m = queue->find(id);
    if (!m) return std::nullopt;
    return m->recipients[0];
  }
  /// Runs until the message got an outcome: delivered or bounced (gone) or deferred.
  bool settle(MessageId id, std::chrono::milliseconds limit = 30s) {
    return loop.run_until(
        [&] {
          const auto r = rcpt(id);
          return (!r || r->state != RecipientState::queued) &&
                 !detail::delivery_port(*queue).in_flight(id);
        },
        limit);
  }
  /// The last reply of a deferred message's first recipient ("" when not queued).
  std::string last_reply(MessageId id) const {
    const auto r = rcpt(id);
    return r ? r->last_reply.to_string() : std::string();
  }
  /// Whether a 'D' event was logged for the message.
  bool delivered(MessageId id) const {
    for (const auto& e : events.events)
      if (e.kind == EventKind::delivered && e.id == id) return true;
    return false;
  }
  /// Every diagnostic line of every event, one per line.
  std::string diagnostics() const {
    std::string all;
    for (const auto& e : events.events)
      for (const auto& d : e.diagnostic) all += d + "\n";
    return all;
  }
  std::uint32_t failures(const std::string& destination = "example.com") const {
    for (const auto& s : deliverer->domains().snapshot())
      if (s.destination == destination) return s.consecutive_failures;
    return 0;
  }
  /// Runs the loop in short slices until `done()`: for conditions that another thread (a
  /// server) changes, which do not wake the loop.
  bool poll_until(const std::function<bool()>& done, std::chrono::milliseconds limit = 20s) {
    const auto until = std::chrono::steady_clock::now() + limit;
    while (!done()) {
      if (std::chrono::steady_clock::now() >= until) return false;
      loop.run_for(std::chrono::milliseconds(20));
    }
    return true;
  }
  /// Lets sessions end and the loop go quiet (idle connections QUIT).
  bool drain(std::chrono::milliseconds limit = 20s) {
    return loop.run_until([&] { return deliverer->idle(); }, limit);
  }

  static constexpr const char* kBody = "Subject: hostile\r\n\r\nhello through a hostile peer\r\n";

  HostileEngineOptions options;
  TestLoop loop;
  std::unique_ptr<uv::LoopClock> clock;
  std::unique_ptr<Storage> storage;
  RouteTable routes;
  MemorySink events;
  std::unique_ptr<Resolver> resolver;
  std::unique_ptr<uv::UvTransport> transport;
  std::unique_ptr<Queue> queue;
  std::unique_ptr<Deliverer> deliverer;
  RecoveryReport recovery;

 private:
  void open_queue(bool recover) {
    storage = options.storage ? options.storage(*clock) : std::make_unique<MemoryStorage>();
    REQUIRE(storage);
    QueueConfig qc;
    qc.retry.jitter = 0;
    queue = std::make_unique<Queue>(*storage, routes, *clock, &events, qc);
    if (recover) REQUIRE(queue->recover(&recovery));
    DelivererConfig dc;
    dc.idle_timeout = Duration(100ms);
    dc.domain_state = options.domains;
    deliverer = std::make_unique<Deliverer>(*queue, *resolver, *transport, dc);
    deliverer->start();
  }
  void close_queue() {
    deliverer.reset();
    // Let closing connections and zero-delay work run before the queue goes.
    loop.run_for(std::chrono::milliseconds(20));
    queue.reset();
  }
};

}  // namespace test
}  // namespace mailq
