// mailq — SMTP replies and delivery outcomes.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace mailq {

/// An SMTP reply as received from a server, or synthesised by mailq for outcomes that did not
/// come from the wire (those carry the text prefix "[internal]", as in
/// `451 4.4.1 [internal] connection was not attempted: domain is marked down (too many
/// connection failures)`).
///
/// The reply class is part of the type: 2xx positive, 4xx transient (retry later), 5xx
/// permanent (bounce). A multi-line reply keeps its lines joined with "\n" in `text`, the
/// enhanced status code (RFC 3463) removed from each line.
struct Reply {
  int code = 0;          ///< three-digit reply code, 0 when none
  std::string enhanced;  ///< "4.4.1", empty when the server sent none
  std::string text;      ///< human text without code and enhanced status code

  Reply() = default;
  Reply(int c, std::string e, std::string t)
      : code(c), enhanced(std::move(e)), text(std::move(t)) {}

  bool positive() const noexcept { return code >= 200 && code < 400; }
  bool transient() const noexcept { return code >= 400 && code < 500; }
  bool permanent() const noexcept { return code >= 500 && code < 600; }
  bool empty() const noexcept { return code == 0; }

  /// "451 4.4.1 text" (the enhanced code omitted when empty; later lines joined with "; ").
  std::string to_string() const;

  friend bool operator==(const Reply& a, const Reply& b) {
    return a.code == b.code && a.enhanced == b.enhanced && a.text == b.text;
  }
  friend bool operator!=(const Reply& a, const Reply& b) { return !(a == b); }
};

/// The exact texts of mailq's own replies (DESIGN.md, seeds 000 and 001).
namespace replies {
/// 451 4.4.1 — a destination marked down: no connection was attempted.
Reply domain_marked_down();
/// 421 4.4.4 — the recipient domain could not be resolved (NXDOMAIN, SERVFAIL, timeout).
Reply domain_does_not_resolve();
/// 550 5.1.2 — NXDOMAIN when the route is configured to bounce it.
Reply domain_does_not_exist();
/// 556 5.1.10 — the domain publishes a null MX (RFC 7505).
Reply null_mx();
/// 554 5.4.6 — the MX records point back at this host (mail loops back to myself).
Reply mx_loops_to_self();
/// 550 5.4.4 — the domain has MX records, and every one of their hosts definitely has no
/// address (NXDOMAIN or no A/AAAA record): nothing to connect to, now or later.
Reply no_mx_host_address();
/// 421 4.4.1 — connection-level failure of every host; `detail` is the last diagnostic.
Reply connection_failed(std::string_view detail);
/// 421 4.4.2 — the connection was lost during the session.
Reply connection_lost(std::string_view detail);
/// 451 4.4.7 / 550 5.4.7 — the message stayed in the queue longer than its lifetime.
Reply expired(std::string_view last_reply);
}  // namespace replies

/// Parses one complete reply (all its lines, each ending in CRLF or LF; the last line's
/// terminator may be left off) as received. Returns nullopt on a protocol error (no code or a
/// code outside 2xx-5xx, mismatched codes between lines, bad separator, a line over 4096
/// octets, more than 256 lines) or when the input holds more than one reply.
///
/// The enhanced status code (RFC 3463) is split off into `Reply::enhanced` when the first
/// line starts with one whose class matches the reply code; later lines lose it when it is
/// the same. Lines are joined with "\n"; control characters other than HT in the text become
/// '?', so that a reply cannot inject line breaks into logs or DSN fields.
std::optional<Reply> parse_reply(std::string_view lines);

}  // namespace mailq
