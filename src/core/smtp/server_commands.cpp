// The commands of the SMTP server session and their parameters (RFC 5321 §4.1, the ESMTP
// parameters of RFC 1870, RFC 6152 and RFC 3461).

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/smtp/ascii.h"
#include "core/smtp/params.h"
#include "core/smtp/server_impl.h"

namespace mailq {
namespace {

using detail::iequals;
using detail::istarts_with;
using detail::non_ascii;
using detail::upper;

// Parameter names echoed in replies are cut to this length.
constexpr std::size_t kMaxEchoedKey = 32;

// At most this much is reserved for a body on the strength of the client's SIZE parameter.
constexpr std::uint64_t kMaxReserve = 1u << 20;

}  // namespace

void SmtpServerSession::Impl::handle_command(const std::string& line) {
  for (char c : line) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) {
      error(500, "5.5.2", "Syntax error: control character in command");
      return;
    }
  }
  const std::size_t sp = line.find(' ');
  const std::string verb = upper(std::string_view(line).substr(0, sp));
  const std::string_view args =
      sp == std::string::npos ? std::string_view{} : std::string_view(line).substr(sp + 1);
  const bool has_args = sp != std::string::npos;

  if (verb == "EHLO" || verb == "HELO") {
    cmd_hello(verb == "EHLO", args, has_args);
  } else if (verb == "MAIL") {
    cmd_mail(args);
  } else if (verb == "RCPT") {
    cmd_rcpt(args);
  } else if (verb == "DATA") {
    cmd_data(has_args);
  } else if (verb == "RSET") {
    if (has_args) return error(501, "5.5.4", "Syntax: RSET");
    reset_transaction();
    reply(250, "2.0.0", "Ok");
  } else if (verb == "NOOP") {
    reply(250, "2.0.0", "Ok");  // RFC 5321 §4.1.1.9: an argument is allowed and ignored
  } else if (verb == "QUIT") {
    if (has_args) return error(501, "5.5.4", "Syntax: QUIT");
    reply(221, "2.0.0", fmt::format("{} Bye", config.hostname));
    close("QUIT");
  } else if (verb == "VRFY") {
    if (args.empty()) return error(501, "5.5.4", "Syntax: VRFY address");
    // RFC 5321 §3.5.3: 252 says nothing about whether the mailbox exists.
    reply(252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery");
  } else if (verb == "EXPN") {
    error(502, "5.5.1", "EXPN not available");
  } else if (verb == "STARTTLS" && config.starttls) {
    cmd_starttls(has_args);
  } else if (verb == "AUTH" && config.auth.enabled && callbacks.authenticate) {
    cmd_auth(args);
  } else if (verb == "HELP" || verb == "STARTTLS" || verb == "AUTH" || verb == "BDAT" ||
             verb == "ETRN" || verb == "TURN" || verb == "ATRN" || verb == "SEND" ||
             verb == "SOML" || verb == "SAML") {
    error(502, "5.5.1", "Command not implemented");
  } else {
    error(500, "5.5.2", "Syntax error: command not recognized");
  }
}

void SmtpServerSession::Impl::cmd_hello(bool extended, std::string_view arg, bool has_args) {
  const char* name = extended ? "EHLO" : "HELO";
  if (!has_args || arg.empty() || arg.find(' ') != std::string_view::npos) {
    return error(501, "5.5.4", fmt::format("Syntax: {} hostname", name));
  }
  // A domain or an address literal, as in a mailbox's domain part.
  auto checked = Address::parse(fmt::format("postmaster@{}", arg));
  if (!checked) {
    return error(501, "5.5.4", fmt::format("Invalid {} hostname", name));
  }
  reset_transaction();  // RFC 5321 §4.1.4: EHLO/HELO ends any transaction
  helo = std::string(arg);
  greeted = true;
  esmtp = extended;
  if (!extended) {
    reply(250, {}, config.hostname);
    return;
  }
  out += fmt::format(
      "250-{}\r\n"
      "250-PIPELINING\r\n"
      "250-SIZE {}\r\n"
      "250-8BITMIME\r\n"
      "250-ENHANCEDSTATUSCODES\r\n"
      "{}{}{}"
      "250 DSN\r\n",
      config.hostname, config.limits.max_message_size,
      config.starttls && !tls ? "250-STARTTLS\r\n" : "",
      auth_offered() ? "250-AUTH PLAIN LOGIN\r\n" : "", config.smtputf8 ? "250-SMTPUTF8\r\n" : "");
}

void SmtpServerSession::Impl::cmd_starttls(bool has_args) {
  if (tls) return error(554, "5.5.1", "Error: TLS already active");
  if (has_args) return error(501, "5.5.4", "Syntax: STARTTLS");
  if (!greeted) return error(503, "5.5.1", "Error: send EHLO first");
  if (in_transaction) return error(503, "5.5.1", "Error: MAIL transaction in progress");
  reply(220, "2.0.0", "Ready to start TLS");
  mode = Mode::tls;
  // RFC 3207 §4.2: commands pipelined behind STARTTLS arrived in the clear, possibly injected
  // by someone in the middle: they are dropped, never read as commands after the handshake.
  in.clear();
  in_pos = 0;
}

// Parses "<path>" at the start of `s` (after "FROM:" / "TO:"). Returns the text between the
// brackets and sets `rest` to what follows the '>'. A quoted local part may hold '>'.
std::optional<std::string_view> SmtpServerSession::Impl::take_path(std::string_view s,
                                                                   std::string_view* rest) {
  if (s.empty() || s.front() != '<') return std::nullopt;
  bool quoted = false;
  for (std::size_t i = 1; i < s.size(); ++i) {
    const char c = s[i];
    if (quoted) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        quoted = false;
      }
    } else if (c == '"') {
      quoted = true;
    } else if (c == '>') {
      *rest = s.substr(i + 1);
      return s.substr(1, i - 1);
    }
  }
  return std::nullopt;
}

// "KEY=VALUE KEY ..." after the path. Returns the error text on a syntax error.
std::optional<std::string> SmtpServerSession::Impl::parse_params(std::string_view s,
                                                                 std::vector<Param>* out) {
  if (s.empty()) return std::nullopt;
  if (s.front() != ' ') return std::string("Syntax error after the address");
  while (!s.empty()) {
    if (s.front() != ' ') return std::string("Syntax error in parameters");
    s.remove_prefix(1);
    if (s.empty()) break;  // a trailing space is tolerated
    const std::size_t end = std::min(s.find(' '), s.size());
    const std::string_view item = s.substr(0, end);
    s.remove_prefix(end);
    const std::size_t eq = item.find('=');
    Param p;
    const std::string_view key = item.substr(0, eq);
    if (key.empty()) return std::string("Syntax error in parameters");
    for (char c : key) {
      const bool ok =
          (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
      if (!ok) return std::string("Syntax error in parameters");
    }
    p.key = upper(key.substr(0, kMaxEchoedKey));
    if (key.size() > kMaxEchoedKey) p.key += "...";
    if (eq != std::string_view::npos) {
      p.value = std::string(item.substr(eq + 1));
      p.has_value = true;
      if (p.value.empty()) return fmt::format("Empty value of the {} parameter", p.key);
      for (char c : p.value) {
        const auto u = static_cast<unsigned char>(c);
        if (u < 0x21 || u > 0x7e || c == '=') {
          return fmt::format("Invalid value of the {} parameter", p.key);
        }
      }
    }
    for (const Param& q : *out) {
      if (q.key == p.key) return fmt::format("Duplicate {} parameter", p.key);
    }
    out->push_back(std::move(p));
  }
  return std::nullopt;
}

// RFC 5321 §4.1.2: an old-style source route "@a,@b:user@d" must be accepted and ignored.
std::string_view SmtpServerSession::Impl::strip_source_route(std::string_view path) {
  if (!path.empty() && path.front() == '@') {
    const std::size_t colon = path.find(':');
    if (colon != std::string_view::npos) return path.substr(colon + 1);
  }
  return path;
}

// --- MAIL and RCPT ---

std::optional<SmtpServerSession::Impl::PathArgs> SmtpServerSession::Impl::path_args(
    std::string_view args, std::string_view verb, std::string_view keyword) {
  if (!istarts_with(args, keyword)) {
    error(501, "5.5.4", fmt::format("Syntax: {} {}<address>", verb, keyword));
    return std::nullopt;
  }
  std::string_view rest;
  const auto path = take_path(args.substr(keyword.size()), &rest);
  if (!path) {
    error(501, "5.5.4", fmt::format("Syntax: {} {}<address>", verb, keyword));
    return std::nullopt;
  }
  PathArgs out{*path, {}};
  if (auto why = parse_params(rest, &out.params)) {
    error(501, "5.5.4", *why);
    return std::nullopt;
  }
  if (!out.params.empty() && !esmtp) {
    error(555, "5.5.4", fmt::format("{} parameters are not recognized after HELO", verb));
    return std::nullopt;
  }
  return out;
}

// --- MAIL ---

std::string SmtpServerSession::Impl::utf8_needed(std::string_view what) const {
  return fmt::format("Non-ASCII {} address requires SMTPUTF8 ({})", what,
                     config.smtputf8 ? "give the SMTPUTF8 parameter on MAIL" : "not supported");
}

void SmtpServerSession::Impl::cmd_mail(std::string_view args) {
  if (!greeted) return error(503, "5.5.1", "Error: send EHLO or HELO first");
  if (in_transaction) return error(503, "5.5.1", "Error: nested MAIL command");
  if (config.require_tls && !tls) {
    return error(530, "5.7.0", "Must issue a STARTTLS command first");
  }
  if (config.auth.required && auth_user.empty()) {
    return error(530, "5.7.0", "Authentication required");
  }
  const auto a = path_args(args, "MAIL", "FROM:");
  if (!a) return;
  const std::string_view path = a->path;
  MailParams m;
  for (const Param& p : a->params) {
    if (!mail_param(p, &m)) return;
  }
  if (non_ascii(path) && !m.smtputf8) return error(553, "5.6.7", utf8_needed("sender"));
  if (!path.empty()) {
    auto parsed = Address::parse(strip_source_route(path));
    if (!parsed) {
      return error(501, "5.1.7", "Bad sender address syntax: " + parsed.error().message);
    }
    m.envelope.reverse_path = std::move(parsed.value());
  }
  if (callbacks.check_sender) {
    const Reply verdict = ask_policy([&] {
      return callbacks.check_sender(
          SenderCheck{m.envelope.reverse_path, auth_user, client_address, tls, m.size});
    });
    if (!verdict.positive()) return refuse(verdict);
  }
  start_transaction(std::move(m));
}

namespace {

// The value of a SIZE parameter, saturated (a value over UINT64_MAX is larger than any
// limit); nullopt when it is not 1 to 20 digits.
std::optional<std::uint64_t> size_value(bool has_value, std::string_view value) {
  bool ok = has_value && value.size() <= 20;
  for (char c : value) {
    if (c < '0' || c > '9') ok = false;
  }
  if (!ok) return std::nullopt;
  std::uint64_t size = 0;
  for (char c : value) {
    const auto d = static_cast<std::uint64_t>(c - '0');
    if (size > (UINT64_MAX - d) / 10) {
      size = UINT64_MAX;  // larger than any limit
      break;
    }
    size = size * 10 + d;
  }
  return size;
}

}  // namespace

bool SmtpServerSession::Impl::mail_param(const Param& p, MailParams* m) {
  if (p.key == "SIZE") {
    const auto size = size_value(p.has_value, p.value);
    if (!size) {
      error(501, "5.5.4", "Bad SIZE parameter");
      return false;
    }
    if (*size > config.limits.max_message_size) {
      reply(552, "5.3.4", "Message size exceeds fixed maximum message size");
      return false;
    }
    m->size = *size;
  } else if (p.key == "BODY") {
    if (iequals(p.value, "8BITMIME")) {
      m->body_8bit = true;
    } else if (!iequals(p.value, "7BIT")) {
      error(p.has_value ? 555 : 501, "5.5.4",
            p.has_value ? "Unsupported BODY type (7BIT or 8BITMIME)" : "Bad BODY parameter");
      return false;
    }
  } else if (p.key == "RET") {
    if (iequals(p.value, "FULL")) {
      m->envelope.ret = DsnRet::full;
    } else if (iequals(p.value, "HDRS")) {
      m->envelope.ret = DsnRet::headers;
    } else {
      error(501, "5.5.4", "Bad RET parameter (FULL or HDRS)");
      return false;
    }
  } else if (p.key == "ENVID") {
    return envid_param(p, &m->envelope);
  } else if (p.key == "AUTH" && auth_offered()) {
    // RFC 4954 §5: the original submitter, "<>" when unknown. Checked, not trusted: a relay
    // that has not authenticated the client must not take its word for it.
    if (!p.has_value || (p.value != "<>" && !detail::xtext_decode(p.value))) {
      error(501, "5.5.4", "Bad AUTH parameter");
      return false;
    }
  } else if (p.key == "SMTPUTF8" && config.smtputf8) {
    if (p.has_value) {
      error(501, "5.5.4", "SMTPUTF8 takes no value");
      return false;
    }
    m->smtputf8 = true;
  } else {
    error(555, "5.5.4", fmt::format("Unsupported parameter {}", p.key));
    return false;
  }
  return true;
}

bool SmtpServerSession::Impl::envid_param(const Param& p, Envelope* env) {
  auto decoded = p.has_value ? detail::xtext_decode(p.value) : std::nullopt;
  if (!decoded || decoded->empty()) {
    error(501, "5.5.4", "Bad ENVID parameter");
    return false;
  }
  env->envid = std::move(*decoded);
  // Envelope::validate is the gate in front of the wire; it needs one recipient.
  Envelope probe;
  probe.envid = env->envid;
  probe.recipients.emplace_back(*Address::parse("postmaster@localhost"));
  std::string why;
  if (probe.validate(&why)) {
    error(501, "5.5.4", "Bad ENVID parameter: " + why);
    return false;
  }
  return true;
}

void SmtpServerSession::Impl::start_transaction(MailParams m) {
  if (transactions >= config.limits.max_transactions) {
    reply(421, "4.7.0",
          fmt::format("{} Too many transactions in one session, closing connection",
                      config.hostname));
    close("too many transactions");
    return;
  }
  ++transactions;
  reset_transaction();
  in_transaction = true;
  envelope = std::move(m.envelope);
  eight_bit = m.body_8bit;
  smtputf8 = m.smtputf8;
  declared_size = m.size;
  reply(250, "2.1.0", "Ok");
}

// --- RCPT ---

void SmtpServerSession::Impl::cmd_rcpt(std::string_view args) {
  if (!in_transaction) return error(503, "5.5.1", "Error: need MAIL command");
  const auto a = path_args(args, "RCPT", "TO:");
  if (!a) return;
  const std::string_view path = a->path;
  if (path.empty()) return error(501, "5.1.3", "Bad recipient address syntax: empty path");
  if (non_ascii(path) && !smtputf8) return error(553, "5.6.7", utf8_needed("recipient"));
  std::string mailbox(strip_source_route(path));
  // RFC 5321 §4.5.1: <Postmaster> without a domain must be accepted.
  if (iequals(mailbox, "postmaster")) mailbox = "postmaster@" + config.hostname;
  auto parsed = Address::parse(mailbox);
  if (!parsed) {
    return error(501, "5.1.3", "Bad recipient address syntax: " + parsed.error().message);
  }

  Recipient rcpt(std::move(parsed.value()));
  for (const Param& p : a->params) {
    if (!rcpt_param(p, &rcpt)) return;
  }
  if (!valid_rcpt_params(rcpt)) return;
  if (envelope.recipients.size() >= config.limits.max_recipients) {
    reply(452, "4.5.3", "Error: too many recipients");
    return;
  }
  add_recipient(std::move(rcpt));
}

bool SmtpServerSession::Impl::rcpt_param(const Param& p, Recipient* rcpt) {
  if (p.key == "NOTIFY") {
    const auto flags = p.has_value ? detail::notify_decode(p.value) : std::nullopt;
    if (!flags) {
      error(501, "5.5.4", "Bad NOTIFY parameter (NEVER, or SUCCESS,FAILURE,DELAY)");
      return false;
    }
    rcpt->notify = *flags;
  } else if (p.key == "ORCPT") {
    auto orcpt = detail::orcpt_decode(p.value);
    if (!orcpt) {
      error(501, "5.5.4", "Bad ORCPT parameter (addr-type;xtext)");
      return false;
    }
    rcpt->orcpt = std::move(*orcpt);
  } else {
    error(555, "5.5.4", fmt::format("Unsupported parameter {}", p.key));
    return false;
  }
  return true;
}

// Envelope::validate on the recipient alone: its NOTIFY and ORCPT as the wire would carry
// them. False when they are refused (the reply is sent).
bool SmtpServerSession::Impl::valid_rcpt_params(const Recipient& rcpt) {
  Envelope probe;
  probe.recipients.push_back(rcpt);
  std::string why;
  if (probe.validate(&why)) {
    constexpr std::string_view kPrefix = "recipient 1: ";
    if (why.compare(0, kPrefix.size(), kPrefix) == 0) why.erase(0, kPrefix.size());
    error(501, "5.5.4", "Bad recipient parameters: " + why);
    return false;
  }
  return true;
}

Reply SmtpServerSession::Impl::ask_policy(const std::function<Reply()>& ask) {
  try {
    return sanitize(ask());
  } catch (...) {
    return Reply(451, "4.3.0", "Internal error, try again later");
  }
}

void SmtpServerSession::Impl::refuse(const Reply& verdict) {
  send(verdict);
  if (verdict.permanent()) count_error();
}

// The recipient policy's verdict (when there is one), then the recipient is taken.
void SmtpServerSession::Impl::add_recipient(Recipient rcpt) {
  if (callbacks.check_recipient) {
    const Reply verdict = ask_policy([&] { return callbacks.check_recipient(rcpt); });
    if (!verdict.positive()) return refuse(verdict);
    envelope.recipients.push_back(std::move(rcpt));
    send(verdict);
    return;
  }
  envelope.recipients.push_back(std::move(rcpt));
  reply(250, "2.1.5", "Ok");
}

// --- DATA ---

void SmtpServerSession::Impl::cmd_data(bool has_args) {
  if (has_args) return error(501, "5.5.4", "Syntax: DATA");
  if (!in_transaction) return error(503, "5.5.1", "Error: need MAIL command");
  // RFC 2920 §3.1: with pipelining, DATA after only failed RCPTs gets 554.
  if (envelope.recipients.empty()) return error(554, "5.5.1", "Error: no valid recipients");
  reply(354, {}, "End data with <CR><LF>.<CR><LF>");
  mode = Mode::data;
  data_state = DataState::bol;
  body.clear();
  // The declared size (bounded: it is the client's word) saves growing the body by copies.
  if (declared_size > 0)
    body.reserve(static_cast<std::size_t>(std::min<std::uint64_t>(declared_size, kMaxReserve)));
  body_size = 0;
  line_length = 0;
  line_number = 1;
  too_big = false;
  bare_lf_line = bare_cr_line = nul_line = long_line = 0;
}

}  // namespace mailq
