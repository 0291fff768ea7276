// The SMTP client's public operations: what the host reports, the commands it gives, what it
// takes out. The session's state is SmtpClient::Impl (client_impl.h).

#include "mailq/smtp_client.h"

#include <algorithm>
#include <string>
#include <utility>

#include "core/smtp/ascii.h"
#include "core/smtp/client_impl.h"
#include "core/smtp/data.h"
#include "core/smtp/downgrade.h"
#include "core/smtp/params.h"
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

using detail::has_control;
using detail::non_ascii;
using detail::printable;

bool valid_helo_name(std::string_view s) {
  if (s.empty() || s.size() > 255) return false;
  return std::none_of(s.begin(), s.end(), [](char c) {
    auto u = static_cast<unsigned char>(c);
    return u <= 0x20 || u >= 0x7f;
  });
}

}  // namespace

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
  s.pending.push_back(Impl::Pending{Impl::Cmd::greeting, 0, true, false});
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
    detail::ParsedReply pr;
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
    s.fail(SmtpPhase::tls_handshake,
           {421, "4.7.5",
            "[internal] TLS handshake failed: the server certificate was not verified" +
                s.required_by()},
           false, true);
    return;
  }
  s.tls = info;
  // RFC 3207 §4.2: everything learnt before the handshake is forgotten.
  s.caps = SmtpCapabilities{};
  s.size_offered = false;
  s.parser.clear();
  s.send_hello(Impl::Cmd::ehlo, now);
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
  text += s.required_by();
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
  // The body not yet taken by the server is not a wait for a reply.
  const bool body_stalled = s.phase == SmtpPhase::body && s.opt.reports_output_progress;
  Reply r = replies::connection_lost(body_stalled ? std::string("timeout sending the message body")
                                                  : "timeout waiting for " + s.awaited());
  s.fail(s.phase, r, !s.ready_emitted, s.phase == SmtpPhase::tls_handshake, &r);
}

void SmtpClient::on_output_progress(TimePoint now) {
  Impl& s = *impl_;
  if (s.finished || s.pending.empty() || !s.opt.reports_output_progress) return;
  const Impl::Pending& p = s.pending.front();
  if (p.cmd == Impl::Cmd::data_term && p.body && p.sent)
    s.deadline = now + s.opt.timeouts.data_block;
}

void SmtpClient::on_output_drained(TimePoint now) {
  Impl& s = *impl_;
  if (s.finished || s.pending.empty()) return;
  Impl::Pending& p = s.pending.front();
  if (p.cmd == Impl::Cmd::data_term && p.body && p.sent) {
    p.body = false;
    s.arm(now);
  }
}

namespace {

// Whether the message's header section is made of header fields (RFC 5322 §2.2: a name of
// printable ASCII, a colon; or a folded continuation) and holds UTF-8 (RFC 6532).
bool utf8_header_fields(std::string_view message) {
  const std::string_view header = detail::header_section(message);
  if (!detail::has_8bit(header) || !detail::valid_utf8(header)) return false;
  bool fields = true;
  bool first = true;
  detail::for_each_header_line(header, [&](std::string_view line, std::size_t) {
    const bool folded = line.front() == ' ' || line.front() == '\t';
    const std::size_t colon = line.find(':');
    bool named = colon != std::string_view::npos && colon > 0;
    for (std::size_t i = 0; named && i < colon; ++i) {
      const auto c = static_cast<unsigned char>(line[i]);
      named = c >= 33 && c <= 126;
    }
    fields = (folded && !first) || named;
    first = false;
    return fields;
  });
  return fields;
}

}  // namespace

bool SmtpClient::send(SmtpTransaction t, TimePoint now) {
  Impl& s = *impl_;
  if (!ready() || !t.body || t.recipients.empty()) return false;
  if (has_control(t.reverse_path) || has_control(t.envid)) return false;
  for (const auto& r : t.recipients) {
    if (r.address.empty() || has_control(r.address) || has_control(r.orcpt)) return false;
    if (!r.orcpt.empty() && detail::orcpt_param(r.orcpt).empty()) return false;
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
  // UTF-8 header fields (RFC 6532) go with SMTPUTF8 where the server offers it, so that it
  // knows what it receives; where it does not, they go as before (only an address needs it).
  if (!x.utf8 && s.caps.smtputf8) x.utf8_header = utf8_header_fields(*t.body);
  x.refused.resize(t.recipients.size());
  x.t = std::move(t);
  s.txn = std::move(x);

  // Refusals decided here, before anything is sent: the session stays usable.
  std::optional<std::string> converted_body;  // the 7-bit form, when it was made
  if (s.txn->eight_bit && !s.caps.eightbitmime && !(s.txn->utf8 && !s.caps.smtputf8)) {
    // RFC 6152 §3: converted to 7 bit, or returned.
    std::string why = "the route returns such messages";
    if (s.opt.convert_8bit) {
      auto converted = detail::downgrade_to_7bit(*s.txn->t.body);
      if (converted) {
        converted_body = std::move(*converted);
        s.txn->data = detail::encode_data(*converted_body, &info);
        s.txn->data_size = s.txn->data.size();
        s.txn->size = info.size;
        s.txn->eight_bit = false;
        s.txn->downgraded = true;
      } else {
        why = "it cannot be converted to 7 bit: " + converted.error().message;
      }
    }
    if (s.txn->eight_bit) {
      s.finish_txn({554, "5.6.3",
                    "[internal] the message has 8-bit data and the server does not support "
                    "8BITMIME (RFC 6152); " +
                        why},
                   Reply{});
      return true;
    }
  }
  if (s.txn->utf8 && !s.caps.smtputf8) {
    s.finish_txn({553, "5.6.7",
                  "[internal] the server does not support SMTPUTF8, needed for a non-ASCII "
                  "address (RFC 6531)"},
                 Reply{});
    return true;
  }
  if (s.txn->t.signer) {
    // Signed last, over the bytes that go out: after the 7-bit conversion, before stuffing.
    const std::string plain =
        detail::normalize_lines(converted_body ? *converted_body : *s.txn->t.body);
    Result<std::string> fields = s.txn->t.signer->sign(plain, now);
    if (!fields) {
      s.finish_txn(
          {451, "4.7.0", "[internal] the message could not be signed: " + fields.error().message},
          Reply{});
      return true;
    }
    if (!fields->empty()) {
      s.txn->data = detail::encode_data(*fields + plain, &info);
      s.txn->data_size = s.txn->data.size();
      s.txn->size = info.size;
    }
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
    s.queue(Impl::Cmd::rset, "RSET");
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
    s.queue(Impl::Cmd::quit, "QUIT");
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
