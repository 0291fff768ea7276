#include "mailq/address.h"

#include <fmt/format.h>

#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "core/address_chars.h"

namespace mailq {

std::string detail::describe_control(unsigned char c) {
  switch (c) {
    case '\r':
      return "a carriage return (CR)";
    case '\n':
      return "a line feed (LF)";
    case '\0':
      return "a NUL byte";
    case '\t':
      return "a tab (0x09)";
    case 0x7f:
      return "a DEL character (0x7F)";
    default:
      return fmt::format("a control character (0x{:02X})", c);
  }
}

namespace {

using detail::describe_control;
using detail::is_control;

// Offset of the first CR, LF, NUL, other C0 control or DEL, or npos.
std::size_t find_control(std::string_view s) {
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (is_control(static_cast<unsigned char>(s[i]))) return i;
  }
  return std::string_view::npos;
}

// Length of the well-formed UTF-8 sequence (RFC 3629: no overlong forms, no surrogates,
// nothing above U+10FFFF) that starts with a non-ASCII octet at s[i]; 0 when ill-formed.
std::size_t utf8_sequence(std::string_view s, std::size_t i) {
  auto at = [&](std::size_t k) -> unsigned {
    return k < s.size() ? static_cast<unsigned char>(s[k]) : 0u;
  };
  auto cont = [](unsigned c) { return c >= 0x80 && c <= 0xBF; };
  const unsigned c0 = at(i);
  if (c0 >= 0xC2 && c0 <= 0xDF) return cont(at(i + 1)) ? 2 : 0;
  if (c0 >= 0xE0 && c0 <= 0xEF) {
    const unsigned c1 = at(i + 1);
    const unsigned lo = c0 == 0xE0 ? 0xA0 : 0x80;  // overlong
    const unsigned hi = c0 == 0xED ? 0x9F : 0xBF;  // surrogates
    return c1 >= lo && c1 <= hi && cont(at(i + 2)) ? 3 : 0;
  }
  if (c0 >= 0xF0 && c0 <= 0xF4) {
    const unsigned c1 = at(i + 1);
    const unsigned lo = c0 == 0xF0 ? 0x90 : 0x80;
    const unsigned hi = c0 == 0xF4 ? 0x8F : 0xBF;
    return c1 >= lo && c1 <= hi && cont(at(i + 2)) && cont(at(i + 3)) ? 4 : 0;
  }
  return 0;
}

bool is_alpha(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}
bool is_digit(unsigned char c) {
  return c >= '0' && c <= '9';
}
bool is_hex(unsigned char c) {
  return is_digit(c) || (c >= 'A' && c <= 'F') || (c >= 'a' && c <= 'f');
}

// RFC 5322 atext (RFC 5321 Atom); non-ASCII is handled separately (RFC 6531).
bool is_atext(unsigned char c) {
  return is_alpha(c) || is_digit(c) || (c != 0 && std::strchr("!#$%&'*+-/=?^_`{|}~", c) != nullptr);
}

std::string show_char(unsigned char c) {
  if (c == ' ') return "' ' (space)";
  return fmt::format("'{}'", static_cast<char>(c));
}

Error invalid(std::string message) {
  return Error(errc::invalid_address, std::move(message));
}

// Dot-string = Atom *("." Atom), atoms of atext or UTF-8 (SMTPUTF8). `base` is the offset of
// `local` in the whole address, for messages.
std::optional<Error> check_dot_string(std::string_view local) {
  if (local.empty()) return invalid("empty local part");
  if (local.front() == '.') return invalid("local part starts with a dot at offset 0");
  for (std::size_t i = 0; i < local.size();) {
    const auto c = static_cast<unsigned char>(local[i]);
    if (c == '.') {
      if (i + 1 == local.size()) {
        return invalid(fmt::format("local part ends with a dot at offset {}", i));
      }
      if (local[i + 1] == '.') {
        return invalid(fmt::format("local part contains consecutive dots at offset {}", i));
      }
      ++i;
    } else if (c >= 0x80) {
      const std::size_t n = utf8_sequence(local, i);
      if (n == 0) return invalid(fmt::format("invalid UTF-8 in local part at offset {}", i));
      i += n;
    } else if (is_atext(c)) {
      ++i;
    } else {
      return invalid(fmt::format(
          "invalid character {} in local part at offset {} (it is allowed only in a quoted "
          "local part)",
          show_char(c), i));
    }
  }
  return std::nullopt;
}

// Quoted-string starting at s[0] == '"'. On success *end is the offset after the closing
// quote.
std::optional<Error> check_quoted_string(std::string_view s, std::size_t* end) {
  for (std::size_t i = 1; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == '"') {
      *end = i + 1;
      return std::nullopt;
    }
    if (c == '\\') {
      // quoted-pairSMTP = "\" %d32-126
      if (i + 1 >= s.size()) break;
      const auto n = static_cast<unsigned char>(s[i + 1]);
      if (n < 0x20 || n > 0x7e) {
        return invalid(fmt::format("invalid quoted pair in local part at offset {}", i));
      }
      i += 2;
    } else if (c >= 0x80) {
      const std::size_t n = utf8_sequence(s, i);
      if (n == 0) return invalid(fmt::format("invalid UTF-8 in local part at offset {}", i));
      i += n;
    } else {
      ++i;  // qtextSMTP: every other printable ASCII character, space included
    }
  }
  return invalid("unterminated quoted string in local part");
}

bool parse_ipv4(std::string_view v) {
  int parts = 0;
  std::size_t i = 0;
  while (true) {
    std::size_t digits = 0;
    unsigned value = 0;
    while (i < v.size() && is_digit(static_cast<unsigned char>(v[i])) && digits < 4) {
      value = value * 10 + static_cast<unsigned>(v[i] - '0');
      ++digits;
      ++i;
    }
    if (digits == 0 || digits > 3 || value > 255) return false;
    ++parts;
    if (i == v.size()) return parts == 4;
    if (v[i] != '.' || parts == 4) return false;
    ++i;
  }
}

// Colon-separated groups of 1-4 hex digits; the last may be an IPv4 address (two groups).
bool parse_ipv6_groups(std::string_view part, bool allow_ipv4_last, int* count) {
  *count = 0;
  if (part.empty()) return true;
  std::size_t start = 0;
  while (true) {
    const std::size_t colon = part.find(':', start);
    const std::string_view piece = part.substr(
        start, colon == std::string_view::npos ? std::string_view::npos : colon - start);
    const bool last = colon == std::string_view::npos;
    if (last && allow_ipv4_last && piece.find('.') != std::string_view::npos) {
      if (!parse_ipv4(piece)) return false;
      *count += 2;
      return true;
    }
    if (piece.empty() || piece.size() > 4) return false;
    for (char c : piece) {
      if (!is_hex(static_cast<unsigned char>(c))) return false;
    }
    ++*count;
    if (last) return true;
    start = colon + 1;
  }
}

// RFC 5321 IPv6-addr. "::" may stand for one or more zero groups (RFC 4291), which is a
// little wider than RFC 5321's grammar (two or more) and matches what resolvers print.
bool parse_ipv6(std::string_view v) {
  const std::size_t dbl = v.find("::");
  int left = 0;
  int right = 0;
  if (dbl == std::string_view::npos) {
    return parse_ipv6_groups(v, true, &left) && left == 8;
  }
  if (v.find("::", dbl + 1) != std::string_view::npos) return false;
  return parse_ipv6_groups(v.substr(0, dbl), false, &left) &&
         parse_ipv6_groups(v.substr(dbl + 2), true, &right) && left + right <= 7;
}

bool iequals_prefix(std::string_view s, std::string_view prefix) {
  if (s.size() < prefix.size()) return false;
  for (std::size_t i = 0; i < prefix.size(); ++i) {
    char a = s[i];
    char b = prefix[i];
    if (a >= 'A' && a <= 'Z') a = static_cast<char>(a - 'A' + 'a');
    if (b >= 'A' && b <= 'Z') b = static_cast<char>(b - 'A' + 'a');
    if (a != b) return false;
  }
  return true;
}

// `base` is the offset of the domain in the whole address, so messages point into the input.
std::optional<Error> check_domain(std::string_view d, std::size_t base) {
  if (d.empty()) return invalid("empty domain");
  if (d.front() == '[') {
    if (d.back() != ']' || d.size() < 2) {
      return invalid("address literal is missing its closing ']'");
    }
    const std::string_view inner = d.substr(1, d.size() - 2);
    if (iequals_prefix(inner, "IPv6:")) {
      if (!parse_ipv6(inner.substr(5))) {
        return invalid(fmt::format("invalid IPv6 address literal at offset {}", base));
      }
      return std::nullopt;
    }
    const std::size_t colon = inner.find(':');
    if (colon != std::string_view::npos) {
      // General-address-literal: no tag other than IPv6 is registered with IANA.
      return invalid(fmt::format("unsupported address literal tag '{}' at offset {}",
                                 inner.substr(0, colon), base));
    }
    if (!parse_ipv4(inner)) {
      return invalid(fmt::format("invalid IPv4 address literal at offset {}", base));
    }
    return std::nullopt;
  }

  if (d.front() == '.') return invalid(fmt::format("domain starts with a dot at offset {}", base));
  std::size_t label_start = 0;
  bool label_ascii = true;
  for (std::size_t i = 0; i <= d.size();) {
    if (i == d.size() || d[i] == '.') {
      const std::size_t len = i - label_start;
      if (len == 0) {
        if (i == d.size()) {
          return invalid(fmt::format("domain ends with a dot at offset {}", base + i - 1));
        }
        return invalid(fmt::format("domain contains consecutive dots at offset {}", base + i - 1));
      }
      if (d[label_start] == '-') {
        return invalid(
            fmt::format("domain label starts with a hyphen at offset {}", base + label_start));
      }
      if (d[i - 1] == '-') {
        return invalid(fmt::format("domain label ends with a hyphen at offset {}", base + i - 1));
      }
      // The 63-octet DNS limit applies to the ASCII form of a label; a UTF-8 label (U-label)
      // is measured after IDNA conversion, which is the resolver's business.
      if (label_ascii && len > 63) {
        return Error(errc::too_long,
                     fmt::format("domain label at offset {} is {} octets, the limit is 63",
                                 base + label_start, len));
      }
      if (i == d.size()) break;
      ++i;
      label_start = i;
      label_ascii = true;
      continue;
    }
    const auto c = static_cast<unsigned char>(d[i]);
    if (c >= 0x80) {
      const std::size_t n = utf8_sequence(d, i);
      if (n == 0) return invalid(fmt::format("invalid UTF-8 in domain at offset {}", base + i));
      label_ascii = false;
      i += n;
    } else if (is_alpha(c) || is_digit(c) || c == '-') {
      ++i;
    } else {
      return invalid(
          fmt::format("invalid character {} in domain at offset {}", show_char(c), base + i));
    }
  }
  return std::nullopt;
}

std::error_code fail(std::string* message, errc code, std::string text) {
  if (message != nullptr) *message = std::move(text);
  return make_error_code(code);
}

std::error_code fail(std::string* message, const Error& e, std::string_view prefix) {
  if (message != nullptr) *message = std::string(prefix) + e.message;
  return e.code;
}

// A DSN addr-type (RFC 3461 §4.2: atom).
// RFC 3461 §4.2 says "atom", but the registered types (rfc822, utf-8, x400, unknown) are
// letters, digits and '-', and so is what the SMTP client will put on the wire: accepting more
// here would queue a message that can only bounce.
bool is_addr_type(std::string_view t) {
  if (t.empty()) return false;
  for (char c : t) {
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-'))
      return false;
  }
  return true;
}

std::string_view strip_brackets(std::string_view s) {
  if (s.size() >= 2 && s.front() == '<' && s.back() == '>') return s.substr(1, s.size() - 2);
  return s;
}

}  // namespace

Result<Address> Address::parse(std::string_view s) {
  if (s.empty()) return invalid("empty address");
  // Control characters first: they are the injection risk, and the caller gets the exact
  // offset whatever else is wrong with the value.
  if (const std::size_t off = find_control(s); off != std::string_view::npos) {
    return Error(errc::forbidden_character,
                 fmt::format("address contains {} at offset {}",
                             describe_control(static_cast<unsigned char>(s[off])), off));
  }

  std::size_t local_end = 0;
  if (s.front() == '"') {
    if (auto e = check_quoted_string(s, &local_end)) return *e;
    if (local_end == s.size()) return invalid("missing '@' after the quoted local part");
    if (s[local_end] != '@') {
      return invalid(fmt::format("unexpected character {} after the quoted local part at offset {}",
                                 show_char(static_cast<unsigned char>(s[local_end])), local_end));
    }
  } else {
    local_end = s.find('@');
    if (local_end == std::string_view::npos) {
      return invalid("missing '@' between local part and domain");
    }
    if (auto e = check_dot_string(s.substr(0, local_end))) return *e;
  }

  const std::string_view local = s.substr(0, local_end);
  const std::string_view domain = s.substr(local_end + 1);
  if (local.size() > kMaxLocalPart) {
    return Error(errc::too_long, fmt::format("local part is {} octets, the limit is {}",
                                             local.size(), kMaxLocalPart));
  }
  if (domain.size() > kMaxDomain) {
    return Error(errc::too_long,
                 fmt::format("domain is {} octets, the limit is {}", domain.size(), kMaxDomain));
  }
  if (auto e = check_domain(domain, local_end + 1)) return *e;
  // RFC 5321 §4.5.3.1.3: the path, angle brackets included, is at most 256 octets.
  if (s.size() + 2 > kMaxPath) {
    return Error(errc::too_long,
                 fmt::format("path is {} octets with its angle brackets, the limit is {}",
                             s.size() + 2, kMaxPath));
  }
  return Address(std::string(local), std::string(domain));
}

std::string Address::routing_domain() const {
  std::string d = domain_;
  for (char& c : d) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return d;
}

std::error_code check_envelope_value(std::string_view value, std::string* message) {
  const std::size_t off = find_control(value);
  if (off == std::string_view::npos) return {};
  return fail(message, errc::forbidden_character,
              fmt::format("value contains {} at offset {}",
                          describe_control(static_cast<unsigned char>(value[off])), off));
}

namespace {

// RFC 3461 §4.4: printable US-ASCII, at most 100 characters.
std::error_code check_envid(std::string_view envid, std::string* message) {
  std::string why;
  if (check_envelope_value(envid, &why)) {
    return fail(message, errc::forbidden_character, "ENVID " + why);
  }
  if (envid.size() > 100) {
    return fail(message, errc::invalid_parameter,
                fmt::format("ENVID is {} characters, the limit is 100", envid.size()));
  }
  for (std::size_t i = 0; i < envid.size(); ++i) {
    if (static_cast<unsigned char>(envid[i]) >= 0x80) {
      return fail(message, errc::invalid_parameter,
                  fmt::format("ENVID contains a non-ASCII octet at offset {}", i));
    }
  }
  return {};
}

std::error_code check_notify(std::uint8_t notify, const std::string& prefix, std::string* message) {
  if ((notify & ~(kNotifyNever | kNotifySuccess | kNotifyFailure | kNotifyDelay)) != 0) {
    return fail(message, errc::invalid_parameter, prefix + "unknown NOTIFY flag");
  }
  if ((notify & kNotifyNever) != 0 && notify != kNotifyNever) {
    return fail(message, errc::invalid_parameter,
                prefix + "NOTIFY=NEVER cannot be combined with SUCCESS, FAILURE or DELAY");
  }
  return {};
}

// RFC 3461 §4.2: addr-type ";" address, at most 500 characters. The address is kept decoded
// (plain text or UTF-8, RFC 6533); encoding it as xtext is the wire's job.
std::error_code check_orcpt(std::string_view orcpt, const std::string& prefix,
                            std::string* message) {
  std::string why;
  if (check_envelope_value(orcpt, &why)) {
    return fail(message, errc::forbidden_character, prefix + "ORCPT " + why);
  }
  if (orcpt.size() > 500) {
    return fail(message, errc::invalid_parameter,
                fmt::format("{}ORCPT is {} characters, the limit is 500", prefix, orcpt.size()));
  }
  const std::size_t semi = orcpt.find(';');
  if (semi == std::string::npos) {
    return fail(message, errc::invalid_parameter,
                prefix + "ORCPT must be \"addr-type;address\" (missing ';')");
  }
  if (!is_addr_type(orcpt.substr(0, semi))) {
    return fail(message, errc::invalid_parameter,
                prefix + "ORCPT address type must be letters, digits and '-' such as \"rfc822\"");
  }
  const std::string_view addr = orcpt.substr(semi + 1);
  if (addr.empty()) {
    return fail(message, errc::invalid_parameter, prefix + "ORCPT has an empty address");
  }
  for (std::size_t i = 0; i < addr.size();) {
    const auto c = static_cast<unsigned char>(addr[i]);
    if (c >= 0x80) {
      const std::size_t len = utf8_sequence(addr, i);
      if (len == 0) {
        return fail(
            message, errc::invalid_parameter,
            fmt::format("{}ORCPT contains invalid UTF-8 at offset {}", prefix, semi + 1 + i));
      }
      i += len;
    } else {
      ++i;
    }
  }
  return {};
}

}  // namespace

std::error_code Envelope::validate(std::string* message) const {
  if (recipients.empty()) return fail(message, errc::no_recipients, "no recipients");

  // Addresses can only be made by Address::parse; parsing their text again re-checks the
  // limits cheaply and keeps this function the single gate in front of the wire.
  if (reverse_path) {
    auto r = Address::parse(reverse_path->to_string());
    if (!r) return fail(message, r.error(), "reverse path: ");
  }
  if (!envid.empty()) {
    if (auto ec = check_envid(envid, message)) return ec;
  }
  for (std::size_t n = 0; n < recipients.size(); ++n) {
    const Recipient& rcpt = recipients[n];
    const std::string prefix = fmt::format("recipient {}: ", n + 1);
    auto r = Address::parse(rcpt.address.to_string());
    if (!r) return fail(message, r.error(), prefix);
    if (auto ec = check_notify(rcpt.notify, prefix, message)) return ec;
    if (!rcpt.orcpt.empty()) {
      if (auto ec = check_orcpt(rcpt.orcpt, prefix, message)) return ec;
    }
  }
  return {};
}

Result<Envelope> make_envelope(std::string_view from, const std::vector<std::string>& to) {
  Envelope env;
  const std::string_view sender = strip_brackets(from);
  if (!sender.empty()) {
    auto a = Address::parse(sender);
    if (!a) return Error(a.error().code, "reverse path: " + a.error().message);
    env.reverse_path = std::move(a.value());
  }
  for (std::size_t n = 0; n < to.size(); ++n) {
    const std::string_view rcpt = strip_brackets(to[n]);
    if (rcpt.empty()) {
      return Error(errc::invalid_address, fmt::format("recipient {}: empty forward path", n + 1));
    }
    auto a = Address::parse(rcpt);
    if (!a) {
      return Error(a.error().code, fmt::format("recipient {}: {}", n + 1, a.error().message));
    }
    env.recipients.emplace_back(std::move(a.value()));
  }
  std::string why;
  if (auto ec = env.validate(&why)) return Error(ec, why);
  return env;
}

}  // namespace mailq
