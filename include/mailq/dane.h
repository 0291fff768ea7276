// mailq — DANE for SMTP (RFC 7672, RFC 6698): TLSA records and what makes them usable.
//
// The engine looks TLSA records up at `_<port>._tcp.<MX host>` only when the MX and address
// answers were DNSSEC-secure (a resolver that trusts its validating nameservers' AD bit says
// so: `ares::AresResolverOptions::dnssec`). A host with usable TLSA records gets STARTTLS with
// its certificate authenticated by them instead of by certificate authorities; one whose TLSA
// records are all unusable gets STARTTLS without authentication (RFC 7672 section 2.2).
// Pure data and checks; the certificate matching runs in the transport (mailq::uv).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace mailq::dane {

/// Certificate usage (RFC 6698 section 2.1.1). SMTP uses only the DANE ones (RFC 7672 3.1.3).
enum class Usage : std::uint8_t { pkix_ta = 0, pkix_ee = 1, dane_ta = 2, dane_ee = 3 };
/// What the data is taken from: the whole certificate (0) or its SubjectPublicKeyInfo (1).
enum class Selector : std::uint8_t { cert = 0, spki = 1 };
/// How the data is compared: exactly (0), as its SHA-256 (1) or SHA-512 (2) digest.
enum class Matching : std::uint8_t { full = 0, sha256 = 1, sha512 = 2 };

/// One TLSA record, as published (any values: `usable` says which ones mean something).
struct TlsaRecord {
  std::uint8_t usage = 0;
  std::uint8_t selector = 0;
  std::uint8_t matching = 0;
  std::string data;  ///< the certificate association data, binary

  friend bool operator==(const TlsaRecord& a, const TlsaRecord& b) {
    return a.usage == b.usage && a.selector == b.selector && a.matching == b.matching &&
           a.data == b.data;
  }
};

/// Whether an SMTP client can use the record: usage DANE-TA(2) or DANE-EE(3), selector 0 or
/// 1, matching type 0, 1 or 2, and data of the length the matching type gives (32 octets for
/// SHA-256, 64 for SHA-512, not empty for a full value). PKIX-TA(0) and PKIX-EE(1) are
/// unusable for SMTP (RFC 7672 section 3.1.3).
bool usable(const TlsaRecord& r) noexcept;

/// The usable records of `records`, in their order.
std::vector<TlsaRecord> usable_records(const std::vector<TlsaRecord>& records);

/// "3 1 1 8b2f…e0a1" (the data in hex, shortened to its first and last 4 octets when longer
/// than 16): for logs.
std::string to_string(const TlsaRecord& r);

/// The TLSA owner name for a host and port: "_25._tcp.mx.example.com".
std::string tlsa_name(std::string_view host, std::uint16_t port);

/// Parses "usage selector matching hex" (as in a zone file: "3 1 1 8B2F..."; spaces inside
/// the hex are allowed). For configuration and tests. Errors name what is wrong.
bool parse_record(std::string_view text, TlsaRecord& out, std::string* error);

}  // namespace mailq::dane
