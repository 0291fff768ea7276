// The whole engine as a process to be SIGKILLed: a spool (the file spool, or with
// `--layout segments` the segment spool), Queue, Deliverer and the libuv transport on one loop,
// delivering over a static route to a sink on 127.0.0.1. It recovers the spool, starts delivery,
// enqueues messages numbered --start .. --start+count-1 and tells its stdout:
//
//     L <recovered> <quarantined>   start-up recovery done
//     ACK <n>                       message n is durable (the enqueue's success callback ran)
//     ERR <n> <text>                the enqueue of message n failed (not queued)
//     IDLE                          everything enqueued and the queue is empty
//     E <text>                      a start-up failure (the process exits)
//
// Each line is one write(2) to the pipe, so a kill never splits one. Message n's body carries
// "X-Crash-Seq: <n>" as a header and "X-Crash-End: <n>" as its last line, so that the sink's
// dumps show which messages arrived whole. It never exits by itself: the test kills it.
//
// Every failure the spool reports goes to stderr, which the test expects empty (its
// `on_error` also sees those with no caller to return to: a background sync or compaction).
//
// Usage: engine_crash_writer --spool DIR --port SINKPORT --start N --count M
//                            [--layout files|segments] [--segment-size BYTES]
#include <uv.h>

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>

#include "crash_io.h"
#include "crash_storage.h"
#include "mailq/deliverer.h"
#include "mailq/domain_state.h"
#include "mailq/queue.h"
#include "mailq/resolver.h"
#include "mailq/route.h"
#include "mailq/uv/loop_clock.h"
#include "mailq/uv/transport.h"

using mailq_crash::say;

namespace {

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr,
               "engine_crash_writer: %s\nusage: engine_crash_writer --spool DIR --port SINKPORT "
               "--start N --count M [--layout files|segments] [--segment-size BYTES]\n",
               why.c_str());
  std::exit(64);
}

struct Options {
  std::string spool;
  unsigned long port = 0;
  unsigned long long start = 0;
  unsigned long long count = 0;
  mailq::spool::Layout layout = mailq::spool::Layout::files;
  unsigned long long segment_size = 0;  // 0: the segment spool's default
};

unsigned long long number(const std::string& option, const char* text) {
  char* end = nullptr;
  errno = 0;
  const unsigned long long v = std::strtoull(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0') usage("bad value for " + option);
  return v;
}

Options parse(int argc, char** argv) {
  Options o;
  bool have_port = false, have_start = false, have_count = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) usage("missing value for " + a);
    const char* v = argv[++i];
    if (a == "--spool") {
      o.spool = v;
    } else if (a == "--port") {
      o.port = static_cast<unsigned long>(number(a, v));
      have_port = true;
    } else if (a == "--start") {
      o.start = number(a, v);
      have_start = true;
    } else if (a == "--count") {
      o.count = number(a, v);
      have_count = true;
    } else if (a == "--layout") {
      const auto layout = mailq::spool::parse_layout(v);
      if (!layout) usage(std::string("bad --layout ") + v);
      o.layout = *layout;
    } else if (a == "--segment-size") {
      o.segment_size = number(a, v);
      if (o.segment_size == 0) usage("--segment-size must not be 0");
    } else {
      usage("unknown option " + a);
    }
  }
  if (o.spool.empty() || !have_port || !have_start || !have_count)
    usage("--spool, --port, --start and --count are required");
  if (o.port == 0 || o.port > 65535) usage("bad --port");
  return o;
}

std::string body_for(unsigned long long n) {
  const std::string s = std::to_string(n);
  return "From: crash@mailq.test\r\nTo: rcpt" + s + "@example.net\r\nSubject: crash " + s +
         "\r\nX-Crash-Seq: " + s + "\r\n\r\nMessage " + s +
         " of the engine crash test.\r\n.leading dot, stuffed on the wire\r\nX-Crash-End: " + s +
         "\r\n";
}

}  // namespace

int main(int argc, char** argv) {
  const Options opt = parse(argc, argv);

  uv_loop_t loop;
  uv_loop_init(&loop);
  {
    mailq::uv::LoopClock clock(&loop);
    mailq_crash::StorageTuning tuning;
    tuning.segment_size = opt.segment_size;
    tuning.on_error = [](const mailq::Error& e) {
      std::fprintf(stderr, "engine_crash_writer: spool: %s\n", e.message.c_str());
    };
    auto spool = mailq_crash::CrashStorage::open(opt.layout, opt.spool, clock, tuning);
    if (!spool) {
      say("E spool: " + spool.error().message);
      return 1;
    }

    // A static route: the sink is the only host, whatever the recipient domain.
    mailq::RouteTable routes;
    mailq::Route route;
    route.name = "tcp_crash";
    route.hosts = {{"127.0.0.1", static_cast<std::uint16_t>(opt.port)}};
    route.tls = mailq::TlsPolicy::none;
    route.timeouts.connect = mailq::Duration(3000);
    route.timeouts.greeting = mailq::Duration(5000);
    if (!routes.add(route) || !routes.set_default("tcp_crash")) {
      say("E route");
      return 1;
    }
    mailq::StaticResolver resolver(clock);  // unused: the route is static
    mailq::uv::UvTransport transport(&loop, clock);

    // Retries come back within a second, so that a backlog deferred by a refused connection
    // drains in the final run instead of waiting for the default 15 minutes.
    mailq::QueueConfig qc;
    qc.reporting_mta = "crash.mailq.test";
    qc.retry.schedule = {mailq::Duration(500)};
    qc.retry.jitter = 0;
    mailq::Queue queue(spool->storage(), routes, clock, nullptr, qc);
    mailq::RecoveryReport report;
    if (auto recovered = queue.recover(&report); !recovered) {
      say("E recover: " + recovered.error().message);
      return 1;
    }
    say("L " + std::to_string(report.recovered) + " " + std::to_string(report.quarantined));

    mailq::DelivererConfig dc;
    dc.helo_name = "crash.mailq.test";
    dc.cycle = mailq::Duration(1000);
    dc.idle_timeout = mailq::Duration(200);
    // A failing sink must not mark the destination down for long: the final run has to drain.
    dc.domain_state = {1000, mailq::Duration(500)};
    mailq::Deliverer deliverer(queue, resolver, transport, dc);
    deliverer.start();

    // Enqueue in small batches, one per loop turn or so, so that a kill lands among
    // enqueues, syncs and deliveries alike.
    unsigned long long next = opt.start;
    const unsigned long long end = opt.start + opt.count;
    unsigned long long answered = 0;
    std::function<void()> submit = [&] {
      for (int i = 0; i < 5 && next < end; ++i, ++next) {
        const unsigned long long n = next;
        auto env =
            mailq::make_envelope("crash@mailq.test", {"rcpt" + std::to_string(n) + "@example.net"});
        if (!env) {
          say("ERR " + std::to_string(n) + " " + env.error().message);
          ++answered;
          continue;
        }
        queue.enqueue(env.value(), body_for(n), [n, &answered](mailq::Result<mailq::MessageId> r) {
          ++answered;
          if (r)
            say("ACK " + std::to_string(n));
          else
            say("ERR " + std::to_string(n) + " " + r.error().message);
        });
      }
      if (next < end) clock.schedule(mailq::Duration(2), submit);
    };
    clock.schedule(mailq::Duration(0), submit);

    bool said_idle = false;
    std::function<void()> check = [&] {
      if (!said_idle && answered == opt.count && queue.size() == 0) {
        say("IDLE");
        said_idle = true;
      }
      // Keeps the loop alive until the kill.
      clock.schedule(mailq::Duration(20), check);
    };
    clock.schedule(mailq::Duration(20), check);
    uv_run(&loop, UV_RUN_DEFAULT);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  return 0;
}
