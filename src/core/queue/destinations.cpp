#include "core/queue/destinations.h"

#include "core/text.h"

namespace mailq::detail {

DestinationId DestinationTable::acquire(const RouteTable& routes, std::string_view route_name,
                                        std::string_view address) {
  const std::string_view domain = domain_of(address);
  std::shared_ptr<const Route> route = routes.find_shared(route_name);
  if (!route) route = routes.lookup_shared(domain);
  std::string key = destination_key(*route, to_lower(domain));
  if (auto it = by_key_.find(key); it != by_key_.end()) {
    entries_[it->second].refs++;
    return it->second;
  }
  auto dest = std::make_shared<Destination>();
  dest->key = key;
  if (!route->is_static()) dest->domain = key;
  dest->route = std::move(route);
  DestinationId id;
  if (!free_.empty()) {
    id = free_.back();
    free_.pop_back();
  } else {
    id = static_cast<DestinationId>(entries_.size());
    entries_.emplace_back();
  }
  entries_[id].dest = std::move(dest);
  entries_[id].refs = 1;
  by_key_.emplace(std::move(key), id);
  return id;
}

void DestinationTable::release(DestinationId id) {
  Entry& e = entries_[id];
  if (--e.refs != 0) return;
  by_key_.erase(e.dest->key);
  e.dest.reset();
  free_.push_back(id);
}

std::optional<DestinationId> DestinationTable::find(std::string_view key) const {
  auto it = by_key_.find(std::string(key));
  if (it == by_key_.end()) return std::nullopt;
  return it->second;
}

}  // namespace mailq::detail
