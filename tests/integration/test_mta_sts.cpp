// mailq::uv::MtaStsSource against a real HTTPS server (Python's http.server and ssl, a test
// CA) on loopback, over the libuv transport: discovery, fetch, the RFC 8461 §3.3 rules for the
// response, the cache (id changes, failures, the file kept across restarts).
#include <catch2/catch.hpp>

#include <optional>
#include <string>

#include "mailq/uv/loop_clock.h"
#include "mailq/uv/mta_sts.h"
#include "mailq/uv/transport.h"
#include "support/loop_checks.h"
#include "support/policy_server.h"
#include "support/servers.h"
#include "support/test_loop.h"

using mailq::DnsStatus;
using mailq::StaticResolver;
using mailq::uv::LoopClock;
using mailq::uv::MtaStsOptions;
using mailq::uv::MtaStsSource;
using mailq::uv::UvTransport;
namespace sts = mailq::sts;
using namespace mailq::test;

namespace {

const std::string kPolicy =
    "version: STSv1\nmode: enforce\nmx: mx.example.test\nmx: *.backup.example.test\n"
    "max_age: 86400\n";

// A CA, a certificate for the policy hosts, a self-signed one, and the HTTPS server.
struct Setup {
  TempDir dir;
  TestPki pki;
  std::string cert, key;
  std::unique_ptr<PolicyHttpsServer> server;
  Setup() {
    std::string error;
    REQUIRE(pki.generate(dir.path(), &error));
    REQUIRE(make_signed_cert(dir.path(), pki, "policy",
                             "mta-sts.example.test,mta-sts.other.test,mta-sts.renamed.test", &cert,
                             &key, &error));
    server = std::make_unique<PolicyHttpsServer>(cert, key);
    INFO(error);
    REQUIRE(server->start(&error));
  }
  MtaStsOptions options() const {
    MtaStsOptions o;
    o.ca_file = pki.ca_cert;
    o.port = server->port();
    o.fetch_timeout = std::chrono::seconds(10);
    o.allow_internal = {mailq::Network::parse("127.0.0.0/8").value()};  // the test's server
    return o;
  }
};

// One source on a fresh loop, its resolver answering for example.test and other.test.
struct Source {
  TestLoop loop;
  std::optional<LoopClock> clock_holder{std::in_place, loop.get()};
  LoopClock& clock = *clock_holder;
  std::optional<StaticResolver> resolver_holder{std::in_place, clock};
  StaticResolver& resolver = *resolver_holder;
  std::optional<UvTransport> transport_holder{std::in_place, loop.get(), clock};
  UvTransport& transport = *transport_holder;
  std::unique_ptr<MtaStsSource> source;
  explicit Source(const MtaStsOptions& o) {
    for (const std::string d : {"example.test", "other.test", "renamed.test"}) {
      resolver.set_txt("_mta-sts." + d, {"v=STSv1; id=one;"});
      resolver.set_addresses("mta-sts." + d, {"127.0.0.1"});
    }
    auto s = MtaStsSource::open(resolver, transport, clock, o);
    REQUIRE(s);
    source = std::move(*s);
  }
  ~Source() {
    source.reset();
    transport_holder.reset();
    resolver_holder.reset();
    clock_holder.reset();
    require_clean_close(loop);
  }
  sts::PolicyAnswer ask(const std::string& domain) {
    std::optional<sts::PolicyAnswer> got;
    source->lookup(domain, [&](sts::PolicyAnswer a) { got = std::move(a); });
    CHECK_FALSE(got);  // never from inside the call
    REQUIRE(loop.run_until([&] { return got.has_value(); }));
    return *got;
  }
};

}  // namespace

TEST_CASE("MTA-STS: a policy is discovered, fetched over verified HTTPS and cached",
          "[mta_sts][uv]") {
  Setup s;
  s.server->serve("mta-sts.example.test", kPolicy);
  Source src(s.options());
  auto a = src.ask("Example.TEST.");
  INFO(a.detail);
  REQUIRE(a.policy);
  CHECK(a.fetched);
  CHECK_FALSE(a.failed);
  CHECK(a.policy->mode == sts::Mode::enforce);
  CHECK(a.policy->id == "one");
  CHECK(a.policy->mx == std::vector<std::string>{"mx.example.test", "*.backup.example.test"});
  CHECK(s.server->requests("mta-sts.example.test") == 1);
  // Asked again: from the cache, no fetch.
  a = src.ask("example.test");
  REQUIRE(a.policy);
  CHECK_FALSE(a.fetched);
  CHECK(s.server->requests("mta-sts.example.test") == 1);
  CHECK(src.source->stats().cache_hits == 1);
  // Several lookups at once make one fetch.
  int answered = 0;
  for (int i = 0; i < 3; ++i)
    src.source->lookup("other.test", [&](sts::PolicyAnswer) { ++answered; });
  s.server->serve("mta-sts.other.test", kPolicy);
  REQUIRE(src.loop.run_until([&] { return answered == 3; }));
  CHECK(s.server->requests("mta-sts.other.test") == 1);
}

TEST_CASE("MTA-STS: what a policy fetch refuses (RFC 8461 §3.3)", "[mta_sts][uv]") {
  Setup s;
  Source src(s.options());
  auto refused = [&](const std::string& words) {
    auto a = src.ask("example.test");
    INFO(a.detail);
    CHECK_FALSE(a.policy);
    CHECK(a.failed);
    CHECK(a.detail.find(words) != std::string::npos);
  };
  MtaStsOptions o = s.options();
  o.failure_backoff = mailq::Duration{0};  // every ask fetches again
  src.source.reset();
  auto reopened = MtaStsSource::open(src.resolver, src.transport, src.clock, o);
  REQUIRE(reopened);
  src.source = std::move(reopened.value());

  s.server->serve("mta-sts.example.test", "");
  refused(
      "sts-policy-fetch-error: policy fetch failed: https://mta-sts.example.test/.well-known/"
      "mta-sts.txt: HTTP status 404");
  s.server->serve("mta-sts.example.test", "",
                  "301 https://mta-sts.other.test/.well-known/mta-sts.txt");
  refused("HTTP status 301 (a redirect: not followed");
  s.server->serve("mta-sts.example.test", kPolicy, "", "text/html");
  refused("Content-Type \"text/html\", not text/plain");
  s.server->serve("mta-sts.example.test", std::string(70000, 'x'));
  refused("the body is larger than 65536 octets");
  s.server->serve("mta-sts.example.test", "version: STSv1\nmode: enforce\nmax_age: 86400\n");
  refused("sts-policy-invalid: https://mta-sts.example.test/.well-known/mta-sts.txt: no mx field");
  // A certificate for another name: the policy host must prove it is mta-sts.<domain>.
  src.resolver.set_addresses("mta-sts.wrongname.test", {"127.0.0.1"});
  src.resolver.set_txt("_mta-sts.wrongname.test", {"v=STSv1; id=one;"});
  auto a = src.ask("wrongname.test");
  CHECK(a.failed);
  CHECK(a.detail.find("sts-webpki-invalid") != std::string::npos);
  // No TXT record, or two: no policy, not a failure.
  src.resolver.set_txt_status("_mta-sts.example.test", DnsStatus::nxdomain);
  a = src.ask("example.test");
  CHECK_FALSE(a.policy);
  CHECK_FALSE(a.failed);
  src.resolver.set_txt("_mta-sts.example.test", {"v=STSv1; id=a;", "v=STSv1; id=b;"});
  a = src.ask("example.test");
  CHECK_FALSE(a.policy);
  CHECK_FALSE(a.failed);
  // A policy host on an internal address, not allowed: not dialled.
  src.resolver.set_txt("_mta-sts.example.test", {"v=STSv1; id=one;"});
  const std::size_t before = s.server->requests("mta-sts.example.test");
  MtaStsOptions strict = s.options();
  strict.allow_internal.clear();
  strict.failure_backoff = mailq::Duration{0};
  auto closed = MtaStsSource::open(src.resolver, src.transport, src.clock, strict);
  REQUIRE(closed);
  src.source = std::move(closed.value());
  refused("mta-sts.example.test has only internal addresses (127.0.0.1): not dialled");
  CHECK(s.server->requests("mta-sts.example.test") == before);
  // A name that is no domain name is not looked up at all.
  a = src.ask("x\r\nHost: evil");
  CHECK_FALSE(a.policy);
  CHECK(a.detail.find("is not a domain name") != std::string::npos);
  // No address for the policy host.
  src.resolver.set_txt("_mta-sts.example.test", {"v=STSv1; id=one;"});
  src.resolver.set_addresses_status("mta-sts.example.test", DnsStatus::nxdomain);
  refused("policy fetch failed: mta-sts.example.test: nxdomain");
}

TEST_CASE("MTA-STS: a new id fetches again, a failed refresh keeps the cached policy",
          "[mta_sts][uv]") {
  Setup s;
  MtaStsOptions o = s.options();
  o.recheck = mailq::Duration{0};  // the TXT record is read on every lookup
  Source src(o);
  s.server->serve("mta-sts.example.test", kPolicy);
  REQUIRE(src.ask("example.test").policy);
  CHECK(s.server->requests("mta-sts.example.test") == 1);
  // Same id: no fetch.
  REQUIRE(src.ask("example.test").policy);
  CHECK(s.server->requests("mta-sts.example.test") == 1);
  // A new id: fetched again, the new policy in force.
  src.resolver.set_txt("_mta-sts.example.test", {"v=STSv1; id=two;"});
  s.server->serve("mta-sts.example.test",
                  "version: STSv1\nmode: testing\nmx: mx.example.test\nmax_age: 86400\n");
  auto a = src.ask("example.test");
  REQUIRE(a.policy);
  CHECK(a.policy->id == "two");
  CHECK(a.policy->mode == sts::Mode::testing);
  CHECK(s.server->requests("mta-sts.example.test") == 2);
  // Another id, and the server now fails: the cached policy stays in force, said so.
  src.resolver.set_txt("_mta-sts.example.test", {"v=STSv1; id=three;"});
  s.server->serve("mta-sts.example.test", "");
  a = src.ask("example.test");
  INFO(a.detail);
  REQUIRE(a.policy);
  CHECK(a.policy->id == "two");
  CHECK(a.failed);
  CHECK(a.detail.find("the cached policy stays in force") != std::string::npos);
  // The TXT record gone: the cached policy is still used until it expires.
  src.resolver.set_txt_status("_mta-sts.example.test", DnsStatus::nxdomain);
  a = src.ask("example.test");
  REQUIRE(a.policy);
  CHECK(a.policy->id == "two");
}

TEST_CASE("MTA-STS: the cache file keeps policies across restarts, a failure backs off",
          "[mta_sts][uv]") {
  Setup s;
  MtaStsOptions o = s.options();
  o.cache_file = s.dir.file("mta-sts.cache");
  s.server->serve("mta-sts.example.test", kPolicy);
  {
    Source src(o);
    REQUIRE(src.ask("example.test").policy);
  }
  const std::string saved = read_file(o.cache_file);
  INFO(saved);
  CHECK(saved.rfind("mailq-mta-sts 1\nexample.test one ", 0) == 0);
  CHECK(saved.find(" enforce mx.example.test *.backup.example.test\n") != std::string::npos);
  // A new process: the policy comes from the file, with the server gone.
  s.server->stop();
  {
    Source src(o);
    auto a = src.ask("example.test");
    INFO(a.detail);
    REQUIRE(a.policy);
    CHECK_FALSE(a.fetched);
    CHECK(a.policy->mx.size() == 2);
    // A domain never fetched, its server down: no policy, and no new attempt for a while.
    auto b = src.ask("other.test");
    CHECK_FALSE(b.policy);
    CHECK(b.failed);
    const auto fetches = src.source->stats().fetches;
    b = src.ask("other.test");
    CHECK(b.detail.find("not tried again for") != std::string::npos);
    CHECK(src.source->stats().fetches == fetches);
  }
  // A damaged file is not fatal: it is read as far as it makes sense.
  write_file(o.cache_file, "mailq-mta-sts 1\ngarbage\nexample.test one x y z\n");
  Source src(o);
  CHECK(src.source->stats().cached == 0);
}
