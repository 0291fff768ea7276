#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "mailq/address.h"

using namespace mailq;
using Texts = std::vector<std::string>;

namespace {

Texts texts(const Result<std::vector<Address>>& r) {
  Texts out;
  if (r)
    for (const Address& a : *r) out.push_back(a.to_string());
  return out;
}

}  // namespace

TEST_CASE("split_address_list: display names, angle addresses, comments and folding",
          "[address][address_list]") {
  CHECK(split_address_list("bob@example.com") == Texts{"bob@example.com"});
  CHECK(split_address_list("  bob@example.com ,carol@example.net  ") ==
        Texts{"bob@example.com", "carol@example.net"});
  CHECK(split_address_list("Bob Example <bob@example.com>") == Texts{"bob@example.com"});
  // A quoted display name may hold commas, angle brackets and '@'.
  CHECK(split_address_list(R"("Bob, B. <x@y>" <bob@example.com>, "a@b" <carol@example.net>)") ==
        Texts{"bob@example.com", "carol@example.net"});
  // Comments (nested, with escapes) are dropped wherever they stand.
  CHECK(split_address_list("carol@example.net (Carol (the (real) one) \\) x)") ==
        Texts{"carol@example.net"});
  CHECK(split_address_list("(lead) dave@example.com, Eve (x, y) <eve@Example.COM>") ==
        Texts{"dave@example.com", "eve@Example.COM"});
  // An unfolded value keeps the whitespace of the fold: a tab is whitespace.
  CHECK(split_address_list(" \"Bob, B.\" <bob@example.com>,  carol@example.net (Carol)") ==
        Texts{"bob@example.com", "carol@example.net"});
  CHECK(split_address_list("Bob\t<bob@example.com>,\tsecret@example.com") ==
        Texts{"bob@example.com", "secret@example.com"});
  // Empty members and an empty value name nobody.
  CHECK(split_address_list("").empty());
  CHECK(split_address_list(" , ,, ").empty());
  CHECK(split_address_list("<>").empty());
}

TEST_CASE("split_address_list: groups give their members", "[address][address_list]") {
  CHECK(split_address_list("undisclosed-recipients:;").empty());
  CHECK(split_address_list("team: dave@example.com, Eve <eve@Example.COM>;, "
                           "undisclosed-recipients:;") ==
        Texts{"dave@example.com", "eve@Example.COM"});
  CHECK(split_address_list("a@x.test, list: y@[127.0.0.1];, z@x.test") ==
        Texts{"a@x.test", "y@[127.0.0.1]", "z@x.test"});
  // A quoted group name may hold a colon of its own.
  CHECK(split_address_list("\"a: b\": m@x.test;") == Texts{"m@x.test"});
}

TEST_CASE("split_address_list: quoted local parts, domain literals and source routes",
          "[address][address_list]") {
  CHECK(split_address_list(R"("john doe"@example.com)") == Texts{R"("john doe"@example.com)"});
  CHECK(split_address_list(R"(John <"j, \"d\" >"@example.com>)") ==
        Texts{R"("j, \"d\" >"@example.com)"});
  // The colons of an IPv6 literal are no group.
  CHECK(split_address_list("x@[IPv6:::1], list: y@[127.0.0.1];") ==
        Texts{"x@[IPv6:::1]", "y@[127.0.0.1]"});
  CHECK(split_address_list("Zed <z@[IPv6:2001:db8::1]>") == Texts{"z@[IPv6:2001:db8::1]"});
  // Obsolete source routes go; the mailbox stays.
  CHECK(split_address_list("Zed <@relay.example,@other.example:z@example.com>") ==
        Texts{"z@example.com"});
  CHECK(split_address_list("<@relay.example:>").empty());
}

TEST_CASE("split_address_list keeps what is no address, for Address::parse to refuse",
          "[address][address_list]") {
  CHECK(split_address_list("not an address") == Texts{"not an address"});
  // Text after an angle address stays with it, so that it fails loudly.
  CHECK(split_address_list("Bob <bob@example.com> trailing") == Texts{"bob@example.comtrailing"});
  // Unterminated constructs end at the end of the value.
  CHECK(split_address_list("Bob <bob@example.com") == Texts{"bob@example.com"});
  CHECK(split_address_list("\"open quote bob@example.com") ==
        Texts{"\"open quote bob@example.com"});
  CHECK(split_address_list("x@[127.0.0.1") == Texts{"x@[127.0.0.1"});
  CHECK(split_address_list("bob@example.com (open comment").size() == 1);
}

TEST_CASE("parse_address_list parses every mailbox of the list", "[address][address_list]") {
  auto r = parse_address_list(
      "\"Alice, A.\" <alice@example.org>, carol@example.net (Carol), team: "
      "dave@example.com;, x@[IPv6:::1],\tZed <@relay.example:z@example.com>");
  REQUIRE(r);
  CHECK(texts(r) == Texts{"alice@example.org", "carol@example.net", "dave@example.com",
                          "x@[IPv6:::1]", "z@example.com"});
  auto none = parse_address_list("undisclosed-recipients:;");
  REQUIRE(none);
  CHECK(none->empty());
}

TEST_CASE("parse_address_list refuses a control anywhere in the value, before reading it",
          "[address][address_list]") {
  const std::pair<std::string, std::string> cases[] = {
      {"r@t.test\r\nRCPT TO:<evil@x.test>",
       "address list contains a carriage return (CR) at offset 8"},
      {"r@t.test,\nevil@x.test", "address list contains a line feed (LF) at offset 9"},
      {"r@t.test\x0b<evil@x.test>", "address list contains a control character (0x0B) at offset 8"},
      {"\"Bob\x1b[2J\" <bob@example.com>",
       "address list contains a control character (0x1B) at offset 4"},
      {"Bob (x\x7f) <bob@example.com>", "address list contains a DEL character (0x7F) at offset 6"},
      {std::string("bob@example.com\0evil@x.test", 27),
       "address list contains a NUL byte at offset 15"},
  };
  for (const auto& [value, message] : cases) {
    INFO(message);
    auto r = parse_address_list(value);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == errc::forbidden_character);
    CHECK(r.error().message == message);
  }
}

TEST_CASE("parse_address_list names the first address it refuses and keeps its error code",
          "[address][address_list]") {
  auto missing_at = parse_address_list("bob@example.com, not an address, bad@");
  REQUIRE_FALSE(missing_at);
  CHECK(missing_at.error().code == errc::invalid_address);
  CHECK(missing_at.error().message ==
        "\"not an address\": missing '@' between local part and domain");
  auto empty_domain = parse_address_list("Bad <bad@>");
  REQUIRE_FALSE(empty_domain);
  CHECK(empty_domain.error().message == "\"bad@\": empty domain");
  auto long_local = parse_address_list(std::string(65, 'a') + "@example.com");
  REQUIRE_FALSE(long_local);
  CHECK(long_local.error().code == errc::too_long);
  // A tab is whitespace between list items, but no part of an address.
  auto tab = parse_address_list("bob\t@example.com");
  REQUIRE_FALSE(tab);
  CHECK(tab.error().code == errc::forbidden_character);
  CHECK(tab.error().message == "\"bob\t@example.com\": address contains a tab (0x09) at offset 3");
}
