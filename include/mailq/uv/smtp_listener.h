// mailq — the SMTP receiving side on a libuv loop (`mailq::uv`, CMake target `mailq::uv`).
//
// `SmtpListener` accepts TCP connections on one address and runs an `SmtpServerSession` for
// each, handing complete messages to the host (typically `Queue::enqueue`, answering 250
// once the spool has made the message durable). It enforces who may connect (networks),
// how many sessions at once (beyond: `421 4.3.2 too many sessions` and close), idle
// timeouts, and closes everything on `close()`.
//
// Replies of the listener itself (the session's are in smtp_server.h):
//   554 5.7.1 <client> not allowed to submit mail        `allow_client` said no (or threw)
//   421 4.3.2 <host> too many sessions                   `max_sessions` are open
//   421 4.3.2 <host> Service shutting down               after `close()`
//   421 4.4.2 <host> Error: timeout exceeded             no byte for `idle_timeout`
//
// STARTTLS: with `tls_certificate_file` and `tls_key_file` the listener offers STARTTLS and runs
// the server side of the handshake with mbedTLS (TLS 1.2; the certificate and key are checked
// to belong together at `open` and at `reload_tls`, which new sessions then use; sessions under
// way keep theirs). A failed handshake closes the connection. AUTH: the host's
// `Callbacks::authenticate` (e.g. `password_authenticator`, mailq/uv/credentials.h) with
// `server.auth.enabled`; `trusted_client` says which clients may send without it.
// After its last reply a connection is half-closed (FIN after the reply) and what the client
// still sends is read and dropped for up to 2 s, so that closing never turns into a reset
// that destroys the reply before the client has read it.
//
// Backpressure: a session reads only while no message waits for the host's `done` and while
// less than 64 KiB of replies wait to be written; a client that pipelines without reading
// its replies is simply not read any more. The idle timeout does not run while the host
// works on a message (that is not the client's fault).
//
// Threading and lifetime: as for UvTransport (uv/transport.h). Callbacks run on the loop thread.
// The `done` handed to `on_message` holds only weak references: it may be called after the client
// vanished, after `close()` or after the listener was destroyed (it then does nothing but count).
// Destroy the listener before closing the loop and run the loop once more: connection memory is
// freed by libuv close callbacks.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "mailq/clock.h"
#include "mailq/error.h"
#include "mailq/events.h"
#include "mailq/smtp_server.h"

namespace mailq::uv {

struct SmtpListenerOptions {
  std::string host = "127.0.0.1";  ///< numeric IPv4 or IPv6 address to bind
  std::uint16_t port = 0;          ///< 0 = any free port (see `port()`)
  SmtpServerConfig server;
  /// Decides whether a client may talk to us at all (numeric address). Refused clients get
  /// `554 5.7.1 <addr> not allowed to submit mail` and are closed. Default: loopback only
  /// (`is_loopback_address`); `Network::contains` (mailq/net.h) decides for a list of networks.
  std::function<bool(const std::string& client_address)> allow_client;
  /// Clients that may send mail without AUTH (relay by network). When set and false for a
  /// client, its session requires AUTH before MAIL (530 5.7.0 Authentication required), as
  /// `server.auth.required` does for everyone. Null: only `server.auth.required` decides.
  std::function<bool(const std::string& client_address)> trusted_client;
  /// STARTTLS: the certificate chain (PEM, ours first) and its unencrypted key (PEM or DER).
  /// Both set: STARTTLS is offered; both empty: it is not.
  std::string tls_certificate_file;
  std::string tls_key_file;
  /// A failed AUTH (535) is answered this much later, as Postfix's smtpd_error_sleep_time and
  /// Dovecot's auth_failure_delay do: guessing passwords gets slow. Zero: at once.
  Duration auth_failure_delay{std::chrono::seconds(1)};
  /// A reserve of free space on the queue's file system (as Postfix's queue_minfree and
  /// Exim's check_spool_space): MAIL gets `452 4.3.1 Insufficient system storage` while the
  /// file system holding `storage_path` has less than `min_free_space` octets free, or less
  /// than that plus one and a half times the size the client declares (SIZE=). A message the
  /// queue could not store is turned away before its data, and what is left stays for the
  /// delivery state and the bounces of the mail already queued. Empty path or 0: no check.
  std::string storage_path;
  std::uint64_t min_free_space = 0;
  std::uint32_t max_sessions = 1000;
  Duration idle_timeout{std::chrono::minutes(5)};  ///< no byte from the client for this long
  int backlog = 511;
  /// Per-session events for logging: "connect", "reject: not allowed", "reject: too many
  /// sessions", "reject: shutting down", "tls: TLSv1.2 TLS_ECDHE_...", "tls failed: <why>",
  /// "auth: <user>", "auth failed: <user>", "auth unavailable: <user>", "storage low: <free>
  /// free on the queue's file system, ..." (the first MAIL refused for the reserve), "storage
  /// ok: <free> free ..." (the first MAIL accepted again), "refuse: insufficient storage for
  /// SIZE=<n> ..." (a declared size that does not fit), "close: <reason>" (QUIT,
  /// idle timeout, client closed, too many errors, shutdown, write failed: ..., read failed:
  /// ..., TLS handshake failed). Passwords never appear. Optional.
  std::function<void(const std::string& client, const std::string& what)> on_session_event;
  /// Receives what has no caller to go back to, rate limited: a failed accept ("mailq
  /// SmtpListener: accept on 127.0.0.1:25: too many open files"), an exception thrown by
  /// `on_session_event`. It must outlive the listener. Null: a reporter of the listener's
  /// own, to standard error.
  ErrorReporter* error_reporter = nullptr;
};

struct SmtpListenerStats {
  std::uint64_t sessions_accepted = 0;
  std::uint64_t sessions_refused = 0;  ///< by `allow_client` or `max_sessions`
  std::uint64_t messages_received = 0;
  std::uint64_t messages_accepted = 0;  ///< `done` with 2xx
  std::size_t sessions_open = 0;
  std::uint64_t tls_handshakes = 0;  ///< STARTTLS handshakes completed
  std::uint64_t tls_failures = 0;    ///< handshakes that failed
  std::uint64_t auth_successes = 0;
  std::uint64_t auth_failures = 0;     ///< `AuthVerdict::rejected`
  std::uint64_t storage_refusals = 0;  ///< MAIL refused for want of free space (452 4.3.1)
};

/// Loads a certificate chain and its key as the listener would (for a configuration check):
/// "CN=mx.example.org, valid until 2027-03-01 12:00:00 UTC", or why they cannot be used.
Result<std::string> check_tls_files(const std::string& certificate_file,
                                    const std::string& key_file);

class SmtpListener {
 public:
  /// Binds `options.host`:`options.port`, listens and accepts on `loop` (which must outlive
  /// the listener). The callbacks as in `SmtpServerSession::Callbacks`. Errors name the
  /// address: "listen 127.0.0.1:25: address already in use" (std::errc::address_in_use),
  /// "listen localhost:25: \"localhost\" is not a numeric IPv4 or IPv6 address"
  /// (`errc::invalid_parameter`), or the TLS files: "listen 127.0.0.1:25: cannot load the key
  /// /etc/mailq/key.pem: ..." (`errc::invalid_parameter`).
  static Result<std::unique_ptr<SmtpListener>> open(uv_loop_t* loop, SmtpListenerOptions options,
                                                    SmtpServerSession::Callbacks callbacks);
  ~SmtpListener();  ///< closes the socket and every session at once
  SmtpListener(const SmtpListener&) = delete;
  SmtpListener& operator=(const SmtpListener&) = delete;

  std::uint16_t port() const noexcept;  ///< the bound port
  /// Stops accepting; sessions finish their current transaction (421 after it), then
  /// `done` runs once every session is closed (from inside `close()` when nothing was
  /// open). A session idling inside a transaction keeps it until its idle timeout.
  /// Destroying the listener before that cancels `done` (it never runs).
  void close(std::function<void()> done = nullptr);
  SmtpListenerStats stats() const;
  /// Loads the certificate and key files again (after a renewal): new sessions use them,
  /// sessions under way keep the old ones. On failure nothing changes and the error says why.
  /// Without TLS files: does nothing.
  Result<void> reload_tls();
  /// "CN=mx.example.org, valid until 2027-03-01 12:00:00 UTC"; empty without TLS.
  std::string tls_certificate() const;

 private:
  struct Impl;
  explicit SmtpListener(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;
};

}  // namespace mailq::uv
