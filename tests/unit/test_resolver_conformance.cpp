// The Resolver conformance suite (mailq/testing/resolver_conformance.h) passes StaticResolver
// and catches resolvers that break the contract.
#include <catch2/catch.hpp>

#include "mailq/testing/resolver_conformance.h"

using namespace mailq;

namespace {

testing::ResolverZone zone() {
  testing::ResolverZone z;
  z.mx_domain = "example.com";
  z.mx = {{10, "mx1.example.com"}, {20, "mx2.example.com"}};
  z.host = "mx1.example.com";
  z.addresses = {"192.0.2.1", "2001:db8::1"};
  z.nxdomain = "nowhere.example";
  z.no_mx = "mx1.example.com";
  return z;
}

void fill(StaticResolver& r) {
  const auto z = zone();
  r.set_mx(z.mx_domain, z.mx);
  r.set_addresses(z.host, z.addresses);
}

testing::ResolverHarness harness(ManualClock& clock,
                                 std::function<std::unique_ptr<Resolver>()> make) {
  testing::ResolverHarness h;
  h.make = std::move(make);
  h.run_until = [&clock](const std::function<bool()>& done, Duration limit) {
    const TimePoint end = clock.now() + limit;
    while (!done() && clock.now() < end) clock.advance(Duration(1));
    return done();
  };
  h.zone = zone();
  return h;
}

// Answers at once, from inside the call.
class EagerResolver final : public Resolver {
 public:
  void query_mx(const std::string& d, std::function<void(MxAnswer)> done) override {
    MxAnswer a;
    a.status = d == "example.com" ? DnsStatus::ok : DnsStatus::nxdomain;
    if (d == "example.com") a.records = zone().mx;
    done(a);
  }
  void query_addresses(const std::string&, std::function<void(AddressAnswer)> done) override {
    AddressAnswer a;
    a.status = DnsStatus::ok;
    a.addresses = zone().addresses;
    done(a);
  }
  void query_txt(const std::string&, std::function<void(TxtAnswer)> done) override {
    TxtAnswer a;
    a.status = DnsStatus::no_data;
    done(a);
  }
  void query_tlsa(const std::string&, std::function<void(TlsaAnswer)> done) override {
    TlsaAnswer a;
    a.status = DnsStatus::nxdomain;
    done(a);
  }
};

// Forgets its pending queries when destroyed, and answers NXDOMAIN as no data.
class ForgetfulResolver final : public Resolver {
 public:
  explicit ForgetfulResolver(Clock& clock) : inner_(clock, Duration(5)) { fill(inner_); }
  ~ForgetfulResolver() override { alive_.reset(); }
  void query_mx(const std::string& d, std::function<void(MxAnswer)> done) override {
    std::weak_ptr<int> alive = alive_;
    inner_.query_mx(d, [alive, done = std::move(done)](MxAnswer a) {
      if (alive.expired()) return;  // dropped silently: the contract says answered once
      if (a.status == DnsStatus::nxdomain) a.status = DnsStatus::no_data;
      done(std::move(a));
    });
  }
  void query_txt(const std::string& n, std::function<void(TxtAnswer)> done) override {
    std::weak_ptr<int> alive = alive_;
    inner_.query_txt(n, [alive, done = std::move(done)](TxtAnswer a) {
      if (!alive.expired()) done(std::move(a));
    });
  }
  void query_addresses(const std::string& h, std::function<void(AddressAnswer)> done) override {
    std::weak_ptr<int> alive = alive_;
    inner_.query_addresses(h, [alive, done = std::move(done)](AddressAnswer a) {
      if (!alive.expired()) done(std::move(a));
    });
  }
  void query_tlsa(const std::string& n, std::function<void(TlsaAnswer)> done) override {
    std::weak_ptr<int> alive = alive_;
    inner_.query_tlsa(n, [alive, done = std::move(done)](TlsaAnswer a) {
      if (!alive.expired()) done(std::move(a));
    });
  }

 private:
  std::shared_ptr<int> alive_ = std::make_shared<int>(0);
  StaticResolver inner_;
};

}  // namespace

TEST_CASE("Resolver conformance: StaticResolver passes every check", "[resolver][conformance]") {
  ManualClock clock;
  for (Duration latency : {Duration(0), Duration(7)}) {
    auto h = harness(clock, [&clock, latency] {
      auto r = std::make_unique<StaticResolver>(clock, latency);
      fill(*r);
      return r;
    });
    const auto failures = testing::check_resolver(h);
    INFO("latency " << latency.count() << " ms");
    for (const auto& f : failures) FAIL_CHECK(f);
    CHECK(failures.empty());
  }
}

TEST_CASE("Resolver conformance: a resolver answering inside the call is caught",
          "[resolver][conformance]") {
  ManualClock clock;
  auto failures =
      testing::check_resolver(harness(clock, [] { return std::make_unique<EagerResolver>(); }));
  REQUIRE_FALSE(failures.empty());
  CHECK(failures[0] == "answers: a callback ran inside the query call");
}

TEST_CASE(
    "Resolver conformance: a resolver that drops pending queries when destroyed, and calls "
    "NXDOMAIN no data, is caught",
    "[resolver][conformance]") {
  ManualClock clock;
  auto failures = testing::check_resolver(
      harness(clock, [&clock] { return std::make_unique<ForgetfulResolver>(clock); }));
  CHECK(std::count(failures.begin(), failures.end(),
                   "answers: MX of nowhere.example: no_data, expected nxdomain") == 1);
  CHECK(std::count(failures.begin(), failures.end(),
                   "destroy: 0 of 6 pending queries answered by the destructor") == 1);
}

TEST_CASE("StaticResolver answers TXT queries later, from its table", "[resolver]") {
  ManualClock clock;
  StaticResolver r(clock);
  r.set_txt("_mta-sts.example.com.", {"v=STSv1; id=1;"});
  r.set_mx("example.com", {{10, "mx.example.com"}});
  r.set_txt_status("_mta-sts.broken.example", DnsStatus::servfail);
  std::vector<TxtAnswer> got;
  for (const char* name : {"_MTA-STS.example.com", "example.com", "_mta-sts.broken.example",
                           "_mta-sts.nowhere.example"})
    r.query_txt(name, [&](TxtAnswer a) { got.push_back(std::move(a)); });
  CHECK(got.empty());  // never from inside the call
  clock.advance(Duration(0));
  REQUIRE(got.size() == 4);
  CHECK(got[0].status == DnsStatus::ok);
  CHECK(got[0].records == std::vector<std::string>{"v=STSv1; id=1;"});
  CHECK(got[1].status == DnsStatus::no_data);
  CHECK(got[2].status == DnsStatus::servfail);
  CHECK(got[3].status == DnsStatus::nxdomain);
}

TEST_CASE("StaticResolver answers TLSA queries later, secure only where it was told",
          "[resolver][dane]") {
  ManualClock clock;
  StaticResolver r(clock);
  const dane::TlsaRecord ee{3, 1, 1, std::string(32, 'x')};
  r.set_tlsa("_25._tcp.mx.example.com", {ee});
  r.set_secure("_25._tcp.mx.example.com");
  r.set_tlsa("_25._tcp.mx.insecure.example", {ee});
  r.set_tlsa_status("_25._tcp.mx.broken.example", DnsStatus::servfail);
  r.set_secure("_25._tcp.mx.none.example");
  r.set_mx("example.com", {{10, "mx.example.com"}});
  r.set_secure("example.com");
  std::vector<TlsaAnswer> got;
  for (const char* name : {"_25._TCP.mx.example.com.", "_25._tcp.mx.insecure.example",
                           "_25._tcp.mx.broken.example", "_25._tcp.mx.none.example"})
    r.query_tlsa(name, [&](TlsaAnswer a) { got.push_back(std::move(a)); });
  MxAnswer mx;
  r.query_mx("example.com", [&](MxAnswer a) { mx = std::move(a); });
  CHECK(got.empty());  // never from inside the call
  clock.advance(Duration(0));
  REQUIRE(got.size() == 4);
  CHECK(got[0].status == DnsStatus::ok);
  CHECK(got[0].secure);
  CHECK(got[0].records == std::vector<dane::TlsaRecord>{ee});
  CHECK(got[1].status == DnsStatus::ok);
  CHECK_FALSE(got[1].secure);
  CHECK(got[2].status == DnsStatus::servfail);
  CHECK(got[3].status == DnsStatus::nxdomain);
  CHECK(got[3].secure);
  CHECK(mx.secure);
}
