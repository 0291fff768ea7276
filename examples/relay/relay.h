// mailq-relay — the daemon: every mailq part wired on one libuv loop.
//
// A `Relay` owns, in start order: the Messaging Server log (a file reopened on SIGHUP, or
// standard output), the durable spool (its lock keeps a second relay out), the c-ares
// resolver, the libuv transport, the routes and domain states of the configuration, the
// Queue (recovered from the spool) and the Deliverer, and the optional SMTP listener, the
// control socket and the metrics endpoint. Messages accepted over SMTP or `submit` are
// answered only once the spool has made them durable.
//
// Lifecycle: construct, `start()` (on error nothing is left running: the loop only has
// close callbacks to run), run the loop. `shutdown()` (SIGTERM, SIGINT, or the end of a
// `--once` run) stops accepting, lets in-flight SMTP transactions finish, closes everything,
// and then calls the `on_finished` callback with the exit status; the loop then runs dry.
//
// Threading: the loop thread only. The loop must outlive the Relay.
#pragma once

#include <uv.h>

#include <cstdio>
#include <functional>
#include <memory>
#include <string>

#include "examples/relay/config.h"
#include "mailq/error.h"

namespace mailq::relay {

struct RelayOptions {
  /// Deliver what is due, then finish: exit status 0 when the queue is empty, 75 (EX_TEMPFAIL)
  /// when messages remain (deferred or held). No listener, control socket or metrics endpoint.
  bool once = false;
  /// With `once`: each message due at the start is tried once; what is deferred during the
  /// run waits for a later run, even when its retry comes due before the pass ends.
  bool single_pass = false;
  /// Handle SIGTERM / SIGINT (graceful shutdown) and SIGHUP (reopen the log) on the loop.
  bool handle_signals = true;
};

/// Exit statuses (sysexits.h).
inline constexpr int kExitOk = 0;
inline constexpr int kExitUnavailable = 69;  ///< spool locked, port in use, socket live
inline constexpr int kExitSoftware = 70;
inline constexpr int kExitCantCreate = 73;  ///< the log cannot be opened
inline constexpr int kExitTempFail = 75;    ///< `--once`: messages remain in the queue
inline constexpr int kExitConfig = 78;      ///< the configuration is invalid

class Relay {
 public:
  Relay(uv_loop_t* loop, RelayConfig config, RelayOptions options = {});
  /// Closes whatever is still open at once (no graceful wait); prefer `shutdown()`.
  ~Relay();
  Relay(const Relay&) = delete;
  Relay& operator=(const Relay&) = delete;

  /// Opens and binds everything, recovers the spool, starts delivering. On failure returns
  /// the error ("spool /var/spool/mailq is in use by another process (...)", "listen
  /// 127.0.0.1:2525: address already in use", "control socket ... is live: another
  /// mailq-relay is running", "open log /var/log/mailq/mail.log: Permission denied"), with
  /// `start_exit_status()` saying which sysexits status fits; what was opened is closed.
  std::error_code start();
  const Error& last_error() const noexcept;
  int start_exit_status() const noexcept;

  /// Graceful stop; `reason` goes to the log. Idempotent.
  void shutdown(const std::string& reason);
  /// Called once, after `shutdown` completed, with the exit status.
  void set_on_finished(std::function<void(int status)> fn);

  /// Reopens the log file (SIGHUP): for log rotation. Keeps the old file on failure.
  std::error_code reopen_log();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mailq::relay
