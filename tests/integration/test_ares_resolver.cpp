// The c-ares resolver against a real unbound serving a test zone on loopback, and against
// fake nameservers that never answer, refuse, or count what reaches DNS.
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "ares/status.h"
#include "mailq/ares/resolver.h"
#include "mailq/uv/loop_clock.h"
#include "support/unbound_server.h"

using mailq::AddressAnswer;
using mailq::DnsStatus;
using mailq::ManualClock;
using mailq::MxAnswer;
using mailq::MxRecord;
using mailq::TxtAnswer;
using mailq::ares::AddressFamilies;
using mailq::ares::AresResolver;
using mailq::ares::AresResolverOptions;
using mailq::ares::Nameserver;
using mailq::test::FakeDnsServer;
using mailq::test::UnboundServer;
using namespace std::chrono_literals;

namespace {

// TTLs are explicit on every record: the cache tests depend on them.
constexpr const char* kTestZone = R"($ORIGIN test.
$TTL 300
@            300 IN SOA   ns.test. hostmaster.test. 1 3600 600 86400 60
@            300 IN NS    ns.test.
ns           300 IN A     127.0.0.1
multi        300 IN MX    10 mx1.multi.test.
multi        300 IN MX    20 mx2.multi.test.
multi        300 IN MX    30 mx3.multi.test.
mx1.multi    300 IN A     127.0.0.11
mx2.multi    300 IN A     127.0.0.12
mx3.multi    300 IN A     127.0.0.13
equal        300 IN MX    10 a.equal.test.
equal        300 IN MX    10 b.equal.test.
equal        300 IN MX    20 c.equal.test.
implicit     300 IN A     127.0.0.20
implicit     300 IN AAAA  ::1
nullmx       300 IN MX    0 .
alias        300 IN CNAME target.test.
target       120 IN A     127.0.0.30
cnamemx       60 IN CNAME multi.test.
noaddr       300 IN MX    10 ghost.noaddr.test.
mxonly       300 IN MX    10 mx1.multi.test.
_mta-sts.multi 300 IN TXT  "v=STSv1; id=20261207;"
_mta-sts.multi 300 IN TXT  "v=spf1 " "-all"
long         300 IN TXT    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" "tail"
)";

// big.test: more MX records than fit in a 1232-octet UDP answer; unbound truncates it and
// c-ares must retry over TCP (a socket watched for writability while it connects).
constexpr int kBigMxCount = 80;

std::string test_zone() {
  std::string zone = kTestZone;
  for (int i = 0; i < kBigMxCount; ++i) {
    zone += "big          300 IN MX    " + std::to_string(i) + " mx" + std::to_string(i) +
            ".a-rather-long-mail-exchanger-name.big.test.\n";
  }
  return zone;
}

UnboundServer* shared_unbound(std::string* error) {
  // One unbound for the whole run, killed at exit (and by PR_SET_PDEATHSIG on a crash).
  static std::unique_ptr<UnboundServer> server;
  static std::string start_error;
  static bool tried = false;
  if (!tried) {
    tried = true;
    UnboundServer::Config config;
    config.zones.push_back({"test.", test_zone()});
    // A zone whose only server is unusable: unbound answers SERVFAIL for it at once.
    config.server_lines.push_back("local-zone: \"invalid.\" nodefault");
    config.extra = "stub-zone:\n  name: \"servfail.invalid.\"\n  stub-addr: 127.0.0.1@1\n";
    server = UnboundServer::start(config, &start_error);
  }
  *error = start_error;
  return server.get();
}

#define REQUIRE_UNBOUND(var)                         \
  std::string var##_error;                           \
  UnboundServer* var = shared_unbound(&var##_error); \
  if (var == nullptr) FAIL(var##_error)

// A loop for one test, with the clock the resolvers post through; checks at the end that
// every handle was closed.
struct Loop {
  uv_loop_t loop;
  uv_timer_t tick;  // wakes uv_run(ONCE) so that run_until can check its time bound
  std::unique_ptr<mailq::uv::LoopClock> clock;

  Loop() {
    uv_loop_init(&loop);
    uv_timer_init(&loop, &tick);
    uv_unref(reinterpret_cast<uv_handle_t*>(&tick));
    clock = std::make_unique<mailq::uv::LoopClock>(&loop);
  }
  ~Loop() {
    clock.reset();
    uv_close(reinterpret_cast<uv_handle_t*>(&tick), nullptr);
    settle();
    const int rc = uv_loop_close(&loop);
    CHECK(rc == 0);  // UV_EBUSY: a handle was left open
  }
  uv_loop_t* get() { return &loop; }

  // Runs the loop until `done` or 20 s (a safety bound, not a timing assertion).
  bool run_until(const std::function<bool()>& done) {
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    uv_timer_start(
        &tick, [](uv_timer_t*) {}, 10, 10);
    while (!done() && std::chrono::steady_clock::now() < deadline) uv_run(&loop, UV_RUN_ONCE);
    uv_timer_stop(&tick);
    return done();
  }
  // Lets pending close callbacks (and posted work) run.
  void settle() {
    for (int i = 0; i < 100 && uv_loop_alive(&loop); ++i) uv_run(&loop, UV_RUN_NOWAIT);
  }
};

std::unique_ptr<AresResolver> make_resolver(Loop& l, AresResolverOptions options) {
  auto r = AresResolver::open(l.get(), *l.clock, std::move(options));
  if (!r) FAIL("AresResolver::open: " << r.error().message);
  return std::move(r).value();
}

AresResolverOptions options_for(std::vector<std::string> servers) {
  AresResolverOptions o;
  o.nameservers = std::move(servers);
  o.timeout = 500ms;
  o.tries = 2;
  return o;
}

// Starts a query with `start(callback)` and runs the loop until it is answered, once.
template <class Answer, class Start>
Answer ask(Loop& l, Start&& start) {
  std::optional<Answer> got;
  int calls = 0;
  start([&](Answer a) {
    ++calls;
    got = std::move(a);
  });
  CHECK_FALSE(got);  // never called from inside the query call
  REQUIRE(l.run_until([&] { return got.has_value(); }));
  l.settle();
  CHECK(calls == 1);
  return *got;
}

MxAnswer query_mx(Loop& l, AresResolver& r, const std::string& name) {
  return ask<MxAnswer>(l, [&](auto cb) { r.query_mx(name, cb); });
}

AddressAnswer query_addresses(Loop& l, AresResolver& r, const std::string& name) {
  return ask<AddressAnswer>(l, [&](auto cb) { r.query_addresses(name, cb); });
}

TxtAnswer query_txt(Loop& l, AresResolver& r, const std::string& name) {
  return ask<TxtAnswer>(l, [&](auto cb) { r.query_txt(name, cb); });
}

std::vector<std::pair<int, std::string>> sorted(const std::vector<MxRecord>& records) {
  std::vector<std::pair<int, std::string>> out;
  for (const auto& r : records) out.emplace_back(r.preference, r.exchange);
  std::sort(out.begin(), out.end());
  return out;
}

using Mx = std::vector<std::pair<int, std::string>>;
using Strings = std::vector<std::string>;

}  // namespace

// --- answers from a real server ---------------------------------------------------------------

TEST_CASE("ares resolver returns every MX record of a domain, trailing dots stripped",
          "[ares][unbound]") {
  REQUIRE_UNBOUND(ub);
  Loop l;
  auto r = make_resolver(l, options_for({ub->address()}));
  auto a = query_mx(l, *r, "multi.test");
  CHECK(a.status == DnsStatus::ok);
  CHECK(a.detail.empty());
  CHECK(sorted(a.records) ==
        Mx{{10, "mx1.multi.test"}, {20, "mx2.multi.test"}, {30, "mx3.multi.test"}});
}

TEST_CASE("ares resolver returns MX records with equal preferences", "[ares][unbound]") {
  REQUIRE_UNBOUND(ub);
  Loop l;
  auto r = make_resolver(l, options_for({ub->address()}));
  auto a = query_mx(l, *r, "equal.test");
  CHECK(a.status == DnsStatus::ok);
  CHECK(sorted(a.records) == Mx{{10, "a.equal.test"}, {10, "b.equal.test"}, {20, "c.equal.test"}});
}

TEST_CASE("ares resolver returns the null MX as one record with an empty exchange",
          "[ares][unbound]") {
  REQUIRE_UNBOUND(ub);
  Loop l;
  auto r = make_resolver(l, options_for({ub->address()}));
  auto a = query_mx(l, *r, "nullmx.test");
  CHECK(a.status == DnsStatus::ok);
  CHECK(sorted(a.records) == Mx{{0, ""}});
}

TEST_CASE("ares resolver answers no_data for a domain with addresses but no MX",
          "[ares][unbound]") {
  REQUIRE_UNBOUND(ub);
  Loop l;
  auto r = make_resolver(l, options_for({ub->address()}));
  auto a = query_mx(l, *r, "implicit.test");
  CHECK(a.status == DnsStatus::no_data);
  CHECK(a.records.empty());
  CHECK(a.detail == "implicit.test MX: no records of this type (NODATA)");
}

TEST_CASE("ares resolver answers nxdomain for a name that does not exist", "[ares][unbound]") {
  REQUIRE_UNBOUND(ub);
  Loop l;
  auto r = make_resolver(l, options_for({ub->address()}));
  auto a = query_mx(l, *r, "nope.test");
  CHECK(a.status == DnsStatus::nxdomain);
  CHECK(a.detail == "nope.test MX: no such domain (NXDOMAIN)");
}

TEST_CASE("ares resolver returns TXT records, each record's strings joined", "[ares][unbound]") {
  REQUIRE_UNBOUND(ub);
  Loop l;
  auto r = make_resolver(l, options_for({ub->address()}));
  auto a = query_txt(l, *r, "_mta-sts.multi.test");
  CHECK(a.status == DnsStatus::ok);
  std::sort(a.records.begin(), a.records.end());
  CHECK(a.records == Strings{"v=STSv1; id=20261207;", "v=spf1 -all"});
  a = query_txt(l, *r, "long.test");
  REQUIRE(a.status == DnsStatus::ok);
  CHECK(a.records == Strings{std::string(255, 'a') + "tail"});
  CHECK(query_txt(l, *r, "multi.test").status == DnsStatus::no_data);
  CHECK(query_txt(l, *r, "_mta-sts.nope.test").status == DnsStatus::nxdomain);
  // From the cache the second time: the same answer.
  a = query_txt(l, *r, "long.test");
  CHECK(a.records == Strings{std::string(255, 'a') + "tail"});
}

TEST_CASE("ares resolver follows a CNAME to the MX records of its target", "[ares][unbound]") {
  REQUIRE_UNBOUND(ub);
  Loop l;
  auto r = make_resolver(l, options_for({ub->address()}));
  auto a = query_mx(l, *r, "cnamemx.test");
  CHECK(a.status == DnsStatus::ok);
  CHECK(sorted(a.records) ==
        Mx{{10, "mx1.multi.test"}, {20, "mx2.multi.test"}, {30, "mx3.multi.test"}});
}

TEST_CASE("ares resolver follows a CNAME the server did not follow: MX and addresses of the target",
          "[ares][unbound]") {
  REQUIRE_UNBOUND(ub);
  Loop l;
  auto proxy = FakeDnsServer::start(l.get(), FakeDnsServer::Mode::forward, ub->port());
  REQUIRE(proxy);
  proxy->stop_at_first_cname();  // answers hold the CNAME and nothing of its target
  auto r = make_resolver(l, options_for({proxy->address()}));
  auto a = query_mx(l, *r, "cnamemx.test");
  CHECK(a.status == DnsStatus::ok);
  CHECK(sorted(a.records) ==
        Mx{{10, "mx1.multi.test"}, {20, "mx2.multi.test"}, {30, "mx3.multi.test"}});
  CHECK(proxy->questions() == Strings{"cnamemx.test MX", "multi.test MX"});
  CHECK(r->stats().cname_chased == 1);

  auto h = query_addresses(l, *r, "alias.test");
  CHECK(h.status == DnsStatus::ok);
  CHECK(h.addresses == Strings{"127.0.0.30"});
  CHECK(h.canonical == "target.test");  // an alias: the MX warning names where it leads
}

TEST_CASE("ares resolver gives every query a random message id, and the AD bit only with dnssec",
          "[ares][unbound]") {
  REQUIRE_UNBOUND(ub);
  Loop l;
  auto proxy = FakeDnsServer::start(l.get(), FakeDnsServer::Mode::forward, ub->port());
  REQUIRE(proxy);
  auto options = options_for({proxy->address()});
  options.cache.enabled = false;
  auto r = make_resolver(l, options);
  for (int i = 0; i < 24; ++i) (void)query_mx(l, *r, "multi.test");
  options.dnssec = true;
  auto validating = make_resolver(l, options);
  (void)query_mx(l, *validating, "multi.test");
  REQUIRE(proxy->ids().size() == 25);
  // ares_send keeps the id it is given: mailq draws them (a fixed or counted id would make
  // forged answers easy to match).
  std::vector<std::uint16_t> ids = proxy->ids();
  std::sort(ids.begin(), ids.end());
  CHECK(std::unique(ids.begin(), ids.end()) - ids.begin() >= 23);
  for (std::size_t i = 0; i < 24; ++i) CHECK((proxy->flags()[i] & 0x0020) == 0);
  CHECK((proxy->flags()[24] & 0x0020) != 0);  // AD asked for (RFC 6840 5.7)
  CHECK((proxy->flags()[24] & 0x0100) != 0);  // RD, as ares_query sets it
}

TEST_CASE("ares resolver sends its queries from the configured source address", "[ares][unbound]") {
  REQUIRE_UNBOUND(ub);
  Loop l;
  auto proxy = FakeDnsServer::start(l.get(), FakeDnsServer::Mode::forward, ub->port());
  REQUIRE(proxy);
  auto o = options_for({proxy->address()});
  o.source_address = "127.0.0.3";  // all of 127/8 is local on Linux
  auto r = make_resolver(l, o);
  CHECK(query_mx(l, *r, "multi.test").status == DnsStatus::ok);
  CHECK(query_addresses(l, *r, "alias.test").status == DnsStatus::ok);
  REQUIRE_FALSE(proxy->clients().empty());
  for (const auto& c : proxy->clients()) CHECK(c == "127.0.0.3");

  // Not an address: refused when the resolver is made.
  o.source_address = "eth0";
  auto bad = AresResolver::open(l.get(), *l.clock, o);
  REQUIRE_FALSE(bad);
  CHECK(bad.error().message == "source address \"eth0\" is not a numeric IP address");
}

TEST_CASE("ares resolver retries a truncated answer over TCP", "[ares][unbound]") {
  REQUIRE_UNBOUND(ub);
  Loop l;
  auto r = make_resolver(l, options_for({ub->address()}));
  auto a = query_mx(l, *r, "big.test");
  CHECK(a.status == DnsStatus::ok);
  REQUIRE(a.records.size() == kBigMxCount);
  auto records = sorted(a.records);
  CHECK(records.front() ==
        std::make_pair(0, std::string("mx0.a-rather-long-mail-exchanger-name.big.test")));
  CHECK(records.back() ==
        std::make_pair(kBigMxCount - 1, "mx" + std::to_string(kBigMxCount - 1) +
                                            ".a-rather-long-mail-exchanger-name.big.test"));

  // Proof that TCP carried it: through a UDP-only proxy the same query cannot succeed.
  auto proxy = FakeDnsServer::start(l.get(), FakeDnsServer::Mode::forward, ub->port());
  REQUIRE(proxy);
  auto o = options_for({proxy->address()});
  o.tries = 1;
  auto via_udp = make_resolver(l, o);
  CHECK(query_mx(l, *via_udp, "big.test").status != DnsStatus::ok);
  CHECK(proxy->questions() == Strings{"big.test MX"});
}

TEST_CASE("ares resolver treats names case-insensitively and accepts a trailing dot",
          "[ares][unbound]") {
  REQUIRE_UNBOUND(ub);
  Loop l;
  auto r = make_resolver(l, options_for({ub->address()}));
  auto a = query_mx(l, *r, "MULTI.Test.");
  CHECK(a.status == DnsStatus::ok);
  CHECK(a.records.size() == 3);
}

TEST_CASE("ares resolver maps SERVFAIL from every nameserver to servfail with the reason",
          "[ares][unbound]") {
  REQUIRE_UNBOUND(ub);
  Loop l;
  auto r = make_resolver(l, options_for({ub->address()}));
  auto a = query_mx(l, *r, "x.servfail.invalid");
  CHECK(a.status == DnsStatus::servfail);
  CHECK(mailq::is_transient(a.status));
  CHECK(a.detail ==
        "x.servfail.invalid MX: SERVFAIL or REFUSED from every nameserver, or connection "
        "refused (" +
            ub->address() + ")");
}

TEST_CASE("ares resolver merges A and AAAA records into one answer", "[ares][unbound]") {
  REQUIRE_UNBOUND(ub);
  Loop l;
  SECTION("IPv4 first by default") {
    auto r = make_resolver(l, options_for({ub->address()}));
    auto a = query_addresses(l, *r, "implicit.test");
    CHECK(a.status == DnsStatus::ok);
    CHECK(a.addresses == Strings{"127.0.0.20", "::1"});
    CHECK(a.detail.empty());
  }
  SECTION("IPv6 first when asked") {
    auto o = options_for({ub->address()});
    o.ipv6_first = true;
    auto r = make_resolver(l, o);
    CHECK(query_addresses(l, *r, "implicit.test").addresses == Strings{"::1", "127.0.0.20"});
  }
}

TEST_CASE("ares resolver asks only for the configured address family", "[ares][unbound]") {
  REQUIRE_UNBOUND(ub);
  Loop l;
  auto proxy = FakeDnsServer::start(l.get(), FakeDnsServer::Mode::forward, ub->port());
  REQUIRE(proxy);
  auto o = options_for({proxy->address()});
  SECTION("IPv4 only") {
    o.families = AddressFamilies::ipv4_only;
    auto r = make_resolver(l, o);
    CHECK(query_addresses(l, *r, "implicit.test").addresses == Strings{"127.0.0.20"});
    CHECK(proxy->questions() == Strings{"implicit.test A"});
  }
  SECTION("IPv6 only") {
    o.families = AddressFamilies::ipv6_only;
    auto r = make_resolver(l, o);
    CHECK(query_addresses(l, *r, "implicit.test").addresses == Strings{"::1"});
    CHECK(proxy->questions() == Strings{"implicit.test AAAA"});
  }
}

TEST_CASE(
    "ares resolver follows a CNAME to the addresses of its target, a missing AAAA is "
    "no failure",
    "[ares][unbound]") {
  REQUIRE_UNBOUND(ub);
  Loop l;
  auto r = make_resolver(l, options_for({ub->address()}));
  auto a = query_addresses(l, *r, "alias.test");
  CHECK(a.status == DnsStatus::ok);
  CHECK(a.addresses == Strings{"127.0.0.30"});
  CHECK(a.detail.empty());
}

TEST_CASE("ares resolver reports an MX host without address records", "[ares][unbound]") {
  REQUIRE_UNBOUND(ub);
  Loop l;
  auto r = make_resolver(l, options_for({ub->address()}));
  auto mx = query_mx(l, *r, "noaddr.test");
  REQUIRE(mx.status == DnsStatus::ok);
  REQUIRE(sorted(mx.records) == Mx{{10, "ghost.noaddr.test"}});
  auto ghost = query_addresses(l, *r, mx.records[0].exchange);
  CHECK(ghost.status == DnsStatus::nxdomain);
  CHECK(ghost.addresses.empty());
  CHECK(ghost.detail == "ghost.noaddr.test A: no such domain (NXDOMAIN)");
  // A name that exists with other records only: no data for either family.
  auto mxonly = query_addresses(l, *r, "mxonly.test");
  CHECK(mxonly.status == DnsStatus::no_data);
  CHECK(mxonly.detail == "mxonly.test: no A or AAAA records");
}

TEST_CASE("ares resolver answers an IP literal itself, asynchronously", "[ares]") {
  Loop l;
  auto silent = FakeDnsServer::start(l.get(), FakeDnsServer::Mode::silent);
  REQUIRE(silent);
  auto r = make_resolver(l, options_for({silent->address()}));
  auto v4 = query_addresses(l, *r, "127.0.0.5");
  CHECK(v4.status == DnsStatus::ok);
  CHECK(v4.addresses == Strings{"127.0.0.5"});
  auto v6 = query_addresses(l, *r, "::1");
  CHECK(v6.addresses == Strings{"::1"});
  CHECK(silent->queries() == 0);
}

TEST_CASE("ares resolver rejects malformed names without a query, asynchronously", "[ares]") {
  Loop l;
  auto silent = FakeDnsServer::start(l.get(), FakeDnsServer::Mode::silent);
  REQUIRE(silent);
  auto r = make_resolver(l, options_for({silent->address()}));
  auto empty = query_mx(l, *r, "");
  CHECK(empty.status == DnsStatus::error);
  CHECK(empty.detail == "\"\" MX: invalid domain name: empty name");
  auto space = query_mx(l, *r, "a b.test");
  CHECK(space.detail ==
        "\"a b.test\" MX: invalid domain name: control character or space at "
        "offset 1");
  auto dots = query_addresses(l, *r, "a..test");
  CHECK(dots.status == DnsStatus::error);
  CHECK(dots.detail == "\"a..test\" A/AAAA: invalid host name: empty label");
  auto label = query_mx(l, *r, std::string(64, 'a') + ".test");
  CHECK(label.detail.find("label longer than 63 octets") != std::string::npos);
  auto utf8 = query_mx(l, *r,
                       "b\xc3\xbc"
                       "cher.test");
  CHECK(utf8.detail.find("A-label") != std::string::npos);
  auto crlf = query_mx(l, *r, "evil.test\r\nRCPT TO:<x>");
  CHECK(crlf.status == DnsStatus::error);
  CHECK(silent->queries() == 0);
}

// --- failures and failover -------------------------------------------------------------------

TEST_CASE("ares resolver times out against a nameserver that never answers, after every try",
          "[ares]") {
  Loop l;
  auto silent = FakeDnsServer::start(l.get(), FakeDnsServer::Mode::silent);
  REQUIRE(silent);
  auto o = options_for({silent->address()});
  o.timeout = 100ms;
  o.tries = 2;
  auto r = make_resolver(l, o);
  auto a = query_mx(l, *r, "dead.test");
  CHECK(a.status == DnsStatus::timeout);
  CHECK(a.detail ==
        "dead.test MX: timed out, no answer from the nameservers (" + silent->address() + ")");
  CHECK(silent->questions() == Strings{"dead.test MX", "dead.test MX"});
}

TEST_CASE("ares resolver maps REFUSED from every nameserver to servfail, not cached", "[ares]") {
  Loop l;
  auto refuser = FakeDnsServer::start(l.get(), FakeDnsServer::Mode::refuse);
  REQUIRE(refuser);
  auto o = options_for({refuser->address()});
  o.tries = 1;
  auto r = make_resolver(l, o);
  auto a = query_mx(l, *r, "example.test");
  CHECK(a.status == DnsStatus::servfail);
  CHECK(a.detail ==
        "example.test MX: SERVFAIL or REFUSED from every nameserver, or connection refused (" +
            refuser->address() + ")");
  auto again = query_mx(l, *r, "example.test");
  CHECK(again.status == DnsStatus::servfail);
  CHECK(refuser->queries() == 2);  // a transient failure is asked again
}

TEST_CASE("ares resolver fails over from a dead nameserver to the next", "[ares][unbound]") {
  REQUIRE_UNBOUND(ub);
  Loop l;
  SECTION("first server silent") {
    auto silent = FakeDnsServer::start(l.get(), FakeDnsServer::Mode::silent);
    REQUIRE(silent);
    auto o = options_for({silent->address(), ub->address()});
    o.timeout = 200ms;
    auto r = make_resolver(l, o);
    CHECK(r->nameservers() == Strings{silent->address(), ub->address()});
    auto a = query_mx(l, *r, "multi.test");
    CHECK(a.status == DnsStatus::ok);
    CHECK(a.records.size() == 3);
    CHECK(silent->queries() == 1);
  }
  SECTION("first server refusing") {
    auto refuser = FakeDnsServer::start(l.get(), FakeDnsServer::Mode::refuse);
    REQUIRE(refuser);
    auto r = make_resolver(l, options_for({refuser->address(), ub->address()}));
    auto a = query_mx(l, *r, "multi.test");
    CHECK(a.status == DnsStatus::ok);
    CHECK(refuser->queries() == 1);
  }
  SECTION("first server answering SERVFAIL") {
    auto failing = FakeDnsServer::start(l.get(), FakeDnsServer::Mode::servfail);
    REQUIRE(failing);
    auto r = make_resolver(l, options_for({failing->address(), ub->address()}));
    auto a = query_addresses(l, *r, "implicit.test");
    CHECK(a.status == DnsStatus::ok);
    CHECK(a.addresses == Strings{"127.0.0.20", "::1"});
    CHECK(failing->queries() == 2);  // one for A, one for AAAA
  }
}

TEST_CASE("ares resolver ends a query at the query deadline whatever c-ares' timeouts", "[ares]") {
  Loop l;
  auto silent = FakeDnsServer::start(l.get(), FakeDnsServer::Mode::silent);
  REQUIRE(silent);
  auto o = options_for({silent->address()});
  o.timeout = 5s;
  o.tries = 3;
  o.query_deadline = 100ms;
  auto r = make_resolver(l, o);
  auto a = query_mx(l, *r, "slow.test");
  CHECK(a.status == DnsStatus::timeout);
  CHECK(a.detail ==
        "slow.test MX: no answer within the 100 ms query deadline (" + silent->address() + ")");
  CHECK(r->stats().deadline_expired == 1);
  CHECK(silent->queries() == 1);
  // The abandoned c-ares query is still pending; destroying the resolver must clean it up.
  r.reset();
}

TEST_CASE("ares resolver keeps a partial address answer when one family fails", "[ares][unbound]") {
  REQUIRE_UNBOUND(ub);
  Loop l;
  // A proxy to unbound that loses every AAAA query: A answers, AAAA times out.
  auto lossy = FakeDnsServer::start(l.get(), FakeDnsServer::Mode::forward, ub->port(), 28);
  REQUIRE(lossy);
  auto o = options_for({lossy->address()});
  o.timeout = 100ms;
  o.tries = 1;
  auto r = make_resolver(l, o);
  auto a = query_addresses(l, *r, "implicit.test");
  CHECK(a.status == DnsStatus::ok);
  CHECK(a.addresses == Strings{"127.0.0.20"});
  CHECK(a.detail ==
        "implicit.test AAAA: timed out, no answer from the nameservers (" + lossy->address() + ")");
  // The A answer is cached, the AAAA failure is not: only AAAA is asked again.
  auto again = query_addresses(l, *r, "implicit.test");
  CHECK(again.addresses == Strings{"127.0.0.20"});
  auto qs = lossy->questions();
  std::sort(qs.begin(), qs.begin() + 2);
  CHECK(qs == Strings{"implicit.test A", "implicit.test AAAA", "implicit.test AAAA"});
}

TEST_CASE("ares resolver reports both failures when no family answers", "[ares]") {
  Loop l;
  auto refuser = FakeDnsServer::start(l.get(), FakeDnsServer::Mode::refuse);
  REQUIRE(refuser);
  auto o = options_for({refuser->address()});
  o.tries = 1;
  auto r = make_resolver(l, o);
  auto a = query_addresses(l, *r, "host.example.test");
  CHECK(a.status == DnsStatus::servfail);
  const std::string why = ": SERVFAIL or REFUSED from every nameserver, or connection refused (" +
                          refuser->address() + ")";
  CHECK(a.detail == "host.example.test A" + why + "; host.example.test AAAA" + why);
}

// --- the cache --------------------------------------------------------------------------------

TEST_CASE("ares resolver serves a repeated MX query from the cache until the TTL expires",
          "[ares][unbound][cache]") {
  REQUIRE_UNBOUND(ub);
  Loop l;
  ManualClock clock;
  auto proxy = FakeDnsServer::start(l.get(), FakeDnsServer::Mode::forward, ub->port());
  REQUIRE(proxy);
  auto o = options_for({proxy->address()});
  o.cache_clock = &clock;
  auto r = make_resolver(l, o);

  auto first = query_mx(l, *r, "multi.test");
  REQUIRE(first.status == DnsStatus::ok);
  auto second = query_mx(l, *r, "multi.test");  // answered from the cache, still posted
  CHECK(second.status == DnsStatus::ok);
  CHECK(sorted(second.records) == sorted(first.records));
  CHECK(proxy->questions() == Strings{"multi.test MX"});
  CHECK(r->stats().cache_hits == 1);

  clock.advance(299s);  // the MX TTL is 300 s
  (void)query_mx(l, *r, "multi.test");
  CHECK(proxy->queries() == 1);
  clock.advance(1s);
  auto refreshed = query_mx(l, *r, "multi.test");
  CHECK(refreshed.status == DnsStatus::ok);
  CHECK(proxy->questions() == Strings{"multi.test MX", "multi.test MX"});
}

TEST_CASE("ares resolver caches an MX answer no longer than the CNAME leading to it",
          "[ares][unbound][cache]") {
  REQUIRE_UNBOUND(ub);
  Loop l;
  ManualClock clock;
  auto proxy = FakeDnsServer::start(l.get(), FakeDnsServer::Mode::forward, ub->port());
  REQUIRE(proxy);
  auto o = options_for({proxy->address()});
  o.cache_clock = &clock;
  auto r = make_resolver(l, o);
  (void)query_mx(l, *r, "cnamemx.test");
  clock.advance(59s);  // the CNAME's TTL is 60 s, the MX records' 300 s
  (void)query_mx(l, *r, "cnamemx.test");
  CHECK(proxy->queries() == 1);
  clock.advance(1s);
  (void)query_mx(l, *r, "cnamemx.test");
  CHECK(proxy->queries() == 2);
}

TEST_CASE("ares resolver caches A and AAAA answers separately, each with its own TTL",
          "[ares][unbound][cache]") {
  REQUIRE_UNBOUND(ub);
  Loop l;
  ManualClock clock;
  auto proxy = FakeDnsServer::start(l.get(), FakeDnsServer::Mode::forward, ub->port());
  REQUIRE(proxy);
  auto o = options_for({proxy->address()});
  o.cache_clock = &clock;
  o.cache.negative_ttl = 30s;
  auto r = make_resolver(l, o);
  // alias.test: CNAME (300 s) to target.test A (120 s). For AAAA unbound answers the CNAME
  // alone, without an SOA, which is also what a server that does not follow chains sends:
  // the resolver asks for target.test AAAA itself (once: it is cached under both names). The
  // negative answer lives negative_ttl (30 s) under the alias, bounded by the CNAME's TTL.
  CHECK(query_addresses(l, *r, "alias.test").addresses == Strings{"127.0.0.30"});
  auto qs = proxy->questions();
  std::sort(qs.begin(), qs.end());
  CHECK(qs == Strings{"alias.test A", "alias.test AAAA", "target.test AAAA"});

  clock.advance(29s);
  (void)query_addresses(l, *r, "alias.test");
  CHECK(proxy->queries() == 3);
  clock.advance(1s);
  CHECK(query_addresses(l, *r, "alias.test").addresses == Strings{"127.0.0.30"});
  REQUIRE(proxy->queries() == 4);  // target.test AAAA is still cached
  CHECK(proxy->questions()[3] == "alias.test AAAA");

  clock.advance(90s);  // 120 s: the A record has expired too
  CHECK(query_addresses(l, *r, "alias.test").addresses == Strings{"127.0.0.30"});
  // Both of the alias's records again, and the target's AAAA (its negative answer is gone).
  CHECK(proxy->questions() == Strings{"alias.test A", "alias.test AAAA", "target.test AAAA",
                                      "alias.test AAAA", "alias.test A", "alias.test AAAA",
                                      "target.test AAAA"});
}

TEST_CASE("ares resolver caches NXDOMAIN for the SOA negative TTL", "[ares][unbound][cache]") {
  REQUIRE_UNBOUND(ub);
  Loop l;
  ManualClock clock;
  auto proxy = FakeDnsServer::start(l.get(), FakeDnsServer::Mode::forward, ub->port());
  REQUIRE(proxy);
  auto o = options_for({proxy->address()});
  o.cache_clock = &clock;
  o.cache.negative_ttl = 1h;  // unused: the answer carries an SOA (TTL 300, MINIMUM 60)
  auto r = make_resolver(l, o);
  CHECK(query_mx(l, *r, "nope.test").status == DnsStatus::nxdomain);
  clock.advance(59s);
  auto cached = query_mx(l, *r, "nope.test");
  CHECK(cached.status == DnsStatus::nxdomain);
  CHECK(cached.detail == "nope.test MX: no such domain (NXDOMAIN) (cached)");
  CHECK(proxy->queries() == 1);
  clock.advance(1s);
  auto fresh = query_mx(l, *r, "nope.test");
  CHECK(fresh.detail == "nope.test MX: no such domain (NXDOMAIN)");
  CHECK(proxy->queries() == 2);
}

TEST_CASE("ares resolver sends one DNS query for identical queries in flight",
          "[ares][unbound][cache]") {
  REQUIRE_UNBOUND(ub);
  Loop l;
  auto proxy = FakeDnsServer::start(l.get(), FakeDnsServer::Mode::forward, ub->port());
  REQUIRE(proxy);
  // The queries are counted at the proxy: a retransmission after a slow answer (a loaded
  // machine) would count as a query; this is about coalescing, not timeouts.
  AresResolverOptions options = options_for({proxy->address()});
  options.timeout = 5s;
  auto r = make_resolver(l, options);
  std::vector<MxAnswer> mx;
  std::vector<AddressAnswer> addrs;
  r->query_mx("multi.test", [&](MxAnswer a) { mx.push_back(std::move(a)); });
  r->query_mx("Multi.Test.", [&](MxAnswer a) { mx.push_back(std::move(a)); });
  r->query_addresses("implicit.test", [&](AddressAnswer a) { addrs.push_back(std::move(a)); });
  r->query_addresses("implicit.test", [&](AddressAnswer a) { addrs.push_back(std::move(a)); });
  CHECK(r->stats().coalesced == 3);
  CHECK(r->stats().in_flight == 3);
  REQUIRE(l.run_until([&] { return mx.size() == 2 && addrs.size() == 2; }));
  l.settle();
  CHECK(mx.size() == 2);
  CHECK(addrs.size() == 2);
  for (const auto& a : mx) CHECK(a.records.size() == 3);
  for (const auto& a : addrs) CHECK(a.addresses == Strings{"127.0.0.20", "::1"});
  CHECK(proxy->queries() == 3);  // multi MX, implicit A, implicit AAAA
  CHECK(r->stats().queries_sent == 3);
}

TEST_CASE("ares resolver without a cache asks every time", "[ares][unbound][cache]") {
  REQUIRE_UNBOUND(ub);
  Loop l;
  auto proxy = FakeDnsServer::start(l.get(), FakeDnsServer::Mode::forward, ub->port());
  REQUIRE(proxy);
  auto o = options_for({proxy->address()});
  o.cache.enabled = false;
  auto r = make_resolver(l, o);
  (void)query_mx(l, *r, "multi.test");
  (void)query_mx(l, *r, "multi.test");
  CHECK(proxy->queries() == 2);
}

TEST_CASE("ares resolver cache evicts the least recently used answer beyond its bound",
          "[ares][unbound][cache]") {
  REQUIRE_UNBOUND(ub);
  Loop l;
  auto proxy = FakeDnsServer::start(l.get(), FakeDnsServer::Mode::forward, ub->port());
  REQUIRE(proxy);
  auto o = options_for({proxy->address()});
  o.cache.max_entries = 1;
  auto r = make_resolver(l, o);
  (void)query_mx(l, *r, "multi.test");
  (void)query_mx(l, *r, "nullmx.test");  // evicts multi.test
  (void)query_mx(l, *r, "multi.test");
  CHECK(proxy->questions() == Strings{"multi.test MX", "nullmx.test MX", "multi.test MX"});
  CHECK(r->stats().cache_entries == 1);
  r->clear_cache();
  CHECK(r->stats().cache_entries == 0);
}

// --- lifetime ---------------------------------------------------------------------------------

TEST_CASE("destroying the ares resolver cancels every pending query exactly once",
          "[ares][unbound]") {
  REQUIRE_UNBOUND(ub);
  Loop l;
  auto silent = FakeDnsServer::start(l.get(), FakeDnsServer::Mode::silent);
  REQUIRE(silent);
  auto proxy = FakeDnsServer::start(l.get(), FakeDnsServer::Mode::forward, ub->port());
  REQUIRE(proxy);

  SECTION("queries waiting for a server") {
    auto o = options_for({silent->address()});
    o.timeout = 5s;
    auto r = make_resolver(l, o);
    std::vector<MxAnswer> mx;
    std::vector<AddressAnswer> addrs;
    r->query_mx("a.test", [&](MxAnswer a) { mx.push_back(std::move(a)); });
    r->query_mx("a.test", [&](MxAnswer a) { mx.push_back(std::move(a)); });
    r->query_addresses("b.test", [&](AddressAnswer a) { addrs.push_back(std::move(a)); });
    REQUIRE(l.run_until([&] { return silent->queries() == 3; }));
    r.reset();
    REQUIRE(mx.size() == 2);
    REQUIRE(addrs.size() == 1);
    for (const auto& a : mx) {
      CHECK(a.status == DnsStatus::cancelled);
      CHECK(a.detail == "cancelled");
    }
    CHECK(addrs[0].status == DnsStatus::cancelled);
    CHECK(addrs[0].detail == "cancelled");
    l.settle();
    CHECK(mx.size() == 2);
    CHECK(addrs.size() == 1);
  }
  SECTION("answers already known but not yet delivered") {
    auto r = make_resolver(l, options_for({proxy->address()}));
    (void)query_mx(l, *r, "multi.test");
    std::vector<MxAnswer> mx;
    r->query_mx("multi.test", [&](MxAnswer a) { mx.push_back(std::move(a)); });  // cached
    r->query_mx("", [&](MxAnswer a) { mx.push_back(std::move(a)); });            // invalid
    r.reset();
    REQUIRE(mx.size() == 2);
    CHECK(mx[0].detail == "cancelled");
    CHECK(mx[1].detail == "cancelled");
    l.settle();
    CHECK(mx.size() == 2);
  }
  SECTION("a query issued by a cancelled callback is cancelled too") {
    auto o = options_for({silent->address()});
    o.timeout = 5s;
    auto r = make_resolver(l, o);
    AresResolver* raw = r.get();
    std::vector<std::string> seen;
    r->query_mx("a.test", [&](MxAnswer a) {
      seen.push_back("first " + a.detail);
      raw->query_addresses("b.test",
                           [&](AddressAnswer b) { seen.push_back("second " + b.detail); });
    });
    REQUIRE(l.run_until([&] { return silent->queries() == 1; }));
    r.reset();
    CHECK(seen == Strings{"first cancelled", "second cancelled"});
  }
}

TEST_CASE("a callback may destroy the ares resolver and the rest are cancelled at once",
          "[ares][unbound]") {
  REQUIRE_UNBOUND(ub);
  Loop l;
  auto r = make_resolver(l, options_for({ub->address()}));
  (void)query_mx(l, *r, "multi.test");
  std::vector<std::string> seen;
  r->query_mx("multi.test", [&](MxAnswer a) {
    seen.push_back("first " + std::string(mailq::to_string(a.status)));
    r.reset();
    seen.push_back("destroyed");
  });
  r->query_mx("multi.test", [&](MxAnswer a) { seen.push_back("second " + a.detail); });
  REQUIRE(l.run_until([&] { return seen.size() == 3; }));
  l.settle();
  CHECK(seen == Strings{"first ok", "second cancelled", "destroyed"});
}

TEST_CASE("an exception thrown by a callback does not stop the ares resolver", "[ares][unbound]") {
  REQUIRE_UNBOUND(ub);
  Loop l;
  std::vector<std::string> reported;
  mailq::ErrorReporter reporter([&](const std::string& m) { reported.push_back(m); });
  auto o = options_for({ub->address()});
  o.error_reporter = &reporter;
  auto r = make_resolver(l, o);
  bool second = false;
  r->query_mx("multi.test", [](MxAnswer) { throw std::runtime_error("host bug"); });
  r->query_mx("nullmx.test", [&](MxAnswer) { second = true; });
  REQUIRE(l.run_until([&] { return second; }));
  CHECK(r->stats().callback_exceptions == 1);
  CHECK(reported == Strings{"mailq AresResolver: callback threw: host bug"});
}

// --- configuration ----------------------------------------------------------------------------

TEST_CASE("nameserver addresses parse with and without ports", "[ares]") {
  auto v4 = Nameserver::parse("127.0.0.1");
  REQUIRE(v4);
  CHECK(v4->address == "127.0.0.1");
  CHECK(v4->port == 53);
  CHECK(v4->to_string() == "127.0.0.1:53");
  auto v4p = Nameserver::parse("127.0.0.2:5353");
  REQUIRE(v4p);
  CHECK(v4p->to_string() == "127.0.0.2:5353");
  auto v6 = Nameserver::parse("::1");
  REQUIRE(v6);
  CHECK(v6->to_string() == "[::1]:53");
  auto v6p = Nameserver::parse("[::1]:5300");
  REQUIRE(v6p);
  CHECK(v6p->address == "::1");
  CHECK(v6p->port == 5300);

  for (const char* bad : {"", "ns.example.org", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536",
                          "127.0.0.1:53x", "[::1", "[::1]x", "[127.0.0.1]:53", "1.2.3:53"}) {
    INFO(bad);
    auto r = Nameserver::parse(bad);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == mailq::errc::invalid_parameter);
  }
  CHECK(Nameserver::parse("ns.example.org").error().message ==
        "nameserver \"ns.example.org\": not an IP address (expected \"ip\", \"ip:port\" or "
        "\"[ipv6]:port\")");
}

TEST_CASE("ares resolver creation rejects bad options with a clear error", "[ares]") {
  Loop l;
  AresResolverOptions o;
  o.nameservers = {"127.0.0.1:53", "bogus"};
  auto bad_ns = AresResolver::open(l.get(), *l.clock, o);
  REQUIRE_FALSE(bad_ns);
  CHECK(bad_ns.error().code == mailq::errc::invalid_parameter);
  CHECK(bad_ns.error().message.find("nameserver \"bogus\"") == 0);

  o.nameservers = {"127.0.0.1:53"};
  o.tries = 0;
  auto bad_tries = AresResolver::open(l.get(), *l.clock, o);
  REQUIRE_FALSE(bad_tries);
  CHECK(bad_tries.error().message == "AresResolver: tries 0 out of range (1 to 16)");

  o.tries = 2;
  o.timeout = 0ms;
  auto bad_timeout = AresResolver::open(l.get(), *l.clock, o);
  REQUIRE_FALSE(bad_timeout);
  CHECK(bad_timeout.error().message == "AresResolver: timeout 0 ms out of range (1 ms to 1 hour)");

  CHECK_FALSE(AresResolver::open(nullptr, *l.clock, AresResolverOptions{}));
}

TEST_CASE("ares resolver reports the nameservers it uses, in order", "[ares]") {
  Loop l;
  auto r = make_resolver(l, options_for({"127.0.0.1:5353", "[::1]:53", "127.0.0.2"}));
  CHECK(r->nameservers() == Strings{"127.0.0.1:5353", "[::1]:53", "127.0.0.2:53"});
}

TEST_CASE("every c-ares status maps to a DnsStatus and a log detail", "[ares]") {
  using mailq::ares::detail::map_ares_status;
  struct Row {
    int code;  // c-ares 1.18.1 ares.h values (stable ABI)
    DnsStatus status;
    std::string detail;
  };
  const std::string s = "(127.0.0.1:53)";
  const std::vector<Row> rows = {
      {0, DnsStatus::ok, ""},                                                  // SUCCESS
      {1, DnsStatus::no_data, "q.test MX: no records of this type (NODATA)"},  // ENODATA
      {2, DnsStatus::error, "q.test MX: FORMERR, the nameservers could not parse the query " + s},
      {3, DnsStatus::servfail, "q.test MX: SERVFAIL from the nameservers " + s},  // ESERVFAIL
      {4, DnsStatus::nxdomain, "q.test MX: no such domain (NXDOMAIN)"},           // ENOTFOUND
      {5, DnsStatus::error, "q.test MX: NOTIMP from the nameservers " + s},       // ENOTIMP
      {6, DnsStatus::refused, "q.test MX: REFUSED by the nameservers " + s},      // EREFUSED
      {7, DnsStatus::error, "q.test MX: invalid query name"},                     // EBADQUERY
      {8, DnsStatus::error, "q.test MX: invalid query name"},                     // EBADNAME
      {9, DnsStatus::error,
       "q.test MX: c-ares error 9 (Unsupported address family)"},  // EBADFAMILY
      {10, DnsStatus::error, "q.test MX: malformed response from the nameservers " + s},
      {11, DnsStatus::servfail,  // ECONNREFUSED
       "q.test MX: SERVFAIL or REFUSED from every nameserver, or connection refused " + s},
      {12, DnsStatus::timeout, "q.test MX: timed out, no answer from the nameservers " + s},
      {13, DnsStatus::error, "q.test MX: connection closed by the nameservers " + s},  // EOF
      {14, DnsStatus::error, "q.test MX: c-ares error 14 (Error reading file)"},       // EFILE
      {15, DnsStatus::error, "q.test MX: out of memory"},                              // ENOMEM
      {16, DnsStatus::cancelled, "cancelled"},                  // EDESTRUCTION
      {17, DnsStatus::error, "q.test MX: invalid query name"},  // EBADSTR
      {24, DnsStatus::cancelled, "cancelled"},                  // ECANCELLED
  };
  for (const auto& row : rows) {
    INFO("c-ares status " << row.code);
    auto m = map_ares_status(row.code, "q.test MX", "127.0.0.1:53");
    CHECK(m.status == row.status);
    CHECK(m.detail == row.detail);
  }
  // The codes of other c-ares calls still map to a transient error, never to success.
  for (int code = 18; code <= 25; ++code) {
    if (code == 24) continue;
    INFO("c-ares status " << code);
    auto m = map_ares_status(code, "q.test MX", "127.0.0.1:53");
    CHECK(m.status == DnsStatus::error);
    CHECK(m.detail.find("q.test MX: c-ares error " + std::to_string(code)) == 0);
  }
}
