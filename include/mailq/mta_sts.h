// mailq — MTA-STS (RFC 8461): the policy a recipient domain publishes over HTTPS, and what it
// means for delivery. Pure parsing and matching; the fetching and caching live in
// mailq::uv::MtaStsSource (mailq/uv/mta_sts.h).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mailq/error.h"

namespace mailq::sts {

/// The largest max_age a policy may give (RFC 8461 §3.2: about one year).
inline constexpr std::int64_t kMaxAgeLimit = 31557600;
/// The largest policy body read (RFC 8461 §3.3 lets senders cap it; 64 KiB as others do).
inline constexpr std::size_t kMaxPolicySize = 64 * 1024;

enum class Mode : std::uint8_t { none, testing, enforce };
std::string_view to_string(Mode m) noexcept;

struct Policy {
  Mode mode = Mode::none;
  std::vector<std::string>
      mx;  ///< patterns, lowercased, no final dot: "mx.example.com", "*.example.net"
  std::chrono::seconds max_age{0};
  std::string id;  ///< from the TXT record it was fetched for (not part of the body)
};

/// Parses a policy body (RFC 8461 §3.2): "key: value" lines ending in CRLF or LF; `version`
/// must be STSv1, `mode` one of enforce / testing / none, `max_age` an integer of at most
/// 10 digits, capped at `kMaxAgeLimit`; at least one `mx` unless the mode is none; unknown
/// keys are ignored. Errors: `errc::invalid_parameter` saying which field is wrong (the
/// TLS-RPT result type of such a policy is sts-policy-invalid).
Result<Policy> parse_policy(std::string_view body);

/// The id of an `_mta-sts` TXT record (RFC 8461 §3.1): "v=STSv1; id=20260101T000000;" with v
/// first, id 1 to 32 letters and digits, other fields ignored. Errors:
/// `errc::invalid_parameter` (not an STSv1 record, no or a malformed id).
Result<std::string> parse_txt_record(std::string_view text);

/// From the TXT strings at _mta-sts.<domain>: the id of the one STSv1 record. Records that do
/// not start with "v=STSv1" are ignored; none, or more than one, is no policy (nullopt-like
/// `errc::not_found`); a malformed STSv1 record is `errc::invalid_parameter`.
Result<std::string> policy_id(const std::vector<std::string>& txt_records);

/// What a policy source knows of a domain's policy when a delivery asks.
struct PolicyAnswer {
  /// The policy in force (cached or just fetched); none when the domain has none, or when
  /// it could not be fetched and nothing valid is cached.
  std::optional<Policy> policy;
  /// The discovery or fetch failed (no valid cached policy was there to fall back on, or one
  /// was and was used): the TLS-RPT result type is sts-policy-fetch-error, sts-policy-invalid
  /// or sts-webpki-invalid, as `detail` says.
  bool failed = false;
  /// The policy was fetched for this answer (not taken from the cache): worth a log line.
  bool fetched = false;
  std::string detail;  ///< for the log: where the answer came from, or what failed
};

/// Where the delivery side gets a recipient domain's MTA-STS policy
/// (`DelivererConfig::mta_sts`); `mailq::uv::MtaStsSource` discovers, fetches and caches.
/// `lookup` answers exactly once, on the loop thread, never from inside the call; a source
/// destroyed with lookups pending drops them without answering (its owner goes first).
class PolicySource {
 public:
  virtual ~PolicySource() = default;
  virtual void lookup(const std::string& domain, std::function<void(PolicyAnswer)> done) = 0;
};

/// Whether `host` (an MX host name, any case, final dot or not) matches a policy pattern:
/// the same name, or "*.suffix" with exactly one label in place of the star (RFC 8461 §4.1).
bool mx_matches(std::string_view pattern, std::string_view host);
bool mx_allowed(const Policy& policy, std::string_view host);

}  // namespace mailq::sts
