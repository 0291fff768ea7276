#include "core/smtp/reply_parse.h"

#include <cstdio>
#include <optional>
#include <string>

#include "mailq/smtp_client.h"

namespace mailq::detail {
namespace {

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

// Length of an RFC 3463 status code ("4.7.1", "5.1.10") at the start of `t` when its class
// is `klass` and it is followed by a space or the end of the line; 0 otherwise.
std::size_t enhanced_length(std::string_view t, int klass) {
  if (t.size() < 5 || t[0] != static_cast<char>('0' + klass) || t[1] != '.') return 0;
  std::size_t i = 2;
  for (int part = 0; part < 2; ++part) {
    std::size_t digits = 0;
    while (i < t.size() && is_digit(t[i]) && digits < 4) ++i, ++digits;
    if (digits == 0 || digits > 3) return 0;
    if (part == 0) {
      if (i >= t.size() || t[i] != '.') return 0;
      ++i;
    }
  }
  if (i < t.size() && t[i] != ' ') return 0;
  return i;
}

void append_sanitised(std::string& out, std::string_view t) {
  for (char c : t) {
    auto u = static_cast<unsigned char>(c);
    out += (u < 0x20 && c != '\t') || u == 0x7f ? '?' : c;
  }
}

}  // namespace

void ReplyParser::feed(std::string_view bytes) {
  if (failed_) return;
  buf_.append(bytes);
}

void ReplyParser::clear() {
  buf_.clear();
  pos_ = 0;
  code_ = 0;
  lines_.clear();
}

ReplyParser::Status ReplyParser::fail(std::string why, std::string* out) {
  failed_ = true;
  failure_ = std::move(why);
  if (out) *out = failure_;
  buf_.clear();
  pos_ = 0;
  lines_.clear();
  return Status::error;
}

ReplyParser::Status ReplyParser::next(ParsedReply* out, std::string* why) {
  if (failed_) {
    if (why) *why = failure_;
    return Status::error;
  }
  for (;;) {
    std::size_t eol = buf_.find('\n', pos_);
    if (eol == std::string::npos) {
      // +1: the CR of a CRLF may already be here while its LF is still on the way.
      if (buf_.size() - pos_ > max_line_ + 1)
        return fail("reply line longer than " + std::to_string(max_line_) + " octets", why);
      if (pos_ == buf_.size()) {
        buf_.clear();
        pos_ = 0;
      } else if (pos_ > 4096) {
        buf_.erase(0, pos_);
        pos_ = 0;
      }
      return Status::need_more;
    }
    std::string_view line(buf_.data() + pos_, eol - pos_);
    pos_ = eol + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.size() > max_line_)
      return fail("reply line longer than " + std::to_string(max_line_) + " octets", why);
    if (line.size() < 3 || line[0] < '2' || line[0] > '5' || !is_digit(line[1]) ||
        !is_digit(line[2]))
      return fail("invalid reply code in \"" + printable(line) + "\"", why);
    int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
    bool last;
    if (line.size() == 3 || line[3] == ' ') {
      last = true;
    } else if (line[3] == '-') {
      last = false;
    } else {
      return fail("no separator after the reply code in \"" + printable(line) + "\"", why);
    }
    if (!lines_.empty() && code != code_)
      return fail("mismatched reply codes in a multi-line reply (" + std::to_string(code_) +
                      " then " + std::to_string(code) + ")",
                  why);
    if (lines_.size() >= max_lines_)
      return fail("reply longer than " + std::to_string(max_lines_) + " lines", why);
    code_ = code;
    lines_.emplace_back(line.size() > 4 ? line.substr(4) : std::string_view{});
    if (last) {
      out->reply = make_reply(code_, lines_);
      out->lines = std::move(lines_);
      lines_.clear();
      code_ = 0;
      return Status::reply;
    }
  }
}

Reply make_reply(int code, const std::vector<std::string>& lines) {
  Reply r;
  r.code = code;
  for (std::size_t i = 0; i < lines.size(); ++i) {
    std::string_view t = lines[i];
    std::size_t n = enhanced_length(t, code / 100);
    if (n != 0) {
      std::string_view e = t.substr(0, n);
      bool strip = false;
      if (i == 0) {
        r.enhanced = std::string(e);
        strip = true;
      } else {
        strip = !r.enhanced.empty() && e == r.enhanced;
      }
      if (strip) {
        t.remove_prefix(n);
        while (!t.empty() && t.front() == ' ') t.remove_prefix(1);
      }
    }
    if (i != 0) r.text += '\n';
    append_sanitised(r.text, t);
  }
  return r;
}

std::string printable(std::string_view s, std::size_t max) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (out.size() >= max) {
      out += "...";
      break;
    }
    auto u = static_cast<unsigned char>(s[i]);
    if (u < 0x20 || u >= 0x7f || u == '"' || u == '\\') {
      if (u == '"' || u == '\\') {
        out += '\\';
        out += s[i];
      } else {
        char hex[5];
        std::snprintf(hex, sizeof hex, "\\x%02X", u);
        out += hex;
      }
    } else {
      out += s[i];
    }
  }
  return out;
}

std::string reply_summary(const Reply& r) {
  Reply first = r;
  first.text = r.text.substr(0, r.text.find('\n'));
  std::string s = first.to_string();
  if (s.size() > 200) s = s.substr(0, 200) + "...";
  return s;
}

}  // namespace mailq::detail

namespace mailq {

std::optional<Reply> parse_reply(std::string_view lines) {
  if (lines.empty()) return std::nullopt;
  SmtpClientOptions defaults;
  detail::ReplyParser parser(defaults.max_reply_line, defaults.max_reply_lines);
  parser.feed(lines);
  // The last line's terminator may be left off by a caller holding a single line.
  if (lines.back() != '\n') parser.feed("\r\n");
  detail::ParsedReply out;
  if (parser.next(&out, nullptr) != detail::ReplyParser::Status::reply) return std::nullopt;
  if (parser.buffered()) return std::nullopt;  // more than one reply
  return std::move(out.reply);
}

}  // namespace mailq
