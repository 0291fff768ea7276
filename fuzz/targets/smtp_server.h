// Fuzz target: the receiving side of SMTP (SmtpServerSession, sans-IO), fed arbitrary client
// bytes split at arbitrary points.
//
// Input: 4 header bytes, then the bytes "the client" sends.
//   byte 0: bit 0 small limits (64-octet command lines, 2 recipients, 300-octet messages,
//           3 errors, 2 transactions); bit 1 the host answers each message later (on the next
//           chunk) rather than at once; bit 2 the host refuses messages (451); bit 3 a
//           recipient policy refusing "*@refused.example"; bit 4 shutdown() before the client
//           closes; bit 5 STARTTLS and AUTH offered (AUTH also in the clear), the "handshake"
//           done as soon as the session asks for it, user "u" with password "p" accepted;
//           bit 6 TLS and AUTH required before MAIL;
//   bytes 1-3: seed of the split points.
// The seed corpus holds real client sessions (swaks, Postfix, pipelined, smuggling
// attempts): fuzz/corpus/smtp_server/*.
//
// Invariants checked:
//  - the session writes only whole CRLF lines, each a reply "ddd" with a code in 200..599
//    and "-" or " " after it, without control characters;
//  - every message handed to the host has a valid envelope (Envelope::validate), between 1
//    and max_recipients recipients, a body of CRLF lines only (no bare CR or LF, no NUL, no
//    line over 998 octets) no larger than the limit, and follows its own 354 reply: there are
//    never more messages than 354 replies (no SMTP smuggling of a second message);
//  - the host's `done` is awaited: no reply is written while a message waits for it;
//  - once closed, the session writes nothing more and hands over nothing more;
//  - with TLS and AUTH required, every message came over "TLS" from the user "u"; AUTH is
//    only ever asked of the host with the credentials the client sent in full.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_support.h"
#include "mailq/address.h"
#include "mailq/smtp_server.h"

namespace mailq::fuzz {

namespace smtp_server_detail {

struct State {
  std::size_t messages = 0;
  std::size_t intermediates = 0;  // 354 replies written
  std::vector<std::function<void(Reply)>> waiting;
  std::string partial;  // an output line not finished yet (never expected)
  bool refuse = false;
  std::uint64_t max_size = 0;
  std::uint32_t max_rcpts = 0;
};

inline void check_message(State& st, const ReceivedMessage& m) {
  std::string why;
  MAILQ_FUZZ_CHECK(!m.envelope.validate(&why), "a received envelope does not validate: " + why);
  MAILQ_FUZZ_CHECK(!m.envelope.recipients.empty(), "a message without recipients");
  MAILQ_FUZZ_CHECK(m.envelope.recipients.size() <= st.max_rcpts, "more recipients than allowed");
  MAILQ_FUZZ_CHECK(m.body.size() <= st.max_size, "a message over the size limit");
  MAILQ_FUZZ_CHECK(!has_control(m.helo), "control character in the HELO name");
  std::size_t line = 0;
  for (std::size_t i = 0; i < m.body.size(); ++i) {
    const char c = m.body[i];
    MAILQ_FUZZ_CHECK(c != '\0', "NUL in a received body");
    if (c == '\r') {
      MAILQ_FUZZ_CHECK(i + 1 < m.body.size() && m.body[i + 1] == '\n', "bare CR in a body");
      MAILQ_FUZZ_CHECK(line <= 998, "a body line over 998 octets");
      line = 0;
      ++i;
      continue;
    }
    MAILQ_FUZZ_CHECK(c != '\n', "bare LF in a received body");
    ++line;
  }
  MAILQ_FUZZ_CHECK(line <= 998, "a body line over 998 octets");
  MAILQ_FUZZ_CHECK(
      m.body.empty() || (m.body.size() >= 2 && m.body.compare(m.body.size() - 2, 2, "\r\n") == 0),
      "a received body does not end with CRLF");
}

inline void check_output(State& st, const std::string& out, bool waiting) {
  if (out.empty()) {
    MAILQ_FUZZ_CHECK(st.messages <= st.intermediates,
                     "a message was handed over without its own 354 (smuggling)");
    return;
  }
  MAILQ_FUZZ_CHECK(!waiting, "a reply was written while a message waits for the host");
  std::string all = st.partial + out;
  st.partial.clear();
  std::size_t p = 0;
  while (p < all.size()) {
    const std::size_t e = all.find("\r\n", p);
    MAILQ_FUZZ_CHECK(e != std::string::npos, "output does not end with CRLF: " + all);
    const std::string_view l = std::string_view(all).substr(p, e - p);
    MAILQ_FUZZ_CHECK(l.find('\n') == std::string_view::npos, "bare LF in a reply");
    MAILQ_FUZZ_CHECK(!has_control(l), "control character in a reply: " + std::string(l));
    MAILQ_FUZZ_CHECK(l.size() >= 3 && l[0] >= '2' && l[0] <= '5' && l[1] >= '0' && l[1] <= '9' &&
                         l[2] >= '0' && l[2] <= '9',
                     "not a reply line: " + std::string(l));
    MAILQ_FUZZ_CHECK(l.size() == 3 || l[3] == ' ' || l[3] == '-', "bad reply separator");
    MAILQ_FUZZ_CHECK(l.size() <= 512, "reply line over 512 octets (RFC 5321 4.5.3.1.5)");
    if (l.substr(0, 4) == "354 ") ++st.intermediates;
    p = e + 2;
  }
  // Counted once the output holding the 354 is taken (the message may be handed over within
  // the same feed() as its DATA command).
  MAILQ_FUZZ_CHECK(st.messages <= st.intermediates,
                   "a message was handed over without its own 354 (smuggling)");
}

}  // namespace smtp_server_detail

inline void run_smtp_server(std::string_view data) {
  using namespace smtp_server_detail;
  Input in(data);
  const std::uint8_t o = in.byte();
  const std::uint32_t seed =
      in.byte() | std::uint32_t{in.byte()} << 8 | std::uint32_t{in.byte()} << 16;
  const bool later = (o & 2) != 0;
  const bool polite_end = (o & 16) != 0;
  const bool secure = (o & 32) != 0;
  const bool required = secure && (o & 64) != 0;

  SmtpServerConfig cfg;
  cfg.hostname = "mx.example.net";
  if (o & 1) {
    cfg.limits.max_command_line = 64;
    cfg.limits.max_recipients = 2;
    cfg.limits.max_message_size = 300;
    cfg.limits.max_errors = 3;
    cfg.limits.max_transactions = 2;
  }
  if (secure) {
    cfg.starttls = true;
    cfg.auth.enabled = true;
    cfg.auth.allow_plaintext = true;
    cfg.require_tls = required;
    cfg.auth.required = required;
  }
  auto st = std::make_shared<State>();
  st->refuse = (o & 4) != 0;
  st->max_size = cfg.limits.max_message_size;
  st->max_rcpts = cfg.limits.max_recipients;

  SmtpServerSession::Callbacks cb;
  if (o & 8) {
    cb.check_recipient = [](const Recipient& r) {
      if (r.address.routing_domain() == "refused.example")
        return Reply{550, "5.7.1", "relaying denied"};
      return Reply{250, "2.1.5", "OK"};
    };
  }
  SmtpServerSession* session = nullptr;
  cb.on_message = [st, later, required, &session](ReceivedMessage m,
                                                  std::function<void(Reply)> done) {
    ++st->messages;
    // The replies up to the 354 are out before the message is handed over; from here until
    // `done` runs nothing more may be written.
    if (session) check_output(*st, session->take_output(), false);
    check_message(*st, m);
    if (required) {
      MAILQ_FUZZ_CHECK(m.auth_user == "u", "a message without the required AUTH");
      MAILQ_FUZZ_CHECK(m.tls == "TLSv1.2 FUZZ", "a message without the required TLS");
    }
    if (later) {
      st->waiting.push_back(std::move(done));
    } else {
      done(st->refuse ? Reply{451, "4.3.0", "try later"} : Reply{250, "2.0.0", "queued"});
    }
  };
  if (secure) {
    cb.authenticate = [st, later, &session](AuthRequest r, std::function<void(AuthVerdict)> done) {
      // As for a message: what came before is out; nothing more until `done`.
      if (session) check_output(*st, session->take_output(), false);
      MAILQ_FUZZ_CHECK(r.mechanism == "PLAIN" || r.mechanism == "LOGIN", "unknown mechanism");
      MAILQ_FUZZ_CHECK(!r.user.empty() && !has_control(r.user), "bad user name handed over");
      const AuthVerdict v = st->refuse                           ? AuthVerdict::unavailable
                            : r.user == "u" && r.password == "p" ? AuthVerdict::accepted
                                                                 : AuthVerdict::rejected;
      if (later) {
        st->waiting.push_back([done, v](Reply) { done(v); });
      } else {
        done(v);
      }
    };
  }
  SmtpServerSession s(cfg, cb, "127.0.0.1");
  session = &s;
  s.start();
  check_output(*st, s.take_output(), false);

  // Runs the host's pending `done`s; each may let the session read a pipelined message that
  // waits for its own `done` in turn.
  auto answer_waiting = [&] {
    while (!st->waiting.empty()) {
      auto w = std::move(st->waiting);
      st->waiting.clear();
      for (auto& done : w)
        done(st->refuse ? Reply{452, "4.3.1", "full"} : Reply{250, "2.0.0", "ok"});
      check_output(*st, s.take_output(), s.waiting_for_host());
    }
  };

  Rng rng(seed);
  std::string_view client = in.rest();
  const std::uint32_t max_chunk = 1u << rng.below(12);
  while (!client.empty()) {
    const std::size_t n = 1 + rng.below(max_chunk);
    const bool was_closed = s.closed();
    const std::size_t before = st->messages;
    s.feed(client.substr(0, n));
    client.remove_prefix(std::min(n, client.size()));
    const std::string out = s.take_output();
    if (was_closed) {
      MAILQ_FUZZ_CHECK(out.empty(), "output after the session closed");
      MAILQ_FUZZ_CHECK(st->messages == before, "a message after the session closed");
    }
    check_output(*st, out, s.waiting_for_host());
    if (s.starting_tls()) {
      s.tls_started("TLSv1.2 FUZZ");
      check_output(*st, s.take_output(), s.waiting_for_host());
    }
    if (!st->waiting.empty() && rng.below(2) == 0) answer_waiting();
  }
  answer_waiting();
  if (polite_end) {
    // shutdown() lets an open transaction finish (the session closes at its end, or at the
    // client's EOF below), so it need not close at once.
    s.shutdown();
    check_output(*st, s.take_output(), s.waiting_for_host());
  }
  s.on_eof();
  check_output(*st, s.take_output(), false);
  MAILQ_FUZZ_CHECK(!s.waiting_for_host(), "still waiting after every done ran");
  MAILQ_FUZZ_CHECK(s.closed(), "not closed after the client's EOF with nothing waiting");
  // Input after the end is ignored once closed.
  if (s.closed()) {
    s.feed("MAIL FROM:<a@example.org>\r\n");
    MAILQ_FUZZ_CHECK(s.take_output().empty(), "output after close");
  }
  (void)s.close_reason();
}

}  // namespace mailq::fuzz
