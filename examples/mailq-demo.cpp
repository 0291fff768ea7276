// mailq-demo — mailq embedded in a host's own libuv loop through the Engine.
//
// One EngineConfig (routes, spool, resolver, the down-destination threshold) and
// Engine::open: the engine wires the clock, the spool, c-ares, the libuv transport, the Queue
// and the Deliverer. The Messaging Server log goes to stdout. Submits batches of messages to
// the given domains, stops when the engine is idle with every batch in, and prints a summary.
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

#include "mailq/engine.h"
#include "mailq/log.h"

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

  // One config: every domain by MX on the test port, the threshold for marking a destination
  // down, the spool, the DNS server.
  mailq::EngineConfig config;
  mailq::Route local;
  local.name = "tcp_local";
  local.mx_port = opt.mx_port;
  // The demo's DNS puts every MX host on loopback, which an MX route refuses by default.
  local.allow_internal_mx = {mailq::Network::parse("127.0.0.0/8").value()};
  local.tls = mailq::TlsPolicy::opportunistic;
  local.timeouts.connect = mailq::Duration(2000);
  if (!config.routes.add(local).ok() || !config.routes.set_default("tcp_local").ok()) return 70;
  config.spool.directory = opt.spool;
  config.resolver.nameservers = {opt.dns};
  config.resolver.timeout = mailq::Duration(1000);
  config.queue.reporting_mta = "mailq-demo.localhost";
  config.delivery.helo_name = "mailq-demo.localhost";
  config.delivery.idle_timeout = mailq::Duration(1000);
  config.delivery.domain_state = {opt.threshold, mailq::Duration(15 * 60 * 1000)};
  config.sink = &sink;

  // Submit in batches so that a failing destination collects failures across attempts, as
  // real traffic would, and gets marked down. Stop once every batch is in and the engine has
  // nothing to do before the next retry.
  int batch = 0, seq = 0, failures = 0;
  std::unique_ptr<mailq::Engine> engine;
  config.on_idle = [&](const mailq::EngineIdle& idle) {
    if (batch < opt.batches) return;
    std::fprintf(stderr, "mailq-demo: idle, %zu messages wait for a later retry\n", idle.queued);
    engine->stop([] {});
  };
  auto opened = mailq::Engine::open(&loop, std::move(config));
  if (!opened) {
    std::fprintf(stderr, "mailq-demo: %s\n", opened.error().message.c_str());
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return 73;
  }
  engine = std::move(opened.value());
  if (engine->recovery().recovered)
    std::fprintf(stderr, "mailq-demo: recovered %zu queued messages\n",
                 engine->recovery().recovered);

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
        engine->submit(env.value(), std::move(body),
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
    if (++batch < opt.batches) engine->clock().schedule(mailq::Duration(300), submit);
  };
  submit();
  // A bound on the whole run, whatever the destinations do.
  engine->clock().schedule(mailq::Duration(60000), [&] {
    if (!engine->stopping()) engine->stop([] {});
  });

  uv_run(&loop, UV_RUN_DEFAULT);  // ends once the engine has stopped
  engine.reset();

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
  if (uv_loop_close(&loop) != 0) std::fprintf(stderr, "mailq-demo: loop not closed cleanly\n");
  return failures ? 1 : 0;
}
