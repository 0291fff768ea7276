#include "mailq/smtp_client.h"

#include <algorithm>
#include <deque>
#include <string>
#include <utility>

#include "core/smtp/ascii.h"
#include "core/smtp/data.h"
#include "core/smtp/params.h"
#include "core/smtp/reply_parse.h"
#include "core/text.h"

namespace mailq {

const char* to_string(SmtpPhase p) noexcept {
  switch (p) {
    case SmtpPhase::connect:
      return "connect";
    case SmtpPhase::greeting:
      return "greeting";
    case SmtpPhase::ehlo:
      return "ehlo";
    case SmtpPhase::helo:
      return "helo";
    case SmtpPhase::starttls:
      return "starttls";
    case SmtpPhase::tls_handshake:
      return "tls_handshake";
    case SmtpPhase::auth:
      return "auth";
    case SmtpPhase::mail:
      return "mail";
    case SmtpPhase::rcpt:
      return "rcpt";
    case SmtpPhase::data:
      return "data";
    case SmtpPhase::body:
      return "body";
    case SmtpPhase::data_term:
      return "data_term";
    case SmtpPhase::rset:
      return "rset";
    case SmtpPhase::quit:
      return "quit";
    case SmtpPhase::idle:
      return "idle";
    case SmtpPhase::closed:
      return "closed";
  }
  return "unknown";
}

namespace {

using detail::base64;
using detail::has_control;
using detail::non_ascii;
using detail::notify_param;
using detail::orcpt_param;
using detail::ParsedReply;
using detail::printable;
using detail::reply_summary;
using detail::upper;
using detail::xtext;

enum class Cmd : std::uint8_t {
  greeting,
  ehlo,
  helo,
  starttls,
  auth_plain,
  auth_login,
  auth_login_user,
  auth_login_pass,
  mail,
  rcpt,
  data,
  data_term,
  rset,
  quit,
};

SmtpPhase phase_of(Cmd c) {
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

const char* awaited_name(Cmd c) {
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

int klass(const Reply& r) {
  return r.code / 100;
}
bool negative(const Reply& r) {
  return klass(r) == 4 || klass(r) == 5;
}

bool valid_helo_name(std::string_view s) {
  if (s.empty() || s.size() > 255) return false;
  return std::none_of(s.begin(), s.end(), [](char c) {
    auto u = static_cast<unsigned char>(c);
    return u <= 0x20 || u >= 0x7f;
  });
}

struct Pending {
  Cmd cmd;
  std::size_t index = 0;  // recipient index for RCPT
  bool sent = false;      // taken by the host with take_output()
  bool body = false;      // data_term after the whole body: the body may still be going out
};

}  // namespace

struct SmtpClient::Impl {
  explicit Impl(SmtpClientOptions o)
      : opt(std::move(o)), parser(opt.max_reply_line, opt.max_reply_lines) {}

  struct Txn {
    SmtpTransaction t;
    std::string data;           // the encoded body, terminator included
    std::size_t data_size = 0;  // of `data`, kept once the data is handed to the output
    std::uint64_t size = 0;
    bool eight_bit = false;
    bool utf8 = false;
    std::vector<std::optional<Reply>> refused;  // RCPT refusals, per recipient
    std::size_t accepted = 0;
    std::optional<Reply> mail_failure;
    bool data_discarded = false;  // 354 with nobody to deliver to: a lone "." was sent
    std::string data_intermediate;
  };

  SmtpClientOptions opt;
  detail::ReplyParser parser;
  SmtpPhase phase = SmtpPhase::connect;
  std::string out;
  std::deque<SmtpEvent> events;
  std::deque<Pending> pending;
  TimePoint deadline = TimePoint::max();
  SmtpCapabilities caps;
  bool size_offered = false;  // SIZE announced, with or without a limit
  std::optional<TlsInfo> tls;
  Reply greeting;
  bool connected = false;
  bool starttls_tried = false;
  bool authenticated = false;
  bool ready_emitted = false;
  bool finished = false;
  bool need_rset = false;
  std::size_t transactions = 0;
  std::optional<Txn> txn;

  // --- plumbing ---

  Duration timeout_of(const Pending& p) const {
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

  // Sets the phase and the deadline from the command whose reply is awaited now.
  void arm(TimePoint now) {
    if (pending.empty()) return;
    const Pending& p = pending.front();
    phase = p.cmd == Cmd::data_term && p.body ? SmtpPhase::body : phase_of(p.cmd);
    deadline = now + timeout_of(p);
  }

  void queue(Cmd cmd, std::string_view line, std::size_t index = 0) {
    out.append(line);
    out += "\r\n";
    pending.push_back(Pending{cmd, index, false, false});
  }

  void emit(SmtpEvent ev) { events.push_back(std::move(ev)); }

  std::string awaited() const {
    if (!pending.empty()) return awaited_name(pending.front().cmd);
    if (phase == SmtpPhase::tls_handshake) return "the TLS handshake";
    return "nothing (idle)";
  }

  // Ends a transaction: recipient i gets the MAIL refusal, else its RCPT refusal, else
  // `others`.
  void finish_txn(const Reply& others, const Reply& data_reply) {
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
    txn.reset();
    ++transactions;
    emit(std::move(done));
  }

  void go_idle() {
    phase = SmtpPhase::idle;
    deadline = TimePoint::max();
  }

  // The session ends. A transaction under way ends first, its undecided recipients getting
  // `for_recipients` (or `reply`). `polite_quit`: the stream is in step and the server said
  // something we cannot go on with; a QUIT is left in the output for the host to write.
  void fail(SmtpPhase where, Reply reply, bool connection_level, bool tls_failure,
            const Reply* for_recipients = nullptr, bool polite_quit = false) {
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

  void fail_here(Reply reply, bool connection_level, bool polite_quit) {
    fail(phase, std::move(reply), connection_level, false, nullptr, polite_quit);
  }

  void protocol_error(const std::string& what) {
    Reply r{421, "4.5.0", "[internal] protocol error: " + what};
    fail(phase, r, !ready_emitted, false);
  }

  void close_session() {
    out.clear();
    pending.clear();
    emit(smtp_event::Closed{});
    finished = true;
    phase = SmtpPhase::closed;
    deadline = TimePoint::max();
  }

  // --- session set-up ---

  void send_hello(Cmd cmd, TimePoint now) {
    queue(cmd, (cmd == Cmd::ehlo ? "EHLO " : "HELO ") + opt.helo_name);
    arm(now);
  }

  void parse_capabilities(const ParsedReply& pr) {
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

  void after_hello(TimePoint now) {
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
            {451, "4.7.4", "[internal] STARTTLS required by policy but not offered by the server"},
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

  void start_auth(TimePoint now) {
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
      if (a.username.find('\0') != std::string::npos ||
          a.password.find('\0') != std::string::npos) {
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

  std::string mail_command() const {
    const Txn& x = *txn;
    std::string s = "MAIL FROM:<" + x.t.reverse_path + ">";
    if (size_offered) s += " SIZE=" + std::to_string(x.size);
    if (x.eight_bit && caps.eightbitmime) s += " BODY=8BITMIME";
    if (x.utf8) s += " SMTPUTF8";
    if (caps.dsn) {
      if (x.t.ret == DsnRet::full) s += " RET=FULL";
      if (x.t.ret == DsnRet::headers) s += " RET=HDRS";
      if (!x.t.envid.empty()) s += " ENVID=" + xtext(x.t.envid);
    }
    return s;
  }

  std::string rcpt_command(std::size_t i) const {
    const SmtpTransaction::Rcpt& r = txn->t.recipients[i];
    std::string s = "RCPT TO:<" + r.address + ">";
    if (caps.dsn) {
      std::string notify = notify_param(r.notify);
      if (!notify.empty()) s += " NOTIFY=" + notify;
      if (!r.orcpt.empty()) s += " ORCPT=" + orcpt_param(r.orcpt);
    }
    return s;
  }

  void start_mail(TimePoint now) {
    queue(Cmd::mail, mail_command());
    if (caps.pipelining) {
      // RFC 2920: the whole envelope and DATA in one write; replies are matched by count.
      for (std::size_t i = 0; i < txn->t.recipients.size(); ++i)
        queue(Cmd::rcpt, rcpt_command(i), i);
      queue(Cmd::data, "DATA");
    }
    arm(now);
  }

  // A transaction ended with the stream in step: back to idle.
  void end_txn(const Reply& others, const Reply& data_reply) {
    finish_txn(others, data_reply);
    go_idle();
  }

  void on_txn_reply(const Pending& p, const Reply& r, TimePoint now) {
    Txn& x = *txn;
    const bool pipelined = caps.pipelining;
    switch (p.cmd) {
      case Cmd::mail:
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
        break;
      case Cmd::rcpt:
        if (klass(r) == 2) {
          ++x.accepted;
        } else if (negative(r)) {
          x.refused[p.index] = r;
        } else {
          return protocol_error("unexpected reply to RCPT: \"" + reply_summary(r) + "\"");
        }
        if (!pipelined) {
          if (p.index + 1 < x.t.recipients.size()) {
            queue(Cmd::rcpt, rcpt_command(p.index + 1), p.index + 1);
          } else if (x.accepted > 0) {
            queue(Cmd::data, "DATA");
          } else {
            need_rset = true;  // MAIL was accepted: the server holds a transaction
            return end_txn(Reply{}, Reply{});
          }
        }
        break;
      case Cmd::data:
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
        break;
      case Cmd::data_term:
        if (x.data_discarded) {
          need_rset = true;
          return end_txn(Reply{}, Reply{});
        }
        if (klass(r) == 2 || negative(r)) {
          need_rset = false;  // the final dot ends the transaction whatever the reply
          return end_txn(r, r);
        }
        return protocol_error("unexpected reply to end of data: \"" + reply_summary(r) + "\"");
      default:
        break;
    }
    arm(now);
  }

  // --- replies ---

  void on_reply(ParsedReply& pr, TimePoint now) {
    Reply& r = pr.reply;
    if (pending.empty()) {
      if (r.code == 421 && phase == SmtpPhase::idle) {
        // RFC 5321 §3.8: a server may announce at any time that it is closing the channel.
        fail(phase, r, !ready_emitted, false);
        return;
      }
      protocol_error("reply received while no command was outstanding: \"" + reply_summary(r) +
                     "\"");
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
        greeting = r;
        if (r.code == 220) {
          send_hello(Cmd::ehlo, now);
        } else if (negative(r)) {
          fail_here(r, true, true);
        } else {
          protocol_error("unexpected greeting \"" + reply_summary(r) + "\"");
        }
        return;
      case Cmd::ehlo:
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
        return;
      case Cmd::helo:
        if (klass(r) == 2) {
          caps = SmtpCapabilities{};
          size_offered = false;
          after_hello(now);
        } else if (negative(r)) {
          fail_here(r, false, true);
        } else {
          protocol_error("unexpected reply to HELO: \"" + reply_summary(r) + "\"");
        }
        return;
      case Cmd::starttls:
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
          emit(smtp_event::StartTls{std::move(o)});
        } else if (negative(r)) {
          if (opt.tls == TlsPolicy::opportunistic) {
            after_hello(now);  // go on in plaintext (RFC 3207 §4)
          } else {
            fail_here({451, "4.7.4",
                       "[internal] STARTTLS required by policy but refused by the server: " +
                           reply_summary(r)},
                      false, true);
          }
        } else {
          protocol_error("unexpected reply to STARTTLS: \"" + reply_summary(r) + "\"");
        }
        return;
      case Cmd::auth_plain:
      case Cmd::auth_login:
      case Cmd::auth_login_user:
      case Cmd::auth_login_pass:
        on_auth_reply(p.cmd, r, now);
        return;
      case Cmd::rset:
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
        return;
      case Cmd::quit:
        close_session();
        return;
      case Cmd::mail:
      case Cmd::rcpt:
      case Cmd::data:
      case Cmd::data_term:
        on_txn_reply(p, r, now);
        return;
    }
  }

  void on_auth_reply(Cmd cmd, const Reply& r, TimePoint now) {
    const AuthCredentials& a = *opt.auth;
    if (r.code == 334) {
      if (cmd == Cmd::auth_login) {
        queue(Cmd::auth_login_user, base64(a.username));
        arm(now);
        return;
      }
      if (cmd == Cmd::auth_login_user) {
        queue(Cmd::auth_login_pass, base64(a.password));
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
};

SmtpClient::SmtpClient(SmtpClientOptions options)
    : impl_(std::make_unique<Impl>(std::move(options))) {}

SmtpClient::~SmtpClient() = default;

void SmtpClient::on_connected(TimePoint now) {
  Impl& s = *impl_;
  if (s.finished || s.connected) return;
  s.connected = true;
  s.phase = SmtpPhase::greeting;
  if (!valid_helo_name(s.opt.helo_name)) {
    s.fail_here({451, "4.3.5",
                 "[internal] invalid HELO name \"" + printable(s.opt.helo_name) +
                     "\" in the configuration"},
                false, false);
    return;
  }
  s.pending.push_back(Pending{Cmd::greeting, 0, true, false});
  s.arm(now);
}

void SmtpClient::on_data(std::string_view bytes, TimePoint now) {
  Impl& s = *impl_;
  if (s.finished || bytes.empty()) return;
  if (s.phase == SmtpPhase::tls_handshake) {
    s.protocol_error(
        "plaintext received during the TLS handshake after the reply to STARTTLS (possible "
        "response injection)");
    return;
  }
  s.parser.feed(bytes);
  while (!s.finished) {
    ParsedReply pr;
    std::string why;
    auto st = s.parser.next(&pr, &why);
    if (st == detail::ReplyParser::Status::need_more) break;
    if (st == detail::ReplyParser::Status::error) {
      s.protocol_error(why);
      break;
    }
    s.on_reply(pr, now);
    // After the 220 to STARTTLS the parser must stay empty until the handshake is done.
    if (s.phase == SmtpPhase::tls_handshake) break;
  }
}

void SmtpClient::on_tls_established(const TlsInfo& info, TimePoint now) {
  Impl& s = *impl_;
  if (s.finished || s.phase != SmtpPhase::tls_handshake) return;
  if (s.opt.tls == TlsPolicy::verify && !info.verified) {
    s.fail(
        SmtpPhase::tls_handshake,
        {421, "4.7.5", "[internal] TLS handshake failed: the server certificate was not verified"},
        false, true);
    return;
  }
  s.tls = info;
  // RFC 3207 §4.2: everything learnt before the handshake is forgotten.
  s.caps = SmtpCapabilities{};
  s.size_offered = false;
  s.parser.clear();
  s.send_hello(Cmd::ehlo, now);
}

void SmtpClient::on_tls_failed(std::string_view why, TimePoint) {
  Impl& s = *impl_;
  if (s.finished || s.phase != SmtpPhase::tls_handshake) return;
  // The transport's own text may already say what failed ("TLS handshake failed: SSL - ...").
  constexpr std::string_view kWhat = "TLS handshake failed";
  if (why.substr(0, kWhat.size()) == kWhat) why.remove_prefix(kWhat.size());
  if (why.substr(0, 2) == ": ") why.remove_prefix(2);
  std::string text = "[internal] TLS handshake failed";
  if (!why.empty()) text += ": " + printable(why, 200);
  s.fail(SmtpPhase::tls_handshake, {421, "4.7.5", std::move(text)}, false, true);
}

void SmtpClient::on_closed(std::string_view why, TimePoint) {
  Impl& s = *impl_;
  if (s.finished) return;
  if (s.phase == SmtpPhase::quit) {
    s.close_session();
    return;
  }
  std::string text;
  if (!s.pending.empty() || s.phase == SmtpPhase::tls_handshake)
    text = "connection lost waiting for " + s.awaited();
  else if (s.phase == SmtpPhase::idle)
    text = "connection closed by the server";
  else
    text = "connection closed";
  if (!why.empty()) text += ": " + printable(why, 200);
  Reply r = replies::connection_lost(text);
  s.fail(s.phase, r, !s.ready_emitted, s.phase == SmtpPhase::tls_handshake, &r);
}

void SmtpClient::on_timeout(TimePoint now) {
  Impl& s = *impl_;
  if (s.finished || s.deadline == TimePoint::max() || now < s.deadline) return;
  if (s.phase == SmtpPhase::quit) {
    s.close_session();
    return;
  }
  Reply r = replies::connection_lost("timeout waiting for " + s.awaited());
  s.fail(s.phase, r, !s.ready_emitted, s.phase == SmtpPhase::tls_handshake, &r);
}

void SmtpClient::on_output_drained(TimePoint now) {
  Impl& s = *impl_;
  if (s.finished || s.pending.empty()) return;
  Pending& p = s.pending.front();
  if (p.cmd == Cmd::data_term && p.body && p.sent) {
    p.body = false;
    s.arm(now);
  }
}

bool SmtpClient::send(SmtpTransaction t, TimePoint now) {
  Impl& s = *impl_;
  if (!ready() || !t.body || t.recipients.empty()) return false;
  if (has_control(t.reverse_path) || has_control(t.envid)) return false;
  for (const auto& r : t.recipients) {
    if (r.address.empty() || has_control(r.address) || has_control(r.orcpt)) return false;
    if (!r.orcpt.empty() && orcpt_param(r.orcpt).empty()) return false;
  }

  Impl::Txn x;
  detail::EncodeInfo info;
  x.data = detail::encode_data(*t.body, &info);
  x.data_size = x.data.size();
  x.size = info.size;
  x.eight_bit = t.eight_bit || detail::has_8bit(*t.body);
  x.utf8 = t.smtputf8 || non_ascii(t.reverse_path) ||
           std::any_of(t.recipients.begin(), t.recipients.end(),
                       [](const SmtpTransaction::Rcpt& r) { return non_ascii(r.address); });
  x.refused.resize(t.recipients.size());
  x.t = std::move(t);
  s.txn = std::move(x);

  // Refusals decided here, before anything is sent: the session stays usable.
  if (s.txn->utf8 && !s.caps.smtputf8) {
    s.finish_txn({553, "5.6.7",
                  "[internal] the server does not support SMTPUTF8, needed for a non-ASCII "
                  "address (RFC 6531)"},
                 Reply{});
    return true;
  }
  if (s.caps.size > 0 && s.txn->size > s.caps.size) {
    s.finish_txn({552, "5.3.4",
                  "[internal] message size " + std::to_string(s.txn->size) +
                      " exceeds the server's SIZE limit " + std::to_string(s.caps.size)},
                 Reply{});
    return true;
  }
  if (s.need_rset) {
    // The previous transaction was abandoned half-way: clear the server's state first.
    s.queue(Cmd::rset, "RSET");
    s.arm(now);
    return true;
  }
  s.start_mail(now);
  return true;
}

void SmtpClient::quit(TimePoint now) {
  Impl& s = *impl_;
  if (s.finished || s.phase == SmtpPhase::quit) return;
  if (s.phase == SmtpPhase::idle) {
    s.queue(Cmd::quit, "QUIT");
    s.arm(now);
    return;
  }
  // Not usable, or a transaction is under way: end at once. A QUIT now could land in the
  // middle of the message data.
  s.out.clear();
  s.pending.clear();
  if (s.txn) {
    Reply r{451, "4.3.0",
            "[internal] session ended by the client before the transaction completed"};
    s.finish_txn(r, Reply{});
  }
  s.close_session();
}

std::string SmtpClient::take_output() {
  Impl& s = *impl_;
  for (auto it = s.pending.rbegin(); it != s.pending.rend() && !it->sent; ++it) it->sent = true;
  std::string out;
  out.swap(s.out);
  return out;
}

bool SmtpClient::has_output() const noexcept {
  return !impl_->out.empty();
}

std::optional<SmtpEvent> SmtpClient::next_event() {
  Impl& s = *impl_;
  if (s.events.empty()) return std::nullopt;
  SmtpEvent ev = std::move(s.events.front());
  s.events.pop_front();
  return ev;
}

TimePoint SmtpClient::deadline() const noexcept {
  return impl_->deadline;
}

bool SmtpClient::ready() const noexcept {
  return !impl_->finished && impl_->phase == SmtpPhase::idle;
}

bool SmtpClient::finished() const noexcept {
  return impl_->finished;
}

SmtpPhase SmtpClient::phase() const noexcept {
  return impl_->phase;
}

const SmtpCapabilities& SmtpClient::capabilities() const noexcept {
  return impl_->caps;
}

const std::optional<TlsInfo>& SmtpClient::tls() const noexcept {
  return impl_->tls;
}

std::size_t SmtpClient::transactions() const noexcept {
  return impl_->transactions;
}

}  // namespace mailq
