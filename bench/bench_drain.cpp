// bench_drain — N messages already in the durable spool, delivered to an SMTP sink on
// loopback through UvTransport over a static (smart-host) route with connection reuse.
//
// Phase 1 (not timed as the drain): enqueue N messages into a fresh SpoolStorage with no
// Deliverer running; wait until every one is durable.
// Phase 2 (timed): construct the Deliverer, start(), and stop the clock when the last
// recipient is recorded delivered (queue empty). Reports messages/s.
//
//   bench_drain --port 2525 [--count 20000] [--size 2048] [--connections 20]
//               [--per-connection 1000] [--spool DIR] [--layout files|segments]
//               [--json FILE] [--label TEXT]
#include <uv.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "bench_util.h"
#include "mailq/deliverer.h"
#include "mailq/domain_state.h"
#include "mailq/queue.h"
#include "mailq/resolver.h"
#include "mailq/route.h"
#include "mailq/spool/file_spool.h"
#include "mailq/uv/loop_clock.h"
#include "mailq/uv/transport.h"

namespace {

// Counts outcomes; the only sink attached (no log rendering in the timed path).
class Counter final : public mailq::EventSink {
 public:
  void on_event(const mailq::Event& e) override {
    if (e.kind == mailq::EventKind::delivered) ++delivered;
    if (e.kind == mailq::EventKind::deferred) {
      ++deferred;
      if (last_deferral.empty()) last_deferral = e.reply.to_string();
    }
    if (e.kind == mailq::EventKind::returned) ++returned;
  }
  std::size_t delivered = 0, deferred = 0, returned = 0;
  std::string last_deferral;
};

}  // namespace

int main(int argc, char** argv) {
  bench::Args args(argc, argv,
                   {{"port", "0"},
                    {"count", "20000"},
                    {"size", "2048"},
                    {"connections", "20"},
                    {"per-connection", "1000"},
                    {"spool", ""},
                    {"layout", "files"},
                    {"json", ""},
                    {"label", "drain"},
                    {"timeout", "600"}});
  const auto port = static_cast<std::uint16_t>(args.num("port"));
  const auto count = static_cast<std::size_t>(args.num("count"));
  const auto size = static_cast<std::size_t>(args.num("size"));
  if (port == 0 || count == 0) {
    std::fprintf(stderr, "bench_drain: --port (the sink on 127.0.0.1) and --count are required\n");
    return 64;
  }
  std::string spool_dir = args.str("spool");
  bool own_dir = spool_dir.empty();
  if (own_dir) {
    char tmpl[] = "/tmp/mailq-bench-drain.XXXXXX";
    if (!::mkdtemp(tmpl)) return 73;
    spool_dir = tmpl;
  }
  const std::chrono::seconds limit(args.num("timeout"));

  uv_loop_t loop;
  uv_loop_init(&loop);
  int rc = 0;
  {
    mailq::uv::LoopClock clock(&loop);
    auto spool = bench::open_spool("bench_drain", spool_dir + "/spool", clock, args.str("layout"));
    mailq::uv::UvTransport transport(&loop, clock);
    mailq::StaticResolver resolver(clock);  // never asked: the route names an IP literal

    mailq::RouteTable routes;
    mailq::Route route;
    route.name = "tcp_sink";
    route.hosts = {{"127.0.0.1", port}};
    route.tls = mailq::TlsPolicy::none;  // smtp-sink offers no STARTTLS
    route.max_connections = static_cast<std::uint32_t>(args.num("connections"));
    route.max_messages_per_connection = static_cast<std::uint32_t>(args.num("per-connection"));
    route.timeouts.connect = mailq::Duration(5000);
    if (auto added = routes.add(route); !added) {
      std::fprintf(stderr, "bench_drain: route: %s\n", added.error().message.c_str());
      return 70;
    }
    (void)routes.set_default("tcp_sink");
    Counter counter;
    mailq::QueueConfig qc;
    qc.reporting_mta = "bench.localhost";
    mailq::Queue queue(*spool, routes, clock, &counter, qc);
    if (auto recovered = queue.recover(); !recovered) {
      std::fprintf(stderr, "bench_drain: recover: %s\n", recovered.error().message.c_str());
      return 70;
    }

    // --- phase 1: load the spool ---
    auto env = mailq::make_envelope("bench@bench.localhost", {"sink@bench.localhost"});
    if (!env) return 70;
    std::size_t submitted = 0, durable = 0, failed = 0;
    const auto load_t0 = bench::Steady::now();
    std::function<void()> submit = [&] {
      for (int i = 0; i < 1000 && submitted < count; ++i, ++submitted)
        queue.enqueue(env.value(), bench::make_body(size, submitted),
                      [&](mailq::Result<mailq::MessageId> r) { r ? ++durable : ++failed; });
      if (submitted < count) clock.schedule(mailq::Duration(0), submit);
    };
    submit();
    if (!bench::run_until(
            &loop, [&] { return durable + failed == count; }, limit) ||
        failed) {
      std::fprintf(stderr, "bench_drain: loading failed (%zu durable, %zu failed)\n", durable,
                   failed);
      return 70;
    }
    const double load_s = bench::seconds_since(load_t0);
    std::fprintf(stderr, "bench_drain: %zu messages of %zu bytes loaded in %.2f s\n", count, size,
                 load_s);

    // --- phase 2: drain ---
    mailq::DelivererConfig dc;
    dc.helo_name = "bench.localhost";
    dc.max_connections = route.max_connections;
    // The default (10,000 jobs per destination per cycle) would leave the rest of a larger
    // backlog for the next queue cycle, 15 minutes later: take the whole backlog at once.
    dc.max_jobs_per_destination_per_cycle = static_cast<std::uint32_t>(count);
    mailq::Deliverer deliverer(queue, resolver, transport, dc);
    const auto t0 = bench::Steady::now();
    deliverer.start();
    bool ok = bench::run_until(
        &loop,
        [&] {
          return queue.size() == 0 || counter.returned > 0 ||
                 (counter.deferred > 0 && deliverer.idle());
        },
        limit);
    const double secs = bench::seconds_since(t0);
    auto st = deliverer.stats();
    if (!ok || queue.size() != 0) {
      std::fprintf(stderr,
                   "bench_drain: drain incomplete after %.1f s: %zu delivered, %zu deferred "
                   "(%s), %zu returned, %zu still queued\n",
                   secs, counter.delivered, counter.deferred, counter.last_deferral.c_str(),
                   counter.returned, queue.size());
      rc = 1;
    }
    bench::JsonRecord j("drain");
    j.add("label", args.str("label"))
        .add("engine", std::string("mailq"))
        .add("layout", args.str("layout"))
        .add("messages", static_cast<long long>(counter.delivered))
        .add("size", static_cast<long long>(size))
        .add("seconds", secs)
        .add("msgs_per_s", counter.delivered / secs)
        .add("load_seconds", load_s)
        .add("connections_opened", static_cast<long long>(st.connections_opened))
        .add("transactions", static_cast<long long>(st.transactions))
        .add("deferred", static_cast<long long>(counter.deferred))
        .add("complete", static_cast<long long>(rc == 0));
    j.append_to(args.str("json"));

    bool stopped = false;
    deliverer.stop([&] { stopped = true; });
    bench::run_until(
        &loop, [&] { return stopped; }, std::chrono::seconds(10));
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  if (own_dir) std::filesystem::remove_all(spool_dir);
  return rc;
}
