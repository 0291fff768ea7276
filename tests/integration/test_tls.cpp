// STARTTLS through mbedTLS (mailq::uv::UvTransport::start_tls) against a real STARTTLS server
// (python3-aiosmtpd) with a test CA and certificates made by openssl at test time, and against
// in-loop peers that break the handshake.

#include <catch2/catch.hpp>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "mailq/error.h"
#include "mailq/smtp_client.h"
#include "mailq/uv/loop_clock.h"
#include "mailq/uv/transport.h"
#include "support/loop_checks.h"
#include "support/loop_server.h"
#include "support/servers.h"
#include "support/smtp_drivers.h"
#include "support/test_loop.h"

using namespace std::chrono_literals;
using mailq::TlsClientOptions;
using mailq::test::AiosmtpdServer;
using mailq::test::RecordingHandler;
using mailq::test::require_clean_close;
using mailq::test::SmtpScript;
using mailq::test::SmtpStep;
using mailq::test::TestLoop;
using mailq::test::TestPki;
using mailq::uv::LoopClock;
using mailq::uv::UvTransport;

namespace {

struct Pki {
  mailq::test::TempDir dir;
  TestPki pki;
  Pki() {
    std::string error;
    const bool ok = pki.generate(dir.path(), &error);
    INFO(error);
    REQUIRE(ok);
  }
};

const std::string kBody =
    "From: adam@hosta.sesta.com\r\n"
    "Subject: over TLS\r\n"
    "\r\n"
    ".dot-stuffed line\r\n"
    "last line";

// What aiosmtpd keeps of the body: dots unstuffed, CRLF kept, the final CRLF added.
const std::string kStored = kBody + "\r\n";

std::vector<SmtpStep> starttls_steps(const std::string& body = kBody) {
  return {
      {"", 220},
      {"EHLO client.mailq.test\r\n", 250},
      {"STARTTLS\r\n", 220, true},
      {"EHLO client.mailq.test\r\n", 250},
      {"MAIL FROM:<adam@hosta.sesta.com>\r\n", 250},
      {"RCPT TO:<user@some.org>\r\n", 250},
      {"DATA\r\n", 354},
      {mailq::encode_data(body), 250},
      {"QUIT\r\n", 221},
  };
}

std::unique_ptr<AiosmtpdServer> start_server(AiosmtpdServer::Tls tls, const std::string& cert,
                                             const std::string& key) {
  auto server = std::make_unique<AiosmtpdServer>(tls, cert, key);
  std::string error;
  const bool started = server->start(&error);
  INFO(error);
  REQUIRE(started);
  return server;
}

TlsClientOptions verify_with(const std::string& ca_file,
                             const std::string& name = TestPki::kServerName) {
  TlsClientOptions o;
  o.server_name = name;
  o.verify = true;
  o.ca_file = ca_file;
  return o;
}

// Runs the STARTTLS script; returns it finished.
std::unique_ptr<SmtpScript> run_script(TestLoop& loop, UvTransport& transport,
                                       const mailq::Endpoint& at, const TlsClientOptions& tls,
                                       std::vector<SmtpStep> steps = starttls_steps()) {
  auto script = std::make_unique<SmtpScript>(std::move(steps), tls);
  script->start(transport, at);
  REQUIRE(loop.run_until([&] { return script->finished(); }));
  return script;
}

}  // namespace

TEST_CASE("STARTTLS with a certificate of the trusted CA is verified and carries the message",
          "[uv][tls]") {
  Pki p;
  auto server = start_server(AiosmtpdServer::Tls::offered, p.pki.server_cert, p.pki.server_key);
  TestLoop loop;
  {
    LoopClock clock(loop.get());
    UvTransport transport(loop.get(), clock);
    auto script = run_script(loop, transport, server->endpoint(), verify_with(p.pki.ca_cert));
    INFO(server->output());
    REQUIRE(script->failure == "");
    REQUIRE(script->tls_info.has_value());
    const mailq::TlsInfo& info = *script->tls_info;
    CHECK(info.version == "TLSv1.2");
    CHECK(info.cipher.rfind("TLS_ECDHE_ECDSA_WITH_", 0) == 0);  // IANA name, EC test keys
    CHECK(info.cipher.find('-') == std::string::npos);
    CHECK(info.verified);
    CHECK(info.peer_subject == "O=mailq tests, CN=mx.mailq.test");
  }
  require_clean_close(loop);
  CHECK(server->wait_for_output("DATA tls=1 from=<adam@hosta.sesta.com> to=<user@some.org>"));
  CHECK(server->output().find("SNI mx.mailq.test\n") != std::string::npos);
  const auto messages = server->wait_for_messages(1);
  REQUIRE(messages.size() == 1);
  CHECK(messages[0] == kStored);
}

TEST_CASE("STARTTLS verification fails for a certificate of another host name", "[uv][tls]") {
  Pki p;
  auto server = start_server(AiosmtpdServer::Tls::offered, p.pki.server_cert, p.pki.server_key);
  TestLoop loop;
  {
    LoopClock clock(loop.get());
    UvTransport transport(loop.get(), clock);
    auto script = run_script(loop, transport, server->endpoint(),
                             verify_with(p.pki.ca_cert, "other.mailq.test"));
    CHECK_FALSE(script->tls_info.has_value());
    CHECK(script->tls_failure_text ==
          "certificate verification failed: The certificate Common Name (CN) does not match "
          "with the expected CN");
    CHECK(script->failure.rfind("tls: TLS failure: ", 0) == 0);
  }
  require_clean_close(loop);
  CHECK(server->output().find("SNI other.mailq.test\n") != std::string::npos);
  CHECK(server->output().find("DATA") == std::string::npos);
}

TEST_CASE("STARTTLS verification fails for a self-signed certificate", "[uv][tls]") {
  Pki p;
  auto server =
      start_server(AiosmtpdServer::Tls::offered, p.pki.self_signed_cert, p.pki.self_signed_key);
  TestLoop loop;
  {
    LoopClock clock(loop.get());
    UvTransport transport(loop.get(), clock);
    SECTION("against the test CA") {
      auto script = run_script(loop, transport, server->endpoint(), verify_with(p.pki.ca_cert));
      CHECK(script->tls_failure_text ==
            "certificate verification failed: The certificate is not correctly signed by the "
            "trusted CA");
    }
    SECTION("against the system CA bundle") {
      auto script = run_script(loop, transport, server->endpoint(), verify_with(""));
      CHECK(script->tls_failure_text ==
            "certificate verification failed: The certificate is not correctly signed by the "
            "trusted CA");
    }
  }
  require_clean_close(loop);
  CHECK(server->output().find("DATA") == std::string::npos);
}

TEST_CASE("STARTTLS with check only lets any certificate through and says whether it passed",
          "[uv][tls][mta_sts]") {
  Pki p;
  auto server = start_server(AiosmtpdServer::Tls::offered, p.pki.server_cert, p.pki.server_key);
  TestLoop loop;
  {
    LoopClock clock(loop.get());
    UvTransport transport(loop.get(), clock);
    TlsClientOptions o;
    o.server_name = TestPki::kServerName;
    o.check = true;
    o.ca_file = p.pki.ca_cert;
    auto passed = run_script(loop, transport, server->endpoint(), o);
    REQUIRE(passed->tls_info.has_value());
    CHECK(passed->tls_info->verified);
    CHECK(passed->tls_info->verify_problem.empty());
    o.server_name = "other.mailq.test";
    auto failed = run_script(loop, transport, server->endpoint(), o);
    REQUIRE(failed->failure == "");
    REQUIRE(failed->tls_info.has_value());
    CHECK_FALSE(failed->tls_info->verified);
    CHECK(failed->tls_info->verify_problem ==
          "The certificate Common Name (CN) does not match with the expected CN");
  }
  require_clean_close(loop);
  CHECK(server->wait_for_messages(2).size() == 2);
}

TEST_CASE("STARTTLS without verification accepts a self-signed certificate", "[uv][tls]") {
  Pki p;
  auto server =
      start_server(AiosmtpdServer::Tls::offered, p.pki.self_signed_cert, p.pki.self_signed_key);
  TestLoop loop;
  {
    LoopClock clock(loop.get());
    UvTransport transport(loop.get(), clock);
    TlsClientOptions tls;
    tls.server_name = TestPki::kServerName;
    auto script = run_script(loop, transport, server->endpoint(), tls);
    REQUIRE(script->failure == "");
    REQUIRE(script->tls_info.has_value());
    CHECK_FALSE(script->tls_info->verified);
    CHECK(script->tls_info->version == "TLSv1.2");
    CHECK(script->tls_info->peer_subject == "O=mailq self-signed, CN=mx.mailq.test");
  }
  require_clean_close(loop);
  CHECK(server->wait_for_output("DATA tls=1"));
  const auto messages = server->wait_for_messages(1);
  REQUIRE(messages.size() == 1);
  CHECK(messages[0] == kStored);
}

TEST_CASE("a 1 MB message over TLS arrives byte for byte", "[uv][tls][write]") {
  Pki p;
  auto server = start_server(AiosmtpdServer::Tls::required, p.pki.server_cert, p.pki.server_key);
  std::string body = "Subject: big over TLS\r\n\r\n";
  for (int i = 0; body.size() < 1024 * 1024; ++i) {
    body += (i % 10 == 0 ? "." : "") + std::to_string(i) + std::string(70, 'q') + "\r\n";
  }
  TestLoop loop;
  {
    LoopClock clock(loop.get());
    UvTransport transport(loop.get(), clock);
    auto script = run_script(loop, transport, server->endpoint(), verify_with(p.pki.ca_cert),
                             starttls_steps(body));
    REQUIRE(script->failure == "");
  }
  require_clean_close(loop);
  const auto messages = server->wait_for_messages(1);
  REQUIRE(messages.size() == 1);
  CHECK(messages[0].size() == body.size());
  CHECK(messages[0] == body);
}

TEST_CASE("bytes written during the handshake are sent encrypted after it", "[uv][tls][write]") {
  Pki p;
  auto server = start_server(AiosmtpdServer::Tls::offered, p.pki.server_cert, p.pki.server_key);
  TestLoop loop;
  {
    LoopClock clock(loop.get());
    UvTransport transport(loop.get(), clock);
    RecordingHandler h;
    int stage = 0;
    h.after_read = [&] {
      if (stage == 0 && h.received.find("220 ") != std::string::npos) {
        stage = 1;
        h.connection->write("EHLO client.mailq.test\r\n");
      } else if (stage == 1 && h.received.find("\r\n250 ") != std::string::npos) {
        stage = 2;
        h.connection->write("STARTTLS\r\n");
      } else if (stage == 2 && h.received.find("\r\n220 ") != std::string::npos) {
        stage = 3;
        h.connection->start_tls(verify_with(p.pki.ca_cert));
        h.connection->write("EHLO again.mailq.test\r\n");  // before on_tls
        h.received.clear();
      }
    };
    h.connection = transport.connect(server->endpoint(), {}, h);
    REQUIRE(
        loop.run_until([&] { return stage == 3 && h.received.find("250 ") != std::string::npos; }));
    CAPTURE(h.events);
    CHECK_FALSE(h.tls_error);
    REQUIRE(h.tls_info.has_value());
    CHECK(h.tls_info->verified);
    CHECK(h.received.rfind("250-mx.mailq.test\r\n", 0) == 0);
    // Every byte of the reply to the EHLO written during the handshake came after on_tls.
    const auto tls_at = std::find(h.events.begin(), h.events.end(), "tls: ok");
    REQUIRE(tls_at != h.events.end());
    std::string after_tls;
    for (auto it = tls_at + 1; it != h.events.end(); ++it) {
      REQUIRE(it->rfind("read: ", 0) == 0);
      after_tls += it->substr(6);
    }
    CHECK(after_tls == h.received);
    h.connection.reset();
  }
  require_clean_close(loop);
}

TEST_CASE("a CA file that cannot be loaded fails the handshake with a clear reason", "[uv][tls]") {
  Pki p;
  auto server = start_server(AiosmtpdServer::Tls::offered, p.pki.server_cert, p.pki.server_key);
  TestLoop loop;
  {
    LoopClock clock(loop.get());
    UvTransport transport(loop.get(), clock);
    SECTION("missing") {
      auto script =
          run_script(loop, transport, server->endpoint(), verify_with(p.dir.file("missing.pem")));
      CHECK(script->tls_failure_text ==
            "cannot load CA file " + p.dir.file("missing.pem") + ": no such file");
    }
    SECTION("not PEM") {
      mailq::test::write_file(p.dir.file("junk.pem"), "this is not a certificate\n");
      auto script =
          run_script(loop, transport, server->endpoint(), verify_with(p.dir.file("junk.pem")));
      CHECK(script->tls_failure_text.rfind(
                "cannot load CA file " + p.dir.file("junk.pem") + ": X509 - ", 0) == 0);
    }
    SECTION("fixed on disk: the failure was not cached") {
      const std::string ca = p.dir.file("later.pem");
      auto first = run_script(loop, transport, server->endpoint(), verify_with(ca));
      CHECK(first->tls_failure_text == "cannot load CA file " + ca + ": no such file");
      mailq::test::write_file(ca, mailq::test::read_file(p.pki.ca_cert));
      auto second = run_script(loop, transport, server->endpoint(), verify_with(ca));
      CHECK(second->failure == "");
      REQUIRE(second->tls_info.has_value());
      CHECK(second->tls_info->verified);
    }
  }
  require_clean_close(loop);
}

TEST_CASE("verification needs a host name, not an address", "[uv][tls]") {
  Pki p;
  auto server = start_server(AiosmtpdServer::Tls::offered, p.pki.server_cert, p.pki.server_key);
  TestLoop loop;
  {
    LoopClock clock(loop.get());
    UvTransport transport(loop.get(), clock);
    SECTION("no name") {
      auto script = run_script(loop, transport, server->endpoint(), verify_with(p.pki.ca_cert, ""));
      CHECK(script->tls_failure_text == "certificate verification requires a server name");
    }
    SECTION("an IP literal") {
      auto script =
          run_script(loop, transport, server->endpoint(), verify_with(p.pki.ca_cert, "127.0.0.1"));
      CHECK(script->tls_failure_text ==
            "cannot verify a certificate for the IP address 127.0.0.1 (mbedTLS 2.28 checks host "
            "names only)");
    }
  }
  require_clean_close(loop);
}

TEST_CASE("an IP literal server name is not sent as SNI", "[uv][tls]") {
  Pki p;
  auto server = start_server(AiosmtpdServer::Tls::offered, p.pki.server_cert, p.pki.server_key);
  TestLoop loop;
  {
    LoopClock clock(loop.get());
    UvTransport transport(loop.get(), clock);
    TlsClientOptions tls;
    tls.server_name = "127.0.0.1";
    auto script = run_script(loop, transport, server->endpoint(), tls);
    REQUIRE(script->failure == "");
  }
  require_clean_close(loop);
  CHECK(server->output().find("SNI -\n") != std::string::npos);
}

TEST_CASE("a peer that does not speak TLS fails the handshake", "[uv][tls]") {
  TestLoop loop;
  {
    mailq::test::LoopServer server(loop.get());
    REQUIRE(server.ok());
    LoopClock clock(loop.get());
    UvTransport transport(loop.get(), clock);
    RecordingHandler h;
    h.after_connect = [&] { h.connection->start_tls({}); };

    SECTION("it answers the ClientHello with text") {
      server.on_data = [](mailq::test::LoopServer::Peer& peer, std::string_view) {
        peer.write("500 5.5.1 what is this?\r\n");
      };
      h.connection = transport.connect(server.endpoint(), {}, h);
      REQUIRE(loop.run_until([&] { return h.tls_done; }));
      CHECK(h.tls_error == mailq::errc::tls_failure);
      CHECK(h.error_text.rfind("TLS handshake failed: SSL - ", 0) == 0);
    }
    SECTION("it closes the connection") {
      server.on_data = [](mailq::test::LoopServer::Peer& peer, std::string_view) { peer.close(); };
      h.connection = transport.connect(server.endpoint(), {}, h);
      REQUIRE(loop.run_until([&] { return h.tls_done; }));
      CHECK(h.tls_error == mailq::errc::tls_failure);
      CHECK(h.error_text == "the server closed the connection during the TLS handshake");
    }
    loop.run_for(50ms);
    // A failed handshake is reported once; nothing (no on_close) follows it.
    CHECK(h.events == std::vector<std::string>{"connect: ok", "tls: TLS failure"});
    h.connection.reset();
  }
  require_clean_close(loop);
}

TEST_CASE("start_tls out of place is a bad_state report from the loop", "[uv][tls]") {
  TestLoop loop;
  {
    mailq::test::LoopServer server(loop.get());
    REQUIRE(server.ok());
    LoopClock clock(loop.get());
    UvTransport transport(loop.get(), clock);
    RecordingHandler h;
    h.connection = transport.connect(server.endpoint(), {}, h);
    h.connection->start_tls({});  // still connecting
    CHECK(h.events.empty());
    REQUIRE(loop.run_until([&] { return h.tls_done && h.connected; }));
    CHECK(h.tls_error == mailq::errc::bad_state);
    CHECK(h.error_text == "start_tls before the connection is up");
    h.connection.reset();
  }
  require_clean_close(loop);
}

TEST_CASE("a connection destroyed inside on_tls reports nothing more", "[uv][tls][lifetime]") {
  Pki p;
  auto server = start_server(AiosmtpdServer::Tls::offered, p.pki.server_cert, p.pki.server_key);
  TestLoop loop;
  {
    LoopClock clock(loop.get());
    UvTransport transport(loop.get(), clock);
    RecordingHandler h;
    int stage = 0;
    h.after_read = [&] {
      if (stage == 0 && h.received.find("220 ") != std::string::npos) {
        stage = 1;
        h.connection->write("EHLO client.mailq.test\r\n");
      } else if (stage == 1 && h.received.find("\r\n250 ") != std::string::npos) {
        stage = 2;
        h.connection->write("STARTTLS\r\n");
      } else if (stage == 2 && h.received.find("\r\n220 ") != std::string::npos) {
        stage = 3;
        h.connection->start_tls(verify_with(p.pki.ca_cert));
      }
    };
    h.after_tls = [&] {
      h.connection->write("EHLO x\r\n");  // its reply would arrive, but no one listens
      h.connection.reset();
    };
    h.connection = transport.connect(server->endpoint(), {}, h);
    REQUIRE(loop.run_until([&] { return h.tls_done; }));
    loop.run_for(100ms);
    REQUIRE(h.events.size() >= 3);
    CHECK(h.events.back() == "tls: ok");
  }
  require_clean_close(loop);
}

// --- the core's SmtpClient over the real transport -------------------------------------------

namespace {

mailq::SmtpTransaction one_message() {
  mailq::SmtpTransaction tx;
  tx.reverse_path = "adam@hosta.sesta.com";
  tx.recipients = {{"user@some.org"}};
  tx.body = std::make_shared<const std::string>(kBody);
  return tx;
}

}  // namespace

TEST_CASE("SmtpClient with the verify policy delivers over verified TLS", "[uv][tls][smtp]") {
  Pki p;
  auto server = start_server(AiosmtpdServer::Tls::offered, p.pki.server_cert, p.pki.server_key);
  TestLoop loop;
  {
    LoopClock clock(loop.get());
    UvTransport transport(loop.get(), clock);
    mailq::SmtpClientOptions options;
    options.helo_name = "client.mailq.test";
    options.tls = mailq::TlsPolicy::verify;
    options.tls_server_name = TestPki::kServerName;
    options.ca_file = p.pki.ca_cert;
    mailq::test::ClientSession session(clock, options, one_message());
    session.start(transport, server->endpoint());
    REQUIRE(loop.run_until([&] { return session.finished(); }));
    INFO(session.tls_failure_text);
    CHECK(session.start_tls_calls == 1);
    REQUIRE(session.tls_info.has_value());
    CHECK(session.tls_info->verified);
    REQUIRE(session.done.has_value());
    REQUIRE(session.done->replies.size() == 1);
    CHECK(session.done->replies[0].code == 250);
  }
  require_clean_close(loop);
  CHECK(server->wait_for_output("DATA tls=1 from=<adam@hosta.sesta.com> to=<user@some.org>"));
  const auto messages = server->wait_for_messages(1);
  REQUIRE(messages.size() == 1);
  CHECK(messages[0] == kStored);
}

TEST_CASE("SmtpClient with the verify policy refuses a self-signed certificate",
          "[uv][tls][smtp]") {
  Pki p;
  auto server =
      start_server(AiosmtpdServer::Tls::offered, p.pki.self_signed_cert, p.pki.self_signed_key);
  TestLoop loop;
  {
    LoopClock clock(loop.get());
    UvTransport transport(loop.get(), clock);
    mailq::SmtpClientOptions options;
    options.tls = mailq::TlsPolicy::verify;
    options.tls_server_name = TestPki::kServerName;
    options.ca_file = p.pki.ca_cert;
    mailq::test::ClientSession session(clock, options, one_message());
    session.start(transport, server->endpoint());
    REQUIRE(loop.run_until([&] { return session.finished(); }));
    CHECK(session.start_tls_calls == 1);
    CHECK(session.tls_failure_text ==
          "certificate verification failed: The certificate is not correctly signed by the "
          "trusted CA");
    REQUIRE(session.failed.has_value());
    CHECK(session.failed->tls_failure);
    CHECK_FALSE(session.done.has_value());
  }
  require_clean_close(loop);
  CHECK(server->output().find("DATA") == std::string::npos);
}

TEST_CASE("a server that offers no STARTTLS: start_tls is never called", "[uv][tls][smtp]") {
  auto server = start_server(AiosmtpdServer::Tls::none, "", "");
  TestLoop loop;
  {
    LoopClock clock(loop.get());
    UvTransport transport(loop.get(), clock);

    SECTION("opportunistic: plaintext delivery") {
      mailq::SmtpClientOptions options;
      options.tls = mailq::TlsPolicy::opportunistic;
      options.tls_server_name = TestPki::kServerName;
      mailq::test::ClientSession session(clock, options, one_message());
      session.start(transport, server->endpoint());
      REQUIRE(loop.run_until([&] { return session.finished(); }));
      CHECK(session.start_tls_calls == 0);
      REQUIRE(session.done.has_value());
      CHECK(session.done->replies.at(0).code == 250);
      CHECK(server->wait_for_output("DATA tls=0"));
    }
    SECTION("required: no delivery") {
      mailq::SmtpClientOptions options;
      options.tls = mailq::TlsPolicy::required;
      options.tls_server_name = TestPki::kServerName;
      mailq::test::ClientSession session(clock, options, one_message());
      session.start(transport, server->endpoint());
      REQUIRE(loop.run_until([&] { return session.finished(); }));
      CHECK(session.start_tls_calls == 0);
      CHECK(session.failed.has_value());
      CHECK_FALSE(session.done.has_value());
    }
  }
  require_clean_close(loop);
}
