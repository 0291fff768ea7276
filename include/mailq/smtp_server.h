// mailq — the receiving side of SMTP, without I/O (sans-IO, like SmtpClient).
//
// A small, strict submission server for hosts that accept mail into a mailq Queue: EHLO/HELO,
// PIPELINING, SIZE, 8BITMIME, SMTPUTF8, ENHANCEDSTATUSCODES, DSN parameters (NOTIFY, ORCPT, RET,
// ENVID), STARTTLS (RFC 3207; the host runs the handshake), AUTH PLAIN and LOGIN (RFC 4954,
// RFC 4616; the host checks the credentials), MAIL/RCPT/DATA/RSET/NOOP/QUIT (VRFY/EXPN answered
// 252/502, never revealing anything). The host feeds it the bytes the client sent and writes out
// what it produces; the session never blocks and never touches a socket, so every byte sequence can
// be tested (and fuzzed) directly.
//
// Strictness (what an MTA that holds mail nobody else has a copy of must refuse):
//  - Commands end with CRLF; a bare LF or CR in a command line is a 500 5.5.2 error.
//  - A command line over `max_command_line` octets: 500 5.5.2, the rest of the line skipped.
//  - In DATA, only CRLF.CRLF ends the message. A bare LF or bare CR anywhere in the data, a
//    NUL, or a line over 998 octets makes the whole message rejected at the final dot
//    (550 5.6.0 / 552 5.3.4 for size) — never "fixed" and never split into two messages, so
//    `<LF>.<CR><LF>` smuggling cannot inject a second message.
//  - Replies to pipelined commands come in order, and only once the commands before them
//    are answered; the final-dot reply waits for the host's `done` (250 only when durable).
//  - More than `max_errors` errors in a session: 421 4.7.0 and close.
//  - Every 2xx/4xx/5xx reply carries an enhanced status code (RFC 2034), except the greeting
//    and the replies to EHLO/HELO, which RFC 2034 §3 exempts. A host's reply without a valid
//    one gets the class default (2.0.0, 4.0.0, 5.0.0); one that is not 2xx/4xx/5xx becomes
//    451 4.3.0.
//  - Paths are taken as RFC 5321 writes them: `MAIL FROM:<path>` without a space before the
//    '<' (501 5.5.4 otherwise); source routes are accepted and dropped; `<Postmaster>` is
//    postmaster@<hostname>; non-ASCII addresses need SMTPUTF8 on MAIL (553 5.6.7 without;
//    RFC 6531). Reply lines never exceed 512 octets (longer host texts are cut).
//  - STARTTLS: after its 220 the session takes no input until the host says the handshake is
//    done (`tls_started`); whatever the client pipelined behind STARTTLS is discarded (RFC 3207
//    §4.2: plaintext injected before the handshake never becomes a command), and the session
//    forgets the client's EHLO and any AUTH. A second STARTTLS: 554 5.5.1.
//  - AUTH: offered (and accepted) only when `auth.enabled`, the host gave `authenticate`, and
//    TLS is up unless `auth.allow_plaintext`; otherwise 538 5.7.11 (TLS needed) or 502 5.5.1.
//    235 2.7.0 on success, 535 5.7.8 on bad credentials (counted as errors; the
//    `auth.max_failures`-th ends the session with 421 4.7.0), 454 4.7.0 when the host cannot
//    check now, 501 5.0.0 when the client cancels ("*"), 501 5.5.2 for a response that is not
//    base64, 504 5.5.4 for another mechanism. PLAIN with an authorization identity other
//    than the user is refused (535 5.7.8): no proxy authentication.
//  - Who may send: `require_tls` (530 5.7.0 Must issue a STARTTLS command first) and
//    `auth.required` (530 5.7.0 Authentication required) are checked at MAIL, then the host's
//    `check_sender` (e.g. 553 5.7.1 for a sender the user does not own).
//  - Threading: none. One session is used from one thread; `done` runs on that thread too.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "mailq/address.h"
#include "mailq/clock.h"
#include "mailq/reply.h"

namespace mailq {

struct SmtpServerLimits {
  std::uint64_t max_message_size = 50ull << 20;  ///< advertised as SIZE; 552 5.3.4 beyond
  std::uint32_t max_recipients = 1000;           ///< 452 4.5.3 beyond
  std::size_t max_command_line = 2048;           ///< octets including CRLF
  std::uint32_t max_errors = 20;                 ///< then 421 4.7.0 and close
  std::uint32_t max_transactions = 10000;        ///< per session, then 421 4.7.0
  /// A message with more Received header fields than this is refused at the final dot with
  /// 554 5.4.6 (a mail loop: RFC 5321 §6.3); 0 = no limit. Postfix's hopcount_limit.
  std::uint32_t max_received_headers = 50;
};

/// SMTP AUTH on the receiving side (RFC 4954): PLAIN (RFC 4616) and LOGIN.
struct SmtpServerAuth {
  /// Offer AUTH PLAIN LOGIN; needs `Callbacks::authenticate`.
  bool enabled = false;
  /// Offer and accept AUTH without TLS (passwords in the clear): off unless asked for.
  bool allow_plaintext = false;
  /// MAIL needs a successful AUTH first (a submission service, RFC 6409):
  /// 530 5.7.0 Authentication required.
  bool required = false;
  /// Failed AUTH attempts per session: the last of them is answered with 535 and then
  /// 421 4.7.0, and the session ends.
  std::uint32_t max_failures = 3;
};

struct SmtpServerConfig {
  std::string hostname = "localhost";  ///< in the greeting and the EHLO reply
  std::string greeting_text = "ESMTP mailq";
  SmtpServerLimits limits;
  /// Offer STARTTLS (RFC 3207). The host runs the handshake when `starting_tls()` says so and
  /// calls `tls_started`; `uv::SmtpListener` does both when it has a certificate.
  bool starttls = false;
  /// MAIL before STARTTLS: 530 5.7.0 Must issue a STARTTLS command first.
  bool require_tls = false;
  SmtpServerAuth auth;
  /// Offer SMTPUTF8 (RFC 6531): with the parameter on MAIL, the transaction's addresses may
  /// be UTF-8 (and the message's header fields too). Without it, a non-ASCII address gets
  /// 553 5.6.7.
  bool smtputf8 = true;
};

/// A message received in full (after the final dot), handed to the host.
struct ReceivedMessage {
  Envelope envelope;           ///< validated: reverse path, recipients with DSN parameters
  std::string body;            ///< dot-unstuffed, CRLF line ends, without the final ".\r\n"
  std::string helo;            ///< the client's EHLO/HELO argument
  std::string client_address;  ///< as given to the session ("127.0.0.1")
  bool eight_bit = false;      ///< BODY=8BITMIME was given
  bool esmtp = false;          ///< the client said EHLO (not HELO)
  bool smtputf8 = false;       ///< MAIL carried SMTPUTF8 (RFC 6531)
  /// The TLS the message came over, as `tls_started` was told ("TLSv1.2
  /// TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"); empty = in the clear.
  std::string tls;
  std::string auth_user;  ///< the user who authenticated (AUTH); empty = none
};

/// Credentials a client gave with AUTH, for the host to check.
struct AuthRequest {
  std::string mechanism;  ///< "PLAIN" or "LOGIN"
  std::string user;       ///< the authentication identity
  std::string password;
  std::string client_address;
  bool tls = false;  ///< the session is encrypted
};

/// The host's verdict on an `AuthRequest`.
enum class AuthVerdict {
  accepted,     ///< 235 2.7.0 Authentication successful
  rejected,     ///< 535 5.7.8 Authentication credentials invalid
  unavailable,  ///< 454 4.7.0 Temporary authentication failure (e.g. no credentials store)
};

/// What the host's sender policy sees at MAIL.
struct SenderCheck {
  const std::optional<Address>& reverse_path;  ///< nullopt = the null reverse path <>
  const std::string& auth_user;                ///< empty = not authenticated
  const std::string& client_address;
  bool tls = false;
  std::uint64_t size = 0;  ///< the SIZE parameter (RFC 1870): the client's estimate; 0 = none
};

/// The Received header field (RFC 5321 §4.4) a server that accepted `message` prepends:
///   Received: from HELO ([CLIENT])\r\n\tby BY_HOST (mailq) with ESMTPS (TLS) id ID\r\n
///   \tfor <RCPT>; DATE\r\n
/// "with SMTP" after HELO, ESMTP after EHLO, UTF8SMTP with SMTPUTF8, each with "S" when the
/// message came over TLS and "A" when the client authenticated (RFC 3848, RFC 6531 §3.7.3:
/// ESMTPSA, UTF8SMTPS, ...); `protocol` overrides. "id" only when `id` is set, "for" only with a
/// single recipient (a list would disclose Bcc recipients). The TLS facts (`tls`, default the
/// message's: "TLSv1.2 TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384") are added as a comment. Lines end
/// in CRLF; the date is in UTC (+0000).
std::string received_header(const ReceivedMessage& message, std::string_view by_host,
                            std::string_view id, TimePoint when, std::string_view protocol = {},
                            std::string_view tls = {});

/// The number of Received header fields in the header section of `body` (hop count).
std::size_t count_received_headers(std::string_view body);

class SmtpServerSession {
 public:
  struct Callbacks {
    /// Optional policy per RCPT TO (after syntax checks): return a 2xx reply to accept,
    /// anything else is sent as the refusal. Default: accept.
    std::function<Reply(const Recipient&)> check_recipient;
    /// Called once per message at the final dot. The host must call `done` exactly once,
    /// now or later (while the session lives): 250 only once the message is durable. The
    /// session reads no further command until then (pipelined commands wait).
    std::function<void(ReceivedMessage message, std::function<void(Reply)> done)> on_message;
    /// Checks AUTH credentials; the host calls `done` exactly once, now or later (it may run a
    /// slow password hash elsewhere: the session reads nothing meanwhile). Without it AUTH is
    /// never offered.
    std::function<void(AuthRequest request, std::function<void(AuthVerdict)> done)> authenticate;
    /// Optional policy at MAIL (after the syntax checks and the TLS / AUTH requirements):
    /// a 2xx reply accepts, anything else is sent as the refusal. Default: accept.
    std::function<Reply(const SenderCheck&)> check_sender;
  };

  SmtpServerSession(SmtpServerConfig config, Callbacks callbacks, std::string client_address);
  ~SmtpServerSession();
  SmtpServerSession(const SmtpServerSession&) = delete;
  SmtpServerSession& operator=(const SmtpServerSession&) = delete;

  /// Queues the 220 greeting. Call once, first.
  void start();
  /// Feeds bytes received from the client (any split).
  void feed(std::string_view bytes);
  /// The client closed its side: an unfinished transaction is dropped (nothing queued).
  /// Commands received before the EOF are still answered (after a pending `done`), then
  /// the session is closed ("client closed").
  void on_eof();
  /// Ends the session with `421 4.3.2 <host> Service shutting down` (or the given text)
  /// as soon as no message is waiting for `done` and no transaction is open: a transaction
  /// under way (after MAIL, in DATA) may finish first, pipelined commands after it get no
  /// answer but the 421.
  void shutdown(std::string_view text = {});
  /// True from the 220 reply to STARTTLS until `tls_started`: once the output is written (in
  /// the clear), the host runs the TLS handshake as the server and feeds the session nothing
  /// until it is done. When the handshake fails the host closes the connection.
  bool starting_tls() const noexcept;
  /// The handshake is done; `description` ("TLSv1.2 TLS_ECDHE_...") goes into the messages'
  /// `tls`. The client starts over with EHLO (RFC 3207 §4.2).
  void tls_started(std::string description);
  /// Whether the session is encrypted (`tls_started` was called).
  bool tls() const noexcept;
  /// The user who authenticated in this session; empty = none.
  const std::string& auth_user() const noexcept;
  /// Bytes to send to the client; empties the buffer.
  std::string take_output();
  bool has_output() const noexcept;
  /// True once QUIT was answered or the session gave up (421): close after sending output.
  bool closed() const noexcept;
  /// A message was handed to `on_message` and its `done` has not run yet.
  bool waiting_for_host() const noexcept;
  /// Octets fed but not consumed yet: pipelined commands waiting behind a message's `done`,
  /// or a partial command line. A host stops reading from the socket while this grows (it
  /// only grows while `waiting_for_host()`), which bounds the memory a client can make the
  /// session hold.
  std::size_t buffered_input() const noexcept;
  /// Why the session closed, for the log ("QUIT", "too many errors", "client closed").
  const std::string& close_reason() const noexcept;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;  // shared with the `done` callbacks (weak refs)
};

/// The reply for a message received in full that `Queue::enqueue` refused, for a host that
/// hands `ReceivedMessage`s to a Queue (the `done` of `on_message`, or the SmtpListener's):
///  - `errc::message_too_large`: 552 5.3.4 "Message too big for system: <message>";
///  - `errc::storage_failure`: 451 4.3.0 "Requested action aborted: local storage failure, try
///    again later" (which file and which system error are for the log, not for the client);
///  - `errc::storage_full`: 452 4.3.1 "Insufficient system storage" (RFC 3463: mail system
///    full);
///  - `errc::shutting_down`, `errc::bad_state`: 451 4.3.0 "Requested action aborted:
///    <message>";
///  - `errc::no_recipients`, `errc::invalid_address`, `errc::forbidden_character`,
///    `errc::too_long`: 550 5.1.3 "Bad address: <message>";
///  - anything else: 554 5.6.0 "Message refused: <message>".
Reply enqueue_refusal(const Error& error);

}  // namespace mailq
