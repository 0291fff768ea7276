// mailq — destinations: where one SMTP session's worth of recipients goes. Internal.
//
// A recipient's destination is fixed when its message enters the queue (enqueue or recovery):
// the route stored with it (or, when the table no longer has that route, the route the table
// gives its domain now) and, for an MX route, the lowercased domain. The queue interns each
// destination once and keeps its number beside each recipient, so that scheduling compares
// numbers instead of deriving keys from addresses and routes again.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "mailq/route.h"

namespace mailq::detail {

using DestinationId = std::uint32_t;

struct Destination {
  std::string key;     ///< the route name (static route) or the lowercased domain (MX route)
  std::string domain;  ///< the domain an MX route looks up; "" for a static route
  std::shared_ptr<const Route> route;
};

/// Interned destinations with a reference count each (one per recipient that names it, one
/// per hold the schedule keeps on it); a number is reused once nothing refers to it.
class DestinationTable {
 public:
  /// The destination of a recipient with address `address` stored with route `route_name`,
  /// with one more reference.
  DestinationId acquire(const RouteTable& routes, std::string_view route_name,
                        std::string_view address);
  void retain(DestinationId id) { entries_[id].refs++; }
  void release(DestinationId id);

  const Destination& operator[](DestinationId id) const { return *entries_[id].dest; }
  const std::shared_ptr<const Destination>& shared(DestinationId id) const {
    return entries_[id].dest;
  }
  std::optional<DestinationId> find(std::string_view key) const;
  std::size_t size() const noexcept { return by_key_.size(); }
  /// One more than the highest number in use (a bound for tables indexed by number).
  std::size_t capacity() const noexcept { return entries_.size(); }

 private:
  struct Entry {
    std::shared_ptr<const Destination> dest;
    std::uint32_t refs = 0;
  };
  std::vector<Entry> entries_;
  std::vector<DestinationId> free_;
  std::unordered_map<std::string, DestinationId> by_key_;
};

}  // namespace mailq::detail
