// MTA-STS policy and TXT record parsing, MX pattern matching (RFC 8461 §3.1, §3.2, §4.1).
// The bad cases follow the ones postfix-mta-sts-resolver's reference data lists.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "mailq/mta_sts.h"

using namespace mailq;
using sts::Mode;

TEST_CASE("MTA-STS: a policy body is parsed as RFC 8461 writes it", "[mta_sts]") {
  auto p = sts::parse_policy(
      "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.Example.NET.\r\n"
      "mx: backupmx.example.com\r\nmax_age: 604800\r\n");
  REQUIRE(p);
  CHECK(p->mode == Mode::enforce);
  CHECK(p->mx ==
        std::vector<std::string>{"mail.example.com", "*.example.net", "backupmx.example.com"});
  CHECK(p->max_age == std::chrono::seconds(604800));
  // LF line ends, white space after the colon and at the end, an unknown key, a last line
  // without its line end.
  p = sts::parse_policy(
      "version:STSv1\nmode:   testing  \nfoo: bar\nmx: mx.example.org\nmax_age: 86400");
  REQUIRE(p);
  CHECK(p->mode == Mode::testing);
  CHECK(p->max_age == std::chrono::seconds(86400));
  // mode none needs no mx; max_age above a year is capped.
  p = sts::parse_policy("version: STSv1\nmode: none\nmax_age: 31557601\n");
  REQUIRE(p);
  CHECK(p->mode == Mode::none);
  CHECK(p->max_age == std::chrono::seconds(sts::kMaxAgeLimit));
}

TEST_CASE("MTA-STS: malformed policies are refused with the reason", "[mta_sts]") {
  auto refused = [](const std::string& body, const std::string& words) {
    auto p = sts::parse_policy(body);
    REQUIRE_FALSE(p);
    INFO(p.error().message);
    CHECK(p.error().code == make_error_code(errc::invalid_parameter));
    CHECK(p.error().message.find(words) != std::string::npos);
  };
  refused("<html><body>Not found</body></html>\n", "not \"key: value\"");
  refused("version: STSv1\nmax_age: 86400\nmx: mx.example.com\n", "no mode");
  refused("version: STSv1\nmode: enforce\nmax_age: 86400\n", "no mx");
  refused("version: STSv1\nmode: enforce\nmx: mx.example.com\n", "no max_age");
  refused("mode: enforce\nmx: mx.example.com\nmax_age: 86400\n", "no version");
  refused("version: STSv2\nmode: enforce\nmx: mx.example.com\nmax_age: 86400\n", "not STSv1");
  refused("version: STSv1\nmode: strict\nmx: mx.example.com\nmax_age: 86400\n", "mode \"strict\"");
  refused("version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: xxx\n", "max_age \"xxx\"");
  refused("version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: 12345678901\n",
          "1 to 10 digits");
  refused("version: STSv1\nmode: enforce\nmx: mx example.com\nmax_age: 86400\n",
          "mx \"mx example.com\"");
  refused("version: STSv1\nmode: enforce\nmx: *.*.example.com\nmax_age: 86400\n",
          "is not a host name");
  refused(std::string(sts::kMaxPolicySize + 1, 'a'), "larger than 64 KiB");
}

TEST_CASE("MTA-STS: the _mta-sts TXT record and its id", "[mta_sts]") {
  auto id = sts::policy_id({"v=STSv1; id=20160831085700Z;"});
  REQUIRE(id);
  CHECK(*id == "20160831085700Z");
  CHECK(*sts::policy_id({"v=spf1 -all", "v=STSv1;id=abc", "something else"}) == "abc");
  // None, another version, or two STSv1 records: no policy.
  CHECK(sts::policy_id({}).error().code == make_error_code(errc::not_found));
  CHECK(sts::policy_id({"v=STSv12; id=abc;"}).error().code == make_error_code(errc::not_found));
  CHECK(sts::policy_id({"v=STSv1; id=a;", "v=STSv1; id=b;"}).error().code ==
        make_error_code(errc::not_found));
  // An STSv1 record without a good id, or with v not first: invalid.
  CHECK(sts::policy_id({"v=STSv1;"}).error().code == make_error_code(errc::invalid_parameter));
  CHECK(sts::policy_id({"v=STSv1; id=has-dash;"}).error().code ==
        make_error_code(errc::invalid_parameter));
  CHECK(sts::policy_id({"v=STSv1; id=" + std::string(33, 'a')}).error().code ==
        make_error_code(errc::invalid_parameter));
  CHECK_FALSE(sts::parse_txt_record("id=abc; v=STSv1;"));
}

TEST_CASE("MTA-STS: MX patterns match the host or one label in place of the star", "[mta_sts]") {
  CHECK(sts::mx_matches("mail.example.com", "MAIL.example.com."));
  CHECK_FALSE(sts::mx_matches("mail.example.com", "mail2.example.com"));
  CHECK(sts::mx_matches("*.example.com", "mx1.example.com"));
  CHECK_FALSE(sts::mx_matches("*.example.com", "example.com"));
  CHECK_FALSE(sts::mx_matches("*.example.com", "a.b.example.com"));
  CHECK_FALSE(sts::mx_matches("*.example.com", "mx1.badexample.com"));
  sts::Policy p;
  p.mx = {"mx.example.org", "*.example.net"};
  CHECK(sts::mx_allowed(p, "smtp.example.net"));
  CHECK_FALSE(sts::mx_allowed(p, "evil.example"));
}
