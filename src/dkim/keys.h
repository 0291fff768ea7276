// DKIM private keys: RSA read by mbedTLS and signed by Nettle (GMP), Ed25519 by Nettle
// (mbedTLS 2.28 has none).
// Internal to the DKIM signer.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "dkim/canon.h"
#include "mailq/dkim.h"
#include "mailq/error.h"

namespace mailq::dkim::detail {

class PrivateKey {
 public:
  /// Parses a PEM RSA key (PKCS#1 or PKCS#8), a PKCS#8 PEM Ed25519 key or the base64 of a raw
  /// 32-byte Ed25519 key. Errors: `errc::invalid_parameter`, saying why.
  static Result<std::unique_ptr<PrivateKey>> parse(std::string_view text);
  virtual ~PrivateKey() = default;

  virtual Algorithm algorithm() const noexcept = 0;
  virtual std::size_t bits() const noexcept = 0;
  /// The signature of `digest` (the SHA-256 of the signed data), raw bytes. Thread-safe.
  virtual Result<std::string> sign(const Digest& digest) const = 0;
  /// The p= value of the key's DNS record.
  virtual std::string public_key() const = 0;
};

}  // namespace mailq::dkim::detail
