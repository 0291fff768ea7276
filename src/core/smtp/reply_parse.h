// SMTP reply parsing (RFC 5321 §4.2, RFC 3463 enhanced status codes). Internal.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "mailq/reply.h"

namespace mailq::detail {

/// One complete reply: the value handed to users, and the raw text of each line after the
/// code and separator (enhanced status codes not removed), which EHLO keyword parsing needs.
struct ParsedReply {
  Reply reply;
  std::vector<std::string> lines;
};

/// Incremental reply parser: bytes go in split anywhere, complete replies come out.
///
/// A line ends at LF; a CR before it is dropped, so bare-LF servers are tolerated. A line is
/// a three-digit code (first digit 2-5), then '-' (more lines follow), ' ' or the end of the
/// line (last line). Everything else is a protocol error, after which the parser stays in
/// error: the byte stream is out of step and nothing after it can be trusted.
class ReplyParser {
 public:
  enum class Status { need_more, reply, error };

  ReplyParser(std::size_t max_line, std::size_t max_lines)
      : max_line_(max_line), max_lines_(max_lines) {}

  void feed(std::string_view bytes);
  /// Extracts the next complete reply into `out`. On `error`, `why` says what was wrong in
  /// words fit for a log line.
  Status next(ParsedReply* out, std::string* why);
  /// Whether any byte was received and not yet consumed by a returned reply (a partial line,
  /// or lines of a reply not complete yet, or further complete replies).
  bool buffered() const noexcept { return pos_ < buf_.size() || !lines_.empty(); }
  /// Forgets everything buffered (the plaintext before a TLS handshake).
  void clear();

 private:
  Status fail(std::string why, std::string* out);

  std::size_t max_line_;
  std::size_t max_lines_;
  std::string buf_;
  std::size_t pos_ = 0;  // first unconsumed byte of buf_
  // The reply being assembled.
  int code_ = 0;
  std::vector<std::string> lines_;
  bool failed_ = false;
  std::string failure_;
};

/// Builds the Reply of a complete set of lines: splits the enhanced status code off each
/// line (taken when its class agrees with the reply code; on later lines removed only when
/// equal to the first line's), replaces control characters in the text (they would otherwise
/// travel into log lines and DSN header fields) and joins the lines with "\n".
Reply make_reply(int code, const std::vector<std::string>& lines);

/// A short printable rendering of received text for diagnostics: control characters and
/// non-ASCII octets escaped, cut after `max` characters.
std::string printable(std::string_view s, std::size_t max = 64);

/// "250 2.1.0 text" with only the first line of the text, for diagnostics.
std::string reply_summary(const Reply& r);

}  // namespace mailq::detail
