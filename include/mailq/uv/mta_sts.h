// mailq::uv::MtaStsSource — MTA-STS discovery, fetching and caching (RFC 8461 §3, §5).
//
// For a recipient domain it reads the `_mta-sts.<domain>` TXT record through the Resolver,
// fetches `https://mta-sts.<domain>/.well-known/mta-sts.txt` over the Transport (TLS from the
// first byte, the certificate verified for that name against the system's or the configured
// CAs; no redirects, 200 and text/plain only, 64 KiB at most, one deadline), parses it
// (mailq/mta_sts.h) and caches it for its max_age, keyed by the record's id, in memory and in
// `cache_file` (kept across restarts). A cached policy is used while valid; its TXT id is
// checked again after `recheck`, and a new id, or half its max_age gone, fetches again; a
// fetch that fails leaves the cached policy in use (RFC 8461 §5.1). Without a valid cached
// policy a failed fetch is "no policy" for now, and the domain is not fetched again for
// `failure_backoff`.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "mailq/clock.h"
#include "mailq/error.h"
#include "mailq/mta_sts.h"
#include "mailq/net.h"
#include "mailq/resolver.h"
#include "mailq/transport.h"

namespace mailq::uv {

struct MtaStsOptions {
  std::string cache_file;    ///< where policies are kept across restarts; "" = memory only
  std::string ca_file;       ///< CAs trusted for the policy hosts; "" = the system's
  std::uint16_t port = 443;  ///< of the policy host (tests use another)
  Duration fetch_timeout{std::chrono::seconds(60)};
  Duration recheck{std::chrono::hours(1)};            ///< TXT id of a cached policy checked again
  Duration failure_backoff{std::chrono::minutes(5)};  ///< no new fetch after a failed one
  std::string source_address;  ///< bind address of the HTTPS connections; "" = any
  /// Internal networks a policy host may be dialled in (its name is the recipient domain's
  /// word, as an MX host's is: `Route::allow_internal_mx`); none by default.
  std::vector<Network> allow_internal;
};

struct MtaStsStats {
  std::uint64_t fetches = 0;         ///< HTTPS fetches started
  std::uint64_t fetch_failures = 0;  ///< fetches that gave no usable policy
  std::uint64_t cache_hits = 0;      ///< answered from a valid cached policy
  std::size_t cached = 0;            ///< domains with a policy in the cache
};

class MtaStsSource final : public sts::PolicySource {
 public:
  /// Loads `options.cache_file` when it exists (policies already expired are dropped). Errors:
  /// `errc::storage_failure` when the file exists and cannot be read. Lines that do not parse
  /// are skipped.
  static Result<std::unique_ptr<MtaStsSource>> open(Resolver& resolver, Transport& transport,
                                                    Clock& clock, MtaStsOptions options);
  ~MtaStsSource() override;
  MtaStsSource(const MtaStsSource&) = delete;
  MtaStsSource& operator=(const MtaStsSource&) = delete;

  void lookup(const std::string& domain, std::function<void(sts::PolicyAnswer)> done) override;

  MtaStsStats stats() const;

  struct Impl;

 private:
  explicit MtaStsSource(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace mailq::uv
