// Test support for DNSSEC and DANE: a zone signed at test time with ldns (ldnsutils), for a
// validating unbound (UnboundServer::Config::trust_anchor_file), and TLSA data computed by
// openssl from a certificate file, so that neither the signatures nor the digests come from
// mailq's own code.
//
// Signed zones are never committed: their signatures expire (ldns-signzone's default is four
// weeks), so each test signs its zone afresh.
#pragma once

#include <string>

namespace mailq::test {

struct SignedZone {
  std::string origin;        ///< "dane.test."
  std::string text;          ///< the signed zone file
  std::string trust_anchor;  ///< a file with the key-signing key, for trust-anchor-file
};

/// Signs `zone_text` (a zone file for `origin`, with $ORIGIN and $TTL as needed) with a fresh
/// ECDSA P-256 key-signing and zone-signing key pair made in `dir`. False and `error` when
/// ldns-keygen or ldns-signzone is missing or fails.
bool sign_zone(const std::string& dir, const std::string& origin, const std::string& zone_text,
               SignedZone* out, std::string* error);

/// The TLSA certificate association data of the first certificate in `cert_file` (PEM), in
/// hex, as openssl computes it: `selector` 0 (the certificate) or 1 (its public key),
/// `matching` 0 (the DER itself), 1 (SHA-256) or 2 (SHA-512). Empty and `error` on failure.
std::string tlsa_data(const std::string& cert_file, int selector, int matching, std::string* error);

}  // namespace mailq::test
