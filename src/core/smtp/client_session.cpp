// The SMTP client session's plumbing (commands queued, timers, events, the end of the
// session), its set-up (EHLO, STARTTLS, AUTH) and the commands of a transaction.

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "core/smtp/ascii.h"
#include "core/smtp/client_impl.h"
#include "core/smtp/params.h"

namespace mailq {

using detail::base64;
using detail::notify_param;
using detail::orcpt_param;
using detail::upper;
using detail::xtext;

// --- plumbing ---

SmtpPhase SmtpClient::Impl::phase_of(Cmd c) {
  switch (c) {
    case Cmd::greeting:
      return SmtpPhase::greeting;
    case Cmd::ehlo:
      return SmtpPhase::ehlo;
    case Cmd::helo:
      return SmtpPhase::helo;
    case Cmd::starttls:
      return SmtpPhase::starttls;
    case Cmd::auth_plain:
    case Cmd::auth_login:
    case Cmd::auth_login_user:
    case Cmd::auth_login_pass:
      return SmtpPhase::auth;
    case Cmd::mail:
      return SmtpPhase::mail;
    case Cmd::rcpt:
      return SmtpPhase::rcpt;
    case Cmd::data:
      return SmtpPhase::data;
    case Cmd::data_term:
      return SmtpPhase::data_term;
    case Cmd::rset:
      return SmtpPhase::rset;
    case Cmd::quit:
      return SmtpPhase::quit;
  }
  return SmtpPhase::closed;
}

const char* SmtpClient::Impl::awaited_name(Cmd c) {
  switch (c) {
    case Cmd::greeting:
      return "the greeting";
    case Cmd::ehlo:
      return "reply to EHLO";
    case Cmd::helo:
      return "reply to HELO";
    case Cmd::starttls:
      return "reply to STARTTLS";
    case Cmd::auth_plain:
    case Cmd::auth_login:
    case Cmd::auth_login_user:
    case Cmd::auth_login_pass:
      return "reply to AUTH";
    case Cmd::mail:
      return "reply to MAIL";
    case Cmd::rcpt:
      return "reply to RCPT";
    case Cmd::data:
      return "reply to DATA";
    case Cmd::data_term:
      return "reply to end of data";
    case Cmd::rset:
      return "reply to RSET";
    case Cmd::quit:
      return "reply to QUIT";
  }
  return "reply";
}

Duration SmtpClient::Impl::timeout_of(const Pending& p) const {
  const SmtpTimeouts& t = opt.timeouts;
  switch (p.cmd) {
    case Cmd::greeting:
      return t.greeting;
    case Cmd::ehlo:
    case Cmd::helo:
    case Cmd::auth_plain:
    case Cmd::auth_login:
    case Cmd::auth_login_user:
    case Cmd::auth_login_pass:
      return t.ehlo;
    case Cmd::starttls:
      return t.starttls;
    case Cmd::mail:
      return t.mail;
    case Cmd::rcpt:
      return t.rcpt;
    case Cmd::data:
      return t.data_init;
    case Cmd::data_term:
      if (p.body && opt.reports_output_progress) return t.data_block;  // per write
      if (p.body && txn) {
        // The host did not (yet) tell us the body is written: allow one data-block timeout
        // per started MiB for writing it, then the data-termination timeout.
        std::uint64_t mib = std::max<std::uint64_t>(1, (txn->data_size + (1u << 20) - 1) >> 20);
        return t.data_block * static_cast<Duration::rep>(mib) + t.data_term;
      }
      return t.data_term;
    case Cmd::rset:
      return t.rset;
    case Cmd::quit:
      return t.quit;
  }
  return t.mail;
}

void SmtpClient::Impl::arm(TimePoint now) {
  if (pending.empty()) return;
  const Pending& p = pending.front();
  phase = p.cmd == Cmd::data_term && p.body ? SmtpPhase::body : phase_of(p.cmd);
  deadline = now + timeout_of(p);
}

void SmtpClient::Impl::queue(Cmd cmd, std::string_view line, std::size_t index) {
  out.append(line);
  out += "\r\n";
  pending.push_back(Pending{cmd, index, false, false});
}

std::string SmtpClient::Impl::awaited() const {
  if (!pending.empty()) return awaited_name(pending.front().cmd);
  if (phase == SmtpPhase::tls_handshake) return "the TLS handshake";
  return "nothing (idle)";
}

void SmtpClient::Impl::finish_txn(const Reply& others, const Reply& data_reply) {
  smtp_event::TransactionDone done;
  done.replies.reserve(txn->t.recipients.size());
  for (std::size_t i = 0; i < txn->t.recipients.size(); ++i) {
    if (txn->mail_failure)
      done.replies.push_back(*txn->mail_failure);
    else if (txn->refused[i])
      done.replies.push_back(*txn->refused[i]);
    else
      done.replies.push_back(others);
  }
  done.data_reply = data_reply;
  done.data_intermediate = std::move(txn->data_intermediate);
  done.converted_to_7bit = txn->downgraded;
  txn.reset();
  ++transactions;
  emit(std::move(done));
}

void SmtpClient::Impl::fail(SmtpPhase where, Reply reply, bool connection_level, bool tls_failure,
                            const Reply* for_recipients, bool polite_quit) {
  if (finished) return;
  out.clear();
  pending.clear();
  if (txn) finish_txn(for_recipients ? *for_recipients : reply, Reply{});
  emit(smtp_event::Failed{where, std::move(reply), connection_level, tls_failure});
  finished = true;
  phase = SmtpPhase::closed;
  deadline = TimePoint::max();
  if (polite_quit) out = "QUIT\r\n";
}

void SmtpClient::Impl::protocol_error(const std::string& what) {
  Reply r{421, "4.5.0", "[internal] protocol error: " + what};
  fail(phase, r, !ready_emitted, false);
}

void SmtpClient::Impl::close_session() {
  out.clear();
  pending.clear();
  emit(smtp_event::Closed{});
  finished = true;
  phase = SmtpPhase::closed;
  deadline = TimePoint::max();
}

// --- session set-up ---

void SmtpClient::Impl::send_hello(Cmd cmd, TimePoint now) {
  queue(cmd, (cmd == Cmd::ehlo ? "EHLO " : "HELO ") + opt.helo_name);
  arm(now);
}

void SmtpClient::Impl::parse_capabilities(const detail::ParsedReply& pr) {
  caps = SmtpCapabilities{};
  caps.esmtp = true;
  size_offered = false;
  // The first line is the server's name and greeting text; keywords follow.
  for (std::size_t i = 1; i < pr.lines.size(); ++i) {
    std::string_view l = pr.lines[i];
    std::vector<std::string> words;
    std::size_t p = 0;
    while (p < l.size()) {
      while (p < l.size() && (l[p] == ' ' || l[p] == '\t')) ++p;
      std::size_t e = p;
      while (e < l.size() && l[e] != ' ' && l[e] != '\t') ++e;
      if (e > p) words.push_back(upper(l.substr(p, e - p)));
      p = e;
    }
    if (words.empty()) continue;
    const std::string& kw = words[0];
    if (kw == "PIPELINING") {
      caps.pipelining = true;
    } else if (kw == "STARTTLS") {
      caps.starttls = true;
    } else if (kw == "8BITMIME") {
      caps.eightbitmime = true;
    } else if (kw == "SMTPUTF8") {
      caps.smtputf8 = true;
    } else if (kw == "DSN") {
      caps.dsn = true;
    } else if (kw == "ENHANCEDSTATUSCODES") {
      caps.enhanced_status_codes = true;
    } else if (kw == "SIZE") {
      size_offered = true;
      caps.size = 0;
      if (words.size() > 1) {
        std::uint64_t v = 0;
        bool ok = !words[1].empty() && words[1].size() <= 19;
        for (char c : words[1]) {
          if (c < '0' || c > '9') ok = false;
          if (ok) v = v * 10 + static_cast<std::uint64_t>(c - '0');
        }
        if (ok) caps.size = v;
      }
    } else if (kw == "AUTH" || kw.rfind("AUTH=", 0) == 0) {
      // "AUTH=PLAIN LOGIN" is the pre-standard form some servers still send.
      std::vector<std::string> mechs(words.begin() + 1, words.end());
      if (kw.size() > 5) mechs.push_back(kw.substr(5));
      for (const std::string& m : mechs) {
        if (m == "PLAIN") caps.auth_plain = true;
        if (m == "LOGIN") caps.auth_login = true;
      }
    }
  }
}

void SmtpClient::Impl::after_hello(TimePoint now) {
  const bool tls_needed = opt.tls == TlsPolicy::required || opt.tls == TlsPolicy::verify;
  if (!tls && opt.tls != TlsPolicy::none && !starttls_tried) {
    if (caps.starttls) {
      starttls_tried = true;
      queue(Cmd::starttls, "STARTTLS");
      arm(now);
      return;
    }
    if (tls_needed) {
      fail_here(
          {451, "4.7.4",
           "[internal] STARTTLS required by policy but not offered by the server" + required_by()},
          false, true);
      return;
    }
  }
  if (tls_needed && !tls) {  // unreachable by construction; never go on in plaintext
    fail_here({451, "4.7.4", "[internal] STARTTLS required by policy but not negotiated"}, false,
              true);
    return;
  }
  if (opt.auth && !authenticated) {
    start_auth(now);
    return;
  }
  go_idle();
  if (!ready_emitted) {
    ready_emitted = true;
    emit(smtp_event::Ready{caps, greeting});
  }
}

void SmtpClient::Impl::start_auth(TimePoint now) {
  phase = SmtpPhase::auth;
  if (!tls && !opt.auth_over_plaintext) {
    fail_here({451, "4.7.0",
               "[internal] AUTH not attempted: the session is not encrypted (no STARTTLS) "
               "and auth_over_plaintext is off"},
              false, true);
    return;
  }
  const AuthCredentials& a = *opt.auth;
  if (caps.auth_plain) {
    if (a.username.find('\0') != std::string::npos || a.password.find('\0') != std::string::npos) {
      fail_here({451, "4.3.5",
                 "[internal] AUTH not attempted: the configured credentials contain a NUL "
                 "octet"},
                false, true);
      return;
    }
    std::string token;
    token += '\0';
    token += a.username;
    token += '\0';
    token += a.password;
    queue(Cmd::auth_plain, "AUTH PLAIN " + base64(token));
  } else if (caps.auth_login) {
    queue(Cmd::auth_login, "AUTH LOGIN");
  } else {
    fail_here({451, "4.7.0",
               "[internal] AUTH not attempted: the server offers neither AUTH PLAIN nor "
               "AUTH LOGIN"},
              false, true);
    return;
  }
  arm(now);
}

// --- transactions ---

std::string SmtpClient::Impl::mail_command() const {
  const Txn& x = *txn;
  std::string s = "MAIL FROM:<" + x.t.reverse_path + ">";
  if (size_offered) s += " SIZE=" + std::to_string(x.size);
  if (x.eight_bit && caps.eightbitmime) s += " BODY=8BITMIME";
  if (x.utf8 || x.utf8_header) s += " SMTPUTF8";
  if (caps.dsn) {
    if (x.t.ret == DsnRet::full) s += " RET=FULL";
    if (x.t.ret == DsnRet::headers) s += " RET=HDRS";
    if (!x.t.envid.empty()) s += " ENVID=" + xtext(x.t.envid);
  }
  return s;
}

std::string SmtpClient::Impl::rcpt_command(std::size_t i) const {
  const SmtpTransaction::Rcpt& r = txn->t.recipients[i];
  std::string s = "RCPT TO:<" + r.address + ">";
  if (caps.dsn) {
    std::string notify = notify_param(r.notify);
    if (!notify.empty()) s += " NOTIFY=" + notify;
    if (!r.orcpt.empty()) s += " ORCPT=" + orcpt_param(r.orcpt);
  }
  return s;
}

void SmtpClient::Impl::start_mail(TimePoint now) {
  queue(Cmd::mail, mail_command());
  if (caps.pipelining) {
    // RFC 2920: the whole envelope and DATA in one write; replies are matched by count.
    for (std::size_t i = 0; i < txn->t.recipients.size(); ++i) queue(Cmd::rcpt, rcpt_command(i), i);
    queue(Cmd::data, "DATA");
  }
  arm(now);
}

}  // namespace mailq
