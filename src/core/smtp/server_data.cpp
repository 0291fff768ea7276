// The message data of the SMTP server session: the scanner that dot-unstuffs DATA into the
// body and records what rejects the message, and the end of the data.

#include <fmt/format.h>

#include <cstdint>
#include <string>
#include <utility>

#include "core/smtp/server_impl.h"

namespace mailq {
namespace {

// RFC 5321 §4.5.3.1.6: a text line is at most 1000 octets with its CRLF.
constexpr std::size_t kMaxTextLine = 998;

}  // namespace

bool SmtpServerSession::Impl::rejected() const noexcept {
  return too_big || bare_lf_line != 0 || bare_cr_line != 0 || nul_line != 0 || long_line != 0;
}

void SmtpServerSession::Impl::flag(std::uint64_t* which) {
  if (*which == 0) *which = line_number;
  body = std::string{};  // the message is lost anyway: hold no memory for it
}

void SmtpServerSession::Impl::append(std::string_view bytes) {
  body_size += bytes.size();
  if (body_size > config.limits.max_message_size && !too_big) {
    too_big = true;
    body = std::string{};
  }
  if (!rejected()) body.append(bytes);
}

void SmtpServerSession::Impl::add_to_line(std::size_t n) {
  line_length += n;
  if (line_length > kMaxTextLine && long_line == 0) flag(&long_line);
}

// The body is appended in runs: consecutive octets of the input that stay in the body go in
// one append, so a well-formed chunk costs one copy, broken only where a stuffed dot is
// dropped or a line break started in the previous chunk.
struct SmtpServerSession::Impl::DataScan {
  Impl& session;
  const std::string_view s;
  const std::size_t start;
  std::size_t i;
  const std::size_t n;
  std::size_t run = std::string_view::npos, run_end = 0;

  explicit DataScan(Impl& impl)
      : session(impl), s(impl.in), start(impl.in_pos), i(impl.in_pos), n(s.size()) {}

  void keep(std::size_t from, std::size_t to) {
    if (run != std::string_view::npos && run_end != from) {
      session.append(s.substr(run, run_end - run));
      run = std::string_view::npos;
    }
    if (run == std::string_view::npos) run = from;
    run_end = to;
  }

  void flush() {
    if (run != std::string_view::npos) session.append(s.substr(run, run_end - run));
    run = std::string_view::npos;
  }

  // Octets that are not (all) in this chunk: the CR of a line break the previous chunk ended
  // in, or the CR after a dot.
  void literal(std::string_view text) {
    flush();
    session.append(text);
  }

  // Consumes the whole input. True when the final dot was reached (and handled).
  bool scan() {
    while (i < n) {
      switch (session.data_state) {
        case DataState::bol:
          at_line_start();
          break;
        case DataState::dot:
          after_dot();
          break;
        case DataState::dot_cr:
          if (after_dot_cr()) return true;
          break;
        case DataState::text_cr:
          after_cr();
          break;
        case DataState::text:
          in_text();
          break;
      }
    }
    flush();
    session.in_pos = n;
    return false;
  }

  void at_line_start() {
    session.line_length = 0;
    if (s[i] == '.') {
      session.data_state = DataState::dot;
      ++i;
    } else {
      session.data_state = DataState::text;
    }
  }

  void after_dot() {
    if (s[i] == '\r') {
      session.data_state = DataState::dot_cr;
      ++i;
    } else {
      session.data_state = DataState::text;  // a stuffed dot: dropped (RFC 5321 §4.5.2)
    }
  }

  // True at the end of the data.
  bool after_dot_cr() {
    if (s[i] == '\n') {
      flush();
      session.in_pos = i + 1;
      session.end_of_data();
      return true;
    }
    // ".\r" then anything but LF: a bare CR, and not the end of the data.
    session.flag(&session.bare_cr_line);
    literal("\r");
    session.add_to_line(1);
    session.data_state = DataState::text;
    return false;
  }

  void after_cr() {
    if (s[i] == '\n') {
      if (i > start)
        keep(i - 1, i + 1);
      else
        literal("\r\n");
      ++session.line_number;
      session.data_state = DataState::bol;
      ++i;
    } else {
      session.flag(&session.bare_cr_line);
      if (i > start)
        keep(i - 1, i);
      else
        literal("\r");
      session.add_to_line(1);
      session.data_state = DataState::text;
    }
  }

  void in_text() {
    std::size_t j = i;
    while (j < n && s[j] != '\r' && s[j] != '\n' && s[j] != '\0') ++j;
    if (j > i) {
      keep(i, j);
      session.add_to_line(j - i);
      i = j;
    }
    if (i == n) return;
    if (s[i] == '\r') {
      session.data_state = DataState::text_cr;  // kept with the octet after it
    } else {
      // A bare LF does not end the line: `<LF>.<CR><LF>` is text, never the end.
      session.flag(s[i] == '\n' ? &session.bare_lf_line : &session.nul_line);
      keep(i, i + 1);
      session.add_to_line(1);
    }
    ++i;
  }
};

bool SmtpServerSession::Impl::scan_data() {
  DataScan scan(*this);
  return scan.scan();
}

void SmtpServerSession::Impl::end_of_data() {
  mode = Mode::command;
  if (too_big) {
    reply(552, "5.3.4",
          fmt::format("Message size exceeds fixed maximum message size ({} octets)",
                      config.limits.max_message_size));
    reset_transaction();
    return;
  }
  std::string why;
  if (bare_lf_line != 0) {
    why = fmt::format("bare LF in line {} (lines must end with CRLF)", bare_lf_line);
  } else if (bare_cr_line != 0) {
    why = fmt::format("bare CR in line {} (lines must end with CRLF)", bare_cr_line);
  } else if (nul_line != 0) {
    why = fmt::format("NUL octet in line {}", nul_line);
  } else if (long_line != 0) {
    why = fmt::format("line {} is longer than {} octets", long_line, kMaxTextLine);
  }
  if (!why.empty()) {
    reset_transaction();
    error(550, "5.6.0", "Message rejected: " + why);
    return;
  }
  if (auto ec = envelope.validate(&why)) {
    reset_transaction();
    reply(554, "5.5.0", "Transaction failed: " + why);
    return;
  }
  if (const auto limit = config.limits.max_received_headers; limit != 0) {
    if (const std::size_t hops = count_received_headers(body); hops > limit) {
      reset_transaction();
      reply(554, "5.4.6",
            fmt::format("Too many hops: {} Received header fields, more than {} (a mail loop?)",
                        hops, limit));
      return;
    }
  }

  ReceivedMessage message;
  message.envelope = std::move(envelope);
  message.body = std::move(body);
  message.helo = helo;
  message.client_address = client_address;
  message.eight_bit = eight_bit;
  message.esmtp = esmtp;
  message.smtputf8 = smtputf8;
  message.tls = tls_description;
  message.auth_user = auth_user;
  reset_transaction();
  if (!callbacks.on_message) {
    reply(451, "4.3.0", "Error: no queue to accept the message, try again later");
    return;
  }
  waiting = true;
  const std::uint64_t serial = ++message_serial;
  std::weak_ptr<Impl> weak = weak_from_this();
  auto done = [weak, serial](Reply r) {
    if (auto self = weak.lock()) self->on_done(serial, std::move(r));
  };
  try {
    callbacks.on_message(std::move(message), std::move(done));
  } catch (...) {
    // The host failed before answering: a transient error, the client will try again.
    on_done(serial, Reply(451, "4.3.0", "Internal error, try again later"));
  }
}

}  // namespace mailq
