// Real network faults for mailq-relay, made by the test in a network namespace of its own
// (unshare(CLONE_NEWNET): its own loopback, its own nftables rules, nothing else on the machine
// touched): an ICMP host-unreachable for seed 002's "no route to host" from a real connect(),
// a black-holed host (every packet dropped) in front of a working one, and a receiver whose
// connection is reset in the middle of DATA. `tc netem` (loss, latency) is not available on
// every kernel (not on the one this was written on) and is not used.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "examples/relay/control.h"
#include "support/daemon.h"
#include "support/servers.h"

#ifdef MAILQ_RELAY_BIN

using namespace mailq;
using namespace mailq::test;
using namespace std::chrono_literals;

namespace {

bool has(const std::string& s, std::string_view needle) {
  return s.find(needle) != std::string::npos;
}

std::size_t count_of(const std::string& s, std::string_view needle) {
  std::size_t n = 0;
  for (auto p = s.find(needle); p != std::string::npos; p = s.find(needle, p + 1)) ++n;
  return n;
}

bool wait_until(const std::function<bool()>& done, std::chrono::milliseconds limit = 30s) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(50ms);
  }
  return true;
}

// The test thread (and every process it starts) in a new network namespace with its loopback
// up, for the life of the object; the thread's own namespace again afterwards.
class NetNamespace {
 public:
  NetNamespace() {
    saved_ = ::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    REQUIRE(saved_ >= 0);
    if (::unshare(CLONE_NEWNET) != 0) {
      const int e = errno;
      ::close(saved_);
      FAIL("unshare(CLONE_NEWNET): " << std::strerror(e) << " (the test needs CAP_SYS_ADMIN)");
    }
    std::string out;
    if (run_program({"ip", "link", "set", "lo", "up"}, &out) != 0) {
      restore();
      FAIL("ip link set lo up: " << out);
    }
  }
  ~NetNamespace() { restore(); }
  NetNamespace(const NetNamespace&) = delete;
  NetNamespace& operator=(const NetNamespace&) = delete;

  // Loads nftables rules (`nft -f`).
  void nft(const std::string& rules) {
    write_file(dir_.file("rules.nft"), rules);
    std::string out;
    const int status = run_program({"nft", "-f", dir_.file("rules.nft")}, &out);
    INFO(out);
    REQUIRE(status == 0);
  }
  std::string ruleset() {
    std::string out;
    run_program({"nft", "list", "ruleset"}, &out);
    return out;
  }
  // The packets counted by the rule whose line holds `marker`.
  long packets(std::string_view marker) {
    const std::string rules = ruleset();
    const auto at = rules.find(marker);
    if (at == std::string::npos) return -1;
    const auto line = rules.rfind('\n', at);
    const auto p = rules.find("packets ", line == std::string::npos ? 0 : line);
    return p == std::string::npos || p > at ? -1 : std::stol(rules.substr(p + 8));
  }

 private:
  void restore() {
    if (saved_ < 0) return;
    ::setns(saved_, CLONE_NEWNET);
    ::close(saved_);
    saved_ = -1;
  }
  int saved_ = -1;
  TempDir dir_;
};

// A relay with one static route to `hosts`, and its control socket.
struct Relay {
  TempDir dir;
  Daemon daemon;
  std::string control = dir.file("control.sock");
  std::string log = dir.file("mail.log");

  explicit Relay(const std::string& hosts) {
    write_file(dir.file("relay.toml"),
               "spool = \"" + dir.file("spool") + "\"\nlog = \"" + log + "\"\ncontrol = \"" +
                   control +
                   "\"\nhelo = \"relay.mailq.test\"\n"
                   "\n[queue]\nretry = { min = \"10m\", max = \"1h\" }\n"
                   "\n[delivery]\nidle_timeout = \"200ms\"\n"
                   "\n[domain_state]\nfailure_threshold = 100\n"
                   "\n[[route]]\nname = \"tcp_out\"\ndefault = true\ntls = \"none\"\nhosts = " +
                   hosts + "\ntimeouts = { connect = \"2s\" }\n");
    std::string error;
    REQUIRE(daemon.start({MAILQ_RELAY_BIN, "--config", dir.file("relay.toml")},
                         dir.file("relay.out"), &error));
    INFO(error);
    REQUIRE(wait_until([&] {
      auto r = relay::control_call(control, {{"status"}, {}}, Duration(2s));
      return r && r->ok;
    }));
  }
  ~Relay() {
    daemon.signal(SIGTERM);
    daemon.wait(30s);
  }

  std::string submit(const std::string& to, const std::string& body) {
    auto r = relay::control_call(
        control, {{"submit", std::to_string(body.size()), "s@mailq.test", to}, body},
        Duration(10s));
    REQUIRE(r);
    INFO(r->error);
    REQUIRE(r->ok);
    return r->payload.substr(0, 13);
  }
  void command(const std::string& verb) {
    auto r = relay::control_call(control, {{verb}, {}}, Duration(10s));
    REQUIRE(r);
    REQUIRE(r->ok);
  }
  std::string log_text() const { return read_file(log); }
};

std::string message(const std::string& subject, std::size_t body_lines = 1) {
  std::string m = "From: s@mailq.test\r\nTo: r@example.net\r\nSubject: " + subject + "\r\n\r\n";
  for (std::size_t i = 0; i < body_lines; ++i) m += std::string(70, 'a') + "\r\n";
  return m;
}

}  // namespace

TEST_CASE(
    "Network faults: an ICMP host unreachable makes connect() fail, and the Q record says "
    "seed 002's words: TCP active open: Failed connect() Error: no route to host",
    "[relay][netfault]") {
  NetNamespace ns;
  ns.nft(
      "table inet faults {\n"
      "  chain out {\n"
      "    type filter hook output priority 0;\n"
      "    ip daddr 127.0.0.9 counter reject with icmp type host-unreachable comment \"unreach\"\n"
      "  }\n"
      "}\n");
  Relay relay("[\"127.0.0.9:25\"]");
  relay.submit("r@example.net", message("unreachable"));
  REQUIRE(wait_until([&] { return has(relay.log_text(), "Failed connect()"); }));
  const std::string log = relay.log_text();
  INFO(log);
  CHECK(has(log, " TCP active open: Failed connect() Error: no route to host\n"));
  CHECK(ns.packets("unreach") >= 1);  // a real SYN met the rule
}

TEST_CASE(
    "Network faults: a black-holed host before a working one costs one connect timeout, and later "
    "messages go to the working host without a new connect to the dead one",
    "[relay][netfault]") {
  NetNamespace ns;
  ns.nft(
      "table inet faults {\n"
      "  chain out {\n"
      "    type filter hook output priority 0;\n"
      "    ip daddr 127.0.0.8 counter drop comment \"blackhole\"\n"
      "  }\n"
      "}\n");
  SmtpSink sink;
  std::string error;
  REQUIRE(sink.start(&error));
  Relay relay("[\"127.0.0.8:25\", \"127.0.0.1:" + std::to_string(sink.port()) + "\"]");
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 3; ++i) relay.submit("r@example.net", message("first " + std::to_string(i)));
  REQUIRE(sink.wait_for_dumps(3, 30s).size() == 3);
  const auto first_batch = std::chrono::steady_clock::now() - start;
  const long syns = ns.packets("blackhole");
  CHECK(syns >= 1);
  std::string log = relay.log_text();
  INFO(log);
  // One timeout for the three messages, at the first host: then the second.
  CHECK(count_of(log,
                 "(127.0.0.8:25) failed: TCP active open: Failed connect() Error: "
                 "connection timed out; trying the next host") == 1);
  CHECK(first_batch >= 2s);

  // Later mail, once the connection to the sink has closed (idle_timeout 200 ms): no connect
  // to the black hole (its packet count stays), at once to the sink.
  std::this_thread::sleep_for(600ms);
  for (int i = 0; i < 3; ++i) relay.submit("r@example.net", message("second " + std::to_string(i)));
  REQUIRE(sink.wait_for_dumps(6, 30s).size() == 6);
  CHECK(ns.packets("blackhole") == syns);
  log = relay.log_text();
  INFO(log);
  CHECK(has(log, "(127.0.0.8:25) not tried: in its connection backoff for "));
  CHECK(count_of(log, "(127.0.0.8:25) failed: ") == 1);
}

TEST_CASE(
    "Network faults: a connection reset in the middle of DATA defers the message with what "
    "happened, and once the path is clear a flush delivers it whole",
    "[relay][netfault]") {
  NetNamespace ns;
  SmtpSink sink;
  std::string error;
  REQUIRE(sink.start(&error));
  // Commands are small; the body goes out in large segments: those are answered with a reset.
  ns.nft(
      "table inet faults {\n"
      "  chain out {\n"
      "    type filter hook output priority 0;\n"
      "    tcp dport " +
      std::to_string(sink.port()) +
      " meta length > 1000 counter reject with tcp reset comment \"reset\"\n"
      "  }\n"
      "}\n");
  Relay relay("[\"127.0.0.1:" + std::to_string(sink.port()) + "\"]");
  relay.submit("r@example.net", message("reset", 400));  // about 29 KB
  const bool deferred = wait_until([&] { return has(relay.log_text(), "connection lost"); });
  INFO(relay.log_text() << ns.ruleset());
  REQUIRE(deferred);
  std::string log = relay.log_text();
  INFO(log);
  CHECK(ns.packets("reset") >= 1);
  CHECK(has(log,
            "smtp; 421 4.4.2 [internal] connection lost waiting for reply to end of data: "
            "Connection reset by peer"));
  // What smtp-sink kept of the cut session (it dumps what it got) is not the whole message.
  auto whole = [&] {
    std::size_t n = 0;
    for (const auto& d : sink.wait_for_dumps(0, 0ms))
      if (has(d, "Subject: reset") && count_of(d, std::string(70, 'a')) == 400) ++n;
    return n;
  };
  CHECK(whole() == 0);

  ns.nft("flush ruleset\n");
  relay.command("flush");
  CHECK(wait_until([&] { return whole() == 1; }));
  CHECK(wait_until([&] { return has(relay.log_text(), " D 29\n"); }));
}

#endif  // MAILQ_RELAY_BIN
