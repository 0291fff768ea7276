#include "core/text.h"

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>

namespace mailq::detail {

std::string_view domain_of(std::string_view address) {
  auto at = address.rfind('@');
  return at == std::string_view::npos ? std::string_view{} : address.substr(at + 1);
}

std::string to_lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

bool is_host_name(std::string_view s, bool underscore) noexcept {
  if (s.empty() || s.size() > 253) return false;
  std::size_t label = 0;
  for (char c : s) {
    if (c == '.') {
      if (label == 0) return false;
      label = 0;
      continue;
    }
    const bool ok =
        std::isalnum(static_cast<unsigned char>(c)) || c == '-' || (underscore && c == '_');
    if (!ok || ++label > 63) return false;
  }
  return label > 0;
}

namespace {

// The exact check, line by line: finds the first problem and its line number.
std::optional<Error> check_body_slow(std::string_view body) {
  std::size_t line = 1;
  std::size_t len = 0;
  for (std::size_t i = 0; i < body.size(); ++i) {
    char c = body[i];
    if (c == '\0')
      return Error(errc::forbidden_character,
                   "message body contains a NUL octet on line " + std::to_string(line));
    if (c == '\n' || c == '\r') {
      if (c == '\r' && i + 1 < body.size() && body[i + 1] == '\n') ++i;
      ++line;
      len = 0;
      continue;
    }
    if (++len > 998)
      return Error(errc::too_long, "message body line " + std::to_string(line) +
                                       " is longer than 998 octets (RFC 5321 4.5.3.1.6); "
                                       "encode the body (quoted-printable or base64)");
  }
  return std::nullopt;
}

}  // namespace

std::optional<Error> check_body(std::string_view body) {
  // Fast path with memchr: no NUL anywhere, and no LF-delimited piece longer than 998 octets
  // (a CR inside a piece only splits it further). Anything else takes the exact scan, which
  // names the line.
  if (std::memchr(body.data(), '\0', body.size()) != nullptr) return check_body_slow(body);
  const char* p = body.data();
  const char* const end = p + body.size();
  while (p < end) {
    const void* nl = std::memchr(p, '\n', static_cast<std::size_t>(end - p));
    const char* e = nl ? static_cast<const char*>(nl) : end;
    std::size_t len = static_cast<std::size_t>(e - p);
    if (len > 0 && p[len - 1] == '\r') --len;
    if (len > 998) return check_body_slow(body);
    p = e + 1;
  }
  return std::nullopt;
}

bool has_8bit(std::string_view s) noexcept {
  // Eight octets at a time, four words per step, an early exit only between 4 KiB blocks.
  constexpr std::uint64_t kHigh = 0x8080808080808080ull;
  constexpr std::size_t kBlock = 4096;
  const char* p = s.data();
  std::size_t n = s.size();
  while (n >= 32) {
    const std::size_t k = std::min(n, kBlock) & ~std::size_t{31};
    std::uint64_t a = 0, b = 0, c = 0, d = 0;
    for (std::size_t i = 0; i < k; i += 32) {
      std::uint64_t w[4];
      std::memcpy(w, p + i, sizeof w);
      a |= w[0];
      b |= w[1];
      c |= w[2];
      d |= w[3];
    }
    if ((a | b | c | d) & kHigh) return true;
    p += k;
    n -= k;
  }
  unsigned char acc = 0;
  for (std::size_t i = 0; i < n; ++i) acc |= static_cast<unsigned char>(p[i]);
  return (acc & 0x80) != 0;
}

std::string header_value(std::string_view message, std::string_view name) {
  std::string value;
  bool found = false;
  for_each_header_line(message, [&](std::string_view line, std::size_t next) {
    if (line.size() <= name.size() || line[name.size()] != ':' ||
        to_lower(line.substr(0, name.size())) != to_lower(name))
      return true;
    value = std::string(line.substr(name.size() + 1));
    // Unfold continuation lines.
    while (next < message.size() && (message[next] == ' ' || message[next] == '\t')) {
      std::size_t e2 = message.find('\n', next);
      if (e2 == std::string_view::npos) e2 = message.size();
      std::string_view cont = message.substr(next, e2 - next);
      if (!cont.empty() && cont.back() == '\r') cont.remove_suffix(1);
      value += std::string(cont);
      next = e2 + 1;
    }
    found = true;
    return false;
  });
  if (!found) return {};
  auto b = value.find_first_not_of(" \t");
  auto e = value.find_last_not_of(" \t");
  return b == std::string::npos ? std::string() : value.substr(b, e - b + 1);
}

std::string_view header_section(std::string_view message) noexcept {
  std::size_t pos = 0;
  while (pos < message.size()) {
    std::size_t eol = message.find('\n', pos);
    std::string_view line =
        message.substr(pos, eol == std::string_view::npos ? std::string_view::npos : eol - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) return message.substr(0, pos);
    if (eol == std::string_view::npos) break;
    pos = eol + 1;
  }
  return message;
}

bool valid_utf8(std::string_view s) noexcept {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t n;
    unsigned lo = 0x80, hi = 0xbf;  // the range of the second octet
    if (c >= 0xc2 && c <= 0xdf) {
      n = 1;
    } else if (c >= 0xe0 && c <= 0xef) {
      n = 2;
      if (c == 0xe0) lo = 0xa0;  // no overlong forms
      if (c == 0xed) hi = 0x9f;  // no surrogates
    } else if (c >= 0xf0 && c <= 0xf4) {
      n = 3;
      if (c == 0xf0) lo = 0x90;
      if (c == 0xf4) hi = 0x8f;  // at most U+10FFFF
    } else {
      return false;
    }
    if (i + n >= s.size()) return false;  // cut short
    const auto second = static_cast<unsigned char>(s[i + 1]);
    if (second < lo || second > hi) return false;
    for (std::size_t k = 2; k <= n; ++k) {
      const auto next = static_cast<unsigned char>(s[i + k]);
      if (next < 0x80 || next > 0xbf) return false;
    }
    i += n + 1;
  }
  return true;
}

}  // namespace mailq::detail
