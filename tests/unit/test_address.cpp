#include <catch2/catch.hpp>

#include <string>

#include "mailq/address.h"

using namespace mailq;
using namespace std::string_literals;

namespace {

// A domain of exactly `n` octets made of labels of at most 63 octets.
std::string domain_of_length(std::size_t n) {
  std::string d;
  while (d.size() < n) {
    if (!d.empty()) d += '.';
    const std::size_t room = n - d.size();
    d.append(std::min<std::size_t>(room, 63), 'a');
  }
  REQUIRE(d.size() == n);
  return d;
}

}  // namespace

TEST_CASE("Address::parse accepts RFC 5321 mailboxes", "[address]") {
  struct Case {
    std::string input;
    std::string local;
    std::string domain;
  };
  const Case cases[] = {
      {"user@example.com", "user", "example.com"},
      {"first.last@example.com", "first.last", "example.com"},
      {"user+tag@sub.example.co.uk", "user+tag", "sub.example.co.uk"},
      {"!#$%&'*+-/=?^_`{|}~@example.com", "!#$%&'*+-/=?^_`{|}~", "example.com"},
      {"\"john doe\"@example.com", "\"john doe\"", "example.com"},
      {"\"a\\\"b\"@example.com", "\"a\\\"b\"", "example.com"},
      {"\"\"@example.com", "\"\"", "example.com"},
      {"\"a@b\"@example.com", "\"a@b\"", "example.com"},
      {"\"a..b.\"@example.com", "\"a..b.\"", "example.com"},
      {"user@[192.0.2.1]", "user", "[192.0.2.1]"},
      {"user@[0.0.0.0]", "user", "[0.0.0.0]"},
      {"user@[255.255.255.255]", "user", "[255.255.255.255]"},
      {"user@[IPv6:2001:db8::1]", "user", "[IPv6:2001:db8::1]"},
      {"user@[ipv6:::1]", "user", "[ipv6:::1]"},
      {"user@[IPv6:2001:db8:0:0:0:0:0:1]", "user", "[IPv6:2001:db8:0:0:0:0:0:1]"},
      {"user@[IPv6:::ffff:192.0.2.1]", "user", "[IPv6:::ffff:192.0.2.1]"},
      {"user@[IPv6:1:2:3:4:5:6:192.0.2.1]", "user", "[IPv6:1:2:3:4:5:6:192.0.2.1]"},
      {"user@[IPv6:2001:db8::]", "user", "[IPv6:2001:db8::]"},
      // "::" for a single zero group (RFC 4291, as inet_ntop may print it).
      {"user@[IPv6:1:2:3:4:5:6:7::]", "user", "[IPv6:1:2:3:4:5:6:7::]"},
      {"postmaster@localhost", "postmaster", "localhost"},
      {"User@Example.COM", "User", "Example.COM"},
      {"a@b-c.d", "a", "b-c.d"},
      {"a@1.2.3.4", "a", "1.2.3.4"},
      {"user@xn--bcher-kva.example", "user", "xn--bcher-kva.example"},
      // SMTPUTF8 (RFC 6531): UTF-8 in the local part and the domain.
      {"\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b\xe5\xad\x90.\xe5\xb9\xbf\xe5\x91\x8a",
       "\xe7\x94\xa8\xe6\x88\xb7", "\xe4\xbe\x8b\xe5\xad\x90.\xe5\xb9\xbf\xe5\x91\x8a"},
      {"j\xc3\xb6rg@b\xc3\xbc"
       "cher.example",
       "j\xc3\xb6rg",
       "b\xc3\xbc"
       "cher.example"},
      {"\"\xc3\xa9t\xc3\xa9 x\"@example.com", "\"\xc3\xa9t\xc3\xa9 x\"", "example.com"},
      {"\xf0\x9f\x98\x80@example.com", "\xf0\x9f\x98\x80", "example.com"},
  };
  for (const auto& c : cases) {
    INFO("input: " << c.input);
    auto r = Address::parse(c.input);
    if (!r) INFO("error: " << r.error().message);
    REQUIRE(r.ok());
    CHECK(r->local_part() == c.local);
    CHECK(r->domain() == c.domain);
    CHECK(r->to_string() == c.input);
  }
}

TEST_CASE("Address::parse rejects malformed mailboxes with a precise message", "[address]") {
  struct Case {
    std::string input;
    std::string message;
  };
  const Case cases[] = {
      {"", "empty address"},
      {"userexample.com", "missing '@' between local part and domain"},
      {"@example.com", "empty local part"},
      {"user@", "empty domain"},
      {".user@example.com", "local part starts with a dot at offset 0"},
      {"user.@example.com", "local part ends with a dot at offset 4"},
      {"user..name@example.com", "local part contains consecutive dots at offset 4"},
      {"us er@example.com",
       "invalid character ' ' (space) in local part at offset 2 (it is allowed only in a quoted "
       "local part)"},
      {"a(b)@example.com",
       "invalid character '(' in local part at offset 1 (it is allowed only in a quoted local "
       "part)"},
      {"user@example.com.", "domain ends with a dot at offset 16"},
      {"user@.example.com", "domain starts with a dot at offset 5"},
      {"user@example..com", "domain contains consecutive dots at offset 12"},
      {"user@-example.com", "domain label starts with a hyphen at offset 5"},
      {"user@example-.com", "domain label ends with a hyphen at offset 12"},
      {"user@exa_mple.com", "invalid character '_' in domain at offset 8"},
      {"user@example.com@x", "invalid character '@' in domain at offset 16"},
      {"user@exa mple.com", "invalid character ' ' (space) in domain at offset 8"},
      {"\"unterminated@example.com", "unterminated quoted string in local part"},
      {"\"a\"b@example.com", "unexpected character 'b' after the quoted local part at offset 3"},
      {"\"a\"", "missing '@' after the quoted local part"},
      {"\"a\\\xc3\xa9\"@example.com", "invalid quoted pair in local part at offset 2"},
      {"user@[192.0.2.256]", "invalid IPv4 address literal at offset 5"},
      {"user@[192.0.2]", "invalid IPv4 address literal at offset 5"},
      {"user@[192.0.2.1.5]", "invalid IPv4 address literal at offset 5"},
      {"user@[1920.0.2.1]", "invalid IPv4 address literal at offset 5"},
      {"user@[]", "invalid IPv4 address literal at offset 5"},
      {"user@[192.0.2.1", "address literal is missing its closing ']'"},
      {"user@[IPv6:2001:db8::1::2]", "invalid IPv6 address literal at offset 5"},
      {"user@[IPv6:12345::1]", "invalid IPv6 address literal at offset 5"},
      {"user@[IPv6:1:2:3:4:5:6:7]", "invalid IPv6 address literal at offset 5"},
      {"user@[IPv6:1:2:3:4:5:6:7:8:9]", "invalid IPv6 address literal at offset 5"},
      {"user@[IPv6:192.0.2.1::]", "invalid IPv6 address literal at offset 5"},
      {"user@[IPv6:2001:db8::g]", "invalid IPv6 address literal at offset 5"},
      {"user@[x-tag:stuff]", "unsupported address literal tag 'x-tag' at offset 5"},
      {"\xff@example.com", "invalid UTF-8 in local part at offset 0"},
      {"user@\xc0\xafxample.com", "invalid UTF-8 in domain at offset 5"},       // overlong '/'
      {"\xed\xa0\x80@example.com", "invalid UTF-8 in local part at offset 0"},  // surrogate
      {"a\xc3@example.com", "invalid UTF-8 in local part at offset 1"},         // truncated
  };
  for (const auto& c : cases) {
    INFO("input: " << c.input);
    auto r = Address::parse(c.input);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == make_error_code(errc::invalid_address));
    CHECK(r.error().message == c.message);
  }
}

TEST_CASE("Address::parse rejects CR, LF, NUL and other controls with their offset",
          "[address][security]") {
  struct Case {
    std::string input;
    std::string message;
  };
  const Case cases[] = {
      {"user\r\n@example.com", "address contains a carriage return (CR) at offset 4"},
      {"\nuser@example.com", "address contains a line feed (LF) at offset 0"},
      {"user@example.com\n", "address contains a line feed (LF) at offset 16"},
      {"user@example.com\r\nRCPT TO:<victim@example.org>",
       "address contains a carriage return (CR) at offset 16"},
      {"us\0er@example.com"s, "address contains a NUL byte at offset 2"},
      {"user@exam\0ple.com"s, "address contains a NUL byte at offset 9"},
      {"user@example.com\0"s, "address contains a NUL byte at offset 16"},
      {"us\ter@example.com", "address contains a tab (0x09) at offset 2"},
      {"user@ex\x1b[0mample.com", "address contains a control character (0x1B) at offset 7"},
      {"user@example.com\x7f", "address contains a DEL character (0x7F) at offset 16"},
      // Inside a quoted local part too: quoting never makes a line break acceptable.
      {"\"a\r\nb\"@example.com", "address contains a carriage return (CR) at offset 2"},
      {"\"a\\\nb\"@example.com", "address contains a line feed (LF) at offset 3"},
  };
  for (const auto& c : cases) {
    INFO("input offset message: " << c.message);
    auto r = Address::parse(c.input);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == make_error_code(errc::forbidden_character));
    CHECK(r.error().message == c.message);
  }
}

TEST_CASE("Address::parse enforces the RFC 5321 length limits", "[address]") {
  SECTION("local part: 64 octets accepted, 65 refused") {
    REQUIRE(Address::parse(std::string(64, 'a') + "@example.com").ok());
    auto r = Address::parse(std::string(65, 'a') + "@example.com");
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == make_error_code(errc::too_long));
    CHECK(r.error().message == "local part is 65 octets, the limit is 64");
    // The quotes count: they are transmitted.
    auto q = Address::parse("\"" + std::string(63, 'a') + "\"@example.com");
    REQUIRE_FALSE(q.ok());
    CHECK(q.error().code == make_error_code(errc::too_long));
  }
  SECTION("domain: more than 255 octets refused as a domain") {
    auto r = Address::parse("a@" + domain_of_length(256));
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == make_error_code(errc::too_long));
    CHECK(r.error().message == "domain is 256 octets, the limit is 255");
  }
  SECTION("a 255-octet domain is within the domain limit but over the path limit") {
    // RFC 5321 §4.5.3.1.3: the path "<a@domain>" may not exceed 256 octets, so no mailbox
    // can actually use a 255-octet domain.
    auto r = Address::parse("a@" + domain_of_length(255));
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == make_error_code(errc::too_long));
    CHECK(r.error().message == "path is 259 octets with its angle brackets, the limit is 256");
  }
  SECTION("path: 256 octets with brackets accepted, 257 refused") {
    REQUIRE(Address::parse("a@" + domain_of_length(252)).ok());
    REQUIRE(Address::parse(std::string(64, 'b') + "@" + domain_of_length(189)).ok());
    auto r = Address::parse(std::string(64, 'b') + "@" + domain_of_length(190));
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == make_error_code(errc::too_long));
    CHECK(r.error().message == "path is 257 octets with its angle brackets, the limit is 256");
  }
  SECTION("domain label: 63 octets accepted, 64 refused") {
    REQUIRE(Address::parse("a@" + std::string(63, 'x') + ".example").ok());
    auto r = Address::parse("a@" + std::string(64, 'x') + ".example");
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == make_error_code(errc::too_long));
    CHECK(r.error().message == "domain label at offset 2 is 64 octets, the limit is 63");
  }
}

TEST_CASE("Address keeps the domain as given and lowercases it for routing", "[address]") {
  auto a = Address::parse("John.Doe@Example.COM");
  REQUIRE(a.ok());
  CHECK(a->local_part() == "John.Doe");
  CHECK(a->domain() == "Example.COM");
  CHECK(a->routing_domain() == "example.com");
  CHECK(a->to_string() == "John.Doe@Example.COM");
  auto b = Address::parse("x@[IPv6:2001:DB8::1]");
  REQUIRE(b.ok());
  CHECK(b->routing_domain() == "[ipv6:2001:db8::1]");
  // Non-ASCII octets are left alone (IDNA is the resolver's business).
  auto c = Address::parse(
      "x@B\xc3\x9c"
      "cher.example");
  REQUIRE(c.ok());
  CHECK(c->routing_domain() ==
        "b\xc3\x9c"
        "cher.example");
}

TEST_CASE("check_envelope_value finds control characters and says where", "[address][security]") {
  CHECK_FALSE(check_envelope_value("mx.example.org"));
  CHECK_FALSE(check_envelope_value(""));
  std::string why;
  CHECK(check_envelope_value("mx.example.org\r\nQUIT", &why) ==
        make_error_code(errc::forbidden_character));
  CHECK(why == "value contains a carriage return (CR) at offset 14");
  CHECK(check_envelope_value("a\0b"s, &why) == make_error_code(errc::forbidden_character));
  CHECK(why == "value contains a NUL byte at offset 1");
  CHECK(check_envelope_value("\x7f", nullptr) == make_error_code(errc::forbidden_character));
}

namespace {

Envelope envelope_with(std::vector<std::string> to) {
  auto e = make_envelope("sender@example.org", to);
  REQUIRE(e.ok());
  return std::move(e.value());
}

std::error_code validate(const Envelope& e, std::string* why) {
  why->clear();
  return e.validate(why);
}

}  // namespace

TEST_CASE("Envelope::validate checks recipients and DSN parameters", "[address][dsn]") {
  std::string why;
  SECTION("no recipients") {
    Envelope e;
    CHECK(validate(e, &why) == make_error_code(errc::no_recipients));
    CHECK(why == "no recipients");
  }
  SECTION("a plain envelope is valid") {
    Envelope e = envelope_with({"a@example.com", "b@example.net"});
    CHECK_FALSE(validate(e, &why));
    CHECK(why.empty());
  }
  SECTION("ENVID: printable ASCII, at most 100 characters") {
    Envelope e = envelope_with({"a@example.com"});
    e.envid = std::string(100, 'x');
    CHECK_FALSE(validate(e, &why));
    e.envid = "QQ314159 with spaces";
    CHECK_FALSE(validate(e, &why));
    e.envid = std::string(101, 'x');
    CHECK(validate(e, &why) == make_error_code(errc::invalid_parameter));
    CHECK(why == "ENVID is 101 characters, the limit is 100");
    e.envid = "abc\r\nRSET";
    CHECK(validate(e, &why) == make_error_code(errc::forbidden_character));
    CHECK(why == "ENVID value contains a carriage return (CR) at offset 3");
    e.envid = "caf\xc3\xa9";
    CHECK(validate(e, &why) == make_error_code(errc::invalid_parameter));
    CHECK(why == "ENVID contains a non-ASCII octet at offset 3");
  }
  SECTION("NOTIFY=NEVER is never combined with other flags") {
    Envelope e = envelope_with({"a@example.com", "b@example.com"});
    e.recipients[1].notify = kNotifyNever;
    CHECK_FALSE(validate(e, &why));
    e.recipients[1].notify = kNotifySuccess | kNotifyFailure | kNotifyDelay;
    CHECK_FALSE(validate(e, &why));
    e.recipients[1].notify = kNotifyNever | kNotifyFailure;
    CHECK(validate(e, &why) == make_error_code(errc::invalid_parameter));
    CHECK(why == "recipient 2: NOTIFY=NEVER cannot be combined with SUCCESS, FAILURE or DELAY");
    e.recipients[1].notify = 0x10;
    CHECK(validate(e, &why) == make_error_code(errc::invalid_parameter));
    CHECK(why == "recipient 2: unknown NOTIFY flag");
  }
  SECTION("ORCPT is addr-type;address") {
    Envelope e = envelope_with({"a@example.com"});
    auto& r = e.recipients[0];
    for (const char* ok :
         {"rfc822;a@example.com", "rfc822;user+2Btag@example.com", "x-local;anything goes here",
          "utf-8;\xe7\x94\xa8\xe6\x88\xb7@example.com"}) {
      r.orcpt = ok;
      INFO(ok);
      CHECK_FALSE(validate(e, &why));
    }
    r.orcpt = "a@example.com";
    CHECK(validate(e, &why) == make_error_code(errc::invalid_parameter));
    CHECK(why == "recipient 1: ORCPT must be \"addr-type;address\" (missing ';')");
    r.orcpt = ";a@example.com";
    CHECK(validate(e, &why) == make_error_code(errc::invalid_parameter));
    CHECK(why ==
          "recipient 1: ORCPT address type must be letters, digits and '-' such as \"rfc822\"");
    r.orcpt = "rfc 822;a@example.com";
    CHECK(validate(e, &why) == make_error_code(errc::invalid_parameter));
    r.orcpt = "rfc822;";
    CHECK(validate(e, &why) == make_error_code(errc::invalid_parameter));
    CHECK(why == "recipient 1: ORCPT has an empty address");
    r.orcpt = "rfc822;a@example.com\r\nDATA";
    CHECK(validate(e, &why) == make_error_code(errc::forbidden_character));
    CHECK(why == "recipient 1: ORCPT value contains a carriage return (CR) at offset 20");
    r.orcpt = "rfc822;\xff@example.com";
    CHECK(validate(e, &why) == make_error_code(errc::invalid_parameter));
    CHECK(why == "recipient 1: ORCPT contains invalid UTF-8 at offset 7");
    r.orcpt = "rfc822;" + std::string(494, 'a');
    CHECK(validate(e, &why) == make_error_code(errc::invalid_parameter));
    CHECK(why == "recipient 1: ORCPT is 501 characters, the limit is 500");
  }
}

TEST_CASE("make_envelope: null reverse path, angle brackets, per-recipient errors", "[address]") {
  SECTION("\"\" and \"<>\" are the null reverse path") {
    for (const char* from : {"", "<>"}) {
      auto e = make_envelope(from, {"a@example.com"});
      REQUIRE(e.ok());
      CHECK_FALSE(e->reverse_path.has_value());
    }
  }
  SECTION("surrounding angle brackets are stripped") {
    auto e = make_envelope("<s@example.org>", {"<a@example.com>", "b@example.com"});
    REQUIRE(e.ok());
    REQUIRE(e->reverse_path.has_value());
    CHECK(e->reverse_path->to_string() == "s@example.org");
    REQUIRE(e->recipients.size() == 2);
    CHECK(e->recipients[0].address.to_string() == "a@example.com");
    CHECK(e->recipients[1].address.to_string() == "b@example.com");
    CHECK(e->recipients[0].notify == kNotifyDefault);
    CHECK(e->recipients[0].orcpt.empty());
  }
  SECTION("errors name the value that is wrong") {
    auto e = make_envelope("s@example.org", {"a@example.com", "b@exa\r\nmple.com"});
    REQUIRE_FALSE(e.ok());
    CHECK(e.error().code == make_error_code(errc::forbidden_character));
    CHECK(e.error().message == "recipient 2: address contains a carriage return (CR) at offset 5");
    auto s = make_envelope("bad sender@example.org", {"a@example.com"});
    REQUIRE_FALSE(s.ok());
    CHECK(s.error().code == make_error_code(errc::invalid_address));
    CHECK(s.error().message.rfind("reverse path: invalid character ' ' (space)", 0) == 0);
    auto n = make_envelope("s@example.org", {"<>"});
    REQUIRE_FALSE(n.ok());
    CHECK(n.error().code == make_error_code(errc::invalid_address));
    CHECK(n.error().message == "recipient 1: empty forward path");
  }
  SECTION("no recipients") {
    auto e = make_envelope("s@example.org", {});
    REQUIRE_FALSE(e.ok());
    CHECK(e.error().code == make_error_code(errc::no_recipients));
  }
}

TEST_CASE("Address::parse on random input: never crashes, accepts only clean round-trips",
          "[address][security]") {
  // A small alphabet rich in the characters the grammar cares about.
  const std::string alphabet = std::string("aZ09.@\"\\[]:-_ +\r\n\x7f\xc3\xa9\xff") + '\0';
  std::uint64_t state = 0x9E3779B97F4A7C15ull;
  auto next = [&] {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
  };
  int accepted = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string s;
    const std::size_t len = next() % 24;
    for (std::size_t k = 0; k < len; ++k) s += alphabet[next() % alphabet.size()];
    auto r = Address::parse(s);
    if (!r) {
      CHECK_FALSE(r.error().message.empty());
      continue;
    }
    ++accepted;
    CHECK(r->to_string() == s);
    for (char c : s) {
      const auto u = static_cast<unsigned char>(c);
      CHECK((u >= 0x20 && u != 0x7f));
    }
  }
  CHECK(accepted > 0);
}
