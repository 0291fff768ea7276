// DKIM canonicalisation (RFC 6376 §3.4) and the choice of header fields to sign (§5.4).
// Internal to the DKIM signer; the unit tests reach it through this header.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "mailq/dkim.h"

namespace mailq::dkim::detail {

using Digest = std::array<unsigned char, 32>;

/// One header field of a message as written: its name (before the colon, white space before
/// the colon removed) and the whole field, continuation lines and final CRLF included.
struct HeaderField {
  std::string_view name;
  std::string_view raw;
};

/// A message (CRLF line ends) split into its header fields and body. A header line that is
/// neither a field nor a continuation has an empty name (never signed).
struct ParsedMessage {
  std::vector<HeaderField> fields;
  std::string_view body;  ///< after the empty line; "" when there is none
};
ParsedMessage parse_message(std::string_view message);

/// The canonical form of a header field, CRLF included (§3.4.1, §3.4.2).
std::string canonical_header(const HeaderField& field, Canonicalization c);
/// The canonical body (§3.4.3, §3.4.4): what the body hash covers.
std::string canonical_body(std::string_view body, Canonicalization c);
/// SHA-256 of `canonical_body(body, c)`, computed without building it.
Digest body_hash(std::string_view body, Canonicalization c);

/// The h= list for `message`: each name of `sign` present in the message, once per
/// instance, and once more when it is in `oversign`; lowercased; in the order of `sign`.
std::vector<std::string> signed_names(const ParsedMessage& message,
                                      const std::vector<std::string>& sign,
                                      const std::vector<std::string>& oversign);

/// The data the signature covers (§3.7): the fields named by `names` (each name takes the
/// next instance from the bottom; none left: nothing), canonicalised, then
/// `signature_field` (a DKIM-Signature field with an empty b= value, no final CRLF)
/// canonicalised without its CRLF.
std::string signed_data(const ParsedMessage& message, const std::vector<std::string>& names,
                        std::string_view signature_field, Canonicalization c);

Digest sha256(std::string_view data);
std::string base64(const unsigned char* data, std::size_t size);
/// Decodes base64, white space ignored. Empty on malformed input.
std::vector<unsigned char> base64_decode(std::string_view text);

bool iequals(std::string_view a, std::string_view b) noexcept;

}  // namespace mailq::dkim::detail
