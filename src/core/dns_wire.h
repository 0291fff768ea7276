// Reading TTLs out of a raw DNS message (RFC 1035 §4.1). Internal, pure.
//
// c-ares 1.18.1 parses MX answers without their TTLs and gives no access to the SOA of a
// negative answer, so the resolver walks the message itself for the numbers a TTL-aware cache
// needs. Only what is needed is read: the header, the question (skipped) and the TTL, type
// and RDATA bounds of every answer and authority record. c-ares 1.18.1 has no TLSA parser
// either: the TLSA records of an answer are read here too.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "mailq/dane.h"

namespace mailq::detail {

inline constexpr std::uint16_t kDnsTypeA = 1;
inline constexpr std::uint16_t kDnsTypeCname = 5;
inline constexpr std::uint16_t kDnsTypeSoa = 6;
inline constexpr std::uint16_t kDnsTypeMx = 15;
inline constexpr std::uint16_t kDnsTypeTxt = 16;
inline constexpr std::uint16_t kDnsTypeAaaa = 28;
inline constexpr std::uint16_t kDnsTypeTlsa = 52;

/// Name of a query type for logs ("MX", "A", "AAAA", "TXT", else "TYPE<n>").
std::string dns_type_name(std::uint16_t type);

struct DnsTtls {
  std::uint8_t rcode = 0;      ///< RCODE from the header (0 NOERROR, 2 SERVFAIL, 3 NXDOMAIN, ...)
  bool truncated = false;      ///< TC bit
  bool authenticated = false;  ///< AD bit (RFC 4035 section 3.2.3): the server validated it
  std::uint16_t answers = 0;   ///< ANCOUNT
  /// Smallest TTL among the answer records of type `qtype` and the CNAMEs leading to them
  /// (a cached answer may not outlive any link of its chain). Empty when there is none.
  std::optional<std::uint32_t> answer_ttl;
  /// RFC 2308 §5: the TTL of a negative answer is the smaller of the SOA record's own TTL
  /// and its MINIMUM field. Empty when the authority section carries no SOA.
  std::optional<std::uint32_t> negative_ttl;
  /// Where the answer's CNAME chain from the question's name ends when the answer holds no
  /// record of `qtype` for that name (a server that did not follow the chain itself);
  /// lowercased, without the final dot. Empty when there is no such chain, or when it loops
  /// or runs past 16 links.
  std::string cname_target;
  /// When `qtype` is TLSA: the TLSA records of the answer section, in order.
  std::vector<dane::TlsaRecord> tlsa;
};

/// Scans `msg` (a complete DNS response of `len` octets). Returns nullopt when the message is
/// malformed: shorter than its counts promise, a name running off the end, a label type
/// other than a plain label or a compression pointer, an RDATA overrunning the message, an
/// SOA whose RDATA is too short, or a TLSA RDATA shorter than its three one-octet fields. TTLs with
/// the top bit set count as 0 (RFC 2181 §8).
std::optional<DnsTtls> scan_dns_ttls(const unsigned char* msg, std::size_t len,
                                     std::uint16_t qtype);

}  // namespace mailq::detail
