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
  std::uint32_t max_sessions = 1000;
  Duration idle_timeout{std::chrono::minutes(5)};  ///< no byte from the client for this long
  int backlog = 511;
  /// Per-session events for logging: "connect", "reject: not allowed", "reject: too many
  /// sessions", "reject: shutting down", "close: <reason>" (QUIT, idle timeout, client
  /// closed, too many errors, shutdown, write failed: ..., read failed: ...). Optional.
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
};

class SmtpListener {
 public:
  /// Binds `options.host`:`options.port`, listens and accepts on `loop` (which must outlive
  /// the listener). `on_message` as in `SmtpServerSession::Callbacks`, plus an optional
  /// recipient check. Errors name the address: "listen 127.0.0.1:25: address already in use"
  /// (std::errc::address_in_use), "listen localhost:25: \"localhost\" is not a numeric IPv4
  /// or IPv6 address" (`errc::invalid_parameter`).
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

 private:
  struct Impl;
  explicit SmtpListener(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;
};

}  // namespace mailq::uv
