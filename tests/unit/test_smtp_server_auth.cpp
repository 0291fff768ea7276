// SmtpServerSession: STARTTLS (RFC 3207) and AUTH PLAIN / LOGIN (RFC 4954, RFC 4616) as a
// state machine: what is offered when, what the client's bytes become, what the host is asked.
#include <catch2/catch.hpp>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "mailq/smtp_server.h"

using namespace mailq;

namespace {

SmtpServerConfig tls_config() {
  SmtpServerConfig c;
  c.hostname = "mx.test";
  c.limits.max_message_size = 1000;
  c.limits.max_errors = 10;
  c.starttls = true;
  c.auth.enabled = true;
  return c;
}

// A host that knows one user (alice / secret) and records what it was asked.
struct AuthHost {
  std::vector<ReceivedMessage> messages;
  std::vector<AuthRequest> requests;
  std::vector<std::function<void(AuthVerdict)>> pending;
  bool sync = true;
  std::optional<AuthVerdict> forced;
  std::function<Reply(const SenderCheck&)> check_sender;
  std::unique_ptr<SmtpServerSession> session;
  std::string output;

  explicit AuthHost(SmtpServerConfig config = tls_config(), bool with_authenticate = true) {
    SmtpServerSession::Callbacks cb;
    cb.on_message = [this](ReceivedMessage m, std::function<void(Reply)> done) {
      messages.push_back(std::move(m));
      done(Reply(250, "2.0.0", "Ok: queued"));
    };
    if (with_authenticate) {
      cb.authenticate = [this](AuthRequest r, std::function<void(AuthVerdict)> done) {
        const bool good = r.user == "alice" && r.password == "secret";
        requests.push_back(std::move(r));
        const AuthVerdict v = forced ? *forced
                              : good ? AuthVerdict::accepted
                                     : AuthVerdict::rejected;
        if (sync) {
          done(v);
        } else {
          pending.push_back([done, v](AuthVerdict) { done(v); });
        }
      };
    }
    cb.check_sender = [this](const SenderCheck& c) {
      return check_sender ? check_sender(c) : Reply(250, "2.1.0", "Ok");
    };
    session = std::make_unique<SmtpServerSession>(std::move(config), std::move(cb), "192.0.2.7");
    session->start();
    output = session->take_output();
  }

  std::string feed(std::string_view bytes) {
    session->feed(bytes);
    std::string out = session->take_output();
    output += out;
    return out;
  }
  // EHLO, STARTTLS, the handshake "done", EHLO again: returns the second EHLO reply.
  std::string encrypt() {
    feed("EHLO client.test\r\n");
    REQUIRE(feed("STARTTLS\r\n") == "220 2.0.0 Ready to start TLS\r\n");
    REQUIRE(session->starting_tls());
    session->tls_started("TLSv1.2 TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256");
    REQUIRE_FALSE(session->starting_tls());
    return feed("EHLO client.test\r\n");
  }
};

bool has(const std::string& s, std::string_view needle) {
  return s.find(needle) != std::string::npos;
}

// base64 of "\0alice\0secret" and friends.
constexpr const char* kAliceSecret = "AGFsaWNlAHNlY3JldA==";
constexpr const char* kAliceWrong = "AGFsaWNlAHdyb25n";  // \0alice\0wrong

}  // namespace

TEST_CASE("SmtpServerSession offers STARTTLS before TLS and AUTH only after it",
          "[smtp_server][tls][auth]") {
  AuthHost h;
  const std::string before = h.feed("EHLO client.test\r\n");
  CHECK(has(before, "250-STARTTLS\r\n"));
  CHECK_FALSE(has(before, "AUTH"));
  REQUIRE(h.feed("STARTTLS\r\n") == "220 2.0.0 Ready to start TLS\r\n");
  h.session->tls_started("TLSv1.2 X");
  CHECK(h.session->tls());
  const std::string after = h.feed("EHLO client.test\r\n");
  CHECK_FALSE(has(after, "STARTTLS"));
  CHECK(has(after, "250-AUTH PLAIN LOGIN\r\n"));

  // Without an authenticate callback AUTH is never offered, nor answered but 502.
  AuthHost none(tls_config(), false);
  CHECK_FALSE(has(none.encrypt(), "AUTH"));
  CHECK(none.feed("AUTH PLAIN " + std::string(kAliceSecret) + "\r\n") ==
        "502 5.5.1 Command not implemented\r\n");
}

TEST_CASE("SmtpServerSession drops what was pipelined behind STARTTLS and forgets the EHLO",
          "[smtp_server][tls]") {
  AuthHost h;
  h.feed("EHLO client.test\r\n");
  // Plaintext injected behind STARTTLS (RFC 3207 §4.2; CVE-2011-0411 in other servers).
  const std::string out = h.feed("STARTTLS\r\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<v@y.test>\r\n");
  CHECK(out == "220 2.0.0 Ready to start TLS\r\n");
  CHECK(h.session->buffered_input() == 0);
  // Bytes fed before the handshake is done are not read as commands either.
  CHECK(h.feed("NOOP\r\n").empty());
  h.session->tls_started("TLSv1.2 TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256");
  CHECK(h.feed("MAIL FROM:<a@b.test>\r\n") == "503 5.5.1 Error: send EHLO or HELO first\r\n");
  h.feed("EHLO client.test\r\n");
  CHECK(h.feed("MAIL FROM:<a@b.test>\r\n") == "250 2.1.0 Ok\r\n");
  h.feed("RCPT TO:<r@c.test>\r\nDATA\r\n");
  h.feed("Subject: x\r\n\r\nbody\r\n.\r\n");
  REQUIRE(h.messages.size() == 1);
  CHECK(h.messages[0].envelope.recipients.size() == 1);
  CHECK(h.messages[0].tls == "TLSv1.2 TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256");
  CHECK(h.messages[0].auth_user.empty());
}

TEST_CASE("SmtpServerSession refuses STARTTLS out of place", "[smtp_server][tls]") {
  AuthHost h;
  CHECK(h.feed("STARTTLS\r\n") == "503 5.5.1 Error: send EHLO first\r\n");
  h.feed("EHLO client.test\r\n");
  CHECK(h.feed("STARTTLS now\r\n") == "501 5.5.4 Syntax: STARTTLS\r\n");
  h.feed("MAIL FROM:<a@b.test>\r\n");
  CHECK(h.feed("STARTTLS\r\n") == "503 5.5.1 Error: MAIL transaction in progress\r\n");
  h.feed("RSET\r\n");
  h.feed("STARTTLS\r\n");
  h.session->tls_started("TLSv1.2 X");
  h.feed("EHLO client.test\r\n");
  CHECK(h.feed("STARTTLS\r\n") == "554 5.5.1 Error: TLS already active\r\n");

  SmtpServerConfig plain = tls_config();
  plain.starttls = false;
  AuthHost p(plain);
  CHECK_FALSE(has(p.feed("EHLO client.test\r\n"), "STARTTLS"));
  CHECK(p.feed("STARTTLS\r\n") == "502 5.5.1 Command not implemented\r\n");
}

TEST_CASE("SmtpServerSession takes AUTH PLAIN with and without an initial response",
          "[smtp_server][auth]") {
  AuthHost h;
  h.encrypt();
  CHECK(h.feed("AUTH PLAIN " + std::string(kAliceSecret) + "\r\n") ==
        "235 2.7.0 Authentication successful\r\n");
  REQUIRE(h.requests.size() == 1);
  CHECK(h.requests[0].mechanism == "PLAIN");
  CHECK(h.requests[0].user == "alice");
  CHECK(h.requests[0].password == "secret");
  CHECK(h.requests[0].client_address == "192.0.2.7");
  CHECK(h.requests[0].tls);
  CHECK(h.session->auth_user() == "alice");
  CHECK(h.feed("AUTH PLAIN " + std::string(kAliceSecret) + "\r\n") ==
        "503 5.5.1 Error: already authenticated\r\n");
  h.feed("MAIL FROM:<alice@example.org> AUTH=<>\r\nRCPT TO:<r@c.test>\r\nDATA\r\n");
  h.feed("Subject: x\r\n\r\nbody\r\n.\r\n");
  REQUIRE(h.messages.size() == 1);
  CHECK(h.messages[0].auth_user == "alice");
  const std::string received =
      received_header(h.messages[0], "mx.test", "ID1", TimePoint(std::chrono::seconds(0)));
  CHECK(
      has(received, " with ESMTPSA (TLSv1.2 TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256) id ID1\r\n"));

  AuthHost two;
  two.encrypt();
  CHECK(two.feed("AUTH PLAIN\r\n") == "334 \r\n");
  CHECK(two.feed(std::string(kAliceSecret) + "\r\n") == "235 2.7.0 Authentication successful\r\n");
}

TEST_CASE("SmtpServerSession takes AUTH LOGIN step by step and with an initial user",
          "[smtp_server][auth]") {
  AuthHost h;
  h.encrypt();
  CHECK(h.feed("AUTH LOGIN\r\n") == "334 VXNlcm5hbWU6\r\n");
  CHECK(h.feed("YWxpY2U=\r\n") == "334 UGFzc3dvcmQ6\r\n");
  CHECK(h.feed("c2VjcmV0\r\n") == "235 2.7.0 Authentication successful\r\n");
  REQUIRE(h.requests.size() == 1);
  CHECK(h.requests[0].mechanism == "LOGIN");
  CHECK(h.requests[0].user == "alice");

  AuthHost i;
  i.encrypt();
  CHECK(i.feed("auth login YWxpY2U=\r\n") == "334 UGFzc3dvcmQ6\r\n");
  CHECK(i.feed("d3Jvbmc=\r\n") == "535 5.7.8 Authentication credentials invalid\r\n");
  CHECK(i.session->auth_user().empty());

  // A password holding a NUL (crypt(3) would stop there: "secret") is nobody's, and the host
  // is not even asked.
  AuthHost n;
  n.encrypt();
  CHECK(n.feed("AUTH LOGIN YWxpY2U=\r\n") == "334 UGFzc3dvcmQ6\r\n");
  CHECK(n.feed("c2VjcmV0AHg=\r\n") == "535 5.7.8 Authentication credentials invalid\r\n");
  CHECK(n.requests.empty());
  CHECK(n.session->auth_user().empty());
}

TEST_CASE("SmtpServerSession refuses AUTH without TLS, cancelled, undecodable or for another",
          "[smtp_server][auth]") {
  AuthHost h;
  h.feed("EHLO client.test\r\n");
  CHECK(h.feed("AUTH PLAIN " + std::string(kAliceSecret) + "\r\n") ==
        "538 5.7.11 Encryption required for requested authentication mechanism\r\n");
  CHECK(h.requests.empty());
  h.feed("STARTTLS\r\n");
  h.session->tls_started("TLSv1.2 X");
  CHECK(h.feed("AUTH PLAIN " + std::string(kAliceSecret) + "\r\n") ==
        "503 5.5.1 Error: send EHLO first\r\n");
  h.feed("EHLO client.test\r\n");
  CHECK(h.feed("AUTH CRAM-MD5\r\n") ==
        "504 5.5.4 Unrecognized authentication type (PLAIN or LOGIN)\r\n");
  CHECK(h.feed("AUTH PLAIN\r\n") == "334 \r\n");
  CHECK(h.feed("*\r\n") == "501 5.0.0 Authentication aborted\r\n");
  CHECK(h.feed("AUTH PLAIN AGFsaWNl=AHM=\r\n") == "501 5.5.2 Cannot decode response\r\n");
  CHECK(h.feed("AUTH PLAIN YWxpY2U=\r\n") ==
        "501 5.5.2 Invalid PLAIN response (authzid NUL user NUL password)\r\n");
  // "bob\0alice\0secret": acting as alice for bob is not offered, and not even checked.
  CHECK(h.feed("AUTH PLAIN Ym9iAGFsaWNlAHNlY3JldA==\r\n") ==
        "535 5.7.8 Authentication credentials invalid (no proxy authorization)\r\n");
  CHECK(h.requests.empty());
  h.feed("MAIL FROM:<a@b.test>\r\n");
  CHECK(h.feed("AUTH PLAIN " + std::string(kAliceSecret) + "\r\n") ==
        "503 5.5.1 Error: MAIL transaction in progress\r\n");

  // allow_plaintext: offered and taken in the clear.
  SmtpServerConfig clear = tls_config();
  clear.auth.allow_plaintext = true;
  AuthHost c(clear);
  CHECK(has(c.feed("EHLO client.test\r\n"), "250-AUTH PLAIN LOGIN\r\n"));
  CHECK(c.feed("AUTH PLAIN " + std::string(kAliceSecret) + "\r\n") ==
        "235 2.7.0 Authentication successful\r\n");
  CHECK_FALSE(c.requests.at(0).tls);
}

TEST_CASE("SmtpServerSession ends a session after max_failures bad logins, 454 when unavailable",
          "[smtp_server][auth]") {
  AuthHost h;
  h.encrypt();
  const std::string bad = "AUTH PLAIN " + std::string(kAliceWrong) + "\r\n";
  CHECK(h.feed(bad) == "535 5.7.8 Authentication credentials invalid\r\n");
  CHECK(h.feed(bad) == "535 5.7.8 Authentication credentials invalid\r\n");
  CHECK(h.feed(bad) ==
        "535 5.7.8 Authentication credentials invalid\r\n"
        "421 4.7.0 mx.test Too many failed authentication attempts, closing connection\r\n");
  CHECK(h.session->closed());
  CHECK(h.session->close_reason() == "too many authentication failures");

  AuthHost u;
  u.forced = AuthVerdict::unavailable;
  u.encrypt();
  CHECK(u.feed("AUTH PLAIN " + std::string(kAliceSecret) + "\r\n") ==
        "454 4.7.0 Temporary authentication failure\r\n");
  CHECK_FALSE(u.session->closed());
}

TEST_CASE("SmtpServerSession reads nothing while the host checks a password",
          "[smtp_server][auth]") {
  AuthHost h;
  h.sync = false;
  h.encrypt();
  CHECK(h.feed("AUTH PLAIN " + std::string(kAliceSecret) + "\r\nMAIL FROM:<a@b.test>\r\n").empty());
  CHECK(h.session->waiting_for_host());
  REQUIRE(h.pending.size() == 1);
  h.pending[0](AuthVerdict::accepted);
  CHECK(h.session->take_output() == "235 2.7.0 Authentication successful\r\n250 2.1.0 Ok\r\n");
  // A second call of the same `done` is ignored.
  h.pending[0](AuthVerdict::rejected);
  CHECK(h.session->take_output().empty());
  CHECK(h.session->auth_user() == "alice");
}

TEST_CASE("SmtpServerSession asks for TLS and AUTH at MAIL when required, then the sender policy",
          "[smtp_server][auth][tls]") {
  SmtpServerConfig c = tls_config();
  c.require_tls = true;
  c.auth.required = true;
  AuthHost h(c);
  h.check_sender = [](const SenderCheck& s) {
    if (s.reverse_path && s.reverse_path->domain() == "example.org" && s.auth_user == "alice" &&
        s.tls && s.client_address == "192.0.2.7")
      return Reply(250, "2.1.0", "Ok");
    return Reply(553, "5.7.1", "Sender address rejected: not owned by user " + s.auth_user);
  };
  h.feed("EHLO client.test\r\n");
  CHECK(h.feed("MAIL FROM:<alice@example.org>\r\n") ==
        "530 5.7.0 Must issue a STARTTLS command first\r\n");
  h.feed("STARTTLS\r\n");
  h.session->tls_started("TLSv1.2 X");
  h.feed("EHLO client.test\r\n");
  CHECK(h.feed("MAIL FROM:<alice@example.org>\r\n") == "530 5.7.0 Authentication required\r\n");
  h.feed("AUTH PLAIN " + std::string(kAliceSecret) + "\r\n");
  CHECK(h.feed("MAIL FROM:<mallory@evil.test>\r\n") ==
        "553 5.7.1 Sender address rejected: not owned by user alice\r\n");
  CHECK(h.feed("MAIL FROM:<alice@example.org> AUTH=alice+40example.org\r\n") == "250 2.1.0 Ok\r\n");
}

TEST_CASE("SmtpServerSession takes the AUTH parameter of MAIL only where AUTH is offered",
          "[smtp_server][auth]") {
  AuthHost h;
  h.feed("EHLO client.test\r\n");
  CHECK(h.feed("MAIL FROM:<a@b.test> AUTH=<>\r\n") == "555 5.5.4 Unsupported parameter AUTH\r\n");
  h.feed("STARTTLS\r\n");
  h.session->tls_started("TLSv1.2 X");
  h.feed("EHLO client.test\r\n");
  CHECK(h.feed("MAIL FROM:<a@b.test> AUTH=+ZZ\r\n") == "501 5.5.4 Bad AUTH parameter\r\n");
  CHECK(h.feed("MAIL FROM:<a@b.test> AUTH=<>\r\n") == "250 2.1.0 Ok\r\n");
}

TEST_CASE("received_header names ESMTPS, ESMTPA and UTF8SMTPSA as RFC 3848 and RFC 6531 do",
          "[smtp_server][tls][auth]") {
  ReceivedMessage m;
  m.helo = "client.test";
  m.client_address = "192.0.2.7";
  m.esmtp = true;
  const TimePoint t{std::chrono::seconds(0)};
  CHECK(has(received_header(m, "mx.test", "", t), " with ESMTP;"));
  m.tls = "TLSv1.2 C";
  CHECK(has(received_header(m, "mx.test", "", t), " with ESMTPS (TLSv1.2 C);"));
  m.auth_user = "alice";
  CHECK(has(received_header(m, "mx.test", "", t), " with ESMTPSA (TLSv1.2 C);"));
  m.tls.clear();
  CHECK(has(received_header(m, "mx.test", "", t), " with ESMTPA;"));
  m.smtputf8 = true;
  m.tls = "TLSv1.2 C";
  CHECK(has(received_header(m, "mx.test", "", t), " with UTF8SMTPSA (TLSv1.2 C);"));
  // The user name is not disclosed in the trace field.
  CHECK_FALSE(has(received_header(m, "mx.test", "", t), "alice"));
}
