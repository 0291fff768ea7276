// The ESMTP parameter encodings of the SMTP room: xtext (RFC 3461 §4) both ways, the DSN
// NOTIFY and ORCPT values of RCPT (RFC 3461 §4.1, §4.2), and base64 for AUTH (RFC 4954).
// Internal.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace mailq::detail {

/// RFC 3461 §4: xtext. Octets outside "!".."~", "+" and "=" become "+XX".
std::string xtext(std::string_view s);
/// The decoded text of an xtext value; nullopt when it is not xtext (hexchar needs two
/// upper-case hex digits).
std::optional<std::string> xtext_decode(std::string_view s);

std::string base64(std::string_view s);
/// Strict base64 (RFC 4648 §4, as RFC 4954 uses it): the alphabet, padding only at the end,
/// a length that is a multiple of 4, no white space. Nullopt otherwise.
std::optional<std::string> base64_decode(std::string_view s);

/// "rfc822;user@example.org" -> "rfc822;user@example.org" with the address part
/// xtext-encoded. A value without an address type is taken as an RFC 822 address. Empty on a
/// malformed type.
std::string orcpt_param(std::string_view orcpt);
/// The ORCPT value of a received RCPT ("addr-type;xtext") with its address decoded; nullopt
/// without a ';' or when the address is not xtext.
std::optional<std::string> orcpt_decode(std::string_view value);

/// The NOTIFY value of a recipient's flags: "NEVER" or a list of SUCCESS, FAILURE and DELAY;
/// empty for the default.
std::string notify_param(std::uint8_t notify);
/// The flags of a received NOTIFY value (keywords in any case); nullopt for an unknown
/// keyword, an empty item or NEVER combined with another.
std::optional<std::uint8_t> notify_decode(std::string_view value);

}  // namespace mailq::detail
