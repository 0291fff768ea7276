// Fuzz target: the SMTP reply parser (parse_reply, ReplyParser, make_reply).
//
// Input: one byte choosing the split pattern and the limits, then the bytes a server sent.
// Checks: the incremental parser gives the same replies and the same end (error or need
// more) whether the bytes come in one piece or split anywhere; every reply has a code in
// 200..599 and a text without control characters (other than HT, and "\n" between lines);
// parse_reply agrees with the parser on a single reply.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "core/smtp/reply_parse.h"
#include "fuzz_support.h"
#include "mailq/smtp_client.h"

namespace mailq::fuzz {

namespace smtp_reply_detail {

struct Outcome {
  std::vector<detail::ParsedReply> replies;
  bool error = false;
};

inline void drain(detail::ReplyParser& p, Outcome& o) {
  for (;;) {
    detail::ParsedReply r;
    std::string why;
    const auto st = p.next(&r, &why);
    if (st == detail::ReplyParser::Status::need_more) return;
    if (st == detail::ReplyParser::Status::error) {
      MAILQ_FUZZ_CHECK(!why.empty(), "an error must say why");
      o.error = true;
      // Stays in error: the stream is out of step.
      detail::ParsedReply again;
      MAILQ_FUZZ_CHECK(p.next(&again, nullptr) == detail::ReplyParser::Status::error,
                       "the parser must stay in error");
      return;
    }
    o.replies.push_back(std::move(r));
  }
}

inline void check_reply(const Reply& r, std::size_t max_lines) {
  MAILQ_FUZZ_CHECK(r.code >= 200 && r.code <= 599, r.to_string());
  std::size_t lines = 1;
  for (char c : r.text) {
    auto u = static_cast<unsigned char>(c);
    if (c == '\n') {
      ++lines;
      continue;
    }
    MAILQ_FUZZ_CHECK(!((u < 0x20 && c != '\t') || u == 0x7f), "control character in reply text");
  }
  MAILQ_FUZZ_CHECK(lines <= max_lines, "more lines than allowed");
  if (!r.enhanced.empty()) {
    MAILQ_FUZZ_CHECK(r.enhanced[0] == static_cast<char>('0' + r.code / 100),
                     "enhanced code class differs from the reply class");
    MAILQ_FUZZ_CHECK(!has_control(r.enhanced), "control character in enhanced code");
  }
  // The rendering used in logs and DSNs stays on one line.
  const std::string s = r.to_string();
  MAILQ_FUZZ_CHECK(s.find('\n') == std::string::npos && s.find('\r') == std::string::npos,
                   "Reply::to_string spans lines");
  const std::string summary = detail::reply_summary(r);
  MAILQ_FUZZ_CHECK(summary.find('\n') == std::string::npos, "reply_summary spans lines");
}

}  // namespace smtp_reply_detail

inline void run_smtp_reply(std::string_view data) {
  using namespace smtp_reply_detail;
  Input in(data);
  const std::uint8_t mode = in.byte();
  // Small limits (sometimes) so that the limit paths are reachable with small inputs.
  const std::size_t max_line = (mode & 0x80) ? 16 + (mode & 0x0f) : 4096;
  const std::size_t max_lines = (mode & 0x40) ? 1 + ((mode >> 4) & 0x03) : 256;
  const std::string_view bytes = in.rest();

  Outcome whole;
  {
    detail::ReplyParser p(max_line, max_lines);
    p.feed(bytes);
    drain(p, whole);
  }
  Outcome split;
  {
    detail::ReplyParser p(max_line, max_lines);
    Rng rng(mode * 2654435761u + static_cast<std::uint32_t>(bytes.size()));
    const std::uint32_t max_chunk = (mode & 0x07) == 0 ? 1 : 1u << (mode & 0x07);
    std::string_view rest = bytes;
    while (!rest.empty()) {
      const std::size_t n = 1 + rng.below(max_chunk);
      p.feed(rest.substr(0, n));
      rest.remove_prefix(std::min(n, rest.size()));
      drain(p, split);
      if (split.error) break;
    }
  }
  MAILQ_FUZZ_CHECK(whole.error == split.error, "the split changed the outcome");
  MAILQ_FUZZ_CHECK(whole.replies.size() == split.replies.size(), "the split changed the replies");
  for (std::size_t i = 0; i < whole.replies.size(); ++i) {
    MAILQ_FUZZ_CHECK(whole.replies[i].reply == split.replies[i].reply, "reply differs");
    MAILQ_FUZZ_CHECK(whole.replies[i].lines == split.replies[i].lines, "reply lines differ");
    check_reply(whole.replies[i].reply, max_lines);
  }

  // The public one-reply parser, with the default limits.
  if (auto r = parse_reply(bytes)) {
    check_reply(*r, 256);
    if (max_line == 4096 && max_lines == 256 && !bytes.empty() && bytes.back() == '\n') {
      MAILQ_FUZZ_CHECK(whole.replies.size() == 1 && !whole.error, "parse_reply disagrees");
      MAILQ_FUZZ_CHECK(whole.replies[0].reply == *r, "parse_reply gives another reply");
    }
  }
  (void)detail::printable(bytes, mode);
}

}  // namespace mailq::fuzz
