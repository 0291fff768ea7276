// The listener's STARTTLS (mbedTLS, server side) and AUTH against a credentials file, driven
// by software nobody here wrote: Python's smtplib and ssl module, swaks (Net::SSLeay).

#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "mailq/uv/credentials.h"
#include "mailq/uv/smtp_listener.h"
#include "support/hostile_pki.h"
#include "support/loop_checks.h"
#include "support/raw_client.h"
#include "support/servers.h"
#include "support/test_loop.h"

using namespace mailq;
using namespace mailq::test;
using namespace std::chrono_literals;

namespace {

bool has(const std::string& s, std::string_view needle) {
  return s.find(needle) != std::string::npos;
}

// A CA, a server certificate for mx.mailq.test and one for another name, signed by the CA.
struct Certificates {
  TempDir dir;
  TestPki pki;
  HostilePki other;
  Certificates() {
    std::string error;
    REQUIRE(pki.generate(dir.path(), &error));
    INFO(error);
    REQUIRE(other.generate(dir.path(), pki, &error));
  }
};

std::shared_ptr<const uv::PasswordFile> alice_file(const std::string& senders = {}) {
  auto hash = uv::hash_password("s3cret pass");
  REQUIRE(hash);
  auto file = uv::PasswordFile::parse(
      "# users\nalice:" + hash.value() + (senders.empty() ? "" : ":" + senders) + "\n", "test");
  INFO((file ? std::string() : file.error().message));
  REQUIRE(file);
  return file.value();
}

// A listener with STARTTLS and AUTH on the test loop.
struct Fixture {
  TestLoop loop;
  Certificates certs;
  std::string cert_file = certs.dir.file("listener.crt");
  std::string key_file = certs.dir.file("listener.key");
  std::shared_ptr<const uv::PasswordFile> credentials = alice_file();
  std::vector<ReceivedMessage> messages;
  std::vector<std::string> events;
  uv::SmtpListenerOptions options;
  std::unique_ptr<uv::SmtpListener> listener;

  explicit Fixture(std::function<void(uv::SmtpListenerOptions&)> adjust = nullptr) {
    std::filesystem::copy_file(certs.pki.server_cert, cert_file);
    std::filesystem::copy_file(certs.pki.server_key, key_file);
    options.host = "127.0.0.1";
    options.server.hostname = "mx.mailq.test";
    options.server.auth.enabled = true;
    options.idle_timeout = Duration(30s);
    options.tls_certificate_file = cert_file;
    options.tls_key_file = key_file;
    options.on_session_event = [this](const std::string& client, const std::string& what) {
      events.push_back(client + " " + what);
    };
    if (adjust) adjust(options);
    SmtpServerSession::Callbacks cb;
    cb.on_message = [this](ReceivedMessage m, std::function<void(Reply)> done) {
      messages.push_back(std::move(m));
      done(Reply(250, "2.0.0", "Ok: queued"));
    };
    cb.authenticate = uv::password_authenticator(loop.get(), [this] { return credentials; });
    cb.check_sender = [this](const SenderCheck& c) {
      if (c.auth_user.empty() || credentials->may_send_as(c.auth_user, c.reverse_path))
        return Reply(250, "2.1.0", "Ok");
      return Reply(553, "5.7.1", "Sender address rejected: not owned by user " + c.auth_user);
    };
    auto opened = uv::SmtpListener::open(loop.get(), options, cb);
    INFO((opened ? std::string() : opened.error().message));
    REQUIRE(opened);
    listener = std::move(opened.value());
  }

  std::uint16_t port() const { return listener->port(); }
  bool has_event_with(std::string_view needle) const {
    return std::any_of(events.begin(), events.end(),
                       [&](const std::string& e) { return has(e, needle); });
  }

  // Runs a Python script (argv: port, CA file) beside the loop; returns its exit status.
  int python(const std::string& script, std::string* out) {
    TempDir dir;
    write_file(dir.file("client.py"), script);
    int status = -1;
    REQUIRE(run_beside_loop(loop, [&] {
      status = run_program(
          {"python3", dir.file("client.py"), std::to_string(port()), certs.pki.ca_cert}, out, 30s);
    }));
    return status;
  }
};

// smtplib: STARTTLS verified against the test CA, AUTH, one message.
const char* kSmtplibSubmit = R"(import smtplib, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]), local_hostname='py.mailq.test', timeout=20)
s._host = 'mx.mailq.test'  # the name smtplib verifies the certificate against
s.ehlo()
assert s.has_extn('starttls') and not s.has_extn('auth'), s.esmtp_features
s.starttls(context=ctx)
s.ehlo()
assert s.has_extn('auth') and not s.has_extn('starttls'), s.esmtp_features
print('auth', s.esmtp_features['auth'])
s.login('alice', 's3cret pass')
s.sendmail('alice@example.org', ['bob@example.net'], 'Subject: over TLS\r\n\r\nhello\r\n')
s.quit()
print('sent', s.sock.version() if s.sock else '')
)";

}  // namespace

TEST_CASE("PasswordFile checks crypt(3) hashes and the senders a user may give",
          "[integration][credentials]") {
  auto yescrypt = uv::hash_password("pw one");
  REQUIRE(yescrypt);
  CHECK(yescrypt.value().rfind("$y$", 0) == 0);
  // `openssl passwd -6 -salt abcdefgh hunter2`: a hash made by other software.
  const std::string sha512 =
      "$6$abcdefgh$M/eYsB4rVXAm3ZNc88J.UD9rCKAT6FB1rahiwJCHtEndQNORCub5qhjxn50qbqVVthkM."
      "9HpEwtf0t.iV9uH0/";
  auto file = uv::PasswordFile::parse(
      "# comment\n\n  # indented comment\ncarol:" + yescrypt.value() +
          ":carol@example.org, @Corp.Test\r\n" + "dave:" + sha512 + "\nerin:" + sha512 + ":*\n",
      "creds");
  INFO((file ? std::string() : file.error().message));
  REQUIRE(file);
  const auto& f = *file.value();
  CHECK(f.size() == 3);
  CHECK(f.verify("carol", "pw one"));
  CHECK_FALSE(f.verify("carol", "pw one "));
  CHECK_FALSE(f.verify("carol", ""));
  CHECK(f.verify("dave", "hunter2"));
  CHECK_FALSE(f.verify("dave", "hunter3"));
  CHECK_FALSE(f.verify("nobody", "hunter2"));
  CHECK_FALSE(f.verify("Dave", "hunter2"));                         // user names are exact
  CHECK_FALSE(f.verify("dave", std::string("hunter2\0tail", 12)));  // crypt(3) would stop at NUL

  auto addr = [](const char* a) { return std::optional<Address>(*Address::parse(a)); };
  CHECK(f.may_send_as("carol", addr("carol@example.org")));
  CHECK(f.may_send_as("carol", addr("Carol@EXAMPLE.org")));
  CHECK(f.may_send_as("carol", addr("anyone@corp.test")));
  CHECK_FALSE(f.may_send_as("carol", addr("carol@example.net")));
  CHECK_FALSE(f.may_send_as("carol", addr("x@sub.corp.test")));
  CHECK(f.may_send_as("carol", std::nullopt));  // <>: bounces
  CHECK(f.may_send_as("dave", addr("whoever@wherever.test")));
  CHECK(f.may_send_as("erin", addr("whoever@wherever.test")));
  CHECK_FALSE(f.may_send_as("nobody", std::nullopt));
}

TEST_CASE("PasswordFile refuses plain text, weak hashes and malformed lines, naming the line",
          "[integration][credentials]") {
  auto error_of = [](const std::string& text) {
    auto r = uv::PasswordFile::parse(text, "/etc/mailq/creds");
    return r ? std::string("loaded") : r.error().message;
  };
  CHECK(error_of("alice:secret\n") ==
        "credentials /etc/mailq/creds line 1: the password of alice is not a yescrypt, bcrypt, "
        "SHA-512 or SHA-256 crypt(3) hash (write one with mailq-relay --hash-password)");
  CHECK(has(error_of("# x\nbob:$1$abcdefgh$vhxKZ/s1ygZHyCEDPyqtQ/\n"),
            "line 2: the password of bob"));
  CHECK(has(error_of("carol:abJnggxhB/yWI\n"), "line 1"));  // DES crypt
  CHECK(has(error_of("no colon here\n"), "line 1: expected user:hash[:senders]"));
  CHECK(has(error_of(":$6$x$y\n"), "line 1: no user name"));
  auto hash = uv::hash_password("x");
  REQUIRE(hash);
  CHECK(has(error_of("a:" + hash.value() + "\na:" + hash.value() + "\n"),
            "line 2: user a is listed twice"));
  CHECK(has(error_of("a b:" + hash.value() + "\n"), "line 1: the user name holds a space"));
  CHECK(has(error_of("a:" + hash.value() + ":not an address\n"),
            "line 1: \"not an address\" is not an address, an @domain or * (senders of a)"));

  TempDir dir;
  auto missing = uv::PasswordFile::load(dir.file("none"));
  REQUIRE_FALSE(missing);
  CHECK(missing.error().message ==
        "credentials " + dir.file("none") + ": No such file or directory");
  write_file(dir.file("creds"), "a:" + hash.value() + "\n");
  std::filesystem::permissions(
      dir.file("creds"), std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  auto loaded = uv::PasswordFile::load(dir.file("creds"));
  REQUIRE(loaded);
  CHECK_FALSE(loaded.value()->world_readable());
  std::filesystem::permissions(dir.file("creds"), std::filesystem::perms::others_read,
                               std::filesystem::perm_options::add);
  loaded = uv::PasswordFile::load(dir.file("creds"));
  REQUIRE(loaded);
  CHECK(loaded.value()->world_readable());
}

TEST_CASE("SmtpListener: smtplib upgrades with STARTTLS, verifies the certificate, logs in",
          "[integration][smtp_listener][tls][auth][interop]") {
  Fixture f;
  std::string out;
  CHECK(f.python(kSmtplibSubmit, &out) == 0);
  INFO(out);
  CHECK(has(out, "auth  PLAIN LOGIN"));
  REQUIRE(f.messages.size() == 1);
  const ReceivedMessage& m = f.messages[0];
  CHECK(m.auth_user == "alice");
  CHECK(m.tls.rfind("TLSv1.2 TLS_", 0) == 0);
  CHECK(m.helo == "py.mailq.test");
  CHECK(has(received_header(m, "mx.mailq.test", "ID", TimePoint{}), " with ESMTPSA (TLSv1.2 "));
  CHECK(f.has_event_with("127.0.0.1 tls: TLSv1.2 TLS_"));
  CHECK(f.has_event_with("127.0.0.1 auth: alice"));
  const auto stats = f.listener->stats();
  CHECK(stats.tls_handshakes == 1);
  CHECK(stats.auth_successes == 1);
  CHECK(stats.tls_failures == 0);
  f.listener.reset();
  require_clean_close(f.loop);
}

TEST_CASE("SmtpListener: swaks over TLS with AUTH LOGIN, a wrong password and a foreign sender",
          "[integration][smtp_listener][tls][auth][interop]") {
  Fixture f;
  f.credentials = alice_file("@example.org");
  auto swaks = [&](std::vector<std::string> extra, std::string* out) {
    std::vector<std::string> argv = {"swaks",
                                     "--server",
                                     "127.0.0.1",
                                     "--port",
                                     std::to_string(f.port()),
                                     "--tls",
                                     "--tls-verify",
                                     "--tls-ca-path",
                                     f.certs.pki.ca_cert,
                                     "--tls-sni",
                                     "mx.mailq.test",
                                     "--helo",
                                     "swaks.mailq.test",
                                     "--to",
                                     "bob@example.net"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    int status = -1;
    REQUIRE(run_beside_loop(f.loop, [&] { status = run_program(argv, out, 30s); }));
    return status;
  };
  std::string out;
  CHECK(swaks({"--auth", "LOGIN", "--auth-user", "alice", "--auth-password", "s3cret pass",
               "--from", "alice@example.org"},
              &out) == 0);
  INFO(out);
  CHECK(has(out, "235 2.7.0 Authentication successful"));
  REQUIRE(f.messages.size() == 1);
  CHECK(f.messages[0].auth_user == "alice");

  std::string wrong;
  const auto before = std::chrono::steady_clock::now();
  CHECK(swaks({"--auth", "PLAIN", "--auth-user", "alice", "--auth-password", "guess", "--from",
               "alice@example.org"},
              &wrong) != 0);
  // The 535 came after auth_failure_delay (1 s by default), never sooner.
  CHECK(std::chrono::steady_clock::now() - before >= 1s);
  INFO(wrong);
  CHECK(has(wrong, "535 5.7.8 Authentication credentials invalid"));
  CHECK(f.has_event_with("127.0.0.1 auth failed: alice"));
  CHECK_FALSE(f.has_event_with("guess"));  // passwords never reach the events

  std::string foreign;
  CHECK(swaks({"--auth", "PLAIN", "--auth-user", "alice", "--auth-password", "s3cret pass",
               "--from", "ceo@example.net"},
              &foreign) != 0);
  INFO(foreign);
  CHECK(has(foreign, "553 5.7.1 Sender address rejected: not owned by user alice"));
  CHECK(f.messages.size() == 1);
  CHECK(f.listener->stats().auth_failures == 1);
  f.listener.reset();
  require_clean_close(f.loop);
}

TEST_CASE("SmtpListener drops commands injected behind STARTTLS in the clear",
          "[integration][smtp_listener][tls]") {
  Fixture f;
  // The attack of CVE-2011-0411: plaintext commands in the same packet as STARTTLS.
  const char* script = R"(import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
raw = socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=20)
f = raw.makefile('rb')
def reply():
    lines = []
    while True:
        line = f.readline().decode()
        lines.append(line)
        if line[3:4] == ' ':
            return ''.join(lines)
reply()
raw.sendall(b'EHLO inject.test\r\n'); reply()
raw.sendall(b'STARTTLS\r\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<victim@y.test>\r\n')
print('starttls:', reply().strip())
tls = ctx.wrap_socket(raw, server_hostname='mx.mailq.test')
tf = tls.makefile('rb')
tls.sendall(b'NOOP\r\n')
first = tf.readline().decode().strip()
print('first after TLS:', first)
assert first == '250 2.0.0 Ok', first
tls.sendall(b'MAIL FROM:<a@b.test>\r\n')
print('mail:', tf.readline().decode().strip())
tls.sendall(b'QUIT\r\n')
print('quit:', tf.readline().decode().strip())
)";
  std::string out;
  CHECK(f.python(script, &out) == 0);
  INFO(out);
  CHECK(has(out, "starttls: 220 2.0.0 Ready to start TLS"));
  // The EHLO before TLS is forgotten: MAIL needs a new one, the injected MAIL never counted.
  CHECK(has(out, "mail: 503 5.5.1 Error: send EHLO or HELO first"));
  CHECK(has(out, "quit: 221 2.0.0"));
  CHECK(f.messages.empty());
  f.listener.reset();
  require_clean_close(f.loop);
}

TEST_CASE("SmtpListener closes a connection whose TLS handshake fails and counts it",
          "[integration][smtp_listener][tls]") {
  Fixture f;
  std::string got;
  REQUIRE(run_beside_loop(f.loop, [&] {
    RawClient c;
    if (!c.connect("127.0.0.1", f.port())) return;
    got += c.read_replies(1);
    c.send("EHLO garbage.test\r\n");
    got += c.read_replies(1);
    c.send("STARTTLS\r\n");
    got += c.read_replies(1);
    c.send("this is not a TLS record at all\r\n\r\n");
    got += c.read_until_close(10s);
  }));
  INFO(got);
  CHECK(has(got, "220 2.0.0 Ready to start TLS\r\n"));
  REQUIRE(f.loop.run_until([&] { return f.listener->stats().sessions_open == 0; }, 10s));
  CHECK(f.listener->stats().tls_failures == 1);
  CHECK(f.has_event_with("127.0.0.1 tls failed: TLS handshake failed: "));
  CHECK(f.has_event_with("127.0.0.1 close: TLS handshake failed: "));
  f.listener.reset();
  require_clean_close(f.loop);
}

TEST_CASE("SmtpListener reload_tls serves a renewed certificate and keeps the old on a bad one",
          "[integration][smtp_listener][tls]") {
  Fixture f;
  const char* script = R"(import smtplib, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
ctx.check_hostname = False
s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]), timeout=20)
s.starttls(context=ctx)
subject = dict(x[0] for x in s.sock.getpeercert()['subject'])
print('CN=' + subject['commonName'])
s.quit()
)";
  std::string out;
  CHECK(f.python(script, &out) == 0);
  CHECK(has(out, "CN=mx.mailq.test"));
  CHECK(has(f.listener->tls_certificate(), "CN=mx.mailq.test, valid until "));

  // Renewed: other files at the same paths.
  std::filesystem::copy_file(f.certs.other.wrong_name_cert, f.cert_file,
                             std::filesystem::copy_options::overwrite_existing);
  std::filesystem::copy_file(f.certs.other.wrong_name_key, f.key_file,
                             std::filesystem::copy_options::overwrite_existing);
  REQUIRE(f.listener->reload_tls());
  out.clear();
  CHECK(f.python(script, &out) == 0);
  CHECK(has(out, std::string("CN=") + HostilePki::kOtherName));

  // A key that does not belong to the certificate: refused, the renewed pair still served.
  std::filesystem::copy_file(f.certs.pki.server_key, f.key_file,
                             std::filesystem::copy_options::overwrite_existing);
  auto bad = f.listener->reload_tls();
  REQUIRE_FALSE(bad);
  CHECK(has(bad.error().message, "does not belong to the certificate"));
  out.clear();
  CHECK(f.python(script, &out) == 0);
  CHECK(has(out, std::string("CN=") + HostilePki::kOtherName));
  f.listener.reset();
  require_clean_close(f.loop);
}

TEST_CASE("SmtpListener refuses to open with TLS files that cannot be used",
          "[integration][smtp_listener][tls]") {
  Certificates certs;
  TestLoop loop;
  auto open_with = [&](const std::string& cert, const std::string& key) {
    uv::SmtpListenerOptions o;
    o.tls_certificate_file = cert;
    o.tls_key_file = key;
    auto r = uv::SmtpListener::open(loop.get(), o, {});
    return r ? std::string("opened") : r.error().message;
  };
  CHECK(has(open_with(certs.pki.server_cert, certs.other.wrong_name_key),
            "does not belong to the certificate"));
  CHECK(has(open_with(certs.dir.file("missing.pem"), certs.pki.server_key),
            "cannot load the certificate " + certs.dir.file("missing.pem")));
  CHECK(has(open_with(certs.pki.server_cert, ""), "needs both a certificate file and a key file"));
  auto summary = uv::check_tls_files(certs.pki.server_cert, certs.pki.server_key);
  REQUIRE(summary);
  CHECK(has(summary.value(), "CN=mx.mailq.test"));
  require_clean_close(loop);
}

TEST_CASE("SmtpListener asks an untrusted client for AUTH and lets a trusted one relay",
          "[integration][smtp_listener][auth]") {
  bool trust = false;
  Fixture f([&](uv::SmtpListenerOptions& o) {
    o.trusted_client = [&](const std::string&) { return trust; };
  });
  auto session = [&] {
    std::string got;
    REQUIRE(run_beside_loop(f.loop, [&] {
      RawClient c;
      if (!c.connect("127.0.0.1", f.port())) return;
      c.send("EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nQUIT\r\n");
      got = c.read_until_close(10s);
    }));
    return got;
  };
  CHECK(has(session(), "530 5.7.0 Authentication required\r\n"));
  trust = true;
  CHECK(has(session(), "250 2.1.0 Ok\r\n"));
  f.listener.reset();
  require_clean_close(f.loop);
}
