// bench_down — the cost of a queue cycle (Deliverer::run_cycle) while destinations are
// marked down: one destination holding 100,000 messages, and 10,000 destinations holding 10
// each.
//
// Everything is in memory and deterministic: MemoryStorage, a ManualClock, a StaticResolver
// (every domain's MX is 127.0.0.1) and a transport that refuses every connection (no socket
// is opened). DomainStateTable threshold 1: the first refused connection marks a destination
// down and its messages are deferred with the 451 4.4.1 "domain is marked down" reply.
//
// Measured (wall time of the calls, steady clock):
//   mark_down_ms   start(): the first attempt of every destination, refused, marking them
//                  down and deferring every message once (per-message work, done once);
//   cycle_us       run_cycle() one minute later (destinations down, nothing due);
//   flush_us       flush() (= make every deferred job due, then a cycle) while still down;
//   cycle_after_flush_us  run_cycle() right after that flush (jobs due, destinations down).
//
//   bench_down [--destinations 1] [--per-destination 100000] [--cycles 1000] [--json FILE]
#include <cstdio>
#include <memory>

#include "bench_util.h"
#include "mailq/deliverer.h"
#include "mailq/domain_state.h"
#include "mailq/queue.h"
#include "mailq/resolver.h"
#include "mailq/route.h"
#include "mailq/storage.h"

namespace {

// A transport whose every connection attempt is refused, reported through the clock (never
// from inside connect, as the Transport contract requires).
class RefusingTransport final : public mailq::Transport {
 public:
  explicit RefusingTransport(mailq::Clock& clock) : clock_(clock) {}
  class Refused final : public mailq::Connection {
   public:
    explicit Refused(mailq::Endpoint remote) : remote_(std::move(remote)) {}
    void write(std::string_view) override {}
    void start_tls(const mailq::TlsClientOptions&) override {}
    bool write_idle() const override { return true; }
    mailq::Endpoint local_endpoint() const override { return {"127.0.0.1", 0}; }
    mailq::Endpoint remote_endpoint() const override { return remote_; }
    std::shared_ptr<bool> alive = std::make_shared<bool>(true);
    ~Refused() override { *alive = false; }

   private:
    mailq::Endpoint remote_;
  };
  std::unique_ptr<mailq::Connection> connect(const mailq::Endpoint& remote,
                                             const mailq::ConnectOptions&,
                                             mailq::ConnectionHandler& handler) override {
    ++attempts;
    auto c = std::make_unique<Refused>(remote);
    std::weak_ptr<bool> alive = c->alive;
    clock_.schedule(mailq::Duration(0), [alive, &handler] {
      if (auto a = alive.lock(); a && *a)
        handler.on_connect(mailq::Error(std::make_error_code(std::errc::connection_refused),
                                        "connection refused"));
    });
    return c;
  }
  std::size_t attempts = 0;

 private:
  mailq::Clock& clock_;
};

class Counter final : public mailq::EventSink {
 public:
  void on_event(const mailq::Event& e) override {
    if (e.kind == mailq::EventKind::deferred) ++deferred;
    if (e.kind == mailq::EventKind::destination_down) ++down;
    if (e.kind == mailq::EventKind::delivered || e.kind == mailq::EventKind::returned) ++other;
  }
  std::size_t deferred = 0, down = 0, other = 0;
};

double micros(bench::Steady::time_point t0) {
  return std::chrono::duration<double, std::micro>(bench::Steady::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  bench::Args args(argc, argv,
                   {{"destinations", "1"},
                    {"per-destination", "100000"},
                    {"cycles", "1000"},
                    {"json", ""},
                    {"label", "down"}});
  const auto ndest = static_cast<std::size_t>(args.num("destinations"));
  const auto per = static_cast<std::size_t>(args.num("per-destination"));
  const auto cycles = static_cast<std::size_t>(std::max<long long>(1, args.num("cycles")));

  mailq::ManualClock clock;
  mailq::MemoryStorage storage;
  mailq::StaticResolver resolver(clock);
  RefusingTransport transport(clock);
  // The default route: MX lookup, each domain its own destination; the MX host is on
  // loopback, which an MX route dials only when the route allows it (allow_internal_mx).
  mailq::RouteTable routes;
  {
    mailq::Route mx = routes.default_route();
    mx.allow_internal_mx = {mailq::Network::parse("127.0.0.0/8").value()};
    if (!routes.add(mx)) return 70;
  }
  Counter counter;
  mailq::Queue queue(storage, routes, clock, &counter, {});
  resolver.set_addresses("mx.bench.localhost", {"127.0.0.1"});

  // Load with no Deliverer: MemoryStorage completes inserts synchronously.
  const std::string body = bench::make_body(512, 0);
  std::size_t failed = 0;
  const auto load_t0 = bench::Steady::now();
  for (std::size_t d = 0; d < ndest; ++d) {
    const std::string domain = "d" + std::to_string(d) + ".bench.localhost";
    resolver.set_mx(domain, {{10, "mx.bench.localhost"}});
    auto env = mailq::make_envelope("bench@bench.localhost", {"user@" + domain});
    if (!env) return 70;
    for (std::size_t i = 0; i < per; ++i)
      queue.enqueue(env.value(), body, [&](mailq::Result<mailq::MessageId> r) { failed += !r; });
  }
  clock.run_pending();
  std::fprintf(stderr, "bench_down: %zu messages for %zu destinations loaded in %.2f s\n",
               queue.size(), ndest, bench::seconds_since(load_t0));
  if (failed) return 70;

  mailq::DelivererConfig dc;
  dc.max_jobs_per_destination_per_cycle = static_cast<std::uint32_t>(per);
  dc.max_connections = 100000;
  dc.domain_state = {1, mailq::Duration(std::chrono::minutes(15))};
  mailq::Deliverer deliverer(queue, resolver, transport, dc);

  // First attempt: one refused connection per destination marks it down; every message is
  // deferred once with the self-imposed 451 4.4.1.
  auto t0 = bench::Steady::now();
  deliverer.start();
  clock.run_pending();
  const double mark_down_ms = micros(t0) / 1000;
  const std::size_t deferred_initial = counter.deferred;

  // One minute later, still down: plain queue cycles.
  clock.advance(std::chrono::minutes(1));
  const std::size_t attempts_before = transport.attempts, deferred_before = counter.deferred;
  t0 = bench::Steady::now();
  for (std::size_t i = 0; i < cycles; ++i) {
    deliverer.run_cycle();
    clock.run_pending();
  }
  const double cycle_us = micros(t0) / cycles;
  const std::size_t cycle_work =
      (transport.attempts - attempts_before) + (counter.deferred - deferred_before);

  // A flush while down: every deferred job made due, the destinations still not tried.
  t0 = bench::Steady::now();
  deliverer.flush();
  clock.run_pending();
  const double flush_us = micros(t0);
  const std::size_t flush_deferrals = counter.deferred - deferred_before;
  t0 = bench::Steady::now();
  for (std::size_t i = 0; i < cycles; ++i) {
    deliverer.run_cycle();
    clock.run_pending();
  }
  const double cycle_after_flush_us = micros(t0) / cycles;

  const auto st = deliverer.stats();
  bench::JsonRecord j("down");
  j.add("label", args.str("label"))
      .add("destinations", static_cast<long long>(ndest))
      .add("per_destination", static_cast<long long>(per))
      .add("messages", static_cast<long long>(queue.size()))
      .add("destinations_marked_down", static_cast<long long>(counter.down))
      .add("connect_attempts", static_cast<long long>(transport.attempts))
      .add("initial_deferrals", static_cast<long long>(deferred_initial))
      .add("mark_down_ms", mark_down_ms)
      .add("cycle_us", cycle_us)
      .add("work_in_cycles", static_cast<long long>(cycle_work))
      .add("flush_us", flush_us)
      .add("flush_deferrals", static_cast<long long>(flush_deferrals))
      .add("cycle_after_flush_us", cycle_after_flush_us)
      .add("skipped_down", static_cast<long long>(st.skipped_down));
  j.append_to(args.str("json"));
  bool stopped = false;
  deliverer.stop([&] { stopped = true; });
  clock.run_pending();
  return counter.other == 0 && counter.down == ndest ? 0 : 1;
}
