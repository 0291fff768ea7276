// 8-bit to 7-bit conversion of a message for a server that does not offer 8BITMIME
// (RFC 6152 §3: "convert to 7 bit or return it"). Internal to the SMTP client.
//
// MIME-aware, as Postfix does it: every leaf entity whose body holds octets above 127 is
// re-encoded, text/* as quoted-printable and anything else as base64, its
// Content-Transfer-Encoding field replaced; multipart entities are walked part by part (their
// preamble and epilogue, which no reader shows, keep their 7-bit octets only); message/rfc822
// is converted as a message; an entity labelled 8bit whose body turned out 7-bit is relabelled
// 7bit. A message without MIME fields is made a text/plain entity (charset unknown-8bit,
// RFC 1428) in quoted-printable. What cannot be converted without changing what the recipient
// reads is refused: a header field with 8-bit octets (that is SMTPUTF8's business),
// message/global, a multipart body whose boundary never appears.
#pragma once

#include <string>
#include <string_view>

#include "mailq/error.h"

namespace mailq::detail {

/// The 7-bit form of `message` (CRLF line ends), or why it cannot be made
/// (`errc::invalid_parameter` with the reason).
Result<std::string> downgrade_to_7bit(std::string_view message);

/// Quoted-printable of `data` (RFC 2045 §6.7): lines of at most 76 characters with soft
/// breaks, CRLF line ends kept as line ends, trailing white space encoded.
std::string quoted_printable(std::string_view data);
/// Base64 of `data` (RFC 2045 §6.8) in lines of 76 characters, each ending in CRLF.
std::string base64_lines(std::string_view data);

}  // namespace mailq::detail
