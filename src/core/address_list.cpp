// Address lists (RFC 5322 §3.4): the mailboxes a From, To, Cc, Bcc or Reply-To field names.

#include <fmt/format.h>

#include <string>
#include <vector>

#include "core/address_chars.h"
#include "mailq/address.h"

namespace mailq {

using detail::describe_control;
using detail::is_control;

namespace {

// Appends the quoted string that starts at s[i] ('"') to `out` as written, quotes and
// backslash escapes kept, and returns the offset of its closing quote (the end of `s` when it
// has none).
std::size_t take_quoted(std::string_view s, std::size_t i, std::string& out) {
  out += s[i];
  for (++i; i < s.size(); ++i) {
    out += s[i];
    if (s[i] == '\\' && i + 1 < s.size()) {
      out += s[++i];
      continue;
    }
    if (s[i] == '"') break;
  }
  return i;
}

}  // namespace

std::vector<std::string> split_address_list(std::string_view s) {
  std::vector<std::string> out;
  std::string phrase;  // text outside angle brackets, comments removed
  std::string angle;   // the angle address, when one was seen
  bool have_angle = false;
  auto finish = [&] {
    std::string a = have_angle ? angle : phrase;
    // Trim and drop the source route of "<@a,@b:user@host>".
    auto trim = [](std::string& t) {
      std::size_t b = t.find_first_not_of(" \t");
      std::size_t e = t.find_last_not_of(" \t");
      t = b == std::string::npos ? std::string() : t.substr(b, e - b + 1);
    };
    trim(a);
    if (!a.empty() && a[0] == '@') {
      std::size_t colon = a.find(':');
      a = colon == std::string::npos ? std::string() : a.substr(colon + 1);
      trim(a);
    }
    if (!a.empty()) out.push_back(std::move(a));
    phrase.clear();
    angle.clear();
    have_angle = false;
  };
  for (std::size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '"') {
      // A quoted string: kept as written (a quoted local part needs its quotes).
      i = take_quoted(s, i, phrase);
    } else if (c == '(') {
      int depth = 1;
      for (++i; i < s.size() && depth > 0; ++i) {
        if (s[i] == '\\') {
          ++i;
          continue;
        }
        if (s[i] == '(') ++depth;
        if (s[i] == ')') --depth;
      }
      --i;
      phrase += ' ';
    } else if (c == '<') {
      std::string a;
      for (++i; i < s.size() && s[i] != '>'; ++i) {
        if (s[i] == '"')
          i = take_quoted(s, i, a);
        else
          a += s[i];
      }
      angle = a;
      have_angle = true;
    } else if (c == '[') {
      // A domain literal ("[IPv6:2001:db8::1]"): its colons are no group.
      std::size_t end = s.find(']', i);
      if (end == std::string_view::npos) end = s.size() - 1;
      (have_angle ? angle : phrase) += s.substr(i, end - i + 1);
      i = end;
    } else if (c == ':' && !have_angle && phrase.find('@') == std::string::npos) {
      // A group's display name ends here; its members follow.
      phrase.clear();
    } else if (c == ',' || c == ';') {
      finish();
    } else {
      if (have_angle && c != ' ' && c != '\t') {
        // Text after an angle address: not an address-list; keep it so that it fails loudly.
        angle += c;
      }
      phrase += c;
    }
  }
  finish();
  return out;
}

Result<std::vector<Address>> parse_address_list(std::string_view value) {
  // Controls first, on the whole value: one in a display name or a comment is dropped by the
  // split, but the value is no address list (and a CR or LF in it would start a new line).
  for (std::size_t i = 0; i < value.size(); ++i) {
    const auto c = static_cast<unsigned char>(value[i]);
    if (c != '\t' && is_control(c))
      return Error(errc::forbidden_character,
                   fmt::format("address list contains {} at offset {}", describe_control(c), i));
  }
  std::vector<Address> out;
  for (const std::string& text : split_address_list(value)) {
    auto a = Address::parse(text);
    if (!a) return Error(a.error().code, "\"" + text + "\": " + a.error().message);
    out.push_back(std::move(a.value()));
  }
  return out;
}

}  // namespace mailq
