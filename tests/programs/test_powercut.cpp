// mailq-relay over SMTP ingest on the power-cut file system: Python's smtplib submits numbered
// messages through the listener without pause; at a random moment the relay is SIGKILLed and
// the power cut (everything not made durable is dropped); the relay starts again on what is
// left. A last run delivers the backlog to smtp-sink. Every message that got its 250 must
// arrive whole at least once; duplicates and messages durable but never acknowledged are
// reported. Both spool layouts; a few rounds each, MAILQ_LONG_TESTS=1 runs 50.
#include <catch2/catch.hpp>

#include <signal.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "examples/relay/control.h"
#include "support/daemon.h"
#include "support/powercut.h"
#include "support/servers.h"

#ifdef MAILQ_RELAY_BIN

using namespace mailq;
using namespace mailq::test;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

// Submits message after message, numbered from argv[2]; "ACK n" once the 250 came back.
const char* kClient = R"(import smtplib, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
while True:
    try:
        s = smtplib.SMTP('127.0.0.1', port, local_hostname='cut.mailq.test', timeout=5)
        while True:
            body = ('From: a@mailq.test\r\nTo: b@example.net\r\nSubject: cut %d\r\n'
                    'X-Crash-Seq: %d\r\n\r\nmessage %d\r\nX-Crash-End: %d\r\n' % (n, n, n, n))
            s.sendmail('a@mailq.test', ['b@example.net'], body.encode())
            print('ACK %d' % n, flush=True)
            n += 1
    except Exception:
        n += 1  # the one in flight may have been taken or not: never reused
        time.sleep(0.02)
)";

void run_ingest_powercut(const std::string& layout) {
  const char* long_tests = std::getenv("MAILQ_LONG_TESTS");
  const int rounds = (long_tests && std::string(long_tests) == "1") ? 50 : 4;
  PowerCutMount power;
  TempDir dir;
  SmtpSink sink;
  std::string error;
  REQUIRE(sink.start(&error));
  const std::uint16_t listen_port = free_tcp_port();
  const std::uint16_t closed_port = free_tcp_port();  // nothing listens: mail stays queued
  const std::string control = dir.file("control.sock");
  const std::string log = dir.file("mail.log");
  auto config = [&](std::uint16_t to) {
    return "spool = \"" + power.path() + "/spool\"\nspool_layout = \"" + layout + "\"\nlog = \"" +
           log + "\"\ncontrol = \"" + control +
           "\"\nhelo = \"relay.mailq.test\"\nlisten = \"127.0.0.1:" + std::to_string(listen_port) +
           "\"\n\n[delivery]\nidle_timeout = \"200ms\"\n"
           "\n[domain_state]\nfailure_threshold = 1000\ndown_interval = \"1s\"\n"
           "\n[[route]]\nname = \"tcp_sink\"\ndefault = true\ntls = \"none\"\nhosts = "
           "[\"127.0.0.1:" +
           std::to_string(to) + "\"]\ntimeouts = { connect = \"2s\" }\n";
  };
  write_file(dir.file("relay.toml"), config(closed_port));

  std::random_device rd;
  const unsigned seed = rd();
  INFO(layout << " spool, random seed " << seed);
  std::mt19937 rng(seed);
  std::map<long long, int> acked;  // message -> round of its 250
  long long next = 1;
  for (int round = 1; round <= rounds; ++round) {
    Daemon relay;
    REQUIRE(relay.start({MAILQ_RELAY_BIN, "--config", dir.file("relay.toml")},
                        dir.file("relay.out"), &error));
    REQUIRE(wait_for_listener("127.0.0.1", listen_port, 20s));
    const std::string acks = dir.file("acks." + std::to_string(round));
    {
      ChildProcess client;
      REQUIRE(client.start(
          {"python3", "-c", kClient, std::to_string(listen_port), std::to_string(next)}, acks,
          &error));
      std::this_thread::sleep_for(
          std::chrono::milliseconds(std::uniform_int_distribution<int>(300, 1200)(rng)));
      REQUIRE(relay.signal(SIGKILL));
      CHECK(relay.wait(30s) == 128 + SIGKILL);
      power.cut();
      client.stop();
    }
    const std::string out = read_file(acks);
    std::size_t at = 0;
    for (std::size_t nl; (nl = out.find('\n', at)) != std::string::npos; at = nl + 1) {
      const std::string line = out.substr(at, nl - at);
      if (line.rfind("ACK ", 0) != 0) continue;
      const long long n = std::stoll(line.substr(4));
      acked[n] = round;
      next = std::max(next, n + 1);
    }
    next += 1000;  // the client's numbers after its last ACK were never acknowledged
  }
  REQUIRE(!acked.empty());

  // The last run: the sink is there; everything queued goes out.
  write_file(dir.file("relay.toml"), config(sink.port()));
  Daemon relay;
  REQUIRE(relay.start({MAILQ_RELAY_BIN, "--config", dir.file("relay.toml")}, dir.file("relay.out"),
                      &error));
  const auto deadline = std::chrono::steady_clock::now() + 90s;
  std::map<long long, int> delivered;
  std::size_t partial = 0;
  // What the sink holds: whole messages by number, and dumps without their end line.
  auto count_dumps = [&] {
    delivered.clear();
    partial = 0;
    for (const auto& d : sink.wait_for_dumps(0, 0ms)) {
      const long long seq = header_number(d, "X-Crash-Seq");
      if (seq >= 0 && header_number(d, "X-Crash-End") == seq) {
        ++delivered[seq];
      } else {
        ++partial;
      }
    }
  };
  for (;;) {
    (void)relay::control_call(control, {{"flush"}, {}}, Duration(5s));
    count_dumps();
    bool all = true;
    for (const auto& [n, round] : acked) all = all && delivered.count(n) > 0;
    if (all || std::chrono::steady_clock::now() >= deadline) break;
    std::this_thread::sleep_for(500ms);
  }
  // Stopped (its transactions under way finish first), then counted again: a dump read while
  // smtp-sink was still writing it is not a partial delivery.
  REQUIRE(relay.signal(SIGTERM));
  CHECK(relay.wait(30s) == 0);
  count_dumps();

  std::string missing;
  for (const auto& [n, round] : acked)
    if (!delivered.count(n))
      missing += " " + std::to_string(n) + "(round " + std::to_string(round) + ")";
  std::size_t duplicates = 0, unacked = 0;
  for (const auto& [n, count] : delivered) {
    duplicates += static_cast<std::size_t>(count - 1);
    if (!acked.count(n)) ++unacked;
  }
  // What each start-up recovered, as the log says it.
  const std::string log_text = read_file(log);
  std::size_t recovered = 0, starts = 0;
  // "started: spool DIR (LAYOUT), N messages recovered in S s, ..." ("1 message recovered")
  for (std::size_t p = 0; (p = log_text.find("notice: started: spool ", p)) != std::string::npos;
       ++p) {
    const std::size_t comma = log_text.find(", ", p);
    recovered += std::stoull(log_text.substr(comma + 2));
    ++starts;
  }
  WARN("relay over SMTP ingest, " << layout << " spool, power cuts (" << power.stats()
                                  << "): " << rounds << " cuts, " << acked.size()
                                  << " acknowledged (250), " << delivered.size()
                                  << " distinct delivered, " << duplicates << " duplicates, "
                                  << unacked << " delivered without a 250, " << recovered
                                  << " messages recovered over " << starts << " start-ups");
  INFO("lost:" << missing);
  CHECK(missing.empty());
  CHECK(partial == 0);
  CHECK(recovered > 0);
  INFO(log_text);
  CHECK(log_text.find("quarantine") == std::string::npos);
}

}  // namespace

TEST_CASE(
    "mailq-relay on the file spool loses no acknowledged message over power cuts during SMTP "
    "ingest",
    "[relay][crash][powercut]") {
  run_ingest_powercut("files");
}

TEST_CASE(
    "mailq-relay on the segment spool loses no acknowledged message over power cuts during SMTP "
    "ingest",
    "[relay][crash][powercut][segments]") {
  run_ingest_powercut("segments");
}

#endif  // MAILQ_RELAY_BIN
