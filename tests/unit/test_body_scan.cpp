// The body scans that run on every enqueue and every delivery (check_body, has_8bit) take
// memchr / vectorized fast paths: they must agree with the plain octet-by-octet definition.
#include <catch2/catch.hpp>

#include <algorithm>
#include <optional>
#include <random>
#include <string>

#include "core/text.h"

using namespace mailq;
using namespace std::string_literals;

namespace {

// The definition: octet by octet, CR, LF and CRLF each end a line.
std::optional<std::string> reference_check(std::string_view body) {
  std::size_t line = 1, len = 0;
  for (std::size_t i = 0; i < body.size(); ++i) {
    const char c = body[i];
    if (c == '\0') return "NUL line " + std::to_string(line);
    if (c == '\n' || c == '\r') {
      if (c == '\r' && i + 1 < body.size() && body[i + 1] == '\n') ++i;
      ++line;
      len = 0;
      continue;
    }
    if (++len > 998) return "long line " + std::to_string(line);
  }
  return std::nullopt;
}

std::optional<std::string> fast_check(std::string_view body) {
  auto e = detail::check_body(body);
  if (!e) return std::nullopt;
  const std::string& m = e->message;
  if (e->code == errc::forbidden_character) return "NUL line " + m.substr(m.rfind(' ') + 1);
  REQUIRE(e->code == errc::too_long);
  const auto start = std::string("message body line ").size();
  return "long line " + m.substr(start, m.find(' ', start) - start);
}

}  // namespace

TEST_CASE("check_body: 998 octets per line pass, 999 fail, whatever the line ending",
          "[text][body]") {
  const std::string ok(998, 'a'), long_line(999, 'a');
  for (std::string eol : {"\n"s, "\r\n"s, "\r"s, "\r\r\n"s}) {
    CAPTURE(eol);
    CHECK_FALSE(detail::check_body("Subject: x" + eol + eol + ok + eol + ok));
    auto e = detail::check_body("Subject: x" + eol + eol + ok + eol + long_line + eol);
    REQUIRE(e);
    CHECK(e->code == errc::too_long);
    // "\r\r\n" is two line breaks to the octet-by-octet definition.
    const std::string line = eol == "\r\r\n" ? "7" : "4";
    CHECK(e->message == "message body line " + line +
                            " is longer than 998 octets (RFC 5321 4.5.3.1.6); encode the body "
                            "(quoted-printable or base64)");
  }
  // A bare CR splits a long LF-delimited piece into lines that are each short enough.
  CHECK_FALSE(detail::check_body(std::string(900, 'a') + "\r" + std::string(900, 'b') + "\n"));
  auto nul = detail::check_body("a\nb\nc\0d\n"s);
  REQUIRE(nul);
  CHECK(nul->code == errc::forbidden_character);
  CHECK(nul->message == "message body contains a NUL octet on line 3");
}

TEST_CASE("check_body agrees with the octet-by-octet definition on random bodies", "[text][body]") {
  std::mt19937 rng(20261123);
  const char alphabet[] = {'a', 'a', 'a', 'a', 'a', 'a', '\r', '\n', '\0', '\x80'};
  for (int round = 0; round < 3000; ++round) {
    std::string body;
    const int pieces = std::uniform_int_distribution<int>(0, 6)(rng);
    for (int p = 0; p < pieces; ++p) {
      // Runs of plain text around the 998 limit, separated by random special octets.
      body.append(std::uniform_int_distribution<std::size_t>(990, 1002)(rng) *
                      std::uniform_int_distribution<int>(0, 1)(rng),
                  'x');
      const int specials = std::uniform_int_distribution<int>(0, 3)(rng);
      for (int s = 0; s < specials; ++s)
        body += alphabet[std::uniform_int_distribution<int>(0, sizeof alphabet - 1)(rng)];
    }
    CAPTURE(round, body.size());
    CHECK(fast_check(body) == reference_check(body));
  }
}

TEST_CASE("has_8bit finds an 8-bit octet anywhere, also across its 4096-octet blocks",
          "[text][body]") {
  CHECK_FALSE(detail::has_8bit(""));
  for (std::size_t size : {1u, 15u, 4095u, 4096u, 4097u, 8192u, 10000u}) {
    std::string s(size, 'a');
    CHECK_FALSE(detail::has_8bit(s));
    for (std::size_t at : {std::size_t{0}, size / 2, size - 1}) {
      std::string t = s;
      t[at] = static_cast<char>(0x80 | (at & 0x7F));
      CAPTURE(size, at);
      CHECK(detail::has_8bit(t));
    }
  }
  CHECK_FALSE(detail::has_8bit("\x7F\x01\x00 plain"s));
}

TEST_CASE("valid_utf8 takes RFC 3629 UTF-8 only: no overlong forms, surrogates or beyond U+10FFFF",
          "[text][utf8]") {
  CHECK(detail::valid_utf8(""));
  CHECK(detail::valid_utf8("plain ASCII"));
  CHECK(
      detail::valid_utf8("Gr\xc3\xbc\xc3\x9f"
                         "e"));                         // U+00FC U+00DF
  CHECK(detail::valid_utf8("\xe2\x82\xac"));            // U+20AC
  CHECK(detail::valid_utf8("\xf0\x9f\x93\xa7"));        // U+1F4E7
  CHECK(detail::valid_utf8("\xf4\x8f\xbf\xbf"));        // U+10FFFF
  CHECK_FALSE(detail::valid_utf8("caf\xe9"));           // Latin-1
  CHECK_FALSE(detail::valid_utf8("\xc0\xaf"));          // overlong '/'
  CHECK_FALSE(detail::valid_utf8("\xe0\x80\xaf"));      // overlong
  CHECK_FALSE(detail::valid_utf8("\xed\xa0\x80"));      // U+D800
  CHECK_FALSE(detail::valid_utf8("\xf4\x90\x80\x80"));  // U+110000
  CHECK_FALSE(detail::valid_utf8("\xf5\x80\x80\x80"));
  CHECK_FALSE(detail::valid_utf8("\xe2\x82"));  // cut short
  CHECK_FALSE(detail::valid_utf8("\xc3"));
  CHECK_FALSE(detail::valid_utf8("\x80"));  // a lone continuation
  CHECK_FALSE(detail::valid_utf8("\xe2\x28\xa1"));
  CHECK(detail::header_section("A: b\r\nC: d\r\n\r\nbody\r\n") == "A: b\r\nC: d\r\n");
  CHECK(detail::header_section("A: b\nC: d\n") == "A: b\nC: d\n");
}
