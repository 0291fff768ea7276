// mailq-demo — mailq embedded in a host's own libuv loop.
//
// Wires the objects a host application builds: a LoopClock, the durable SpoolStorage, the
// c-ares resolver, the libuv transport, a RouteTable, the Queue and the Deliverer (which keeps
// the table of down destinations), with the Messaging Server log on stdout. Submits batches of
// messages to the given domains, runs the loop until nothing is due, and prints a summary.
//
//   mailq-demo --spool DIR --dns 127.0.0.1:5353 --mx-port 2525 [--batches 5] [--per-batch 4]
//              [--threshold 3] [--log FILE] DOMAIN...
#include <uv.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "mailq/ares/resolver.h"
#include "mailq/deliverer.h"
#include "mailq/domain_state.h"
#include "mailq/log.h"
#include "mailq/queue.h"
#include "mailq/route.h"
#include "mailq/spool/file_spool.h"
#include "mailq/uv/loop_clock.h"
#include "mailq/uv/transport.h"

namespace {

struct Options {
  std::string spool;
  std::string dns = "127.0.0.1:53";
  std::uint16_t mx_port = 25;
  int batches = 5;
  int per_batch = 4;
  unsigned threshold = 3;
  std::string log_path;
  std::vector<std::string> domains;
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "mailq-demo: %s\nusage: mailq-demo --spool DIR --dns HOST:PORT --mx-port N "
               "[--batches N] [--per-batch N] [--threshold N] [--log FILE] DOMAIN...\n",
               why);
  std::exit(64);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage(("missing value for " + a).c_str());
      return argv[++i];
    };
    if (a == "--spool")
      o.spool = value();
    else if (a == "--dns")
      o.dns = value();
    else if (a == "--mx-port")
      o.mx_port = static_cast<std::uint16_t>(std::atoi(value().c_str()));
    else if (a == "--batches")
      o.batches = std::atoi(value().c_str());
    else if (a == "--per-batch")
      o.per_batch = std::atoi(value().c_str());
    else if (a == "--threshold")
      o.threshold = static_cast<unsigned>(std::atoi(value().c_str()));
    else if (a == "--log")
      o.log_path = value();
    else if (!a.empty() && a[0] == '-')
      usage(("unknown option " + a).c_str());
    else
      o.domains.push_back(a);
  }
  if (o.spool.empty()) usage("--spool is required");
  if (o.domains.empty()) usage("name at least one recipient domain");
  if (o.mx_port == 0) usage("bad --mx-port");
  return o;
}

// Counts outcomes per recipient for the summary, and shows progress on stderr.
class Tally final : public mailq::EventSink {
 public:
  void on_event(const mailq::Event& e) override {
    switch (e.kind) {
      case mailq::EventKind::enqueued:
        ++enqueued;
        break;
      case mailq::EventKind::delivered:
        ++delivered;
        last_state[e.recipient + e.id.to_string()] = "delivered";
        break;
      case mailq::EventKind::deferred:
        last_state[e.recipient + e.id.to_string()] = e.reply.to_string();
        break;
      case mailq::EventKind::returned:
        ++returned;
        last_state[e.recipient + e.id.to_string()] = "returned: " + e.reply.to_string();
        break;
      case mailq::EventKind::destination_down:
        downs.push_back(e.destination);
        break;
      default:
        break;
    }
  }
  std::size_t enqueued = 0, delivered = 0, returned = 0;
  std::map<std::string, std::string> last_state;
  std::vector<std::string> downs;
};

}  // namespace

int main(int argc, char** argv) {
  Options opt = parse(argc, argv);
  uv_loop_t loop;
  uv_loop_init(&loop);

  int rc = 0;
  {
    mailq::uv::LoopClock clock(&loop);

    auto spool = mailq::spool::SpoolStorage::open(opt.spool, clock);
    if (!spool) {
      std::fprintf(stderr, "mailq-demo: %s\n", spool.error().message.c_str());
      return 73;
    }
    mailq::ares::AresResolverOptions ro;
    ro.nameservers = {opt.dns};
    ro.timeout = mailq::Duration(1000);
    auto resolver = mailq::ares::AresResolver::create(&loop, ro);
    if (!resolver) {
      std::fprintf(stderr, "mailq-demo: resolver: %s\n", resolver.error().message.c_str());
      return 69;
    }
    mailq::uv::UvTransport transport(&loop);

    mailq::RouteTable routes;
    mailq::Route local;
    local.name = "tcp_local";
    local.mx_port = opt.mx_port;
    local.tls = mailq::TlsPolicy::opportunistic;
    local.timeouts.connect = mailq::Duration(2000);
    (void)routes.add(local);
    (void)routes.set_default("tcp_local");

    std::FILE* logf = stdout;
    if (!opt.log_path.empty()) {
      logf = std::fopen(opt.log_path.c_str(), "a");
      if (!logf) {
        std::perror(opt.log_path.c_str());
        return 73;
      }
    }
    mailq::MessagingServerLog log(logf);
    Tally tally;
    mailq::FanoutSink sink;
    sink.add(log);
    sink.add(tally);

    mailq::QueueConfig qc;
    qc.reporting_mta = "mailq-demo.localhost";
    mailq::Queue queue(**spool, routes, clock, &sink, qc);
    mailq::RecoveryReport report;
    if (auto recovered = queue.recover(&report); !recovered)
      std::fprintf(stderr, "mailq-demo: recovery: %s\n", recovered.error().message.c_str());
    if (report.recovered)
      std::fprintf(stderr, "mailq-demo: recovered %zu queued messages\n", report.recovered);

    mailq::DelivererConfig dc;
    dc.helo_name = "mailq-demo.localhost";
    dc.idle_timeout = mailq::Duration(1000);
    dc.domain_state = {opt.threshold, mailq::Duration(15 * 60 * 1000)};
    mailq::Deliverer deliverer(queue, **resolver, transport, dc);
    deliverer.start();

    // Submit in batches so that a failing destination collects failures across attempts,
    // as real traffic would, and gets marked down.
    int batch = 0, seq = 0, failures = 0;
    std::function<void()> submit = [&] {
      for (const auto& d : opt.domains) {
        for (int i = 0; i < opt.per_batch; ++i) {
          ++seq;
          auto env = mailq::make_envelope("demo@mailq-demo.localhost",
                                          {"user" + std::to_string(i) + "@" + d});
          if (!env) {
            std::fprintf(stderr, "mailq-demo: %s\n", env.error().message.c_str());
            ++failures;
            continue;
          }
          std::string body = "Message-ID: <demo." + std::to_string(seq) +
                             "@mailq-demo.localhost>\r\nFrom: demo@mailq-demo.localhost\r\nTo: "
                             "user@" +
                             d + "\r\nSubject: mailq demo " + std::to_string(seq) +
                             "\r\n\r\nHello from mailq.\r\n";
          queue.enqueue(env.value(), std::move(body),
                        [&](mailq::Result<mailq::MessageId> r) {
                          if (!r) {
                            std::fprintf(stderr, "mailq-demo: enqueue failed: %s\n",
                                         r.error().message.c_str());
                            ++failures;
                          }
                        },
                        {"tcp_internal", false});
        }
      }
      if (++batch < opt.batches) clock.schedule(mailq::Duration(300), submit);
    };
    submit();

    // Stop when every batch is in, nothing is in flight and nothing is due before the next
    // queue cycle (the deferred ones wait for their retry time).
    std::function<void()> check;
    auto started = clock.now();
    int quiet_checks = 0;
    check = [&] {
      auto st = queue.stats();
      std::fprintf(stderr, "\rmailq-demo: %zu enqueued, %zu delivered, %zu returned, %zu pending",
                   tally.enqueued, tally.delivered, tally.returned, st.recipients_pending);
      bool quiet = batch >= opt.batches && deliverer.idle() && deliverer.next_due() > clock.now();
      quiet_checks = quiet ? quiet_checks + 1 : 0;
      if (quiet_checks >= 3 || clock.now() - started > std::chrono::seconds(60)) {
        std::fprintf(stderr, "\n");
        deliverer.stop([&] { uv_stop(&loop); });
        return;
      }
      clock.schedule(mailq::Duration(200), check);
    };
    clock.schedule(mailq::Duration(200), check);
    uv_run(&loop, UV_RUN_DEFAULT);

    // Summary.
    std::map<std::string, std::size_t> reasons;
    std::size_t deferred = 0;
    for (auto& [k, v] : tally.last_state) {
      if (v == "delivered" || v.rfind("returned", 0) == 0) continue;
      ++deferred;
      ++reasons[v];
    }
    std::printf("\nsummary: %zu delivered, %zu deferred, %zu returned\n", tally.delivered, deferred,
                tally.returned);
    for (auto& [why, n] : reasons) std::printf("  %zu deferred: %s\n", n, why.c_str());
    for (auto& d : tally.downs) std::printf("  destination marked down: %s\n", d.c_str());
    std::fflush(stdout);
    if (logf != stdout) std::fclose(logf);
    rc = failures ? 1 : 0;
  }
  // Let the adapters' close callbacks run, then close the loop.
  uv_run(&loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&loop) != 0) std::fprintf(stderr, "mailq-demo: loop not closed cleanly\n");
  return rc;
}
