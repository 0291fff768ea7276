// The resolution room (src/core/delivery/resolution.h): a destination's route and DNS answers
// -> the hosts to try in order, or the reply its jobs get.
#include <catch2/catch.hpp>

#include <memory>
#include <optional>

#include "core/delivery/resolution.h"
#include "mailq/log.h"

using namespace mailq;
using namespace mailq::detail;

namespace {

// Answers every lookup with `answer`, later, through the clock; counts the lookups.
class FakePolicySource final : public sts::PolicySource {
 public:
  explicit FakePolicySource(Clock& clock) : clock_(clock) {}
  void lookup(const std::string& domain, std::function<void(sts::PolicyAnswer)> done) override {
    asked.push_back(domain);
    clock_.schedule(Duration{0}, [this, done = std::move(done)] { done(answer); });
  }
  sts::PolicyAnswer answer;
  std::vector<std::string> asked;

 private:
  Clock& clock_;
};

sts::PolicyAnswer policy_answer(sts::Mode mode, std::vector<std::string> mx) {
  sts::PolicyAnswer a;
  a.policy.emplace();
  a.policy->mode = mode;
  a.policy->mx = std::move(mx);
  a.policy->id = "2026a";
  a.policy->max_age = std::chrono::hours(24);
  a.fetched = true;
  a.detail = "fetched policy id 2026a";
  return a;
}

struct Fixture {
  ManualClock clock;
  StaticResolver resolver{clock};
  sts::PolicySource* sts = nullptr;
  LocalIdentity self;
  std::shared_ptr<int> owner = std::make_shared<int>(0);

  Destination mx(const std::string& domain, bool nxdomain_bounces = false) {
    auto route = std::make_shared<Route>();
    route->name = "tcp_local";
    route->mx_port = 2525;
    route->allow_internal_mx = {Network::parse("127.0.0.0/8").value(),
                                Network::parse("::1").value()};  // the tests' hosts
    route->nxdomain_is_permanent = nxdomain_bounces;
    return Destination{domain, domain, route};
  }
  Destination smart(std::vector<RouteHost> hosts) {
    auto route = std::make_shared<Route>();
    route->name = "tcp_relay";
    route->hosts = std::move(hosts);
    return Destination{"tcp_relay", "", route};
  }
  std::optional<Resolution> run(const Destination& d) {
    std::optional<Resolution> out;
    resolve(d, resolver, sts, clock, self, 1, owner, [&](Resolution r) { out = std::move(r); });
    CHECK_FALSE(out);  // never from inside the call
    clock.run_pending();
    return out;
  }
};

std::vector<std::string> addresses(const Resolution& r) {
  std::vector<std::string> out;
  for (auto& t : r.targets) out.push_back(t.host + "=" + t.address + ":" + std::to_string(t.port));
  return out;
}

}  // namespace

TEST_CASE("resolution: MX hosts in preference order, their addresses, the route's MX port",
          "[delivery][resolution]") {
  Fixture f;
  f.resolver.set_mx("example.com", {{20, "mx2.example.com."}, {10, "MX1.example.com"}});
  f.resolver.set_addresses("mx1.example.com", {"127.0.0.11", "::1"});
  f.resolver.set_addresses("mx2.example.com", {"127.0.0.12"});
  auto r = f.run(f.mx("example.com"));
  REQUIRE(r);
  REQUIRE_FALSE(r->failed);
  CHECK(addresses(*r) == std::vector<std::string>{"mx1.example.com=127.0.0.11:2525",
                                                  "mx1.example.com=::1:2525",
                                                  "mx2.example.com=127.0.0.12:2525"});
}

TEST_CASE("resolution: no MX record is the implicit MX, the domain itself",
          "[delivery][resolution]") {
  Fixture f;
  f.resolver.set_mx_status("example.com", DnsStatus::no_data);
  f.resolver.set_addresses("example.com", {"127.0.0.20"});
  auto r = f.run(f.mx("example.com"));
  REQUIRE(r);
  CHECK(addresses(*r) == std::vector<std::string>{"example.com=127.0.0.20:2525"});
}

TEST_CASE("resolution: what each DNS failure gives the jobs, and what the log says",
          "[delivery][resolution]") {
  Fixture f;
  f.resolver.set_mx("null.test", {{0, ""}});
  auto r = f.run(f.mx("null.test"));
  REQUIRE(r);
  CHECK(r->failed);
  CHECK(r->reply == replies::null_mx());
  CHECK(diagnostic_lines({r->note}) == std::vector<std::string>{"dns; null.test has a null MX"});

  r = f.run(f.mx("nx.test"));  // unknown: NXDOMAIN
  CHECK(r->reply == replies::domain_does_not_resolve());
  CHECK(diagnostic_lines({r->note}) == std::vector<std::string>{"dns; nx.test: NXDOMAIN"});
  CHECK_FALSE(r->dns_failure);
  r = f.run(f.mx("nx.test", true));
  CHECK(r->reply == replies::domain_does_not_exist());

  f.resolver.set_mx_status("sf.test", DnsStatus::servfail);
  r = f.run(f.mx("sf.test"));
  CHECK(r->reply == replies::domain_does_not_resolve());
  CHECK(r->dns_failure);
  CHECK(diagnostic_lines({r->note}) ==
        std::vector<std::string>{
            "dns; sf.test MX lookup failed: servfail (static: servfail); 4.4.3 directory server "
            "failure"});

  f.resolver.set_mx("gone.test", {{10, "a.gone.test"}, {20, "b.gone.test"}});
  f.resolver.set_addresses_status("b.gone.test", DnsStatus::timeout);
  r = f.run(f.mx("gone.test"));
  CHECK(r->failed);
  CHECK(r->dns_failure);  // one of them failed transiently
  CHECK(diagnostic_lines({r->note}) ==
        std::vector<std::string>{"dns; no address for any MX host of gone.test; a.gone.test: "
                                 "nxdomain; b.gone.test: timeout"});
}

TEST_CASE("resolution: an MX list that reaches this host is cut there, and a loop when first",
          "[delivery][resolution]") {
  Fixture f;
  f.self.names = {"relay.local.test"};
  f.self.addresses = {"127.0.0.99"};
  f.resolver.set_mx("loop.test", {{10, "relay.local.test"}, {20, "backup.test"}});
  auto r = f.run(f.mx("loop.test"));
  CHECK(r->reply == replies::mx_loops_to_self());
  CHECK(diagnostic_lines({r->note}) ==
        std::vector<std::string>{"dns; the best MX for loop.test is this host"});

  f.resolver.set_mx("cut.test", {{10, "primary.test"}, {20, "relay.local.test"}});
  f.resolver.set_addresses("primary.test", {"127.0.0.30"});
  r = f.run(f.mx("cut.test"));
  CHECK(addresses(*r) == std::vector<std::string>{"primary.test=127.0.0.30:2525"});

  f.resolver.set_mx("addr.test", {{10, "self.test"}});
  f.resolver.set_addresses("self.test", {"127.0.0.99"});
  r = f.run(f.mx("addr.test"));
  CHECK(r->reply == replies::mx_loops_to_self());
  CHECK(diagnostic_lines({r->note}) ==
        std::vector<std::string>{"dns; the best MX for addr.test has this host's address"});
}

TEST_CASE("resolution: a static route's hosts in order, address literals as they are",
          "[delivery][resolution]") {
  Fixture f;
  f.resolver.set_addresses("relay.test", {"127.0.0.40"});
  auto r = f.run(f.smart({{"relay.test", 2526}, {"127.0.0.41", 25}}));
  REQUIRE(r);
  CHECK(addresses(*r) ==
        std::vector<std::string>{"relay.test=127.0.0.40:2526", "127.0.0.41=127.0.0.41:25"});
  r = f.run(f.smart({{"nowhere.test", 25}}));
  CHECK(r->failed);
  CHECK(r->reply == replies::domain_does_not_resolve());
  CHECK(diagnostic_lines({r->note}) ==
        std::vector<std::string>{
            "no address for the route's hosts; nowhere.test: nxdomain (static: NXDOMAIN)"});
}

TEST_CASE("resolution: when the owner is gone the answer goes nowhere and no further query starts",
          "[delivery][resolution]") {
  Fixture f;
  f.resolver.set_mx("example.com", {{10, "mx.example.com"}});
  f.resolver.set_addresses("mx.example.com", {"127.0.0.10"});
  bool called = false;
  resolve(f.mx("example.com"), f.resolver, nullptr, f.clock, f.self, 1, f.owner,
          [&](Resolution) { called = true; });
  const std::size_t before = f.resolver.queries();
  f.owner.reset();
  f.clock.run_pending();
  CHECK_FALSE(called);
  CHECK(f.resolver.queries() == before);  // the MX answer started no address query
}

TEST_CASE(
    "resolution: an MX host written as an address is not used, and said, and none left is 5.4.4",
    "[delivery][resolution]") {
  Fixture f;
  f.resolver.set_mx("t.test", {{10, "127.0.1.18"}, {20, "mx.t.test"}, {30, "[127.0.0.9]"}});
  f.resolver.set_addresses("mx.t.test", {"127.0.0.21"});
  auto r = f.run(f.mx("t.test"));
  REQUIRE(r);
  REQUIRE_FALSE(r->failed);
  CHECK(addresses(*r) == std::vector<std::string>{"mx.t.test=127.0.0.21:2525"});
  CHECK(r->warnings ==
        std::vector<std::string>{
            "MX host 127.0.1.18 of t.test is an address, not a host name (RFC 5321 section "
            "5.1): not used",
            "MX host [127.0.0.9] of t.test is an address, not a host name (RFC 5321 section "
            "5.1): not used"});
  CHECK(f.resolver.queries() == 2);  // the MX and mx.t.test: the addresses were not looked up

  f.resolver.set_mx("only.test", {{10, "127.0.1.18"}});
  r = f.run(f.mx("only.test"));
  REQUIRE(r);
  REQUIRE(r->failed);
  CHECK(r->reply.to_string() == "550 5.4.4 [internal] no MX host has a valid address");
  CHECK(r->warnings.size() == 1);
}

TEST_CASE(
    "resolution: an MX host's internal address is not dialled unless the route allows its "
    "network",
    "[delivery][resolution]") {
  Fixture f;
  f.resolver.set_mx("t.test", {{10, "inside.t.test"}, {20, "outside.t.test"}});
  f.resolver.set_addresses("inside.t.test", {"10.1.2.3", "192.168.0.7", "::ffff:172.16.0.1"});
  f.resolver.set_addresses("outside.t.test", {"192.0.2.25", "fe80::1"});
  Destination d = f.mx("t.test");
  auto r = f.run(d);
  REQUIRE(r);
  REQUIRE_FALSE(r->failed);
  CHECK(addresses(*r) == std::vector<std::string>{"outside.t.test=192.0.2.25:2525"});
  CHECK(r->warnings ==
        std::vector<std::string>{
            "MX host inside.t.test of t.test has the internal address 10.1.2.3: not dialled "
            "(not in the route's allow_internal_mx)",
            "MX host inside.t.test of t.test has the internal address 192.168.0.7: not dialled "
            "(not in the route's allow_internal_mx)",
            "MX host inside.t.test of t.test has the internal address ::ffff:172.16.0.1: not "
            "dialled (not in the route's allow_internal_mx)",
            "MX host outside.t.test of t.test has the internal address fe80::1: not dialled "
            "(not in the route's allow_internal_mx)"});

  // A route that allows 10.0.0.0/8 dials that one, and only it.
  auto route = std::make_shared<Route>(*d.route);
  route->allow_internal_mx = {Network::parse("10.0.0.0/8").value()};
  d.route = route;
  r = f.run(d);
  REQUIRE(r);
  CHECK(addresses(*r) ==
        std::vector<std::string>{"inside.t.test=10.1.2.3:2525", "outside.t.test=192.0.2.25:2525"});
  CHECK(r->warnings.size() == 3);

  // Every address internal: no MX host has a valid address.
  f.resolver.set_mx("all.test", {{10, "inside.t.test"}});
  r = f.run(f.mx("all.test"));
  REQUIRE(r);
  REQUIRE(r->failed);
  CHECK(r->reply.to_string() == "550 5.4.4 [internal] no MX host has a valid address");

  // The implicit MX is held to the same rule (and, being the domain itself, deferred).
  f.resolver.set_mx_status("implicit.test", DnsStatus::no_data);
  f.resolver.set_addresses("implicit.test", {"10.9.9.9"});
  r = f.run(f.mx("implicit.test"));
  REQUIRE(r);
  REQUIRE(r->failed);
  CHECK(r->reply.code == 421);
  CHECK(r->warnings.size() == 1);
}

TEST_CASE("resolution: a static route's hosts are the operator's: internal addresses are dialled",
          "[delivery][resolution]") {
  Fixture f;
  f.resolver.set_addresses("relay.internal", {"10.0.0.25"});
  auto r = f.run(f.smart({{"relay.internal", 25}, {"192.168.1.1", 2525}}));
  REQUIRE(r);
  REQUIRE_FALSE(r->failed);
  CHECK(addresses(*r) ==
        std::vector<std::string>{"relay.internal=10.0.0.25:25", "192.168.1.1=192.168.1.1:2525"});
  CHECK(r->warnings.empty());
}

TEST_CASE(
    "resolution: an MTA-STS policy in enforce mode keeps the MX hosts it names and "
    "demands verified TLS of them",
    "[delivery][resolution][mta_sts]") {
  Fixture f;
  FakePolicySource sts(f.clock);
  f.sts = &sts;
  f.resolver.set_mx("example.com",
                    {{10, "mx1.example.com"}, {20, "rogue.example.net"}, {30, "mx2.example.com"}});
  f.resolver.set_addresses("mx1.example.com", {"127.0.0.11"});
  f.resolver.set_addresses("rogue.example.net", {"127.0.0.66"});
  f.resolver.set_addresses("mx2.example.com", {"127.0.0.12"});

  SECTION("enforce: the others are not used, with a notice") {
    sts.answer = policy_answer(sts::Mode::enforce, {"*.example.com"});
    auto r = f.run(f.mx("example.com"));
    REQUIRE(r);
    REQUIRE_FALSE(r->failed);
    CHECK(addresses(*r) == std::vector<std::string>{"mx1.example.com=127.0.0.11:2525",
                                                    "mx2.example.com=127.0.0.12:2525"});
    for (const auto& t : r->targets)
      CHECK(t.tls_required_by == "the MTA-STS policy of example.com, id 2026a");
    CHECK(sts.asked == std::vector<std::string>{"example.com"});
    REQUIRE(r->warnings.size() == 2);
    CHECK(r->warnings[0] == "example.com: fetched policy id 2026a");
    CHECK(r->warnings[1] ==
          "MX host rogue.example.net of example.com does not match the MTA-STS policy of "
          "example.com, id 2026a (mode enforce): not used");
  }
  SECTION("enforce with no matching host: deferred, 4.7.5, the reason in the reply") {
    sts.answer = policy_answer(sts::Mode::enforce, {"mail.example.org"});
    auto r = f.run(f.mx("example.com"));
    REQUIRE(r);
    REQUIRE(r->failed);
    CHECK(r->reply == Reply(451, "4.7.5",
                            "[internal] no MX host of example.com matches its MTA-STS policy (id "
                            "2026a, mode enforce)"));
    CHECK_FALSE(r->dns_failure);
  }
  SECTION("testing: every host used as before, the mismatch said") {
    sts.answer = policy_answer(sts::Mode::testing, {"*.example.com"});
    auto r = f.run(f.mx("example.com"));
    REQUIRE(r);
    CHECK(r->targets.size() == 3);
    for (const auto& t : r->targets) {
      CHECK(t.tls_required_by.empty());
      // The hosts it names have their certificates checked, not demanded.
      CHECK(t.tls_tested_by ==
            (t.host == "rogue.example.net"
                 ? ""
                 : "the MTA-STS policy of example.com, id 2026a (mode testing)"));
    }
    CHECK(r->warnings.back().find("(mode testing): used") != std::string::npos);
  }
  SECTION("testing never defers by itself: MX records that are addresses fail as before") {
    sts.answer = policy_answer(sts::Mode::testing, {"*.example.com"});
    f.resolver.set_mx("literal.example", {{10, "192.0.2.1"}});
    auto r = f.run(f.mx("literal.example"));
    REQUIRE(r);
    REQUIRE(r->failed);
    CHECK(r->reply.text.find("MTA-STS") == std::string::npos);
  }
  SECTION("no policy, mode none, or a failed fetch: as without MTA-STS") {
    for (auto answer : {sts::PolicyAnswer{}, policy_answer(sts::Mode::none, {})}) {
      sts.answer = answer;
      auto r = f.run(f.mx("example.com"));
      REQUIRE(r);
      CHECK(r->targets.size() == 3);
      for (const auto& t : r->targets) CHECK(t.tls_required_by.empty());
    }
    sts.answer = sts::PolicyAnswer{};
    sts.answer.failed = true;
    sts.answer.detail = "sts-policy-fetch-error: policy fetch failed: HTTP status 404";
    auto r = f.run(f.mx("example.com"));
    REQUIRE(r);
    CHECK(r->targets.size() == 3);
    CHECK(r->warnings.front() ==
          "example.com: sts-policy-fetch-error: policy fetch failed: HTTP status 404");
  }
  SECTION("a route with mta_sts off, and a static route, never ask") {
    sts.answer = policy_answer(sts::Mode::enforce, {"mail.example.org"});
    Destination d = f.mx("example.com");
    auto route = std::make_shared<Route>(*d.route);
    route->mta_sts = false;
    d.route = route;
    auto r = f.run(d);
    REQUIRE(r);
    CHECK(r->targets.size() == 3);
    f.resolver.set_addresses("relay.example.org", {"127.0.0.9"});
    r = f.run(f.smart({RouteHost{"relay.example.org", 25}}));
    REQUIRE(r);
    CHECK(sts.asked.empty());
  }
}

namespace {

dane::TlsaRecord tlsa(std::uint8_t usage, std::uint8_t selector, std::uint8_t matching,
                      char fill = 'k') {
  const std::size_t n = matching == 1 ? 32 : matching == 2 ? 64 : 40;
  return dane::TlsaRecord{usage, selector, matching, std::string(n, fill)};
}

}  // namespace

TEST_CASE(
    "resolution: DANE looks TLSA records up only behind secure MX and address answers, and "
    "requires what they say of each host",
    "[delivery][resolution][dane]") {
  Fixture f;
  f.resolver.set_mx("example.com", {{10, "mx1.example.com"}, {20, "mx2.example.com"}});
  f.resolver.set_addresses("mx1.example.com", {"127.0.0.11"});
  f.resolver.set_addresses("mx2.example.com", {"127.0.0.12"});
  const auto ee = tlsa(3, 1, 1);
  f.resolver.set_tlsa("_2525._tcp.mx1.example.com", {ee, tlsa(1, 1, 1), tlsa(3, 1, 1, 'x')});
  f.resolver.set_tlsa("_2525._tcp.mx2.example.com", {tlsa(0, 0, 1), tlsa(3, 2, 1)});
  for (const char* n : {"example.com", "mx1.example.com", "mx2.example.com",
                        "_2525._tcp.mx1.example.com", "_2525._tcp.mx2.example.com"})
    f.resolver.set_secure(n);

  SECTION("all secure: usable records per host, none usable still demands TLS") {
    auto r = f.run(f.mx("example.com"));
    REQUIRE(r);
    REQUIRE_FALSE(r->failed);
    REQUIRE(r->targets.size() == 2);
    CHECK(r->targets[0].dane);
    CHECK(r->targets[0].tlsa == std::vector<dane::TlsaRecord>{ee, tlsa(3, 1, 1, 'x')});
    CHECK(r->targets[0].tls_required_by == "the DANE TLSA records of _2525._tcp.mx1.example.com");
    CHECK(r->targets[1].dane);
    CHECK(r->targets[1].tlsa.empty());
    CHECK(r->targets[1].tls_required_by ==
          "the DANE TLSA records of _2525._tcp.mx2.example.com (none usable: encrypted, not "
          "authenticated)");
    REQUIRE(r->warnings.size() == 1);
    CHECK(r->warnings[0] ==
          "_2525._tcp.mx2.example.com: no usable TLSA record among 2: STARTTLS is required, "
          "the certificate is not authenticated");
  }
  SECTION("an insecure MX answer: no TLSA query at all") {
    f.resolver.set_secure("example.com", false);
    const auto before = f.resolver.queries();
    auto r = f.run(f.mx("example.com"));
    REQUIRE(r);
    REQUIRE(r->targets.size() == 2);
    for (auto& t : r->targets) {
      CHECK_FALSE(t.dane);
      CHECK(t.tls_required_by.empty());
    }
    CHECK(f.resolver.queries() - before == 3);  // MX and two address queries
  }
  SECTION("an insecure address answer: no DANE for that host only") {
    f.resolver.set_secure("mx1.example.com", false);
    auto r = f.run(f.mx("example.com"));
    REQUIRE(r);
    REQUIRE(r->targets.size() == 2);
    CHECK_FALSE(r->targets[0].dane);
    CHECK(r->targets[1].dane);
  }
  SECTION("insecure TLSA records, and none at all, are no DANE") {
    f.resolver.set_secure("_2525._tcp.mx1.example.com", false);
    f.resolver.set_tlsa_status("_2525._tcp.mx2.example.com", DnsStatus::nxdomain);
    auto r = f.run(f.mx("example.com"));
    REQUIRE(r);
    REQUIRE(r->targets.size() == 2);
    CHECK_FALSE(r->targets[0].dane);
    CHECK_FALSE(r->targets[1].dane);
    CHECK(r->warnings ==
          std::vector<std::string>{
              "_2525._tcp.mx1.example.com: TLSA records that are not DNSSEC-secure: not used"});
  }
  SECTION("a failed TLSA lookup puts the host out of use, the next is tried") {
    f.resolver.set_tlsa_status("_2525._tcp.mx1.example.com", DnsStatus::servfail);
    auto r = f.run(f.mx("example.com"));
    REQUIRE(r);
    REQUIRE_FALSE(r->failed);
    CHECK(addresses(*r) == std::vector<std::string>{"mx2.example.com=127.0.0.12:2525"});
    REQUIRE_FALSE(r->warnings.empty());
    CHECK(r->warnings[0].find("_2525._tcp.mx1.example.com: TLSA lookup failed (servfail") == 0);
  }
  SECTION("every TLSA lookup failed: deferred with 4.7.5") {
    f.resolver.set_tlsa_status("_2525._tcp.mx1.example.com", DnsStatus::servfail);
    f.resolver.set_tlsa_status("_2525._tcp.mx2.example.com", DnsStatus::timeout);
    auto r = f.run(f.mx("example.com"));
    REQUIRE(r);
    REQUIRE(r->failed);
    CHECK(r->reply == Reply(451, "4.7.5", "[internal] TLSA lookup error for mx1.example.com:2525"));
    CHECK(r->dns_failure);
  }
  SECTION("the implicit MX behind a secure denial gets DANE too") {
    f.resolver.set_addresses("bare.example", {"127.0.0.13"});
    f.resolver.set_tlsa("_2525._tcp.bare.example", {ee});
    for (const char* n : {"bare.example", "_2525._tcp.bare.example"}) f.resolver.set_secure(n);
    auto r = f.run(f.mx("bare.example"));
    REQUIRE(r);
    REQUIRE(r->targets.size() == 1);
    CHECK(r->targets[0].tlsa == std::vector<dane::TlsaRecord>{ee});
  }
  SECTION("a route with dane off never asks") {
    Destination d = f.mx("example.com");
    auto route = std::make_shared<Route>(*d.route);
    route->dane = false;
    d.route = route;
    auto r = f.run(d);
    REQUIRE(r);
    for (auto& t : r->targets) CHECK_FALSE(t.dane);
  }
  SECTION(
      "DANE wins over MTA-STS: a host DANE authenticates is kept even when the policy "
      "does not name it") {
    FakePolicySource sts(f.clock);
    f.sts = &sts;
    sts.answer = policy_answer(sts::Mode::enforce, {"mx2.example.com"});
    f.resolver.set_tlsa("_2525._tcp.mx2.example.com", {tlsa(0, 0, 1)});
    auto r = f.run(f.mx("example.com"));
    REQUIRE(r);
    REQUIRE_FALSE(r->failed);
    REQUIRE(r->targets.size() == 2);
    CHECK(r->targets[0].tls_required_by == "the DANE TLSA records of _2525._tcp.mx1.example.com");
    // mx2's TLSA records are unusable: the policy governs it (it names it).
    CHECK(r->targets[1].tls_required_by == "the MTA-STS policy of example.com, id 2026a");
    CHECK_FALSE(r->targets[1].dane);
    sts.answer = policy_answer(sts::Mode::enforce, {"other.example.com"});
    r = f.run(f.mx("example.com"));
    REQUIRE(r);
    REQUIRE_FALSE(r->failed);
    CHECK(addresses(*r) == std::vector<std::string>{"mx1.example.com=127.0.0.11:2525"});
  }
}
