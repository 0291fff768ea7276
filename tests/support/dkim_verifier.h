// Test support: DKIM verification by a verifier mailq did not write — Debian's python3-dkim
// (dkimpy) — with the public keys served as TXT records by a DNS server on loopback (unbound)
// or, for tests of the signer alone, given directly.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace mailq::test {

/// One DKIM-Signature of a message, as dkimpy judged it.
struct DkimResult {
  std::string domain;     ///< d=
  std::string selector;   ///< s=
  std::string algorithm;  ///< a=
  bool pass = false;
  std::string detail;  ///< dkimpy's reason when it failed
};

/// Verifies every DKIM-Signature of `message` (CRLF or LF line ends) with dkimpy. TXT records
/// come from the DNS server at 127.0.0.1:`dns_port`, or from `records` (name without the
/// final dot -> text) when `dns_port` is 0. On a failure to run the verifier, returns nothing
/// and sets `error`.
std::vector<DkimResult> dkim_verify(const std::string& message, std::uint16_t dns_port,
                                    const std::map<std::string, std::string>& records,
                                    std::string* error);

/// The TXT text ("v=DKIM1; k=rsa; p=...") of the private key in PEM file `key_file`,
/// computed with openssl (not with mailq). Empty and `error` set on failure.
std::string dkim_txt_with_openssl(const std::string& key_file, std::string* error);

/// Writes a new private key with openssl: "rsa1024", "rsa2048", "rsa512", "ed25519", "ec".
bool openssl_key(const std::string& kind, const std::string& file, std::string* error);

}  // namespace mailq::test
