// mailq — the transport seam: byte streams to SMTP servers, with STARTTLS.
//
// The SMTP protocol core owns no socket; the Deliverer moves bytes between it and a
// `Connection` made by a `Transport`. The reference implementation runs on libuv with mbedTLS
// (`mailq::uv::UvTransport`); tests use scripted in-memory transports.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "mailq/clock.h"
#include "mailq/dane.h"
#include "mailq/error.h"

namespace mailq {

/// A numeric address and port ("192.0.2.1", 25). IPv6 without brackets.
struct Endpoint {
  std::string address;
  std::uint16_t port = 25;

  friend bool operator==(const Endpoint& a, const Endpoint& b) {
    return a.address == b.address && a.port == b.port;
  }
};

/// How a route protects its SMTP sessions.
enum class TlsPolicy : std::uint8_t {
  none,           ///< never STARTTLS
  opportunistic,  ///< STARTTLS when offered, certificate not checked; plaintext otherwise
  required,       ///< STARTTLS or defer; certificate not checked
  verify,         ///< STARTTLS or defer; chain verified, host name = MX / smart-host name
};
const char* to_string(TlsPolicy p) noexcept;

struct TlsClientOptions {
  std::string server_name;  ///< SNI and the name verified against the certificate
  bool verify = false;      ///< verify chain and host name
  std::string ca_file;      ///< PEM bundle; empty = the system CAs
  /// DANE (RFC 7672): when not empty the certificate is authenticated by these usable TLSA
  /// records instead of by certificate authorities (`verify` and `ca_file` are then unused):
  /// DANE-EE(3) matches the server's own certificate or key, with no name or date check;
  /// DANE-TA(2) matches a certificate of the chain the server sent, which must issue the
  /// server's, valid now, for `server_name` or `dane_domain`. No match fails the handshake.
  std::vector<dane::TlsaRecord> tlsa;
  std::string dane_domain;  ///< the next-hop (recipient) domain, DANE-TA's second name
  /// Without `verify`: check the chain and `server_name` as `verify` would (against
  /// `ca_file`), but let the handshake through whatever the result; TlsInfo::verified and
  /// TlsInfo::verify_problem say how it went (an MTA-STS policy in mode testing).
  bool check = false;
};

/// What a finished handshake negotiated, for the log ("TLSv1.3 TLS_AES_256_GCM_SHA384").
struct TlsInfo {
  std::string version;
  std::string cipher;
  bool verified = false;  ///< by the CAs, or by a TLSA record (then `dane` says which)
  std::string dane;       ///< the TLSA record that matched ("3 1 1 8b2f…e0a1"), else empty
  /// With TlsClientOptions::check, when the certificate did not pass: why ("The certificate
  /// Common Name (CN) does not match with the expected CN").
  std::string verify_problem;
  std::string peer_subject;
};

struct ConnectOptions {
  Duration connect_timeout{std::chrono::seconds(30)};
  std::string source_address;  ///< bind before connect; empty = any
};

/// Receives a connection's events, on the loop thread.
///
/// A failure arrives as an `Error`: the code for the program (std::errc::connection_refused,
/// `errc::tls_failure`, ...) and the transport's description for logs and DSNs ("connection
/// refused", "certificate verification failed: ..."). A transport that has no better words
/// may leave the message empty.
class ConnectionHandler {
 public:
  virtual ~ConnectionHandler() = default;
  /// Exactly once: connected, or why not (std::errc::connection_refused, host_unreachable,
  /// network_unreachable, timed_out, ...). Nothing else follows a failure.
  virtual void on_connect(const Result<void>& result) = 0;
  /// Plaintext bytes from the peer (decrypted after STARTTLS).
  virtual void on_read(std::string_view data) = 0;
  /// After `Connection::start_tls`: what the handshake negotiated, or why it failed.
  virtual void on_tls(const Result<TlsInfo>& result) = 0;
  /// The peer closed (success) or an I/O error ended the connection. Nothing else follows.
  virtual void on_close(const Result<void>& result) = 0;
  /// Bytes given to `Connection::write` earlier were taken by the network (`idle`: all of
  /// them, `write_idle()` is true now). A connection whose writes complete after `write`
  /// returns reports each completion here; the SMTP client runs its data-block timeout per
  /// write from it, and the data-termination timeout from when the final dot went out (RFC
  /// 5321 section 4.5.3.2). Optional for a handler.
  virtual void on_write_progress(bool idle) { (void)idle; }
};

/// One established (or establishing) byte stream.
///
/// Destroying a Connection closes it at once, silently: no handler callback runs after the
/// destructor starts, even when it is destroyed from inside one of its own callbacks.
class Connection {
 public:
  virtual ~Connection() = default;
  /// Queues bytes for sending (encrypted after STARTTLS).
  virtual void write(std::string_view bytes) = 0;
  /// Starts a TLS handshake over the established stream. Bytes already received and not yet
  /// delivered through `on_read` are discarded by the caller's protocol check, not here.
  virtual void start_tls(const TlsClientOptions& options) = 0;
  /// Whether every queued byte has been handed to the kernel.
  virtual bool write_idle() const = 0;
  virtual Endpoint local_endpoint() const = 0;
  virtual Endpoint remote_endpoint() const = 0;
};

/// Makes connections.
class Transport {
 public:
  virtual ~Transport() = default;
  /// Starts connecting to `remote`; `handler` must outlive the returned connection. The
  /// result of the attempt arrives through `handler.on_connect`, never from inside this call.
  virtual std::unique_ptr<Connection> connect(const Endpoint& remote, const ConnectOptions& options,
                                              ConnectionHandler& handler) = 0;
};

/// The diagnostic the log shows for a failed connect, as in seed 002:
/// "TCP active open: Failed connect() Error: connection refused".
std::string connect_failure_text(std::error_code ec);

}  // namespace mailq
