// Reading TTLs from raw DNS responses: answers, CNAME chains, RFC 2308 negative TTLs and
// malformed input.
#include <catch2/catch.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "core/dns_wire.h"

using mailq::detail::kDnsTypeA;
using mailq::detail::kDnsTypeCname;
using mailq::detail::kDnsTypeMx;
using mailq::detail::kDnsTypeSoa;
using mailq::detail::scan_dns_ttls;

namespace {

// Builds DNS responses byte by byte, as a server would put them on the wire.
struct Msg {
  std::vector<unsigned char> b;

  void u8(unsigned v) { b.push_back(static_cast<unsigned char>(v)); }
  void u16(unsigned v) {
    u8(v >> 8);
    u8(v & 0xff);
  }
  void u32(std::uint32_t v) {
    u16(v >> 16);
    u16(v & 0xffff);
  }
  void name(const std::string& n) {
    std::size_t start = 0;
    while (start < n.size()) {
      auto dot = n.find('.', start);
      if (dot == std::string::npos) dot = n.size();
      u8(static_cast<unsigned>(dot - start));
      for (std::size_t i = start; i < dot; ++i) u8(static_cast<unsigned char>(n[i]));
      start = dot + 1;
    }
    u8(0);
  }
  void header(unsigned rcode, unsigned an, unsigned ns, unsigned flags = 0x8180) {
    u16(0x1234);
    u16(flags | rcode);
    u16(1);
    u16(an);
    u16(ns);
    u16(0);
  }
  void question(const std::string& n, unsigned type) {
    name(n);
    u16(type);
    u16(1);
  }
  // RR with its owner name written out.
  void rr_named(const std::string& owner, unsigned type, std::uint32_t ttl,
                const std::vector<unsigned char>& rdata) {
    name(owner);
    u16(type);
    u16(1);
    u32(ttl);
    u16(static_cast<unsigned>(rdata.size()));
    b.insert(b.end(), rdata.begin(), rdata.end());
  }
  // RR whose owner is a compression pointer to the question name (offset 12).
  void rr_ptr_owner(unsigned type, std::uint32_t ttl, const std::vector<unsigned char>& rdata) {
    u16(0xC00C);
    u16(type);
    u16(1);
    u32(ttl);
    u16(static_cast<unsigned>(rdata.size()));
    b.insert(b.end(), rdata.begin(), rdata.end());
  }
};

std::vector<unsigned char> mx_rdata(unsigned pref, const std::string& host) {
  Msg m;
  m.u16(pref);
  m.name(host);
  return m.b;
}

std::vector<unsigned char> soa_rdata(std::uint32_t minimum) {
  Msg m;
  m.u16(0xC00C);  // MNAME compressed
  m.name("hostmaster.example");
  for (std::uint32_t v : {1u, 3600u, 600u, 86400u}) m.u32(v);
  m.u32(minimum);
  return m.b;
}

}  // namespace

TEST_CASE("dns wire reads the smallest MX TTL of an answer", "[dns_wire]") {
  Msg m;
  m.header(0, 2, 0);
  m.question("example.org", kDnsTypeMx);
  m.rr_ptr_owner(kDnsTypeMx, 3600, mx_rdata(10, "mx1.example.org"));
  m.rr_ptr_owner(kDnsTypeMx, 600, mx_rdata(20, "mx2.example.org"));
  auto t = scan_dns_ttls(m.b.data(), m.b.size(), kDnsTypeMx);
  REQUIRE(t);
  CHECK(t->rcode == 0);
  CHECK(t->answers == 2);
  CHECK_FALSE(t->truncated);
  REQUIRE(t->answer_ttl);
  CHECK(*t->answer_ttl == 600);
  CHECK_FALSE(t->negative_ttl);
}

TEST_CASE("dns wire bounds an answer TTL by the CNAMEs that lead to it", "[dns_wire]") {
  Msg m;
  m.header(0, 2, 0);
  m.question("alias.example.org", kDnsTypeA);
  Msg target;
  target.name("host.example.org");
  m.rr_ptr_owner(kDnsTypeCname, 60, target.b);
  m.rr_ptr_owner(kDnsTypeA, 3600, {192, 0, 2, 1});
  auto t = scan_dns_ttls(m.b.data(), m.b.size(), kDnsTypeA);
  REQUIRE(t);
  REQUIRE(t->answer_ttl);
  CHECK(*t->answer_ttl == 60);
}

TEST_CASE("dns wire ignores answer records of other types", "[dns_wire]") {
  Msg m;
  m.header(0, 2, 0);
  m.question("example.org", kDnsTypeMx);
  m.rr_ptr_owner(46 /* RRSIG */, 5, {1, 2, 3});
  m.rr_ptr_owner(kDnsTypeMx, 900, mx_rdata(10, "mx.example.org"));
  auto t = scan_dns_ttls(m.b.data(), m.b.size(), kDnsTypeMx);
  REQUIRE(t);
  REQUIRE(t->answer_ttl);
  CHECK(*t->answer_ttl == 900);
}

TEST_CASE("dns wire takes the negative TTL as min(SOA TTL, SOA MINIMUM)", "[dns_wire]") {
  SECTION("MINIMUM smaller") {
    Msg m;
    m.header(3, 0, 1);
    m.question("nope.example", kDnsTypeMx);
    m.rr_ptr_owner(kDnsTypeSoa, 3600, soa_rdata(300));
    auto t = scan_dns_ttls(m.b.data(), m.b.size(), kDnsTypeMx);
    REQUIRE(t);
    CHECK(t->rcode == 3);
    CHECK_FALSE(t->answer_ttl);
    REQUIRE(t->negative_ttl);
    CHECK(*t->negative_ttl == 300);
  }
  SECTION("SOA TTL smaller") {
    Msg m;
    m.header(0, 0, 1);
    m.question("nodata.example", kDnsTypeMx);
    m.rr_ptr_owner(kDnsTypeSoa, 45, soa_rdata(300));
    auto t = scan_dns_ttls(m.b.data(), m.b.size(), kDnsTypeMx);
    REQUIRE(t);
    REQUIRE(t->negative_ttl);
    CHECK(*t->negative_ttl == 45);
  }
}

TEST_CASE("dns wire treats a TTL with the top bit set as zero", "[dns_wire]") {
  Msg m;
  m.header(0, 1, 0);
  m.question("example.org", kDnsTypeA);
  m.rr_ptr_owner(kDnsTypeA, 0x80000000u, {192, 0, 2, 1});
  auto t = scan_dns_ttls(m.b.data(), m.b.size(), kDnsTypeA);
  REQUIRE(t);
  REQUIRE(t->answer_ttl);
  CHECK(*t->answer_ttl == 0);
}

TEST_CASE("dns wire reports the TC bit", "[dns_wire]") {
  Msg m;
  m.header(0, 0, 0, 0x8380);
  m.question("example.org", kDnsTypeMx);
  auto t = scan_dns_ttls(m.b.data(), m.b.size(), kDnsTypeMx);
  REQUIRE(t);
  CHECK(t->truncated);
}

TEST_CASE("dns wire rejects malformed messages", "[dns_wire]") {
  Msg good;
  good.header(0, 1, 0);
  good.question("example.org", kDnsTypeMx);
  good.rr_ptr_owner(kDnsTypeMx, 300, mx_rdata(10, "mx.example.org"));
  REQUIRE(scan_dns_ttls(good.b.data(), good.b.size(), kDnsTypeMx));

  SECTION("every truncation of a valid message") {
    for (std::size_t n = 0; n < good.b.size(); ++n) {
      INFO("length " << n);
      CHECK_FALSE(scan_dns_ttls(good.b.data(), n, kDnsTypeMx));
    }
  }
  SECTION("null message") {
    CHECK_FALSE(scan_dns_ttls(nullptr, 0, kDnsTypeMx));
  }
  SECTION("counts promising more records than present") {
    Msg m;
    m.header(0, 2, 0);
    m.question("example.org", kDnsTypeMx);
    m.rr_ptr_owner(kDnsTypeMx, 300, mx_rdata(10, "mx.example.org"));
    CHECK_FALSE(scan_dns_ttls(m.b.data(), m.b.size(), kDnsTypeMx));
  }
  SECTION("reserved label type") {
    Msg m;
    m.header(0, 0, 0);
    m.u8(0x40);
    m.u8(0);
    m.u16(kDnsTypeMx);
    m.u16(1);
    CHECK_FALSE(scan_dns_ttls(m.b.data(), m.b.size(), kDnsTypeMx));
  }
  SECTION("SOA RDATA too short for its fixed fields") {
    Msg m;
    m.header(3, 0, 1);
    m.question("nope.example", kDnsTypeMx);
    m.rr_ptr_owner(kDnsTypeSoa, 60, {0, 0, 0, 1});
    CHECK_FALSE(scan_dns_ttls(m.b.data(), m.b.size(), kDnsTypeMx));
  }
}

TEST_CASE("dns wire names query types for logs", "[dns_wire]") {
  CHECK(mailq::detail::dns_type_name(kDnsTypeMx) == "MX");
  CHECK(mailq::detail::dns_type_name(28) == "AAAA");
  CHECK(mailq::detail::dns_type_name(99) == "TYPE99");
}

TEST_CASE("dns wire finds where a CNAME chain the server did not follow ends", "[dns_wire]") {
  auto name_of = [](const std::string& n) {
    Msg m;
    m.name(n);
    return m.b;
  };
  SECTION("one link, nothing of the type: its target") {
    Msg m;
    m.header(0, 1, 0);
    m.question("Alias.Example.ORG", kDnsTypeMx);
    m.rr_ptr_owner(kDnsTypeCname, 300, name_of("MX-Host.other.test"));
    auto t = scan_dns_ttls(m.b.data(), m.b.size(), kDnsTypeMx);
    REQUIRE(t);
    CHECK(t->cname_target == "mx-host.other.test");
  }
  SECTION("two links: the last target") {
    Msg m;
    m.header(0, 2, 0);
    m.question("a.test", kDnsTypeA);
    m.rr_ptr_owner(kDnsTypeCname, 300, name_of("b.test"));
    m.rr_named("b.test", kDnsTypeCname, 300, name_of("c.test"));
    auto t = scan_dns_ttls(m.b.data(), m.b.size(), kDnsTypeA);
    REQUIRE(t);
    CHECK(t->cname_target == "c.test");
  }
  SECTION("followed by the server: nothing to chase") {
    Msg m;
    m.header(0, 2, 0);
    m.question("a.test", kDnsTypeA);
    m.rr_ptr_owner(kDnsTypeCname, 300, name_of("b.test"));
    m.rr_named("b.test", kDnsTypeA, 300, {192, 0, 2, 1});
    auto t = scan_dns_ttls(m.b.data(), m.b.size(), kDnsTypeA);
    REQUIRE(t);
    CHECK(t->cname_target.empty());
  }
  SECTION("a loop: nothing to chase") {
    Msg m;
    m.header(0, 2, 0);
    m.question("a.test", kDnsTypeA);
    m.rr_ptr_owner(kDnsTypeCname, 300, name_of("b.test"));
    m.rr_named("b.test", kDnsTypeCname, 300, name_of("a.test"));
    auto t = scan_dns_ttls(m.b.data(), m.b.size(), kDnsTypeA);
    REQUIRE(t);
    CHECK(t->cname_target.empty());
  }
  SECTION("a target that is no host name (a control octet) is not followed") {
    Msg m;
    m.header(0, 1, 0);
    m.question("a.test", kDnsTypeA);
    m.rr_ptr_owner(kDnsTypeCname, 300, name_of(std::string("ali\x01s.test")));
    auto t = scan_dns_ttls(m.b.data(), m.b.size(), kDnsTypeA);
    REQUIRE(t);
    CHECK(t->cname_target.empty());
  }
  SECTION("a CNAME whose target runs off the message is malformed") {
    Msg m;
    m.header(0, 1, 0);
    m.question("a.test", kDnsTypeA);
    m.rr_ptr_owner(kDnsTypeCname, 300, {5, 'b', 'c'});
    CHECK_FALSE(scan_dns_ttls(m.b.data(), m.b.size(), kDnsTypeA));
  }
}

TEST_CASE("dns wire reads the AD bit and the TLSA records of an answer", "[dns_wire][dane]") {
  constexpr unsigned kTlsa = mailq::detail::kDnsTypeTlsa;
  Msg m;
  m.header(0, 2, 0, 0x81a0);  // QR RD RA AD
  m.question("_25._tcp.mx.example.org", kTlsa);
  std::vector<unsigned char> rdata = {3, 1, 1};
  for (int i = 0; i < 32; ++i) rdata.push_back(static_cast<unsigned char>(i));
  m.rr_ptr_owner(kTlsa, 300, rdata);
  m.rr_ptr_owner(kTlsa, 200, {2, 0, 0, 0xde, 0xad});
  auto t = scan_dns_ttls(m.b.data(), m.b.size(), kTlsa);
  REQUIRE(t);
  CHECK(t->authenticated);
  REQUIRE(t->tlsa.size() == 2);
  CHECK(t->tlsa[0].usage == 3);
  CHECK(t->tlsa[0].selector == 1);
  CHECK(t->tlsa[0].matching == 1);
  CHECK(t->tlsa[0].data.size() == 32);
  CHECK(t->tlsa[1].data == "\xde\xad");
  CHECK(t->answer_ttl == 200u);

  Msg plain;
  plain.header(0, 1, 0);  // no AD
  plain.question("_25._tcp.mx.example.org", kTlsa);
  plain.rr_ptr_owner(kTlsa, 300, rdata);
  t = scan_dns_ttls(plain.b.data(), plain.b.size(), kTlsa);
  REQUIRE(t);
  CHECK_FALSE(t->authenticated);
  CHECK(t->tlsa.size() == 1);

  // A record of another name, or of another class, answers another question.
  Msg other;
  other.header(0, 3, 0, 0x81a0);
  other.question("_25._tcp.mx.example.org", kTlsa);
  other.rr_named("_25._tcp.evil.example.org", kTlsa, 300, {3, 1, 1, 0xaa});
  other.rr_named("_25._tcp.mx.example.org", kTlsa, 300, {3, 1, 1, 0xbb});
  other.b.insert(other.b.end(), {0xC0, 0x0C, 0, 52, 0, 3, 0, 0, 1, 44, 0, 4, 3, 1, 1, 0xcc});
  t = scan_dns_ttls(other.b.data(), other.b.size(), kTlsa);
  REQUIRE(t);
  REQUIRE(t->tlsa.size() == 1);
  CHECK(t->tlsa[0].data == "\xbb");

  // Through a CNAME: the chain's end is the question's name too.
  Msg chain;
  chain.header(0, 2, 0, 0x81a0);
  chain.question("_25._tcp.mx.example.org", kTlsa);
  Msg target;
  target.name("_25._tcp.real.example.net");
  chain.rr_ptr_owner(kDnsTypeCname, 300, target.b);
  chain.rr_named("_25._tcp.real.example.net", kTlsa, 300, {3, 1, 1, 0xdd});
  t = scan_dns_ttls(chain.b.data(), chain.b.size(), kTlsa);
  REQUIRE(t);
  REQUIRE(t->tlsa.size() == 1);
  CHECK(t->tlsa[0].data == "\xdd");

  Msg short_rdata;
  short_rdata.header(0, 1, 0, 0x81a0);
  short_rdata.question("_25._tcp.mx.example.org", kTlsa);
  short_rdata.rr_ptr_owner(kTlsa, 300, {3, 1});
  CHECK_FALSE(scan_dns_ttls(short_rdata.b.data(), short_rdata.b.size(), kTlsa));
}
