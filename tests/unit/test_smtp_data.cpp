#include <catch2/catch.hpp>

#include <random>
#include <string>

#include "mailq/smtp_client.h"

using namespace mailq;
using namespace std::string_literals;

TEST_CASE("encode_data: CRLF text is kept, the terminator appended", "[smtp][encode]") {
  CHECK(encode_data("Subject: x\r\n\r\nhello\r\n") == "Subject: x\r\n\r\nhello\r\n.\r\n");
}

TEST_CASE("encode_data: bare LF becomes CRLF", "[smtp][encode]") {
  CHECK(encode_data("a\nb\n") == "a\r\nb\r\n.\r\n");
  CHECK(encode_data("\n\n") == "\r\n\r\n.\r\n");
}

TEST_CASE("encode_data: bare CR becomes CRLF, each one a line break", "[smtp][encode]") {
  CHECK(encode_data("a\rb\r") == "a\r\nb\r\n.\r\n");
  CHECK(encode_data("a\r\rb") == "a\r\n\r\nb\r\n.\r\n");
  CHECK(encode_data("a\r") == "a\r\n.\r\n");
}

TEST_CASE("encode_data: CR CR LF is one line break", "[smtp][encode]") {
  CHECK(encode_data("a\r\r\nb\r\r\n") == "a\r\nb\r\n.\r\n");
  CHECK(encode_data("a\r\r\r\nb") == "a\r\nb\r\n.\r\n");
  CHECK(encode_data("a\n\r\nb") == "a\r\n\r\nb\r\n.\r\n");  // LF then CRLF: two breaks
}

TEST_CASE("encode_data: a leading dot is doubled, on every line and the first", "[smtp][encode]") {
  CHECK(encode_data(".hidden\r\nx\r\n..two\r\n.\r\n") == "..hidden\r\nx\r\n...two\r\n..\r\n.\r\n");
  CHECK(encode_data("a.b\r\n .c\r\n") == "a.b\r\n .c\r\n.\r\n");  // not at line start
  CHECK(encode_data(".") == "..\r\n.\r\n");
}

TEST_CASE("encode_data: SMTP smuggling patterns cannot end the data early",
          "[smtp][encode][security]") {
  // <LF>.<LF>, <LF>.<CR><LF>, <CR><LF>.<LF>, <CR>.<CR>, <CR><LF>.<CR> variants.
  CHECK(encode_data("a\n.\nMAIL FROM:<x>\n") == "a\r\n..\r\nMAIL FROM:<x>\r\n.\r\n");
  CHECK(encode_data("a\n.\r\nRCPT TO:<x>\r\n") == "a\r\n..\r\nRCPT TO:<x>\r\n.\r\n");
  CHECK(encode_data("a\r\n.\nDATA\r\n") == "a\r\n..\r\nDATA\r\n.\r\n");
  CHECK(encode_data("a\r.\rb\r\n") == "a\r\n..\r\nb\r\n.\r\n");
  CHECK(encode_data("a\r\n.\rb\r\n") == "a\r\n..\r\nb\r\n.\r\n");
  CHECK(encode_data("a\r\n.\r\r\nb") == "a\r\n..\r\nb\r\n.\r\n");
}

TEST_CASE("encode_data: empty body and missing final newline", "[smtp][encode]") {
  CHECK(encode_data("") == ".\r\n");
  CHECK(encode_data("no newline") == "no newline\r\n.\r\n");
  CHECK(encode_data("x\r\ny") == "x\r\ny\r\n.\r\n");
}

TEST_CASE("encode_data: 8-bit octets, NUL and over-long lines pass through unchanged",
          "[smtp][encode]") {
  CHECK(encode_data("caf\xc3\xa9\n") == "caf\xc3\xa9\r\n.\r\n");
  CHECK(encode_data("a\0b\n"s) == "a\0b\r\n.\r\n"s);
  std::string long_line(2000, 'x');
  CHECK(encode_data(long_line) == long_line + "\r\n.\r\n");
}

TEST_CASE("encode_data: for any input the wire has CRLF only and a single terminator",
          "[smtp][encode][security]") {
  std::mt19937 rng(20240601);
  const char alphabet[] = {'\r', '\n', '.', 'a', ' ', '\0'};
  for (int round = 0; round < 2000; ++round) {
    std::string body;
    int len = static_cast<int>(rng() % 40);
    for (int i = 0; i < len; ++i) body += alphabet[rng() % sizeof alphabet];
    std::string wire = encode_data(body);
    INFO("body: " << body);
    REQUIRE(wire.size() >= 3);
    REQUIRE(wire.compare(wire.size() - 3, 3, ".\r\n") == 0);
    std::string text = wire.substr(0, wire.size() - 3);
    // Every CR is followed by LF and every LF preceded by CR.
    for (std::size_t i = 0; i < text.size(); ++i) {
      if (text[i] == '\r') REQUIRE((i + 1 < text.size() && text[i + 1] == '\n'));
      if (text[i] == '\n') REQUIRE((i > 0 && text[i - 1] == '\r'));
    }
    REQUIRE((text.empty() || text.compare(text.size() - 2, 2, "\r\n") == 0));
    // No line of the text is a lone dot, and no line starts with a single dot.
    std::size_t pos = 0;
    while (pos < text.size()) {
      std::size_t eol = text.find("\r\n", pos);
      std::string line = text.substr(pos, eol - pos);
      if (!line.empty() && line[0] == '.') {
        REQUIRE(line.size() >= 2);
        REQUIRE(line[1] == '.');
      }
      pos = eol + 2;
    }
    REQUIRE(wire.find("\r\n.\r\n") == (text.empty() ? std::string::npos : text.size() - 2));
    REQUIRE(wire.find("\n.\r\n") == (text.empty() ? std::string::npos : text.size() - 1));
    REQUIRE(wire.find("\r.\r") == std::string::npos);
  }
}
