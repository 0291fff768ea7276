// bench_enqueue — durable enqueues per second through Queue::enqueue on a SpoolStorage, with
// many in flight (group commit), and the latency from the enqueue call to its durable
// callback.
//
// Submits `--per-turn` messages per loop turn (a zero-delay timer re-arms the submitter) until
// `--count` are submitted; the clock stops when the last callback ran.
//
//   bench_enqueue [--count 50000] [--per-turn 1000] [--size 2048] [--spool DIR]
//                 [--layout files|segments] [--json FILE]
#include <uv.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <vector>

#include "bench_util.h"
#include "mailq/queue.h"
#include "mailq/route.h"
#include "mailq/spool/file_spool.h"
#include "mailq/uv/loop_clock.h"
#include "mailq/uv/transport.h"

int main(int argc, char** argv) {
  bench::Args args(argc, argv,
                   {{"count", "50000"},
                    {"per-turn", "1000"},
                    {"size", "2048"},
                    {"spool", ""},
                    {"layout", "files"},
                    {"json", ""},
                    {"label", "enqueue"}});
  const auto count = static_cast<std::size_t>(args.num("count"));
  const auto per_turn = static_cast<std::size_t>(std::max<long long>(1, args.num("per-turn")));
  const auto size = static_cast<std::size_t>(args.num("size"));
  std::string dir = args.str("spool");
  const bool own_dir = dir.empty();
  if (own_dir) {
    char tmpl[] = "/tmp/mailq-bench-enqueue.XXXXXX";
    if (!::mkdtemp(tmpl)) return 73;
    dir = tmpl;
  }
  uv_loop_t loop;
  uv_loop_init(&loop);
  int rc = 0;
  {
    mailq::uv::LoopClock clock(&loop);
    auto spool = bench::open_spool("bench_enqueue", dir + "/spool", clock, args.str("layout"));
    mailq::RouteTable routes;
    mailq::Route route;
    route.name = "tcp_sink";
    route.hosts = {{"127.0.0.1", 25}};  // never connected to: no Deliverer here
    (void)routes.add(route);
    (void)routes.set_default("tcp_sink");
    mailq::Queue queue(*spool, routes, clock, nullptr, {});
    if (!queue.recover()) return 70;
    auto env = mailq::make_envelope("bench@bench.localhost", {"sink@bench.localhost"});
    if (!env) return 70;

    // Bodies are built before the clock starts: the figure is the engine's, not the generator's.
    std::vector<std::string> bodies;
    bodies.reserve(per_turn);
    for (std::size_t i = 0; i < per_turn; ++i) bodies.push_back(bench::make_body(size, i));

    std::vector<bench::Steady::time_point> started(count);
    std::vector<double> latency_us;
    latency_us.reserve(count);
    std::size_t submitted = 0, done = 0, failed = 0;
    std::function<void()> submit = [&] {
      for (std::size_t i = 0; i < per_turn && submitted < count; ++i, ++submitted) {
        const std::size_t k = submitted;
        started[k] = bench::Steady::now();
        queue.enqueue(env.value(), bodies[i], [&, k](mailq::Result<mailq::MessageId> r) {
          latency_us.push_back(
              std::chrono::duration<double, std::micro>(bench::Steady::now() - started[k]).count());
          r ? ++done : ++failed;
        });
      }
      if (submitted < count) clock.schedule(mailq::Duration(0), submit);
    };
    const auto t0 = bench::Steady::now();
    submit();
    bool ok = bench::run_until(
        &loop, [&] { return done + failed == count; }, std::chrono::seconds(600));
    const double secs = bench::seconds_since(t0);
    if (!ok || failed) {
      std::fprintf(stderr, "bench_enqueue: %zu durable, %zu failed of %zu\n", done, failed, count);
      rc = 1;
    }
    std::sort(latency_us.begin(), latency_us.end());
    auto pct = [&](double p) {
      if (latency_us.empty()) return 0.0;
      return latency_us[std::min(latency_us.size() - 1,
                                 static_cast<std::size_t>(p * latency_us.size()))];
    };
    const auto st = bench::sync_counts(*spool);
    bench::JsonRecord j("enqueue");
    j.add("label", args.str("label"))
        .add("messages", static_cast<long long>(done))
        .add("size", static_cast<long long>(size))
        .add("per_turn", static_cast<long long>(per_turn))
        .add("seconds", secs)
        .add("msgs_per_s", done / secs)
        .add("p50_ms", pct(0.50) / 1000)
        .add("p99_ms", pct(0.99) / 1000)
        .add("max_ms", latency_us.empty() ? 0.0 : latency_us.back() / 1000)
        .add("layout", args.str("layout"))
        .add("batches", st.batches)
        .add("syncs", st.syncs);
    j.append_to(args.str("json"));
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  if (own_dir) std::filesystem::remove_all(dir);
  return rc;
}
