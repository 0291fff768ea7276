#include <catch2/catch.hpp>

#include <string>

#include "core/smtp/reply_parse.h"
#include "mailq/smtp_client.h"

using namespace mailq;

TEST_CASE("parse_reply: a one-line reply with an enhanced status code", "[smtp][reply]") {
  auto r = parse_reply("250 2.1.0 Sender <a@example.org> OK\r\n");
  REQUIRE(r);
  CHECK(r->code == 250);
  CHECK(r->enhanced == "2.1.0");
  CHECK(r->text == "Sender <a@example.org> OK");
}

TEST_CASE("parse_reply: no enhanced code, code alone, code and space", "[smtp][reply]") {
  auto r = parse_reply("220 mx.example.org ESMTP ready\r\n");
  REQUIRE(r);
  CHECK(r->code == 220);
  CHECK(r->enhanced.empty());
  CHECK(r->text == "mx.example.org ESMTP ready");

  r = parse_reply("250\r\n");
  REQUIRE(r);
  CHECK(r->code == 250);
  CHECK(r->text.empty());

  r = parse_reply("354 \r\n");
  REQUIRE(r);
  CHECK(r->code == 354);
  CHECK(r->text.empty());
}

TEST_CASE(
    "parse_reply: multi-line replies are joined with newlines, the enhanced code "
    "removed from each line",
    "[smtp][reply]") {
  auto r = parse_reply(
      "550-5.1.1 The email account that you tried to reach does not exist.\r\n"
      "550-5.1.1 Please try double-checking the recipient's email address.\r\n"
      "550 5.1.1 https://support.example/?p=NoSuchUser\r\n");
  REQUIRE(r);
  CHECK(r->code == 550);
  CHECK(r->enhanced == "5.1.1");
  CHECK(r->text ==
        "The email account that you tried to reach does not exist.\n"
        "Please try double-checking the recipient's email address.\n"
        "https://support.example/?p=NoSuchUser");
  CHECK(r->to_string() ==
        "550 5.1.1 The email account that you tried to reach does not exist.; Please try "
        "double-checking the recipient's email address.; https://support.example/?p=NoSuchUser");
}

TEST_CASE("parse_reply: EHLO-style continuation lines without text", "[smtp][reply]") {
  auto r = parse_reply("250-mx.example.org\r\n250-\r\n250 SIZE 100\r\n");
  REQUIRE(r);
  CHECK(r->text == "mx.example.org\n\nSIZE 100");
}

TEST_CASE("parse_reply: an enhanced code of another class, or malformed, stays in the text",
          "[smtp][reply]") {
  auto r = parse_reply("550 4.1.1 odd\r\n");
  REQUIRE(r);
  CHECK(r->enhanced.empty());
  CHECK(r->text == "4.1.1 odd");

  r = parse_reply("250 2.1.0000 x\r\n");
  REQUIRE(r);
  CHECK(r->enhanced.empty());
  CHECK(r->text == "2.1.0000 x");

  r = parse_reply("250 2.1.0x y\r\n");
  REQUIRE(r);
  CHECK(r->enhanced.empty());

  r = parse_reply("556 5.1.10 null MX\r\n");
  REQUIRE(r);
  CHECK(r->enhanced == "5.1.10");
  CHECK(r->text == "null MX");

  r = parse_reply("250 2.0.0\r\n");
  REQUIRE(r);
  CHECK(r->enhanced == "2.0.0");
  CHECK(r->text.empty());
}

TEST_CASE("parse_reply: a different enhanced code on a later line is kept in its text",
          "[smtp][reply]") {
  auto r = parse_reply("451-4.7.1 first\r\n451 4.3.0 second\r\n");
  REQUIRE(r);
  CHECK(r->enhanced == "4.7.1");
  CHECK(r->text == "first\n4.3.0 second");
}

TEST_CASE("parse_reply: bare LF line endings are tolerated", "[smtp][reply]") {
  auto r = parse_reply("250-first\n250 2.0.0 second\n");
  REQUIRE(r);
  CHECK(r->code == 250);
  CHECK(r->enhanced.empty());  // the first line has none
  CHECK(r->text == "first\n2.0.0 second");
  r = parse_reply("250 ok");  // the last terminator may be left off
  REQUIRE(r);
  CHECK(r->text == "ok");
}

TEST_CASE("parse_reply: protocol errors give nullopt", "[smtp][reply]") {
  CHECK_FALSE(parse_reply(""));
  CHECK_FALSE(parse_reply("\r\n"));
  CHECK_FALSE(parse_reply("25\r\n"));
  CHECK_FALSE(parse_reply("abc def\r\n"));
  CHECK_FALSE(parse_reply("600 too high\r\n"));
  CHECK_FALSE(parse_reply("199 too low\r\n"));
  CHECK_FALSE(parse_reply("2x0 letters\r\n"));
  CHECK_FALSE(parse_reply("250ok\r\n"));                    // missing separator
  CHECK_FALSE(parse_reply("250_ok\r\n"));                   // bad separator
  CHECK_FALSE(parse_reply("250-first\r\n251 second\r\n"));  // mismatched codes
  CHECK_FALSE(parse_reply("250-first\r\n"));                // incomplete
  CHECK_FALSE(parse_reply("250 one\r\n250 two\r\n"));       // two replies
  CHECK_FALSE(parse_reply("250 " + std::string(5000, 'x') + "\r\n"));
  std::string many;
  for (int i = 0; i < 300; ++i) many += "250-x\r\n";
  many += "250 end\r\n";
  CHECK_FALSE(parse_reply(many));
}

TEST_CASE("parse_reply: control characters in the text cannot reach logs", "[smtp][reply]") {
  auto r = parse_reply(std::string("250 a\rb\0c\x1b[1m\td\r\n", 17));
  REQUIRE(r);
  CHECK(r->text == "a?b?c?[1m\td");
}

TEST_CASE("ReplyParser: a reply split at every byte position gives the same reply",
          "[smtp][reply]") {
  const std::string wire =
      "250-mx.example.org Hello\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 2.0.0 OK done\r\n"
      "550 5.1.1 <x@y> no\r\n";
  for (std::size_t a = 0; a <= wire.size(); ++a) {
    for (std::size_t b = a; b <= wire.size(); b += 7) {
      detail::ReplyParser p(4096, 256);
      std::vector<detail::ParsedReply> got;
      for (auto piece : {wire.substr(0, a), wire.substr(a, b - a), wire.substr(b)}) {
        p.feed(piece);
        for (;;) {
          detail::ParsedReply pr;
          std::string why;
          auto st = p.next(&pr, &why);
          REQUIRE(st != detail::ReplyParser::Status::error);
          if (st == detail::ReplyParser::Status::need_more) break;
          got.push_back(pr);
        }
      }
      REQUIRE(got.size() == 2);
      CHECK(got[0].reply.code == 250);
      CHECK(got[0].reply.enhanced.empty());
      CHECK(got[0].lines == std::vector<std::string>{"mx.example.org Hello", "PIPELINING",
                                                     "SIZE 1000", "2.0.0 OK done"});
      CHECK(got[1].reply == Reply(550, "5.1.1", "<x@y> no"));
      CHECK_FALSE(p.buffered());
    }
  }
}

TEST_CASE("ReplyParser: an over-long line is refused before its end arrives", "[smtp][reply]") {
  detail::ReplyParser p(100, 10);
  p.feed("250 " + std::string(97, 'x'));  // 101 octets, no LF yet: still possibly a CR
  detail::ParsedReply pr;
  std::string why;
  CHECK(p.next(&pr, &why) == detail::ReplyParser::Status::need_more);
  p.feed("yy");
  CHECK(p.next(&pr, &why) == detail::ReplyParser::Status::error);
  CHECK(why == "reply line longer than 100 octets");
  // The parser stays in error.
  p.feed("250 ok\r\n");
  CHECK(p.next(&pr, &why) == detail::ReplyParser::Status::error);
}

TEST_CASE("ReplyParser: error texts say what was wrong", "[smtp][reply]") {
  auto error_of = [](const std::string& wire) {
    detail::ReplyParser p(4096, 3);
    p.feed(wire);
    detail::ParsedReply pr;
    std::string why;
    for (;;) {
      auto st = p.next(&pr, &why);
      if (st == detail::ReplyParser::Status::error) return why;
      if (st == detail::ReplyParser::Status::need_more) return std::string("need more");
    }
  };
  CHECK(error_of("HTTP/1.1 400 Bad Request\r\n") ==
        "invalid reply code in \"HTTP/1.1 400 Bad Request\"");
  CHECK(error_of("250-a\r\n251 b\r\n") ==
        "mismatched reply codes in a multi-line reply (250 then 251)");
  CHECK(error_of("250+ok\r\n") == "no separator after the reply code in \"250+ok\"");
  CHECK(error_of("250-a\r\n250-b\r\n250-c\r\n250 d\r\n") == "reply longer than 3 lines");
  CHECK(error_of("\x01\x02\r\n") == "invalid reply code in \"\\x01\\x02\"");
}
