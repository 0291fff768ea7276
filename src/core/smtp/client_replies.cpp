// What each reply to the client leads to: the next command, the end of a transaction, or the
// end of the session.

#include <string>
#include <utility>

#include "core/smtp/client_impl.h"
#include "core/smtp/params.h"

namespace mailq {
namespace {

using detail::reply_summary;

int klass(const Reply& r) {
  return r.code / 100;
}
bool negative(const Reply& r) {
  return klass(r) == 4 || klass(r) == 5;
}

}  // namespace

void SmtpClient::Impl::on_reply(detail::ParsedReply& pr, TimePoint now) {
  Reply& r = pr.reply;
  if (pending.empty()) {
    if (r.code == 421 && phase == SmtpPhase::idle) {
      // RFC 5321 §3.8: a server may announce at any time that it is closing the channel.
      fail(phase, r, !ready_emitted, false);
      return;
    }
    protocol_error("reply received while no command was outstanding: \"" + reply_summary(r) + "\"");
    return;
  }
  Pending p = pending.front();
  if (!p.sent) {
    // The server cannot answer a command it has not received: this reply was sent ahead
    // (or injected), and the stream can no longer be trusted.
    protocol_error("reply \"" + reply_summary(r) + "\" received before the command was sent (" +
                   awaited_name(p.cmd) + ")");
    return;
  }
  pending.pop_front();
  if (r.code == 421 && p.cmd != Cmd::quit) {
    // The server is closing the session: whoever has no answer yet gets this one.
    fail(phase, r, !ready_emitted, false, &r);
    return;
  }
  switch (p.cmd) {
    case Cmd::greeting:
      on_greeting_reply(r, now);
      return;
    case Cmd::ehlo:
      on_ehlo_reply(pr, now);
      return;
    case Cmd::helo:
      on_helo_reply(r, now);
      return;
    case Cmd::starttls:
      on_starttls_reply(r, now);
      return;
    case Cmd::auth_plain:
    case Cmd::auth_login:
    case Cmd::auth_login_user:
    case Cmd::auth_login_pass:
      on_auth_reply(p.cmd, r, now);
      return;
    case Cmd::rset:
      on_rset_reply(r, now);
      return;
    case Cmd::quit:
      close_session();
      return;
    case Cmd::mail:
      on_mail_reply(r, now);
      return;
    case Cmd::rcpt:
      on_rcpt_reply(p.index, r, now);
      return;
    case Cmd::data:
      on_data_reply(r, now);
      return;
    case Cmd::data_term:
      on_data_term_reply(r);
      return;
  }
}

// --- session set-up ---

void SmtpClient::Impl::on_greeting_reply(const Reply& r, TimePoint now) {
  greeting = r;
  if (r.code == 220) {
    send_hello(Cmd::ehlo, now);
  } else if (negative(r)) {
    fail_here(r, true, true);
  } else {
    protocol_error("unexpected greeting \"" + reply_summary(r) + "\"");
  }
}

void SmtpClient::Impl::on_ehlo_reply(const detail::ParsedReply& pr, TimePoint now) {
  const Reply& r = pr.reply;
  if (klass(r) == 2) {
    parse_capabilities(pr);
    after_hello(now);
  } else if (r.permanent()) {
    send_hello(Cmd::helo, now);  // RFC 5321 §3.2: an old server, try HELO
  } else if (r.transient()) {
    fail_here(r, false, true);
  } else {
    protocol_error("unexpected reply to EHLO: \"" + reply_summary(r) + "\"");
  }
}

void SmtpClient::Impl::on_helo_reply(const Reply& r, TimePoint now) {
  if (klass(r) == 2) {
    caps = SmtpCapabilities{};
    size_offered = false;
    after_hello(now);
  } else if (negative(r)) {
    fail_here(r, false, true);
  } else {
    protocol_error("unexpected reply to HELO: \"" + reply_summary(r) + "\"");
  }
}

void SmtpClient::Impl::on_starttls_reply(const Reply& r, TimePoint now) {
  if (klass(r) == 2) {
    if (parser.buffered()) {
      // RFC 3207 §5 / CVE-2011-0411: anything after the 220 arrived in plaintext and
      // would be taken for the server's first TLS-protected reply.
      protocol_error(
          "data received after the reply to STARTTLS, before the TLS handshake "
          "(possible response injection)");
      return;
    }
    phase = SmtpPhase::tls_handshake;
    deadline = now + opt.timeouts.starttls;
    TlsClientOptions o;
    o.server_name = opt.tls_server_name;
    o.verify = opt.tls == TlsPolicy::verify;
    o.ca_file = opt.ca_file;
    if (o.verify) {
      o.tlsa = opt.dane_tlsa;
      o.dane_domain = opt.dane_domain;
    } else {
      o.check = !opt.tls_checked_for.empty();
    }
    emit(smtp_event::StartTls{std::move(o)});
  } else if (negative(r)) {
    if (opt.tls == TlsPolicy::opportunistic) {
      after_hello(now);  // go on in plaintext (RFC 3207 §4)
    } else {
      fail_here({451, "4.7.4",
                 "[internal] STARTTLS required by policy but refused by the server: " +
                     reply_summary(r) + required_by()},
                false, true);
    }
  } else {
    protocol_error("unexpected reply to STARTTLS: \"" + reply_summary(r) + "\"");
  }
}

void SmtpClient::Impl::on_auth_reply(Cmd cmd, const Reply& r, TimePoint now) {
  const AuthCredentials& a = *opt.auth;
  if (r.code == 334) {
    if (cmd == Cmd::auth_login) {
      queue(Cmd::auth_login_user, detail::base64(a.username));
      arm(now);
      return;
    }
    if (cmd == Cmd::auth_login_user) {
      queue(Cmd::auth_login_pass, detail::base64(a.password));
      arm(now);
      return;
    }
    protocol_error("unexpected 334 challenge after the AUTH credentials");
    return;
  }
  if (klass(r) == 2 && (cmd == Cmd::auth_plain || cmd == Cmd::auth_login_pass)) {
    authenticated = true;
    after_hello(now);
    return;
  }
  if (negative(r)) {
    // The server's own verdict on our credentials: passed on as it is (535 is permanent).
    fail_here(r, false, true);
    return;
  }
  protocol_error("unexpected reply to AUTH: \"" + reply_summary(r) + "\"");
}

// --- transactions ---

void SmtpClient::Impl::on_rset_reply(const Reply& r, TimePoint now) {
  if (klass(r) == 2) {
    need_rset = false;
    start_mail(now);
  } else if (negative(r)) {
    Reply others{451, "4.5.0",
                 "[internal] transaction not started: RSET refused: " + reply_summary(r)};
    fail(phase, r, false, false, &others, true);
  } else {
    protocol_error("unexpected reply to RSET: \"" + reply_summary(r) + "\"");
  }
}

void SmtpClient::Impl::on_mail_reply(const Reply& r, TimePoint now) {
  Txn& x = *txn;
  const bool pipelined = caps.pipelining;
  if (klass(r) == 2) {
    if (!pipelined) queue(Cmd::rcpt, rcpt_command(0), 0);
  } else if (negative(r)) {
    x.mail_failure = r;
    need_rset = true;
    // Pipelined: the RCPT and DATA replies are still to come; they are read and
    // ignored, every recipient gets this reply.
    if (!pipelined) return end_txn(r, Reply{});
  } else {
    return protocol_error("unexpected reply to MAIL: \"" + reply_summary(r) + "\"");
  }
  arm(now);
}

void SmtpClient::Impl::on_rcpt_reply(std::size_t index, const Reply& r, TimePoint now) {
  Txn& x = *txn;
  if (klass(r) == 2) {
    ++x.accepted;
  } else if (r.code == 552) {
    // RFC 5321 §4.5.3.1.10: 552 to RCPT has meant "too many recipients"; a client SHOULD take
    // it as 452, a temporary failure (as Postfix does), and send the rest later.
    Reply soft(452, r.enhanced, r.text);
    if (!soft.enhanced.empty()) soft.enhanced[0] = '4';
    x.refused[index] = soft;
  } else if (negative(r)) {
    x.refused[index] = r;
  } else {
    return protocol_error("unexpected reply to RCPT: \"" + reply_summary(r) + "\"");
  }
  if (!caps.pipelining) {
    if (index + 1 < x.t.recipients.size()) {
      queue(Cmd::rcpt, rcpt_command(index + 1), index + 1);
    } else if (x.accepted > 0) {
      queue(Cmd::data, "DATA");
    } else {
      need_rset = true;  // MAIL was accepted: the server holds a transaction
      return end_txn(Reply{}, Reply{});
    }
  }
  arm(now);
}

void SmtpClient::Impl::on_data_reply(const Reply& r, TimePoint now) {
  Txn& x = *txn;
  if (r.code == 354) {
    x.data_intermediate = r.text;
    if (x.mail_failure || x.accepted == 0) {
      // RFC 2920 §3.1: a server should not say 354 without a valid recipient, but if
      // it does, the client must not send the body: an empty message ends the data.
      x.data_discarded = true;
      out += ".\r\n";
      pending.push_back(Pending{Cmd::data_term, 0, false, false});
    } else {
      // The encoded body is needed no more: hand it over instead of copying it.
      if (out.empty())
        out = std::move(x.data);
      else
        out += x.data;
      x.data = std::string();
      pending.push_back(Pending{Cmd::data_term, 0, false, true});
    }
  } else if (negative(r)) {
    need_rset = true;
    return end_txn(r, Reply{});
  } else {
    return protocol_error("unexpected reply to DATA: \"" + reply_summary(r) + "\"");
  }
  arm(now);
}

void SmtpClient::Impl::on_data_term_reply(const Reply& r) {
  if (txn->data_discarded) {
    need_rset = true;
    return end_txn(Reply{}, Reply{});
  }
  if (klass(r) == 2 || negative(r)) {
    need_rset = false;  // the final dot ends the transaction whatever the reply
    return end_txn(r, r);
  }
  return protocol_error("unexpected reply to end of data: \"" + reply_summary(r) + "\"");
}

}  // namespace mailq
