#include <catch2/catch.hpp>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "mailq/smtp_client.h"

using namespace mailq;
using namespace std::chrono_literals;

namespace {

const char* kEhloFull =
    "250-mx.example.org Hello client.example\r\n"
    "250-PIPELINING\r\n"
    "250-SIZE 10240000\r\n"
    "250-8BITMIME\r\n"
    "250-SMTPUTF8\r\n"
    "250-DSN\r\n"
    "250-ENHANCEDSTATUSCODES\r\n"
    "250 STARTTLS\r\n";

const char* kEhloPlain = "250-mx.example.org\r\n250 ENHANCEDSTATUSCODES\r\n";
const char* kEhloPipelining = "250-mx.example.org\r\n250 PIPELINING\r\n";

// A scripted server: feeds replies to the client and checks the exact bytes it wrote.
struct Session {
  SmtpClientOptions options;
  std::unique_ptr<SmtpClient> client;
  TimePoint now{std::chrono::hours(1000)};
  std::vector<SmtpEvent> events;

  explicit Session(SmtpClientOptions o = make_options()) : options(std::move(o)) {
    client = std::make_unique<SmtpClient>(options);
  }

  static SmtpClientOptions make_options() {
    SmtpClientOptions o;
    o.helo_name = "client.example";
    o.tls = TlsPolicy::none;
    o.tls_server_name = "mx.example.org";
    return o;
  }

  void drain() {
    while (auto ev = client->next_event()) events.push_back(std::move(*ev));
  }
  void connect() {
    client->on_connected(now);
    drain();
  }
  void server(std::string_view bytes) {
    client->on_data(bytes, now);
    drain();
  }
  std::string wrote() { return client->take_output(); }
  void advance(Duration d) { now += d; }
  void timeout() {
    client->on_timeout(now);
    drain();
  }
  void closed(std::string_view why = "connection reset by peer") {
    client->on_closed(why, now);
    drain();
  }
  bool send(SmtpTransaction t) {
    bool ok = client->send(std::move(t), now);
    drain();
    return ok;
  }

  // Greeting and EHLO with the given reply; checks the bytes on the way.
  void open(const char* ehlo_reply) {
    connect();
    REQUIRE(wrote().empty());
    server("220 mx.example.org ESMTP\r\n");
    REQUIRE(wrote() == "EHLO client.example\r\n");
    server(ehlo_reply);
  }
  void open_ready(const char* ehlo_reply) {
    open(ehlo_reply);
    REQUIRE(client->ready());
    REQUIRE(events.size() == 1);
    REQUIRE(std::holds_alternative<smtp_event::Ready>(events[0]));
    events.clear();
  }

  template <class T>
  std::size_t count() const {
    std::size_t n = 0;
    for (auto& e : events) n += std::holds_alternative<T>(e) ? 1 : 0;
    return n;
  }
  template <class T>
  const T& get(std::size_t i) const {
    REQUIRE(i < events.size());
    REQUIRE(std::holds_alternative<T>(events[i]));
    return std::get<T>(events[i]);
  }
  const smtp_event::Failed& failed() const {
    REQUIRE(!events.empty());
    return get<smtp_event::Failed>(events.size() - 1);
  }
};

SmtpTransaction txn(std::vector<std::string> rcpts, std::string body = "Subject: t\r\n\r\nhi\r\n",
                    std::string from = "sender@example.net") {
  SmtpTransaction t;
  t.reverse_path = std::move(from);
  for (auto& r : rcpts) t.recipients.push_back({r, kNotifyDefault, ""});
  t.body = std::make_shared<const std::string>(std::move(body));
  return t;
}

std::string str(const Reply& r) {
  return r.to_string();
}

}  // namespace

// --- greeting -------------------------------------------------------------------------------

TEST_CASE("SmtpClient: greeting, EHLO and capabilities lead to Ready", "[smtp][client]") {
  Session s;
  s.connect();
  CHECK(s.client->phase() == SmtpPhase::greeting);
  CHECK(s.client->deadline() == s.now + s.options.timeouts.greeting);
  s.server("220-mx.example.org ESMTP\r\n220 second line\r\n");
  CHECK(s.wrote() == "EHLO client.example\r\n");
  CHECK(s.client->phase() == SmtpPhase::ehlo);
  CHECK(s.client->deadline() == s.now + s.options.timeouts.ehlo);
  s.server(
      "250-mx.example.org\r\n250-pipelining\r\n250-Size 5000\r\n250-8bitmime\r\n"
      "250-SMTPUTF8\r\n250-DSN\r\n250-ENHANCEDSTATUSCODES\r\n250-AUTH=LOGIN\r\n"
      "250-AUTH CRAM-MD5 plain\r\n250 STARTTLS\r\n");
  CHECK(s.wrote().empty());
  REQUIRE(s.events.size() == 1);
  const auto& ready = s.get<smtp_event::Ready>(0);
  CHECK(ready.greeting == Reply(220, "", "mx.example.org ESMTP\nsecond line"));
  const SmtpCapabilities& c = ready.capabilities;
  CHECK(c.esmtp);
  CHECK(c.pipelining);
  CHECK(c.size == 5000);
  CHECK(c.eightbitmime);
  CHECK(c.smtputf8);
  CHECK(c.dsn);
  CHECK(c.enhanced_status_codes);
  CHECK(c.auth_plain);
  CHECK(c.auth_login);
  CHECK(c.starttls);
  CHECK(s.client->ready());
  CHECK(s.client->phase() == SmtpPhase::idle);
  CHECK(s.client->deadline() == TimePoint::max());
  CHECK_FALSE(s.client->finished());
}

TEST_CASE("SmtpClient: a 4xx or 5xx greeting fails at connection level", "[smtp][client]") {
  SECTION("421") {
    Session s;
    s.connect();
    s.server("421 4.3.2 mx.example.org too busy\r\n");
    const auto& f = s.failed();
    CHECK(f.phase == SmtpPhase::greeting);
    CHECK(f.reply == Reply(421, "4.3.2", "mx.example.org too busy"));
    CHECK(f.connection_level);
    CHECK_FALSE(f.tls_failure);
    CHECK(s.wrote().empty());  // the server is closing; no QUIT
    CHECK(s.client->finished());
    CHECK_FALSE(s.client->ready());
  }
  SECTION("554") {
    Session s;
    s.connect();
    s.server("554 5.7.1 no service for you\r\n");
    const auto& f = s.failed();
    CHECK(f.reply.code == 554);
    CHECK(f.connection_level);
    CHECK(s.wrote() == "QUIT\r\n");  // RFC 5321 §3.1: polite QUIT after a 554 greeting
  }
}

TEST_CASE("SmtpClient: a garbage or unexpected greeting is a protocol error", "[smtp][client]") {
  SECTION("not SMTP") {
    Session s;
    s.connect();
    s.server("SSH-2.0-OpenSSH_9.2\r\n");
    const auto& f = s.failed();
    CHECK(f.phase == SmtpPhase::greeting);
    CHECK(str(f.reply) ==
          "421 4.5.0 [internal] protocol error: invalid reply code in \"SSH-2.0-OpenSSH_9.2\"");
    CHECK(f.connection_level);
    CHECK(s.wrote().empty());
  }
  SECTION("250 instead of 220") {
    Session s;
    s.connect();
    s.server("250 hello\r\n");
    CHECK(str(s.failed().reply) ==
          "421 4.5.0 [internal] protocol error: unexpected greeting \"250 hello\"");
    CHECK(s.failed().connection_level);
  }
  SECTION("data before on_connected") {
    Session s;
    s.server("220 hi\r\n");
    CHECK(s.failed().connection_level);
    CHECK(s.failed().reply.code == 421);
  }
}

// --- EHLO / HELO ----------------------------------------------------------------------------

TEST_CASE("SmtpClient: 5xx to EHLO falls back to HELO", "[smtp][client]") {
  for (const char* refusal : {"500 5.5.1 command unrecognized\r\n", "502 not implemented\r\n",
                              "504 no\r\n", "550 not here\r\n"}) {
    Session s;
    s.open(refusal);
    CHECK(s.wrote() == "HELO client.example\r\n");
    CHECK(s.client->phase() == SmtpPhase::helo);
    CHECK(s.events.empty());
    s.server("250 mx.example.org\r\n");
    REQUIRE(s.events.size() == 1);
    const auto& ready = s.get<smtp_event::Ready>(0);
    CHECK_FALSE(ready.capabilities.esmtp);
    CHECK_FALSE(ready.capabilities.pipelining);
    CHECK(s.client->ready());
    // Plain SMTP: no ESMTP parameters, one command at a time.
    REQUIRE(s.send(txn({"a@example.org"}, "x\n")));
    CHECK(s.wrote() == "MAIL FROM:<sender@example.net>\r\n");
  }
}

TEST_CASE("SmtpClient: 4xx to EHLO and a refused HELO fail the session", "[smtp][client]") {
  SECTION("EHLO 450") {
    Session s;
    s.open("450 4.7.1 try later\r\n");
    CHECK(s.failed().phase == SmtpPhase::ehlo);
    CHECK(s.failed().reply == Reply(450, "4.7.1", "try later"));
    CHECK_FALSE(s.failed().connection_level);
    CHECK(s.wrote() == "QUIT\r\n");
  }
  SECTION("EHLO 421") {
    Session s;
    s.open("421 4.7.0 closing\r\n");
    CHECK(s.failed().reply.code == 421);
    CHECK(s.failed().connection_level);
    CHECK(s.wrote().empty());
  }
  SECTION("HELO 550") {
    Session s;
    s.open("500 what\r\n");
    CHECK(s.wrote() == "HELO client.example\r\n");
    s.server("550 5.7.1 go away\r\n");
    CHECK(s.failed().phase == SmtpPhase::helo);
    CHECK(s.failed().reply == Reply(550, "5.7.1", "go away"));
    CHECK_FALSE(s.failed().connection_level);
  }
}

TEST_CASE("SmtpClient: an invalid HELO name is refused before anything is sent",
          "[smtp][client][security]") {
  auto o = Session::make_options();
  o.helo_name = "evil\r\nMAIL FROM:<x>";
  Session s(o);
  s.connect();
  CHECK(s.wrote().empty());
  CHECK(s.failed().reply.code == 451);
  CHECK(s.failed().reply.enhanced == "4.3.5");
  CHECK(s.client->finished());
}

// --- transactions ---------------------------------------------------------------------------

TEST_CASE("SmtpClient: a pipelined transaction, byte for byte", "[smtp][client][pipelining]") {
  Session s;
  s.open_ready(kEhloPipelining);
  REQUIRE(s.send(txn({"a@example.org", "b@example.org"}, "Subject: t\n\nhello\n.dot\n")));
  CHECK_FALSE(s.client->ready());
  // MAIL, every RCPT and DATA in one write.
  CHECK(s.wrote() ==
        "MAIL FROM:<sender@example.net>\r\n"
        "RCPT TO:<a@example.org>\r\n"
        "RCPT TO:<b@example.org>\r\n"
        "DATA\r\n");
  CHECK(s.client->phase() == SmtpPhase::mail);
  s.server("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n");
  CHECK(s.client->phase() == SmtpPhase::rcpt);
  s.server("250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n");
  CHECK(s.client->phase() == SmtpPhase::body);
  CHECK(s.wrote() == "Subject: t\r\n\r\nhello\r\n..dot\r\n.\r\n");
  CHECK(s.events.empty());
  s.server("250 2.0.0 Ok: queued as 4Xyz\r\n");
  REQUIRE(s.events.size() == 1);
  const auto& done = s.get<smtp_event::TransactionDone>(0);
  REQUIRE(done.replies.size() == 2);
  CHECK(done.replies[0] == Reply(250, "2.0.0", "Ok: queued as 4Xyz"));
  CHECK(done.replies[1] == done.replies[0]);
  CHECK(done.data_reply == done.replies[0]);
  CHECK(done.data_intermediate == "End data with <CR><LF>.<CR><LF>");
  CHECK(s.client->ready());
  CHECK(s.client->transactions() == 1);
  CHECK(s.client->deadline() == TimePoint::max());
}

TEST_CASE("SmtpClient: without PIPELINING one command waits for its reply",
          "[smtp][client][pipelining]") {
  Session s;
  s.open_ready(kEhloPlain);
  REQUIRE(s.send(txn({"a@example.org", "b@example.org"}, "hi\n")));
  CHECK(s.wrote() == "MAIL FROM:<sender@example.net>\r\n");
  CHECK(s.client->deadline() == s.now + s.options.timeouts.mail);
  s.server("250 ok\r\n");
  CHECK(s.wrote() == "RCPT TO:<a@example.org>\r\n");
  CHECK(s.client->deadline() == s.now + s.options.timeouts.rcpt);
  s.server("250 ok\r\n");
  CHECK(s.wrote() == "RCPT TO:<b@example.org>\r\n");
  s.server("250 ok\r\n");
  CHECK(s.wrote() == "DATA\r\n");
  CHECK(s.client->deadline() == s.now + s.options.timeouts.data_init);
  s.server("354 go\r\n");
  CHECK(s.wrote() == "hi\r\n.\r\n");
  s.server("250 queued\r\n");
  REQUIRE(s.count<smtp_event::TransactionDone>() == 1);
  CHECK(s.get<smtp_event::TransactionDone>(0).replies ==
        std::vector<Reply>{Reply(250, "", "queued"), Reply(250, "", "queued")});
}

TEST_CASE("SmtpClient: a reply for a command not yet taken is a protocol error",
          "[smtp][client][security]") {
  Session s;
  s.connect();
  // The server answers EHLO in the same breath as its greeting: it never saw the EHLO.
  s.server("220 hi\r\n250 mx.example.org\r\n");
  CHECK(s.failed().phase == SmtpPhase::ehlo);
  CHECK(str(s.failed().reply) ==
        "421 4.5.0 [internal] protocol error: reply \"250 mx.example.org\" received before the "
        "command was sent (reply to EHLO)");
  CHECK(s.failed().connection_level);
  CHECK(s.wrote().empty());  // nothing more goes out on a desynchronised stream
}

TEST_CASE("SmtpClient: mixed RCPT results: each recipient gets its own reply",
          "[smtp][client][pipelining]") {
  Session s;
  s.open_ready(kEhloPipelining);
  REQUIRE(s.send(txn({"ok@example.org", "no@example.org", "later@example.org"})));
  s.wrote();
  s.server(
      "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.1.1 <no@example.org>: unknown user\r\n"
      "450 4.2.0 <later@example.org>: greylisted\r\n354 go\r\n");
  CHECK(s.wrote() == "Subject: t\r\n\r\nhi\r\n.\r\n");
  s.server("250 2.0.0 queued\r\n");
  const auto& done = s.get<smtp_event::TransactionDone>(0);
  CHECK(done.replies == std::vector<Reply>{Reply(250, "2.0.0", "queued"),
                                           Reply(550, "5.1.1", "<no@example.org>: unknown user"),
                                           Reply(450, "4.2.0", "<later@example.org>: greylisted")});
  CHECK(s.client->ready());
  // A completed transaction needs no RSET.
  REQUIRE(s.send(txn({"x@example.org"})));
  CHECK(s.wrote().rfind("MAIL FROM:", 0) == 0);
}

TEST_CASE("SmtpClient: 552 to RCPT is taken as 452 (RFC 5321 4.5.3.1.10), a temporary failure",
          "[smtp][client][pipelining]") {
  Session s;
  s.open_ready(kEhloPipelining);
  REQUIRE(s.send(txn({"a@example.org", "b@example.org", "c@example.org"})));
  s.wrote();
  s.server(
      "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n552 5.5.3 too many recipients\r\n"
      "552 too many recipients\r\n354 go\r\n");
  s.wrote();
  s.server("250 2.0.0 queued\r\n");
  const auto& done = s.get<smtp_event::TransactionDone>(0);
  CHECK(done.replies == std::vector<Reply>{Reply(250, "2.0.0", "queued"),
                                           Reply(452, "4.5.3", "too many recipients"),
                                           Reply(452, "", "too many recipients")});
}

TEST_CASE(
    "SmtpClient: MAIL refused: every recipient gets the MAIL reply, then RSET before "
    "the next transaction",
    "[smtp][client][pipelining]") {
  for (int code : {451, 553}) {
    Session s;
    s.open_ready(kEhloPipelining);
    REQUIRE(s.send(txn({"a@example.org", "b@example.org"})));
    s.wrote();
    std::string mail_reply = std::to_string(code) + (code == 451 ? " 4.3.0 later" : " 5.7.1 no");
    s.server(mail_reply +
             "\r\n503 5.5.1 no MAIL\r\n503 5.5.1 no MAIL\r\n554 5.5.1 no valid "
             "recipients\r\n");
    CHECK(s.wrote().empty());  // no body
    const auto& done = s.get<smtp_event::TransactionDone>(0);
    Reply expected = *parse_reply(mail_reply);
    CHECK(done.replies == std::vector<Reply>{expected, expected});
    CHECK(done.data_reply.empty());
    CHECK(s.client->ready());
    REQUIRE(s.send(txn({"c@example.org"})));
    CHECK(s.wrote() == "RSET\r\n");
    CHECK(s.client->phase() == SmtpPhase::rset);
    CHECK(s.client->deadline() == s.now + s.options.timeouts.rset);
    s.server("250 2.0.0 Ok\r\n");
    CHECK(s.wrote() == "MAIL FROM:<sender@example.net>\r\nRCPT TO:<c@example.org>\r\nDATA\r\n");
  }
}

TEST_CASE("SmtpClient: MAIL refused without pipelining sends no RCPT", "[smtp][client]") {
  Session s;
  s.open_ready(kEhloPlain);
  REQUIRE(s.send(txn({"a@example.org", "b@example.org"})));
  CHECK(s.wrote() == "MAIL FROM:<sender@example.net>\r\n");
  s.server("452 4.3.1 insufficient storage\r\n");
  CHECK(s.wrote().empty());
  const auto& done = s.get<smtp_event::TransactionDone>(0);
  CHECK(done.replies == std::vector<Reply>(2, Reply(452, "4.3.1", "insufficient storage")));
  CHECK(s.client->ready());
}

TEST_CASE("SmtpClient: DATA refused: accepted recipients get the DATA reply",
          "[smtp][client][pipelining]") {
  Session s;
  s.open_ready(kEhloPipelining);
  REQUIRE(s.send(txn({"a@example.org", "b@example.org"})));
  s.wrote();
  s.server("250 ok\r\n250 ok\r\n550 5.1.1 unknown\r\n554 5.3.0 transaction failed\r\n");
  CHECK(s.wrote().empty());
  const auto& done = s.get<smtp_event::TransactionDone>(0);
  CHECK(done.replies == std::vector<Reply>{Reply(554, "5.3.0", "transaction failed"),
                                           Reply(550, "5.1.1", "unknown")});
  CHECK(done.data_reply.empty());
  REQUIRE(s.send(txn({"c@example.org"})));
  CHECK(s.wrote() == "RSET\r\n");
}

TEST_CASE("SmtpClient: all recipients refused: no body is sent", "[smtp][client][pipelining]") {
  SECTION("pipelined, DATA refused as expected") {
    Session s;
    s.open_ready(kEhloPipelining);
    REQUIRE(s.send(txn({"a@example.org", "b@example.org"})));
    s.wrote();
    s.server("250 ok\r\n550 5.1.1 a unknown\r\n451 4.7.1 b later\r\n554 5.5.1 no valid rcpt\r\n");
    CHECK(s.wrote().empty());
    const auto& done = s.get<smtp_event::TransactionDone>(0);
    CHECK(done.replies ==
          std::vector<Reply>{Reply(550, "5.1.1", "a unknown"), Reply(451, "4.7.1", "b later")});
    CHECK(s.client->ready());
  }
  SECTION("pipelined, DATA answered 354 anyway (RFC 2920 §3.1): an empty message ends it") {
    Session s;
    s.open_ready(kEhloPipelining);
    REQUIRE(s.send(txn({"a@example.org"}, "secret body\r\n")));
    s.wrote();
    s.server("250 ok\r\n550 5.1.1 a unknown\r\n354 go ahead\r\n");
    CHECK(s.wrote() == ".\r\n");  // never the body
    CHECK(s.events.empty());
    s.server("554 5.5.1 no valid recipients\r\n");
    const auto& done = s.get<smtp_event::TransactionDone>(0);
    CHECK(done.replies == std::vector<Reply>{Reply(550, "5.1.1", "a unknown")});
    CHECK(done.data_reply.empty());
    REQUIRE(s.send(txn({"c@example.org"})));
    CHECK(s.wrote() == "RSET\r\n");
  }
  SECTION("without pipelining: no DATA at all") {
    Session s;
    s.open_ready(kEhloPlain);
    REQUIRE(s.send(txn({"a@example.org"})));
    s.wrote();
    s.server("250 ok\r\n");
    CHECK(s.wrote() == "RCPT TO:<a@example.org>\r\n");
    s.server("550 5.1.1 unknown\r\n");
    CHECK(s.wrote().empty());
    CHECK(s.get<smtp_event::TransactionDone>(0).replies ==
          std::vector<Reply>{Reply(550, "5.1.1", "unknown")});
    REQUIRE(s.send(txn({"c@example.org"})));
    CHECK(s.wrote() == "RSET\r\n");
  }
}

TEST_CASE("SmtpClient: a 4xx or 5xx to the final dot is every accepted recipient's reply",
          "[smtp][client]") {
  Session s;
  s.open_ready(kEhloPipelining);
  REQUIRE(s.send(txn({"a@example.org", "b@example.org"})));
  s.wrote();
  s.server("250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n");
  s.wrote();
  s.server("554-5.7.1 rejected:\r\n554 5.7.1 spam\r\n");
  const auto& done = s.get<smtp_event::TransactionDone>(0);
  CHECK(done.replies == std::vector<Reply>(2, Reply(554, "5.7.1", "rejected:\nspam")));
  CHECK(done.data_reply == Reply(554, "5.7.1", "rejected:\nspam"));
  REQUIRE(s.send(txn({"c@example.org"})));
  CHECK(s.wrote().rfind("MAIL FROM:", 0) == 0);  // no RSET after a completed transaction
}

TEST_CASE("SmtpClient: connection reuse with two transactions", "[smtp][client]") {
  Session s;
  s.open_ready(kEhloPipelining);
  for (int i = 1; i <= 2; ++i) {
    std::string rcpt = "r" + std::to_string(i) + "@example.org";
    REQUIRE(s.send(txn({rcpt}, "body " + std::to_string(i))));
    CHECK(s.wrote() == "MAIL FROM:<sender@example.net>\r\nRCPT TO:<" + rcpt + ">\r\nDATA\r\n");
    s.server("250 ok\r\n250 ok\r\n354 go\r\n");
    CHECK(s.wrote() == "body " + std::to_string(i) + "\r\n.\r\n");
    s.server("250 queued " + std::to_string(i) + "\r\n");
    CHECK(s.client->transactions() == static_cast<std::size_t>(i));
    CHECK(s.client->ready());
  }
  REQUIRE(s.count<smtp_event::TransactionDone>() == 2);
  CHECK(s.get<smtp_event::TransactionDone>(1).replies[0] == Reply(250, "", "queued 2"));
  s.client->quit(s.now);
  CHECK(s.wrote() == "QUIT\r\n");
  CHECK(s.client->phase() == SmtpPhase::quit);
  CHECK(s.client->deadline() == s.now + s.options.timeouts.quit);
  s.server("221 2.0.0 Bye\r\n");
  CHECK(std::holds_alternative<smtp_event::Closed>(s.events.back()));
  CHECK(s.client->finished());
  CHECK(s.client->deadline() == TimePoint::max());
}

TEST_CASE("SmtpClient: send() only when ready", "[smtp][client]") {
  Session s;
  CHECK_FALSE(s.send(txn({"a@example.org"})));
  s.open_ready(kEhloPipelining);
  REQUIRE(s.send(txn({"a@example.org"})));
  CHECK_FALSE(s.send(txn({"b@example.org"})));  // one at a time
  CHECK(s.wrote() == "MAIL FROM:<sender@example.net>\r\nRCPT TO:<a@example.org>\r\nDATA\r\n");
}

TEST_CASE("SmtpClient: values with CR, LF, NUL or other controls are refused",
          "[smtp][client][security]") {
  Session s;
  s.open_ready("250-mx.example.org\r\n250-PIPELINING\r\n250 DSN\r\n");
  auto bad = [&](SmtpTransaction t) {
    CHECK_FALSE(s.send(std::move(t)));
    CHECK(s.wrote().empty());
    CHECK(s.events.empty());
    CHECK(s.client->ready());
  };
  bad(txn({"a@example.org"}, "x", "s@example.net>\r\nRCPT TO:<evil@example.org"));
  bad(txn({"a@example.org\r\nDATA"}));
  bad(txn({std::string("a@example.org\0x", 15)}));
  bad(txn({"a@exa\nmple.org"}));
  bad(txn({"a@exa\tmple.org"}));
  bad(txn({}));
  bad(txn({""}));
  auto t = txn({"a@example.org"});
  t.envid = "id\r\nQUIT";
  bad(t);
  t = txn({"a@example.org"});
  t.recipients[0].orcpt = "rfc822;a@example.org\n";
  bad(t);
  t = txn({"a@example.org"});
  t.recipients[0].orcpt = "rfc 822;a@example.org";  // the address type must be an atom
  bad(t);
  t = txn({"a@example.org"});
  t.body.reset();
  bad(t);
}

// --- ESMTP parameters -----------------------------------------------------------------------

TEST_CASE("SmtpClient: SIZE, BODY=8BITMIME, DSN parameters and xtext", "[smtp][client][dsn]") {
  Session s;
  s.open_ready(kEhloFull);
  auto t = txn({"a@example.org", "b@example.org", "c@example.org"}, "caf\xc3\xa9\n.x\n");
  t.ret = DsnRet::headers;
  t.envid = "id+1=2 é";
  t.recipients[0].notify = kNotifySuccess | kNotifyFailure | kNotifyDelay;
  t.recipients[0].orcpt = "rfc822;a+tag@example.org";
  t.recipients[1].notify = kNotifyNever;
  t.recipients[2].orcpt = "b=c@example.org";  // no type: taken as rfc822
  REQUIRE(s.send(std::move(t)));
  // Size: "café\r\n.x\r\n" = 11 octets (the stuffed dot and the terminator not counted).
  CHECK(s.wrote() ==
        "MAIL FROM:<sender@example.net> SIZE=11 BODY=8BITMIME RET=HDRS "
        "ENVID=id+2B1+3D2+20+C3+A9\r\n"
        "RCPT TO:<a@example.org> NOTIFY=SUCCESS,FAILURE,DELAY ORCPT=rfc822;a+2Btag@example.org\r\n"
        "RCPT TO:<b@example.org> NOTIFY=NEVER\r\n"
        "RCPT TO:<c@example.org> ORCPT=rfc822;b+3Dc@example.org\r\n"
        "DATA\r\n");
  s.server("250 ok\r\n250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n");
  CHECK(s.wrote() == "caf\xc3\xa9\r\n..x\r\n.\r\n");
}

TEST_CASE("SmtpClient: DSN parameters and SIZE are left out when not offered",
          "[smtp][client][dsn]") {
  Session s;
  s.open_ready(kEhloPipelining);
  auto t = txn({"a@example.org"}, "caf\xc3\xa9\n");
  t.ret = DsnRet::full;
  t.envid = "abc";
  t.eight_bit = true;
  t.recipients[0].notify = kNotifySuccess;
  t.recipients[0].orcpt = "rfc822;a@example.org";
  REQUIRE(s.send(std::move(t)));
  CHECK(s.wrote() == "MAIL FROM:<sender@example.net>\r\nRCPT TO:<a@example.org>\r\nDATA\r\n");
}

TEST_CASE("SmtpClient: the null reverse path and RET=FULL", "[smtp][client][dsn]") {
  Session s;
  s.open_ready("250-mx\r\n250-DSN\r\n250 SIZE\r\n");
  auto t = txn({"a@example.org"}, "", "");
  t.ret = DsnRet::full;
  REQUIRE(s.send(std::move(t)));
  CHECK(s.wrote() == "MAIL FROM:<> SIZE=0 RET=FULL\r\n");
}

TEST_CASE("SmtpClient: a body over the announced SIZE fails permanently without sending",
          "[smtp][client]") {
  Session s;
  s.open_ready("250-mx.example.org\r\n250-PIPELINING\r\n250 SIZE 10\r\n");
  REQUIRE(s.send(txn({"a@example.org", "b@example.org"}, "0123456789\n")));  // 12 octets
  CHECK(s.wrote().empty());
  const auto& done = s.get<smtp_event::TransactionDone>(0);
  Reply expected(552, "5.3.4", "[internal] message size 12 exceeds the server's SIZE limit 10");
  CHECK(done.replies == std::vector<Reply>{expected, expected});
  CHECK(s.client->ready());
  CHECK(s.client->transactions() == 1);
  // Exactly at the limit is fine, and no RSET is needed: nothing was sent.
  REQUIRE(s.send(txn({"a@example.org"}, "01234567\n")));
  CHECK(s.wrote() ==
        "MAIL FROM:<sender@example.net> SIZE=10\r\nRCPT TO:<a@example.org>\r\nDATA\r\n");
}

TEST_CASE("SmtpClient: 8-bit data for a server without 8BITMIME is converted, or returned",
          "[smtp][client][8bit]") {
  SECTION("converted: quoted-printable, the transaction says so") {
    Session s;
    s.open_ready(kEhloPipelining);
    REQUIRE(s.send(txn({"a@example.org"}, "Subject: t\n\ncaf\xc3\xa9\n")));
    CHECK(s.wrote() == "MAIL FROM:<sender@example.net>\r\nRCPT TO:<a@example.org>\r\nDATA\r\n");
    s.server("250 ok\r\n250 ok\r\n354 go\r\n");
    CHECK(s.wrote() ==
          "Subject: t\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=unknown-8bit\r\n"
          "Content-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9\r\n.\r\n");
    s.server("250 2.0.0 ok\r\n");
    const auto& done = s.get<smtp_event::TransactionDone>(0);
    CHECK(done.converted_to_7bit);
    CHECK(done.replies.at(0).code == 250);
  }
  SECTION("the route returns them: 554 5.6.3, nothing sent, the session still usable") {
    SmtpClientOptions o = Session::make_options();
    o.convert_8bit = false;
    Session s(o);
    s.open_ready(kEhloPipelining);
    REQUIRE(s.send(txn({"a@example.org"}, "Subject: t\n\ncaf\xc3\xa9\n")));
    CHECK(s.wrote().empty());
    const auto& done = s.get<smtp_event::TransactionDone>(0);
    CHECK(done.replies.at(0) ==
          Reply(554, "5.6.3",
                "[internal] the message has 8-bit data and the server does not support 8BITMIME "
                "(RFC 6152); the route returns such messages"));
    CHECK(s.client->ready());
  }
  SECTION("what cannot be converted is returned") {
    Session s;
    s.open_ready(kEhloPipelining);
    REQUIRE(s.send(txn({"a@example.org"}, "Subject: caf\xc3\xa9\n\nx\n")));
    CHECK(s.wrote().empty());
    CHECK(s.get<smtp_event::TransactionDone>(0).replies.at(0).text ==
          "[internal] the message has 8-bit data and the server does not support 8BITMIME (RFC "
          "6152); it cannot be converted to 7 bit: a header field holds 8-bit octets");
  }
  SECTION("offered: sent as it is, BODY=8BITMIME") {
    Session s;
    s.open_ready(kEhloFull);
    REQUIRE(s.send(txn({"a@example.org"}, "Subject: t\n\ncaf\xc3\xa9\n")));
    CHECK(s.wrote().find(" BODY=8BITMIME") != std::string::npos);
    s.server("250 ok\r\n250 ok\r\n354 go\r\n");
    CHECK(s.wrote() == "Subject: t\r\n\r\ncaf\xc3\xa9\r\n.\r\n");
  }
}

namespace {

// Records what it was asked to sign and answers with a fixed field (or an error).
class RecordingSigner final : public MessageSigner {
 public:
  explicit RecordingSigner(std::optional<std::string> field) : field_(std::move(field)) {}
  Result<std::string> sign(std::string_view message, TimePoint now) const override {
    seen.emplace_back(message);
    when = now;
    if (!field_) return Error(errc::bad_state, "the key is gone");
    return *field_;
  }
  mutable std::vector<std::string> seen;
  mutable TimePoint when{};

 private:
  std::optional<std::string> field_;
};

}  // namespace

TEST_CASE("SmtpClient: the signer signs the bytes that go out, after a 7-bit conversion",
          "[smtp][client][dkim]") {
  auto signer = std::make_shared<RecordingSigner>("X-Signed: yes\r\n");
  SECTION("8BITMIME offered: the message as it is, line ends made CRLF, not dot-stuffed") {
    Session s;
    s.open_ready(kEhloFull);
    auto t = txn({"a@example.org"}, "Subject: t\n\n.caf\xc3\xa9\nend");
    t.signer = signer;
    REQUIRE(s.send(std::move(t)));
    REQUIRE(signer->seen.size() == 1);
    CHECK(signer->seen[0] == "Subject: t\r\n\r\n.caf\xc3\xa9\r\nend\r\n");
    CHECK(signer->when == s.now);
    // SIZE counts the signature.
    CHECK(s.wrote().find(" SIZE=" + std::to_string(signer->seen[0].size() + 15)) !=
          std::string::npos);
    s.server("250 ok\r\n250 ok\r\n354 go\r\n");
    CHECK(s.wrote() == "X-Signed: yes\r\nSubject: t\r\n\r\n..caf\xc3\xa9\r\nend\r\n.\r\n");
  }
  SECTION("no 8BITMIME: the converted form is what is signed and sent") {
    Session s;
    s.open_ready(kEhloPipelining);
    auto t = txn({"a@example.org"}, "Subject: t\n\ncaf\xc3\xa9\n");
    t.signer = signer;
    REQUIRE(s.send(std::move(t)));
    const std::string converted =
        "Subject: t\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=unknown-8bit\r\n"
        "Content-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9\r\n";
    REQUIRE(signer->seen.size() == 1);
    CHECK(signer->seen[0] == converted);
    s.wrote();
    s.server("250 ok\r\n250 ok\r\n354 go\r\n");
    CHECK(s.wrote() == "X-Signed: yes\r\n" + converted + ".\r\n");
  }
  SECTION("a message the server refuses anyway is not signed") {
    Session s;
    s.open_ready("250-mx.example.org\r\n250-PIPELINING\r\n250 SIZE 10\r\n");
    auto t = txn({"a@example.org"}, "Subject: caf\xc3\xa9\n\nx\n");
    t.signer = signer;
    REQUIRE(s.send(std::move(t)));
    CHECK(signer->seen.empty());
  }
  SECTION("a signing error defers the recipients, nothing is sent, the session goes on") {
    Session s;
    s.open_ready(kEhloFull);
    auto t = txn({"a@example.org", "b@example.org"});
    t.signer = std::make_shared<RecordingSigner>(std::nullopt);
    REQUIRE(s.send(std::move(t)));
    CHECK(s.wrote().empty());
    const Reply expected(451, "4.7.0",
                         "[internal] the message could not be signed: the key is gone");
    CHECK(s.get<smtp_event::TransactionDone>(0).replies == std::vector<Reply>{expected, expected});
    CHECK(s.client->ready());
  }
  SECTION("a signer with nothing to add leaves the message alone") {
    Session s;
    s.open_ready(kEhloFull);
    auto t = txn({"a@example.org"});
    t.signer = std::make_shared<RecordingSigner>(std::string());
    REQUIRE(s.send(std::move(t)));
    s.wrote();
    s.server("250 ok\r\n250 ok\r\n354 go\r\n");
    CHECK(s.wrote() == "Subject: t\r\n\r\nhi\r\n.\r\n");
  }
}

TEST_CASE("SmtpClient: SMTPUTF8 when needed", "[smtp][client][utf8]") {
  SECTION("offered: the parameter is sent") {
    Session s;
    s.open_ready("250-mx\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n");
    auto t = txn({"δοκιμή@παράδειγμα.δοκιμή"}, "x\n", "sender@example.net");
    t.smtputf8 = true;
    REQUIRE(s.send(std::move(t)));
    CHECK(s.wrote() ==
          "MAIL FROM:<sender@example.net> SMTPUTF8\r\n"
          "RCPT TO:<δοκιμή@παράδειγμα.δοκιμή>\r\nDATA\r\n");
  }
  SECTION("not offered: permanent 553 5.6.7 for all, nothing sent") {
    Session s;
    s.open_ready(kEhloPipelining);
    auto t = txn({"a@example.org", "b@example.org"}, "x\n", "sénder@example.net");
    REQUIRE(s.send(std::move(t)));  // detected from the address even without the flag
    CHECK(s.wrote().empty());
    const auto& done = s.get<smtp_event::TransactionDone>(0);
    REQUIRE(done.replies.size() == 2);
    CHECK(done.replies[0].code == 553);
    CHECK(done.replies[0].enhanced == "5.6.7");
    CHECK(done.replies[0].permanent());
    CHECK(done.replies[1] == done.replies[0]);
    CHECK(s.client->ready());
  }
  SECTION("UTF-8 header fields with ASCII addresses: said where offered, sent as they are else") {
    const std::string body =
        "Subject: Gr\xc3\xbc\xc3\x9f"
        "e\n\nhallo\n";
    Session s;
    s.open_ready("250-mx\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n");
    REQUIRE(s.send(txn({"a@example.org"}, body, "sender@example.net")));
    CHECK(s.wrote() ==
          "MAIL FROM:<sender@example.net> BODY=8BITMIME SMTPUTF8\r\n"
          "RCPT TO:<a@example.org>\r\nDATA\r\n");
    Session plain;
    plain.open_ready("250-mx\r\n250-PIPELINING\r\n250 8BITMIME\r\n");
    REQUIRE(plain.send(txn({"a@example.org"}, body, "sender@example.net")));
    CHECK(plain.wrote() ==
          "MAIL FROM:<sender@example.net> BODY=8BITMIME\r\nRCPT TO:<a@example.org>\r\nDATA\r\n");
    // Latin-1 octets are not UTF-8; UTF-8 in the body only is not a header field, nor is a
    // first line that is no field at all.
    for (const std::string other :
         {std::string("Subject: caf\xe9\n\nx\n"), std::string("Subject: t\n\ncaf\xc3\xa9\n"),
          std::string("caf\xc3\xa9 is no field\n.x\n")}) {
      Session o;
      o.open_ready("250-mx\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n");
      REQUIRE(o.send(txn({"a@example.org"}, other, "sender@example.net")));
      CHECK(o.wrote().find("SMTPUTF8") == std::string::npos);
    }
  }
}

// --- multi-line and malformed replies -------------------------------------------------------

TEST_CASE("SmtpClient: a whole session fed split at every byte position gives the same bytes",
          "[smtp][client]") {
  const std::string greeting = "220-mx.example.org ESMTP\r\n220 hello\r\n";
  const std::string ehlo = kEhloFull;
  const std::string envelope = "250 2.1.0 ok\r\n250-2.1.5 fine\r\n250 2.1.5 ok\r\n354 go\r\n";
  const std::string final_reply = "250-2.0.0 queued\r\n250 2.0.0 as X\r\n";
  auto run = [&](std::size_t cut) {
    Session s;
    s.connect();
    std::string all_out;
    auto feed = [&](const std::string& bytes) {
      s.server(bytes.substr(0, cut < bytes.size() ? cut : bytes.size()));
      all_out += s.wrote();
      if (cut < bytes.size()) s.server(bytes.substr(cut));
      all_out += s.wrote();
    };
    feed(greeting);
    feed(ehlo);
    REQUIRE(s.client->ready());
    REQUIRE(s.send(txn({"a@example.org"})));
    all_out += s.wrote();
    feed(envelope);
    feed(final_reply);
    REQUIRE(s.count<smtp_event::TransactionDone>() == 1);
    CHECK(s.get<smtp_event::TransactionDone>(1).replies[0] == Reply(250, "2.0.0", "queued\nas X"));
    return all_out;
  };
  const std::string expected =
      "EHLO client.example\r\n"
      "MAIL FROM:<sender@example.net> SIZE=18\r\nRCPT TO:<a@example.org>\r\nDATA\r\n"
      "Subject: t\r\n\r\nhi\r\n.\r\n";
  std::size_t longest = ehlo.size();
  for (std::size_t cut = 0; cut <= longest; ++cut) {
    INFO("cut at " << cut);
    CHECK(run(cut) == expected);
  }
}

TEST_CASE("SmtpClient: malformed replies end the session as a transient protocol error",
          "[smtp][client]") {
  struct Case {
    const char* wire;
    const char* text;
  };
  const Case cases[] = {
      {"250-first\r\n550 second\r\n",
       "421 4.5.0 [internal] protocol error: mismatched reply codes in a multi-line reply (250 "
       "then 550)"},
      {"2x0 what\r\n", "421 4.5.0 [internal] protocol error: invalid reply code in \"2x0 what\""},
      {"650 what\r\n", "421 4.5.0 [internal] protocol error: invalid reply code in \"650 what\""},
      {"250ok\r\n",
       "421 4.5.0 [internal] protocol error: no separator after the reply code in \"250ok\""},
  };
  for (const auto& c : cases) {
    Session s;
    s.open_ready(kEhloPipelining);
    REQUIRE(s.send(txn({"a@example.org", "b@example.org"})));
    s.wrote();
    s.server(c.wire);
    REQUIRE(s.events.size() == 2);
    // The transaction ends first, every recipient with the transient protocol error.
    const auto& done = s.get<smtp_event::TransactionDone>(0);
    CHECK(str(done.replies[0]) == c.text);
    CHECK(done.replies[1] == done.replies[0]);
    const auto& f = s.get<smtp_event::Failed>(1);
    CHECK(str(f.reply) == c.text);
    CHECK(f.phase == SmtpPhase::mail);
    CHECK_FALSE(f.connection_level);
    CHECK(s.client->finished());
    CHECK(s.wrote().empty());
  }
}

TEST_CASE("SmtpClient: an over-long reply line or reply ends the session", "[smtp][client]") {
  SECTION("line") {
    auto o = Session::make_options();
    o.max_reply_line = 512;
    Session s(o);
    s.connect();
    s.server("220 " + std::string(600, 'x'));  // refused before the line ends
    CHECK(str(s.failed().reply) ==
          "421 4.5.0 [internal] protocol error: reply line longer than 512 octets");
    CHECK(s.failed().connection_level);
  }
  SECTION("lines") {
    auto o = Session::make_options();
    o.max_reply_lines = 5;
    Session s(o);
    s.connect();
    s.server("220 hi\r\n");
    s.wrote();
    for (int i = 0; i < 6; ++i) s.server("250-X\r\n");
    CHECK(str(s.failed().reply) ==
          "421 4.5.0 [internal] protocol error: reply longer than 5 lines");
  }
}

TEST_CASE("SmtpClient: a reply while no command is outstanding is a protocol error",
          "[smtp][client]") {
  SECTION("idle") {
    Session s;
    s.open_ready(kEhloPipelining);
    s.server("250 surprise\r\n");
    CHECK(str(s.failed().reply) ==
          "421 4.5.0 [internal] protocol error: reply received while no command was "
          "outstanding: \"250 surprise\"");
    CHECK_FALSE(s.failed().connection_level);
    CHECK(s.failed().phase == SmtpPhase::idle);
  }
  SECTION("one reply too many after a transaction") {
    Session s;
    s.open_ready(kEhloPipelining);
    REQUIRE(s.send(txn({"a@example.org"})));
    s.wrote();
    s.server("250 ok\r\n250 ok\r\n354 go\r\n");
    s.wrote();
    s.server("250 done\r\n250 extra\r\n");
    REQUIRE(s.events.size() == 2);
    CHECK(s.get<smtp_event::TransactionDone>(0).replies[0] == Reply(250, "", "done"));
    CHECK(s.get<smtp_event::Failed>(1).reply.code == 421);
  }
  SECTION("a 421 while idle is the server closing, not a protocol error") {
    Session s;
    s.open_ready(kEhloPipelining);
    s.server("421 4.4.2 idle timeout\r\n");
    CHECK(s.failed().reply == Reply(421, "4.4.2", "idle timeout"));
    CHECK(s.failed().phase == SmtpPhase::idle);
    CHECK_FALSE(s.failed().connection_level);
  }
}

TEST_CASE("SmtpClient: 421 in the middle of a pipelined transaction ends the session",
          "[smtp][client]") {
  Session s;
  s.open_ready(kEhloPipelining);
  REQUIRE(s.send(txn({"a@example.org", "b@example.org", "c@example.org"})));
  s.wrote();
  s.server("250 ok\r\n550 5.1.1 no a\r\n421 4.7.0 shutting down\r\n");
  REQUIRE(s.events.size() == 2);
  const auto& done = s.get<smtp_event::TransactionDone>(0);
  CHECK(done.replies == std::vector<Reply>{Reply(550, "5.1.1", "no a"),
                                           Reply(421, "4.7.0", "shutting down"),
                                           Reply(421, "4.7.0", "shutting down")});
  CHECK(s.get<smtp_event::Failed>(1).reply == Reply(421, "4.7.0", "shutting down"));
  CHECK(s.get<smtp_event::Failed>(1).phase == SmtpPhase::rcpt);
}

// --- STARTTLS -------------------------------------------------------------------------------

TEST_CASE("SmtpClient: STARTTLS when offered, then EHLO again with fresh capabilities",
          "[smtp][client][tls]") {
  auto o = Session::make_options();
  o.tls = TlsPolicy::opportunistic;
  o.ca_file = "/etc/ssl/ca.pem";
  Session s(o);
  s.open("250-mx.example.org\r\n250-PIPELINING\r\n250-SIZE 100\r\n250 STARTTLS\r\n");
  CHECK(s.wrote() == "STARTTLS\r\n");
  CHECK(s.client->phase() == SmtpPhase::starttls);
  CHECK(s.client->deadline() == s.now + s.options.timeouts.starttls);
  CHECK(s.events.empty());
  s.server("220 2.0.0 Ready to start TLS\r\n");
  REQUIRE(s.events.size() == 1);
  const auto& st = s.get<smtp_event::StartTls>(0);
  CHECK(st.options.server_name == "mx.example.org");
  CHECK_FALSE(st.options.verify);
  CHECK(st.options.ca_file == "/etc/ssl/ca.pem");
  CHECK(s.client->phase() == SmtpPhase::tls_handshake);
  CHECK(s.client->deadline() == s.now + s.options.timeouts.starttls);
  CHECK(s.wrote().empty());
  TlsInfo info{"TLSv1.3", "TLS_AES_256_GCM_SHA384", false, ""};
  s.client->on_tls_established(info, s.now);
  s.drain();
  CHECK(s.client->capabilities().size == 0);  // forgotten
  CHECK_FALSE(s.client->capabilities().pipelining);
  CHECK(s.wrote() == "EHLO client.example\r\n");
  s.server("250-mx.example.org\r\n250 8BITMIME\r\n");
  REQUIRE(s.events.size() == 2);
  const auto& ready = s.get<smtp_event::Ready>(1);
  CHECK(ready.capabilities.eightbitmime);
  CHECK_FALSE(ready.capabilities.pipelining);
  CHECK_FALSE(ready.capabilities.starttls);
  CHECK(ready.greeting == Reply(220, "", "mx.example.org ESMTP"));
  REQUIRE(s.client->tls());
  CHECK(s.client->tls()->version == "TLSv1.3");
  CHECK(s.wrote().empty());  // no second STARTTLS
}

TEST_CASE("SmtpClient: plaintext buffered after the 220 to STARTTLS is refused",
          "[smtp][client][tls][security]") {
  auto o = Session::make_options();
  o.tls = TlsPolicy::opportunistic;
  SECTION("in the same read as the 220") {
    Session s(o);
    s.open("250-mx\r\n250 STARTTLS\r\n");
    CHECK(s.wrote() == "STARTTLS\r\n");
    s.server("220 go ahead\r\n250-mx\r\n250 AUTH PLAIN\r\n");
    REQUIRE(s.events.size() == 1);  // no StartTls
    const auto& f = s.failed();
    CHECK(f.phase == SmtpPhase::starttls);
    CHECK(str(f.reply) ==
          "421 4.5.0 [internal] protocol error: data received after the reply to STARTTLS, "
          "before the TLS handshake (possible response injection)");
    CHECK(f.connection_level);
    CHECK_FALSE(f.tls_failure);
    CHECK(s.wrote().empty());
  }
  SECTION("a partial line after the 220 counts too") {
    Session s(o);
    s.open("250-mx\r\n250 STARTTLS\r\n");
    s.wrote();
    s.server("220 go ahead\r\n2");
    CHECK(s.count<smtp_event::StartTls>() == 0);
    CHECK(s.failed().reply.code == 421);
  }
  SECTION("in a later read, during the handshake") {
    Session s(o);
    s.open("250-mx\r\n250 STARTTLS\r\n");
    s.wrote();
    s.server("220 go ahead\r\n");
    REQUIRE(s.count<smtp_event::StartTls>() == 1);
    s.server("250 injected\r\n");
    CHECK(s.failed().phase == SmtpPhase::tls_handshake);
    CHECK(s.failed().reply.code == 421);
    // A late handshake result changes nothing.
    s.client->on_tls_established(TlsInfo{}, s.now);
    CHECK(s.wrote().empty());
    CHECK_FALSE(s.client->tls());
  }
}

TEST_CASE("SmtpClient: TLS policy required/verify without STARTTLS never goes on in plaintext",
          "[smtp][client][tls]") {
  for (TlsPolicy p : {TlsPolicy::required, TlsPolicy::verify}) {
    auto o = Session::make_options();
    o.tls = p;
    Session s(o);
    s.open(kEhloPipelining);
    CHECK(s.count<smtp_event::Ready>() == 0);
    const auto& f = s.failed();
    CHECK(str(f.reply) ==
          "451 4.7.4 [internal] STARTTLS required by policy but not offered by the server");
    CHECK(f.reply.transient());
    CHECK_FALSE(f.connection_level);
    CHECK_FALSE(f.tls_failure);
    CHECK(s.wrote() == "QUIT\r\n");
    CHECK_FALSE(s.send(txn({"a@example.org"})));
  }
}

TEST_CASE("SmtpClient: STARTTLS refused: opportunistic goes on, required fails",
          "[smtp][client][tls]") {
  SECTION("opportunistic") {
    auto o = Session::make_options();
    o.tls = TlsPolicy::opportunistic;
    Session s(o);
    s.open("250-mx\r\n250-PIPELINING\r\n250 STARTTLS\r\n");
    CHECK(s.wrote() == "STARTTLS\r\n");
    s.server("454 4.7.0 TLS not available\r\n");
    REQUIRE(s.events.size() == 1);
    CHECK(s.get<smtp_event::Ready>(0).capabilities.pipelining);
    CHECK_FALSE(s.client->tls());
  }
  SECTION("required") {
    auto o = Session::make_options();
    o.tls = TlsPolicy::required;
    Session s(o);
    s.open("250-mx\r\n250 STARTTLS\r\n");
    CHECK(s.wrote() == "STARTTLS\r\n");
    s.server("554 5.7.0 no\r\n");
    CHECK(str(s.failed().reply) ==
          "451 4.7.4 [internal] STARTTLS required by policy but refused by the server: 554 "
          "5.7.0 no");
    CHECK(s.failed().phase == SmtpPhase::starttls);
  }
}

TEST_CASE("SmtpClient: verify policy asks for verification", "[smtp][client][tls]") {
  auto o = Session::make_options();
  o.tls = TlsPolicy::verify;
  Session s(o);
  s.open("250-mx\r\n250 STARTTLS\r\n");
  s.wrote();
  s.server("220 go\r\n");
  CHECK(s.get<smtp_event::StartTls>(0).options.verify);
  SECTION("an unverified session is refused even when the TLS layer let it through") {
    s.client->on_tls_established(TlsInfo{"TLSv1.2", "x", false, ""}, s.now);
    s.drain();
    CHECK(s.failed().tls_failure);
    CHECK(s.wrote().empty());
  }
  SECTION("verified") {
    s.client->on_tls_established(TlsInfo{"TLSv1.2", "x", true, "CN=mx"}, s.now);
    s.drain();
    CHECK(s.wrote() == "EHLO client.example\r\n");
  }
}

TEST_CASE("SmtpClient: a failed TLS handshake is a tls_failure", "[smtp][client][tls]") {
  auto o = Session::make_options();
  o.tls = TlsPolicy::opportunistic;
  Session s(o);
  s.open("250-mx\r\n250 STARTTLS\r\n");
  s.wrote();
  s.server("220 go\r\n");
  s.client->on_tls_failed("certificate expired", s.now);
  s.drain();
  const auto& f = s.failed();
  CHECK(f.phase == SmtpPhase::tls_handshake);
  CHECK(str(f.reply) == "421 4.7.5 [internal] TLS handshake failed: certificate expired");
  CHECK(f.tls_failure);
  CHECK_FALSE(f.connection_level);
  CHECK(s.client->finished());
}

TEST_CASE("SmtpClient: TLS policy none never sends STARTTLS", "[smtp][client][tls]") {
  Session s;  // none
  s.open(kEhloFull);
  CHECK(s.wrote().empty());
  CHECK(s.count<smtp_event::Ready>() == 1);
}

// --- AUTH -----------------------------------------------------------------------------------

namespace {
SmtpClientOptions auth_options(TlsPolicy tls) {
  auto o = Session::make_options();
  o.tls = tls;
  o.auth = AuthCredentials{"user", "pa ss"};
  return o;
}
void through_tls(Session& s) {
  s.open("250-relay\r\n250-AUTH LOGIN\r\n250 STARTTLS\r\n");
  REQUIRE(s.wrote() == "STARTTLS\r\n");
  s.server("220 go\r\n");
  s.client->on_tls_established(TlsInfo{"TLSv1.3", "c", false, ""}, s.now);
  s.drain();
  REQUIRE(s.wrote() == "EHLO client.example\r\n");
}
}  // namespace

TEST_CASE("SmtpClient: AUTH PLAIN after STARTTLS", "[smtp][client][auth]") {
  Session s(auth_options(TlsPolicy::opportunistic));
  through_tls(s);
  s.server("250-relay\r\n250-AUTH LOGIN PLAIN\r\n250 PIPELINING\r\n");
  // base64("\0user\0pa ss")
  CHECK(s.wrote() == "AUTH PLAIN AHVzZXIAcGEgc3M=\r\n");
  CHECK(s.client->phase() == SmtpPhase::auth);
  CHECK(s.count<smtp_event::Ready>() == 0);
  s.server("235 2.7.0 Authentication successful\r\n");
  CHECK(s.count<smtp_event::Ready>() == 1);
  CHECK(s.client->ready());
}

TEST_CASE("SmtpClient: AUTH LOGIN when PLAIN is not offered", "[smtp][client][auth]") {
  Session s(auth_options(TlsPolicy::opportunistic));
  through_tls(s);
  s.server("250-relay\r\n250 AUTH LOGIN\r\n");
  CHECK(s.wrote() == "AUTH LOGIN\r\n");
  s.server("334 VXNlcm5hbWU6\r\n");
  CHECK(s.wrote() == "dXNlcg==\r\n");
  s.server("334 UGFzc3dvcmQ6\r\n");
  CHECK(s.wrote() == "cGEgc3M=\r\n");
  s.server("235 ok\r\n");
  CHECK(s.count<smtp_event::Ready>() == 1);
}

TEST_CASE("SmtpClient: AUTH refused by the server", "[smtp][client][auth]") {
  SECTION("535 is permanent") {
    Session s(auth_options(TlsPolicy::opportunistic));
    through_tls(s);
    s.server("250-relay\r\n250 AUTH PLAIN\r\n");
    s.wrote();
    s.server("535 5.7.8 Authentication credentials invalid\r\n");
    const auto& f = s.failed();
    CHECK(f.phase == SmtpPhase::auth);
    CHECK(f.reply == Reply(535, "5.7.8", "Authentication credentials invalid"));
    CHECK(f.reply.permanent());
    CHECK_FALSE(f.connection_level);
    CHECK(s.wrote() == "QUIT\r\n");
  }
  SECTION("454 is transient") {
    Session s(auth_options(TlsPolicy::opportunistic));
    through_tls(s);
    s.server("250-relay\r\n250 AUTH LOGIN\r\n");
    s.wrote();
    s.server("334 VXNlcm5hbWU6\r\n");
    s.wrote();
    s.server("454 4.7.0 Temporary authentication failure\r\n");
    CHECK(s.failed().reply.transient());
  }
}

TEST_CASE("SmtpClient: no credentials in plaintext unless allowed", "[smtp][client][auth]") {
  SECTION("no STARTTLS offered") {
    Session s(auth_options(TlsPolicy::opportunistic));
    s.open("250-relay\r\n250 AUTH PLAIN LOGIN\r\n");
    CHECK(s.wrote() == "QUIT\r\n");
    const auto& f = s.failed();
    CHECK(str(f.reply) ==
          "451 4.7.0 [internal] AUTH not attempted: the session is not encrypted (no STARTTLS) "
          "and auth_over_plaintext is off");
    CHECK(f.phase == SmtpPhase::auth);
    CHECK_FALSE(f.connection_level);
  }
  SECTION("TLS policy none") {
    Session s(auth_options(TlsPolicy::none));
    s.open("250-relay\r\n250-STARTTLS\r\n250 AUTH PLAIN LOGIN\r\n");
    CHECK(s.wrote() == "QUIT\r\n");
    CHECK(s.failed().reply.code == 451);
  }
  SECTION("plaintext explicitly allowed") {
    auto o = auth_options(TlsPolicy::none);
    o.auth_over_plaintext = true;
    Session s(o);
    s.open("250-relay\r\n250 AUTH PLAIN\r\n");
    CHECK(s.wrote() == "AUTH PLAIN AHVzZXIAcGEgc3M=\r\n");
  }
  SECTION("no usable mechanism") {
    Session s(auth_options(TlsPolicy::opportunistic));
    through_tls(s);
    s.server("250-relay\r\n250 AUTH CRAM-MD5\r\n");
    CHECK(s.wrote() == "QUIT\r\n");
    CHECK(str(s.failed().reply) ==
          "451 4.7.0 [internal] AUTH not attempted: the server offers neither AUTH PLAIN nor "
          "AUTH LOGIN");
  }
}

// --- timeouts -------------------------------------------------------------------------------

TEST_CASE("SmtpClient: each phase has its own timeout", "[smtp][client][timeout]") {
  struct Step {
    const char* name;
    SmtpPhase phase;
    Duration SmtpTimeouts::*timeout;
  };
  SmtpTimeouts t;
  t.greeting = Duration(1001);
  t.ehlo = Duration(1002);
  t.starttls = Duration(1003);
  t.mail = Duration(1004);
  t.rcpt = Duration(1005);
  t.data_init = Duration(1006);
  t.data_block = Duration(1007);
  t.data_term = Duration(1008);
  t.rset = Duration(1009);
  t.quit = Duration(1010);

  auto expect_timeout = [](Session& s, SmtpPhase phase, Duration d, const char* what,
                           bool connection_level) {
    CHECK(s.client->phase() == phase);
    REQUIRE(s.client->deadline() == s.now + d);
    s.advance(d - Duration(1));
    s.timeout();  // early: ignored
    CHECK_FALSE(s.client->finished());
    s.advance(Duration(1));
    s.timeout();
    REQUIRE(s.client->finished());
    CHECK(str(s.failed().reply) == std::string("421 4.4.2 [internal] timeout waiting for ") + what);
    CHECK(s.failed().phase == phase);
    CHECK(s.failed().connection_level == connection_level);
  };
  auto o = Session::make_options();
  o.timeouts = t;

  SECTION("greeting") {
    Session s(o);
    s.connect();
    expect_timeout(s, SmtpPhase::greeting, t.greeting, "the greeting", true);
  }
  SECTION("ehlo") {
    Session s(o);
    s.connect();
    s.server("220 hi\r\n");
    s.wrote();
    expect_timeout(s, SmtpPhase::ehlo, t.ehlo, "reply to EHLO", true);
  }
  SECTION("helo") {
    Session s(o);
    s.open("502 no\r\n");
    s.wrote();
    expect_timeout(s, SmtpPhase::helo, t.ehlo, "reply to HELO", true);
  }
  SECTION("starttls and the handshake") {
    o.tls = TlsPolicy::opportunistic;
    Session s(o);
    s.open("250-mx\r\n250 STARTTLS\r\n");
    s.wrote();
    CHECK(s.client->deadline() == s.now + t.starttls);
    Session s2(o);
    s2.open("250-mx\r\n250 STARTTLS\r\n");
    s2.wrote();
    expect_timeout(s2, SmtpPhase::starttls, t.starttls, "reply to STARTTLS", true);
    s.server("220 go\r\n");
    expect_timeout(s, SmtpPhase::tls_handshake, t.starttls, "the TLS handshake", true);
    CHECK(s.failed().tls_failure);
  }
  SECTION("auth") {
    o.auth = AuthCredentials{"u", "p"};
    o.auth_over_plaintext = true;
    Session s(o);
    s.open("250-mx\r\n250 AUTH PLAIN\r\n");
    s.wrote();
    expect_timeout(s, SmtpPhase::auth, t.ehlo, "reply to AUTH", true);
  }
  SECTION("transaction phases") {
    auto run_to = [&](Session& s, int stage) {
      s.open_ready(kEhloPlain);
      REQUIRE(s.send(txn({"a@example.org", "b@example.org"})));
      s.wrote();
      const char* replies[] = {"250 ok\r\n", "250 ok\r\n", "550 no b\r\n", "354 go\r\n"};
      for (int i = 0; i < stage; ++i) {
        s.server(replies[i]);
        s.wrote();
      }
    };
    SECTION("mail") {
      Session s(o);
      run_to(s, 0);
      expect_timeout(s, SmtpPhase::mail, t.mail, "reply to MAIL", false);
      const auto& done = s.get<smtp_event::TransactionDone>(0);
      CHECK(str(done.replies[0]) == "421 4.4.2 [internal] timeout waiting for reply to MAIL");
      CHECK(done.replies[1] == done.replies[0]);
    }
    SECTION("rcpt") {
      Session s(o);
      run_to(s, 2);
      expect_timeout(s, SmtpPhase::rcpt, t.rcpt, "reply to RCPT", false);
      const auto& done = s.get<smtp_event::TransactionDone>(0);
      CHECK(str(done.replies[0]) == "421 4.4.2 [internal] timeout waiting for reply to RCPT");
    }
    SECTION("data") {
      Session s(o);
      run_to(s, 3);
      expect_timeout(s, SmtpPhase::data, t.data_init, "reply to DATA", false);
      const auto& done = s.get<smtp_event::TransactionDone>(0);
      CHECK(str(done.replies[0]) == "421 4.4.2 [internal] timeout waiting for reply to DATA");
      CHECK(done.replies[1] == Reply(550, "", "no b"));  // its own final answer stays
    }
    SECTION("body, without a drained notice: data block + data term") {
      Session s(o);
      run_to(s, 4);
      expect_timeout(s, SmtpPhase::body, t.data_block + t.data_term, "reply to end of data", false);
      const auto& done = s.get<smtp_event::TransactionDone>(0);
      CHECK(str(done.replies[0]) ==
            "421 4.4.2 [internal] timeout waiting for reply to end of data");
      CHECK(done.replies[1] == Reply(550, "", "no b"));
      CHECK(done.data_reply.empty());
    }
    SECTION("data_term, after the host says the body is written") {
      Session s(o);
      run_to(s, 4);
      s.advance(Duration(500));
      s.client->on_output_drained(s.now);
      expect_timeout(s, SmtpPhase::data_term, t.data_term, "reply to end of data", false);
    }
    SECTION("rset") {
      Session s(o);
      s.open_ready(kEhloPlain);
      REQUIRE(s.send(txn({"a@example.org"})));
      s.wrote();
      s.server("550 no\r\n");
      REQUIRE(s.send(txn({"a@example.org"})));
      CHECK(s.wrote() == "RSET\r\n");
      expect_timeout(s, SmtpPhase::rset, t.rset, "reply to RSET", false);
      CHECK(str(s.get<smtp_event::TransactionDone>(1).replies[0]) ==
            "421 4.4.2 [internal] timeout waiting for reply to RSET");
    }
  }
  SECTION("quit: a timeout closes") {
    Session s(o);
    s.open_ready(kEhloPlain);
    s.client->quit(s.now);
    CHECK(s.wrote() == "QUIT\r\n");
    REQUIRE(s.client->deadline() == s.now + t.quit);
    s.advance(t.quit);
    s.timeout();
    REQUIRE(s.events.size() == 1);
    CHECK(std::holds_alternative<smtp_event::Closed>(s.events[0]));
  }
}

TEST_CASE("SmtpClient: the body allowance grows with the body size", "[smtp][client][timeout]") {
  Session s;
  s.open_ready(kEhloPlain);
  std::string big(3 * 1024 * 1024, 'a');  // one line, three MiB (+ CRLF, + terminator)
  REQUIRE(s.send(txn({"a@example.org"}, big)));
  s.wrote();
  s.server("250 ok\r\n");
  s.wrote();
  s.server("250 ok\r\n");
  s.wrote();
  s.server("354 go\r\n");
  CHECK(s.wrote().size() == big.size() + 5);
  CHECK(s.client->deadline() ==
        s.now + s.options.timeouts.data_block * 4 + s.options.timeouts.data_term);
}

TEST_CASE(
    "SmtpClient: a host that reports write progress gets a data-block timeout per write and "
    "the data-termination timeout from the dot",
    "[smtp][client][timeout]") {
  SmtpClientOptions o = Session::make_options();
  o.reports_output_progress = true;
  o.timeouts.data_block = Duration(2000);
  o.timeouts.data_term = Duration(3000);
  Session s(o);
  s.open_ready(kEhloPlain);
  std::string big(5 * 1024 * 1024, 'a');  // five MiB: no longer five data blocks
  REQUIRE(s.send(txn({"a@example.org"}, big)));
  s.wrote();
  s.server("250 ok\r\n");
  s.wrote();
  s.server("250 ok\r\n");
  s.wrote();
  s.server("354 go\r\n");
  CHECK(s.wrote().size() == big.size() + 5);
  CHECK(s.client->deadline() == s.now + Duration(2000));
  // Each write that completes restarts the data block.
  s.advance(Duration(1500));
  s.client->on_output_progress(s.now);
  CHECK(s.client->deadline() == s.now + Duration(2000));
  SECTION("the server stops taking the body") {
    s.advance(Duration(2000));
    s.timeout();
    const auto& done = s.get<smtp_event::TransactionDone>(0);
    CHECK(str(done.replies[0]) == "421 4.4.2 [internal] timeout sending the message body");
  }
  SECTION("the body is out: the reply to the dot has data_term from then") {
    s.advance(Duration(700));
    s.client->on_output_drained(s.now);
    CHECK(s.client->deadline() == s.now + Duration(3000));
    s.client->on_output_progress(s.now + Duration(100));  // late news changes nothing
    CHECK(s.client->deadline() == s.now + Duration(3000));
    s.advance(Duration(3000));
    s.timeout();
    const auto& done = s.get<smtp_event::TransactionDone>(0);
    CHECK(str(done.replies[0]) == "421 4.4.2 [internal] timeout waiting for reply to end of data");
  }
}

// --- connection lost and quit ---------------------------------------------------------------

TEST_CASE("SmtpClient: connection lost mid-body", "[smtp][client]") {
  Session s;
  s.open_ready(kEhloPipelining);
  REQUIRE(s.send(txn({"a@example.org", "b@example.org"})));
  s.wrote();
  s.server("250 ok\r\n250 ok\r\n451 4.3.0 b later\r\n354 go\r\n");
  CHECK(s.client->phase() == SmtpPhase::body);
  s.wrote();
  s.closed("connection reset by peer");
  REQUIRE(s.events.size() == 2);
  const auto& done = s.get<smtp_event::TransactionDone>(0);
  CHECK(str(done.replies[0]) ==
        "421 4.4.2 [internal] connection lost waiting for reply to end of data: connection "
        "reset by peer");
  CHECK(done.replies[1] == Reply(451, "4.3.0", "b later"));
  const auto& f = s.get<smtp_event::Failed>(1);
  CHECK(f.phase == SmtpPhase::body);
  CHECK(f.reply == done.replies[0]);
  CHECK_FALSE(f.connection_level);
  CHECK(s.client->transactions() == 1);
}

TEST_CASE("SmtpClient: connection lost before Ready is connection level", "[smtp][client]") {
  Session s;
  s.connect();
  s.closed("connection closed by the server");
  CHECK(str(s.failed().reply) ==
        "421 4.4.2 [internal] connection lost waiting for the greeting: connection closed by "
        "the server");
  CHECK(s.failed().connection_level);
  // Nothing after the end.
  s.server("220 hi\r\n");
  s.closed();
  s.timeout();
  CHECK(s.events.size() == 1);
}

TEST_CASE("SmtpClient: the server closing an idle session", "[smtp][client]") {
  Session s;
  s.open_ready(kEhloPlain);
  s.closed("");
  CHECK(str(s.failed().reply) == "421 4.4.2 [internal] connection closed by the server");
  CHECK_FALSE(s.failed().connection_level);
}

TEST_CASE("SmtpClient: quit", "[smtp][client]") {
  SECTION("the peer closes after QUIT") {
    Session s;
    s.open_ready(kEhloPlain);
    s.client->quit(s.now);
    CHECK(s.wrote() == "QUIT\r\n");
    CHECK_FALSE(s.client->ready());
    s.closed("");
    REQUIRE(s.events.size() == 1);
    CHECK(std::holds_alternative<smtp_event::Closed>(s.events[0]));
  }
  SECTION("any reply to QUIT closes") {
    Session s;
    s.open_ready(kEhloPlain);
    s.client->quit(s.now);
    s.wrote();
    s.server("500 what\r\n");
    CHECK(std::holds_alternative<smtp_event::Closed>(s.events.back()));
  }
  SECTION("before Ready: closed at once, no bytes") {
    Session s;
    s.connect();
    s.client->quit(s.now);
    s.drain();
    CHECK(s.wrote().empty());
    REQUIRE(s.events.size() == 1);
    CHECK(std::holds_alternative<smtp_event::Closed>(s.events[0]));
    CHECK(s.client->finished());
  }
  SECTION("during a transaction: the transaction ends transient, no QUIT inside the data") {
    Session s;
    s.open_ready(kEhloPipelining);
    REQUIRE(s.send(txn({"a@example.org"})));
    s.wrote();
    s.server("250 ok\r\n250 ok\r\n354 go\r\n");
    s.wrote();
    s.client->quit(s.now);
    s.drain();
    CHECK(s.wrote().empty());
    REQUIRE(s.events.size() == 2);
    const auto& done = s.get<smtp_event::TransactionDone>(0);
    CHECK(done.replies[0].code == 451);
    CHECK(done.replies[0].transient());
    CHECK(std::holds_alternative<smtp_event::Closed>(s.events[1]));
  }
}

TEST_CASE("SmtpClient: to_string(SmtpPhase)", "[smtp][client]") {
  CHECK(std::string(to_string(SmtpPhase::data_term)) == "data_term");
  CHECK(std::string(to_string(SmtpPhase::tls_handshake)) == "tls_handshake");
  CHECK(std::string(to_string(SmtpPhase::idle)) == "idle");
}
