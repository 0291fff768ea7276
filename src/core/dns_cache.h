// A TTL-aware DNS answer cache with a size bound. Internal, pure (time is passed in).
//
// One entry per (name, query type): the answer of one RRset query, positive or negative, as
// the resolver will hand it out again. The cache decides how long an answer may be kept from
// its status and TTL (`mailq::DnsCachePolicy`, mailq/resolver.h), and evicts the least recently
// used entry when full.
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "mailq/clock.h"
#include "mailq/resolver.h"

namespace mailq::detail {

/// One cached answer.
struct DnsCacheEntry {
  DnsStatus status = DnsStatus::error;
  std::vector<MxRecord> mx;            ///< MX answers
  std::vector<std::string> addresses;  ///< A / AAAA answers, text form
  std::vector<std::string> texts;      ///< TXT answers, each record's strings joined
  std::vector<dane::TlsaRecord> tlsa;  ///< TLSA answers
  /// DNSSEC-validated by a trusted nameserver (its AD bit), the CNAME chain to it included.
  bool secure = false;
  std::string detail;
  std::string canonical;  ///< when the name is an alias: where its CNAME chain led (lowercase)
};

struct DnsCacheStats {
  std::uint64_t hits = 0;
  std::uint64_t misses = 0;     ///< lookups that found nothing usable (absent or expired)
  std::uint64_t stores = 0;     ///< answers stored (not counting those with a zero lifetime)
  std::uint64_t evictions = 0;  ///< entries dropped for room (not expiries)
  std::size_t entries = 0;
};

class DnsCache {
 public:
  /// A monotonic instant in milliseconds from any fixed origin (the loop's clock).
  using Time = Duration;

  explicit DnsCache(DnsCachePolicy policy = {}) : policy_(policy) {}

  /// How long an answer may be kept. `ttl_seconds` is the TTL read from the message: the
  /// records' TTL for `ok`, the SOA-derived TTL for `nxdomain` / `no_data`; nullopt when
  /// there was none. Zero means "do not cache".
  Duration lifetime(DnsStatus status, std::optional<std::uint32_t> ttl_seconds) const;

  /// Stores the answer for (`name`, `type`), replacing an older one, and returns the lifetime
  /// used. A zero lifetime stores nothing and leaves an existing entry alone.
  Duration store(std::string_view name, std::uint16_t type, DnsCacheEntry entry,
                 std::optional<std::uint32_t> ttl_seconds, Time now);

  /// The unexpired answer for (`name`, `type`), refreshed as most recently used. Names
  /// compare case-insensitively and without a trailing dot.
  std::optional<DnsCacheEntry> find(std::string_view name, std::uint16_t type, Time now);

  void clear();
  std::size_t size() const noexcept { return lru_.size(); }
  DnsCacheStats stats() const;
  const DnsCachePolicy& policy() const noexcept { return policy_; }

 private:
  struct Node {
    std::string key;
    DnsCacheEntry entry;
    Time expires;
  };
  static std::string make_key(std::string_view name, std::uint16_t type);

  DnsCachePolicy policy_;
  std::list<Node> lru_;  // most recently used first
  std::unordered_map<std::string, std::list<Node>::iterator> index_;
  DnsCacheStats stats_;
};

}  // namespace mailq::detail
