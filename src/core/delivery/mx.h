// MX selection (RFC 5321 §5.1, RFC 7505). Internal, pure.
#pragma once

#include <random>
#include <string>
#include <vector>

#include "mailq/resolver.h"

namespace mailq::detail {

enum class MxPlan { ok, null_mx, loops_to_self, empty };

/// Orders MX records by preference with a random order among equal preferences; detects the
/// null MX (a single "." record, RFC 7505) and an MX list whose best host is this host (the
/// list is cut before the first record naming one of `local_names`, and `loops_to_self`
/// returned when nothing is left).
MxPlan plan_mx(std::vector<MxRecord> records, const std::vector<std::string>& local_names,
               std::mt19937_64& rng, std::vector<MxRecord>* out);

/// A host to try, with its addresses in order.
struct Target {
  std::string host;  ///< MX or smart-host name (TLS name, log "dns;host")
  std::uint16_t preference = 0;
  std::string address;
  std::uint16_t port = 25;
  /// Set when the recipient domain's MTA-STS policy (mode enforce) governs this host: STARTTLS
  /// with the certificate verified for `host`, whatever the route's TLS policy says. The
  /// words name the policy ("the MTA-STS policy of example.com, id 2026a").
  std::string tls_required_by;
  /// DANE (RFC 7672): the host's TLSA records were DNSSEC-secure. STARTTLS is then mandatory;
  /// with usable records in `tlsa` the certificate must match one of them (and the MTA-STS
  /// policy no longer applies to the host), with none usable it is not authenticated.
  bool dane = false;
  std::vector<dane::TlsaRecord> tlsa;  ///< the usable records
  /// Set when an MTA-STS policy in mode testing names this host: its certificate is checked
  /// (not demanded) and a failure said in the log. The words name the policy.
  std::string tls_tested_by;
};

/// Drops targets at or after the first one whose address is local (a loop), as `plan_mx` does
/// for names. Returns false when the best target was local.
bool cut_local_addresses(std::vector<Target>& targets,
                         const std::vector<std::string>& local_addresses);

}  // namespace mailq::detail
