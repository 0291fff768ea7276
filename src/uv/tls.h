// mbedTLS 2.28 client and server sessions over memory buffers, and the contexts they share.
//
// A TlsSession never touches a socket: the connection feeds it the ciphertext it received and
// takes the ciphertext to send, so the same code runs over any byte stream.
#pragma once

#include <cstddef>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mailq/dane.h"
#include "mailq/transport.h"

struct mbedtls_x509_crt;

namespace mailq {
namespace uv {
namespace detail {

/// "SSL - The connection indicated an EOF (-0x7280)": mbedTLS's text for an error code.
std::string mbedtls_error_text(int ret);

/// DANE (RFC 7672): the first of the usable `tlsa` records that authenticates `chain` (the
/// certificates the server sent, its own first): DANE-EE(3) records are matched against the
/// server's certificate, DANE-TA(2) ones against every certificate of the chain, and the one
/// that matches must then issue the server's, valid now, for one of `names`. Else nullopt and
/// `why` says what failed.
std::optional<dane::TlsaRecord> dane_match(const mbedtls_x509_crt* chain,
                                           const std::vector<dane::TlsaRecord>& tlsa,
                                           const std::vector<std::string>& names, std::string* why);

class TlsRandom;
class TlsConfig;

/// What a client config does with the server's certificate.
enum class CertCheck {
  none,    ///< nothing (opportunistic TLS, TLS 1.0 at least)
  verify,  ///< chain and name against the CAs, or the handshake fails (TLS 1.2 at least)
  check,   ///< chain and name against the CAs, the result only reported (TlsInfo)
  dane,    ///< any chain through the handshake, matched against TLSA records after it
};

/// The mbedTLS contexts of one transport: one entropy source and DRBG for all sessions, and
/// one ssl config (with its trust store) per (CertCheck, CA file).
class TlsContextCache {
 public:
  explicit TlsContextCache(std::vector<std::string> system_ca_files);
  ~TlsContextCache();

  /// The config for `options`, built on first use. On failure `error` says why (an
  /// unreadable CA file, a DRBG that could not be seeded) and nothing is cached.
  std::shared_ptr<const TlsConfig> get(const TlsClientOptions& options, std::string* error);
  void clear();

 private:
  std::vector<std::string> system_ca_files_;
  std::shared_ptr<TlsRandom> random_;
  std::map<std::pair<CertCheck, std::string>, std::shared_ptr<const TlsConfig>> configs_;
};

/// The server side's config: `cert_file` (PEM chain, ours first) and `key_file` (PEM or DER,
/// unencrypted), checked to belong together, with a random generator of its own. Null and
/// `error` ("cannot load the key /etc/mailq/key.pem: PK - ...") on failure.
std::shared_ptr<const TlsConfig> load_server_tls(const std::string& cert_file,
                                                 const std::string& key_file, std::string* error);
/// "CN=mail.example.org, valid until 2027-03-01 12:00:00 UTC": our certificate, for the log.
std::string server_tls_summary(const TlsConfig& config);

/// One client or server session. Not copyable; owns its mbedtls_ssl_context.
class TlsSession {
 public:
  enum class Step { again, done, failed };
  /// What `read` found.
  static constexpr long kWant = 0;     ///< needs more ciphertext
  static constexpr long kClosed = -1;  ///< the peer sent close_notify
  static constexpr long kError = -2;   ///< fatal; see error()

  TlsSession();
  ~TlsSession();
  TlsSession(const TlsSession&) = delete;
  TlsSession& operator=(const TlsSession&) = delete;

  /// Prepares the session; false (and error()) when it cannot be set up.
  bool setup(std::shared_ptr<const TlsConfig> config, const TlsClientOptions& options);
  /// Prepares a server session with a config of `load_server_tls`.
  bool setup_server(std::shared_ptr<const TlsConfig> config);
  /// Queues a close_notify alert (the output holds it).
  void close_notify();

  /// Ciphertext received from the peer.
  void feed(std::string_view ciphertext);
  /// Advances the handshake.
  Step handshake();
  /// Decrypts up to `len` bytes of application data: > 0 bytes, or kWant / kClosed / kError.
  long read(char* buf, std::size_t len);
  /// Encrypts all of `plaintext`; false (and error()) on a fatal error.
  bool write(std::string_view plaintext);

  /// Ciphertext to send, cleared by the call.
  std::string take_output();
  bool has_output() const noexcept { return !out_.empty(); }

  /// What the finished handshake negotiated.
  TlsInfo info() const;
  const std::string& error() const noexcept { return error_; }

 private:
  static int bio_send(void* ctx, const unsigned char* buf, std::size_t len);
  static int bio_recv(void* ctx, unsigned char* buf, std::size_t len);
  void set_error(std::string_view what, int ret);

  struct Ssl;
  // Declared before `ssl_`, so destroyed after it: mbedtls_ssl_free reads the config (its
  // debug hook), and a server session may hold the last reference to it.
  std::shared_ptr<const TlsConfig> config_;
  std::unique_ptr<Ssl> ssl_;
  bool verify_ = false;
  bool check_ = false;                  ///< TlsClientOptions::check, for a host name
  std::vector<dane::TlsaRecord> tlsa_;  ///< DANE: the records to match after the handshake
  std::vector<std::string> dane_names_;
  std::string dane_matched_;  ///< the record that matched, for TlsInfo
  std::string in_;
  std::size_t in_pos_ = 0;
  std::string out_;
  std::string error_;
};

}  // namespace detail
}  // namespace uv
}  // namespace mailq
