// mailq — the libuv adapter's transport: TCP connections with STARTTLS through mbedTLS
// (`UvTransport`), on a `uv_loop_t` that the host owns (CMake target `mailq::uv`).
//
// Threading: single-threaded. Every member function must be called on the thread that runs
// the loop, and every ConnectionHandler method runs on that thread from inside `uv_run`,
// never from inside the call that caused it: what would otherwise be reported from inside a
// call is posted through the host's `Clock` (a zero-delay timer of its LoopClock).
//
// Ownership and shutdown: the host owns the loop and the clock. A UvTransport and every
// Connection it made must be destroyed before the clock and before the loop is closed, and
// the loop must run once more afterwards: libuv frees a handle's memory only in its close
// callback, so the adapter's internal state lives until those callbacks ran.
//
// Exceptions: an exception thrown by a ConnectionHandler method is caught at the libuv
// boundary and reported to the transport's `ErrorReporter`; the loop goes on.
#pragma once

#include <uv.h>

#include <cstddef>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include "mailq/clock.h"
#include "mailq/events.h"
#include "mailq/transport.h"

namespace mailq {
namespace uv {
namespace detail {
struct TransportShared;
}  // namespace detail

/// Settings of a UvTransport.
struct UvTransportOptions {
  /// PEM bundles tried, in order, when a verifying handshake has no `ca_file`: the first one
  /// that exists and holds at least one certificate mbedTLS can parse is the trust store.
  std::vector<std::string> system_ca_files{
      "/etc/ssl/certs/ca-certificates.crt",  // Debian, Ubuntu, Alpine, Arch
      "/etc/pki/tls/certs/ca-bundle.crt",    // Fedora, RHEL
      "/etc/ssl/ca-bundle.pem",              // openSUSE
      "/etc/ssl/cert.pem",                   // BSDs, macOS
  };
  /// Size of the read buffer (one per transport, shared by its connections: each read is
  /// consumed before the next one runs).
  std::size_t read_buffer_size = 64 * 1024;
  /// Receives the exceptions escaping a ConnectionHandler method ("mailq UvTransport:
  /// connection handler threw: ..."), rate limited; it must outlive the transport and its
  /// connections. Null: a reporter of the transport's own, to standard error.
  ErrorReporter* error_reporter = nullptr;
};

/// A `mailq::Transport` on a libuv loop: TCP over IPv4 and IPv6, STARTTLS through mbedTLS
/// 2.28 (TLS 1.2 at most).
///
/// connect():
///   - `remote.address` must be a numeric IPv4 or IPv6 address (IPv6 without brackets, an
///     optional "%scope"); anything else fails with `std::errc::invalid_argument`
///     ("\"mx.example.org\" is not a numeric IPv4 or IPv6 address").
///   - `options.source_address`, when set, is bound before connecting (same family as the
///     remote; port chosen by the kernel).
///   - `options.connect_timeout` bounds the TCP handshake: when it expires the attempt is
///     abandoned and `on_connect` reports `std::errc::timed_out` ("connection timed out").
///     Zero or negative means no limit other than the kernel's.
///   - Failures carry `std::generic_category()` codes (see `error_from_uv`), so
///     `mailq::connect_failure_text` renders "TCP active open: Failed connect() Error:
///     connection refused" and the like, and a lower-case description ("connection refused",
///     "cannot bind to 127.0.0.2: address already in use"). Synchronous failures are reported
///     from the loop too, never from inside `connect`.
///
/// Connection:
///   - `write` copies the bytes and queues them; writes before `on_connect` are sent once
///     connected, writes during the TLS handshake once it has finished. A write error ends
///     the connection with an `on_close` error ("write failed: connection reset by peer").
///   - The peer's EOF is a successful `on_close`, after every byte received before it was
///     delivered; a read error is an `on_close` error. After TLS, a peer's close_notify is a
///     clean close too (SMTP has its own end-of-data framing, so a truncated stream cannot pass
///     as complete); a TLS error is `errc::tls_failure` with the mbedTLS diagnostic.
///   - Destroying a Connection closes the socket at once (bytes not yet handed to the kernel
///     are dropped: wait for the server's reply, or `write_idle()`, when they matter) and no
///     handler method runs after the destructor started, even when it runs inside one.
///
/// start_tls():
///   - Runs an mbedTLS client handshake over the connected stream; `on_tls` reports the
///     result, never from inside `start_tls`. Afterwards every read and write is encrypted.
///   - `server_name` is sent as SNI (unless it is an IP literal, RFC 6066 §3) and, with
///     `verify`, checked against the certificate (subjectAltName DNS names, else the CN);
///     `verify` requires a host name: mbedTLS 2.28 cannot check iPAddress names, so verifying
///     an IP literal fails. `verify` uses `ca_file`, or the first usable bundle of
///     `UvTransportOptions::system_ca_files` when it is empty.
///   - Without `verify` any certificate is accepted (TLS 1.0 and up: opportunistic
///     encryption beats plaintext, RFC 7435); with `verify` the minimum is TLS 1.2.
///   - A failure is an `on_tls` error with the code `mailq::errc::tls_failure` and the
///     mbedTLS diagnostic as its message ("certificate verification failed: The certificate
///     Common Name (CN) does not match with the expected CN", "the server closed the
///     connection during the TLS handshake"); the connection is then unusable: reading stops
///     and nothing else is reported; destroy it. Calling `start_tls` when not connected, or a
///     second time, is an `on_tls` error with `mailq::errc::bad_state` ("start_tls before the
///     connection is up").
///   - `TlsInfo::cipher` uses the IANA suite name ("TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"),
///     `TlsInfo::version` mbedTLS's ("TLSv1.2"), `peer_subject` the certificate's subject DN
///     in certificate order ("O=Example, CN=mx.example.org").
///   - mbedTLS contexts (entropy, DRBG, trust store, ssl config) are built once per transport
///     and per (verify, ca_file) and shared by its connections, so a handshake does no file
///     I/O after the first one. A CA file that cannot be loaded is not remembered: the next
///     handshake tries again.
///
/// The transport may be destroyed while connections it made are still alive; they keep what
/// they share with it.
class UvTransport final : public Transport {
 public:
  /// `loop` and `clock` must outlive the transport and its connections. `clock` posts the
  /// reports that must not come from inside a call to the next loop turn: the host's
  /// `LoopClock` on the same loop (any Clock whose callbacks run on the loop's thread will
  /// do). On Unix the constructor sets SIGPIPE to SIG_IGN when it is at its default (libuv
  /// writes with write(2), and a peer's reset would otherwise kill the host); a handler the
  /// host installed is left alone.
  UvTransport(uv_loop_t* loop, Clock& clock, UvTransportOptions options = {});
  ~UvTransport() override;
  UvTransport(const UvTransport&) = delete;
  UvTransport& operator=(const UvTransport&) = delete;

  std::unique_ptr<Connection> connect(const Endpoint& remote, const ConnectOptions& options,
                                      ConnectionHandler& handler) override;

  uv_loop_t* loop() const noexcept;
  /// Forgets the cached mbedTLS contexts (after the CA bundle changed on disk); connections
  /// already using them keep theirs.
  void reload_tls();

 private:
  std::shared_ptr<detail::TransportShared> shared_;
};

/// Maps a libuv status (a negative UV_E* value) to a portable error code: the common network
/// failures become `std::errc` values in `std::generic_category()` (UV_ECONNREFUSED →
/// connection_refused, UV_EHOSTUNREACH → host_unreachable, UV_ENETUNREACH →
/// network_unreachable, UV_ETIMEDOUT → timed_out, ...). Zero maps to an empty code.
std::error_code error_from_uv(int status) noexcept;

}  // namespace uv
}  // namespace mailq
