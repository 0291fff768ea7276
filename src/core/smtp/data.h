// The message data of the SMTP client: the body encoded for DATA (mailq::encode_data in
// mailq/smtp_client.h), with the size the SIZE parameter declares. Internal.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace mailq::detail {

struct EncodeInfo {
  std::uint64_t size = 0;  // RFC 1870 size: CRLF line endings, no stuffing, no final dot
};

/// encode_data, and when `info` is given the RFC 1870 size of the result.
std::string encode_data(std::string_view body, EncodeInfo* info);

/// The message as encode_data sends it, before dot-stuffing: CRLF line ends by the same
/// rules, a final CRLF added when missing, no terminator. What a signer sees.
std::string normalize_lines(std::string_view body);

}  // namespace mailq::detail
