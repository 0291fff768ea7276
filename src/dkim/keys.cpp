#include "dkim/keys.h"

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/pk.h>
#include <mbedtls/platform_util.h>
#include <nettle/bignum.h>
#include <nettle/eddsa.h>
#include <nettle/rsa.h>

#include <array>
#include <cstring>
#include <mutex>
#include <optional>
#include <vector>

namespace mailq::dkim::detail {

namespace {

Error bad(std::string what) {
  return Error(errc::invalid_parameter, std::move(what));
}

std::string mbedtls_message(int rc) {
  char buf[160];
  mbedtls_strerror(rc, buf, sizeof buf);
  return buf;
}

// mbedTLS reads the key (PEM, PKCS#1 or PKCS#8) and writes its public half; Nettle signs,
// on GMP, with blinding: 1.7 times as fast as mbedTLS's RSA on this machine's x86-64.
class RsaKey final : public PrivateKey {
 public:
  RsaKey() {
    mbedtls_pk_init(&pk_);
    mbedtls_entropy_init(&entropy_);
    mbedtls_ctr_drbg_init(&drbg_);
    rsa_public_key_init(&pub_);
    rsa_private_key_init(&key_);
  }
  ~RsaKey() override {
    rsa_private_key_clear(&key_);  // mpz_clear: GMP frees, without zeroing (a GMP limit)
    rsa_public_key_clear(&pub_);
    mbedtls_pk_free(&pk_);
    mbedtls_ctr_drbg_free(&drbg_);
    mbedtls_entropy_free(&entropy_);
  }

  Result<void> load(std::string_view pem) {
    std::string text(pem);  // NUL-terminated, as mbedtls_pk_parse_key wants PEM
    int rc = mbedtls_pk_parse_key(&pk_, reinterpret_cast<const unsigned char*>(text.c_str()),
                                  text.size() + 1, nullptr, 0);
    mbedtls_platform_zeroize(text.data(), text.size());
    if (rc == MBEDTLS_ERR_PK_PASSWORD_REQUIRED)
      return bad("the key is encrypted (a DKIM key must be readable without a password)");
    if (rc != 0) return bad("not a private key mailq can read: " + mbedtls_message(rc));
    if (!mbedtls_pk_can_do(&pk_, MBEDTLS_PK_RSA))
      return bad("an elliptic-curve key: DKIM signs with RSA or Ed25519 only");
    if (bits() < 1024)
      return bad("an RSA key of " + std::to_string(bits()) +
                 " bits: DKIM needs at least 1024 (RFC 8301; 2048 recommended)");
    static const char kPersonal[] = "mailq dkim";
    rc = mbedtls_ctr_drbg_seed(&drbg_, mbedtls_entropy_func, &entropy_,
                               reinterpret_cast<const unsigned char*>(kPersonal),
                               sizeof kPersonal - 1);
    if (rc != 0) return bad("cannot seed the random generator: " + mbedtls_message(rc));
    if (!to_nettle()) return bad("the RSA key's parameters are not consistent");
    return {};
  }

  Algorithm algorithm() const noexcept override { return Algorithm::rsa_sha256; }
  std::size_t bits() const noexcept override { return mbedtls_pk_get_bitlen(&pk_); }

  Result<std::string> sign(const Digest& digest) const override {
    mpz_t s;
    mpz_init(s);
    int ok;
    {
      // The generator (for the blinding) is state: one signature at a time.
      std::lock_guard<std::mutex> lock(mutex_);
      random_failed_ = false;
      ok = rsa_sha256_sign_digest_tr(&pub_, &key_, const_cast<RsaKey*>(this), &RsaKey::random,
                                     digest.data(), s);
      ok = ok && !random_failed_;
    }
    std::string out;
    if (ok) {
      out.resize(pub_.size);
      nettle_mpz_get_str_256(out.size(), reinterpret_cast<std::uint8_t*>(out.data()), s);
    }
    mpz_clear(s);
    if (!ok) return Error(errc::bad_state, "RSA signing failed");
    return out;
  }

  std::string public_key() const override {
    std::vector<unsigned char> der(4096);
    // Written at the end of the buffer.
    int n = mbedtls_pk_write_pubkey_der(&pk_, der.data(), der.size());
    if (n <= 0) return {};
    return base64(der.data() + der.size() - static_cast<std::size_t>(n),
                  static_cast<std::size_t>(n));
  }

 private:
  // Nettle's random source (the blinding): a generator that fails fails the signature.
  static void random(void* ctx, std::size_t length, std::uint8_t* dst) {
    auto* self = static_cast<const RsaKey*>(ctx);
    if (mbedtls_ctr_drbg_random(&self->drbg_, dst, length) != 0) {
      self->random_failed_ = true;
      std::memset(dst, 0, length);
    }
  }

  // The key's numbers, from mbedTLS's bignums to GMP's.
  bool to_nettle() {
    const mbedtls_rsa_context* rsa = mbedtls_pk_rsa(pk_);
    mbedtls_mpi n, p, q, d, e, dp, dq, qp;
    mbedtls_mpi* all[] = {&n, &p, &q, &d, &e, &dp, &dq, &qp};
    for (auto* m : all) mbedtls_mpi_init(m);
    bool ok = mbedtls_rsa_export(rsa, &n, &p, &q, &d, &e) == 0 &&
              mbedtls_rsa_export_crt(rsa, &dp, &dq, &qp) == 0;
    auto copy = [&](const mbedtls_mpi& from, mpz_t to) {
      std::vector<unsigned char> bytes(mbedtls_mpi_size(&from));
      ok = ok && mbedtls_mpi_write_binary(&from, bytes.data(), bytes.size()) == 0;
      nettle_mpz_set_str_256_u(to, bytes.size(), bytes.data());
      mbedtls_platform_zeroize(bytes.data(), bytes.size());
    };
    if (ok) {
      copy(n, pub_.n);
      copy(e, pub_.e);
      copy(p, key_.p);
      copy(q, key_.q);
      copy(d, key_.d);
      copy(dp, key_.a);
      copy(dq, key_.b);
      copy(qp, key_.c);
    }
    for (auto* m : all) mbedtls_mpi_free(m);
    return ok && rsa_public_key_prepare(&pub_) && rsa_private_key_prepare(&key_);
  }

  mutable std::mutex mutex_;
  mutable mbedtls_pk_context pk_;  // mbedtls_pk_write_pubkey_der takes it non-const
  mbedtls_entropy_context entropy_;
  mutable mbedtls_ctr_drbg_context drbg_;
  mutable bool random_failed_ = false;  // under mutex_
  rsa_public_key pub_;
  rsa_private_key key_;
};

class Ed25519Key final : public PrivateKey {
 public:
  explicit Ed25519Key(const unsigned char* seed) {
    std::memcpy(seed_.data(), seed, seed_.size());
    nettle_ed25519_sha512_public_key(public_.data(), seed_.data());
  }
  ~Ed25519Key() override { mbedtls_platform_zeroize(seed_.data(), seed_.size()); }

  Algorithm algorithm() const noexcept override { return Algorithm::ed25519_sha256; }
  std::size_t bits() const noexcept override { return 256; }

  Result<std::string> sign(const Digest& digest) const override {
    // RFC 8463 §3: PureEdDSA over the SHA-256 hash of the signed data.
    std::array<unsigned char, ED25519_SIGNATURE_SIZE> sig{};
    nettle_ed25519_sha512_sign(public_.data(), seed_.data(), digest.size(), digest.data(),
                               sig.data());
    return std::string(reinterpret_cast<const char*>(sig.data()), sig.size());
  }

  std::string public_key() const override { return base64(public_.data(), public_.size()); }

 private:
  std::array<unsigned char, ED25519_KEY_SIZE> seed_{};
  std::array<unsigned char, ED25519_KEY_SIZE> public_{};
};

// The base64 between the BEGIN and END lines of a PEM block of `label`; nullopt when the text
// has no such block.
std::optional<std::string> pem_body(std::string_view text, std::string_view label) {
  const std::string begin = "-----BEGIN " + std::string(label) + "-----";
  const std::string end = "-----END " + std::string(label) + "-----";
  std::size_t b = text.find(begin);
  if (b == std::string_view::npos) return std::nullopt;
  b += begin.size();
  std::size_t e = text.find(end, b);
  if (e == std::string_view::npos) return std::nullopt;
  return std::string(text.substr(b, e - b));
}

// The 32-byte key of a PKCS#8 Ed25519 PrivateKeyInfo (RFC 8410 §7): SEQUENCE { INTEGER 0|1,
// SEQUENCE { OID 1.3.101.112 }, OCTET STRING { OCTET STRING (32) } ... }.
const unsigned char* ed25519_pkcs8_seed(const std::vector<unsigned char>& der) {
  static const unsigned char kAfterLength[] = {0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03,
                                               0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20};
  if (der.size() < 2 + sizeof kAfterLength + 32 || der[0] != 0x30 || der[1] >= 0x80 ||
      der[1] + 2u != der.size())
    return nullptr;
  if (std::memcmp(der.data() + 2, kAfterLength, 2) != 0 || der[4] > 1 ||
      std::memcmp(der.data() + 5, kAfterLength + 3, sizeof kAfterLength - 3) != 0)
    return nullptr;
  return der.data() + 2 + sizeof kAfterLength;
}

}  // namespace

Result<std::unique_ptr<PrivateKey>> PrivateKey::parse(std::string_view text) {
  if (auto body = pem_body(text, "PRIVATE KEY")) {
    std::vector<unsigned char> der = base64_decode(*body);
    mbedtls_platform_zeroize(body->data(), body->size());
    const unsigned char* seed = ed25519_pkcs8_seed(der);
    std::unique_ptr<PrivateKey> key;
    if (seed) key = std::make_unique<Ed25519Key>(seed);
    if (!der.empty()) mbedtls_platform_zeroize(der.data(), der.size());
    if (key) return key;
  } else if (text.find("-----BEGIN") == std::string_view::npos) {
    // No PEM at all: the base64 of a raw Ed25519 key, as dkimpy writes it.
    std::vector<unsigned char> raw = base64_decode(text);
    if (raw.size() != ED25519_KEY_SIZE) {
      if (!raw.empty()) mbedtls_platform_zeroize(raw.data(), raw.size());
      return bad("neither a PEM private key nor the base64 of a 32-byte Ed25519 key");
    }
    auto key = std::make_unique<Ed25519Key>(raw.data());
    mbedtls_platform_zeroize(raw.data(), raw.size());
    return std::unique_ptr<PrivateKey>(std::move(key));
  }
  auto rsa = std::make_unique<RsaKey>();
  if (auto r = rsa->load(text); !r) return r.error();
  return std::unique_ptr<PrivateKey>(std::move(rsa));
}

}  // namespace mailq::dkim::detail
