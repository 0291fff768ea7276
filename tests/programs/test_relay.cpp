// mailq-relay end to end: the real binary against smtp-sink and unbound on 127.0.0.0/8,
// driven through its configuration file, its control socket, its SMTP listener, its metrics
// endpoint and signals.
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "examples/relay/config.h"
#include "examples/relay/control.h"
#include "mailq/queue.h"
#include "mailq/spool/file_spool.h"
#include "mailq/spool/layout.h"
#include "mailq/uv/loop_clock.h"
#include "mailq/uv/transport.h"
#include "support/daemon.h"
#include "support/dkim_verifier.h"
#include "support/dnssec.h"
#include "support/opened_spool.h"
#include "support/policy_server.h"
#include "support/postfix.h"
#include "support/raw_client.h"
#include "support/servers.h"
#include "support/test_loop.h"
#include "support/tool_runner.h"
#include "support/unbound_server.h"

#ifdef MAILQ_RELAY_BIN

using namespace mailq;
using namespace mailq::relay;
using namespace mailq::test;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

constexpr const char* kMarkedDown =
    "451 4.4.1 [internal] connection was not attempted: domain is marked down (too many "
    "connection failures)";

// good.test and its sender domain reach smtp-sink on 127.0.0.1 (through the MX route and
// [resolver] mx_port); down.test's MX is 127.0.0.3, where nothing listens: refused.
constexpr const char* kZone = R"($ORIGIN test.
$TTL 300
@            300 IN SOA   ns.test. hostmaster.test. 1 3600 600 86400 60
@            300 IN NS    ns.test.
ns           300 IN A     127.0.0.1
good         300 IN MX    10 mx.good.test.
mx.good      300 IN A     127.0.0.1
sender       300 IN MX    10 mx.good.test.
down         300 IN MX    10 mx.down.test.
mx.down      300 IN A     127.0.0.3
)";

UnboundServer* shared_unbound(std::string* error) {
  static std::unique_ptr<UnboundServer> server;
  static std::string start_error;
  static bool tried = false;
  if (!tried) {
    tried = true;
    UnboundServer::Config config;
    config.zones.push_back({"test.", kZone});
    server = UnboundServer::start(config, &start_error);
  }
  *error = start_error;
  return server.get();
}

bool wait_until(const std::function<bool()>& done, std::chrono::milliseconds limit = 20s) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(20ms);
  }
  return true;
}

bool contains(const std::string& haystack, std::string_view needle) {
  return haystack.find(needle) != std::string::npos;
}

std::size_t count_of(const std::string& haystack, std::string_view needle) {
  std::size_t n = 0;
  for (auto p = haystack.find(needle); p != std::string::npos; p = haystack.find(needle, p + 1))
    ++n;
  return n;
}

// The messages a stopped relay's spool holds, in either layout, by their seed-002 names: the
// message files of a file spool (queue/<channel>/Z*), the recorded names of a segment spool's
// messages (read by opening it).
std::vector<std::string> spool_files(const std::string& spool) {
  std::vector<std::string> out;
  std::error_code ec;
  const auto layout = spool::detect_layout(spool);
  if (!layout) return out;
  if (*layout == spool::Layout::files) {
    for (auto& e : fs::recursive_directory_iterator(spool + "/queue", ec))
      if (e.is_regular_file()) out.push_back(e.path().filename().string());
  } else {
    test::OpenedSpool opened(spool);
    for (MessageId id : opened.queue->list())
      out.push_back(queue_file_name(id, opened.queue->find(id)->attempts));
  }
  std::sort(out.begin(), out.end());
  return out;
}

bool has_spool_file_for(const std::string& spool, const std::string& id) {
  for (auto& f : spool_files(spool))
    if (f.size() > 2 && f.compare(2, id.size(), id) == 0) return true;
  return false;
}

// One relay: its directory, configuration, process and control socket.
struct RelayHarness {
  TempDir dir;
  std::string spool = dir.file("spool");
  std::string log = dir.file("mail.log");
  std::string control = dir.file("control.sock");
  std::string config_file = dir.file("relay.toml");
  std::string output = dir.file("relay.out");
  Daemon daemon;

  // The configuration for a sink at `sink_port` and unbound at `dns`; `extra_top` goes before
  // the first table (listen, metrics, ...).
  std::string config_text(std::uint16_t sink_port, const std::string& dns,
                          const std::string& extra_top = {}) const {
    std::string p = std::to_string(sink_port);
    return "spool = \"" + spool + "\"\nlog = \"" + log +
           "\"\nhelo = \"relay.mailq.test\"\ncontrol = \"" + control + "\"\n" + extra_top +
           "\n[resolver]\nservers = [\"" + dns +
           "\"]\ntimeout = \"2s\"\n"
           "allow_internal_mx = [\"127.0.0.0/8\"]\nmx_port = " +
           p +
           "\n\n[queue]\ncycle = \"15m\"\nretry = { min = \"10m\", max = \"1h\" }\n"
           "\n[delivery]\nidle_timeout = \"200ms\"\n"
           "\n[domain_state]\nfailure_threshold = 1\ndown_interval = \"15m\"\n"
           "\n[[route]]\nname = \"tcp_static\"\ndomains = [\"static.test\"]\nhosts = "
           "[\"127.0.0.1:" +
           p +
           "\"]\ntls = \"none\"\n"
           "\n[[route]]\nname = \"tcp_local\"\nmx = true\ntls = \"none\"\ndefault = true\n"
           "timeouts = { connect = \"5s\", greeting = \"5s\" }\n";
  }

  void write_config(const std::string& text) { write_file(config_file, text); }

  // Starts the daemon and waits until its control socket answers.
  void start() {
    std::string error;
    REQUIRE(daemon.start({MAILQ_RELAY_BIN, "--config", config_file}, output, &error));
    INFO(error);
    const bool up = wait_until([&] {
      if (!daemon.running()) return true;
      auto r = control_call(control, {{"status"}, {}}, Duration(2s));
      return r && r->ok;
    });
    INFO("relay output: " << read_file(output));
    REQUIRE(up);
    REQUIRE(daemon.running());
  }

  ControlResponse call(std::vector<std::string> argv, std::string body = {}) {
    auto r = control_call(control, {std::move(argv), std::move(body)}, Duration(30s));
    INFO((r ? std::string() : r.error().message));
    REQUIRE(r);
    return r.value();
  }
  std::string ok(std::vector<std::string> argv) {
    auto r = call(argv);
    INFO(argv[0] << ": " << r.error);
    REQUIRE(r.ok);
    return r.payload;
  }
  std::string submit(const std::string& from, const std::string& to,
                     const std::string& subject = "relay test") {
    const std::string body = "From: <" + from + ">\r\nTo: <" + to + ">\r\nSubject: " + subject +
                             "\r\nMessage-ID: <" + subject + "@mailq.test>\r\n\r\nhello\r\n";
    auto r = call({"submit", std::to_string(body.size()), from, to}, body);
    INFO(r.error);
    REQUIRE(r.ok);
    REQUIRE(r.payload.size() == 14);  // 13-character id and LF
    return r.payload.substr(0, 13);
  }
  std::string log_text() const { return read_file(log); }
  // The running relay holds the message: `show` names its queue file (for a segment spool
  // "segments/<n>.seg#ZZ<id>.00") and that file exists.
  bool holds(const std::string& id) {
    auto r = call({"show", id});
    if (!r.ok) return false;
    const std::string key = "queue file: ";
    const auto p = r.payload.find(key);
    if (p == std::string::npos) return false;
    const auto end = r.payload.find('\n', p);
    std::string file = r.payload.substr(p + key.size(), end - p - key.size());
    INFO("queue file: " << file);
    if (file.find(id) == std::string::npos) return false;
    file = file.substr(0, file.find('#'));
    return fs::is_regular_file(spool + "/" + file);
  }
  bool log_has(std::string_view needle, std::chrono::milliseconds limit = 20s) {
    return wait_until([&] { return contains(log_text(), needle); }, limit);
  }
};

// Enqueues messages into a spool with the library itself (no relay running), for --once.
// unbound validating dane.test., signed at test time: for each (name, TLSA rdata) of
// `tlsa`, <name>.dane.test has the MX mx.<name>.dane.test at 127.0.0.1 with that TLSA record
// at _<port>._tcp; the record of `tampered` is changed after signing (bogus: SERVFAIL).
std::unique_ptr<UnboundServer> dane_dns(const TempDir& keys, const std::string& port,
                                        const std::map<std::string, std::string>& tlsa,
                                        const std::string& tampered = {}) {
  std::string zone =
      "$ORIGIN dane.test.\n$TTL 300\n"
      "@ IN SOA ns.dane.test. hostmaster.dane.test. 1 3600 600 86400 60\n"
      "@ IN NS ns.dane.test.\nns IN A 127.0.0.1\n";
  for (const auto& [d, rdata] : tlsa)
    zone += d + " IN MX 10 mx." + d + ".dane.test.\nmx." + d + " IN A 127.0.0.1\n_" + port +
            "._tcp.mx." + d + " IN TLSA " + rdata + "\n";
  std::string err;
  SignedZone signed_zone;
  INFO(err);
  REQUIRE(sign_zone(keys.path(), "dane.test.", zone, &signed_zone, &err));
  std::string text = signed_zone.text;
  if (!tampered.empty()) {
    const auto at = text.find("_" + port + "._tcp.mx." + tampered + ".dane.test.");
    REQUIRE(at != std::string::npos);
    const std::string data = tlsa.at(tampered).substr(6, 8);  // after "3 1 1 "
    const auto hex_at = text.find(data, at);
    REQUIRE(hex_at != std::string::npos);
    text[hex_at] = text[hex_at] == '0' ? '1' : '0';
  }
  UnboundServer::Config dns_config;
  dns_config.zones.push_back({"dane.test.", text});
  dns_config.trust_anchor_file = signed_zone.trust_anchor;
  // unbound answers the RFC 6761 name test. itself (NXDOMAIN) unless told not to.
  dns_config.server_lines.push_back("local-zone: \"test.\" nodefault");
  auto dns = UnboundServer::start(dns_config, &err);
  REQUIRE(dns);
  return dns;
}

// What `mailq-queue show` says of every message in the spool, one after the other.
std::string show_every_message(const std::string& spool) {
  ToolRun list = run_tool({MAILQ_QUEUE_BIN, "--spool", spool, "list"}, "");
  REQUIRE(list.status == 0);
  std::string shown;
  std::istringstream lines(list.out);
  for (std::string line; std::getline(lines, line);) {
    if (line.size() < 14 || line[13] != ' ') continue;
    shown += run_tool({MAILQ_QUEUE_BIN, "--spool", spool, "show", line.substr(0, 13)}, "").out;
  }
  return shown;
}

void enqueue_offline(
    const std::string& config_text, const std::vector<std::string>& rcpts,
    const std::string& body = "Subject: offline\r\n\r\nqueued before the relay ran\r\n") {
  auto cfg = parse_config(config_text, "relay.toml");
  REQUIRE(cfg);
  auto routes = cfg->route_table();
  REQUIRE(routes);
  TestLoop loop;
  {
    uv::LoopClock clock(loop.get());
    auto opened =
        spool::open_spool(cfg->spool, clock, spool::choose_layout(cfg->spool, cfg->spool_layout));
    INFO((opened ? std::string() : opened.error().message));
    REQUIRE(opened);
    spool::DurableStorage& spool = *opened.value();
    Queue queue(spool, routes.value(), clock);
    REQUIRE(queue.recover());
    std::size_t done = 0;
    for (const auto& to : rcpts) {
      auto env = make_envelope("someone@sender.test", {to});
      REQUIRE(env);
      queue.enqueue(env.value(), body, [&](Result<MessageId> r) {
        REQUIRE(r);
        ++done;
      });
    }
    REQUIRE(loop.run_until([&] { return done == rcpts.size(); }, 20s));
    spool.flush();
  }
  CHECK(loop.close() == 0);
}

// GET /metrics over a plain socket; the body, "" on failure.
std::string http_get(std::uint16_t port, const std::string& path, std::string* status_line) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{20, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string in;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
    const std::string req =
        "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    ::send(fd, req.data(), req.size(), MSG_NOSIGNAL);
    char buf[8192];
    ssize_t n;
    while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) in.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  const auto eol = in.find("\r\n");
  if (status_line) *status_line = eol == std::string::npos ? in : in.substr(0, eol);
  const auto body = in.find("\r\n\r\n");
  return body == std::string::npos ? std::string() : in.substr(body + 4);
}

// Parses the Prometheus text format: "name{labels} value" per sample line. Fails the test on
// a line that is neither a comment nor a well-formed sample.
std::map<std::string, double> parse_metrics(const std::string& text) {
  std::map<std::string, double> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const auto sp = line.rfind(' ');
    INFO("metrics line: " << line);
    REQUIRE(sp != std::string::npos);
    const std::string key = line.substr(0, sp);
    const std::string value = line.substr(sp + 1);
    char* end = nullptr;
    const double v = std::strtod(value.c_str(), &end);
    REQUIRE((end != value.c_str() && *end == '\0'));
    REQUIRE_FALSE(key.empty());
    out[key] = v;
  }
  return out;
}

}  // namespace

#define REQUIRE_UNBOUND(var)                         \
  std::string var##_error;                           \
  UnboundServer* var = shared_unbound(&var##_error); \
  if (var == nullptr) FAIL(var##_error)

TEST_CASE("mailq-relay: an invalid configuration is refused with the line and key, exit 78",
          "[relay][config]") {
  RelayHarness h;
  h.write_config("spool = \"" + h.spool + "\"\n\n[queue]\ncycle = \"15x\"\n");
  std::string out;
  CHECK(run_program({MAILQ_RELAY_BIN, "--config", h.config_file}, &out) == 78);
  CHECK(contains(out, h.config_file + ":4: queue.cycle: \"15x\" is not a duration"));
  CHECK_FALSE(fs::exists(h.spool));  // nothing started

  CHECK(run_program({MAILQ_RELAY_BIN, "--config", h.config_file, "--check"}, &out) == 78);
  CHECK(contains(out, ":4: queue.cycle:"));

  CHECK(run_program({MAILQ_RELAY_BIN, "--config", h.dir.file("missing.toml")}, &out) == 78);
  CHECK(contains(out, "missing.toml"));

  h.write_config(h.config_text(2525, "127.0.0.1:53"));
  CHECK(run_program({MAILQ_RELAY_BIN, "--config", h.config_file, "--check"}, &out) == 0);
  CHECK(out == h.config_file + ": configuration OK\n");
  CHECK_FALSE(fs::exists(h.spool));

  CHECK(run_program({MAILQ_RELAY_BIN}, &out) == 64);
  CHECK(contains(out, "usage: mailq-relay --config FILE"));
  CHECK(run_program({MAILQ_RELAY_BIN, "--config", h.config_file, "--bogus"}, &out) == 64);
  CHECK(contains(out, "unknown option --bogus"));
}

TEST_CASE(
    "mailq-relay --once: delivers what is due and exits 0 on an empty queue, 75 when "
    "messages remain deferred",
    "[relay][once]") {
  REQUIRE_UNBOUND(dns);
  SmtpSink sink;
  std::string err;
  REQUIRE(sink.start(&err));
  RelayHarness h;
  const std::string config = h.config_text(sink.port(), dns->address());
  h.write_config(config);

  enqueue_offline(config, {"a@good.test", "b@static.test"});
  REQUIRE(spool_files(h.spool).size() == 2);
  std::string out;
  CHECK(run_program({MAILQ_RELAY_BIN, "--config", h.config_file, "--once"}, &out, 60s) == 0);
  INFO(out);
  CHECK(sink.wait_for_dumps(2).size() == 2);
  CHECK(spool_files(h.spool).empty());
  const std::string log1 = h.log_text();
  INFO(log1);
  CHECK(count_of(log1, " D 1") == 2);
  CHECK(contains(log1, "tcp_static"));
  CHECK(contains(log1, "tcp_local"));
  CHECK(contains(log1, "--once: the queue is empty"));

  enqueue_offline(config, {"c@down.test"});
  CHECK(run_program({MAILQ_RELAY_BIN, "--config", h.config_file, "--once"}, &out, 60s) == 75);
  CHECK(spool_files(h.spool).size() == 1);  // deferred, still spooled
  const std::string log2 = h.log_text();
  CHECK(contains(log2, "TCP active open: Failed connect() Error: connection refused"));
  CHECK(contains(log2, "--once: nothing due, 1 message in the queue"));
}

TEST_CASE(
    "mailq-relay: a queued message whose route the configuration no longer has is routed by "
    "the table it runs with, and said",
    "[relay][once][routes]") {
  REQUIRE_UNBOUND(dns);
  SmtpSink sink;
  std::string err;
  REQUIRE(sink.start(&err));
  RelayHarness h;
  // Queued under a route "tcp_old" for static.test (to a port nobody listens on).
  std::string before = h.config_text(sink.port(), dns->address());
  const std::string from = "name = \"tcp_static\"";
  before.replace(before.find(from), from.size(), "name = \"tcp_old\"");
  const std::string port = "127.0.0.1:" + std::to_string(sink.port());
  before.replace(before.find(port), port.size(), "127.0.0.1:" + std::to_string(free_tcp_port()));
  enqueue_offline(before, {"a@static.test"});
  // Run with the configuration of today: static.test goes by tcp_static, to the sink.
  h.write_config(h.config_text(sink.port(), dns->address()));
  std::string out;
  CHECK(run_program({MAILQ_RELAY_BIN, "--config", h.config_file, "--once"}, &out, 60s) == 0);
  INFO(out);
  CHECK(sink.wait_for_dumps(1).size() == 1);
  const std::string log = h.log_text();
  CHECK(contains(log,
                 "spool recovery: 1 recipient routed again by the route table: route "
                 "tcp_old not configured any more"));
  CHECK(contains(log, "tcp_static"));
  CHECK(count_of(log, " D 1") == 1);
}

TEST_CASE(
    "mailq-relay signs with DKIM (RSA and Ed25519) what it sends, after the 7-bit conversion, "
    "and python3-dkim verifies the stored copies with the keys served by unbound",
    "[relay][once][dkim]") {
  TempDir keys;
  std::string err;
  const std::string rsa = keys.file("rsa.pem"), ed = keys.file("ed.pem");
  REQUIRE(test::openssl_key("rsa2048", rsa, &err));
  REQUIRE(test::openssl_key("ed25519", ed, &err));
  // The public keys, derived with openssl, published by unbound (TXT strings of 255 octets).
  std::string zone = kZone;
  for (const auto& [selector, file] : {std::pair{"r1", rsa}, std::pair{"e1", ed}}) {
    const std::string txt = test::dkim_txt_with_openssl(file, &err);
    INFO(err);
    REQUIRE(!txt.empty());
    zone += std::string(selector) + "._domainkey.sign 300 IN TXT";
    for (std::size_t i = 0; i < txt.size(); i += 255) zone += " \"" + txt.substr(i, 255) + "\"";
    zone += "\n";
  }
  UnboundServer::Config dns_config;
  dns_config.zones.push_back({"test.", zone});
  auto dns = UnboundServer::start(dns_config, &err);
  INFO(err);
  REQUIRE(dns);

  SmtpSink eight;          // offers 8BITMIME
  SmtpSink seven({"-8"});  // does not: the relay converts
  REQUIRE(eight.start(&err));
  REQUIRE(seven.start(&err));
  RelayHarness h;
  const std::string config =
      h.config_text(eight.port(), dns->address()) +
      "\n[[route]]\nname = \"to_seven\"\ndomains = [\"seven.test\"]\nhosts = [\"127.0.0.1:" +
      std::to_string(seven.port()) +
      "\"]\ntls = \"none\"\n"
      "\n[[route]]\nname = \"unsigned\"\ndomains = [\"plain.test\"]\nhosts = [\"127.0.0.1:" +
      std::to_string(eight.port()) +
      "\"]\ntls = \"none\"\ndkim = false\n"
      "\n[[dkim.key]]\ndomain = \"sign.test\"\nselector = \"r1\"\nkey_file = \"" +
      rsa +
      "\"\n"
      "\n[[dkim.key]]\ndomain = \"sign.test\"\nselector = \"e1\"\nkey_file = \"" +
      ed + "\"\ncanonicalization = \"simple/simple\"\nexpiry = \"7d\"\n";
  h.write_config(config);

  // The records the relay prints for its keys are the ones openssl derived.
  std::string records;
  REQUIRE(run_program({MAILQ_RELAY_BIN, "--config", h.config_file, "--dkim-records"}, &records,
                      30s) == 0);
  CHECK(contains(records, "r1._domainkey.sign.test. IN TXT \"v=DKIM1; k=rsa; p="));
  CHECK(contains(records, "e1._domainkey.sign.test. IN TXT \"v=DKIM1; k=ed25519; p="));

  // 8-bit text in the body (a header field with 8-bit octets could not be converted).
  const std::string body =
      "From: Anna <anna@news.sign.test>\r\nTo: x@static.test\r\nSubject: Gruesse\r\n"
      "Date: Mon, 7 Dec 2026 10:00:00 +0000\r\nMessage-ID: <dkim.1@sign.test>\r\n"
      "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
      "Content-Transfer-Encoding: 8bit\r\n\r\nK\xc3\xb6ln,   am Ende \r\n.dot\r\n\r\n";
  enqueue_offline(config, {"a@static.test"}, body);
  enqueue_offline(config, {"b@seven.test"}, body);
  enqueue_offline(config, {"c@plain.test"}, body);
  std::string out;
  CHECK(run_program({MAILQ_RELAY_BIN, "--config", h.config_file, "--once"}, &out, 60s) == 0);
  INFO(out);
  auto eight_dumps = eight.wait_for_dumps(2);
  auto seven_dumps = seven.wait_for_dumps(1);
  REQUIRE(eight_dumps.size() == 2);
  REQUIRE(seven_dumps.size() == 1);

  auto verdicts = [&](const std::string& dump) {
    auto results = test::dkim_verify(dump, dns->port(), {}, &err);
    INFO(err);
    REQUIRE(err.empty());
    std::map<std::string, bool> by_selector;
    for (const auto& r : results) {
      UNSCOPED_INFO(r.selector << ": " << (r.pass ? "pass" : r.detail));
      by_selector[r.selector + "/" + r.algorithm] = r.pass;
    }
    return by_selector;
  };
  const std::map<std::string, bool> both_pass = {{"e1/ed25519-sha256", true},
                                                 {"r1/rsa-sha256", true}};
  // smtp-sink's dump names the recipient in its X-Rcpt-Args line.
  const bool first_plain = contains(eight_dumps[0], "c@plain.test");
  const std::string& signed_copy = first_plain ? eight_dumps[1] : eight_dumps[0];
  const std::string& unsigned_copy = first_plain ? eight_dumps[0] : eight_dumps[1];
  REQUIRE(contains(unsigned_copy, "c@plain.test"));
  INFO(signed_copy);
  CHECK(contains(signed_copy, "Content-Transfer-Encoding: 8bit"));
  CHECK(verdicts(signed_copy) == both_pass);
  // The converted copy: quoted-printable, and the signatures cover that form.
  INFO(seven_dumps[0]);
  CHECK(contains(seven_dumps[0], "Content-Transfer-Encoding: quoted-printable"));
  CHECK(verdicts(seven_dumps[0]) == both_pass);
  // A copy changed on the way fails both.
  std::string tampered = signed_copy;
  tampered.replace(tampered.find("am Ende"), 7, "am Endf");
  CHECK(verdicts(tampered) ==
        std::map<std::string, bool>{{"e1/ed25519-sha256", false}, {"r1/rsa-sha256", false}});
  // The route with dkim = false sends unsigned.
  CHECK_FALSE(contains(unsigned_copy, "DKIM-Signature"));
}

TEST_CASE(
    "mailq-relay honours MTA-STS: enforce delivers only to the MX hosts a policy names, over "
    "verified TLS, and defers the rest with the reason in the log and in mailq-queue show",
    "[relay][once][mta_sts]") {
  TempDir pki_dir;
  TestPki pki;
  std::string err;
  REQUIRE(pki.generate(pki_dir.path(), &err));
  std::string policy_cert, policy_key, mx_cert, mx_key;
  REQUIRE(test::make_signed_cert(pki_dir.path(), pki, "policy",
                                 "mta-sts.sts.test,mta-sts.mismatch.test,mta-sts.badcert.test,"
                                 "mta-sts.tested.test",
                                 &policy_cert, &policy_key, &err));
  REQUIRE(
      test::make_signed_cert(pki_dir.path(), pki, "mx", "mx.sts.test", &mx_cert, &mx_key, &err));
  test::PolicyHttpsServer https(policy_cert, policy_key);
  INFO(err);
  REQUIRE(https.start(&err));
  const std::string enforce = "version: STSv1\nmode: enforce\nmax_age: 86400\nmx: ";
  https.serve("mta-sts.sts.test", enforce + "mx.sts.test\n");
  https.serve("mta-sts.mismatch.test", enforce + "mx.sts.test\n");
  https.serve("mta-sts.badcert.test", enforce + "mx.badcert.test\n");
  https.serve("mta-sts.tested.test",
              "version: STSv1\nmode: testing\nmax_age: 86400\nmx: mx.tested.test\n");

  std::string zone = kZone;
  for (const std::string d : {"sts", "mismatch", "badcert", "tested"}) {
    zone += d + " 300 IN MX 10 mx." + d + ".test.\nmx." + d + " 300 IN A 127.0.0.1\n" +
            "_mta-sts." + d + " 300 IN TXT \"v=STSv1; id=1;\"\nmta-sts." + d +
            " 300 IN A 127.0.0.1\n";
  }
  UnboundServer::Config dns_config;
  dns_config.zones.push_back({"test.", zone});
  auto dns = UnboundServer::start(dns_config, &err);
  REQUIRE(dns);
  // One MX server for all three: its certificate names mx.sts.test only.
  AiosmtpdServer mx(AiosmtpdServer::Tls::offered, mx_cert, mx_key);
  REQUIRE(mx.start(&err));

  RelayHarness h;
  std::string config = h.config_text(mx.endpoint().port, dns->address());
  const std::string route_tail = "tls = \"none\"\ndefault = true\n";
  REQUIRE(contains(config, route_tail));
  // The MX certificates are checked against the test CA (the route's ca_file); TLS when
  // offered, so that a testing policy's certificate check has a handshake to look at.
  config.replace(config.find(route_tail), route_tail.size(),
                 "tls = \"opportunistic\"\nca_file = \"" + pki.ca_cert + "\"\ndefault = true\n");
  config += "\n[mta_sts]\nca_file = \"" + pki.ca_cert +
            "\"\nport = " + std::to_string(https.port()) + "\n";
  h.write_config(config);
  for (const std::string to : {"a@sts.test", "b@mismatch.test", "c@badcert.test", "d@tested.test"})
    enqueue_offline(config, {to},
                    "From: s@sender.test\r\nTo: " + to + "\r\nSubject: sts\r\n\r\nhello\r\n");
  std::string out;
  CHECK(run_program({MAILQ_RELAY_BIN, "--config", h.config_file, "--once"}, &out, 60s) == 75);
  INFO(out);
  const std::string log = h.log_text();
  INFO(log);
  // sts.test: its MX is named by the policy and proves it: delivered over TLS.
  CHECK(mx.wait_for_output("DATA tls=1 from=<someone@sender.test> to=<a@sts.test>"));
  CHECK(contains(log, "sts.test: fetched policy id 1 (mode enforce, max_age 86400 s)"));
  // mismatch.test: its MX is not in its policy: not used, deferred.
  CHECK(contains(log,
                 "MX host mx.mismatch.test of mismatch.test does not match the MTA-STS "
                 "policy of mismatch.test, id 1 (mode enforce): not used"));
  CHECK(contains(log,
                 "451 4.7.5 [internal] no MX host of mismatch.test matches its MTA-STS "
                 "policy (id 1, mode enforce)"));
  // badcert.test: the MX is named, but its certificate is not for its name: deferred.
  CHECK(contains(log,
                 "421 4.7.5 [internal] TLS handshake failed: certificate verification "
                 "failed: The certificate Common Name (CN) does not match with the expected "
                 "CN (required by the MTA-STS policy of badcert.test, id 1)"));
  // tested.test: a testing policy names the MX, whose certificate is for another name: said in
  // the log, delivered all the same.
  CHECK(mx.wait_for_output("DATA tls=1 from=<someone@sender.test> to=<d@tested.test>"));
  CHECK(contains(log,
                 "fails the certificate check of the MTA-STS policy of tested.test, id 1 (mode "
                 "testing): The certificate Common Name (CN) does not match with the expected CN; "
                 "delivered all the same, as the policy only tests"));
  CHECK(mx.output().find("to=<b@mismatch.test>") == std::string::npos);
  CHECK(mx.output().find("to=<c@badcert.test>") == std::string::npos);
  // The queue tool says why each is still there.
  const std::string shown = show_every_message(h.spool);
  INFO(shown);
  CHECK(contains(shown, "no MX host of mismatch.test matches its MTA-STS policy"));
  CHECK(contains(shown, "required by the MTA-STS policy of badcert.test"));
  // The policies were kept for the next run.
  CHECK(contains(read_file(h.spool + "/mta-sts.cache"), "mismatch.test 1 "));
}

// Queues a message to to@<name>.dane.test for each of `names`, runs mailq-relay --once with
// [resolver] dnssec on against `dns` (some stay deferred: exit 75) and returns its log.
std::string relay_dane_once(RelayHarness& h, std::uint16_t mx_port, const UnboundServer& dns,
                            std::initializer_list<const char*> names) {
  std::string config = h.config_text(mx_port, dns.address());
  config.replace(config.find("[resolver]\n"), 11, "[resolver]\ndnssec = true\n");
  h.write_config(config);
  for (const std::string d : names) {
    const std::string to = "to@" + d + ".dane.test";
    enqueue_offline(config, {to},
                    "From: s@sender.test\r\nTo: " + to + "\r\nSubject: dane\r\n\r\nhello\r\n");
  }
  std::string out;
  CHECK(run_program({MAILQ_RELAY_BIN, "--config", h.config_file, "--once"}, &out, 60s) == 75);
  INFO(out);
  return h.log_text();
}

TEST_CASE(
    "mailq-relay uses DANE behind a validating resolver: a certificate its TLSA record names is "
    "delivered to, a mismatch and a bogus TLSA answer defer with 4.7.5, unusable records still "
    "encrypt",
    "[relay][once][dane]") {
  TempDir pki_dir;
  TestPki pki;
  std::string err;
  REQUIRE(pki.generate(pki_dir.path(), &err));
  // One MX server for all of them; its certificate is signed by a CA nobody trusts here.
  AiosmtpdServer mx(AiosmtpdServer::Tls::offered, pki.server_cert, pki.server_key);
  REQUIRE(mx.start(&err));
  const std::string port = std::to_string(mx.endpoint().port);
  const std::string right = tlsa_data(pki.server_cert, 1, 1, &err);
  const std::string wrong = tlsa_data(pki.self_signed_cert, 1, 1, &err);
  REQUIRE_FALSE(right.empty());
  REQUIRE_FALSE(wrong.empty());
  const std::map<std::string, std::string> tlsa = {{"good", "3 1 1 " + right},
                                                   {"wrong", "3 1 1 " + wrong},
                                                   {"bogus", "3 1 1 " + right},
                                                   {"unusable", "1 1 1 " + right}};
  TempDir keys;
  auto dns = dane_dns(keys, port, tlsa, "bogus");
  RelayHarness h;
  const std::string log =
      relay_dane_once(h, mx.endpoint().port, *dns, {"good", "wrong", "bogus", "unusable"});
  INFO(log);
  INFO(dns->log());
  // good: authenticated by its TLSA record, though no CA vouches for the certificate.
  CHECK(mx.wait_for_output("DATA tls=1 from=<someone@sender.test> to=<to@good.dane.test>"));
  CHECK(contains(log, "verified by DANE TLSA 3 1 1 " + right.substr(0, 8) + "…"));
  // unusable: only a PKIX-EE record, unusable for SMTP: encrypted all the same.
  CHECK(mx.wait_for_output("DATA tls=1 from=<someone@sender.test> to=<to@unusable.dane.test>"));
  CHECK(contains(log, "_" + port + "._tcp.mx.unusable.dane.test: no usable TLSA record among 1"));
  // wrong: the certificate is not the one published: deferred.
  CHECK(contains(log,
                 "421 4.7.5 [internal] TLS handshake failed: DANE: the certificate chain "
                 "matches none of the 1 usable TLSA record (for mx.wrong.dane.test or "
                 "wrong.dane.test) (required by the DANE TLSA records of _" +
                     port + "._tcp.mx.wrong.dane.test)"));
  // bogus: the TLSA lookup failed validation: the host is not used.
  CHECK(contains(log, "451 4.7.5 [internal] TLSA lookup error for mx.bogus.dane.test:" + port));
  CHECK(mx.output().find("to=<to@wrong.dane.test>") == std::string::npos);
  CHECK(mx.output().find("to=<to@bogus.dane.test>") == std::string::npos);
  // The queue tool says why each is still there.
  const std::string shown = show_every_message(h.spool);
  INFO(shown);
  CHECK(contains(shown, "required by the DANE TLSA records of _" + port + "._tcp.mx.wrong"));
  CHECK(contains(shown, "TLSA lookup error for mx.bogus.dane.test"));

  // With dnssec off nothing is secure: no DANE, and the relay delivers as before.
  RelayHarness plain;
  std::string plain_config = plain.config_text(mx.endpoint().port, dns->address());
  plain.write_config(plain_config);
  enqueue_offline(plain_config, {"again@wrong.dane.test"},
                  "From: s@sender.test\r\nTo: again@wrong.dane.test\r\nSubject: x\r\n\r\nhi\r\n");
  std::string out;
  CHECK(run_program({MAILQ_RELAY_BIN, "--config", plain.config_file, "--once"}, &out, 60s) == 0);
  INFO(out);
  CHECK(mx.wait_for_output("DATA tls=0 from=<someone@sender.test> to=<again@wrong.dane.test>"));
}

TEST_CASE(
    "mailq-relay's DANE against Postfix 3.7's smtpd: the certificate its TLSA record names "
    "takes the message, another certificate's record defers it",
    "[relay][once][dane][interop][postfix]") {
  REQUIRE(::geteuid() == 0);  // a private Postfix instance runs its daemons as root
  TempDir pki_dir;
  TestPki pki;
  std::string err;
  REQUIRE(pki.generate(pki_dir.path(), &err));
  const std::uint16_t smtpd_port = free_loopback_port();
  PostfixInstance postfix;
  PostfixInstance::Options options;
  options.smtpd_port = smtpd_port;
  options.settings = {"smtpd_tls_cert_file=" + pki.server_cert,
                      "smtpd_tls_key_file=" + pki.server_key, "smtpd_tls_security_level=may",
                      "smtpd_tls_loglevel=1", "mynetworks=127.0.0.0/8",
                      "smtpd_relay_restrictions=permit_mynetworks,reject",
                      // What it accepts stays in its queue.
                      "default_transport=retry:4.3.0 kept by the test"};
  INFO(err);
  REQUIRE(postfix.start(options, &err));
  const std::string port = std::to_string(smtpd_port);
  const std::string right = tlsa_data(pki.server_cert, 1, 1, &err);
  const std::string wrong = tlsa_data(pki.self_signed_cert, 0, 1, &err);
  REQUIRE_FALSE(right.empty());
  REQUIRE_FALSE(wrong.empty());
  TempDir keys;
  auto dns = dane_dns(keys, port, {{"good", "3 1 1 " + right}, {"wrong", "3 0 1 " + wrong}});

  RelayHarness h;
  const std::string log = relay_dane_once(h, smtpd_port, *dns, {"good", "wrong"});
  INFO(log);
  INFO(postfix.maillog());
  CHECK(contains(log, "verified by DANE TLSA 3 1 1 " + right.substr(0, 8) + "…"));
  CHECK(postfix.wait_for_log("to=<to@good.dane.test>"));
  CHECK(contains(postfix.maillog(), "Anonymous TLS connection established from localhost"));
  CHECK(contains(log,
                 "421 4.7.5 [internal] TLS handshake failed: DANE: the certificate chain "
                 "matches none of the 1 usable TLSA record (for mx.wrong.dane.test or "
                 "wrong.dane.test)"));
  CHECK_FALSE(contains(postfix.maillog(), "to=<to@wrong.dane.test>"));
}

TEST_CASE(
    "mailq-relay: an 8-bit message to Postfix's smtp-sink without 8BITMIME arrives converted "
    "to 7 bit, and Python's email package reads back the original text",
    "[relay][once][8bit]") {
  REQUIRE_UNBOUND(dns);
  SmtpSink sink({"-8"});  // does not announce 8BITMIME
  std::string err;
  REQUIRE(sink.start(&err));
  RelayHarness h;
  const std::string config = h.config_text(sink.port(), dns->address());
  h.write_config(config);
  const std::string text =
      "Gr\xc3\xbc\xc3\x9f"
      "e aus K\xc3\xb6ln, = und Leerzeichen am Ende \r\n";
  enqueue_offline(config, {"a@static.test"},
                  "From: a@sender.test\r\nSubject: 8bit\r\nMIME-Version: 1.0\r\n"
                  "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
                  "\r\n" +
                      text);
  std::string out;
  CHECK(run_program({MAILQ_RELAY_BIN, "--config", h.config_file, "--once"}, &out, 60s) == 0);
  INFO(out);
  auto dumps = sink.wait_for_dumps(1);
  REQUIRE(dumps.size() == 1);
  INFO(dumps[0]);
  CHECK(contains(dumps[0], "Content-Transfer-Encoding: quoted-printable\n"));
  CHECK_FALSE(contains(dumps[0], "Content-Transfer-Encoding: 8bit"));
  CHECK(std::none_of(dumps[0].begin(), dumps[0].end(),
                     [](char c) { return static_cast<unsigned char>(c) >= 0x80; }));
  CHECK(contains(h.log_text(), "converted to 7 bit (the server does not offer 8BITMIME"));
  // The received copy (after smtp-sink's own X- headers) decodes to the text sent.
  std::string message = dumps[0].substr(dumps[0].find("From: a@sender.test"));
  REQUIRE(message.size() > 2);
  REQUIRE(message.substr(message.size() - 2) == "\n\n");
  message.pop_back();  // the empty line smtp-sink writes after a dump
  const std::string script =
      "import sys, email, email.policy\n"
      "m = email.message_from_bytes(sys.stdin.buffer.read(), policy=email.policy.strict)\n"
      "sys.stdout.buffer.write(m.get_payload(decode=True))\n";
  ToolRun py = run_tool({"/usr/bin/python3", "-c", script}, message);
  CHECK(py.status == 0);
  CHECK(py.err.empty());
  std::string want = text;
  want.replace(want.find("\r\n"), 2, "\n");  // smtp-sink stores LF line ends
  CHECK(py.out == want);
}

TEST_CASE(
    "mailq-relay: refuses to start when the spool, the port, the control socket or the "
    "log is unavailable",
    "[relay][start]") {
  REQUIRE_UNBOUND(dns);
  RelayHarness h;
  const std::uint16_t listen_port = free_tcp_port();
  h.write_config(h.config_text(2525, dns->address(),
                               "listen = \"127.0.0.1:" + std::to_string(listen_port) + "\"\n"));
  h.start();

  std::string out;
  // The same configuration: the spool is locked by the running relay.
  CHECK(run_program({MAILQ_RELAY_BIN, "--config", h.config_file}, &out, 30s) == 69);
  CHECK(contains(out, "spool " + h.spool + " is in use by another process"));

  // Another spool, the same control socket: it is live.
  RelayHarness other;
  std::string text = other.config_text(2525, dns->address());
  text.replace(text.find(other.control), other.control.size(), h.control);
  other.write_config(text);
  CHECK(run_program({MAILQ_RELAY_BIN, "--config", other.config_file}, &out, 30s) == 69);
  CHECK(contains(out, "control socket " + h.control + " is live: another mailq-relay is running"));

  // Another spool and socket, the same listen port.
  RelayHarness third;
  third.write_config(third.config_text(
      2525, dns->address(), "listen = \"127.0.0.1:" + std::to_string(listen_port) + "\"\n"));
  CHECK(run_program({MAILQ_RELAY_BIN, "--config", third.config_file}, &out, 30s) == 69);
  CHECK(contains(out, "127.0.0.1:" + std::to_string(listen_port)));
  CHECK_FALSE(fs::exists(third.control));  // nothing left behind

  // Another spool and socket, the metrics port taken by the running relay's listener.
  RelayHarness fifth;
  fifth.write_config(fifth.config_text(
      2525, dns->address(), "metrics = \"127.0.0.1:" + std::to_string(listen_port) + "\"\n"));
  CHECK(run_program({MAILQ_RELAY_BIN, "--config", fifth.config_file}, &out, 30s) == 69);
  CHECK(contains(out, "127.0.0.1:" + std::to_string(listen_port)));

  // A log in a directory that does not exist.
  RelayHarness fourth;
  std::string t4 = fourth.config_text(2525, dns->address());
  t4.replace(t4.find(fourth.log), fourth.log.size(), fourth.dir.file("no/such/dir/mail.log"));
  fourth.write_config(t4);
  CHECK(run_program({MAILQ_RELAY_BIN, "--config", fourth.config_file}, &out, 30s) == 73);
  CHECK(contains(
      out, "open log " + fourth.dir.file("no/such/dir/mail.log") + ": No such file or directory"));

  REQUIRE(h.daemon.signal(SIGTERM));
  CHECK(h.daemon.wait(30s) == 0);
}

TEST_CASE(
    "mailq-relay: delivers through a static route and an MX route, marks a refusing "
    "destination down, and answers every control verb",
    "[relay][control][e2e]") {
  REQUIRE_UNBOUND(dns);
  SmtpSink sink;
  std::string err;
  REQUIRE(sink.start(&err));
  RelayHarness h;
  h.write_config(h.config_text(sink.port(), dns->address()));
  h.start();

  // submit: static route and MX route, both delivered.
  const std::string s1 = h.submit("someone@sender.test", "a@static.test", "static");
  const std::string s2 = h.submit("someone@sender.test", "b@good.test", "mx");
  CHECK(sink.wait_for_dumps(2).size() == 2);
  REQUIRE(h.log_has("ZZ" + s1 + ".00"));
  REQUIRE(wait_until([&] { return count_of(h.log_text(), "smtp; 250") >= 2; }));
  const std::string log = h.log_text();
  // The default layout (segments): the queue file field names the segment file, which
  // exists, and the message by its seed-002 name.
  CHECK(contains(log, "\n segments/0000000000000001.seg#ZZ" + s1 + ".00\n"));
  CHECK(contains(log, "\n segments/0000000000000001.seg#ZZ" + s2 + ".00\n"));
  CHECK(fs::is_regular_file(h.spool + "/segments/0000000000000001.seg"));
  CHECK(contains(log, "dns;mx.good.test (TCP|"));

  // A refusing destination: the first message fails to connect and marks it down
  // (threshold 1), the second gets the seed 000 record without a connection.
  const std::string d1 = h.submit("someone@sender.test", "x@down.test", "down1");
  REQUIRE(h.log_has("TCP active open: Failed connect() Error: connection refused"));
  REQUIRE(wait_until([&] { return contains(h.ok({"status"}), "down.test: down until"); }));
  const std::string d2 = h.submit("someone@sender.test", "y@down.test", "down2");
  REQUIRE(h.log_has(kMarkedDown));

  std::string status = h.ok({"status"});
  INFO(status);
  CHECK(contains(status, "queue: 2 messages, 2 recipients pending, 0 held, 1 destination\n"));
  CHECK(contains(status, "domains: 1 down\n"));
  CHECK(contains(status, "down.test: down until "));
  CHECK(contains(status, "connections: "));
  CHECK(contains(status, "listener: none\n"));
  CHECK(contains(status, "control: " + h.control + "\n"));

  // list / summary / show
  std::string list = h.ok({"list"});
  CHECK(contains(list, d1));
  CHECK(contains(list, d2));
  CHECK_FALSE(contains(list, s1));
  CHECK(contains(h.ok({"summary"}), "down.test"));
  std::string show = h.ok({"show", d1});
  CHECK(contains(show, "id: " + d1 + "\n"));
  CHECK(contains(show, "Transient Delivery Attempts | Failure Time | Details | Recipient |\n"));
  std::string show2 = h.ok({"show", d2});
  CHECK(contains(show2, kMarkedDown));

  // flush: the down destination is not retried before its mark expires.
  std::string flush = h.ok({"flush"});
  CHECK(contains(flush, "flush: "));
  CHECK(contains(flush, "down.test is down until "));

  // hold / release by id and by destination.
  CHECK(h.ok({"hold", d1}) == "held " + d1 + "\n");
  CHECK(contains(h.ok({"list", "--held"}), d1));
  CHECK(contains(h.ok({"status"}), "1 held"));
  CHECK(h.ok({"release", d1}) == "released " + d1 + "\n");
  CHECK(h.ok({"hold", "down.test"}) == "held 2 messages for down.test\n");
  CHECK(h.ok({"release", "down.test"}) == "released 2 messages for down.test\n");

  // reset-domains: the mark is gone; the message held back only by it is tried at once.
  CHECK(h.ok({"reset-domains"}) == "reset-domains: 1 destination no longer down: down.test\n");

  // d2 was tried again at once and failed again: down again (threshold 1), nothing in flight.
  REQUIRE(wait_until([&] { return contains(h.ok({"status"}), "down.test: down until"); }));

  // bounce and delete.
  const std::size_t dumps_before = sink.wait_for_dumps(2).size();
  std::string bounced = h.ok({"bounce", d1});
  CHECK(contains(bounced, d1));
  // The DSN goes to someone@sender.test, which smtp-sink accepts.
  CHECK(sink.wait_for_dumps(dumps_before + 1).size() == dumps_before + 1);
  std::string deleted = h.ok({"delete", d2});
  CHECK(contains(deleted, "deleted " + d2));
  REQUIRE(wait_until([&] { return contains(h.ok({"list"}), "queue is empty"); }));

  auto bad = h.call({"show", "NOTANID"});
  CHECK_FALSE(bad.ok);
  auto unknown = h.call({"frobnicate"});
  CHECK_FALSE(unknown.ok);
  CHECK(unknown.error == "unknown verb 'frobnicate' (try 'help')");
  // (An argument with a space is refused by the client before it is sent: test_control.cpp.)
  auto bad_submit = h.call({"submit", "3", "someone@sender.test", "not-an-address"}, "abc");
  CHECK_FALSE(bad_submit.ok);

  REQUIRE(h.daemon.signal(SIGTERM));
  CHECK(h.daemon.wait(30s) == 0);
  CHECK(spool_files(h.spool).empty());  // bounced and deleted: gone from the spool too
}

TEST_CASE(
    "mailq-relay: SIGTERM stops cleanly with the deferred messages kept, SIGHUP reopens "
    "the log",
    "[relay][signals]") {
  REQUIRE_UNBOUND(dns);
  RelayHarness h;
  h.write_config(h.config_text(free_tcp_port(), dns->address()));
  h.start();
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i)
    ids.push_back(h.submit("someone@sender.test", "u" + std::to_string(i) + "@down.test"));
  REQUIRE(wait_until([&] { return count_of(h.log_text(), " Q 1") >= 3; }));

  // Log rotation: move the file away, HUP, and the relay writes to a new file.
  const std::string rotated = h.log + ".1";
  REQUIRE(::rename(h.log.c_str(), rotated.c_str()) == 0);
  REQUIRE(h.daemon.signal(SIGHUP));
  REQUIRE(wait_until([&] { return fs::exists(h.log); }));
  REQUIRE(h.log_has("log reopened"));
  const std::string id4 = h.submit("someone@sender.test", "later@down.test");
  REQUIRE(h.log_has("ZZ" + id4 + ".00"));
  CHECK_FALSE(contains(read_file(rotated), id4));
  CHECK(contains(read_file(rotated), ids[0]));
  ids.push_back(id4);

  REQUIRE(h.daemon.signal(SIGTERM));
  CHECK(h.daemon.wait(30s) == 0);
  CHECK(h.log_has("stopped: 4 messages in the queue", 1s));
  CHECK_FALSE(fs::exists(h.control));  // the socket file is removed
  for (const auto& id : ids) CHECK(has_spool_file_for(h.spool, id));
  // Nothing lost: a new relay recovers all four.
  h.start();
  CHECK(contains(h.ok({"status"}), "queue: 4 messages"));
  REQUIRE(h.daemon.signal(SIGINT));
  CHECK(h.daemon.wait(30s) == 0);
}

TEST_CASE(
    "mailq-relay: the SMTP listener answers 250 only once the message is in the spool, "
    "and the metrics endpoint reports it",
    "[relay][listener][metrics]") {
  REQUIRE_UNBOUND(dns);
  SmtpSink sink;
  std::string err;
  REQUIRE(sink.start(&err));
  RelayHarness h;
  const std::uint16_t listen_port = free_tcp_port();
  const std::uint16_t metrics_port = free_tcp_port();
  h.write_config(h.config_text(sink.port(), dns->address(),
                               "listen = \"127.0.0.1:" + std::to_string(listen_port) +
                                   "\"\nmetrics = \"127.0.0.1:" + std::to_string(metrics_port) +
                                   "\"\n"));
  h.start();

  RawClient c;
  REQUIRE(c.connect("127.0.0.1", listen_port));
  CHECK(c.read_replies(1).substr(0, 4) == "220 ");
  c.send("EHLO client.mailq.test\r\n");
  std::string ehlo = c.read_replies(1);
  CHECK(contains(ehlo, "PIPELINING"));
  // Pipelined: MAIL, two RCPTs (one to a held-back destination), DATA.
  c.send(
      "MAIL FROM:<someone@sender.test>\r\nRCPT TO:<x@down.test>\r\n"
      "RCPT TO:<r@good.test>\r\nDATA\r\n");
  CHECK(c.read_replies(1).substr(0, 3) == "250");
  CHECK(c.read_replies(1).substr(0, 3) == "250");
  CHECK(c.read_replies(1).substr(0, 3) == "250");
  CHECK(c.read_replies(1).substr(0, 3) == "354");
  c.send("Subject: over smtp\r\n\r\nline one\r\n..dot-stuffed\r\n.\r\n");
  const std::string queued = c.read_replies(1);
  REQUIRE(queued.rfind("250 2.0.0 Ok: queued as ", 0) == 0);
  const std::string id = queued.substr(24, 13);
  // Durable before the 250: the relay holds it in a file that exists (down.test keeps the
  // message queued).
  CHECK(h.holds(id));
  c.send("QUIT\r\n");
  CHECK(c.read_replies(1).substr(0, 3) == "221");

  auto dumps = sink.wait_for_dumps(1);
  REQUIRE(dumps.size() == 1);
  CHECK(contains(dumps[0], ".dot-stuffed\n"));
  // The trace field of the relay, with the queue id the client was given (two recipients:
  // no "for").
  CHECK(contains(dumps[0], "Received: from client.mailq.test ([127.0.0.1])\n\tby "));
  CHECK(contains(dumps[0], " (mailq) with ESMTP id " + id + ";\n\t"));
  CHECK(h.log_has("tcp_smtp"));
  REQUIRE(h.log_has("TCP active open: Failed connect() Error: connection refused"));

  // The D record follows smtp-sink's dump: wait for it before reading the counters.
  REQUIRE(h.log_has(" D 1"));
  std::string status = h.ok({"status"});
  CHECK(contains(status, "listener: 127.0.0.1:" + std::to_string(listen_port)));

  std::string status_line;
  const std::string body = http_get(metrics_port, "/metrics", &status_line);
  CHECK(status_line.substr(8) == " 200 OK");
  auto metrics = parse_metrics(body);
  CHECK(metrics["mailq_queue_messages"] == 1);
  CHECK(metrics["mailq_listener_messages_accepted_total"] == 1);
  CHECK(metrics["mailq_connection_failures_total"] >= 1);
  CHECK(metrics["mailq_domains_down"] == 1);
  bool delivered = false;
  for (auto& [k, v] : metrics)
    if (k.rfind("mailq_deliveries_total", 0) == 0 && v >= 1) delivered = true;
  CHECK(delivered);
  http_get(metrics_port, "/nothing", &status_line);
  CHECK(status_line.substr(8) == " 404 Not Found");

  // SIGTERM with a client connected between transactions: it is told, and the relay exits.
  RawClient idle;
  REQUIRE(idle.connect("127.0.0.1", listen_port));
  CHECK(idle.read_replies(1).substr(0, 4) == "220 ");
  idle.send("EHLO idle.mailq.test\r\n");
  CHECK(idle.read_replies(1).substr(0, 4) == "250-");
  REQUIRE(h.daemon.signal(SIGTERM));
  CHECK(idle.read_replies(1).substr(0, 9) == "421 4.3.2");
  CHECK(h.daemon.wait(30s) == 0);
  CHECK(has_spool_file_for(h.spool, id));
}

TEST_CASE(
    "mailq-relay: the listener refuses a bare LF before the dot, a NUL, an over-long line "
    "and queues nothing of them",
    "[relay][listener]") {
  REQUIRE_UNBOUND(dns);
  RelayHarness h;
  const std::uint16_t listen_port = free_tcp_port();
  h.write_config(h.config_text(free_tcp_port(), dns->address(),
                               "listen = \"127.0.0.1:" + std::to_string(listen_port) + "\"\n"));
  h.start();

  RawClient c;
  REQUIRE(c.connect("127.0.0.1", listen_port));
  CHECK(c.read_replies(1).substr(0, 4) == "220 ");
  c.send("EHLO client.mailq.test\r\n");
  CHECK(c.read_replies(1).substr(0, 4) == "250-");
  auto transaction = [&](const std::string& data) {
    c.send("MAIL FROM:<someone@sender.test>\r\nRCPT TO:<x@down.test>\r\nDATA\r\n");
    CHECK(c.read_replies(1).substr(0, 3) == "250");
    CHECK(c.read_replies(1).substr(0, 3) == "250");
    CHECK(c.read_replies(1).substr(0, 3) == "354");
    c.send(data);
    return c.read_replies(1);
  };
  // <LF>.<CR><LF> must not end the message (nor start a second one): the whole message is
  // refused at the real end.
  std::string smuggle = transaction(
      "Subject: a\r\n\r\nbody\n.\r\nMAIL FROM:<evil@sender.test>\r\nRCPT "
      "TO:<victim@down.test>\r\nDATA\r\nsmuggled\r\n.\r\n");
  CHECK(smuggle.substr(0, 9) == "550 5.6.0");
  std::string nul = transaction(std::string("Subject: b\r\n\r\nnul ") + '\0' + " here\r\n.\r\n");
  CHECK(nul.substr(0, 9) == "550 5.6.0");
  std::string long_line = transaction("Subject: c\r\n\r\n" + std::string(1200, 'x') + "\r\n.\r\n");
  CHECK(long_line.substr(0, 1) == "5");
  // A loop: more Received fields than the limit (50 by default).
  std::string hops;
  for (int i = 0; i < 51; ++i)
    hops += "Received: from a.test by b.test;\r\n\tMon, 07 Dec 2026 00:00:00 +0000\r\n";
  std::string looped = transaction(hops + "Subject: loop\r\n\r\nround\r\n.\r\n");
  CHECK(looped ==
        "554 5.4.6 Too many hops: 51 Received header fields, more than 50 (a mail "
        "loop?)\r\n");
  // An over-long command line.
  c.send("NOOP " + std::string(3000, 'n') + "\r\n");
  CHECK(c.read_replies(1).substr(0, 9) == "500 5.5.2");
  // The session goes on: a clean message is taken.
  std::string fine = transaction("Subject: d\r\n\r\nfine\r\n.\r\n");
  CHECK(fine.rfind("250 2.0.0 Ok: queued as ", 0) == 0);
  c.send("QUIT\r\n");
  CHECK(c.read_replies(1).substr(0, 3) == "221");

  std::string status = h.ok({"status"});
  INFO(status);
  CHECK(contains(status, "queue: 1 message,"));
  CHECK_FALSE(contains(h.log_text(), "evil@sender.test"));
  CHECK_FALSE(contains(h.log_text(), "victim@down.test"));
  REQUIRE(h.daemon.signal(SIGTERM));
  CHECK(h.daemon.wait(30s) == 0);
}

TEST_CASE(
    "mailq-relay: Python's smtplib submits UTF-8 addresses with SMTPUTF8 through the "
    "listener, and the message is queued with them and a UTF8SMTP Received header",
    "[relay][listener][utf8]") {
  REQUIRE_UNBOUND(dns);
  RelayHarness h;
  const std::uint16_t listen_port = free_tcp_port();
  h.write_config(h.config_text(free_tcp_port(), dns->address(),
                               "listen = \"127.0.0.1:" + std::to_string(listen_port) + "\"\n"));
  h.start();
  const std::string script =
      "import smtplib, sys\n"
      "s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]), timeout=30)\n"
      "s.ehlo('client.mailq.test')\n"
      "assert s.has_extn('smtputf8')\n"
      "msg = 'From: J\\u00f6rg <j\\u00f6rg@sender.test>\\r\\nSubject: Gr\\u00fc\\u00dfe\\r\\n"
      "\\r\\nHallo\\r\\n'\n"
      "s.sendmail('j\\u00f6rg@sender.test', ['m\\u00fcller@down.test'], msg.encode('utf-8'),\n"
      "           mail_options=['SMTPUTF8', 'BODY=8BITMIME'])\n"
      "s.quit()\n";
  ToolRun py = run_tool({"/usr/bin/python3", "-c", script, std::to_string(listen_port)});
  INFO(py.out + py.err);
  REQUIRE(py.status == 0);
  const std::string list = h.ok({"list"});
  INFO(list);
  CHECK(contains(list, "j\xc3\xb6rg@sender.test"));
  CHECK(contains(list, "m\xc3\xbcller@down.test"));
  CHECK(contains(h.log_text(), "m\xc3\xbcller@down.test"));
  REQUIRE(h.daemon.signal(SIGTERM));
  CHECK(h.daemon.wait(30s) == 0);
  // Stored with the trace field the relay added.
  test::OpenedSpool opened(h.spool);
  const auto stored = opened.stored();
  REQUIRE(stored.size() == 1);
  CHECK(contains(stored[0].body, " (mailq) with UTF8SMTP id "));
}

TEST_CASE(
    "mailq-relay: when the spool cannot store a message the SMTP client gets 451 4.3.0 "
    "with the reason and nothing is queued",
    "[relay][listener][storage]") {
  REQUIRE_UNBOUND(dns);
  RelayHarness h;
  const std::uint16_t listen_port = free_tcp_port();
  // The file spool writes new messages into tmp/ through a directory descriptor: once that
  // directory is deleted no file can be created in it, even by root.
  h.write_config(h.config_text(
      free_tcp_port(), dns->address(),
      "spool_layout = \"files\"\nlisten = \"127.0.0.1:" + std::to_string(listen_port) + "\"\n"));
  h.start();
  REQUIRE(::rmdir((h.spool + "/tmp").c_str()) == 0);

  RawClient c;
  REQUIRE(c.connect("127.0.0.1", listen_port));
  CHECK(c.read_replies(1).substr(0, 4) == "220 ");
  c.send(
      "EHLO client.mailq.test\r\nMAIL FROM:<someone@sender.test>\r\n"
      "RCPT TO:<x@down.test>\r\nDATA\r\n");
  CHECK(c.read_replies(1).substr(0, 4) == "250-");
  CHECK(c.read_replies(1).substr(0, 3) == "250");
  CHECK(c.read_replies(1).substr(0, 3) == "250");
  CHECK(c.read_replies(1).substr(0, 3) == "354");
  c.send("Subject: lost?\r\n\r\nnot lost: refused\r\n.\r\n");
  const std::string reply = c.read_replies(1);
  INFO(reply);
  CHECK(reply.rfind("451 4.3.0 Requested action aborted: ", 0) == 0);
  CHECK(contains(reply, "storage failure"));
  // The details (which file, which error) are for the operator: in the log.
  CHECK(h.log_has("notice: spool: "));
  c.send("QUIT\r\n");
  CHECK(c.read_replies(1).substr(0, 3) == "221");

  auto r = h.call({"submit", "5", "someone@sender.test", "y@down.test"}, "hello");
  CHECK_FALSE(r.ok);
  CHECK(r.error.rfind("submit: ", 0) == 0);
  CHECK(contains(h.ok({"status"}), "queue: 0 messages"));
  REQUIRE(h.daemon.signal(SIGTERM));
  CHECK(h.daemon.wait(30s) == 0);
}

// After a SIGKILL the relay starts again over its stale control socket and recovers every
// message it acknowledged, whatever the spool layout.
void check_recovery_after_sigkill(const std::string& extra_top) {
  REQUIRE_UNBOUND(dns);
  RelayHarness h;
  h.write_config(h.config_text(free_tcp_port(), dns->address(), extra_top));
  h.start();
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i)
    ids.push_back(h.submit("someone@sender.test", "k" + std::to_string(i) + "@down.test"));
  REQUIRE(h.daemon.signal(SIGKILL));
  CHECK(h.daemon.wait(30s) == 128 + SIGKILL);
  REQUIRE(fs::exists(h.control));  // left behind by the killed relay

  h.start();
  CHECK(contains(h.ok({"status"}), "queue: 5 messages"));
  const std::string list = h.ok({"list"});
  for (const auto& id : ids) CHECK(contains(list, id));
  CHECK(h.log_has("5 messages recovered"));
  REQUIRE(h.daemon.signal(SIGTERM));
  CHECK(h.daemon.wait(30s) == 0);
}

TEST_CASE(
    "mailq-relay: after a crash (SIGKILL) it starts again over the stale control socket "
    "and recovers every acknowledged message",
    "[relay][signals][crash]") {
  check_recovery_after_sigkill("");
}

TEST_CASE("mailq-relay on a segment spool: recovers every acknowledged message after SIGKILL",
          "[relay][signals][crash][segments]") {
  check_recovery_after_sigkill("spool_layout = \"segments\"\n");
}

TEST_CASE(
    "mailq-relay on a segment spool: --once delivers, no per-message files, and a spool of "
    "the other layout is refused",
    "[relay][once][segments]") {
  REQUIRE_UNBOUND(dns);
  SmtpSink sink;
  std::string err;
  REQUIRE(sink.start(&err));
  RelayHarness h;
  const std::string config =
      h.config_text(sink.port(), dns->address(), "spool_layout = \"segments\"\n");
  h.write_config(config);
  enqueue_offline(config, {"a@good.test", "b@static.test", "c@down.test"});
  CHECK_FALSE(fs::exists(h.spool + "/queue"));
  CHECK(spool::detect_layout(h.spool) == spool::Layout::segments);

  std::string out;
  CHECK(run_program({MAILQ_RELAY_BIN, "--config", h.config_file, "--once"}, &out, 60s) == 75);
  INFO(out);
  CHECK(sink.wait_for_dumps(2).size() == 2);
  const std::string log = h.log_text();
  INFO(log);
  CHECK(count_of(log, " D 1") == 2);
  CHECK(contains(log, "--once: nothing due, 1 message in the queue"));

  // The same directory under the file layout: refused, nothing touched.
  RelayHarness files;
  std::string text = files.config_text(sink.port(), dns->address(), "spool_layout = \"files\"\n");
  text.replace(text.find(files.spool), files.spool.size(), h.spool);
  files.write_config(text);
  CHECK(run_program({MAILQ_RELAY_BIN, "--config", files.config_file}, &out, 30s) == 73);
  CHECK(contains(out, "spool " + h.spool + " holds a segment spool (" + h.spool +
                          "/segments); open it with layout = segments (set spool_layout = "
                          "\"segments\" to run on it)"));
  CHECK_FALSE(fs::exists(h.spool + "/queue/tcp_local"));
  CHECK(spool::detect_layout(h.spool) == spool::Layout::segments);

  // And a file spool under the segment layout.
  RelayHarness other;
  const std::string files_config =
      other.config_text(sink.port(), dns->address(), "spool_layout = \"files\"\n");
  enqueue_offline(files_config, {"d@down.test"});
  std::string seg_text = files_config;
  seg_text.replace(seg_text.find("spool_layout = \"files\""), 22, "spool_layout = \"segments\"");
  other.write_config(seg_text);
  CHECK(run_program({MAILQ_RELAY_BIN, "--config", other.config_file}, &out, 30s) == 73);
  CHECK(contains(out, "spool " + other.spool + " holds a file spool (" + other.spool +
                          "/queue); open it with layout = files (set spool_layout = \"files\" "
                          "to run on it)"));
  CHECK(spool_files(other.spool).size() == 1);

  // With no spool_layout the relay runs the spool in the layout it holds (a file spool made
  // before the default became segments keeps working), and says which.
  other.write_config(other.config_text(sink.port(), dns->address()));
  CHECK(run_program({MAILQ_RELAY_BIN, "--config", other.config_file, "--once"}, &out, 60s) == 75);
  const std::string files_log = other.log_text();
  INFO(files_log);
  CHECK(contains(files_log, "started: spool " + other.spool + " (files), 1 message recovered in "));
  CHECK(contains(files_log, "\n queue/tcp_local/ZZ"));
  CHECK(spool::detect_layout(other.spool) == spool::Layout::files);
  CHECK_FALSE(fs::exists(other.spool + "/segments"));
  CHECK(spool_files(other.spool).size() == 1);
}

TEST_CASE("mailq-relay: the listener refuses clients outside its networks (no open relay)",
          "[relay][listener]") {
  REQUIRE_UNBOUND(dns);
  RelayHarness h;
  const std::uint16_t listen_port = free_tcp_port();
  h.write_config(h.config_text(free_tcp_port(), dns->address()) +
                 "\n[listen]\naddress = \"127.0.0.1:" + std::to_string(listen_port) +
                 "\"\nnetworks = [\"127.0.0.2/32\"]\n");
  h.start();
  RawClient c;
  REQUIRE(c.connect("127.0.0.1", listen_port));
  CHECK(c.read_replies(1).rfind("554 5.7.1 ", 0) == 0);
  CHECK(c.read_until_close().empty());
  CHECK(h.log_has("listener: 127.0.0.1 reject: not allowed"));
  CHECK(contains(h.ok({"status"}), "queue: 0 messages"));
  REQUIRE(h.daemon.signal(SIGTERM));
  CHECK(h.daemon.wait(30s) == 0);
}

#endif  // MAILQ_RELAY_BIN

namespace {
// Raises this process's descriptor limit to `want` (root may raise the hard limit too); the
// relay started afterwards inherits it. False when the system will not allow it.
bool raise_nofile(rlim_t want) {
  struct rlimit rl {};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return false;
  if (rl.rlim_cur >= want) return true;
  if (rl.rlim_max < want) rl.rlim_max = want;
  rl.rlim_cur = want;
  return ::setrlimit(RLIMIT_NOFILE, &rl) == 0;
}

// A plain blocking TCP connection to 127.0.0.1:port, -1 on failure.
int connect_loopback(std::uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}
}  // namespace

TEST_CASE(
    "mailq-relay: 10000 concurrent inbound SMTP sessions are held open and the next one gets "
    "421 4.3.2 while the relay keeps accepting and delivering",
    "[relay][listener][exhaustion]") {
  constexpr int kSessions = 10000;
  if (!raise_nofile(kSessions + 2000)) {
    WARN("skipped: cannot raise RLIMIT_NOFILE to " << kSessions + 2000);
    return;
  }
  REQUIRE_UNBOUND(dns);
  SmtpSink sink;
  std::string err;
  REQUIRE(sink.start(&err));
  RelayHarness h;
  const std::uint16_t listen_port = free_tcp_port();
  h.write_config(h.config_text(sink.port(), dns->address(),
                               "[listen]\naddress = \"127.0.0.1:" + std::to_string(listen_port) +
                                   "\"\nmax_sessions = " + std::to_string(kSessions) + "\n"));
  h.start();

  std::vector<int> fds;
  fds.reserve(kSessions);
  struct Closer {
    std::vector<int>& fds;
    ~Closer() {
      for (int fd : fds) ::close(fd);
    }
  } closer{fds};
  for (int i = 0; i < kSessions; ++i) {
    int fd = connect_loopback(listen_port);
    INFO("connection " << i << ": " << std::strerror(errno));
    REQUIRE(fd >= 0);
    fds.push_back(fd);
  }
  const std::string full = std::to_string(kSessions) + " sessions open";
  REQUIRE(wait_until([&] { return contains(h.ok({"status"}), full); }, 120s));

  // One more: refused with 421 4.3.2, not left hanging.
  {
    RawClient extra;
    REQUIRE(extra.connect("127.0.0.1", listen_port));
    CHECK(extra.read_until_close(30s).rfind("421 4.3.2 ", 0) == 0);
  }
  // The engine goes on meanwhile: a message submitted on the control socket is delivered.
  const std::string id = h.submit("someone@sender.test", "user@static.test", "while-full");
  REQUIRE(h.log_has(" D ", 60s));
  CHECK(sink.wait_for_dumps(1).size() == 1);

  // Sessions the clients give up free their slots: a new client gets a whole transaction.
  for (int i = 0; i < 100; ++i) ::close(fds[i]);
  fds.erase(fds.begin(), fds.begin() + 100);
  REQUIRE(wait_until([&] { return !contains(h.ok({"status"}), full); }, 60s));
  RawClient c;
  REQUIRE(c.connect("127.0.0.1", listen_port));
  CHECK(c.read_replies(1).substr(0, 4) == "220 ");
  c.send(
      "EHLO client.mailq.test\r\nMAIL FROM:<someone@sender.test>\r\nRCPT TO:<x@static.test>\r\n"
      "DATA\r\n");
  CHECK(c.read_replies(1).substr(0, 4) == "250-");
  CHECK(c.read_replies(1).substr(0, 3) == "250");
  CHECK(c.read_replies(1).substr(0, 3) == "250");
  CHECK(c.read_replies(1).substr(0, 3) == "354");
  c.send("Subject: after\r\n\r\nafter the flood\r\n.\r\n");
  CHECK(c.read_replies(1).rfind("250 2.0.0 Ok: queued as ", 0) == 0);
  c.send("QUIT\r\n");
  CHECK(c.read_replies(1).substr(0, 3) == "221");
  CHECK(sink.wait_for_dumps(2, 60s).size() == 2);

  // Everyone leaves: the relay is back to no session, and stops cleanly.
  for (int fd : fds) ::close(fd);
  fds.clear();
  REQUIRE(wait_until([&] { return contains(h.ok({"status"}), " 0 sessions open"); }, 120s));
  REQUIRE(h.daemon.signal(SIGTERM));
  CHECK(h.daemon.wait(60s) == 0);
  (void)id;
}
