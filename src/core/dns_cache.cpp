#include "core/dns_cache.h"

#include <algorithm>
#include <cctype>

namespace mailq::detail {

Duration DnsCache::lifetime(DnsStatus status, std::optional<std::uint32_t> ttl_seconds) const {
  if (!policy_.enabled || policy_.max_entries == 0) return Duration{0};
  const auto seconds = [](std::uint32_t s) {
    return std::chrono::duration_cast<Duration>(std::chrono::seconds(s));
  };
  Duration d{0};
  switch (status) {
    case DnsStatus::ok:
      d = ttl_seconds ? seconds(*ttl_seconds) : policy_.unknown_ttl;
      d = std::min(std::max(d, policy_.min_ttl), policy_.max_ttl);
      break;
    case DnsStatus::nxdomain:
    case DnsStatus::no_data:
      d = ttl_seconds ? seconds(*ttl_seconds) : policy_.negative_ttl;
      d = std::min(std::max(d, policy_.min_ttl), policy_.max_negative_ttl);
      break;
    case DnsStatus::servfail:
    case DnsStatus::refused:
    case DnsStatus::timeout:
    case DnsStatus::error:
      // A failure says nothing about the name; keep it only when asked to, briefly.
      d = policy_.failure_ttl;
      if (d > Duration{0}) d = std::max(d, policy_.min_ttl);
      break;
    case DnsStatus::cancelled:
      break;  // no answer at all: nothing to remember
  }
  return std::max(d, Duration{0});
}

std::string DnsCache::make_key(std::string_view name, std::uint16_t type) {
  while (!name.empty() && name.back() == '.') name.remove_suffix(1);
  std::string key = std::to_string(type);
  key.push_back('/');
  for (char c : name) key.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  return key;
}

Duration DnsCache::store(std::string_view name, std::uint16_t type, DnsCacheEntry entry,
                         std::optional<std::uint32_t> ttl_seconds, Time now) {
  const Duration life = lifetime(entry.status, ttl_seconds);
  if (life <= Duration{0}) return Duration{0};
  std::string key = make_key(name, type);
  auto it = index_.find(key);
  if (it != index_.end()) {
    it->second->entry = std::move(entry);
    it->second->expires = now + life;
    lru_.splice(lru_.begin(), lru_, it->second);
  } else {
    lru_.push_front(Node{key, std::move(entry), now + life});
    index_.emplace(std::move(key), lru_.begin());
    while (lru_.size() > policy_.max_entries) {
      index_.erase(lru_.back().key);
      lru_.pop_back();
      ++stats_.evictions;
    }
  }
  ++stats_.stores;
  return life;
}

std::optional<DnsCacheEntry> DnsCache::find(std::string_view name, std::uint16_t type, Time now) {
  auto it = index_.find(make_key(name, type));
  if (it == index_.end()) {
    ++stats_.misses;
    return std::nullopt;
  }
  if (it->second->expires <= now) {
    lru_.erase(it->second);
    index_.erase(it);
    ++stats_.misses;
    return std::nullopt;
  }
  lru_.splice(lru_.begin(), lru_, it->second);
  ++stats_.hits;
  return it->second->entry;
}

void DnsCache::clear() {
  lru_.clear();
  index_.clear();
}

DnsCacheStats DnsCache::stats() const {
  DnsCacheStats s = stats_;
  s.entries = lru_.size();
  return s;
}

}  // namespace mailq::detail
