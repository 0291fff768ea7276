#include <catch2/catch.hpp>

#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <stdexcept>
#include <string>
#include <system_error>

#include "mailq/events.h"
#include "mailq/log.h"

using namespace mailq;

namespace {

// A UTC wall-clock time, independent of the machine's time zone.
TimePoint utc(int y, unsigned m, unsigned d, int hh, int mm, int ss, int ms) {
  // Howard Hinnant's days_from_civil.
  y -= m <= 2;
  const int era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  const long days = era * 146097L + static_cast<long>(doe) - 719468L;
  return TimePoint{std::chrono::seconds(days * 86400L + hh * 3600L + mm * 60L + ss) +
                   std::chrono::milliseconds(ms)};
}

constexpr LogFormat kUtc{true, true, true};

// The message of seed 002: adam@hosta.sesta.com to user@some.org, 3 blocks.
Event seed_event(EventKind kind, TimePoint t) {
  Event e;
  e.kind = kind;
  e.time = t;
  e.size = 2900;
  e.sender = "adam@hosta.sesta.com";
  e.original_recipient = "rfc822;user@some.org";
  e.recipient = "user@some.org";
  e.queue_file = "imta/queue/tcp_local/ZZ01IS3D2ZP7FQ9UN54R.00";
  e.message_id = "<01IRUD7SVA3Q9UN2D4@sesta.com>";
  return e;
}

}  // namespace

TEST_CASE("log: the E record of seed 002", "[log][seed002]") {
  Event e = seed_event(EventKind::enqueued, utc(1998, 1, 15, 10, 31, 5, 180));
  e.source_channel = "tcp_internal";
  e.dest_channel = "tcp_local";
  CHECK(format_log_record(e, kUtc) ==
        "15-Jan-1998 10:31:05.18 tcp_internal   tcp_local   E 3\n"
        " adam@hosta.sesta.com rfc822;user@some.org user@some.org\n"
        " imta/queue/tcp_local/ZZ01IS3D2ZP7FQ9UN54R.00\n"
        " <01IRUD7SVA3Q9UN2D4@sesta.com>\n");
}

TEST_CASE("log: the Q records of seed 002 (ZZ, ZY, ZX)", "[log][seed002]") {
  Event e = seed_event(EventKind::deferred, utc(1998, 1, 15, 10, 31, 10, 370));
  e.source_channel = "tcp_local";
  e.reply = Reply(421, "4.4.1", "[internal] no route to host");
  e.diagnostic = {"TCP active open: Failed connect()    Error: no route to host"};
  CHECK(format_log_record(e, kUtc) ==
        "15-Jan-1998 10:31:10.37 tcp_local                  Q 3\n"
        " adam@hosta.sesta.com rfc822;user@some.org user@some.org\n"
        " imta/queue/tcp_local/ZZ01IS3D2ZP7FQ9UN54R.00\n"
        " <01IRUD7SVA3Q9UN2D4@sesta.com>\n"
        " TCP active open: Failed connect()    Error: no route to host\n");

  e.time = utc(1998, 1, 15, 12, 45, 39, 480);
  e.queue_file = "imta/queue/tcp_local/ZY01IS3D2ZP7FQ9UN54R.00";
  CHECK(format_log_record(e, kUtc) ==
        "15-Jan-1998 12:45:39.48 tcp_local                  Q 3\n"
        " adam@hosta.sesta.com rfc822;user@some.org user@some.org\n"
        " imta/queue/tcp_local/ZY01IS3D2ZP7FQ9UN54R.00\n"
        " <01IRUD7SVA3Q9UN2D4@sesta.com>\n"
        " TCP active open: Failed connect()    Error: no route to host\n");

  e.time = utc(1998, 1, 15, 16, 45, 24, 720);
  e.queue_file = "imta/queue/tcp_local/ZX01IS67NY4RRK9UN7GP.00";
  e.diagnostic = {"TCP active open: Failed connect() Error: connection refused"};
  CHECK(format_log_record(e, kUtc) ==
        "15-Jan-1998 16:45:24.72 tcp_local                  Q 3\n"
        " adam@hosta.sesta.com rfc822;user@some.org user@some.org\n"
        " imta/queue/tcp_local/ZX01IS67NY4RRK9UN7GP.00\n"
        " <01IRUD7SVA3Q9UN2D4@sesta.com>\n"
        " TCP active open: Failed connect() Error: connection refused\n");
}

TEST_CASE("log: the D record of seed 002", "[log][seed002]") {
  Event e = seed_event(EventKind::delivered, utc(1998, 1, 15, 20, 45, 51, 550));
  e.source_channel = "tcp_local";
  e.queue_file = "imta/queue/tcp_local/ZX01IS67NY4RRK9UN7GP.00";
  e.reply = Reply(250, "", "Ok");
  e.diagnostic = {"dns;host.some.org (TCP|206.184.139.12|2788|192.1.1.1|25)",
                  "(All set, fire away)", "smtp; 250 Ok"};
  CHECK(format_log_record(e, kUtc) ==
        "15-Jan-1998 20:45:51.55 tcp_local                  D 3\n"
        " adam@hosta.sesta.com rfc822;user@some.org user@some.org\n"
        " imta/queue/tcp_local/ZX01IS67NY4RRK9UN7GP.00\n"
        " <01IRUD7SVA3Q9UN2D4@sesta.com>\n"
        " dns;host.some.org (TCP|206.184.139.12|2788|192.1.1.1|25)\n"
        " (All set, fire away)\n"
        " smtp; 250 Ok\n");
}

TEST_CASE("log: an R record without diagnostic lines shows the reply", "[log]") {
  Event e = seed_event(EventKind::returned, utc(1998, 1, 20, 10, 31, 5, 0));
  e.source_channel = "tcp_local";
  e.reply = Reply(550, "5.4.7", "[internal] message expired in the queue");
  CHECK(format_log_record(e, kUtc) ==
        "20-Jan-1998 10:31:05.00 tcp_local                  R 3\n"
        " adam@hosta.sesta.com rfc822;user@some.org user@some.org\n"
        " imta/queue/tcp_local/ZZ01IS3D2ZP7FQ9UN54R.00\n"
        " <01IRUD7SVA3Q9UN2D4@sesta.com>\n"
        " 550 5.4.7 [internal] message expired in the queue\n");
}

TEST_CASE("log: Q and R records of DNS outcomes carry the reply after what explains it", "[log]") {
  Event q = seed_event(EventKind::deferred, utc(1998, 1, 20, 10, 31, 5, 0));
  q.source_channel = "tcp_local";
  q.reply = Reply(421, "4.4.4", "[internal] domain does not resolve");
  q.diagnostic = {"dns; nx.test: NXDOMAIN"};
  CHECK(format_log_record(q, kUtc) ==
        "20-Jan-1998 10:31:05.00 tcp_local                  Q 3\n"
        " adam@hosta.sesta.com rfc822;user@some.org user@some.org\n"
        " imta/queue/tcp_local/ZZ01IS3D2ZP7FQ9UN54R.00\n"
        " <01IRUD7SVA3Q9UN2D4@sesta.com>\n"
        " dns; nx.test: NXDOMAIN\n"
        " 421 4.4.4 [internal] domain does not resolve\n");
  Event r = q;
  r.kind = EventKind::returned;
  r.reply = Reply(556, "5.1.10", "[internal] recipient domain has a null MX");
  r.diagnostic = {"dns; null.test has a null MX"};
  const std::string text = format_log_record(r, kUtc);
  CHECK(text.find(" dns; null.test has a null MX\n 556 5.1.10 [internal] recipient domain has "
                  "a null MX\n") != std::string::npos);
  // A line that carries the reply already (a session's) is not followed by it again.
  Event s = q;
  s.reply = Reply(421, "4.4.1", "[internal] TCP active open: Failed connect() Error: refused");
  s.diagnostic = {"dns;mx.test (TCP|127.0.0.1|40000|127.0.0.2|25) " + s.reply.to_string()};
  const std::string once = format_log_record(s, kUtc);
  CHECK(once.find(s.reply.to_string()) == once.rfind(s.reply.to_string()));
}

TEST_CASE("log: columns, blocks, hundredths and the null sender", "[log]") {
  Event e;
  e.kind = EventKind::enqueued;
  e.time = utc(2023, 1, 3, 14, 48, 55, 999);  // hundredths truncated, not rounded
  e.source_channel = "a_very_long_source_channel";
  e.dest_channel = "default-non-local-route";
  e.size = 0;
  e.sender = "";
  e.recipient = "user@example.com";
  CHECK(format_log_record(e, kUtc) ==
        "03-Jan-2023 14:48:55.99 a_very_long_source_channel default-non-local-route E 1\n"
        " <> rfc822;user@example.com user@example.com\n");

  e.source_channel = "api";
  e.dest_channel = "";
  e.size = 1024;
  CHECK(format_log_record(e, kUtc).rfind("03-Jan-2023 14:48:55.99 api                        E 1\n",
                                         0) == 0);
  e.size = 1025;
  CHECK(format_log_record(e, kUtc).rfind("03-Jan-2023 14:48:55.99 api                        E 2\n",
                                         0) == 0);
  e.size = 10ull * 1024 * 1024 * 1024;
  CHECK(format_log_record(e, kUtc).find(" E 10485760\n") != std::string::npos);

  // A bare ORCPT address gets its type; an ORCPT of another type is kept.
  e.original_recipient = "User@Example.COM";
  CHECK(format_log_record(e, kUtc).find("\n <> rfc822;User@Example.COM user@example.com\n") !=
        std::string::npos);
  e.original_recipient = "x400;c=us;a=;p=x;s=user";
  CHECK(format_log_record(e, kUtc).find("\n <> x400;c=us;a=;p=x;s=user user@example.com\n") !=
        std::string::npos);
}

TEST_CASE("log: LOG_FILENAME=0 and LOG_MESSAGE_ID=0 drop their lines", "[log]") {
  Event e = seed_event(EventKind::deferred, utc(1998, 1, 15, 10, 31, 10, 370));
  e.source_channel = "tcp_local";
  e.diagnostic = {"x"};
  LogFormat f{false, false, true};
  CHECK(format_log_record(e, f) ==
        "15-Jan-1998 10:31:10.37 tcp_local                  Q 3\n"
        " adam@hosta.sesta.com rfc822;user@some.org user@some.org\n"
        " x\n");
  f = LogFormat{true, false, true};
  CHECK(format_log_record(e, f) ==
        "15-Jan-1998 10:31:10.37 tcp_local                  Q 3\n"
        " adam@hosta.sesta.com rfc822;user@some.org user@some.org\n"
        " imta/queue/tcp_local/ZZ01IS3D2ZP7FQ9UN54R.00\n"
        " x\n");
}

TEST_CASE("log: no value can forge a record (line breaks and controls)", "[log][security]") {
  Event e = seed_event(EventKind::deferred, utc(1998, 1, 15, 10, 31, 10, 370));
  e.source_channel = "tcp_local\n15-Jan-1998";
  e.recipient = "user@some.org\r\n15-Jan-1998 10:00:00.00 x y D 1";
  e.diagnostic = {"550-first line\r\n550 second line\n\n15-Jan-1998 fake", "bell\a"};
  const std::string rec = format_log_record(e, kUtc);
  CHECK(rec ==
        "15-Jan-1998 10:31:10.37 tcp_local?15-Jan-1998             Q 3\n"
        " adam@hosta.sesta.com rfc822;user@some.org "
        "user@some.org??15-Jan-1998 10:00:00.00 x y D 1\n"
        " imta/queue/tcp_local/ZZ01IS3D2ZP7FQ9UN54R.00\n"
        " <01IRUD7SVA3Q9UN2D4@sesta.com>\n"
        " 550-first line\n"
        " 550 second line\n"
        " 15-Jan-1998 fake\n"
        " bell?\n");
  // Every line but the first is a continuation line.
  std::size_t pos = rec.find('\n');
  while (pos + 1 < rec.size()) {
    CHECK(rec[pos + 1] == ' ');
    pos = rec.find('\n', pos + 1);
  }
}

TEST_CASE("log: engine notices are one line", "[log]") {
  Event e;
  e.time = utc(2023, 1, 3, 14, 48, 55, 0);
  e.kind = EventKind::destination_down;
  e.source_channel = "default-non-local-route";
  e.destination = "example.com";
  e.reply =
      Reply(421, "4.4.1", "[internal] TCP active open: Failed connect() Error: connection refused");
  CHECK(format_log_record(e, kUtc) ==
        "03-Jan-2023 14:48:55.00 default-non-local-route destination down: example.com: 421 "
        "4.4.1 [internal] TCP active open: Failed connect() Error: connection refused\n");

  e.kind = EventKind::destination_up;
  e.reply = Reply();
  e.source_channel = "tcp_local";
  CHECK(format_log_record(e, kUtc) ==
        "03-Jan-2023 14:48:55.00 tcp_local      destination up: example.com\n");

  Event n;
  n.time = e.time;
  n.kind = EventKind::notice;
  n.diagnostic = {"storage: could not read\nthe record", "retrying"};
  CHECK(format_log_record(n, kUtc) ==
        "03-Jan-2023 14:48:55.00 mailq          notice: storage: could not read?the record; "
        "retrying\n");
}

TEST_CASE("log: local time unless UTC is asked for", "[log]") {
  const char* old = std::getenv("TZ");
  const std::string saved = old ? old : "";
  setenv("TZ", "EST5", 1);
  tzset();
  Event e = seed_event(EventKind::enqueued, utc(1998, 1, 15, 10, 31, 5, 180));
  e.source_channel = "tcp_internal";
  e.dest_channel = "tcp_local";
  const std::string local = format_log_record(e, LogFormat{});
  const std::string in_utc = format_log_record(e, kUtc);
  if (old) {
    setenv("TZ", saved.c_str(), 1);
  } else {
    unsetenv("TZ");
  }
  tzset();
  CHECK(local.rfind("15-Jan-1998 05:31:05.18 tcp_internal", 0) == 0);
  CHECK(in_utc.rfind("15-Jan-1998 10:31:05.18 tcp_internal", 0) == 0);
}

TEST_CASE("MessagingServerLog writes whole records to a callback or a FILE*", "[log]") {
  Event e = seed_event(EventKind::enqueued, utc(1998, 1, 15, 10, 31, 5, 180));
  e.source_channel = "tcp_internal";
  e.dest_channel = "tcp_local";
  const std::string expected = format_log_record(e, kUtc);

  std::vector<std::string> writes;
  MessagingServerLog cb([&](const std::string& s) { writes.push_back(s); }, kUtc);
  cb.on_event(e);
  cb.on_event(e);
  REQUIRE(writes.size() == 2);
  CHECK(writes[0] == expected);

  std::FILE* f = std::tmpfile();
  REQUIRE(f != nullptr);
  MessagingServerLog file(f, kUtc);
  file.on_event(e);
  file.on_event(e);
  std::rewind(f);
  std::string content(4096, '\0');
  content.resize(std::fread(content.data(), 1, content.size(), f));
  std::fclose(f);
  CHECK(content == expected + expected);
}

TEST_CASE("MessagingServerLog reports a failed write by throwing to the engine", "[log]") {
  std::FILE* full = std::fopen("/dev/full", "w");
  if (full == nullptr) return;  // not on this system
  MessagingServerLog log(full, kUtc);
  Event e = seed_event(EventKind::enqueued, utc(1998, 1, 15, 10, 31, 5, 180));
  CHECK_THROWS_AS(log.on_event(e), std::system_error);
  std::fclose(full);
}

namespace {
struct ThrowingSink final : EventSink {
  void on_event(const Event&) override { throw std::runtime_error("sink failed"); }
};
}  // namespace

TEST_CASE(
    "FanoutSink: a throwing sink does not stop the others, and its failure reaches the engine's "
    "error reporter",
    "[log][events]") {
  ThrowingSink bad;
  MemorySink first;
  MemorySink second;
  FanoutSink fan;
  fan.add(first);
  fan.add(bad);
  fan.add(second);
  Event e;
  e.kind = EventKind::notice;
  CHECK_THROWS_WITH(fan.on_event(e), "sink failed");
  CHECK(first.events.size() == 1);
  CHECK(second.events.size() == 1);

  std::vector<std::string> reports;
  ErrorReporter reporter([&](const std::string& m) { reports.push_back(m); });
  reporter.deliver(&fan, e, TimePoint{});
  CHECK(reports == std::vector<std::string>{"mailq: the event sink threw: sink failed"});
  CHECK(first.events.size() == 2);
  CHECK(second.events.size() == 2);
}
