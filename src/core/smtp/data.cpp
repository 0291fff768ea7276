#include "core/smtp/data.h"

#include <cstring>
#include <string>

#include "mailq/smtp_client.h"

namespace mailq {
namespace detail {

namespace {

// CRLF line ends (see encode_data for the rules), a final CRLF when missing; with `stuff`,
// a leading "." doubled and ".\r\n" appended.
std::string encode_lines(std::string_view body, EncodeInfo* info, bool stuff) {
  std::string out;
  out.reserve(body.size() + body.size() / 32 + 8);
  std::uint64_t stuffed = 0;
  bool bol = true;  // at the beginning of an output line
  const char* const base = body.data();
  const std::size_t n = body.size();
  std::size_t i = 0;
  while (i < n) {
    // The next line break: memchr for LF, then a CR before it (a bare CR is a break too).
    // Both are vectorized; a byte-wise find_first_of("\r\n") is not.
    const void* lf = std::memchr(base + i, '\n', n - i);
    std::size_t j = lf ? static_cast<std::size_t>(static_cast<const char*>(lf) - base) : n;
    if (const void* cr = std::memchr(base + i, '\r', j - i))
      j = static_cast<std::size_t>(static_cast<const char*>(cr) - base);
    if (j > i) {
      if (stuff && bol && body[i] == '.') {
        out += '.';
        ++stuffed;
      }
      out.append(base + i, j - i);
      bol = false;
    }
    if (j == n) break;
    if (body[j] == '\n') {
      out += "\r\n";
      i = j + 1;
    } else {
      // A run of CRs ending in LF is one line break (CR CR LF comes from converting CRLF
      // twice); CRs not followed by LF are each a line break of their own.
      std::size_t k = j;
      while (k < n && body[k] == '\r') ++k;
      if (k < n && body[k] == '\n') {
        out += "\r\n";
        i = k + 1;
      } else {
        for (; j < k; ++j) out += "\r\n";
        i = k;
      }
    }
    bol = true;
  }
  if (!bol) out += "\r\n";
  if (info) info->size = out.size() - stuffed;
  if (stuff) out += ".\r\n";
  return out;
}

}  // namespace

std::string encode_data(std::string_view body, EncodeInfo* info) {
  return encode_lines(body, info, true);
}

std::string normalize_lines(std::string_view body) {
  return encode_lines(body, nullptr, false);
}

}  // namespace detail

std::string encode_data(std::string_view body) {
  return detail::encode_data(body, nullptr);
}

}  // namespace mailq
