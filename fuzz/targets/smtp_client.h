// Fuzz target: a whole SmtpClient session (sans-IO) against arbitrary server bytes.
//
// Input: 4 header bytes, then the bytes "the server" sends.
//   byte 0: options: bits 0-1 TLS policy, bit 2 credentials, bit 3 auth_over_plaintext,
//           bit 4 small reply limits, bit 5 end with quit() rather than a lost connection,
//           bits 6-7 how many transactions to try (0-3)
//   bytes 1-3: seed of the choices: where the server bytes are split, which transaction is
//           sent (some carry CR/LF/NUL injection attempts), when time passes, when the TLS
//           handshake succeeds or fails, when the output is reported drained, when the
//           host quits or the connection breaks.
// The seed corpus holds real sessions (fuzz/corpus/smtp_client/*).
//
// Invariants checked:
//  - the client writes only whole CRLF lines, no bare CR or LF, and every line outside a
//    message body is a command it may send (EHLO/HELO with our name, STARTTLS, AUTH and its
//    base64 continuation lines, MAIL FROM with the transaction's reverse path, RCPT TO with
//    one of its recipients, DATA, RSET, QUIT) without any control character;
//  - a message body goes out exactly as encode_data() encodes it (or its conversion to 7 bit,
//    for a server without 8BITMIME), and only after DATA;
//  - a transaction with a CR, LF, NUL or other control character in any value is refused by
//    send() and writes nothing;
//  - under TlsPolicy required/verify nothing past EHLO/STARTTLS is written in plaintext; AUTH
//    is never written in plaintext unless auth_over_plaintext;
//  - events come in the documented order: [StartTls] Ready (once) {TransactionDone} then at
//    most one Failed/Closed, last; one TransactionDone per accepted send(), with one reply
//    per recipient; after the end (quit or lost connection) the session is finished.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/smtp/downgrade.h"
#include "fuzz_support.h"
#include "mailq/smtp_client.h"

namespace mailq::fuzz {

namespace smtp_client_detail {

struct TxnSpec {
  std::string_view from;
  std::vector<std::string_view> to;
  std::string_view orcpt;
  std::string_view envid;
  std::string_view body;
  std::size_t long_line;  // > 0: append a line of this many 'x' to the body
};

// Clean values, and values trying to inject commands (which send() must refuse).
inline const std::vector<TxnSpec>& transactions() {
  using namespace std::string_view_literals;
  static const std::vector<TxnSpec> kTxns = {
      {"sender@example.org", {"rcpt@example.net"}, "", "", "Subject: hi\r\n\r\nHello.\r\n", 0},
      {"",
       {"a@example.net", "b@example.net", "c@example.com"},
       "rfc822;a@example.net",
       "ENV+ID=1",
       "Subject: dots\n\n.\n..\nline\r.\rbare CR\r\n.\r\nend",
       0},
      {"s@example.org", {"r@example.net"}, "", "", "no final newline", 0},
      {"s@example.org", {"r@example.net"}, "", "", "", 0},
      {"j\xc3\xb6rg@example.org", {"m\xc3\xbcller@example.de"}, "", "", "8bit: \xe9\xe8\r\n", 0},
      {"s@example.org", {"r@example.net"}, "", "", "Subject: long\r\n\r\n", 1200},
      {"s@example.org",
       {"r@example.net", "r2@example.net"},
       "rfc822;r+x=y@example.net",
       "e",
       "\r\n.\r\nMAIL FROM:<evil@example.com>\r\n\n.\n\r.\r\n",
       0},
      // Injection attempts: every one must be refused by send().
      {"s@example.org\r\nRCPT TO:<evil@example.com>", {"r@example.net"}, "", "", "x", 0},
      {"s@example.org", {"r@example.net>\r\nDATA"}, "", "", "x", 0},
      {"s@example.org", {"r@example.net\n"}, "", "", "x", 0},
      {"s@example.org", {"r@exa\0mple.net"sv}, "", "", "x", 0},
      {"s@example.org", {"r@example.net"}, "rfc822;r@example.net\r\nQUIT", "", "x", 0},
      {"s@example.org", {"r@example.net"}, "", "id\rRSET", "x", 0},
      {"s@example.org", {"r@example.net"}, "", "", "x", 0},
  };
  return kTxns;
}

inline bool is_base64_line(std::string_view l) {
  if (l.empty()) return false;
  for (char c : l) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '+' || c == '/' || c == '=';
    if (!ok) return false;
  }
  return true;
}

inline bool starts_with(std::string_view s, std::string_view p) {
  return s.substr(0, p.size()) == p;
}

class Session {
 public:
  Session(SmtpClientOptions options, Rng& rng) : opt_(options), client_(options), rng_(rng) {}

  void connected() {
    client_.on_connected(now_);
    after();
  }

  void data(std::string_view bytes) {
    client_.on_data(bytes, now_);
    after();
  }

  void maybe_act(unsigned txns_wanted) {
    const std::uint32_t r = rng_.below(64);
    if (r < 4) {
      // Time passes; a due deadline fires.
      now_ += std::chrono::seconds(1 + rng_.below(600));
      if (client_.deadline() != TimePoint::max() && now_ >= client_.deadline()) {
        client_.on_timeout(now_);
      }
      after();
    } else if (r < 8) {
      client_.on_output_drained(now_);
      after();
    } else if (r < 10) {
      // Out-of-turn TLS notifications must be ignored.
      tls_result(rng_.below(2) == 0);
    }
    if (client_.ready() && sent_ < txns_wanted && rng_.below(4) != 0) send();
  }

  /// The host ends the session early: QUIT when idle (else at once), or the connection breaks.
  void cut(bool polite) {
    if (polite)
      client_.quit(now_);
    else
      client_.on_closed("fuzz: connection reset by peer", now_);
    after();
  }

  void end(bool polite) {
    if (polite) {
      client_.quit(now_);
      after();
    }
    client_.on_closed("fuzz: connection closed", now_);
    after();
    MAILQ_FUZZ_CHECK(client_.finished(), "the session must be over after the connection closed");
    MAILQ_FUZZ_CHECK(ended_, "no Failed or Closed event at the end");
    MAILQ_FUZZ_CHECK(done_ == accepted_, "a TransactionDone per accepted send()");
    MAILQ_FUZZ_CHECK(client_.transactions() == done_, "transactions() count");
    MAILQ_FUZZ_CHECK(!client_.ready(), "ready after the end");
    // Inputs after the end are ignored.
    client_.on_data("250 OK\r\n", now_);
    client_.on_timeout(now_ + std::chrono::hours(1));
    MAILQ_FUZZ_CHECK(!client_.next_event(), "event after the end");
    MAILQ_FUZZ_CHECK(client_.take_output().empty(), "output after the end");
  }

 private:
  void send() {
    const auto& all = transactions();
    const TxnSpec& spec = all[rng_.below(static_cast<std::uint32_t>(all.size()))];
    SmtpTransaction t;
    t.reverse_path = std::string(spec.from);
    bool injected = has_control(t.reverse_path);
    for (std::string_view to : spec.to) {
      SmtpTransaction::Rcpt r;
      r.address = std::string(to);
      r.notify = static_cast<std::uint8_t>(rng_.below(16));
      if (r.notify & kNotifyNever) r.notify = kNotifyNever;
      r.orcpt = std::string(spec.orcpt);
      injected = injected || has_control(r.address) || has_control(r.orcpt);
      t.recipients.push_back(std::move(r));
    }
    t.envid = std::string(spec.envid);
    injected = injected || has_control(t.envid);
    std::string body(spec.body);
    if (spec.long_line) body.append(spec.long_line, 'x').append("\r\n");
    t.body = std::make_shared<const std::string>(body);
    t.ret = static_cast<DsnRet>(rng_.below(3));
    t.eight_bit = rng_.below(2) == 0;
    t.smtputf8 = rng_.below(8) == 0;

    const std::size_t before = done_;
    const bool ok = client_.send(t, now_);
    if (injected) {
      MAILQ_FUZZ_CHECK(!ok, "send() accepted a value with a control character");
      MAILQ_FUZZ_CHECK(!client_.has_output(), "a refused send() wrote something");
      return;
    }
    if (!ok) return;
    ++sent_;
    ++accepted_;
    txn_ = t;
    expected_body_ = encode_data(*t.body);
    auto seven_bit = detail::downgrade_to_7bit(*t.body);
    expected_7bit_body_ = seven_bit ? encode_data(*seven_bit) : expected_body_;
    after();
    (void)before;
  }

  void tls_result(bool ok) {
    if (ok) {
      TlsInfo info;
      info.version = "TLSv1.3";
      info.cipher = "TLS_AES_256_GCM_SHA384";
      const bool in_handshake = client_.phase() == SmtpPhase::tls_handshake;
      client_.on_tls_established(info, now_);
      if (in_handshake && !client_.finished()) tls_up_ = true;
    } else {
      client_.on_tls_failed("fuzz: handshake failed", now_);
    }
    after();
  }

  // After every input: take the output and check it, then the events.
  void after() {
    check_output(client_.take_output());
    while (auto ev = client_.next_event()) check_event(std::move(*ev));
    MAILQ_FUZZ_CHECK(!client_.has_output() || pending_tls_,
                     "output appeared while handling events");
    if (pending_tls_) {
      pending_tls_ = false;
      tls_result(rng_.below(4) != 0);
    }
  }

  void check_output(const std::string& out) {
    if (out.empty()) return;
    MAILQ_FUZZ_CHECK(!ended_ || out == "QUIT\r\n", "output after Failed/Closed other than QUIT");
    MAILQ_FUZZ_CHECK(out.size() >= 2 && out.compare(out.size() - 2, 2, "\r\n") == 0,
                     "output does not end with CRLF");
    for (std::size_t i = 0; i < out.size(); ++i) {
      if (out[i] == '\n') MAILQ_FUZZ_CHECK(i > 0 && out[i - 1] == '\r', "bare LF written");
      if (out[i] == '\r') MAILQ_FUZZ_CHECK(i + 1 < out.size() && out[i + 1] == '\n', "bare CR");
    }
    if (expect_body_ && (out == expected_body_ || out == expected_7bit_body_ || out == ".\r\n")) {
      // The body (or the empty data of a 354 with no valid recipient), right after DATA.
      expect_body_ = false;
      return;
    }
    std::size_t p = 0;
    while (p < out.size()) {
      const std::size_t e = out.find("\r\n", p);
      check_command(std::string_view(out).substr(p, e - p), out);
      p = e + 2;
    }
  }

  void check_command(std::string_view l, const std::string& all) {
    MAILQ_FUZZ_CHECK(!has_control(l), all);
    const bool plaintext_ok =
        tls_up_ || opt_.tls == TlsPolicy::none || opt_.tls == TlsPolicy::opportunistic;
    if (l == "EHLO " + opt_.helo_name || l == "HELO " + opt_.helo_name || l == "STARTTLS" ||
        l == "QUIT") {
      return;
    }
    MAILQ_FUZZ_CHECK(plaintext_ok, "wrote past EHLO in plaintext under required/verify: " + all);
    const bool login_line = auth_login_lines_ > 0 && is_base64_line(l);
    if (login_line) --auth_login_lines_;
    if (l == "AUTH LOGIN") auth_login_lines_ = 2;
    if (starts_with(l, "AUTH ") || login_line) {
      MAILQ_FUZZ_CHECK(opt_.auth.has_value(), "AUTH without credentials");
      MAILQ_FUZZ_CHECK(tls_up_ || opt_.auth_over_plaintext, "AUTH written in plaintext");
      return;
    }
    if (l == "RSET") return;
    MAILQ_FUZZ_CHECK(txn_.has_value(), "transaction command without a transaction: " + all);
    if (starts_with(l, "MAIL FROM:<")) {
      const std::string head = "MAIL FROM:<" + txn_->reverse_path + ">";
      MAILQ_FUZZ_CHECK(starts_with(l, head) && (l.size() == head.size() || l[head.size()] == ' '),
                       all);
      return;
    }
    if (starts_with(l, "RCPT TO:<")) {
      bool found = false;
      for (const auto& r : txn_->recipients) {
        const std::string head = "RCPT TO:<" + r.address + ">";
        if (starts_with(l, head) && (l.size() == head.size() || l[head.size()] == ' '))
          found = true;
      }
      MAILQ_FUZZ_CHECK(found, "RCPT for an address not in the transaction: " + all);
      return;
    }
    if (l == "DATA") {
      expect_body_ = true;
      return;
    }
    check_failed("unknown command line", __FILE__, __LINE__, all);
  }

  void check_event(SmtpEvent ev) {
    MAILQ_FUZZ_CHECK(!ended_, "an event after Failed/Closed");
    if (std::holds_alternative<smtp_event::StartTls>(ev)) {
      MAILQ_FUZZ_CHECK(!ready_, "StartTls after Ready");
      MAILQ_FUZZ_CHECK(opt_.tls != TlsPolicy::none, "StartTls under TlsPolicy::none");
      MAILQ_FUZZ_CHECK(client_.phase() == SmtpPhase::tls_handshake, "StartTls outside handshake");
      pending_tls_ = true;
    } else if (auto* r = std::get_if<smtp_event::Ready>(&ev)) {
      MAILQ_FUZZ_CHECK(!ready_, "Ready twice");
      ready_ = true;
      if (opt_.tls == TlsPolicy::required || opt_.tls == TlsPolicy::verify)
        MAILQ_FUZZ_CHECK(tls_up_, "Ready without TLS under required/verify");
      MAILQ_FUZZ_CHECK(r->greeting.code == 220, "Ready without a 220 greeting");
    } else if (auto* d = std::get_if<smtp_event::TransactionDone>(&ev)) {
      MAILQ_FUZZ_CHECK(ready_, "TransactionDone before Ready");
      MAILQ_FUZZ_CHECK(txn_.has_value(), "TransactionDone without a transaction");
      MAILQ_FUZZ_CHECK(d->replies.size() == txn_->recipients.size(), "one reply per recipient");
      for (const Reply& rep : d->replies)
        MAILQ_FUZZ_CHECK(rep.code == 0 || (rep.code >= 200 && rep.code <= 599), rep.to_string());
      ++done_;
      // The transaction decided without sending (SIZE, SMTPUTF8) keeps txn_ for the check of
      // a later DATA; it is replaced at the next send().
      expect_body_ = false;
    } else if (auto* f = std::get_if<smtp_event::Failed>(&ev)) {
      MAILQ_FUZZ_CHECK(f->reply.code >= 400 && f->reply.code <= 599, f->reply.to_string());
      MAILQ_FUZZ_CHECK(!f->connection_level || !ready_, "connection-level failure after Ready");
      ended_ = true;
    } else {
      ended_ = true;
    }
  }

  SmtpClientOptions opt_;
  SmtpClient client_;
  Rng& rng_;
  TimePoint now_{std::chrono::hours(24 * 365 * 50)};
  std::optional<SmtpTransaction> txn_;
  std::string expected_body_;
  std::string expected_7bit_body_;
  bool expect_body_ = false;
  bool pending_tls_ = false;
  int auth_login_lines_ = 0;
  bool tls_up_ = false;
  bool ready_ = false;
  bool ended_ = false;
  unsigned sent_ = 0;
  std::size_t accepted_ = 0;
  std::size_t done_ = 0;
};

}  // namespace smtp_client_detail

inline void run_smtp_client(std::string_view data) {
  using namespace smtp_client_detail;
  Input in(data);
  const std::uint8_t o = in.byte();
  const std::uint32_t seed =
      in.byte() | std::uint32_t{in.byte()} << 8 | std::uint32_t{in.byte()} << 16;
  SmtpClientOptions opt;
  opt.helo_name = "client.example.org";
  opt.tls = static_cast<TlsPolicy>(o & 0x03);
  opt.tls_server_name = "mx.example.net";
  if (o & 0x04) opt.auth = AuthCredentials{"user", "secret pass"};
  opt.auth_over_plaintext = (o & 0x08) != 0;
  if (o & 0x10) {
    opt.max_reply_line = 64;
    opt.max_reply_lines = 4;
  }
  const bool polite = (o & 0x20) != 0;
  const unsigned txns = (o >> 6) & 0x03;

  Rng rng(seed);
  Session s(opt, rng);
  s.connected();
  std::string_view server = in.rest();
  // Chunk sizes: byte by byte, small, or up to whole replies at a time.
  const std::uint32_t max_chunk = 1u << rng.below(12);
  // One session in eight is cut short by the host or the network after some chunk.
  const std::uint32_t cut_at = rng.below(8) == 0 ? rng.below(32) : ~0u;
  for (std::uint32_t chunk = 0; !server.empty(); ++chunk) {
    const std::size_t n = 1 + rng.below(max_chunk);
    s.data(server.substr(0, n));
    server.remove_prefix(std::min(n, server.size()));
    s.maybe_act(txns);
    if (chunk == cut_at) s.cut(rng.below(2) == 0);
  }
  s.maybe_act(txns);
  s.end(polite);
}

}  // namespace mailq::fuzz
