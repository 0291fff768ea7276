// mailq — DKIM signing (RFC 6376), rsa-sha256 (RFC 8301) and ed25519-sha256 (RFC 8463): keys
// read by mbedTLS, signatures made by Nettle (RSA on GMP, with blinding; Ed25519).
//
//     mailq::dkim::SignerConfig sc;
//     mailq::dkim::KeyConfig k;
//     k.domain = "example.com";
//     k.selector = "2026a";
//     k.key_file = "/etc/mailq/dkim/example.com.2026a.pem";
//     sc.keys.push_back(k);
//     auto signer = mailq::dkim::Signer::create(sc);   // keys read and checked here
//     if (!signer) { /* signer.error().message says which key and why */ }
//     engine_config.delivery.signer = *signer;          // or a Route's `signer`
//
// The delivery side signs each transaction over the bytes that go out (mailq/signer.h): after
// an 8-bit to 7-bit conversion, after the header fields a submission added, without
// dot-stuffing. Which keys sign a message:
//   - `Use::author` keys whose `domain` is the From address's domain or a parent of it
//     (relaxed DMARC alignment: a key for example.com signs mail from news.example.com), the
//     most specific such domain only, every key it has (an RSA and an Ed25519 key sign twice);
//   - else the `Use::fallback` keys;
//   - and always the `Use::always` keys (a sending service's own domain).
// A message without exactly one From field, or whose From has no parsable address, is not
// signed (RFC 6376 §5.4 requires From to be signed; a verifier fails it anyway).
//
// Keys: RSA of at least 1024 bits (RFC 8301), PEM (PKCS#1 "RSA PRIVATE KEY" or PKCS#8
// "PRIVATE KEY"); Ed25519 as PKCS#8 PEM (`openssl genpkey -algorithm ed25519`) or the base64
// of the raw 32-byte private key (dkimpy's `dknewkey --ktype ed25519`). The algorithm comes
// from the key. `dns_records()` gives the TXT record each key needs.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mailq/error.h"
#include "mailq/signer.h"
#include "mailq/time.h"

namespace mailq::dkim {

enum class Algorithm : std::uint8_t { rsa_sha256, ed25519_sha256 };
enum class Canonicalization : std::uint8_t { simple, relaxed };

/// "rsa-sha256" / "ed25519-sha256"; "simple" / "relaxed".
std::string_view to_string(Algorithm a) noexcept;
std::string_view to_string(Canonicalization c) noexcept;
/// Parses "relaxed", "simple" (case-insensitive). Errors: `errc::invalid_parameter`.
Result<Canonicalization> parse_canonicalization(std::string_view s);

/// The header fields signed by default, those present only (RFC 6376 §5.4.1's list, with the
/// MIME fields and List-Unsubscribe-Post).
const std::vector<std::string>& default_headers();

struct KeyConfig {
  enum class Use : std::uint8_t {
    author,    ///< signs mail whose From domain is `domain` or below it
    fallback,  ///< signs mail no author key matched
    always,    ///< signs every message (a sending service's domain)
  };
  std::string domain;    ///< d=, a domain name
  std::string selector;  ///< s=
  std::string key_file;  ///< the private key's file; or:
  std::string key_pem;   ///< the private key itself (when `key_file` is empty)
  Use use = Use::author;
  Canonicalization header_canon = Canonicalization::relaxed;
  Canonicalization body_canon = Canonicalization::relaxed;
  /// Header fields to sign, those present only, each instance; empty: `default_headers()`.
  std::vector<std::string> headers;
  /// Of those, the ones signed once more than they occur (N+1: a field added later breaks the
  /// signature). Unset: every signed field but Sender. Sender is never oversigned (a mailing
  /// list adds one) and asking for it is an error.
  std::optional<std::vector<std::string>> oversign;
  /// x= at the signing time plus this; unset: no expiry.
  std::optional<std::chrono::seconds> expiry;
  /// i=, the agent or user identity ("@news.example.com"); must be in `domain`. "": none.
  std::string identity;
};

struct SignerConfig {
  std::vector<KeyConfig> keys;
};

/// A key's DNS record: `name` TXT `text` (text may exceed 255 octets: split it into strings
/// when writing a zone, as `zone_line` does).
struct DnsRecord {
  std::string name;  ///< "2026a._domainkey.example.com"
  std::string text;  ///< "v=DKIM1; k=rsa; p=MIIBIj..."
  /// The record as a zone file line, the text in strings of at most 255 octets.
  std::string zone_line() const;
};

class Signer final : public MessageSigner {
 public:
  /// Reads and checks every key. Errors (the key's domain and selector first):
  /// `errc::invalid_parameter` (a bad domain, selector, identity, header name, an
  /// unreadable or unusable key, an RSA key under 1024 bits, Sender in `oversign`).
  static Result<std::shared_ptr<const Signer>> create(const SignerConfig& config);
  ~Signer() override;

  Result<std::string> sign(std::string_view message, TimePoint now) const override;

  /// One per key, in configuration order.
  std::vector<DnsRecord> dns_records() const;

  struct Impl;

 private:
  explicit Signer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace mailq::dkim
