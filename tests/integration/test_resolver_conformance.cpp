// The c-ares resolver through the Resolver conformance suite, against a real unbound on
// loopback.
#include <catch2/catch.hpp>

#include <uv.h>

#include "mailq/ares/resolver.h"
#include "mailq/testing/resolver_conformance.h"
#include "mailq/uv/loop_clock.h"
#include "support/test_loop.h"
#include "support/unbound_server.h"

using namespace mailq;

TEST_CASE("Resolver conformance: the c-ares resolver against unbound passes every check",
          "[ares][resolver][conformance]") {
  test::UnboundServer::Config config;
  config.zones.push_back({"conf.test.", R"($ORIGIN conf.test.
$TTL 300
@       IN SOA  ns.conf.test. hostmaster.conf.test. 1 3600 600 86400 60
@       IN NS   ns.conf.test.
ns      IN A    127.0.0.1
mail    IN MX   10 mx1.conf.test.
mail    IN MX   20 mx2.conf.test.
mx1     IN A    127.0.0.21
mx1     IN AAAA ::1
)"});
  // test. is one of unbound's default local zones (RFC 6761): let the zone below be served.
  config.server_lines.push_back("local-zone: \"test.\" nodefault");
  std::string error;
  auto unbound = test::UnboundServer::start(config, &error);
  REQUIRE(unbound);
  test::TestLoop loop;
  auto clock = std::make_unique<uv::LoopClock>(loop.get());
  testing::ResolverHarness h;
  h.make = [&]() -> std::unique_ptr<Resolver> {
    ares::AresResolverOptions options;
    options.nameservers = {unbound->address()};
    auto r = ares::AresResolver::open(loop.get(), *clock, options);
    REQUIRE(r);
    return std::move(r).value();
  };
  h.run_until = [&](const std::function<bool()>& done, Duration limit) {
    return loop.run_until(done, std::chrono::duration_cast<std::chrono::milliseconds>(limit));
  };
  h.zone.mx_domain = "mail.conf.test";
  h.zone.mx = {{10, "mx1.conf.test"}, {20, "mx2.conf.test"}};
  h.zone.host = "mx1.conf.test";
  h.zone.addresses = {"127.0.0.21", "::1"};
  h.zone.nxdomain = "nothere.conf.test";
  h.zone.no_mx = "mx1.conf.test";
  const auto failures = testing::check_resolver(h);
  for (const auto& f : failures) FAIL_CHECK(f);
  CHECK(failures.empty());
  clock.reset();
  CHECK(loop.close() == 0);
}
