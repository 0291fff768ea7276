// Small text helpers shared by the core. Internal.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "mailq/error.h"
#include "mailq/events.h"

namespace mailq::detail {

/// The part after the last '@' ("" when none).
std::string_view domain_of(std::string_view address);
std::string to_lower(std::string_view s);
/// Whether `s` is a host name: dot-separated labels of letters, digits and '-' (and '_' when
/// `underscore`, as DKIM selectors have), none empty or longer than 63, 253 octets at most.
bool is_host_name(std::string_view s, bool underscore = false) noexcept;
/// Checks a message body before it is queued: no NUL, no line longer than 998 octets
/// (RFC 5321 §4.5.3.1.6). Returns the error to report, or nullopt.
std::optional<Error> check_body(std::string_view body);
/// Whether any octet is 0x80 or above. Scans a word at a time (a message body is scanned
/// whole on every delivery).
bool has_8bit(std::string_view s) noexcept;
/// The header section of a message: everything before the first empty line (or all of it
/// when there is no body).
std::string_view header_section(std::string_view message) noexcept;
/// Whether `s` is well-formed UTF-8 (RFC 3629: no overlong forms, no surrogates, at most
/// U+10FFFF).
bool valid_utf8(std::string_view s) noexcept;
/// The unfolded value of the first header field `name` in the header section, "" if none.
std::string header_value(std::string_view message, std::string_view name);
/// Walks the header section of `message` line by line (line ends removed), calling
/// `each(line, next)` with `next` the offset of the line after it; stops at the empty line
/// that ends the section, or when `each` returns false.
template <class F>
void for_each_header_line(std::string_view message, F&& each) {
  std::size_t pos = 0;
  while (pos < message.size()) {
    std::size_t eol = message.find('\n', pos);
    if (eol == std::string_view::npos) eol = message.size();
    std::string_view line = message.substr(pos, eol - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || !each(line, eol + 1)) return;
    pos = eol + 1;
  }
}
}  // namespace mailq::detail
