// SmtpServerSession: the receiving side of SMTP as a state machine fed with bytes. This file
// holds the replies, the framing of command lines, the host's answers and the public
// operations; the commands are in server_commands.cpp, the message data in server_data.cpp.

#include "mailq/smtp_server.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>

#include "core/smtp/server_impl.h"
#include "core/text.h"
#include "mailq/dsn.h"

namespace mailq {
namespace {

// RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets with its CRLF.
constexpr std::size_t kMaxReplyLine = 510;

// Input already consumed is dropped from the front of the buffer once it is this large.
constexpr std::size_t kCompactAt = 4096;

}  // namespace

// Replies of the host or of a policy callback must not break the protocol: a well-formed
// code of class 2, 4 or 5, an enhanced status code of the same class, text without controls.
Reply SmtpServerSession::Impl::sanitize(Reply r) {
  const int klass = r.code / 100;
  if (r.code < 200 || r.code > 599 || klass == 3) {
    return Reply(451, "4.3.0", "Internal error: the host gave no valid reply");
  }
  bool enhanced_ok = false;
  if (!r.enhanced.empty() && r.enhanced[0] == static_cast<char>('0' + klass)) {
    // class "." subject "." detail, each 1-3 digits
    int parts = 0;
    std::size_t digits = 0;
    enhanced_ok = true;
    for (char c : r.enhanced) {
      if (c == '.') {
        if (digits == 0) enhanced_ok = false;
        ++parts;
        digits = 0;
      } else if (c >= '0' && c <= '9' && digits < 3) {
        ++digits;
      } else {
        enhanced_ok = false;
      }
    }
    if (parts != 2 || digits == 0) enhanced_ok = false;
  }
  if (!enhanced_ok) r.enhanced = fmt::format("{}.0.0", klass);
  for (char& c : r.text) {
    const auto u = static_cast<unsigned char>(c);
    if (c != '\n' && (u < 0x20 || u == 0x7f)) c = '?';
  }
  if (r.text.empty()) r.text = klass == 2 ? "Ok" : "Error";
  return r;
}

// --- output ---

void SmtpServerSession::Impl::line(std::string text) {
  if (text.size() > kMaxReplyLine) text.resize(kMaxReplyLine);
  out += text;
  out += "\r\n";
}

void SmtpServerSession::Impl::reply(int code, std::string_view enhanced, std::string_view text) {
  if (enhanced.empty()) {
    line(fmt::format("{} {}", code, text));
  } else {
    line(fmt::format("{} {} {}", code, enhanced, text));
  }
}

void SmtpServerSession::Impl::send(const Reply& r) {
  std::string_view text = r.text;
  for (;;) {
    const std::size_t nl = text.find('\n');
    const bool last = nl == std::string_view::npos;
    line(fmt::format("{}{}{} {}", r.code, last ? ' ' : '-', r.enhanced, text.substr(0, nl)));
    if (last) break;
    text.remove_prefix(nl + 1);
  }
}

void SmtpServerSession::Impl::error(int code, std::string_view enhanced, std::string_view text) {
  reply(code, enhanced, text);
  count_error();
}

void SmtpServerSession::Impl::count_error() {
  if (mode == Mode::closed) return;
  if (++errors > config.limits.max_errors) {
    reply(421, "4.7.0", fmt::format("{} Too many errors, closing connection", config.hostname));
    close("too many errors");
  }
}

void SmtpServerSession::Impl::close(std::string reason) {
  mode = Mode::closed;
  close_reason = std::move(reason);
  reset_transaction();
  in.clear();
  in_pos = 0;
}

void SmtpServerSession::Impl::reset_transaction() {
  in_transaction = false;
  envelope = Envelope{};
  eight_bit = false;
  smtputf8 = false;
  body = std::string{};
}

// --- input ---

void SmtpServerSession::Impl::feed(std::string_view bytes) {
  // Between the 220 to STARTTLS and the end of the handshake nothing is a command.
  if (mode == Mode::closed || mode == Mode::tls || eof) return;
  in.append(bytes);
  process();
}

void SmtpServerSession::Impl::process() {
  if (processing) return;  // `done` called from inside on_message: the loop below goes on
  processing = true;
  for (;;) {
    if (waiting || mode == Mode::closed || mode == Mode::idle || mode == Mode::tls) break;
    if (mode == Mode::data) {
      if (!scan_data()) break;  // needs more bytes
      continue;
    }
    if (shutdown_requested && !in_transaction) {
      reply(421, "4.3.2",
            fmt::format("{} {}", config.hostname,
                        shutdown_text.empty() ? "Service shutting down" : shutdown_text));
      close("shutdown");
      break;
    }
    if (!next_command()) break;
  }
  processing = false;
  if (in_pos >= kCompactAt || in_pos == in.size()) {
    in.erase(0, in_pos);
    in_pos = 0;
  }
  if (eof && mode != Mode::closed && !waiting) {
    // Everything the client sent before closing has been answered.
    close(in_transaction || mode == Mode::data ? "client closed during a transaction"
                                               : "client closed");
  }
}

bool SmtpServerSession::Impl::next_command() {
  const std::size_t max = std::max<std::size_t>(config.limits.max_command_line, 8);
  for (;;) {
    const std::size_t lf = in.find('\n', in_pos);
    if (skipping_line) {
      if (lf == std::string::npos) {
        in_pos = in.size();
        return false;
      }
      in_pos = lf + 1;
      skipping_line = false;
      continue;
    }
    if (lf == std::string::npos) {
      // Whatever ends this line, it will be longer than the limit (its LF is still to come).
      if (in.size() - in_pos >= max) {
        in_pos = in.size();
        skipping_line = true;
        error(500, "5.5.2", "Line too long");
        return true;
      }
      return false;
    }
    const std::string_view line(in.data() + in_pos, lf - in_pos);
    in_pos = lf + 1;
    if (line.size() + 1 > max) {
      error(500, "5.5.2", "Line too long");
      return true;
    }
    if (line.empty() || line.back() != '\r') {
      error(500, "5.5.2", "Syntax error: bare LF in command (lines must end with CRLF)");
      return true;
    }
    const std::string_view command = line.substr(0, line.size() - 1);
    if (command.find('\r') != std::string_view::npos) {
      error(500, "5.5.2", "Syntax error: bare CR in command (lines must end with CRLF)");
      return true;
    }
    // Copy: handling may append to `in` (never today, but `out` callbacks could feed).
    if (mode == Mode::auth) {
      auth_response(std::string(command));
    } else {
      handle_command(std::string(command));
    }
    return true;
  }
}

void SmtpServerSession::Impl::on_done(std::uint64_t serial, Reply r) {
  if (!waiting || serial != message_serial) return;  // a second call: ignored
  waiting = false;
  if (mode == Mode::closed) return;
  send(sanitize(std::move(r)));
  process();
}

// --- the session ---

SmtpServerSession::SmtpServerSession(SmtpServerConfig config, Callbacks callbacks,
                                     std::string client_address)
    : impl_(std::make_shared<Impl>(std::move(config), std::move(callbacks),
                                   std::move(client_address))) {}

SmtpServerSession::~SmtpServerSession() = default;

void SmtpServerSession::start() {
  if (impl_->mode != Impl::Mode::idle) return;
  impl_->mode = Impl::Mode::command;
  impl_->reply(220, {}, fmt::format("{} {}", impl_->config.hostname, impl_->config.greeting_text));
  impl_->process();
}

void SmtpServerSession::feed(std::string_view bytes) {
  impl_->feed(bytes);
}

void SmtpServerSession::on_eof() {
  if (impl_->eof || impl_->mode == Impl::Mode::closed) return;
  impl_->eof = true;
  if (impl_->mode == Impl::Mode::idle) {
    impl_->close("client closed");
    return;
  }
  impl_->process();
}

void SmtpServerSession::shutdown(std::string_view text) {
  if (impl_->mode == Impl::Mode::closed || impl_->shutdown_requested) return;
  impl_->shutdown_requested = true;
  impl_->shutdown_text = std::string(text);
  impl_->process();
}

bool SmtpServerSession::starting_tls() const noexcept {
  return impl_->mode == Impl::Mode::tls;
}

void SmtpServerSession::tls_started(std::string description) {
  Impl& s = *impl_;
  if (s.mode != Impl::Mode::tls) return;
  // RFC 3207 §4.2: everything learnt before the handshake is forgotten.
  s.tls = true;
  s.tls_description = std::move(description);
  s.greeted = false;
  s.esmtp = false;
  s.helo.clear();
  s.auth_user.clear();
  s.reset_transaction();
  s.mode = Impl::Mode::command;
  s.process();
}

bool SmtpServerSession::tls() const noexcept {
  return impl_->tls;
}

const std::string& SmtpServerSession::auth_user() const noexcept {
  return impl_->auth_user;
}

std::string SmtpServerSession::take_output() {
  return std::exchange(impl_->out, {});
}

bool SmtpServerSession::has_output() const noexcept {
  return !impl_->out.empty();
}

bool SmtpServerSession::closed() const noexcept {
  return impl_->mode == Impl::Mode::closed;
}

bool SmtpServerSession::waiting_for_host() const noexcept {
  return impl_->waiting;
}

const std::string& SmtpServerSession::close_reason() const noexcept {
  return impl_->close_reason;
}

std::size_t SmtpServerSession::buffered_input() const noexcept {
  return impl_->in.size() - impl_->in_pos;
}

std::size_t count_received_headers(std::string_view body) {
  std::size_t n = 0;
  detail::for_each_header_line(body, [&n](std::string_view line, std::size_t) {
    // "Received" and its colon, white space allowed between them (RFC 5322 obs-optional).
    constexpr std::string_view kName = "received";
    if (line.size() > kName.size() && detail::to_lower(line.substr(0, kName.size())) == kName) {
      const std::size_t colon = line.find_first_not_of(" \t", kName.size());
      if (colon != std::string_view::npos && line[colon] == ':') ++n;
    }
    return true;
  });
  return n;
}

std::string received_header(const ReceivedMessage& m, std::string_view by_host, std::string_view id,
                            TimePoint when, std::string_view protocol, std::string_view tls) {
  std::string out =
      fmt::format("Received: from {} ([{}])\r\n\tby {} (mailq)", m.helo, m.client_address, by_host);
  std::string with(protocol);
  if (with.empty()) {
    with = m.smtputf8 ? "UTF8SMTP" : m.esmtp ? "ESMTP" : "SMTP";
    // RFC 3848: S for TLS, A for AUTH (ESMTPSA); HELO has neither extension.
    if (m.esmtp && !m.tls.empty()) with += 'S';
    if (m.esmtp && !m.auth_user.empty()) with += 'A';
  }
  out += fmt::format(" with {}", with);
  if (const std::string_view facts = tls.empty() ? std::string_view(m.tls) : tls; !facts.empty())
    out += fmt::format(" ({})", facts);
  if (!id.empty()) out += fmt::format(" id {}", id);
  if (m.envelope.recipients.size() == 1)
    out += fmt::format("\r\n\tfor <{}>", m.envelope.recipients[0].address.to_string());
  out += ";\r\n\t" + rfc5322_date(when) + "\r\n";
  return out;
}

Reply enqueue_refusal(const Error& e) {
  if (e.code == errc::message_too_large)
    return Reply(552, "5.3.4", "Message too big for system: " + e.message);
  // Which file and which system error are for the operator (the log), not for the client.
  if (e.code == errc::storage_failure)
    return Reply(451, "4.3.0", "Requested action aborted: local storage failure, try again later");
  if (e.code == errc::storage_full) return Reply(452, "4.3.1", "Insufficient system storage");
  if (e.code == errc::shutting_down || e.code == errc::bad_state)
    return Reply(451, "4.3.0", "Requested action aborted: " + e.message);
  if (e.code == errc::no_recipients || e.code == errc::invalid_address ||
      e.code == errc::forbidden_character || e.code == errc::too_long)
    return Reply(550, "5.1.3", "Bad address: " + e.message);
  return Reply(554, "5.6.0", "Message refused: " + e.message);
}

}  // namespace mailq
