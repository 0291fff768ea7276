// mailq — the SMTP client protocol core. Owns no socket and no clock.
//
// The host (normally the Deliverer) feeds it what happens — connected, bytes received, TLS
// established, the current time — and pulls out the bytes to send, the next deadline, and
// events. One SmtpClient is one SMTP session (one connection); it can carry several
// transactions in turn (connection reuse, RSET between when needed).
//
//     SmtpClient c(options);
//     c.on_connected(now);                  // expect the greeting
//     conn.write(c.take_output());          // nothing yet
//     c.on_data(bytes, now);                // "220 ..." -> EHLO queued
//     while (auto ev = c.next_event()) { ... }
//     if (now >= c.deadline()) c.on_timeout(now);
//
// Commands are pipelined (RFC 2920) when the server offers PIPELINING: MAIL, every RCPT and
// DATA go out together, replies are matched by count and every status is checked; without
// PIPELINING one command waits for its reply. The body goes out with CRLF line endings only
// (bare CR and bare LF become CRLF: no SMTP smuggling) and dot-stuffed, then "<CRLF>.<CRLF>".
//
// Event order, for one session:
//   [StartTls] Ready (once) {TransactionDone (exactly once per accepted send())} then at
//   most one of Failed / Closed, always last; a TransactionDone for a transaction under way
//   comes before the Failed that broke it. `finished()` is true once Failed or Closed is
//   queued; every input after that is ignored.
//
// Call `take_output()` after every input or command and write what it returns. A reply to a
// command whose bytes were not taken yet cannot be genuine (the server never saw it) and is a
// protocol error, as is any reply when no command is outstanding (except a 421 while idle,
// the server closing the session, which is a plain Failed).
//
// Protocol errors (bad reply syntax, mismatched multi-line codes, over-long lines or
// replies, unexpected codes, plaintext after the 220 to STARTTLS) end the session with
// `421 4.5.0 [internal] protocol error: <what>`; timeouts and a lost connection with
// `421 4.4.2 [internal] timeout waiting for <what>` / `... connection lost waiting for <what>`.
// Recipients without a final answer get that same transient reply.
//
// `Failed::connection_level` is true only for what says the host cannot be reached or does
// not speak SMTP: no, negative or garbage greeting, a 421 before Ready, and timeouts, lost
// connections (also during the TLS handshake) and protocol errors before Ready. Failures
// before Ready that are about policy or configuration are not connection-level (the host
// should move on to the next host without counting them against the destination): EHLO and
// HELO refused; STARTTLS required by the policy but not offered or refused
// (`451 4.7.4 [internal] STARTTLS required by policy but not offered by the server`; never
// plaintext); the TLS handshake failed (`421 4.7.5`, with `tls_failure`); AUTH impossible on
// this session (no TLS and no `auth_over_plaintext`, or neither PLAIN nor LOGIN offered:
// `451 4.7.0 [internal] AUTH not attempted: ...`); the server refused our credentials (its
// reply as is, so 535 is permanent: a host may prefer to defer rather than bounce on it);
// configuration errors (`451 4.3.5`). Everything after Ready is not connection-level.
//
// After a Failed that follows a regular negative reply (not 421, not a protocol error or
// broken connection) the stream is still in step and `take_output()` returns a polite
// "QUIT\r\n"; writing it before closing is optional.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "mailq/address.h"
#include "mailq/clock.h"
#include "mailq/reply.h"
#include "mailq/route.h"
#include "mailq/signer.h"
#include "mailq/transport.h"

namespace mailq {

/// Session phases, for timeouts and diagnostics.
enum class SmtpPhase : std::uint8_t {
  connect,
  greeting,
  ehlo,
  helo,
  starttls,
  tls_handshake,
  auth,
  mail,
  rcpt,
  data,
  body,
  data_term,
  rset,
  quit,
  idle,
  closed
};
const char* to_string(SmtpPhase p) noexcept;

/// Capabilities from the EHLO reply.
struct SmtpCapabilities {
  bool esmtp = false;  ///< EHLO succeeded (false after a HELO fallback)
  bool pipelining = false;
  bool starttls = false;
  bool eightbitmime = false;
  bool smtputf8 = false;
  bool dsn = false;
  bool enhanced_status_codes = false;
  bool auth_plain = false;
  bool auth_login = false;
  std::uint64_t size = 0;  ///< SIZE limit, 0 = none announced
};

struct SmtpClientOptions {
  std::string helo_name = "localhost";
  TlsPolicy tls = TlsPolicy::opportunistic;
  std::string tls_server_name;  ///< SNI / verified name (the MX or smart-host name)
  std::string ca_file;
  std::optional<AuthCredentials> auth;
  bool auth_over_plaintext = false;
  /// A message with 8-bit octets for a server without 8BITMIME (RFC 6152 §3): converted to
  /// 7 bit (true: each 8-bit MIME part re-encoded, quoted-printable for text, base64 else)
  /// or returned (false: `554 5.6.3`). What cannot be converted is returned either way.
  bool convert_8bit = true;
  /// Who demands `tls` when it is not the route ("the MTA-STS policy of example.com, id
  /// 2026a"): said in the reply of every TLS failure, so that the log and the queue tell why.
  std::string tls_required_by;
  /// DANE: usable TLSA records that authenticate the server's certificate (with `tls` verify),
  /// and the recipient domain, a second name a DANE-TA certificate may carry
  /// (TlsClientOptions::tlsa).
  std::vector<dane::TlsaRecord> dane_tlsa;
  std::string dane_domain;
  /// Who wants the certificate checked without demanding it ("the MTA-STS policy of
  /// example.com, id 2026a (mode testing)"): with `tls` opportunistic or required, STARTTLS
  /// checks the certificate for `tls_server_name` against `ca_file` and lets it through
  /// (TlsClientOptions::check); the result is in tls() after the handshake.
  std::string tls_checked_for;
  SmtpTimeouts timeouts;
  std::size_t max_reply_line = 4096;  ///< a longer reply line is a protocol error
  std::size_t max_reply_lines = 256;  ///< a longer multi-line reply is a protocol error
  /// The host reports write progress (`on_output_progress`, `on_output_drained`), as the
  /// Deliverer does: the message body then has `timeouts.data_block` per write (no progress
  /// for that long fails it: RFC 5321 section 4.5.3.2.5), and the reply to the final dot
  /// `timeouts.data_term` from when the dot was written. Without it the client allows one
  /// data-block timeout per started MiB of body, plus the data-termination timeout.
  bool reports_output_progress = false;
};

/// One transaction: an envelope and a body. The body is RFC 5322 text with any line endings;
/// the client normalises and dot-stuffs it.
struct SmtpTransaction {
  std::string reverse_path;  ///< "" = <>
  struct Rcpt {
    std::string address;
    std::uint8_t notify = kNotifyDefault;
    std::string orcpt;  ///< "rfc822;user@example.org"
  };
  std::vector<Rcpt> recipients;
  std::shared_ptr<const std::string> body;
  DsnRet ret = DsnRet::unspecified;
  std::string envid;
  bool eight_bit = false;  ///< body has 8-bit octets: BODY=8BITMIME when offered
  bool smtputf8 = false;   ///< non-ASCII envelope: needs SMTPUTF8 (fails permanently without)
  /// Signs the message as it goes out (DKIM): called with the final bytes (CRLF line ends,
  /// after any 7-bit conversion, before dot-stuffing); its header fields are put in front.
  /// A signing error defers every recipient with 451 4.7.0 before anything is sent.
  std::shared_ptr<const MessageSigner> signer;
};

/// Events the client emits, in order.
namespace smtp_event {
/// Greeting, EHLO (and STARTTLS, AUTH) done: `send()` may start a transaction.
struct Ready {
  SmtpCapabilities capabilities;
  Reply greeting;
};
/// The server said 220 to STARTTLS and nothing was buffered after it: the host must run
/// `Connection::start_tls` now and then call `on_tls_established` or `on_tls_failed`.
struct StartTls {
  TlsClientOptions options;
};
/// A transaction ended. `replies[i]` is the final reply for recipient i: the RCPT reply when
/// it was refused, else the reply to the final dot (or to DATA, or to MAIL, or a synthesised
/// transient reply when the session broke). `data_reply` is the reply to the final dot when
/// the data was sent.
struct TransactionDone {
  std::vector<Reply> replies;
  Reply data_reply;
  std::string data_intermediate;  ///< text of the 354 reply, for the log
  /// The body went out converted to 7 bit (8-bit data, no 8BITMIME at the server).
  bool converted_to_7bit = false;
};
/// The session cannot go on. `connection_level` is true for failures before the session was
/// usable that should count against the destination and move on to the next host: no or
/// unexpected greeting, 4xx/5xx greeting, the connection lost or timed out before Ready.
/// After a failure while a transaction was under way, a TransactionDone comes first.
struct Failed {
  SmtpPhase phase;
  Reply reply;  ///< the server's reply, or a synthesised "[internal]" one
  bool connection_level = false;
  bool tls_failure = false;  ///< the STARTTLS handshake failed (for opportunistic retry)
};
/// QUIT was answered or the session was closed cleanly; nothing more will happen.
struct Closed {};
}  // namespace smtp_event

using SmtpEvent = std::variant<smtp_event::Ready, smtp_event::StartTls, smtp_event::TransactionDone,
                               smtp_event::Failed, smtp_event::Closed>;

class SmtpClient {
 public:
  explicit SmtpClient(SmtpClientOptions options);
  ~SmtpClient();
  SmtpClient(const SmtpClient&) = delete;
  SmtpClient& operator=(const SmtpClient&) = delete;

  // --- what happened (inputs) ---
  /// The TCP connection is up: the greeting timeout starts.
  void on_connected(TimePoint now);
  /// Bytes from the server, split anywhere.
  void on_data(std::string_view bytes, TimePoint now);
  /// The TLS handshake requested by StartTls finished: capabilities are forgotten, EHLO is
  /// sent again.
  void on_tls_established(const TlsInfo& info, TimePoint now);
  void on_tls_failed(std::string_view why, TimePoint now);
  /// The peer closed or the connection broke.
  void on_closed(std::string_view why, TimePoint now);
  /// Call when `now >= deadline()`. In the QUIT phase a timeout ends the session with Closed;
  /// elsewhere with Failed (after a TransactionDone when a transaction was under way).
  void on_timeout(TimePoint now);
  /// Optional: every byte taken with `take_output()` so far has been written (for instance
  /// the libuv write callback ran). While the message body is going out this ends the
  /// writing allowance and starts the data-termination timeout (RFC 5321 §4.5.3.2.6) from
  /// `now`. A host that cannot tell may never call it: the client then allows one data-block
  /// timeout per started MiB of encoded body for writing, plus the data-termination timeout.
  void on_output_drained(TimePoint now);
  /// Optional: some of the output was written. While the body is going out this restarts
  /// the data-block timeout from `now` (see `SmtpClientOptions::reports_output_progress`).
  void on_output_progress(TimePoint now);

  // --- what to do (commands) ---
  /// Starts a transaction. Only when `ready()`; otherwise ignored and returns false.
  /// Validation of the values is the caller's (Envelope::validate); the client still refuses
  /// (returns false) any value containing CR, LF, NUL or another control character, an empty
  /// recipient list or address, a null body, and an ORCPT whose address type is not an atom.
  ///
  /// Some outcomes are decided without sending anything; the TransactionDone is then queued
  /// before `send()` returns (true) and the session stays ready:
  /// - a non-ASCII address (or `smtputf8`) when the server lacks SMTPUTF8: every recipient
  ///   gets `553 5.6.7 [internal] ...` (RFC 6531 §3.2);
  /// - a body over the server's announced SIZE: `552 5.3.4 [internal] ...` (RFC 1870).
  ///
  /// - 8-bit data (`eight_bit`, or octets above 127 in the body) for a server without
  ///   8BITMIME: converted to 7 bit (`SmtpClientOptions::convert_8bit`, see
  ///   src/core/smtp/downgrade.h) and sent; else, or when it cannot be converted (8-bit header
  ///   fields, message/global), every recipient gets `554 5.6.3 [internal] ...`.
  ///
  /// BODY=8BITMIME is declared when `eight_bit` is set or the body has 8-bit octets and the
  /// server offers 8BITMIME.
  /// SIZE= is sent when SIZE is offered; RET=, ENVID=, NOTIFY= and ORCPT= (xtext, RFC 3461)
  /// only when DSN is offered, otherwise they are left out (a "relayed" notice for
  /// NOTIFY=SUCCESS is then the caller's business).
  /// RSET goes first (on its own, not pipelined) only when the previous transaction on this
  /// session was abandoned half-way (MAIL, every RCPT or DATA refused).
  bool send(SmtpTransaction transaction, TimePoint now);
  /// Sends QUIT when the session is idle, waits for the reply (quit timeout) and emits
  /// Closed, also when the peer closes first. In any other state the session ends at once
  /// with Closed and no QUIT (it could land inside message data); a transaction under way
  /// first gets a TransactionDone with `451 4.3.0 [internal] session ended by the client...`.
  void quit(TimePoint now);

  // --- outputs ---
  /// Bytes to write to the connection, and clears them.
  std::string take_output();
  bool has_output() const noexcept;
  /// Next event, if any.
  std::optional<SmtpEvent> next_event();
  /// When `on_timeout` is due; `TimePoint::max()` when no timer runs.
  TimePoint deadline() const noexcept;

  bool ready() const noexcept;     ///< idle between transactions, usable
  bool finished() const noexcept;  ///< Failed or Closed was emitted
  SmtpPhase phase() const noexcept;
  const SmtpCapabilities& capabilities() const noexcept;
  const std::optional<TlsInfo>& tls() const noexcept;
  /// TransactionDone events emitted on this session (including those decided without
  /// sending, and those cut short by a failure).
  std::size_t transactions() const noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// Encodes a message body for DATA: CRLF line endings only (bare CR, bare LF and CR CR LF
/// become CRLF), a leading "." on a line doubled, a final CRLF added when missing, then
/// ".\r\n". The result never contains "<LF>.<CR><LF>" or "<CR>.<CR>" sequences other than the
/// terminating one.
///
/// A run of CRs followed by LF is one line break; CRs not followed by LF are one line break
/// each. An empty body encodes as ".\r\n". Lines longer than 998 octets and NUL octets are
/// passed through unchanged: the queue refuses such bodies at enqueue (RFC 5321
/// §4.5.3.1.6), and re-wrapping here would alter the message.
std::string encode_data(std::string_view body);

}  // namespace mailq
