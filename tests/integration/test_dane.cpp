// DANE (RFC 7672): the c-ares resolver against a validating unbound serving a zone signed at
// test time with ldns, and the transport's certificate matching against a real STARTTLS
// server (python3-aiosmtpd) with TLSA data computed by openssl.
#include <catch2/catch.hpp>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "mailq/ares/resolver.h"
#include "mailq/uv/loop_clock.h"
#include "mailq/uv/transport.h"
#include "support/dnssec.h"
#include "support/hostile_pki.h"
#include "support/loop_checks.h"
#include "support/servers.h"
#include "support/smtp_drivers.h"
#include "support/test_loop.h"
#include "support/unbound_server.h"

using namespace mailq;
using namespace std::chrono_literals;
using mailq::test::AiosmtpdServer;
using mailq::test::SmtpScript;
using mailq::test::SmtpStep;
using mailq::test::TempDir;
using mailq::test::TestLoop;
using mailq::test::TestPki;
using mailq::test::UnboundServer;

namespace {

dane::TlsaRecord record(const std::string& cert, int usage, int selector, int matching) {
  std::string error;
  const std::string hex = test::tlsa_data(cert, selector, matching, &error);
  INFO(error);
  REQUIRE_FALSE(hex.empty());
  dane::TlsaRecord r;
  REQUIRE(dane::parse_record(std::to_string(usage) + " " + std::to_string(selector) + " " +
                                 std::to_string(matching) + " " + hex,
                             r, &error));
  return r;
}

std::string zone_line(const std::string& owner, const dane::TlsaRecord& r, const std::string& hex) {
  return owner + " 300 IN TLSA " + std::to_string(r.usage) + " " + std::to_string(r.selector) +
         " " + std::to_string(r.matching) + " " + hex + "\n";
}

template <class Answer, class Start>
Answer ask(TestLoop& loop, Start&& start) {
  std::optional<Answer> got;
  start([&](Answer a) { got = std::move(a); });
  REQUIRE(loop.run_until([&] { return got.has_value(); }));
  return *got;
}

std::vector<SmtpStep> starttls_steps() {
  return {
      {"", 220},
      {"EHLO client.mailq.test\r\n", 250},
      {"STARTTLS\r\n", 220, true},
      {"EHLO client.mailq.test\r\n", 250},
      {"QUIT\r\n", 221},
  };
}

struct Tls {
  TempDir dir;
  TestPki pki;
  std::string chain;  // the server's certificate, then the CA's
  Tls() {
    std::string error;
    const bool ok = pki.generate(dir.path(), &error);
    INFO(error);
    REQUIRE(ok);
    chain = dir.file("chain.pem");
    test::write_file(chain, test::read_file(pki.server_cert) + test::read_file(pki.ca_cert));
  }
};

struct Outcome {
  std::optional<TlsInfo> info;
  std::string failure;
};

Outcome handshake(const AiosmtpdServer& server, const TlsClientOptions& options) {
  TestLoop loop;
  Outcome out;
  {
    uv::LoopClock clock(loop.get());
    uv::UvTransport transport(loop.get(), clock);
    SmtpScript script(starttls_steps(), options);
    script.start(transport, server.endpoint());
    REQUIRE(loop.run_until([&] { return script.finished(); }));
    out.info = script.tls_info;
    out.failure = script.tls_failure_text;
  }
  test::require_clean_close(loop);
  return out;
}

TlsClientOptions dane_options(std::vector<dane::TlsaRecord> tlsa,
                              const std::string& name = TestPki::kServerName,
                              const std::string& domain = "") {
  TlsClientOptions o;
  o.server_name = name;
  o.verify = true;
  o.tlsa = std::move(tlsa);
  o.dane_domain = domain;
  return o;
}

}  // namespace

TEST_CASE(
    "DANE-EE records authenticate the server's own certificate or key, whatever its name "
    "and issuer",
    "[uv][tls][dane]") {
  Tls t;
  // A self-signed certificate: no CA could vouch for it, its TLSA record does.
  AiosmtpdServer server(AiosmtpdServer::Tls::offered, t.pki.self_signed_cert,
                        t.pki.self_signed_key);
  std::string error;
  REQUIRE(server.start(&error));
  for (auto [selector, matching] : {std::pair{1, 1}, {0, 1}, {1, 2}, {0, 0}, {1, 0}}) {
    const auto r = record(t.pki.self_signed_cert, 3, selector, matching);
    INFO("3 " << selector << " " << matching);
    // Another name than the certificate's: DANE-EE checks no name (RFC 7672 3.1.1).
    auto out = handshake(server,
                         dane_options({record(t.pki.server_cert, 3, 1, 1), r}, "other.mailq.test"));
    INFO(out.failure);
    REQUIRE(out.info);
    CHECK(out.info->verified);
    CHECK(out.info->dane == dane::to_string(r));
  }
  SECTION("no record matches: the handshake fails, saying so") {
    auto out = handshake(
        server, dane_options({record(t.pki.server_cert, 3, 1, 1), record(t.pki.ca_cert, 3, 0, 1)}));
    CHECK_FALSE(out.info);
    CHECK(out.failure ==
          "DANE: the certificate chain matches none of the 2 usable TLSA records (for "
          "mx.mailq.test)");
  }
}

TEST_CASE(
    "DANE-TA records authenticate a chain that carries the trust anchor, for the MX name "
    "or the recipient domain",
    "[uv][tls][dane]") {
  Tls t;
  std::string error;
  const auto ca = record(t.pki.ca_cert, 2, 0, 1);
  SECTION("the CA in the chain, the certificate for the MX name") {
    AiosmtpdServer server(AiosmtpdServer::Tls::offered, t.chain, t.pki.server_key);
    REQUIRE(server.start(&error));
    auto out = handshake(server, dane_options({ca}));
    INFO(out.failure);
    REQUIRE(out.info);
    CHECK(out.info->dane == dane::to_string(ca));
    // The SPKI form of the same anchor.
    const auto spki = record(t.pki.ca_cert, 2, 1, 2);
    out = handshake(server, dane_options({spki}));
    REQUIRE(out.info);
    CHECK(out.info->dane == dane::to_string(spki));
    // Another MX name, but the certificate names the recipient domain's other name.
    out = handshake(server, dane_options({ca}, "other.mailq.test", TestPki::kServerName));
    REQUIRE(out.info);
    // Neither name: refused.
    out = handshake(server, dane_options({ca}, "other.mailq.test", "mailq.test"));
    CHECK_FALSE(out.info);
    CHECK(out.failure.find("DANE: the trust anchor of TLSA record 2 0 1 ") == 0);
    CHECK(out.failure.find("Common Name (CN) does not match") != std::string::npos);
  }
  SECTION("a server that does not send the anchor is not authenticated by it") {
    AiosmtpdServer server(AiosmtpdServer::Tls::offered, t.pki.server_cert, t.pki.server_key);
    REQUIRE(server.start(&error));
    auto out = handshake(server, dane_options({ca}));
    CHECK_FALSE(out.info);
    CHECK(out.failure.find("DANE: the certificate chain matches none of the 1 usable TLSA "
                           "record") == 0);
  }
}

TEST_CASE(
    "DANE-TA checks the chain below the anchor: a certificate the anchor did not issue, "
    "or one that expired, does not pass, and DANE-EE takes an expired one",
    "[uv][tls][dane]") {
  Tls t;
  std::string error;
  test::HostilePki bad;
  REQUIRE(bad.generate(t.dir.path(), t.pki, &error));
  const auto ca = record(t.pki.ca_cert, 2, 0, 1);
  SECTION("a self-signed certificate served with the anchor after it") {
    const std::string chain = t.dir.file("self-chain.pem");
    test::write_file(chain,
                     test::read_file(t.pki.self_signed_cert) + test::read_file(t.pki.ca_cert));
    AiosmtpdServer server(AiosmtpdServer::Tls::offered, chain, t.pki.self_signed_key);
    REQUIRE(server.start(&error));
    auto out = handshake(server, dane_options({ca}));
    CHECK_FALSE(out.info);
    CHECK(out.failure.find("DANE: the trust anchor of TLSA record 2 0 1 ") == 0);
    CHECK(out.failure.find("not correctly signed") != std::string::npos);
  }
  SECTION("an expired certificate the anchor issued") {
    const std::string chain = t.dir.file("expired-chain.pem");
    test::write_file(chain, test::read_file(bad.expired_cert) + test::read_file(t.pki.ca_cert));
    AiosmtpdServer server(AiosmtpdServer::Tls::offered, chain, bad.expired_key);
    REQUIRE(server.start(&error));
    auto out = handshake(server, dane_options({ca}));
    CHECK_FALSE(out.info);
    CHECK(out.failure.find("expired") != std::string::npos);
    // The same certificate named by a DANE-EE record: no dates are checked.
    const auto ee = record(bad.expired_cert, 3, 1, 1);
    out = handshake(server, dane_options({ee}));
    INFO(out.failure);
    REQUIRE(out.info);
    CHECK(out.info->dane == dane::to_string(ee));
  }
}

TEST_CASE(
    "ares resolver with dnssec: a validating unbound's answers are secure, TLSA records "
    "are read, bogus ones fail, and without the setting nothing is secure",
    "[ares][unbound][dane]") {
  Tls t;
  TempDir keys;
  const auto ee = record(t.pki.server_cert, 3, 1, 1);
  std::string error;
  const std::string ee_hex = test::tlsa_data(t.pki.server_cert, 1, 1, &error);
  const std::string zone = std::string(R"($ORIGIN dane.test.
$TTL 300
@            IN SOA   ns.dane.test. hostmaster.dane.test. 1 3600 600 86400 60
@            IN NS    ns.dane.test.
ns           IN A     127.0.0.1
@            IN MX    10 mx.dane.test.
mx           IN A     127.0.0.1
bogus        IN A     127.0.0.1
)") + zone_line("_25._tcp.mx", ee, ee_hex) +
                           zone_line("_25._tcp.bogus", ee, ee_hex);
  test::SignedZone signed_zone;
  REQUIRE(test::sign_zone(keys.path(), "dane.test.", zone, &signed_zone, &error));
  INFO(error);
  // A record changed after signing: its signature no longer matches (bogus).
  std::string text = signed_zone.text;
  const std::string bogus_owner = "_25._tcp.bogus.dane.test.";
  const auto at = text.find(bogus_owner);
  REQUIRE(at != std::string::npos);
  const auto hex_at = text.find(ee_hex.substr(0, 8), at);
  REQUIRE(hex_at != std::string::npos);
  text[hex_at] = text[hex_at] == '0' ? '1' : '0';

  UnboundServer::Config config;
  config.zones.push_back({"dane.test.", text});
  config.zones.push_back({"plain.test.", R"($ORIGIN plain.test.
$TTL 300
@            IN SOA   ns.plain.test. hostmaster.plain.test. 1 3600 600 86400 60
@            IN NS    ns.plain.test.
@            IN MX    10 mx.plain.test.
mx           IN A     127.0.0.1
)" + zone_line("_25._tcp.mx", ee, ee_hex)});
  config.trust_anchor_file = signed_zone.trust_anchor;
  // unbound answers the RFC 6761 name test. itself (NXDOMAIN) unless told not to.
  config.server_lines.push_back("local-zone: \"test.\" nodefault");
  auto dns = UnboundServer::start(config, &error);
  INFO(error);
  REQUIRE(dns);
  INFO(dns->log());

  TestLoop loop;
  {
    uv::LoopClock clock(loop.get());
    ares::AresResolverOptions o;
    o.nameservers = {dns->address()};
    o.dnssec = true;
    auto opened = ares::AresResolver::open(loop.get(), clock, o);
    REQUIRE(opened);
    auto& r = **opened;
    auto mx = ask<MxAnswer>(loop, [&](auto cb) { r.query_mx("dane.test", cb); });
    CHECK(mx.status == DnsStatus::ok);
    CHECK(mx.secure);
    auto addresses =
        ask<AddressAnswer>(loop, [&](auto cb) { r.query_addresses("mx.dane.test", cb); });
    CHECK(addresses.status == DnsStatus::ok);
    CHECK(addresses.secure);
    auto tlsa = ask<TlsaAnswer>(loop, [&](auto cb) { r.query_tlsa("_25._tcp.mx.dane.test", cb); });
    CHECK(tlsa.status == DnsStatus::ok);
    CHECK(tlsa.secure);
    CHECK(tlsa.records == std::vector<dane::TlsaRecord>{ee});
    // From the cache: as secure as it was.
    tlsa = ask<TlsaAnswer>(loop, [&](auto cb) { r.query_tlsa("_25._tcp.mx.dane.test", cb); });
    CHECK(tlsa.secure);
    auto none =
        ask<TlsaAnswer>(loop, [&](auto cb) { r.query_tlsa("_25._tcp.none.dane.test", cb); });
    CHECK(none.status == DnsStatus::nxdomain);
    CHECK(none.secure);  // a validated denial
    auto bogus = ask<TlsaAnswer>(loop, [&](auto cb) { r.query_tlsa(bogus_owner, cb); });
    CHECK(bogus.status == DnsStatus::servfail);
    CHECK_FALSE(bogus.secure);
    auto plain = ask<MxAnswer>(loop, [&](auto cb) { r.query_mx("plain.test", cb); });
    CHECK(plain.status == DnsStatus::ok);
    CHECK_FALSE(plain.secure);  // outside the trust anchor: insecure
    auto plain_tlsa =
        ask<TlsaAnswer>(loop, [&](auto cb) { r.query_tlsa("_25._tcp.mx.plain.test", cb); });
    CHECK(plain_tlsa.status == DnsStatus::ok);
    CHECK_FALSE(plain_tlsa.secure);

    ares::AresResolverOptions untrusting = o;
    untrusting.dnssec = false;
    auto second = ares::AresResolver::open(loop.get(), clock, untrusting);
    REQUIRE(second);
    auto mx2 = ask<MxAnswer>(loop, [&](auto cb) { (*second)->query_mx("dane.test", cb); });
    CHECK(mx2.status == DnsStatus::ok);
    CHECK_FALSE(mx2.secure);
    second->reset();
    opened->reset();
  }
  test::require_clean_close(loop);
}
