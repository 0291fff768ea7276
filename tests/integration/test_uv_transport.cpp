// mailq::uv::UvTransport (plaintext TCP) and mailq::uv::LoopClock on a real libuv loop,
// against servers on 127.0.0.1 / ::1: Postfix's smtp-sink, in-loop test servers, and a
// listener whose full accept queue makes connects time out.
//
// Every test ends with TestLoop::close(): uv_loop_close must succeed, so no handle leaks.

#include <catch2/catch.hpp>

#include <memory>
#include <string>
#include <vector>

#include "mailq/smtp_client.h"
#include "mailq/uv/loop_clock.h"
#include "mailq/uv/transport.h"
#include "support/loop_checks.h"
#include "support/loop_server.h"
#include "support/servers.h"
#include "support/smtp_drivers.h"
#include "support/test_loop.h"

using namespace std::chrono_literals;
using mailq::ConnectOptions;
using mailq::Endpoint;
using mailq::test::RecordingHandler;
using mailq::test::require_clean_close;
using mailq::test::TestLoop;
using mailq::uv::LoopClock;
using mailq::uv::UvTransport;

namespace {

// A body with the cases that must survive the trip: a leading dot, an empty line, a long
// line, 8-bit text, and a last line without a line ending.
const std::string kBody =
    "From: Adam <adam@hosta.sesta.com>\r\n"
    "To: user@some.org\r\n"
    "Subject: mailq transport test\r\n"
    "Message-ID: <01IRUD7SVA3Q9UN2D4@sesta.com>\r\n"
    "\r\n"
    ".a line starting with a dot\r\n"
    "\r\n"
    "..two dots\r\n" +
    std::string(900, 'x') +
    "\r\n"
    "caf\xc3\xa9\r\n"
    "last line";

// The same body as smtp-sink writes it into its dump: LF line endings, dots unstuffed, the
// missing final line ending added, an empty line after the message.
std::string as_sink_dump(const std::string& body) {
  std::string out;
  for (std::size_t i = 0; i < body.size(); ++i) {
    if (body[i] == '\r' && i + 1 < body.size() && body[i + 1] == '\n') continue;
    out += body[i];
  }
  if (out.back() != '\n') out += '\n';
  return out + "\n";
}

std::string strip_received_header(const std::string& dump) {
  // Everything up to and including the three-line Received header smtp-sink adds.
  const auto at = dump.find("Received: from ");
  if (at == std::string::npos) return dump;
  auto end = at;
  for (int lines = 0; lines < 3 && end != std::string::npos; ++lines) {
    end = dump.find('\n', end);
    if (end != std::string::npos) ++end;
  }
  return dump.substr(0, at) + "|" + dump.substr(end == std::string::npos ? dump.size() : end);
}

}  // namespace

// --- connect failures ----------------------------------------------------------------------

TEST_CASE("connect to a closed port reports connection refused with the seed diagnostic",
          "[uv][transport][connect]") {
  TestLoop loop;
  {
    LoopClock clock(loop.get());
    UvTransport transport(loop.get(), clock);
    RecordingHandler h;
    const std::uint16_t port = mailq::test::free_tcp_port();  // nothing listens there
    REQUIRE(port != 0);
    h.connection = transport.connect({"127.0.0.1", port}, {}, h);
    CHECK(h.events.empty());  // never from inside connect()
    REQUIRE(loop.run_until([&] { return !h.events.empty(); }));
    CHECK(h.events == std::vector<std::string>{"connect: Connection refused"});
    CHECK(h.connect_error == std::errc::connection_refused);
    CHECK(mailq::connect_failure_text(h.connect_error) ==
          "TCP active open: Failed connect() Error: connection refused");
    CHECK(h.error_text == "connection refused");
    loop.run_for(50ms);
    CHECK(h.events.size() == 1);  // nothing follows a failed connect
  }
  require_clean_close(loop);
}

TEST_CASE("libuv errors map to the std::errc codes behind the seed texts", "[uv][transport]") {
  using mailq::connect_failure_text;
  using mailq::uv::error_from_uv;
  CHECK(error_from_uv(0) == std::error_code());
  CHECK(error_from_uv(UV_ECONNREFUSED) == std::errc::connection_refused);
  CHECK(error_from_uv(UV_EHOSTUNREACH) == std::errc::host_unreachable);
  CHECK(error_from_uv(UV_ENETUNREACH) == std::errc::network_unreachable);
  CHECK(error_from_uv(UV_ETIMEDOUT) == std::errc::timed_out);
  CHECK(error_from_uv(UV_ECONNRESET) == std::errc::connection_reset);
  CHECK(error_from_uv(UV_EADDRNOTAVAIL) == std::errc::address_not_available);
  CHECK(error_from_uv(UV_EHOSTUNREACH).category() == std::generic_category());
  // The texts of seed 002 ("no route to host" has no loopback way to happen for real).
  CHECK(connect_failure_text(error_from_uv(UV_EHOSTUNREACH)) ==
        "TCP active open: Failed connect() Error: no route to host");
  CHECK(connect_failure_text(error_from_uv(UV_ECONNREFUSED)) ==
        "TCP active open: Failed connect() Error: connection refused");
  CHECK(connect_failure_text(error_from_uv(UV_ETIMEDOUT)) ==
        "TCP active open: Failed connect() Error: connection timed out");
  CHECK(connect_failure_text(error_from_uv(UV_EHOSTDOWN)) ==
        "TCP active open: Failed connect() Error: host is down");
}

TEST_CASE("connect to a listener with a full accept queue times out", "[uv][transport][connect]") {
  // Linux drops SYNs for a listener whose accept queue is full, so the connect neither
  // succeeds nor fails: only the connect timeout ends it.
  mailq::test::BlackholeListener blackhole;
  std::string error;
  const bool started = blackhole.start(&error);
  INFO(error);
  REQUIRE(started);
  TestLoop loop;
  {
    LoopClock clock(loop.get());
    UvTransport transport(loop.get(), clock);
    RecordingHandler h;
    ConnectOptions options;
    options.connect_timeout = 200ms;
    h.connection = transport.connect(blackhole.endpoint(), options, h);
    REQUIRE(loop.run_until([&] { return !h.events.empty(); }));
    CHECK(h.events == std::vector<std::string>{"connect: Connection timed out"});
    CHECK(h.connect_error == std::errc::timed_out);
    CHECK(mailq::connect_failure_text(h.connect_error) ==
          "TCP active open: Failed connect() Error: connection timed out");
    CHECK(h.error_text == "connection timed out");
  }
  require_clean_close(loop);
}

TEST_CASE("destroying a connection while it connects closes it without a callback",
          "[uv][transport][lifetime]") {
  mailq::test::BlackholeListener blackhole;
  std::string error;
  const bool started = blackhole.start(&error);
  INFO(error);
  REQUIRE(started);
  TestLoop loop;
  {
    LoopClock clock(loop.get());
    UvTransport transport(loop.get(), clock);
    RecordingHandler at_once, later;
    ConnectOptions options;
    options.connect_timeout = 100ms;
    at_once.connection = transport.connect(blackhole.endpoint(), options, at_once);
    at_once.connection.reset();  // before the loop ever ran
    later.connection = transport.connect(blackhole.endpoint(), options, later);
    loop.run_for(20ms);
    later.connection.reset();  // while the SYN is unanswered, before the timeout
    loop.run_for(200ms);       // past the timeout: it must not fire
    CHECK(at_once.events.empty());
    CHECK(later.events.empty());
  }
  require_clean_close(loop);
}

TEST_CASE("an address that is not numeric fails from the loop, not from connect",
          "[uv][transport][connect]") {
  TestLoop loop;
  {
    LoopClock clock(loop.get());
    UvTransport transport(loop.get(), clock);
    RecordingHandler name, bad_source, family;
    name.connection = transport.connect({"mx.example.org", 25}, {}, name);
    ConnectOptions o1;
    o1.source_address = "not-an-address";
    bad_source.connection = transport.connect({"127.0.0.1", 9}, o1, bad_source);
    ConnectOptions o2;
    o2.source_address = "::1";
    family.connection = transport.connect({"127.0.0.1", 9}, o2, family);
    CHECK(name.events.empty());
    CHECK(bad_source.events.empty());
    CHECK(family.events.empty());
    REQUIRE(loop.run_until(
        [&] { return name.events.size() + bad_source.events.size() + family.events.size() == 3; }));
    CHECK(name.connect_error == std::errc::invalid_argument);
    CHECK(name.error_text == "\"mx.example.org\" is not a numeric IPv4 or IPv6 address");
    CHECK(bad_source.connect_error == std::errc::invalid_argument);
    CHECK(family.connect_error == std::errc::address_family_not_supported);
    CHECK(family.error_text == "source address ::1 is not of the remote address's family");
  }
  require_clean_close(loop);
}

// --- established connections ---------------------------------------------------------------

TEST_CASE("a connection reports its endpoints, reads, and the peer's close", "[uv][transport]") {
  TestLoop loop;
  {
    mailq::test::LoopServer server(loop.get());
    REQUIRE(server.ok());
    server.on_accept = [](mailq::test::LoopServer::Peer& p) {
      p.write("220 hello\r\n");
      p.close();  // the client must still get every byte, then a clean close
    };
    LoopClock clock(loop.get());
    UvTransport transport(loop.get(), clock);
    RecordingHandler h;
    h.connection = transport.connect(server.endpoint(), {}, h);
    REQUIRE(loop.run_until([&] { return h.closed; }));
    CHECK(h.events == std::vector<std::string>{"connect: ok", "read: 220 hello\r\n", "close: ok"});
    CHECK(h.connection->remote_endpoint() == server.endpoint());
    CHECK(h.connection->local_endpoint().address == "127.0.0.1");
    REQUIRE(server.peers().size() == 1);
    CHECK(h.connection->local_endpoint().port == server.peers()[0]->remote.port);
    CHECK(h.error_text.empty());
  }
  require_clean_close(loop);
}

TEST_CASE("connections work over IPv6 loopback", "[uv][transport][ipv6]") {
  TestLoop loop;
  {
    mailq::test::LoopServer server(loop.get(), "::1");
    if (!server.ok()) {
      WARN("no IPv6 loopback on this machine: skipped");
      return;
    }
    server.on_data = [](mailq::test::LoopServer::Peer& p, std::string_view) {
      if (p.received == "ping\r\n") p.write("pong\r\n");
    };
    LoopClock clock(loop.get());
    UvTransport transport(loop.get(), clock);
    RecordingHandler h;
    h.after_connect = [&] { h.connection->write("ping\r\n"); };
    h.connection = transport.connect(server.endpoint(), {}, h);
    REQUIRE(loop.run_until([&] { return h.received == "pong\r\n"; }));
    CHECK(h.connection->remote_endpoint() == server.endpoint());
    CHECK(h.connection->local_endpoint().address == "::1");
    h.connection.reset();
  }
  require_clean_close(loop);
}

TEST_CASE("the source address is bound before connecting", "[uv][transport][connect]") {
  TestLoop loop;
  {
    mailq::test::LoopServer server(loop.get());
    REQUIRE(server.ok());
    LoopClock clock(loop.get());
    UvTransport transport(loop.get(), clock);
    RecordingHandler h;
    ConnectOptions options;
    options.source_address = "127.0.0.2";  // all of 127/8 is local on Linux
    h.connection = transport.connect(server.endpoint(), options, h);
    REQUIRE(loop.run_until([&] { return h.connected && server.peers().size() == 1; }));
    CHECK(h.connection->local_endpoint().address == "127.0.0.2");
    CHECK(server.peers()[0]->remote.address == "127.0.0.2");
    h.connection.reset();
  }
  require_clean_close(loop);
}

TEST_CASE("writes made before the connection is up are sent once it is", "[uv][transport][write]") {
  TestLoop loop;
  {
    mailq::test::LoopServer server(loop.get());
    REQUIRE(server.ok());
    LoopClock clock(loop.get());
    UvTransport transport(loop.get(), clock);
    RecordingHandler h;
    h.after_connect = [&] { h.connection->write("second\r\n"); };
    h.connection = transport.connect(server.endpoint(), {}, h);
    h.connection->write("first\r\n");
    CHECK_FALSE(h.connection->write_idle());
    REQUIRE(loop.run_until([&] {
      return server.peers().size() == 1 && server.peers()[0]->received == "first\r\nsecond\r\n";
    }));
    REQUIRE(loop.run_until([&] { return h.connection->write_idle(); }));
    h.connection.reset();
  }
  require_clean_close(loop);
}

TEST_CASE("a 1 MB write is delivered completely and in order", "[uv][transport][write]") {
  TestLoop loop;
  {
    mailq::test::LoopServer server(loop.get());
    REQUIRE(server.ok());
    std::string big(1024 * 1024, '\0');
    for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>('a' + (i * 7) % 26);
    LoopClock clock(loop.get());
    UvTransport transport(loop.get(), clock);
    RecordingHandler h;
    h.after_connect = [&] {
      h.connection->write(big.substr(0, 1000));
      h.connection->write(big.substr(1000));
    };
    h.connection = transport.connect(server.endpoint(), {}, h);
    REQUIRE(loop.run_until([&] {
      return server.peers().size() == 1 && server.peers()[0]->received.size() >= big.size();
    }));
    CHECK(server.peers()[0]->received == big);
    REQUIRE(loop.run_until([&] { return h.connection->write_idle(); }));
    h.connection.reset();
  }
  require_clean_close(loop);
}

TEST_CASE("a connection destroyed inside its own callbacks reports nothing more",
          "[uv][transport][lifetime]") {
  TestLoop loop;
  {
    mailq::test::LoopServer server(loop.get());
    REQUIRE(server.ok());
    server.on_accept = [](mailq::test::LoopServer::Peer& p) { p.write("220 one\r\n"); };
    server.on_data = [](mailq::test::LoopServer::Peer& p, std::string_view) {
      p.write("250 two\r\n");
      p.close();
    };
    LoopClock clock(loop.get());
    UvTransport transport(loop.get(), clock);

    SECTION("in on_connect") {
      RecordingHandler h;
      h.after_connect = [&] { h.connection.reset(); };
      h.connection = transport.connect(server.endpoint(), {}, h);
      REQUIRE(loop.run_until([&] { return server.peers().size() == 1; }));
      loop.run_for(50ms);
      CHECK(h.events == std::vector<std::string>{"connect: ok"});
      CHECK(h.connection == nullptr);
    }
    SECTION("in on_read, with a write queued") {
      RecordingHandler h;
      h.after_read = [&] {
        h.connection->write("QUIT\r\n");
        h.connection.reset();
      };
      h.connection = transport.connect(server.endpoint(), {}, h);
      REQUIRE(loop.run_until([&] { return h.connection == nullptr; }));
      loop.run_for(50ms);
      CHECK(h.events == std::vector<std::string>{"connect: ok", "read: 220 one\r\n"});
    }
    SECTION("in on_close") {
      RecordingHandler h;
      h.after_read = [&] {
        if (h.received == "220 one\r\n") h.connection->write("EHLO x\r\n");
      };
      h.after_close = [&] { h.connection.reset(); };
      h.connection = transport.connect(server.endpoint(), {}, h);
      REQUIRE(loop.run_until([&] { return h.closed; }));
      loop.run_for(50ms);
      CHECK(h.events == std::vector<std::string>{"connect: ok", "read: 220 one\r\n",
                                                 "read: 250 two\r\n", "close: ok"});
    }
    SECTION("in on_connect of a refused attempt") {
      RecordingHandler h;
      h.after_connect = [&] { h.connection.reset(); };
      h.connection = transport.connect({"127.0.0.1", mailq::test::free_tcp_port()}, {}, h);
      REQUIRE(loop.run_until([&] { return !h.events.empty(); }));
      loop.run_for(20ms);
      CHECK(h.events == std::vector<std::string>{"connect: Connection refused"});
    }
  }
  require_clean_close(loop);
}

TEST_CASE("a handler exception is reported and does not unwind through libuv",
          "[uv][transport][lifetime]") {
  TestLoop loop;
  {
    mailq::test::LoopServer server(loop.get());
    REQUIRE(server.ok());
    std::vector<std::string> reported;
    mailq::ErrorReporter reporter([&](const std::string& m) { reported.push_back(m); });
    mailq::uv::UvTransportOptions options;
    options.error_reporter = &reporter;
    LoopClock clock(loop.get());
    UvTransport transport(loop.get(), clock, options);
    RecordingHandler h;
    h.after_connect = [] { throw std::runtime_error("host bug"); };
    h.connection = transport.connect(server.endpoint(), {}, h);
    REQUIRE(loop.run_until([&] { return !reported.empty(); }));
    CHECK(reported ==
          std::vector<std::string>{"mailq UvTransport: connection handler threw: host bug"});
    h.connection.reset();
  }
  require_clean_close(loop);
}

TEST_CASE("the transport may be destroyed before its connections", "[uv][transport][lifetime]") {
  TestLoop loop;
  {
    mailq::test::LoopServer server(loop.get());
    REQUIRE(server.ok());
    server.on_data = [](mailq::test::LoopServer::Peer& p, std::string_view) { p.write("ok\r\n"); };
    LoopClock clock(loop.get());  // the connection's, too: it outlives the transport
    RecordingHandler h;
    {
      UvTransport transport(loop.get(), clock);
      h.connection = transport.connect(server.endpoint(), {}, h);
    }
    h.after_connect = [&] { h.connection->write("hi\r\n"); };
    REQUIRE(loop.run_until([&] { return h.received == "ok\r\n"; }));
    h.connection.reset();
  }
  require_clean_close(loop);
}

// --- smtp-sink -----------------------------------------------------------------------------

TEST_CASE("raw SMTP to smtp-sink: the message arrives byte for byte",
          "[uv][transport][smtp-sink]") {
  mailq::test::SmtpSink sink;
  std::string error;
  const bool started = sink.start(&error);
  INFO(error);
  REQUIRE(started);
  TestLoop loop;
  {
    LoopClock clock(loop.get());
    UvTransport transport(loop.get(), clock);
    mailq::test::SmtpScript script({
        {"", 220},
        {"EHLO client.mailq.test\r\n", 250},
        {"MAIL FROM:<adam@hosta.sesta.com>\r\n", 250},
        {"RCPT TO:<user@some.org>\r\n", 250},
        {"DATA\r\n", 354},
        {mailq::encode_data(kBody), 250},
        {"QUIT\r\n", 221},
    });
    script.start(transport, sink.endpoint());
    REQUIRE(loop.run_until([&] { return script.finished(); }));
    INFO(sink.output());
    REQUIRE(script.failure == "");
    CHECK(script.replies.front().rfind("220 ", 0) == 0);
  }
  require_clean_close(loop);
  const auto dumps = sink.wait_for_dumps(1);
  REQUIRE(dumps.size() == 1);
  CHECK(strip_received_header(dumps[0]) ==
        "X-Client-Addr: 127.0.0.1\n"
        "X-Client-Proto: ESMTP\n"
        "X-Helo-Args: client.mailq.test\n"
        "X-Mail-Args: <adam@hosta.sesta.com>\n"
        "X-Rcpt-Args: <user@some.org>\n"
        "|" +
            as_sink_dump(kBody));
}

TEST_CASE("SmtpClient over UvTransport and LoopClock delivers to smtp-sink",
          "[uv][transport][smtp-sink][smtp]") {
  mailq::test::SmtpSink sink;
  std::string error;
  const bool started = sink.start(&error);
  INFO(error);
  REQUIRE(started);
  TestLoop loop;
  {
    LoopClock clock(loop.get());
    UvTransport transport(loop.get(), clock);
    mailq::SmtpClientOptions options;
    options.helo_name = "client.mailq.test";
    options.tls = mailq::TlsPolicy::none;
    mailq::SmtpTransaction tx;
    tx.reverse_path = "adam@hosta.sesta.com";
    tx.recipients = {{"user@some.org"}, {"other@some.org"}};
    tx.body = std::make_shared<const std::string>(kBody);
    tx.eight_bit = true;  // "café": BODY=8BITMIME, which smtp-sink offers
    mailq::test::ClientSession session(clock, options, std::move(tx));
    session.start(transport, sink.endpoint());
    REQUIRE(loop.run_until([&] { return session.finished(); }));
    REQUIRE(session.done.has_value());
    REQUIRE(session.done->replies.size() == 2);
    CHECK(session.done->replies[0].code == 250);
    CHECK(session.done->replies[1].code == 250);
    CHECK(session.done->data_reply.code == 250);
    CHECK_FALSE(session.failed.has_value());
    CHECK(session.start_tls_calls == 0);
  }
  require_clean_close(loop);
  const auto dumps = sink.wait_for_dumps(1);
  REQUIRE(dumps.size() == 1);
  CHECK(strip_received_header(dumps[0]) ==
        "X-Client-Addr: 127.0.0.1\n"
        "X-Client-Proto: ESMTP\n"
        "X-Helo-Args: client.mailq.test\n"
        "X-Mail-Args: <adam@hosta.sesta.com> BODY=8BITMIME\n"
        "X-Rcpt-Args: <user@some.org>\n"
        "X-Rcpt-Args: <other@some.org>\n"
        "|" +
            as_sink_dump(kBody));
}

TEST_CASE("a 1 MB message reaches smtp-sink complete", "[uv][transport][smtp-sink][write]") {
  mailq::test::SmtpSink sink;
  std::string error;
  const bool started = sink.start(&error);
  INFO(error);
  REQUIRE(started);
  std::string body = "Subject: big\r\n\r\n";
  while (body.size() < 1024 * 1024) {
    body += "line " + std::to_string(body.size()) + " " + std::string(60, 'z') + "\r\n";
  }
  TestLoop loop;
  {
    LoopClock clock(loop.get());
    UvTransport transport(loop.get(), clock);
    mailq::test::SmtpScript script({
        {"", 220},
        {"EHLO client.mailq.test\r\n", 250},
        {"MAIL FROM:<a@hosta.sesta.com>\r\n", 250},
        {"RCPT TO:<user@some.org>\r\n", 250},
        {"DATA\r\n", 354},
        {mailq::encode_data(body), 250},
        {"QUIT\r\n", 221},
    });
    script.start(transport, sink.endpoint());
    REQUIRE(loop.run_until([&] { return script.finished(); }));
    REQUIRE(script.failure == "");
  }
  require_clean_close(loop);
  const auto dumps = sink.wait_for_dumps(1);
  REQUIRE(dumps.size() == 1);
  const auto at = dumps[0].find("Subject: big\n");
  REQUIRE(at != std::string::npos);
  CHECK(dumps[0].substr(at) == as_sink_dump(body));
}

TEST_CASE("an SMTP server that disconnects after MAIL ends the connection cleanly",
          "[uv][transport][smtp-sink]") {
  mailq::test::SmtpSink sink({"-q", "MAIL"});  // disconnect without a reply after MAIL
  std::string error;
  const bool started = sink.start(&error);
  INFO(error);
  REQUIRE(started);
  TestLoop loop;
  {
    LoopClock clock(loop.get());
    UvTransport transport(loop.get(), clock);
    RecordingHandler h;
    bool ehlo_sent = false, mail_sent = false;
    h.after_read = [&] {
      if (!ehlo_sent && h.received.find("220 ") != std::string::npos) {
        ehlo_sent = true;
        h.connection->write("EHLO client.mailq.test\r\n");
      } else if (!mail_sent && h.received.find("\r\n250 ") != std::string::npos) {
        mail_sent = true;
        h.connection->write("MAIL FROM:<a@b.example>\r\n");
      }
    };
    h.connection = transport.connect(sink.endpoint(), {}, h);
    REQUIRE(loop.run_until([&] { return h.closed; }));
    CHECK(h.events.back() == "close: ok");
    CHECK_FALSE(h.close_error);
    h.connection.reset();
  }
  require_clean_close(loop);
}

// --- LoopClock -----------------------------------------------------------------------------

TEST_CASE("LoopClock runs timers in deadline order, equal deadlines in scheduling order",
          "[uv][clock]") {
  TestLoop loop;
  {
    LoopClock clock(loop.get());
    std::vector<int> order;
    clock.schedule(30ms, [&] { order.push_back(4); });
    clock.schedule(0ms, [&] { order.push_back(1); });
    clock.schedule(10ms, [&] { order.push_back(2); });
    clock.schedule(10ms, [&] { order.push_back(3); });
    clock.schedule(-5ms, [&] { order.push_back(0); });  // a negative delay counts as zero
    CHECK(order.empty());                               // nothing runs inside schedule()
    CHECK(clock.pending() == 5);
    REQUIRE(loop.run_until([&] { return order.size() == 5; }));
    CHECK(order == std::vector<int>{1, 0, 2, 3, 4});
    CHECK(clock.pending() == 0);
  }
  require_clean_close(loop);
}

TEST_CASE("LoopClock cancel stops a timer, callbacks may schedule and cancel", "[uv][clock]") {
  TestLoop loop;
  {
    LoopClock clock(loop.get());
    std::vector<std::string> log;
    const auto a = clock.schedule(5ms, [&] { log.push_back("a"); });
    mailq::TimerId c = mailq::kNoTimer;
    clock.schedule(1ms, [&] {
      log.push_back("b");
      clock.cancel(c);  // cancels a later timer from inside a callback
      clock.schedule(0ms, [&] { log.push_back("posted"); });
    });
    c = clock.schedule(20ms, [&] { log.push_back("c"); });
    clock.cancel(a);
    clock.cancel(a);       // twice: no-op
    clock.cancel(999999);  // unknown: no-op
    REQUIRE(loop.run_until([&] { return clock.pending() == 0; }));
    loop.run_for(40ms);
    CHECK(log == std::vector<std::string>{"b", "posted"});
  }
  require_clean_close(loop);
}

TEST_CASE("LoopClock with nothing pending does not keep the loop alive", "[uv][clock]") {
  TestLoop loop;
  LoopClock clock(loop.get());
  bool ran = false;
  clock.schedule(1ms, [&] { ran = true; });
  uv_run(loop.get(), UV_RUN_DEFAULT);  // returns once the one timer ran
  CHECK(ran);
  CHECK(clock.now() > mailq::TimePoint{});
}

TEST_CASE("destroying a LoopClock drops its pending timers unrun", "[uv][clock][lifetime]") {
  TestLoop loop;
  {
    auto owned = std::make_shared<int>(1);
    bool ran = false;
    {
      LoopClock clock(loop.get());
      clock.schedule(0ms, [&ran, owned] { ran = true; });
      clock.schedule(10ms, [&ran, owned] { ran = true; });
    }
    CHECK(owned.use_count() == 1);  // the functions were destroyed with the clock
    loop.run_for(30ms);
    CHECK_FALSE(ran);
  }
  require_clean_close(loop);
}

TEST_CASE("a LoopClock may be destroyed from inside its own callback", "[uv][clock][lifetime]") {
  TestLoop loop;
  {
    auto clock = std::make_unique<LoopClock>(loop.get());
    int runs = 0;
    clock->schedule(1ms, [&] {
      ++runs;
      clock.reset();
    });
    clock->schedule(1ms, [&] { ++runs; });  // same deadline: would run next, must not
    REQUIRE(loop.run_until([&] { return clock == nullptr; }));
    loop.run_for(20ms);
    CHECK(runs == 1);
  }
  require_clean_close(loop);
}

TEST_CASE("a chain of zero-delay posts does not starve socket I/O", "[uv][clock]") {
  TestLoop loop;
  {
    mailq::test::LoopServer server(loop.get());
    REQUIRE(server.ok());
    LoopClock clock(loop.get());
    UvTransport transport(loop.get(), clock);
    RecordingHandler h;
    h.connection = transport.connect(server.endpoint(), {}, h);
    long posts = 0;
    std::function<void()> repost = [&] {
      ++posts;
      // Bounded so a starving implementation ends the test (and fails it) instead of hanging.
      if (!h.connected && posts < 1000000) clock.schedule(0ms, repost);
    };
    clock.schedule(0ms, repost);
    REQUIRE(loop.run_until([&] { return h.connected; }));
    CHECK(posts < 1000000);
    REQUIRE(loop.run_until([&] { return clock.pending() == 0; }));
    h.connection.reset();
  }
  require_clean_close(loop);
}

TEST_CASE("LoopClock reports a throwing callback and keeps running", "[uv][clock]") {
  TestLoop loop;
  {
    std::vector<std::string> reported;
    mailq::ErrorReporter reporter([&](const std::string& m) { reported.push_back(m); });
    LoopClock clock(loop.get(), &reporter);
    bool second = false;
    clock.schedule(0ms, [] { throw std::runtime_error("boom"); });
    clock.schedule(0ms, [&] { second = true; });
    REQUIRE(loop.run_until([&] { return second; }));
    CHECK(reported == std::vector<std::string>{"mailq LoopClock: timer callback threw: boom"});
  }
  require_clean_close(loop);
}
