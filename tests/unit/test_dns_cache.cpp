// The resolver's answer cache: lifetimes from TTLs and policy, expiry, LRU bound.
#include <catch2/catch.hpp>

#include "core/dns_cache.h"
#include "core/dns_wire.h"

using mailq::DnsCachePolicy;
using mailq::DnsStatus;
using mailq::Duration;
using mailq::MxRecord;
using mailq::detail::DnsCache;
using mailq::detail::DnsCacheEntry;
using mailq::detail::kDnsTypeA;
using mailq::detail::kDnsTypeAaaa;
using mailq::detail::kDnsTypeMx;
using namespace std::chrono_literals;

namespace {

DnsCacheEntry mx_entry(std::string host) {
  DnsCacheEntry e;
  e.status = DnsStatus::ok;
  e.mx.push_back(MxRecord{10, std::move(host)});
  return e;
}

DnsCacheEntry status_entry(DnsStatus s, std::string detail = "") {
  DnsCacheEntry e;
  e.status = s;
  e.detail = std::move(detail);
  return e;
}

constexpr DnsCache::Time kT0{1'000'000};

}  // namespace

TEST_CASE("dns cache serves a positive answer until its record TTL runs out", "[dns_cache]") {
  DnsCache cache;
  CHECK(cache.store("example.org", kDnsTypeMx, mx_entry("mx.example.org"), 300, kT0) ==
        Duration{300'000});
  auto hit = cache.find("example.org", kDnsTypeMx, kT0 + 299'999ms);
  REQUIRE(hit);
  CHECK(hit->status == DnsStatus::ok);
  REQUIRE(hit->mx.size() == 1);
  CHECK(hit->mx[0].preference == 10);
  CHECK(hit->mx[0].exchange == "mx.example.org");
  CHECK_FALSE(cache.find("example.org", kDnsTypeMx, kT0 + 300'000ms));
  CHECK(cache.size() == 0);  // the expired entry is dropped on sight
}

TEST_CASE("dns cache keys are case-insensitive, ignore a trailing dot and separate types",
          "[dns_cache]") {
  DnsCache cache;
  DnsCacheEntry a;
  a.status = DnsStatus::ok;
  a.addresses = {"192.0.2.1"};
  (void)cache.store("Mail.Example.ORG.", kDnsTypeA, a, 60, kT0);
  auto hit = cache.find("mail.example.org", kDnsTypeA, kT0);
  REQUIRE(hit);
  CHECK(hit->addresses == std::vector<std::string>{"192.0.2.1"});
  CHECK_FALSE(cache.find("mail.example.org", kDnsTypeAaaa, kT0));
  CHECK_FALSE(cache.find("mail.example.org", kDnsTypeMx, kT0));
}

TEST_CASE("dns cache clamps positive TTLs into [min_ttl, max_ttl]", "[dns_cache]") {
  DnsCachePolicy p;
  p.min_ttl = 30s;
  p.max_ttl = 1h;
  DnsCache cache(p);
  CHECK(cache.lifetime(DnsStatus::ok, 5) == Duration{30'000});
  CHECK(cache.lifetime(DnsStatus::ok, 600) == Duration{600'000});
  CHECK(cache.lifetime(DnsStatus::ok, 86400) == Duration{3'600'000});
  CHECK(cache.lifetime(DnsStatus::ok, std::nullopt) == Duration{300'000});  // unknown_ttl
}

TEST_CASE("dns cache does not keep an answer with TTL 0 when there is no floor", "[dns_cache]") {
  DnsCache cache;
  CHECK(cache.store("zero.example", kDnsTypeA, mx_entry("x"), 0, kT0) == Duration{0});
  CHECK(cache.size() == 0);
  CHECK_FALSE(cache.find("zero.example", kDnsTypeA, kT0));
}

TEST_CASE("dns cache keeps negative answers for the SOA-derived TTL, else the default",
          "[dns_cache]") {
  DnsCachePolicy p;
  p.negative_ttl = 120s;
  p.max_negative_ttl = 1h;
  DnsCache cache(p);
  CHECK(cache.lifetime(DnsStatus::nxdomain, 60) == Duration{60'000});
  CHECK(cache.lifetime(DnsStatus::no_data, std::nullopt) == Duration{120'000});
  CHECK(cache.lifetime(DnsStatus::nxdomain, 86400) == Duration{3'600'000});

  (void)cache.store("gone.example", kDnsTypeMx,
                    status_entry(DnsStatus::nxdomain, "NXDOMAIN from 127.0.0.1:53"), 60, kT0);
  auto hit = cache.find("gone.example", kDnsTypeMx, kT0 + 59s);
  REQUIRE(hit);
  CHECK(hit->status == DnsStatus::nxdomain);
  CHECK(hit->detail == "NXDOMAIN from 127.0.0.1:53");
  CHECK_FALSE(cache.find("gone.example", kDnsTypeMx, kT0 + 60s));
}

TEST_CASE("dns cache does not keep transient failures unless failure_ttl is set", "[dns_cache]") {
  DnsCache plain;
  for (auto s : {DnsStatus::servfail, DnsStatus::refused, DnsStatus::timeout, DnsStatus::error}) {
    CHECK(plain.store("flaky.example", kDnsTypeMx, status_entry(s), 3600, kT0) == Duration{0});
  }
  CHECK(plain.size() == 0);

  DnsCachePolicy p;
  p.failure_ttl = 5s;
  DnsCache brief(p);
  CHECK(brief.store("flaky.example", kDnsTypeMx, status_entry(DnsStatus::timeout), 3600, kT0) ==
        Duration{5'000});
  CHECK(brief.find("flaky.example", kDnsTypeMx, kT0 + 4999ms));
  CHECK_FALSE(brief.find("flaky.example", kDnsTypeMx, kT0 + 5s));
  // A cancelled query got no answer at all: nothing to remember, whatever failure_ttl says.
  CHECK(brief.store("gone.example", kDnsTypeMx, status_entry(DnsStatus::cancelled), 3600, kT0) ==
        Duration{0});
  CHECK_FALSE(brief.find("gone.example", kDnsTypeMx, kT0));
}

TEST_CASE("dns cache does not let a failure overwrite a cached answer", "[dns_cache]") {
  DnsCache cache;
  (void)cache.store("example.org", kDnsTypeMx, mx_entry("mx.example.org"), 300, kT0);
  (void)cache.store("example.org", kDnsTypeMx, status_entry(DnsStatus::servfail), 300, kT0 + 1s);
  auto hit = cache.find("example.org", kDnsTypeMx, kT0 + 2s);
  REQUIRE(hit);
  CHECK(hit->status == DnsStatus::ok);
}

TEST_CASE("dns cache replaces an entry with a newer answer and its new expiry", "[dns_cache]") {
  DnsCache cache;
  (void)cache.store("example.org", kDnsTypeMx, mx_entry("old.example.org"), 10, kT0);
  (void)cache.store("example.org", kDnsTypeMx, mx_entry("new.example.org"), 100, kT0 + 5s);
  CHECK(cache.size() == 1);
  auto hit = cache.find("example.org", kDnsTypeMx, kT0 + 50s);
  REQUIRE(hit);
  CHECK(hit->mx[0].exchange == "new.example.org");
}

TEST_CASE("dns cache evicts the least recently used entry when full", "[dns_cache]") {
  DnsCachePolicy p;
  p.max_entries = 2;
  DnsCache cache(p);
  (void)cache.store("a.example", kDnsTypeMx, mx_entry("a"), 300, kT0);
  (void)cache.store("b.example", kDnsTypeMx, mx_entry("b"), 300, kT0);
  REQUIRE(cache.find("a.example", kDnsTypeMx, kT0));  // a is now the most recently used
  (void)cache.store("c.example", kDnsTypeMx, mx_entry("c"), 300, kT0);
  CHECK(cache.size() == 2);
  CHECK(cache.find("a.example", kDnsTypeMx, kT0));
  CHECK_FALSE(cache.find("b.example", kDnsTypeMx, kT0));
  CHECK(cache.find("c.example", kDnsTypeMx, kT0));
  CHECK(cache.stats().evictions == 1);
}

TEST_CASE("dns cache with max_entries 0 or enabled false stores nothing", "[dns_cache]") {
  DnsCachePolicy p;
  p.max_entries = 0;
  DnsCache cache(p);
  CHECK(cache.store("a.example", kDnsTypeMx, mx_entry("a"), 300, kT0) == Duration{0});
  CHECK_FALSE(cache.find("a.example", kDnsTypeMx, kT0));

  DnsCachePolicy off;
  off.enabled = false;
  DnsCache disabled(off);
  CHECK(disabled.store("a.example", kDnsTypeMx, mx_entry("a"), 300, kT0) == Duration{0});
  CHECK_FALSE(disabled.find("a.example", kDnsTypeMx, kT0));
}

TEST_CASE("dns cache counts hits, misses and stores", "[dns_cache]") {
  DnsCache cache;
  CHECK_FALSE(cache.find("a.example", kDnsTypeMx, kT0));
  (void)cache.store("a.example", kDnsTypeMx, mx_entry("a"), 300, kT0);
  CHECK(cache.find("a.example", kDnsTypeMx, kT0));
  CHECK(cache.find("a.example", kDnsTypeMx, kT0));
  auto s = cache.stats();
  CHECK(s.hits == 2);
  CHECK(s.misses == 1);
  CHECK(s.stores == 1);
  CHECK(s.entries == 1);
  cache.clear();
  CHECK(cache.stats().entries == 0);
}
