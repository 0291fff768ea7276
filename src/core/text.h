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
/// Checks a message body before it is queued: no NUL, no line longer than 998 octets
/// (RFC 5321 §4.5.3.1.6). Returns the error to report, or nullopt.
std::optional<Error> check_body(std::string_view body);
/// Whether any octet is 0x80 or above. Scans a word at a time (a message body is scanned
/// whole on every delivery).
bool has_8bit(std::string_view s) noexcept;
/// The unfolded value of the first header field `name` in the header section, "" if none.
std::string header_value(std::string_view message, std::string_view name);
}  // namespace mailq::detail
