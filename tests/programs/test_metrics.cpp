// mailq-relay's metrics (examples/relay/metrics.h): the Prometheus text is well formed line by
// line, the numbers are exact after a scripted life of a queue, and the HTTP endpoint answers
// a real GET on 127.0.0.1 and refuses everything else.
#include <catch2/catch.hpp>
#include "core/queue/port.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "examples/relay/metrics.h"
#include "mailq/storage.h"
#include "support/loop_checks.h"
#include "support/test_loop.h"

using namespace std::chrono_literals;
using mailq::Duration;
using mailq::Event;
using mailq::EventKind;
using mailq::Reply;
using mailq::relay::Metrics;
using mailq::relay::MetricsServer;

namespace {

// Checks the exposition text line by line (text format 0.0.4): HELP then TYPE once per
// family, families sorted, every sample of a declared family with valid label syntax and a
// number, no duplicate series, histograms cumulative with +Inf equal to _count.
void require_well_formed(const std::string& text) {
  REQUIRE(!text.empty());
  REQUIRE(text.back() == '\n');
  static const std::regex kHelp(R"(^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$)");
  static const std::regex kType(R"(^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram)$)");
  static const std::regex kSample(
      R"(^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*")(,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*")*\})? ([-+]?[0-9.eE+-]+|\+Inf|NaN)$)");
  std::istringstream in(text);
  std::string line;
  std::string family, type, last_family;
  bool help_seen = false;
  std::set<std::string> families, series;
  double last_bucket = -1;
  std::map<std::string, double> inf_of, count_of;
  while (std::getline(in, line)) {
    INFO("line: " << line);
    std::smatch m;
    if (std::regex_match(line, m, kHelp)) {
      REQUIRE(families.insert(m[1]).second);                       // each family once
      REQUIRE((last_family.empty() || last_family < m[1].str()));  // sorted
      family = last_family = m[1];
      help_seen = true;
      type.clear();
      last_bucket = -1;
    } else if (std::regex_match(line, m, kType)) {
      REQUIRE(help_seen);
      REQUIRE(m[1] == family);
      REQUIRE(type.empty());
      type = m[2];
    } else {
      REQUIRE(std::regex_match(line, m, kSample));
      REQUIRE(!type.empty());
      std::string name = m[1];
      std::string labels = m[2];
      REQUIRE(series.insert(name + labels).second);
      if (type == "histogram") {
        REQUIRE(
            (name == family + "_bucket" || name == family + "_sum" || name == family + "_count"));
        double v = std::stod(m[5]);
        if (name == family + "_bucket") {
          REQUIRE(v >= last_bucket);  // cumulative
          last_bucket = v;
          if (labels == "{le=\"+Inf\"}") inf_of[family] = v;
        }
        if (name == family + "_count") count_of[family] = v;
      } else {
        REQUIRE(name == family);
      }
    }
  }
  CHECK(inf_of == count_of);
}

// A transport for a Deliverer that is never started (its counters are what we render).
class NoTransport final : public mailq::Transport {
 public:
  std::unique_ptr<mailq::Connection> connect(const mailq::Endpoint&, const mailq::ConnectOptions&,
                                             mailq::ConnectionHandler&) override {
    FAIL("no connection expected");
    return nullptr;
  }
};

Event event(EventKind kind, Reply reply) {
  Event e;
  e.kind = kind;
  e.reply = std::move(reply);
  return e;
}

}  // namespace

TEST_CASE("metrics count deliveries, deferrals and bounces by enhanced code or class",
          "[metrics]") {
  Metrics m;
  m.on_event(event(EventKind::delivered, Reply(250, "2.0.0", "Ok")));
  m.on_event(event(EventKind::delivered, Reply(250, "", "Ok")));  // no enhanced code: class
  m.on_event(event(EventKind::delivered, Reply(251, "2.1.5", "forwarded")));
  m.on_event(event(EventKind::deferred, mailq::replies::domain_marked_down()));
  m.on_event(event(EventKind::deferred, Reply(421, "", "busy")));
  m.on_event(event(EventKind::deferred, Reply(451, "4.7.1", "greylisted")));
  m.on_event(event(EventKind::deferred, Reply(451, "4.7.1", "greylisted again")));
  m.on_event(event(EventKind::returned, Reply(550, "5.1.1", "no such user")));
  m.on_event(event(EventKind::returned, Reply(554, "", "rejected")));
  m.on_event(event(EventKind::returned, Reply()));  // no reply at all
  m.on_event(event(EventKind::destination_down, Reply()));
  m.on_event(event(EventKind::destination_down, Reply()));
  m.on_event(event(EventKind::enqueued, Reply()));  // not counted anywhere
  m.on_event(event(EventKind::destination_up, Reply()));
  m.on_event(event(EventKind::notice, Reply()));

  const std::string text = m.render({});
  require_well_formed(text);
  // Nothing but the event families without sources: the whole text, exactly.
  CHECK(text ==
        "# HELP mailq_bounces_total Recipients returned to the sender (permanent failure or "
        "expiry), by enhanced status code.\n"
        "# TYPE mailq_bounces_total counter\n"
        "mailq_bounces_total{status=\"5.0.0\"} 1\n"
        "mailq_bounces_total{status=\"5.1.1\"} 1\n"
        "mailq_bounces_total{status=\"unknown\"} 1\n"
        "# HELP mailq_deferrals_total Transient failures of recipients (retried later), by "
        "enhanced status code.\n"
        "# TYPE mailq_deferrals_total counter\n"
        "mailq_deferrals_total{status=\"4.0.0\"} 1\n"
        "mailq_deferrals_total{status=\"4.4.1\"} 1\n"
        "mailq_deferrals_total{status=\"4.7.1\"} 2\n"
        "# HELP mailq_deliveries_total Recipients delivered (accepted by the next hop), by "
        "enhanced status code.\n"
        "# TYPE mailq_deliveries_total counter\n"
        "mailq_deliveries_total{status=\"2.0.0\"} 2\n"
        "mailq_deliveries_total{status=\"2.1.5\"} 1\n"
        "# HELP mailq_delivery_latency_seconds Time from a message's arrival in the queue to the "
        "delivery of a recipient.\n"
        "# TYPE mailq_delivery_latency_seconds histogram\n"
        "mailq_delivery_latency_seconds_bucket{le=\"0.1\"} 0\n"
        "mailq_delivery_latency_seconds_bucket{le=\"0.5\"} 0\n"
        "mailq_delivery_latency_seconds_bucket{le=\"1\"} 0\n"
        "mailq_delivery_latency_seconds_bucket{le=\"2.5\"} 0\n"
        "mailq_delivery_latency_seconds_bucket{le=\"5\"} 0\n"
        "mailq_delivery_latency_seconds_bucket{le=\"10\"} 0\n"
        "mailq_delivery_latency_seconds_bucket{le=\"30\"} 0\n"
        "mailq_delivery_latency_seconds_bucket{le=\"60\"} 0\n"
        "mailq_delivery_latency_seconds_bucket{le=\"300\"} 0\n"
        "mailq_delivery_latency_seconds_bucket{le=\"900\"} 0\n"
        "mailq_delivery_latency_seconds_bucket{le=\"1800\"} 0\n"
        "mailq_delivery_latency_seconds_bucket{le=\"3600\"} 0\n"
        "mailq_delivery_latency_seconds_bucket{le=\"14400\"} 0\n"
        "mailq_delivery_latency_seconds_bucket{le=\"43200\"} 0\n"
        "mailq_delivery_latency_seconds_bucket{le=\"86400\"} 0\n"
        "mailq_delivery_latency_seconds_bucket{le=\"259200\"} 0\n"
        "mailq_delivery_latency_seconds_bucket{le=\"432000\"} 0\n"
        "mailq_delivery_latency_seconds_bucket{le=\"+Inf\"} 0\n"
        "mailq_delivery_latency_seconds_sum 0\n"
        "mailq_delivery_latency_seconds_count 0\n"
        "# HELP mailq_destinations_marked_down_total Times a destination was marked down after "
        "too many connection failures.\n"
        "# TYPE mailq_destinations_marked_down_total counter\n"
        "mailq_destinations_marked_down_total 2\n");
}

TEST_CASE("the latency histogram puts each delivery in its bucket, bounds inclusive", "[metrics]") {
  Metrics m;
  const mailq::TimePoint t0{std::chrono::hours(24 * 365 * 50)};
  auto delivered_after = [&](Duration latency) {
    Event e = event(EventKind::delivered, Reply(250, "2.0.0", "Ok"));
    e.arrival = t0;
    e.time = t0 + latency;
    m.on_event(e);
  };
  delivered_after(Duration(50));       // 0.05 s
  delivered_after(Duration(100));      // 0.1 s: on the bound, in le="0.1"
  delivered_after(Duration(3000));     // 3 s
  delivered_after(Duration(2h));       // 7200 s
  delivered_after(Duration(24h * 7));  // beyond every bound: +Inf only
  delivered_after(Duration(-5000));    // a clock step backwards counts as 0
  Event unknown = event(EventKind::delivered, Reply(250, "2.0.0", "Ok"));
  unknown.time = t0;  // arrival not known: counted as a delivery, not observed for latency
  m.on_event(unknown);

  const std::string text = m.render({});
  require_well_formed(text);
  auto has = [&](const std::string& line) {
    INFO(line);
    CHECK(text.find("\n" + line + "\n") != std::string::npos);
  };
  has("mailq_deliveries_total{status=\"2.0.0\"} 7");
  has("mailq_delivery_latency_seconds_bucket{le=\"0.1\"} 3");
  has("mailq_delivery_latency_seconds_bucket{le=\"0.5\"} 3");
  has("mailq_delivery_latency_seconds_bucket{le=\"2.5\"} 3");
  has("mailq_delivery_latency_seconds_bucket{le=\"5\"} 4");
  has("mailq_delivery_latency_seconds_bucket{le=\"3600\"} 4");
  has("mailq_delivery_latency_seconds_bucket{le=\"14400\"} 5");
  has("mailq_delivery_latency_seconds_bucket{le=\"432000\"} 5");
  has("mailq_delivery_latency_seconds_bucket{le=\"+Inf\"} 6");
  has("mailq_delivery_latency_seconds_sum 612003.15");
  has("mailq_delivery_latency_seconds_count 6");
}

TEST_CASE("label values are escaped: backslash, double quote and line feed", "[metrics]") {
  Metrics m;
  m.on_event(event(EventKind::deferred, Reply(451, "4.\"x\\y\nz", "odd")));
  const std::string text = m.render({});
  require_well_formed(text);
  CHECK(text.find("\nmailq_deferrals_total{status=\"4.\\\"x\\\\y\\nz\"} 1\n") != std::string::npos);
}

TEST_CASE("after a scripted queue life every gauge and counter has its exact value", "[metrics]") {
  mailq::ManualClock clock;
  mailq::MemoryStorage storage;
  mailq::RouteTable routes;
  mailq::Route internal;
  internal.name = "tcp_internal";
  internal.hosts = {{"10.0.0.5", 25}};
  REQUIRE(routes.add(internal));
  REQUIRE(routes.map("internal.test", "tcp_internal"));
  Metrics metrics;
  mailq::QueueConfig qc;
  qc.random_seed = 1;
  mailq::Queue queue(storage, routes, clock, &metrics, qc);
  mailq::DomainStateTable domains(mailq::DomainStateConfig{2, Duration(15min)});
  mailq::StaticResolver resolver(clock);
  NoTransport transport;
  mailq::Deliverer deliverer(queue, resolver, transport);

  auto send = [&](std::string from, std::vector<std::string> to) {
    auto env = mailq::make_envelope(from, to);
    REQUIRE(env);
    mailq::MessageId id;
    queue.enqueue(*env, "Subject: t\r\n\r\nbody\r\n", [&](mailq::Result<mailq::MessageId> r) {
      REQUIRE(r);
      id = *r;
    });
    clock.run_pending();
    REQUIRE(id);
    return id;
  };
  auto take = [&](const std::string& destination) {
    auto jobs = mailq::detail::delivery_port(queue).take_due(destination, clock.now(), 10);
    REQUIRE(jobs.size() == 1);
    return jobs[0];
  };
  auto outcome = [](std::size_t index, Reply reply) {
    mailq::detail::RecipientOutcome o;
    o.index = index;
    o.reply = std::move(reply);
    return o;
  };

  const mailq::MessageId m1 =
      send("a@src.test", {"x@example.com", "y@example.com", "z@example.org"});
  const mailq::MessageId m2 = send("b@src.test", {"w@internal.test"});
  const mailq::MessageId m3 = send("c@src.test", {"v@example.net"});

  clock.advance(2s);
  mailq::detail::Job j = take("example.com");
  mailq::detail::delivery_port(queue).complete(
      j, {outcome(0, Reply(250, "2.0.0", "Ok")), outcome(1, Reply(451, "4.7.1", "grey"))}, true);
  j = take("example.org");
  mailq::detail::delivery_port(queue).complete(j, {outcome(2, Reply(550, "5.1.1", "no such user"))},
                                               true);  // + a DSN
  clock.advance(1h);
  j = take("tcp_internal");
  mailq::detail::delivery_port(queue).complete(j, {outcome(0, Reply(250, "", "Ok"))},
                                               true);  // m2 is done
  REQUIRE(queue.hold(m3));

  // The deliverer marks destinations down; here the table is fed directly and the event
  // scripted, as the Deliverer would emit it.
  domains.record_failure("down.test", clock.now(), "refused");
  REQUIRE(domains.record_failure("down.test", clock.now(), "refused"));
  domains.record_failure("flaky.test", clock.now(), "refused");
  Event down;
  down.kind = EventKind::destination_down;
  down.destination = "down.test";
  metrics.on_event(down);

  CHECK(queue.find(m2) == std::nullopt);
  Metrics::Sources sources;
  sources.queue = &queue;
  sources.domains = &domains;
  sources.deliverer = &deliverer;
  sources.listener_stats = mailq::uv::SmtpListenerStats{7, 2, 5, 4, 1, 3, 1, 6, 2, 9};
  sources.now = clock.now();
  const std::string text = metrics.render(sources);
  require_well_formed(text);

  // The whole text minus the latency buckets (pinned by their own test), exactly.
  std::string without_buckets;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (line.rfind("mailq_delivery_latency_seconds_bucket", 0) != 0) without_buckets += line + "\n";
  CHECK(without_buckets ==
        "# HELP mailq_bounces_total Recipients returned to the sender (permanent failure or "
        "expiry), by enhanced status code.\n"
        "# TYPE mailq_bounces_total counter\n"
        "mailq_bounces_total{status=\"5.1.1\"} 1\n"
        "# HELP mailq_connection_failures_total Outgoing connection failures (refused, timed "
        "out, unreachable, no greeting).\n"
        "# TYPE mailq_connection_failures_total counter\n"
        "mailq_connection_failures_total 0\n"
        "# HELP mailq_connections_open Outgoing SMTP connections open.\n"
        "# TYPE mailq_connections_open gauge\n"
        "mailq_connections_open 0\n"
        "# HELP mailq_connections_opened_total Outgoing SMTP connections established.\n"
        "# TYPE mailq_connections_opened_total counter\n"
        "mailq_connections_opened_total 0\n"
        "# HELP mailq_deferrals_total Transient failures of recipients (retried later), by "
        "enhanced status code.\n"
        "# TYPE mailq_deferrals_total counter\n"
        "mailq_deferrals_total{status=\"4.7.1\"} 1\n"
        "# HELP mailq_deliveries_total Recipients delivered (accepted by the next hop), by "
        "enhanced status code.\n"
        "# TYPE mailq_deliveries_total counter\n"
        "mailq_deliveries_total{status=\"2.0.0\"} 2\n"
        "# HELP mailq_delivery_latency_seconds Time from a message's arrival in the queue to the "
        "delivery of a recipient.\n"
        "# TYPE mailq_delivery_latency_seconds histogram\n"
        "mailq_delivery_latency_seconds_sum 3604\n"
        "mailq_delivery_latency_seconds_count 2\n"
        "# HELP mailq_destinations_marked_down_total Times a destination was marked down after "
        "too many connection failures.\n"
        "# TYPE mailq_destinations_marked_down_total counter\n"
        "mailq_destinations_marked_down_total 1\n"
        "# HELP mailq_dns_failures_total DNS resolutions that failed.\n"
        "# TYPE mailq_dns_failures_total counter\n"
        "mailq_dns_failures_total 0\n"
        "# HELP mailq_domains_down Destinations marked down now.\n"
        "# TYPE mailq_domains_down gauge\n"
        "mailq_domains_down 1\n"
        "# HELP mailq_listener_auth_failures_total AUTH attempts refused for bad credentials "
        "(535).\n"
        "# TYPE mailq_listener_auth_failures_total counter\n"
        "mailq_listener_auth_failures_total 2\n"
        "# HELP mailq_listener_auth_successes_total Successful AUTH logins.\n"
        "# TYPE mailq_listener_auth_successes_total counter\n"
        "mailq_listener_auth_successes_total 6\n"
        "# HELP mailq_listener_messages_accepted_total Messages the listener accepted (durable "
        "in the spool, 250 sent).\n"
        "# TYPE mailq_listener_messages_accepted_total counter\n"
        "mailq_listener_messages_accepted_total 4\n"
        "# HELP mailq_listener_messages_received_total Messages received in full by the "
        "listener.\n"
        "# TYPE mailq_listener_messages_received_total counter\n"
        "mailq_listener_messages_received_total 5\n"
        "# HELP mailq_listener_sessions_open SMTP sessions of the listener open now.\n"
        "# TYPE mailq_listener_sessions_open gauge\n"
        "mailq_listener_sessions_open 1\n"
        "# HELP mailq_listener_sessions_refused_total SMTP clients refused (not allowed, or too "
        "many sessions).\n"
        "# TYPE mailq_listener_sessions_refused_total counter\n"
        "mailq_listener_sessions_refused_total 2\n"
        "# HELP mailq_listener_sessions_total SMTP sessions accepted by the listener.\n"
        "# TYPE mailq_listener_sessions_total counter\n"
        "mailq_listener_sessions_total 7\n"
        "# HELP mailq_listener_storage_refusals_total MAIL commands refused for want of free "
        "space on the queue's file system (452 4.3.1).\n"
        "# TYPE mailq_listener_storage_refusals_total counter\n"
        "mailq_listener_storage_refusals_total 9\n"
        "# HELP mailq_listener_tls_failures_total STARTTLS handshakes that failed.\n"
        "# TYPE mailq_listener_tls_failures_total counter\n"
        "mailq_listener_tls_failures_total 1\n"
        "# HELP mailq_listener_tls_handshakes_total STARTTLS handshakes completed.\n"
        "# TYPE mailq_listener_tls_handshakes_total counter\n"
        "mailq_listener_tls_handshakes_total 3\n"
        "# HELP mailq_queue_cycles_total Queue cycles run.\n"
        "# TYPE mailq_queue_cycles_total counter\n"
        "mailq_queue_cycles_total 0\n"
        "# HELP mailq_queue_depth Recipients pending per destination (domain or route).\n"
        "# TYPE mailq_queue_depth gauge\n"
        "mailq_queue_depth{destination=\"example.com\"} 1\n"
        "mailq_queue_depth{destination=\"example.net\"} 1\n"
        "mailq_queue_depth{destination=\"src.test\"} 1\n"
        "# HELP mailq_queue_held Messages held by an operator.\n"
        "# TYPE mailq_queue_held gauge\n"
        "mailq_queue_held 1\n"
        "# HELP mailq_queue_messages Messages in the queue.\n"
        "# TYPE mailq_queue_messages gauge\n"
        "mailq_queue_messages 3\n"
        "# HELP mailq_queue_recipients_pending Recipients not yet delivered, bounced or "
        "expired.\n"
        "# TYPE mailq_queue_recipients_pending gauge\n"
        "mailq_queue_recipients_pending 3\n"
        "# HELP mailq_transactions_total SMTP transactions run (one message, one destination).\n"
        "# TYPE mailq_transactions_total counter\n"
        "mailq_transactions_total 0\n");
  // x@ after 2 s, w@ after 3602 s: the latency comes from the queue's own events.
  CHECK(text.find("\nmailq_delivery_latency_seconds_bucket{le=\"2.5\"} 1\n") != std::string::npos);
  CHECK(text.find("\nmailq_delivery_latency_seconds_bucket{le=\"3600\"} 1\n") != std::string::npos);
  CHECK(text.find("\nmailq_delivery_latency_seconds_bucket{le=\"14400\"} 2\n") !=
        std::string::npos);

  // Once the down mark has passed, the gauge says so.
  sources.now = clock.now() + Duration(16min);
  CHECK(metrics.render(sources).find("\nmailq_domains_down 0\n") != std::string::npos);

  CHECK(queue.depth_by_destination() ==
        std::vector<std::pair<std::string, std::size_t>>{
            {"example.com", 1}, {"example.net", 1}, {"src.test", 1}});
}

TEST_CASE("queue depth keeps the deepest destinations and sums the rest", "[metrics]") {
  mailq::ManualClock clock;
  mailq::MemoryStorage storage;
  mailq::RouteTable routes;
  mailq::Queue queue(storage, routes, clock, nullptr);
  auto send = [&](std::vector<std::string> to) {
    auto env = mailq::make_envelope("a@src.test", to);
    REQUIRE(env);
    bool ok = false;
    queue.enqueue(*env, "x\r\n", [&](mailq::Result<mailq::MessageId> r) { ok = r.ok(); });
    clock.run_pending();
    REQUIRE(ok);
  };
  send({"a@one.test", "b@one.test", "c@one.test"});
  send({"a@two.test", "b@two.test"});
  send({"a@three.test"});
  send({"a@four.test"});
  Metrics m(&queue);
  m.set_max_destinations(2);
  const std::string text = m.render({});
  require_well_formed(text);
  CHECK(text.find("# TYPE mailq_queue_depth gauge\n"
                  "mailq_queue_depth{destination=\"(other)\"} 2\n"
                  "mailq_queue_depth{destination=\"one.test\"} 3\n"
                  "mailq_queue_depth{destination=\"two.test\"} 2\n"
                  "# HELP") != std::string::npos);
}

// --- the HTTP endpoint ----------------------------------------------------------------------

namespace {

// A blocking raw-socket client in a thread while the test loop runs: sends `request` (and
// optionally half-closes), returns everything the server sent until it closed. The thread
// wakes the loop through a uv_async_t when it is done, so that the loop never sleeps on.
class RawClient {
 public:
  RawClient(uv_loop_t* loop, std::uint16_t port, std::string request, bool half_close)
      : async_(new uv_async_t) {
    uv_async_init(loop, async_, [](uv_async_t*) {});
    thread_ = std::thread([this, port, request, half_close] {
      run(port, request, half_close);
      done_ = true;
      uv_async_send(async_);
    });
  }
  ~RawClient() {
    if (thread_.joinable()) thread_.join();
    uv_close(reinterpret_cast<uv_handle_t*>(async_),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_async_t*>(h); });
  }
  bool done() const { return done_; }
  std::string response() {
    thread_.join();
    return response_;
  }
  const std::string& error() const { return error_; }

 private:
  void run(std::uint16_t port, const std::string& request, bool half_close) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    timeval tv{20, 0};  // a hang guard, not a performance check
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      error_ = "connect failed";
    } else {
      std::size_t off = 0;
      while (off < request.size()) {
        ssize_t n = ::send(fd, request.data() + off, request.size() - off, MSG_NOSIGNAL);
        if (n <= 0) break;  // the server may answer and stop reading early
        off += static_cast<std::size_t>(n);
      }
      if (half_close) ::shutdown(fd, SHUT_WR);
      char buf[4096];
      for (;;) {
        ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n <= 0) {
          if (n < 0) error_ = "recv: " + std::string(std::strerror(errno));
          break;
        }
        response_.append(buf, static_cast<std::size_t>(n));
      }
    }
    ::close(fd);
  }

  uv_async_t* async_;  // freed by its close callback
  std::string response_;
  std::string error_;
  std::atomic<bool> done_{false};
  std::thread thread_;
};

std::string exchange(mailq::test::TestLoop& loop, std::uint16_t port, std::string request,
                     bool half_close = false) {
  RawClient client(loop.get(), port, std::move(request), half_close);
  REQUIRE(loop.run_until([&] { return client.done(); }, 30s));
  std::string r = client.response();
  INFO(client.error());
  CHECK(client.error().empty());
  return r;
}

std::string answer(int code, const std::string& reason, const std::string& body,
                   const std::string& extra = {}) {
  return "HTTP/1.0 " + std::to_string(code) + " " + reason +
         "\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\n" + extra + "Connection: close\r\n\r\n" + body;
}

}  // namespace

TEST_CASE("the metrics endpoint answers GET /metrics on 127.0.0.1 and refuses the rest",
          "[metrics][http]") {
  mailq::test::TestLoop loop;
  Metrics metrics;
  metrics.on_event(event(EventKind::delivered, Reply(250, "2.0.0", "Ok")));
  int renders = 0;
  {
    MetricsServer server(loop.get(), "127.0.0.1", 0, [&] {
      renders++;
      return metrics.render({});
    });
    REQUIRE(!server.start());
    const std::uint16_t port = server.port();
    REQUIRE(port != 0);
    const std::string body = metrics.render({});

    SECTION("GET /metrics: 200 with the exposition text") {
      std::string r = exchange(loop, port,
                               "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: "
                               "Prometheus/2.45\r\nAccept: text/plain\r\n\r\n");
      CHECK(r ==
            "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
            "Content-Length: " +
                std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body);
      CHECK(renders == 1);
      // The query string is ignored; a bare-LF head is tolerated; HTTP/1.0 works.
      r = exchange(loop, port, "GET /metrics?x=1 HTTP/1.0\n\n");
      CHECK(r.rfind("HTTP/1.0 200 OK\r\n", 0) == 0);
      CHECK(r.substr(r.size() - body.size()) == body);
    }
    SECTION("HEAD /metrics: the headers only") {
      std::string r = exchange(loop, port, "HEAD /metrics HTTP/1.0\r\n\r\n");
      CHECK(r ==
            "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
            "Content-Length: " +
                std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n");
    }
    SECTION("another path: 404") {
      CHECK(exchange(loop, port, "GET / HTTP/1.0\r\n\r\n") ==
            answer(404, "Not Found", "not found: try /metrics\n"));
      CHECK(exchange(loop, port, "GET /metricsx HTTP/1.1\r\nHost: x\r\n\r\n") ==
            answer(404, "Not Found", "not found: try /metrics\n"));
      CHECK(renders == 0);
    }
    SECTION("another method: 405") {
      CHECK(exchange(loop, port, "POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello") ==
            answer(405, "Method Not Allowed", "only GET and HEAD\n", "Allow: GET, HEAD\r\n"));
      CHECK(renders == 0);
    }
    SECTION("garbage: 400") {
      const std::string bad = answer(400, "Bad Request", "malformed request line\n");
      CHECK(exchange(loop, port, "hello\r\n\r\n") == bad);
      CHECK(exchange(loop, port, "GET  /metrics HTTP/1.0\r\n\r\n") == bad);
      CHECK(exchange(loop, port, "GET /metrics\r\n\r\n") == bad);
      CHECK(exchange(loop, port, "get /metrics HTTP/1.0\r\n\r\n") ==
            answer(400, "Bad Request", "malformed method\n"));
      CHECK(exchange(loop, port, "GET metrics HTTP/1.0\r\n\r\n") ==
            answer(400, "Bad Request", "malformed request target\n"));
      CHECK(exchange(loop, port, "GET /metrics HTTP/2.0\r\n\r\n") ==
            answer(400, "Bad Request", "unsupported HTTP version\n"));
      CHECK(exchange(loop, port, "GET /metrics HTTP/1.0\r\nno colon here\r\n\r\n") ==
            answer(400, "Bad Request", "malformed header line\n"));
      static const char kNul[] = "GET /metrics HTTP/1.0\r\nX: a\0b\r\n\r\n";
      CHECK(exchange(loop, port, std::string(kNul, sizeof kNul - 1)) ==
            answer(400, "Bad Request", "NUL in request\n"));
      CHECK(exchange(loop, port, "\x16\x03\x01\x02\xfc\x03\x03\r\n\r\n") == bad);
      CHECK(renders == 0);
    }
    SECTION("an endless head: 400 after 8 KiB, the answer not lost to unread bytes") {
      std::string flood = "GET /metrics HTTP/1.0\r\nX-Filler: " + std::string(64 * 1024, 'a');
      CHECK(exchange(loop, port, flood) == answer(400, "Bad Request", "request head too large\n"));
      CHECK(renders == 0);
    }
    SECTION("a client that closes without a request gets nothing, and the server goes on") {
      CHECK(exchange(loop, port, "GET /met", true).empty());
      CHECK(exchange(loop, port, "GET /metrics HTTP/1.0\r\n\r\n").rfind("HTTP/1.0 200 OK", 0) == 0);
    }
    server.close();
    server.close();  // idempotent
  }
  mailq::test::require_clean_close(loop);
}

TEST_CASE("the metrics endpoint times out a silent client with 408 and reports render errors",
          "[metrics][http]") {
  mailq::test::TestLoop loop;
  bool fail = false;
  MetricsServer server(loop.get(), "127.0.0.1", 0, [&]() -> std::string {
    if (fail) throw std::runtime_error("queue unavailable");
    return "";
  });
  server.set_timeout(Duration(200));
  REQUIRE(!server.start());
  CHECK(exchange(loop, server.port(), "GET /metrics HTTP/1.0\r\n") ==
        answer(408, "Request Timeout", "request timeout\n"));
  fail = true;
  CHECK(exchange(loop, server.port(), "GET /metrics HTTP/1.0\r\n\r\n") ==
        answer(500, "Internal Server Error", "metrics failed: queue unavailable\n"));
  server.close();
  mailq::test::require_clean_close(loop);
}

TEST_CASE("the metrics endpoint binds loopback only and names the address when it cannot",
          "[metrics][http]") {
  mailq::test::TestLoop loop;
  {
    MetricsServer open(loop.get(), "0.0.0.0", 0, [] { return std::string(); });
    CHECK(open.start() == mailq::make_error_code(mailq::errc::invalid_parameter));
    CHECK(open.last_error().message ==
          "metrics 0.0.0.0:0: not a loopback address (metrics are served on 127.0.0.0/8 or ::1 "
          "only)");
    MetricsServer name(loop.get(), "localhost", 9100, [] { return std::string(); });
    CHECK(name.start() == mailq::make_error_code(mailq::errc::invalid_parameter));
    CHECK(name.last_error().message == "metrics localhost:9100: not a numeric IP address");

    MetricsServer first(loop.get(), "127.0.0.1", 0, [] { return std::string(); });
    REQUIRE(!first.start());
    MetricsServer second(loop.get(), "127.0.0.1", first.port(), [] { return std::string(); });
    CHECK(second.start() == std::make_error_code(std::errc::address_in_use));
    CHECK(second.last_error().message ==
          "metrics 127.0.0.1:" + std::to_string(first.port()) + ": address already in use");
  }
  mailq::test::require_clean_close(loop);
}

TEST_CASE("listener gauges and counters are read from the listener at render", "[metrics]") {
  mailq::test::TestLoop loop;
  {
    mailq::uv::SmtpListenerOptions options;
    options.host = "127.0.0.1";
    auto opened = mailq::uv::SmtpListener::open(loop.get(), options, {});
    REQUIRE(opened);
    mailq::uv::SmtpListener& listener = **opened;
    Metrics metrics;
    Metrics::Sources sources;
    sources.listener = &listener;
    const std::string text = metrics.render(sources);
    require_well_formed(text);
    CHECK(text.find("\nmailq_listener_sessions_open 0\n") != std::string::npos);
    CHECK(text.find("\nmailq_listener_sessions_total 0\n") != std::string::npos);
    CHECK(text.find("\nmailq_listener_messages_accepted_total 0\n") != std::string::npos);
    // Counters the caller read itself win over the listener's.
    sources.listener_stats = mailq::uv::SmtpListenerStats{3, 0, 0, 0, 0};
    CHECK(metrics.render(sources).find("\nmailq_listener_sessions_total 3\n") != std::string::npos);
    listener.close();
  }
  mailq::test::require_clean_close(loop);
}
