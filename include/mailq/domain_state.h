// mailq — which destinations are down (seed 000).
//
// Connection failures (refused, timed out, unreachable, no greeting, 4xx/5xx greeting) are
// counted per destination and per attempt: the Deliverer records one failure when an attempt
// has tried every host of the destination (every MX host and address, or the route's hosts)
// and none could be reached, so a destination with one working host gets its mail. After
// `failure_threshold` consecutive failed attempts the destination is marked down for `down_interval` (the minimum retry interval, default 15 minutes): no
// connection is attempted and its messages are queued at once with
// `451 4.4.1 [internal] connection was not attempted: domain is marked down (too many
// connection failures)`. Replies after the greeting are not connection failures. A successful
// connection clears the count. Marks live in memory only: a restart, or `reset()`, clears them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "mailq/clock.h"

namespace mailq {

struct DomainStateConfig {
  std::uint32_t failure_threshold = 5;
  Duration down_interval{std::chrono::minutes(15)};
};

struct DomainState {
  std::string destination;
  std::uint32_t consecutive_failures = 0;
  TimePoint down_until{};    ///< in the past (or epoch) when not down
  std::string last_failure;  ///< diagnostic of the last connection failure
};

class DomainStateTable {
 public:
  explicit DomainStateTable(DomainStateConfig config = {}) : config_(config) {}

  /// Records a connection failure. Returns true when this failure marked the destination down.
  bool record_failure(std::string_view destination, TimePoint now, std::string_view diagnostic);
  /// Records a successful connection (greeting 220): the failure count restarts from zero.
  void record_success(std::string_view destination);

  bool is_down(std::string_view destination, TimePoint now) const;
  /// When the down mark ends; `TimePoint{}` when not down.
  TimePoint down_until(std::string_view destination, TimePoint now) const;

  /// Clears every mark and count (what an engine restart does). Returns the destinations that
  /// were down.
  std::vector<std::string> reset();
  /// Clears one destination.
  void reset(std::string_view destination);

  /// The state of one destination, nullopt when it has no failure on record.
  std::optional<DomainState> state(std::string_view destination) const;
  /// Snapshot for status displays.
  std::vector<DomainState> snapshot() const;
  const DomainStateConfig& config() const noexcept { return config_; }

 private:
  DomainStateConfig config_;
  std::unordered_map<std::string, DomainState> states_;
};

}  // namespace mailq
