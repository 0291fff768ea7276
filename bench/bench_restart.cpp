// bench_restart — how fast Queue::recover rebuilds the queue from a spool, and the resident
// memory each queued recipient costs afterwards.
//
// Two steps, two processes (so that the recovery process's memory is not polluted by the
// fill):
//   bench_restart --mode fill    --spool DIR [--count 200000] [--size 2048] [--rcpts 1]
//                                [--layout L] [--json FILE] (a "fill" record: the enqueue rate)
//   bench_restart --mode recover --spool DIR [--json FILE]
// The layout (files or segments) is given to fill; recover finds it in the directory.
// "recover" reads VmRSS before building the SpoolStorage and the Queue and after
// Queue::recover, and divides the difference by the recipients recovered. The page cache is
// warm (the fill just wrote the files); nothing drops it.
#include <uv.h>

#include <algorithm>
#include <cstdio>
#include <vector>

#include "bench_util.h"
#include "mailq/queue.h"
#include "mailq/route.h"
#include "mailq/spool/file_spool.h"
#include "mailq/uv/loop_clock.h"
#include "mailq/uv/transport.h"

namespace {

mailq::RouteTable make_routes() {
  mailq::RouteTable routes;
  mailq::Route route;
  route.name = "tcp_sink";
  route.hosts = {{"127.0.0.1", 25}};  // never connected to: no Deliverer here
  (void)routes.add(route);
  (void)routes.set_default("tcp_sink");
  return routes;
}

}  // namespace

int main(int argc, char** argv) {
  bench::Args args(argc, argv,
                   {{"mode", ""},
                    {"spool", ""},
                    {"count", "200000"},
                    {"size", "2048"},
                    {"rcpts", "1"},
                    {"layout", "files"},
                    {"json", ""},
                    {"label", "restart"}});
  const std::string mode = args.str("mode"), dir = args.str("spool");
  if ((mode != "fill" && mode != "recover") || dir.empty()) {
    std::fprintf(stderr, "bench_restart: --mode fill|recover and --spool DIR are required\n");
    return 64;
  }
  uv_loop_t loop;
  uv_loop_init(&loop);
  int rc = 0;
  {
    mailq::uv::LoopClock clock(&loop);
    mailq::RouteTable routes = make_routes();
    if (mode == "fill") {
      const auto count = static_cast<std::size_t>(args.num("count"));
      auto spool = bench::open_spool("bench_restart", dir, clock, args.str("layout"));
      mailq::Queue queue(*spool, routes, clock, nullptr, {});
      if (!queue.recover()) return 70;
      const auto size = static_cast<std::size_t>(args.num("size"));
      const auto rcpts = static_cast<std::size_t>(std::max(1LL, args.num("rcpts")));
      // Every message its own Message-ID and recipients, as a real queue has: nothing in
      // memory may be shared between messages by accident of the benchmark.
      std::size_t submitted = 0, done = 0, failed = 0;
      std::function<void()> submit = [&] {
        for (int i = 0; i < 1000 && submitted < count; ++i, ++submitted) {
          std::vector<std::string> to;
          for (std::size_t r = 0; r < rcpts; ++r)
            to.push_back("rcpt" + std::to_string(submitted * rcpts + r) + "@bench.localhost");
          auto env = mailq::make_envelope("bench@bench.localhost", to);
          queue.enqueue(env.value(), bench::make_body(size, submitted),
                        [&](mailq::Result<mailq::MessageId> r) { r ? ++done : ++failed; });
        }
        if (submitted < count) clock.schedule(mailq::Duration(0), submit);
      };
      const auto t0 = bench::Steady::now();
      submit();
      bench::run_until(
          &loop, [&] { return done + failed == count; }, std::chrono::seconds(1200));
      const double secs = bench::seconds_since(t0);
      std::fprintf(stderr, "bench_restart: filled %zu messages (%zu failed) in %.1f s\n", done,
                   failed, secs);
      rc = failed || done != count ? 1 : 0;
      if (!args.str("json").empty()) {
        // The fill is a durable enqueue through the API into a spool already holding what
        // was filled before it: the enqueue rate at this queue size.
        bench::JsonRecord j("fill");
        j.add("label", args.str("label"))
            .add("layout", args.str("layout"))
            .add("messages", static_cast<long long>(done))
            .add("failed", static_cast<long long>(failed))
            .add("seconds", secs)
            .add("msgs_per_s", done / secs)
            .add("rss_kib", bench::vm_rss_kib());
        j.append_to(args.str("json"));
      }
    } else {
      const auto layout = mailq::spool::detect_layout(dir);
      if (!layout) {
        std::fprintf(stderr, "bench_restart: %s holds no spool (run --mode fill first)\n",
                     dir.c_str());
        return 66;
      }
      const long long rss0 = bench::vm_rss_kib();
      const auto t0 = bench::Steady::now();
      auto spool = bench::open_spool("bench_restart", dir, clock, mailq::spool::to_string(*layout));
      mailq::Queue queue(*spool, routes, clock, nullptr, {});
      mailq::RecoveryReport report;
      if (auto recovered = queue.recover(&report); !recovered) {
        std::fprintf(stderr, "bench_restart: recover: %s\n", recovered.error().message.c_str());
        rc = 1;
      }
      const double secs = bench::seconds_since(t0);
      const long long rss1 = bench::vm_rss_kib();
      const auto stats = queue.stats();
      const double per_rcpt =
          stats.recipients_pending ? (rss1 - rss0) * 1024.0 / stats.recipients_pending : 0;
      bench::JsonRecord j("restart");
      j.add("label", args.str("label"))
          .add("layout", mailq::spool::to_string(*layout))
          .add("messages", static_cast<long long>(report.recovered))
          .add("recipients", static_cast<long long>(stats.recipients_pending))
          .add("quarantined", static_cast<long long>(report.quarantined))
          .add("seconds", secs)
          .add("msgs_per_s", report.recovered / secs)
          .add("rss_before_kib", rss0)
          .add("rss_after_kib", rss1)
          .add("bytes_per_recipient", per_rcpt);
      j.append_to(args.str("json"));
    }
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  return rc;
}
