#include "core/delivery/trouble.h"

#include "mailq/log.h"

namespace mailq::detail {

SessionVerdict judge_session_failure(const smtp_event::Failed& f, bool was_ready, TlsPolicy policy,
                                     bool plaintext_retry) {
  SessionVerdict v;
  if (was_ready && !f.connection_level) return v;  // none
  if (f.tls_failure && policy == TlsPolicy::opportunistic && !plaintext_retry) {
    v.action = SessionVerdict::Action::retry_plaintext;
    return v;
  }
  if (f.connection_level) {
    v.action = SessionVerdict::Action::unreachable;
    v.reply = f.reply;
    return v;
  }
  // Not a connection failure (TLS policy, EHLO refused, AUTH refused...): next host, not
  // counted. Never a bounce from here: a misconfigured or misbehaving host before the
  // transaction (a 535 to AUTH, a 5xx to EHLO) defers the mail, as Postfix's soft bounce
  // does, so that fixing the configuration loses nothing.
  v.action = SessionVerdict::Action::next_host;
  v.reply = soften(f.reply);
  return v;
}

Reply soften(Reply reply) {
  if (reply.permanent()) {
    reply.code = 451;
    if (!reply.enhanced.empty()) reply.enhanced[0] = '4';
  }
  return reply;
}

bool counts_against_destination(std::error_code ec) {
  return !(ec == std::errc::too_many_files_open || ec == std::errc::too_many_files_open_in_system ||
           ec == std::errc::not_enough_memory || ec == std::errc::no_buffer_space);
}

Reply exhausted_reply(const HostFailure& last) {
  if (!last.reply.empty()) return last.reply;
  if (!last.set) return replies::connection_failed("no usable host");
  const Note& n = last.note;
  if (n.kind == Note::Kind::session && !n.reply.empty()) {
    constexpr std::string_view kInternal = "[internal] ";
    if (n.reply.text.compare(0, kInternal.size(), kInternal) == 0) {
      // mailq's own reply about the session (a timeout, a lost connection, a protocol
      // error): its code, with the host it happened with. One code in the text, not two.
      std::string text(kInternal);
      if (!n.hop.host.empty()) text += hop_line(n.hop) + " ";
      text += n.reply.text.substr(kInternal.size());
      return Reply(n.reply.code, n.reply.enhanced, std::move(text));
    }
    // The server's own words (a 421 or 554 greeting): as it said them, never permanent from
    // here; the host is in the log record.
    return soften(n.reply);
  }
  return replies::connection_failed(diagnostic_lines({n}).front());
}

Note exhausted_note(const HostFailure& last, const Reply& reply) {
  if (!last.set) return Note::words(reply.to_string());
  return last.note;
}

}  // namespace mailq::detail
