// 8-bit to 7-bit conversion for servers without 8BITMIME (src/core/smtp/downgrade.h).
#include <catch2/catch.hpp>

#include <string>

#include "core/smtp/downgrade.h"
#include "core/text.h"

using namespace mailq;
using namespace mailq::detail;

namespace {

// No octet above 127, no line over 76 characters in what was encoded (`limit`), CRLF only.
void check_7bit(const std::string& s, std::size_t limit = 998) {
  CHECK_FALSE(has_8bit(s));
  std::size_t pos = 0;
  while (pos < s.size()) {
    std::size_t eol = s.find("\r\n", pos);
    REQUIRE(eol != std::string::npos);
    INFO(s.substr(pos, eol - pos));
    CHECK(eol - pos <= limit);
    CHECK(s.substr(pos, eol - pos).find('\n') == std::string::npos);
    pos = eol + 2;
  }
}

}  // namespace

TEST_CASE("quoted-printable: 8-bit octets, '=', trailing white space, soft breaks at 76",
          "[downgrade]") {
  CHECK(quoted_printable("caf\xc3\xa9 = ok\r\n") == "caf=C3=A9 =3D ok\r\n");
  CHECK(quoted_printable("trailing space \r\ntab\t\r\n") == "trailing space=20\r\ntab=09\r\n");
  CHECK(quoted_printable("no line end") == "no line end");
  const std::string long_line(200, 'x');
  const std::string qp = quoted_printable(long_line + "\r\n");
  check_7bit(qp, 76);
  std::string joined = qp;
  for (std::size_t at; (at = joined.find("=\r\n")) != std::string::npos;) joined.erase(at, 3);
  CHECK(joined == long_line + "\r\n");
  // An encoded octet is never split by a soft break.
  const std::string qp8 = quoted_printable(std::string(100, '\xe9') + "\r\n");
  check_7bit(qp8, 76);
  CHECK(qp8.find("=\r\nE9") == std::string::npos);
  CHECK(qp8.find("=E\r\n") == std::string::npos);
}

TEST_CASE("base64 lines of 76 characters", "[downgrade]") {
  CHECK(base64_lines("") == "");
  CHECK(base64_lines("M") == "TQ==\r\n");
  CHECK(base64_lines("Ma") == "TWE=\r\n");
  CHECK(base64_lines("Man") == "TWFu\r\n");
  const std::string b = base64_lines(std::string(100, '\xff'));
  check_7bit(b, 76);
  CHECK(b.substr(0, 77) == std::string(76, '/') + "\r");
}

TEST_CASE("a message without MIME fields becomes text/plain, charset unknown-8bit, in QP",
          "[downgrade]") {
  auto r = downgrade_to_7bit(
      "From: a@example.org\nSubject: x\n\nGr\xc3\xbc\xc3\x9f"
      "e\n");
  REQUIRE(r);
  CHECK(*r ==
        "From: a@example.org\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=unknown-8bit\r\n"
        "Content-Transfer-Encoding: quoted-printable\r\n\r\nGr=C3=BC=C3=9Fe\r\n");
  // 7-bit already: nothing changes (but the line ends).
  auto same = downgrade_to_7bit("Subject: x\r\n\r\nplain\r\n");
  REQUIRE(same);
  CHECK(*same == "Subject: x\r\n\r\nplain\r\n");
}

TEST_CASE("a multipart message is converted part by part", "[downgrade]") {
  const std::string in =
      "From: a@example.org\r\nMIME-Version: 1.0\r\n"
      "Content-Type: multipart/mixed;\r\n boundary=\"=_b1\"\r\n"
      "Content-Transfer-Encoding: 8bit\r\n\r\n"
      "pr\xc3\xa9"
      "amble\r\n"
      "--=_b1\r\n"
      "Content-Type: text/plain; charset=utf-8\r\n"
      "Content-Transfer-Encoding: 8bit\r\n\r\n"
      "h\xc3\xa9llo\r\n"
      "--=_b1\r\n"
      "Content-Type: application/octet-stream\r\n\r\n"
      "\xff\xfe\x01\r\n"
      "--=_b1\r\n"
      "Content-Type: message/rfc822\r\n\r\n"
      "Subject: inner\r\n\r\nin\xc3\xa9r\r\n"
      "--=_b1\r\n"
      "Content-Type: text/plain\r\n\r\nseven bit\r\n"
      "--=_b1--\r\n"
      "epilogu\xc3\xa9\r\n";
  auto r = downgrade_to_7bit(in);
  REQUIRE(r);
  check_7bit(*r);
  CHECK(*r ==
        "From: a@example.org\r\nMIME-Version: 1.0\r\n"
        "Content-Type: multipart/mixed;\r\n boundary=\"=_b1\"\r\n"
        "Content-Transfer-Encoding: 7bit\r\n\r\n"
        "pr??amble\r\n"
        "--=_b1\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        "h=C3=A9llo\r\n"
        "--=_b1\r\n"
        "Content-Type: application/octet-stream\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n"
        "//4B\r\n\r\n"  // the CRLF before a delimiter is the delimiter's (RFC 2046 5.1.1)
        "--=_b1\r\n"
        "Content-Type: message/rfc822\r\n\r\n"
        "Subject: inner\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=unknown-8bit\r\n"
        "Content-Transfer-Encoding: quoted-printable\r\n\r\nin=C3=A9r\r\n"
        "--=_b1\r\n"
        "Content-Type: text/plain\r\n\r\nseven bit\r\n"
        "--=_b1--\r\n"
        "epilogu??\r\n");
}

TEST_CASE("a message without its empty line: the first line that is no field starts the body",
          "[downgrade]") {
  auto r = downgrade_to_7bit("caf\xc3\xa9\n");
  REQUIRE(r);
  CHECK(*r ==
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=unknown-8bit\r\n"
        "Content-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9\r\n");
  r = downgrade_to_7bit("Subject: s\r\n  folded\r\nno field \xc3\xa9\r\n");
  REQUIRE(r);
  CHECK(*r ==
        "Subject: s\r\n  folded\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=unknown-8bit\r\n"
        "Content-Transfer-Encoding: quoted-printable\r\n\r\nno field =C3=A9\r\n");
}

TEST_CASE("the boundary is found after a parameter without a value", "[downgrade]") {
  auto r = downgrade_to_7bit(
      "Content-Type: multipart/mixed; odd; boundary=zz\r\n\r\n--zz\r\n\r\n\xe9\r\n--zz--\r\n");
  REQUIRE(r);
  CHECK(*r ==
        "Content-Type: multipart/mixed; odd; boundary=zz\r\n\r\n--zz\r\n"
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n=E9\r\n--zz--\r\n");
}

TEST_CASE("what cannot be converted is said", "[downgrade]") {
  auto header = downgrade_to_7bit(
      "Subject: Gr\xc3\xbc\xc3\x9f"
      "e\r\n\r\nbody\r\n");
  REQUIRE_FALSE(header);
  CHECK(header.error().message == "a header field holds 8-bit octets");
  auto global =
      downgrade_to_7bit("Content-Type: message/global\r\n\r\nSubject: \xc3\xa9\r\n\r\nx\r\n");
  REQUIRE_FALSE(global);
  CHECK(global.error().message ==
        "a message/global entity holds 8-bit octets (it cannot be re-encoded)");
  auto lying = downgrade_to_7bit(
      "Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n\xff\r\n");
  REQUIRE_FALSE(lying);
  CHECK(lying.error().message == "a base64 body holds 8-bit octets (it is not what it says)");
  auto no_boundary =
      downgrade_to_7bit("Content-Type: multipart/mixed; boundary=zz\r\n\r\n\xff no delimiter\r\n");
  REQUIRE_FALSE(no_boundary);
  std::string deep;
  for (int i = 0; i < 30; ++i) deep += "Content-Type: message/rfc822\r\n\r\n";
  deep += "\r\n\xff\r\n";
  CHECK_FALSE(downgrade_to_7bit(deep));
}
