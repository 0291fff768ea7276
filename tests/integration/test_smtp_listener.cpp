// SmtpListener over real sockets on 127.0.0.1 (and ::1): raw clients that misbehave on
// purpose, Python's smtplib and swaks, and a message received into a Queue over the spool.

#include <atomic>
#include <catch2/catch.hpp>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "mailq/queue.h"
#include "mailq/route.h"
#include "mailq/spool/file_spool.h"
#include "mailq/uv/loop_clock.h"
#include "mailq/uv/smtp_listener.h"
#include "mailq/uv/transport.h"
#include "support/loop_checks.h"
#include "support/powercut.h"
#include "support/raw_client.h"
#include "support/servers.h"
#include "support/test_loop.h"

using namespace mailq;
using namespace mailq::test;
using namespace std::chrono_literals;

namespace {

const std::string kGreeting = "220 mx.test ESMTP mailq\r\n";
const std::string kEhlo =
    "250-mx.test\r\n250-PIPELINING\r\n250-SIZE 100000\r\n250-8BITMIME\r\n"
    "250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250 DSN\r\n";
const std::string kEnvelope =
    "EHLO client.test\r\nMAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n";
const std::string kEnvelopeReplies =
    kEhlo + "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n";

uv::SmtpListenerOptions test_options() {
  uv::SmtpListenerOptions o;
  o.host = "127.0.0.1";
  o.port = 0;
  o.server.hostname = "mx.test";
  o.server.limits.max_message_size = 100000;
  o.idle_timeout = Duration(30s);
  return o;
}

// A listener on the test loop whose host answers each message at once (`sync`) or keeps its
// `done` for the test.
struct Fixture {
  TestLoop loop;
  std::vector<ReceivedMessage> messages;
  std::vector<std::function<void(Reply)>> pending;
  std::vector<std::string> events;
  bool sync = true;
  uv::SmtpListenerOptions options;
  SmtpServerSession::Callbacks callbacks;
  std::unique_ptr<uv::SmtpListener> listener;

  explicit Fixture(uv::SmtpListenerOptions o = test_options(), bool start = true)
      : options(std::move(o)) {
    options.on_session_event = [this](const std::string& client, const std::string& what) {
      events.push_back(client + " " + what);
    };
    callbacks.on_message = [this](ReceivedMessage m, std::function<void(Reply)> done) {
      messages.push_back(std::move(m));
      if (sync) {
        done(Reply(250, "2.0.0", "Ok: queued"));
      } else {
        pending.push_back(std::move(done));
      }
    };
    if (start) {
      const auto opened = open();
      INFO((opened ? std::string() : opened.error().message));
      REQUIRE(opened);
      REQUIRE(listener->port() != 0);
    }
  }

  // Opens the listener (the constructor does, unless told not to).
  Result<void> open() {
    auto opened = uv::SmtpListener::open(loop.get(), options, callbacks);
    if (!opened) return opened.error();
    listener = std::move(opened.value());
    return success();
  }

  std::uint16_t port() const { return listener->port(); }

  bool has_event(const std::string& e) const {
    return std::find(events.begin(), events.end(), e) != events.end();
  }
};

// Files under <spool>/queue (the acknowledged messages).
std::size_t spooled_files(const std::string& spool) {
  std::size_t n = 0;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(spool + "/queue", ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_regular_file()) ++n;
  }
  return n;
}

}  // namespace

TEST_CASE("SmtpListener answers 250 only once the message is durable in the spool",
          "[integration][smtp_listener][spool]") {
  TempDir dir;
  TestLoop loop;
  auto clock = std::make_unique<uv::LoopClock>(loop.get());
  auto spool = std::make_unique<spool::SpoolStorage>(dir.path(), *clock);
  REQUIRE_FALSE(spool->open_error().code);
  RouteTable routes;
  auto queue = std::make_unique<Queue>(*spool, routes, *clock);
  REQUIRE(queue->recover());

  uv::SmtpListenerOptions o = test_options();
  SmtpServerSession::Callbacks cb;
  std::vector<MessageId> ids;
  cb.on_message = [&](ReceivedMessage m, std::function<void(Reply)> done) {
    queue->enqueue(m.envelope, std::move(m.body), [&ids, done](Result<MessageId> r) {
      if (!r) {
        done(Reply(451, "4.3.0", "Error: " + r.error().message));
        return;
      }
      ids.push_back(r.value());
      done(Reply(250, "2.0.0", "Ok: queued as " + r.value().to_string()));
    });
  };
  auto opened = uv::SmtpListener::open(loop.get(), o, cb);
  REQUIRE(opened);
  auto listener = std::move(opened.value());

  std::string transcript, final_reply;
  std::size_t files_before = 99, files_at_250 = 0;
  const std::string body = "Subject: durable\r\n\r\nkept on disk\r\n..stuffed\r\n";
  const bool ok = run_beside_loop(loop, [&] {
    RawClient c;
    if (!c.connect("127.0.0.1", listener->port())) return;
    transcript = c.read_replies(1);
    c.send(kEnvelope);
    transcript += c.read_replies(4);
    files_before = spooled_files(dir.path());
    c.send(body + ".\r\n");
    final_reply = c.read_replies(1);
    files_at_250 = spooled_files(dir.path());  // the moment the client sees the 250
    c.send("QUIT\r\n");
    transcript += c.read_until_close();
  });
  REQUIRE(ok);
  CHECK(transcript == kGreeting + kEnvelopeReplies + "221 2.0.0 mx.test Bye\r\n");
  REQUIRE(ids.size() == 1);
  CHECK(final_reply == "250 2.0.0 Ok: queued as " + ids[0].to_string() + "\r\n");
  CHECK(files_before == 0);
  CHECK(files_at_250 == 1);
  auto stored = queue->read_body(ids[0]);
  REQUIRE(stored);
  CHECK(stored.value() == "Subject: durable\r\n\r\nkept on disk\r\n.stuffed\r\n");
  const auto record = queue->find(ids[0]);
  REQUIRE(record);
  REQUIRE(record->recipients.size() == 1);
  CHECK(record->recipients[0].address == "bob@example.net");
  CHECK(listener->stats().messages_received == 1);
  CHECK(listener->stats().messages_accepted == 1);

  listener.reset();
  queue.reset();
  spool.reset();
  clock.reset();
  require_clean_close(loop);
}

TEST_CASE("SmtpListener rejects a message with a bare LF, an over-long line or a NUL",
          "[integration][smtp_listener][smuggling]") {
  struct Case {
    const char* name;
    std::string data;
    std::string reply;
  };
  const std::vector<Case> cases = {
      {"bare LF before the dot", "Subject: x\r\n\r\nline\n.\r\nMAIL FROM:<evil@x.example>\r\n",
       "550 5.6.0 Message rejected: bare LF in line 3 (lines must end with CRLF)\r\n"},
      {"over-long line", "Subject: x\r\n\r\n" + std::string(2000, 'a') + "\r\n",
       "550 5.6.0 Message rejected: line 3 is longer than 998 octets\r\n"},
      {"NUL", std::string("Subject: x\r\n\r\nnul \0 here\r\n", 26),
       "550 5.6.0 Message rejected: NUL octet in line 3\r\n"},
  };
  Fixture f;
  for (const Case& k : cases) {
    INFO(k.name);
    std::string transcript;
    REQUIRE(run_beside_loop(f.loop, [&] {
      RawClient c;
      if (!c.connect("127.0.0.1", f.port())) return;
      transcript = c.read_replies(1);
      c.send(kEnvelope);
      transcript += c.read_replies(4);
      c.send(k.data + ".\r\n");
      transcript += c.read_replies(1);
      c.send("NOOP\r\nQUIT\r\n");
      transcript += c.read_until_close();
    }));
    CHECK(transcript ==
          kGreeting + kEnvelopeReplies + k.reply + "250 2.0.0 Ok\r\n221 2.0.0 mx.test Bye\r\n");
  }
  CHECK(f.messages.empty());
  f.listener.reset();
  require_clean_close(f.loop);
}

TEST_CASE("SmtpListener answers pipelined commands in order, two messages in one write",
          "[integration][smtp_listener][pipelining]") {
  Fixture f;
  std::string transcript;
  REQUIRE(run_beside_loop(f.loop, [&] {
    RawClient c;
    if (!c.connect("127.0.0.1", f.port())) return;
    c.send(kEnvelope + "one\r\n.\r\nMAIL FROM:<>\r\nRCPT TO:<carol@example.net>\r\n" +
           "RCPT TO:<bad@-x>\r\nDATA\r\ntwo\r\n.\r\nQUIT\r\n");
    transcript = c.read_until_close();
  }));
  CHECK(transcript == kGreeting + kEnvelopeReplies +
                          "250 2.0.0 Ok: queued\r\n"
                          "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
                          "501 5.1.3 Bad recipient address syntax: domain label starts with a "
                          "hyphen at offset 4\r\n"
                          "354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Ok: queued\r\n"
                          "221 2.0.0 mx.test Bye\r\n");
  REQUIRE(f.messages.size() == 2);
  CHECK(f.messages[0].body == "one\r\n");
  CHECK(f.messages[1].body == "two\r\n");
  CHECK_FALSE(f.messages[1].envelope.reverse_path);
  CHECK(f.messages[1].client_address == "127.0.0.1");
  CHECK(f.has_event("127.0.0.1 connect"));
  f.loop.run_until([&] { return f.listener->stats().sessions_open == 0; }, 10s);
  CHECK(f.has_event("127.0.0.1 close: QUIT"));
  f.listener.reset();
  require_clean_close(f.loop);
}

TEST_CASE("SmtpListener holds pipelined commands until the host's done, however late",
          "[integration][smtp_listener][pipelining]") {
  Fixture f;
  f.sync = false;
  std::string before, after;
  ClientThread client(f.loop, [&] {
    RawClient c;
    if (!c.connect("127.0.0.1", f.port())) return;
    c.send(kEnvelope + "x\r\n.\r\nNOOP\r\nQUIT\r\n");
    before = c.read_replies(5);
    after = c.read_until_close(20s);
  });
  REQUIRE(f.loop.run_until([&] { return f.pending.size() == 1; }, 20s));
  f.loop.run_for(200ms);  // nothing else is answered meanwhile (checked below)
  f.pending[0](Reply(250, "2.0.0", "Ok: late"));
  REQUIRE(client.wait());
  CHECK(before == kGreeting + kEnvelopeReplies);
  CHECK(after == "250 2.0.0 Ok: late\r\n250 2.0.0 Ok\r\n221 2.0.0 mx.test Bye\r\n");
  f.listener.reset();
  require_clean_close(f.loop);
}

TEST_CASE("SmtpListener: a done after the client vanished or the listener is gone is harmless",
          "[integration][smtp_listener]") {
  Fixture f;
  f.sync = false;
  REQUIRE(run_beside_loop(f.loop, [&] {
    RawClient c;
    if (!c.connect("127.0.0.1", f.port())) return;
    c.send(kEnvelope + "x\r\n.\r\n");
    c.read_replies(5);
    for (int i = 0; i < 2; ++i) {
      c.send("MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\ny\r\n.\r\n");
    }
    c.close();  // gone without waiting for any reply
  }));
  // Each done runs after the client is gone; messages it had pipelined may still reach the
  // host (they were received whole), until the session notices the end and closes.
  std::size_t answered = 0;
  REQUIRE(f.loop.run_until(
      [&] {
        while (answered < f.pending.size()) f.pending[answered++](Reply(250, "2.0.0", "Ok"));
        return f.listener->stats().sessions_open == 0;
      },
      20s));
  CHECK(answered >= 1);
  CHECK(answered <= 3);

  // A done that arrives after the listener is destroyed.
  ClientThread client(f.loop, [&] {
    RawClient c;
    if (!c.connect("127.0.0.1", f.port())) return;
    c.send(kEnvelope + "z\r\n.\r\n");
    c.read_until_close(20s);
  });
  REQUIRE(f.loop.run_until([&] { return f.pending.size() == answered + 1; }, 20s));
  auto late = f.pending.back();
  f.listener.reset();
  late(Reply(250, "2.0.0", "Ok"));
  REQUIRE(client.wait());
  require_clean_close(f.loop);
}

TEST_CASE("SmtpListener stops reading from a client that does not read its replies",
          "[integration][smtp_listener][limits]") {
  Fixture f;
  std::string chunk;
  for (int i = 0; i < 256 * 1024 / 6; ++i) chunk += "NOOP\r\n";
  constexpr std::size_t kMaxChunks = 256;  // about 64 MB: far beyond any socket buffers
  std::size_t sent = 0;
  bool stalled = false;
  std::string after;
  REQUIRE(run_beside_loop(
      f.loop,
      [&] {
        RawClient c;
        if (!c.connect("127.0.0.1", f.port())) return;
        c.read_replies(1);
        for (std::size_t i = 0; i < kMaxChunks && !stalled; ++i) {
          const std::size_t n = c.send_until_stalled(chunk);
          sent += n;
          stalled = n < chunk.size();
        }
        c.close();
        // The listener still serves others.
        RawClient d;
        if (!d.connect("127.0.0.1", f.port())) return;
        d.send("NOOP\r\nQUIT\r\n");
        after = d.read_until_close(20s);
      },
      300s));
  INFO("sent " << sent << " octets before the stall");
  CHECK(stalled);
  CHECK(sent < kMaxChunks * chunk.size());
  CHECK(after == kGreeting + "250 2.0.0 Ok\r\n221 2.0.0 mx.test Bye\r\n");
  REQUIRE(f.loop.run_until([&] { return f.listener->stats().sessions_open == 0; }, 60s));
  f.listener.reset();
  require_clean_close(f.loop);
}

TEST_CASE("SmtpListener closes an idle session with 421 4.4.2", "[integration][smtp_listener]") {
  uv::SmtpListenerOptions o = test_options();
  o.idle_timeout = Duration(300ms);
  Fixture f(o);
  std::string transcript;
  REQUIRE(run_beside_loop(f.loop, [&] {
    RawClient c;
    if (!c.connect("127.0.0.1", f.port())) return;
    c.send("EHLO client.test\r\n");
    transcript = c.read_until_close(20s);
  }));
  CHECK(transcript == kGreeting + kEhlo + "421 4.4.2 mx.test Error: timeout exceeded\r\n");
  REQUIRE(f.loop.run_until([&] { return f.listener->stats().sessions_open == 0; }, 10s));
  CHECK(f.has_event("127.0.0.1 close: idle timeout"));
  f.listener.reset();
  require_clean_close(f.loop);
}

TEST_CASE("SmtpListener refuses sessions beyond max_sessions with 421 4.3.2",
          "[integration][smtp_listener][limits]") {
  uv::SmtpListenerOptions o = test_options();
  o.max_sessions = 1;
  Fixture f(o);
  std::string first, second, first_end;
  REQUIRE(run_beside_loop(f.loop, [&] {
    RawClient a, b;
    if (!a.connect("127.0.0.1", f.port())) return;
    first = a.read_replies(1);
    if (!b.connect("127.0.0.1", f.port())) return;
    b.send("EHLO client.test\r\n");  // sent before reading: must not hide the refusal
    second = b.read_until_close();
    a.send("QUIT\r\n");
    first_end = a.read_until_close();
  }));
  CHECK(first == kGreeting);
  CHECK(second == "421 4.3.2 mx.test too many sessions\r\n");
  CHECK(first_end == "221 2.0.0 mx.test Bye\r\n");
  const auto stats = f.listener->stats();
  CHECK(stats.sessions_accepted == 1);
  CHECK(stats.sessions_refused == 1);
  CHECK(f.has_event("127.0.0.1 reject: too many sessions"));
  f.listener.reset();
  require_clean_close(f.loop);
}

TEST_CASE("SmtpListener serves many concurrent sessions and counts exactly max_sessions",
          "[integration][smtp_listener][limits]") {
  uv::SmtpListenerOptions o = test_options();
  o.max_sessions = 150;
  Fixture f(o);
  constexpr int kClients = 200;
  int greeted = 0, refused = 0, delivered = 0;
  REQUIRE(run_beside_loop(
      f.loop,
      [&] {
        std::vector<std::unique_ptr<RawClient>> clients;
        std::vector<RawClient*> open;
        for (int i = 0; i < kClients; ++i) {
          clients.push_back(std::make_unique<RawClient>());
          if (!clients.back()->connect("127.0.0.1", f.port())) return;
          // Every session stays open until all have connected: exactly 150 fit.
          const std::string first = clients.back()->read_replies(1);
          if (first == kGreeting) {
            ++greeted;
            open.push_back(clients.back().get());
          } else if (first == "421 4.3.2 mx.test too many sessions\r\n") {
            ++refused;
          }
        }
        for (RawClient* c : open) c->send(kEnvelope + "hello\r\n.\r\nQUIT\r\n");
        for (RawClient* c : open) {
          if (c->read_until_close() ==
              kEnvelopeReplies + "250 2.0.0 Ok: queued\r\n221 2.0.0 mx.test Bye\r\n") {
            ++delivered;
          }
        }
      },
      120s));
  CHECK(greeted == 150);
  CHECK(refused == 50);
  CHECK(delivered == 150);
  CHECK(f.messages.size() == 150);
  REQUIRE(f.loop.run_until([&] { return f.listener->stats().sessions_open == 0; }, 30s));
  const auto stats = f.listener->stats();
  CHECK(stats.sessions_accepted == 150);
  CHECK(stats.sessions_refused == 50);
  CHECK(stats.messages_received == 150);
  CHECK(stats.messages_accepted == 150);
  f.listener.reset();
  require_clean_close(f.loop);
}

TEST_CASE("SmtpListener refuses a client allow_client rejects with 554 5.7.1",
          "[integration][smtp_listener][limits]") {
  uv::SmtpListenerOptions o = test_options();
  std::vector<std::string> asked;
  o.allow_client = [&](const std::string& client) {
    asked.push_back(client);
    return false;
  };
  Fixture f(o);
  std::string transcript;
  REQUIRE(run_beside_loop(f.loop, [&] {
    RawClient c;
    if (!c.connect("127.0.0.1", f.port())) return;
    c.send("EHLO client.test\r\nMAIL FROM:<a@b.example>\r\n");
    transcript = c.read_until_close();
  }));
  CHECK(transcript == "554 5.7.1 127.0.0.1 not allowed to submit mail\r\n");
  CHECK(asked == std::vector<std::string>{"127.0.0.1"});
  CHECK(f.listener->stats().sessions_refused == 1);
  CHECK(f.listener->stats().sessions_accepted == 0);
  CHECK(f.messages.empty());
  f.listener.reset();
  require_clean_close(f.loop);
}

TEST_CASE("SmtpListener close() lets the message in progress finish, then answers 421",
          "[integration][smtp_listener][shutdown]") {
  Fixture f;
  f.sync = false;
  std::string transcript;
  bool closed = false;
  ClientThread client(f.loop, [&] {
    RawClient c;
    if (!c.connect("127.0.0.1", f.port())) return;
    c.send(kEnvelope + "x\r\n.\r\nNOOP\r\n");
    transcript = c.read_until_close(20s);
  });
  REQUIRE(f.loop.run_until([&] { return f.pending.size() == 1; }, 20s));
  f.listener->close([&] { closed = true; });
  f.loop.run_for(100ms);
  CHECK_FALSE(closed);  // the message waits for its done
  f.pending[0](Reply(250, "2.0.0", "Ok: queued"));
  REQUIRE(client.wait());
  REQUIRE(f.loop.run_until([&] { return closed; }, 10s));
  CHECK(transcript == kGreeting + kEnvelopeReplies +
                          "250 2.0.0 Ok: queued\r\n421 4.3.2 mx.test Service shutting down\r\n");
  f.listener.reset();
  require_clean_close(f.loop);
}

TEST_CASE("SmtpListener destroyed with sessions open closes them and leaves no handle",
          "[integration][smtp_listener]") {
  Fixture f;
  std::string greeting, rest;
  std::atomic<bool> greeted{false};  // the loop thread may read `greeting` only after this
  ClientThread client(f.loop, [&] {
    RawClient c;
    if (!c.connect("127.0.0.1", f.port())) return;
    greeting = c.read_replies(1);
    greeted = true;
    c.send("EHLO client.test\r\n");
    rest = c.read_until_close(20s);
  });
  REQUIRE(f.loop.run_until([&] { return f.listener->stats().sessions_open == 1; }, 10s));
  REQUIRE(f.loop.run_until([&] { return greeted.load(); }, 10s));
  f.listener.reset();
  REQUIRE(client.wait());
  CHECK(greeting == kGreeting);
  require_clean_close(f.loop);
}

TEST_CASE("SmtpListener reports a port in use and a non-numeric address",
          "[integration][smtp_listener]") {
  Fixture f;
  uv::SmtpListenerOptions o = test_options();
  o.port = f.port();
  {
    auto second = uv::SmtpListener::open(f.loop.get(), o, {});
    REQUIRE_FALSE(second);
    CHECK(second.error().code == std::errc::address_in_use);
    CHECK(second.error().message ==
          "listen 127.0.0.1:" + std::to_string(f.port()) + ": address already in use");
    o.host = "localhost";
    auto third = uv::SmtpListener::open(f.loop.get(), o, {});
    REQUIRE_FALSE(third);
    CHECK(third.error().code == errc::invalid_parameter);
    CHECK(third.error().message == "listen localhost:" + std::to_string(f.port()) +
                                       ": \"localhost\" is not a numeric IPv4 or IPv6 address");
  }
  f.listener.reset();
  require_clean_close(f.loop);
}

TEST_CASE("SmtpListener listens on IPv6 loopback", "[integration][smtp_listener][ipv6]") {
  uv::SmtpListenerOptions o = test_options();
  o.host = "::1";
  Fixture f(o, false);
  if (const auto opened = f.open(); !opened) {
    WARN("no IPv6 loopback here: " << opened.error().message);
    return;
  }
  std::string transcript;
  REQUIRE(run_beside_loop(f.loop, [&] {
    RawClient c;
    if (!c.connect("::1", f.port())) return;
    c.send(kEnvelope + "v6\r\n.\r\nQUIT\r\n");
    transcript = c.read_until_close();
  }));
  CHECK(transcript ==
        kGreeting + kEnvelopeReplies + "250 2.0.0 Ok: queued\r\n" + "221 2.0.0 mx.test Bye\r\n");
  REQUIRE(f.messages.size() == 1);
  CHECK(f.messages[0].client_address == "::1");
  f.listener.reset();
  require_clean_close(f.loop);
}

TEST_CASE("SmtpListener takes mail from Python's smtplib and from swaks with pipelining",
          "[integration][smtp_listener][interop]") {
  Fixture f;
  TempDir dir;
  const std::string script = dir.file("send.py");
  write_file(script,
             "import smtplib, sys\n"
             "s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]), local_hostname='py.test')\n"
             "s.ehlo()\n"
             "assert s.has_extn('pipelining') and s.has_extn('size')\n"
             "refused = s.sendmail('alice@example.org', ['bob@example.net', 'carol@example.net'],\n"
             "    'Subject: from python\\r\\n\\r\\n.dot first\\r\\nbody\\r\\n',\n"
             "    mail_options=['BODY=8BITMIME'], rcpt_options=['NOTIFY=FAILURE'])\n"
             "assert not refused\n"
             "s.quit()\n"
             "print('sent')\n");
  std::string py_out;
  int py_status = -1;
  REQUIRE(run_beside_loop(f.loop, [&] {
    py_status = run_program({"python3", script, std::to_string(f.port())}, &py_out, 30s);
  }));
  INFO(py_out);
  CHECK(py_status == 0);
  REQUIRE(f.messages.size() == 1);
  CHECK(f.messages[0].helo == "py.test");
  CHECK(f.messages[0].body == "Subject: from python\r\n\r\n.dot first\r\nbody\r\n");
  CHECK(f.messages[0].eight_bit);
  REQUIRE(f.messages[0].envelope.recipients.size() == 2);
  CHECK(f.messages[0].envelope.recipients[1].notify == kNotifyFailure);

  std::string swaks_out;
  int swaks_status = -1;
  REQUIRE(run_beside_loop(f.loop, [&] {
    swaks_status =
        run_program({"swaks", "--server", "127.0.0.1", "--port", std::to_string(f.port()), "--from",
                     "sw@example.org", "--to", "dave@example.net", "--helo", "swaks.test",
                     "--pipeline", "--body", "via swaks"},
                    &swaks_out, 30s);
  }));
  INFO(swaks_out);
  CHECK(swaks_status == 0);
  REQUIRE(f.messages.size() == 2);
  CHECK(f.messages[1].helo == "swaks.test");
  CHECK(f.messages[1].envelope.recipients[0].address.to_string() == "dave@example.net");
  CHECK(f.messages[1].body.find("via swaks\r\n") != std::string::npos);
  f.listener.reset();
  require_clean_close(f.loop);
}

TEST_CASE(
    "SmtpListener keeps a reserve of free space: MAIL gets 452 4.3.1 while the queue's file "
    "system is short of it, or of one and a half times SIZE",
    "[integration][smtp_listener][storage]") {
  PowerCutMount disk;  // a disk whose size the test sets
  disk.set_capacity(64ull << 20);
  uv::SmtpListenerOptions o = test_options();
  o.server.limits.max_message_size = 100ull << 20;
  o.storage_path = disk.path();
  o.min_free_space = 16ull << 20;
  Fixture f(o);
  auto session = [&](const std::string& mail) {
    std::string replies;
    REQUIRE(run_beside_loop(f.loop, [&] {
      RawClient c;
      if (!c.connect("127.0.0.1", f.port())) return;
      c.send("EHLO client.test\r\n" + mail + "\r\nQUIT\r\n");
      replies = c.read_until_close();
    }));
    // The reply to MAIL: the line after EHLO's last.
    const auto from = replies.find(" DSN\r\n");
    if (from == std::string::npos) return replies;
    const auto start = from + 6;
    return replies.substr(start, replies.find("\r\n", start) - start);
  };
  const std::string refused = "452 4.3.1 Insufficient system storage";

  CHECK(session("MAIL FROM:<a@example.org>") == "250 2.1.0 Ok");
  // 48 MiB to spare: 40 MB declared needs 60.
  CHECK(session("MAIL FROM:<a@example.org> SIZE=40000000") == refused);
  CHECK(
      f.has_event("127.0.0.1 refuse: insufficient storage for SIZE=40000000 (64 MiB free on "
                  "the queue's file system)"));
  CHECK(session("MAIL FROM:<a@example.org> SIZE=30000000") == "250 2.1.0 Ok");

  // Another program fills the disk to 10 MiB free: under the reserve, every MAIL is refused,
  // and the listener says so once.
  write_file(disk.path() + "/ballast", std::string(54ull << 20, 'b'));
  CHECK(session("MAIL FROM:<a@example.org>") == refused);
  CHECK(session("MAIL FROM:<> SIZE=10") == refused);
  CHECK(std::count_if(f.events.begin(), f.events.end(), [](const std::string& e) {
          return e.find("storage low") != std::string::npos;
        }) == 1);
  CHECK(
      f.has_event("127.0.0.1 storage low: 10 MiB free on the queue's file system, under the "
                  "reserve of 16 MiB: MAIL refused with 452 4.3.1 until there is room"));

  // Space comes back.
  std::filesystem::remove(disk.path() + "/ballast");
  CHECK(session("MAIL FROM:<a@example.org>") == "250 2.1.0 Ok");
  CHECK(
      f.has_event("127.0.0.1 storage ok: 64 MiB free on the queue's file system: accepting "
                  "mail"));
  CHECK(f.listener->stats().storage_refusals == 3);
  f.listener.reset();
  require_clean_close(f.loop);
}
