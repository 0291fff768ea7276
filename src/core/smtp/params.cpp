#include "core/smtp/params.h"

#include <algorithm>

#include "core/smtp/ascii.h"
#include "mailq/address.h"

namespace mailq::detail {
namespace {

bool is_hex_upper(char c) {
  return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F');
}

int hex_value(char c) {
  return c <= '9' ? c - '0' : c - 'A' + 10;
}

}  // namespace

std::string xtext(std::string_view s) {
  static const char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (u < 33 || u > 126 || c == '+' || c == '=') {
      out += '+';
      out += kHex[u >> 4];
      out += kHex[u & 15];
    } else {
      out += c;
    }
  }
  return out;
}

// RFC 3461 §4: xtext = *( xchar / hexchar ), xchar = "!".."~" except "+" and "=",
// hexchar = "+" two upper-case hex digits.
std::optional<std::string> xtext_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '+') {
      if (i + 2 >= s.size() || !is_hex_upper(s[i + 1]) || !is_hex_upper(s[i + 2])) {
        return std::nullopt;
      }
      out += static_cast<char>(hex_value(s[i + 1]) * 16 + hex_value(s[i + 2]));
      i += 2;
    } else if (c >= '!' && c <= '~' && c != '=') {
      out += c;
    } else {
      return std::nullopt;
    }
  }
  return out;
}

std::string base64(std::string_view s) {
  static const char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((s.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 2 < s.size(); i += 3) {
    auto a = static_cast<unsigned char>(s[i]), b = static_cast<unsigned char>(s[i + 1]),
         c = static_cast<unsigned char>(s[i + 2]);
    out += kAlphabet[a >> 2];
    out += kAlphabet[((a & 3) << 4) | (b >> 4)];
    out += kAlphabet[((b & 15) << 2) | (c >> 6)];
    out += kAlphabet[c & 63];
  }
  if (i + 1 == s.size()) {
    auto a = static_cast<unsigned char>(s[i]);
    out += kAlphabet[a >> 2];
    out += kAlphabet[(a & 3) << 4];
    out += "==";
  } else if (i + 2 == s.size()) {
    auto a = static_cast<unsigned char>(s[i]), b = static_cast<unsigned char>(s[i + 1]);
    out += kAlphabet[a >> 2];
    out += kAlphabet[((a & 3) << 4) | (b >> 4)];
    out += kAlphabet[(b & 15) << 2];
    out += '=';
  }
  return out;
}

std::optional<std::string> base64_decode(std::string_view s) {
  if (s.size() % 4 != 0) return std::nullopt;
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::string out;
  out.reserve(s.size() / 4 * 3);
  for (std::size_t i = 0; i < s.size(); i += 4) {
    const bool last = i + 4 == s.size();
    int v[4];
    int pad = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = s[i + static_cast<std::size_t>(k)];
      if (c == '=' && last && k >= 2) {
        v[k] = 0;
        ++pad;
        continue;
      }
      if (pad > 0) return std::nullopt;  // data after padding
      v[k] = value(c);
      if (v[k] < 0) return std::nullopt;
    }
    const unsigned n = (static_cast<unsigned>(v[0]) << 18) | (static_cast<unsigned>(v[1]) << 12) |
                       (static_cast<unsigned>(v[2]) << 6) | static_cast<unsigned>(v[3]);
    out += static_cast<char>((n >> 16) & 0xff);
    if (pad < 2) out += static_cast<char>((n >> 8) & 0xff);
    if (pad < 1) out += static_cast<char>(n & 0xff);
  }
  return out;
}

std::string orcpt_param(std::string_view orcpt) {
  auto semi = orcpt.find(';');
  std::string_view type = "rfc822";
  std::string_view addr = orcpt;
  if (semi != std::string_view::npos) {
    type = orcpt.substr(0, semi);
    addr = orcpt.substr(semi + 1);
  }
  if (type.empty()) return {};
  for (char c : type)
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-'))
      return {};
  return std::string(type) + ";" + xtext(addr);
}

std::optional<std::string> orcpt_decode(std::string_view value) {
  const std::size_t semi = value.find(';');
  if (semi == std::string_view::npos) return std::nullopt;
  auto decoded = xtext_decode(value.substr(semi + 1));
  if (!decoded) return std::nullopt;
  return std::string(value.substr(0, semi + 1)) + *decoded;
}

std::string notify_param(std::uint8_t notify) {
  if (notify & kNotifyNever) return "NEVER";
  std::string out;
  auto add = [&](const char* s) {
    if (!out.empty()) out += ',';
    out += s;
  };
  if (notify & kNotifySuccess) add("SUCCESS");
  if (notify & kNotifyFailure) add("FAILURE");
  if (notify & kNotifyDelay) add("DELAY");
  return out;
}

std::optional<std::uint8_t> notify_decode(std::string_view v) {
  std::uint8_t flags = 0;
  while (!v.empty()) {
    const std::size_t comma = std::min(v.find(','), v.size());
    const std::string_view f = v.substr(0, comma);
    if (iequals(f, "NEVER")) {
      flags |= kNotifyNever;
    } else if (iequals(f, "SUCCESS")) {
      flags |= kNotifySuccess;
    } else if (iequals(f, "FAILURE")) {
      flags |= kNotifyFailure;
    } else if (iequals(f, "DELAY")) {
      flags |= kNotifyDelay;
    } else {
      return std::nullopt;
    }
    v.remove_prefix(comma);
    if (!v.empty()) {
      v.remove_prefix(1);
      if (v.empty()) return std::nullopt;  // a trailing comma
    }
  }
  if ((flags & kNotifyNever) != 0 && flags != kNotifyNever) return std::nullopt;
  return flags;
}

}  // namespace mailq::detail
