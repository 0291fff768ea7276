// The operator verbs and queue reports (examples/relay/commands.h) on a manual clock, an
// in-memory storage and a transport that refuses every connection.
#include <catch2/catch.hpp>

#include <fmt/format.h>

#include <cstdlib>
#include <ctime>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "examples/relay/commands.h"
#include "mailq/deliverer.h"
#include "mailq/domain_state.h"
#include "mailq/queue.h"
#include "mailq/resolver.h"
#include "mailq/route.h"
#include "mailq/storage.h"

using namespace mailq;
using namespace mailq::relay;
using namespace std::chrono_literals;

namespace {

// Every connection is refused, asynchronously through the clock like a real loop.
class RefusingTransport final : public Transport {
 public:
  explicit RefusingTransport(Clock& clock) : clock_(clock) {}

  std::unique_ptr<Connection> connect(const Endpoint& remote, const ConnectOptions&,
                                      ConnectionHandler& handler) override {
    ++connects;
    auto alive = std::make_shared<bool>(true);
    clock_.schedule(Duration{0}, [alive, &handler] {
      if (*alive)
        handler.on_connect(
            Error(std::make_error_code(std::errc::connection_refused), "connection refused"));
    });
    return std::make_unique<Conn>(remote, alive);
  }

  int connects = 0;

 private:
  struct Conn final : Connection {
    Conn(Endpoint r, std::shared_ptr<bool> a) : remote(std::move(r)), alive(std::move(a)) {}
    ~Conn() override { *alive = false; }
    void write(std::string_view) override {}
    void start_tls(const TlsClientOptions&) override {}
    bool write_idle() const override { return true; }
    Endpoint local_endpoint() const override { return {"127.0.0.1", 40000}; }
    Endpoint remote_endpoint() const override { return remote; }
    Endpoint remote;
    std::shared_ptr<bool> alive;
  };
  Clock& clock_;
};

// 2023-01-03 14:48:55 UTC: seed 000's "Thursday, Jan 03, 2023 03:48:55 PM CET".
const TimePoint kStart = TimePoint{std::chrono::seconds(1672757335)};

QueueConfig queue_config() {
  QueueConfig q;
  q.retry.jitter = 0;
  q.random_seed = 42;
  q.reporting_mta = "mailq.test";
  return q;
}

struct Fixture {
  ManualClock clock{kStart};
  MemoryStorage storage;
  RouteTable routes;
  StaticResolver resolver{clock};
  RefusingTransport transport{clock};
  std::unique_ptr<Queue> queue;
  std::unique_ptr<Deliverer> deliverer;

  Fixture() {
    resolver.set_mx("down.example", {{10, "mx.down.example"}});
    resolver.set_addresses("mx.down.example", {"127.0.0.10"});
    Route mx = routes.default_route();  // the scripted server is on loopback
    mx.allow_internal_mx = {Network::parse("127.0.0.0/8").value()};
    REQUIRE(routes.add(mx));
    queue = std::make_unique<Queue>(storage, routes, clock, nullptr, queue_config());
    DelivererConfig dc;
    dc.domain_state = DomainStateConfig{3, Duration(15min)};
    deliverer = std::make_unique<Deliverer>(*queue, resolver, transport, dc);
  }

  MessageId send(const std::string& from, const std::vector<std::string>& to,
                 const EnqueueOptions& options = {}) {
    auto env = make_envelope(from, to);
    REQUIRE(env);
    MessageId id;
    queue->enqueue(
        env.value(), "Subject: test\r\nMessage-ID: <t@test>\r\n\r\nhello\r\n",
        [&](Result<MessageId> r) {
          REQUIRE(r);
          id = r.value();
        },
        options);
    REQUIRE(id);
    clock.run_pending();
    return id;
  }

  CommandContext offline() { return CommandContext{*queue, clock, nullptr, nullptr, {}, true}; }
  CommandContext online() {
    return CommandContext{*queue, clock, &deliverer->domains(), deliverer.get(), {}, true};
  }

  std::string ok(CommandContext ctx, std::vector<std::string> argv) {
    auto r = execute_command(ctx, argv);
    INFO(r.error);
    REQUIRE(r.ok);
    return r.payload;
  }
  std::string fails(CommandContext ctx, std::vector<std::string> argv) {
    auto r = execute_command(ctx, argv);
    INFO(r.payload);
    REQUIRE_FALSE(r.ok);
    REQUIRE(r.payload.empty());
    return r.error;
  }
};

const char* kRefused =
    "421 4.4.1 [internal] TCP active open: Failed connect() Error: connection refused";
const char* kDown =
    "451 4.4.1 [internal] connection was not attempted: domain is marked down (too many "
    "connection failures)";

// Three refused connections mark down.example down; a fourth message is held back by the mark.
struct DownScenario : Fixture {
  std::vector<MessageId> refused;
  MessageId held_back;
  DownScenario() {
    deliverer->start();
    for (int i = 0; i < 3; ++i) {
      refused.push_back(send("alice@example.org", {"bob@down.example"}));
      clock.advance(1min);
    }
    REQUIRE(deliverer->domains().is_down("down.example", clock.now()));
    held_back = send("alice@example.org", {"carol@down.example", "dave@down.example"});
  }
};

}  // namespace

TEST_CASE("format_age shows the largest whole unit of minutes, hours and days",
          "[commands][tools]") {
  CHECK(format_age(Duration(0)) == "0m");
  CHECK(format_age(Duration(59s)) == "0m");
  CHECK(format_age(Duration(3min)) == "3m");
  CHECK(format_age(Duration(59min)) == "59m");
  CHECK(format_age(Duration(2h + 59min)) == "2h");
  CHECK(format_age(Duration(5 * 24h + 3h)) == "5d");
  CHECK(format_age(Duration(-5s)) == "0m");
}

TEST_CASE("format_time renders seed 000's failure time, in the local zone or UTC",
          "[commands][tools][seed000]") {
  CHECK(format_time(kStart, true) == "Tuesday, Jan 03, 2023 02:48:55 PM UTC");
  CHECK(format_time(kStart + 10h, true) == "Wednesday, Jan 04, 2023 12:48:55 AM UTC");
  CHECK(format_time(kStart - 2h, true) == "Tuesday, Jan 03, 2023 12:48:55 PM UTC");

  // The seed's own text, in Central European Time.
  const char* old = std::getenv("TZ");
  std::optional<std::string> saved = old ? std::optional<std::string>(old) : std::nullopt;
  setenv("TZ", "CET-1CEST,M3.5.0,M10.5.0/3", 1);
  tzset();
  std::string cet = format_time(kStart);
  if (saved)
    setenv("TZ", saved->c_str(), 1);
  else
    unsetenv("TZ");
  tzset();
  CHECK(cet == "Tuesday, Jan 03, 2023 03:48:55 PM CET");
}

TEST_CASE(
    "list shows one line per message with age, size, state, sender, recipients, "
    "destinations and last error",
    "[commands][tools]") {
  DownScenario f;
  MessageId held = f.send("<>", {"erin@Quiet.Example"}, {"api", true});
  f.clock.advance(2min);
  std::string expected = fmt::format(
      "ID             AGE  SIZE  STATE     SENDER             RECIPIENTS                          "
      "  DESTINATION    LAST ERROR\n"
      "{}   5m    46  deferred  alice@example.org  bob@down.example                      "
      "down.example   {}\n"
      "{}   4m    46  deferred  alice@example.org  bob@down.example                      "
      "down.example   {}\n"
      "{}   3m    46  deferred  alice@example.org  bob@down.example                      "
      "down.example   {}\n"
      "{}   2m    46  deferred  alice@example.org  carol@down.example,dave@down.example  "
      "down.example   {}\n"
      "{}   2m    46  held      <>                 erin@Quiet.Example                    "
      "quiet.example  -\n"
      "5 messages, 6 recipients pending\n",
      f.refused[0].to_string(), kRefused, f.refused[1].to_string(), kRefused,
      f.refused[2].to_string(), kRefused, f.held_back.to_string(), kDown, held.to_string());
  CHECK(f.ok(f.offline(), {"list"}) == expected);
}

TEST_CASE("list filters by destination, age, error text (percent-encoded) and held",
          "[commands][tools]") {
  DownScenario f;
  MessageId held = f.send("<>", {"erin@quiet.example"}, {"api", true});
  auto ids_of = [&](std::vector<std::string> argv) {
    std::string out = f.ok(f.offline(), argv);
    std::vector<std::string> ids;
    std::size_t pos = out.find('\n') + 1;  // after the header
    while (pos < out.size()) {
      std::size_t eol = out.find('\n', pos);
      std::string line = out.substr(pos, eol - pos);
      if (line.size() >= 13 && line.find(" pending") == std::string::npos)
        ids.push_back(line.substr(0, 13));
      pos = eol + 1;
    }
    return ids;
  };
  auto s = [](MessageId id) { return id.to_string(); };

  CHECK(ids_of({"list", "--destination", "quiet.example"}) == std::vector{s(held)});
  CHECK(ids_of({"list", "--destination", "Quiet.EXAMPLE"}) == std::vector{s(held)});
  CHECK(ids_of({"list", "--destination", "default-non-local-route"}).size() == 5);
  CHECK(ids_of({"list", "--held"}) == std::vector{s(held)});
  CHECK(ids_of({"list", "--min-age", "90s"}) == std::vector{s(f.refused[0]), s(f.refused[1])});
  CHECK(ids_of({"list", "--error", "marked%20down"}) == std::vector{s(f.held_back)});
  CHECK(ids_of({"list", "--error", "refused", "--min-age", "150s"}) ==
        std::vector{s(f.refused[0])});
  CHECK(f.ok(f.offline(), {"list", "--destination", "nowhere.example"}) == "no message matches\n");

  CHECK(f.fails(f.offline(), {"list", "--min-age", "15x"}) ==
        "list: --min-age: '15x' is not a duration (use ms, s, m, h or d)");
  CHECK(f.fails(f.offline(), {"list", "--min-age"}) == "list: --min-age needs a value");
  CHECK(f.fails(f.offline(), {"list", "--error", "50%"}) ==
        "list: --error: bad percent-encoding in '50%'");
  CHECK(f.fails(f.offline(), {"list", "--bogus"}) ==
        "list: unknown argument '--bogus' (use --destination D, --min-age DUR, --error TEXT, "
        "--held)");
}

TEST_CASE("list of an empty queue says so", "[commands][tools]") {
  Fixture f;
  CHECK(f.ok(f.offline(), {"list"}) == "queue is empty\n");
}

TEST_CASE("summary counts messages by destination and age bucket, held apart",
          "[commands][tools]") {
  DownScenario f;
  f.send("<>", {"erin@quiet.example"}, {"api", true});
  f.send("x@example.org", {"a@quiet.example", "b@down.example"});
  f.clock.advance(7min);
  f.send("x@example.org", {"c@quiet.example"});
  f.clock.advance(30min);
  CHECK(f.ok(f.offline(), {"summary"}) ==
        "DESTINATION    T  0-5m  5-10m  10-20m  20-40m  40-80m  80-160m  160-320m  320m+  HELD\n"
        "TOTAL          7     0      0       0       5       1        0         0      0     1\n"
        "down.example   5     0      0       0       4       1        0         0      0     0\n"
        "quiet.example  3     0      0       0       2       0        0         0      0     1\n");
  CHECK(f.fails(f.offline(), {"summary", "x"}) == "usage: summary (no arguments)");
}

TEST_CASE("summary of an empty queue is a table of zeros", "[commands][tools]") {
  Fixture f;
  CHECK(f.ok(f.offline(), {"summary"}) ==
        "DESTINATION  T  0-5m  5-10m  10-20m  20-40m  40-80m  80-160m  160-320m  320m+  HELD\n"
        "TOTAL        0     0      0       0       0       0        0         0      0     0\n");
}

TEST_CASE("show prints the message, its recipients and seed 000's transient attempts table",
          "[commands][tools][seed000]") {
  DownScenario f;
  f.clock.advance(3min);
  const MessageId id = f.held_back;
  std::string expected = fmt::format(
      "id: {0}\n"
      "queue file: queue/default-non-local-route/ZZ{0}.00\n"
      "arrival: Tuesday, Jan 03, 2023 02:51:55 PM UTC (3m ago)\n"
      "size: 46 octets\n"
      "sender: alice@example.org\n"
      "source channel: api\n"
      "message-id: <t@test>\n"
      "held: no\n"
      "delivery attempts: 0\n"
      "recipients:\n"
      "  carol@down.example: deferred, 0 attempts, destination down.example via "
      "default-non-local-route\n"
      "    next attempt: at the next queue cycle\n"
      "    last reply: {1}\n"
      "  dave@down.example: deferred, 0 attempts, destination down.example via "
      "default-non-local-route\n"
      "    next attempt: at the next queue cycle\n"
      "    last reply: {1}\n"
      "Transient Delivery Attempts | Failure Time | Details | Recipient |\n"
      "Attempted Delivery to: default-non-local-route | Tuesday, Jan 03, 2023 02:51:55 PM UTC | "
      "{1} | carol@down.example |\n"
      "Attempted Delivery to: default-non-local-route | Tuesday, Jan 03, 2023 02:51:55 PM UTC | "
      "{1} | dave@down.example |\n",
      id.to_string(), kDown);
  CHECK(f.ok(f.offline(), {"show", id.to_string()}) == expected);

  // With the relay's domain states at hand, the down mark that holds the message back shows.
  std::string online = f.ok(f.online(), {"show", id.to_string()});
  CHECK(online.find("    next attempt: at the next queue cycle\n"
                    "    destination down until Tuesday, Jan 03, 2023 03:05:55 PM UTC\n"
                    "    last reply: ") != std::string::npos);

  CHECK(f.fails(f.offline(), {"show", "01J9ZK3D2ZP7F"}) == "no message 01J9ZK3D2ZP7F");
  CHECK(f.fails(f.offline(), {"show", "nonsense"}) == "'nonsense' is not a queue id");
  CHECK(f.fails(f.offline(), {"show"}) == "usage: show ID");
}

TEST_CASE("show of a new message has no attempts and is due now", "[commands][tools]") {
  Fixture f;  // the deliverer is not started: nothing is attempted
  MessageId id = f.send("<>", {"x@quiet.example"});
  std::string out = f.ok(f.offline(), {"show", id.to_string()});
  CHECK(out.find("sender: <>\n") != std::string::npos);
  CHECK(out.find("  x@quiet.example: queued, 0 attempts, destination quiet.example via "
                 "default-non-local-route\n    next attempt: due now\n") != std::string::npos);
  CHECK(out.find("Transient Delivery Attempts | Failure Time | Details | Recipient |\n"
                 "(no transient delivery attempts)\n") != std::string::npos);
}

TEST_CASE("hold and release act on one id or on every message of a destination",
          "[commands][tools]") {
  DownScenario f;
  const std::string a = f.refused[0].to_string();
  CHECK(f.ok(f.offline(), {"hold", a}) == "held " + a + "\n");
  CHECK(f.queue->find(f.refused[0])->held);
  CHECK(f.ok(f.offline(), {"hold", a}) == a + " is already held\n");
  CHECK(f.ok(f.offline(), {"show", a}).find("held: yes\n") != std::string::npos);
  CHECK(f.ok(f.offline(), {"show", a}).find("    next attempt: when released\n") !=
        std::string::npos);
  CHECK(f.ok(f.offline(), {"release", a}) == "released " + a + "\n");
  CHECK_FALSE(f.queue->find(f.refused[0])->held);
  CHECK(f.ok(f.offline(), {"release", a}) == a + " is already not held\n");

  CHECK(f.ok(f.offline(), {"hold", "Down.Example"}) == "held 4 messages for down.example\n");
  CHECK(f.queue->list(QueueFilter{"", Duration{0}, "", std::nullopt, true}).size() == 4);
  CHECK(f.ok(f.offline(), {"hold", "down.example"}) == "held 0 messages for down.example\n");
  CHECK(f.ok(f.offline(), {"release", "down.example"}) == "released 4 messages for down.example\n");
  CHECK(f.ok(f.offline(), {"release", "nowhere.example"}) ==
        "released 0 messages for nowhere.example\n");

  CHECK(f.fails(f.offline(), {"hold", "01J9ZK3D2ZP7F"}) == "no message 01J9ZK3D2ZP7F");
  CHECK(f.fails(f.offline(), {"hold"}) == "usage: hold ID|DESTINATION");
  CHECK(f.fails(f.offline(), {"release", "a", "b"}) == "usage: release ID|DESTINATION");
}

TEST_CASE("delete removes without notice, bounce returns the message to its sender",
          "[commands][tools]") {
  DownScenario f;
  MessageId nul = f.send("<>", {"x@quiet.example"});
  const std::string a = f.refused[0].to_string();
  const std::string b = f.held_back.to_string();

  CHECK(f.ok(f.offline(), {"delete", a}) == "deleted " + a + " (1 recipient not notified)\n");
  CHECK(f.queue->find(f.refused[0]) == std::nullopt);
  CHECK(f.fails(f.offline(), {"delete", a}) == "no message " + a);

  std::size_t before = f.queue->size();
  CHECK(f.ok(f.offline(), {"bounce", b}) ==
        "bounced " + b + " (2 recipients), delivery status notification to alice@example.org\n");
  CHECK(f.queue->find(f.held_back) == std::nullopt);
  // The DSN is a new message to the sender, from <>.
  REQUIRE(f.queue->size() == before);
  auto ids = f.queue->list(QueueFilter{"example.org"});
  REQUIRE(ids.size() == 1);
  const auto dsn = f.queue->find(ids[0]);
  CHECK(dsn->reverse_path.empty());
  CHECK(dsn->recipients.at(0).address == "alice@example.org");

  CHECK(f.ok(f.offline(), {"bounce", nul.to_string()}) ==
        "bounced " + nul.to_string() + " (1 recipient), no notification (null sender)\n");

  CHECK(f.fails(f.offline(), {"delete", "down.example"}) ==
        "delete: 'down.example' is not a queue id (a 13-character id as `list` shows)");
  CHECK(f.fails(f.offline(), {"bounce"}) == "usage: bounce ID");
}

TEST_CASE("unknown verbs and empty requests are refused by name", "[commands][tools]") {
  Fixture f;
  CHECK(f.fails(f.offline(), {"frobnicate"}) == "unknown verb 'frobnicate' (try 'help')");
  CHECK(f.fails(f.offline(), {}) == "no verb given");
  CHECK(f.ok(f.offline(), {"help"}).find("  hold ID|DESTINATION\n") != std::string::npos);
}

TEST_CASE("flush and reset-domains need the relay, offline status shows the queue only",
          "[commands][tools]") {
  DownScenario f;
  CHECK(f.fails(f.offline(), {"flush"}) ==
        "flush needs a running mailq-relay (it acts on the relay's delivery state)");
  CHECK(f.fails(f.offline(), {"reset-domains"}) ==
        "reset-domains needs a running mailq-relay (it acts on the relay's delivery state)");
  CHECK(f.ok(f.offline(), {"status"}) ==
        "queue: 4 messages, 5 recipients pending, 0 held, 1 destination\n"
        "relay: not running (domain states and connections need a running mailq-relay)\n");
}

TEST_CASE("status shows down destinations with their down-until time, counters and extras",
          "[commands][tools][seed000]") {
  DownScenario f;
  f.clock.advance(4min);
  auto ctx = f.online();
  ctx.extra_status = [] { return std::string("listener: 0 sessions\n"); };
  CHECK(f.ok(ctx, {"status"}) ==
        "queue: 4 messages, 5 recipients pending, 0 held, 1 destination\n"
        "since start: 4 enqueued, 0 delivered, 5 deferred, 0 bounced, 0 expired\n"
        "connections: 0 open, 3 opened, 3 failed; 0 jobs in flight; 1 cycles, 0 transactions, "
        "0 DNS failures, 1 deferred while down\n"
        "domains: 1 down\n"
        "  down.example: down until Tuesday, Jan 03, 2023 03:05:55 PM UTC (10m left), 3 "
        "consecutive connection failures, last: TCP active open: Failed connect() Error: "
        "connection refused\n"
        "listener: 0 sessions\n");
}

TEST_CASE(
    "flush makes deferred messages due but leaves a down destination alone, "
    "reset-domains clears the marks",
    "[commands][tools][seed000]") {
  DownScenario f;
  f.clock.advance(4min);
  int connects = f.transport.connects;
  CHECK(f.ok(f.online(), {"flush"}) ==
        "flush: 3 messages made due\n"
        "  down.example is down until Tuesday, Jan 03, 2023 03:05:55 PM UTC (10m left): not "
        "retried before\n");
  f.clock.run_pending();
  CHECK(f.transport.connects == connects);  // seed 000: no retry while down

  CHECK(f.ok(f.online(), {"reset-domains"}) ==
        "reset-domains: 1 destination no longer down: down.example\n");
  f.clock.run_pending();
  CHECK_FALSE(f.deliverer->domains().is_down("down.example", f.clock.now()));
  CHECK(f.transport.connects > connects);  // tried again at once
  CHECK(f.ok(f.online(), {"reset-domains"}).rfind("reset-domains: ", 0) == 0);
}
