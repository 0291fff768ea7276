// mailq-relay's listener as a submission service: STARTTLS with the configured certificate,
// AUTH against a credentials file made with `mailq-relay --hash-password`, relay permission
// by network or by login, reloads on SIGHUP; driven by swaks, and by a private Postfix 3.7
// relaying into mailq with smtp_sasl_auth_enable.
#include <catch2/catch.hpp>

#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "support/daemon.h"
#include "support/hostile_pki.h"
#include "support/postfix.h"
#include "support/servers.h"
#include "support/tool_runner.h"

#ifdef MAILQ_RELAY_BIN

using namespace mailq::test;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

bool has(const std::string& s, std::string_view needle) {
  return s.find(needle) != std::string::npos;
}

bool wait_until(const std::function<bool()>& done, std::chrono::milliseconds limit = 20s) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(50ms);
  }
  return true;
}

// `mailq-relay --hash-password` with the password on standard input.
std::string hash_of(const std::string& password) {
  ToolRun r = run_tool({MAILQ_RELAY_BIN, "--hash-password"}, password + "\n");
  INFO(r.err);
  REQUIRE(r.status == 0);
  REQUIRE(r.out.rfind("$y$", 0) == 0);
  REQUIRE(r.out.back() == '\n');
  return r.out.substr(0, r.out.size() - 1);
}

// A relay whose listener has STARTTLS and AUTH, relaying to smtp-sink; 127.0.0.2 is the only
// network trusted to relay without AUTH.
struct SecureRelay {
  TempDir dir;
  TestPki pki;
  HostilePki other;
  SmtpSink sink;
  Daemon daemon;
  std::uint16_t port = free_tcp_port();
  std::string cert = dir.file("tls.crt");
  std::string key = dir.file("tls.key");
  std::string credentials = dir.file("credentials");
  std::string config = dir.file("relay.toml");
  std::string log = dir.file("mail.log");

  SecureRelay() {
    std::string error;
    REQUIRE(pki.generate(dir.path(), &error));
    REQUIRE(other.generate(dir.path(), pki, &error));
    INFO(error);
    REQUIRE(sink.start(&error));
    fs::copy_file(pki.server_cert, cert);
    fs::copy_file(pki.server_key, key);
    write_file(credentials, "alice:" + hash_of("correct horse") + ":@example.org\n");
    fs::permissions(credentials, fs::perms::owner_read | fs::perms::owner_write);
    write_file(config, config_text());
  }

  std::string config_text(const std::string& auth_extra = {}) const {
    return "spool = \"" + dir.file("spool") + "\"\nlog = \"" + log +
           "\"\nhelo = \"relay.mailq.test\"\n"
           "\n[listen]\naddress = \"127.0.0.1:" +
           std::to_string(port) +
           "\"\nnetworks = [\"127.0.0.2/32\"]\n"
           "\n[listen.tls]\ncertificate = \"" +
           cert + "\"\nkey = \"" + key +
           "\"\n"
           "\n[listen.auth]\ncredentials = \"" +
           credentials + "\"\n" + auth_extra +
           "\n[delivery]\nidle_timeout = \"200ms\"\n"
           "\n[[route]]\nname = \"tcp_sink\"\ndefault = true\ntls = \"none\"\nhosts = "
           "[\"127.0.0.1:" +
           std::to_string(sink.port()) + "\"]\n";
  }

  void start() {
    std::string error;
    REQUIRE(daemon.start({MAILQ_RELAY_BIN, "--config", config}, dir.file("relay.out"), &error));
    INFO(error << read_file(dir.file("relay.out")));
    REQUIRE(wait_for_listener("127.0.0.1", port, 20s));
  }

  // swaks through the listener (from 127.0.0.1 unless `source` says otherwise).
  ToolRun swaks(std::vector<std::string> extra, const std::string& source = "127.0.0.1") {
    std::vector<std::string> argv = {"/usr/bin/swaks",
                                     "--server",
                                     "127.0.0.1",
                                     "--port",
                                     std::to_string(port),
                                     "--local-interface",
                                     source,
                                     "--helo",
                                     "client.mailq.test",
                                     "--to",
                                     "bob@example.net",
                                     "--timeout",
                                     "20"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return run_tool(argv, {}, {}, 60s);
  }
  std::vector<std::string> tls_args() const {
    return {"--tls", "--tls-verify", "--tls-ca-path", pki.ca_cert, "--tls-sni", "mx.mailq.test"};
  }
  std::vector<std::string> login(const std::string& user, const std::string& password,
                                 const std::string& mechanism = "PLAIN") const {
    auto a = tls_args();
    a.insert(a.end(), {"--auth", mechanism, "--auth-user", user, "--auth-password", password});
    return a;
  }
  std::string log_text() const { return read_file(log); }
};

std::vector<std::string> plus(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

}  // namespace

TEST_CASE(
    "mailq-relay: swaks submits over STARTTLS with AUTH, the message leaves with an ESMTPSA "
    "Received field, without AUTH only the trusted network relays",
    "[relay][listener][tls][auth][interop]") {
  SecureRelay r;
  r.start();

  ToolRun ok = r.swaks(plus(r.login("alice", "correct horse"),
                            {"--from", "alice@example.org", "--h-Subject", "submitted"}));
  INFO(ok.out << ok.err);
  CHECK(ok.status == 0);
  CHECK(has(ok.out, "235 2.7.0 Authentication successful"));
  CHECK(has(ok.out, "250 2.0.0 Ok: queued as "));
  // The D record comes after smtp-sink's 250, so its dump is whole by then.
  REQUIRE(wait_until([&] { return has(r.log_text(), "smtp; 250"); }));
  auto dumps = r.sink.wait_for_dumps(1, 20s);
  REQUIRE(dumps.size() == 1);
  INFO(dumps[0]);
  CHECK(has(dumps[0],
            "Received: from client.mailq.test ([127.0.0.1])\n\tby relay.mailq.test "
            "(mailq) with ESMTPSA (TLSv1.2 TLS_"));
  CHECK(has(dumps[0], "Subject: submitted"));

  // LOGIN works as well.
  ToolRun login =
      r.swaks(plus(r.login("alice", "correct horse", "LOGIN"), {"--from", "alice@example.org"}));
  INFO(login.out << login.err);
  CHECK(login.status == 0);

  // 127.0.0.1 is not a relay network: no mail without AUTH, over TLS or not.
  ToolRun anon = r.swaks(plus(r.tls_args(), {"--from", "alice@example.org"}));
  INFO(anon.out);
  CHECK(anon.status != 0);
  CHECK(has(anon.out, "530 5.7.0 Authentication required"));
  // Nor with a wrong password, nor for a sender alice does not own.
  ToolRun wrong = r.swaks(plus(r.login("alice", "wrong horse"), {"--from", "alice@example.org"}));
  CHECK(has(wrong.out, "535 5.7.8 Authentication credentials invalid"));
  ToolRun foreign = r.swaks(plus(r.login("alice", "correct horse"), {"--from", "ceo@example.net"}));
  CHECK(has(foreign.out,
            "553 5.7.1 <ceo@example.net>: Sender address rejected: not owned by user alice"));
  // 127.0.0.2 is: it relays without AUTH (and sees no AUTH before TLS).
  ToolRun trusted = r.swaks({"--from", "app@example.org"}, "127.0.0.2");
  INFO(trusted.out);
  CHECK(trusted.status == 0);
  CHECK_FALSE(has(trusted.out, "250-AUTH"));
  CHECK(r.sink.wait_for_dumps(3, 20s).size() == 3);

  const std::string log = r.log_text();
  INFO(log);
  CHECK(has(log, "listener: credentials " + r.credentials + ": 1 user"));
  CHECK(has(log, "listener: STARTTLS with O=mailq tests, CN=mx.mailq.test, valid until "));
  CHECK(has(log, "listener: 127.0.0.1 auth failed: alice"));
  CHECK_FALSE(has(log, "wrong horse"));
  REQUIRE(r.daemon.signal(SIGTERM));
  CHECK(r.daemon.wait(30s) == 0);
}

TEST_CASE(
    "mailq-relay: SIGHUP loads a renewed certificate and changed credentials, and keeps the "
    "old ones when the new cannot be read",
    "[relay][listener][tls][auth]") {
  SecureRelay r;
  r.start();
  const std::string python = R"(import smtplib, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
ctx.check_hostname = False
s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]), timeout=20)
s.starttls(context=ctx)
print('CN=' + dict(x[0] for x in s.sock.getpeercert()['subject'])['commonName'])
s.quit()
)";
  auto served_cn = [&] {
    ToolRun p = run_tool({"/usr/bin/python3", "-c", python, std::to_string(r.port), r.pki.ca_cert});
    INFO(p.err);
    return p.out;
  };
  CHECK(has(served_cn(), "CN=mx.mailq.test"));

  fs::copy_file(r.other.wrong_name_cert, r.cert, fs::copy_options::overwrite_existing);
  fs::copy_file(r.other.wrong_name_key, r.key, fs::copy_options::overwrite_existing);
  write_file(r.credentials, "alice:" + hash_of("battery staple") + "\n");
  fs::permissions(r.credentials, fs::perms::others_read, fs::perm_options::add);
  REQUIRE(r.daemon.signal(SIGHUP));
  REQUIRE(wait_until([&] { return has(r.log_text(), "TLS certificate reloaded"); }));
  CHECK(has(served_cn(), std::string("CN=") + HostilePki::kOtherName));
  CHECK(has(r.log_text(), "listener: credentials " + r.credentials +
                              ": 1 user (warning: the file is readable by every user"));
  auto as_alice = [&](const std::string& password) {
    return r.swaks(plus(r.login("alice", password), {"--from", "alice@example.org"}));
  };
  CHECK(has(as_alice("correct horse").out, "535 5.7.8"));
  CHECK(as_alice("battery staple").status == 0);

  // Broken files: notices, and the previous certificate and credentials stay.
  write_file(r.key, "not a key\n");
  write_file(r.credentials, "alice:plaintext\n");
  REQUIRE(r.daemon.signal(SIGHUP));
  REQUIRE(wait_until([&] { return has(r.log_text(), "credentials not reloaded"); }));
  const std::string log = r.log_text();
  INFO(log);
  CHECK(has(log,
            "listener: TLS certificate not reloaded (the previous one stays): cannot load "
            "the key " +
                r.key));
  CHECK(has(log, "listener: credentials not reloaded (the previous ones stay): credentials " +
                     r.credentials + " line 1: the password of alice is not a"));
  CHECK(has(served_cn(), std::string("CN=") + HostilePki::kOtherName));
  CHECK(as_alice("battery staple").status == 0);
  REQUIRE(r.daemon.signal(SIGTERM));
  CHECK(r.daemon.wait(30s) == 0);
}

TEST_CASE(
    "mailq-relay --check refuses a key that is not the certificate's, a plain text password "
    "and AUTH without TLS, exit 78",
    "[relay][listener][tls][auth][config]") {
  SecureRelay r;
  auto check = [&] { return run_tool({MAILQ_RELAY_BIN, "--config", r.config, "--check"}); };
  ToolRun good = check();
  INFO(good.err);
  CHECK(good.status == 0);

  fs::copy_file(r.other.wrong_name_key, r.key, fs::copy_options::overwrite_existing);
  ToolRun bad_key = check();
  CHECK(bad_key.status == 78);
  CHECK(has(bad_key.err, "listen.tls: the key " + r.key + " does not belong to the certificate"));
  // The relay itself refuses to start the same way.
  ToolRun start = run_tool({MAILQ_RELAY_BIN, "--config", r.config}, {}, {}, 30s);
  CHECK(start.status == 78);
  CHECK(has(start.err, "does not belong to the certificate"));
  fs::copy_file(r.pki.server_key, r.key, fs::copy_options::overwrite_existing);

  write_file(r.credentials, "# users\nalice:correct horse\n");
  ToolRun plain = check();
  CHECK(plain.status == 78);
  CHECK(has(plain.err, "listen.auth: credentials " + r.credentials +
                           " line 2: the password of alice is not a yescrypt"));

  write_file(r.config, "spool = \"" + r.dir.file("spool") +
                           "\"\n[listen]\naddress = \"127.0.0.1:2525\"\n[listen.auth]\n"
                           "credentials = \"" +
                           r.credentials + "\"\n");
  ToolRun no_tls = check();
  CHECK(no_tls.status == 78);
  CHECK(has(no_tls.err,
            "needs [listen.tls] (passwords are only taken over TLS), or "
            "allow_plaintext = true"));

  ToolRun empty = run_tool({MAILQ_RELAY_BIN, "--hash-password"}, "");
  CHECK(empty.status == 64);
  CHECK(has(empty.err, "no password on standard input"));
}

TEST_CASE(
    "Postfix 3.7 relays into mailq-relay with smtp_sasl_auth_enable over TLS, and mailq "
    "delivers the message on",
    "[relay][listener][tls][auth][interop][postfix]") {
  REQUIRE(::geteuid() == 0);  // a private Postfix instance runs its daemons as root
  SecureRelay r;
  r.start();

  // A private Postfix: no listener of its own, its smtp client relaying to mailq.
  const std::string relay = "[127.0.0.1]:" + std::to_string(r.port);
  PostfixInstance postfix;
  PostfixInstance::Options pf_options;
  pf_options.settings = {
      "relayhost=" + relay, "smtp_sasl_auth_enable=yes",
      "smtp_sasl_password_maps=inline:{ { " + relay + " = alice:correct horse } }",
      "smtp_sasl_security_options=noanonymous", "smtp_sasl_tls_security_options=noanonymous",
      "smtp_tls_security_level=encrypt", "smtp_tls_CAfile=" + r.pki.ca_cert, "smtp_tls_loglevel=1",
      // The certificate names mx.mailq.test, the next hop is an address.
      "smtp_tls_policy_maps=inline:{ { " + relay + " = secure match=mx.mailq.test } }"};
  std::string pf_error;
  INFO(pf_error);
  REQUIRE(postfix.start(pf_options, &pf_error));
  const std::string etc = postfix.config_dir();

  ToolRun sent =
      run_tool({"/usr/sbin/sendmail", "-C", etc, "-f", "alice@example.org", "bob@example.net"},
               "From: alice@example.org\nTo: bob@example.net\nSubject: via Postfix\n\nrelayed\n");
  INFO(sent.err);
  REQUIRE(sent.status == 0);
  // The D record comes after smtp-sink's 250, so its dump is whole by then.
  const bool delivered = wait_until([&] { return has(r.log_text(), "smtp; 250"); }, 60s);
  auto dumps = r.sink.wait_for_dumps(1, 60s);
  INFO("postfix log:\n" << postfix.maillog() << "\nmailq log:\n" << r.log_text());
  REQUIRE(delivered);
  REQUIRE(dumps.size() == 1);
  INFO(dumps[0]);
  CHECK(has(dumps[0], "Subject: via Postfix"));
  // mailq's trace field over Postfix's: authenticated, encrypted.
  CHECK(has(dumps[0],
            "Received: from postfix.mailq.test ([127.0.0.1])\n\tby relay.mailq.test "
            "(mailq) with ESMTPSA (TLSv1.2 TLS_"));
  CHECK(has(dumps[0], "Received: by postfix.mailq.test (Postfix, "));
  CHECK(postfix.wait_for_log("status=sent"));
  const std::string pflog = postfix.maillog();
  CHECK(has(pflog, "Verified TLS connection established to 127.0.0.1"));
  CHECK(has(pflog, "relay=127.0.0.1[127.0.0.1]:" + std::to_string(r.port)));
  REQUIRE(r.daemon.signal(SIGTERM));
  CHECK(r.daemon.wait(30s) == 0);
}

#endif  // MAILQ_RELAY_BIN
