// DANE's TLSA records (mailq/dane.h): which ones an SMTP client can use, how they are named,
// parsed and shown.
#include <catch2/catch.hpp>

#include <string>

#include "mailq/dane.h"

using namespace mailq;

TEST_CASE(
    "dane: only DANE-TA and DANE-EE records with known selectors, matching types and "
    "digest lengths are usable",
    "[dane]") {
  const std::string d32(32, 'a'), d64(64, 'b');
  CHECK(dane::usable({3, 1, 1, d32}));
  CHECK(dane::usable({3, 0, 2, d64}));
  CHECK(dane::usable({2, 0, 0, "a whole certificate"}));
  CHECK(dane::usable({2, 1, 1, d32}));
  CHECK_FALSE(dane::usable({0, 0, 1, d32}));  // PKIX-TA: not for SMTP (RFC 7672 3.1.3)
  CHECK_FALSE(dane::usable({1, 1, 1, d32}));  // PKIX-EE
  CHECK_FALSE(dane::usable({4, 1, 1, d32}));
  CHECK_FALSE(dane::usable({3, 2, 1, d32}));  // unknown selector
  CHECK_FALSE(dane::usable({3, 1, 3, d32}));  // unknown matching type
  CHECK_FALSE(dane::usable({3, 1, 1, d64}));  // a SHA-256 digest is 32 octets
  CHECK_FALSE(dane::usable({3, 1, 2, d32}));
  CHECK_FALSE(dane::usable({3, 1, 0, ""}));
  const auto kept = dane::usable_records({{0, 0, 1, d32}, {3, 1, 1, d32}, {2, 0, 2, d64}});
  REQUIRE(kept.size() == 2);
  CHECK(kept[0].usage == 3);
  CHECK(kept[1].usage == 2);
}

TEST_CASE("dane: TLSA names, zone-file records and their log form", "[dane]") {
  CHECK(dane::tlsa_name("mx.example.com", 25) == "_25._tcp.mx.example.com");
  CHECK(dane::tlsa_name("mx.example.com.", 2525) == "_2525._tcp.mx.example.com");

  dane::TlsaRecord r;
  std::string error;
  REQUIRE(dane::parse_record(
      "3 1 1 0102 0304 05060708090a0b0c0d0e0f10 1112131415161718191a1b1c1d1e1f20", r, &error));
  CHECK(r.usage == 3);
  CHECK(r.selector == 1);
  CHECK(r.matching == 1);
  REQUIRE(r.data.size() == 32);
  CHECK(r.data[0] == 1);
  CHECK(r.data[31] == 0x20);
  CHECK(dane::usable(r));
  CHECK(dane::to_string(r) == "3 1 1 01020304…1d1e1f20");
  REQUIRE(dane::parse_record("2 0 0 ABcd", r, &error));
  CHECK(dane::to_string(r) == "2 0 0 abcd");

  for (const char* bad : {"", "3 1", "3 1 1", "256 1 1 00", "3 1 1 0g", "3 1 1 abc", "x 1 1 00"}) {
    INFO(bad);
    error.clear();
    CHECK_FALSE(dane::parse_record(bad, r, &error));
    CHECK(error.find("TLSA record") == 0);
  }
}
