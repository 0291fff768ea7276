// mailq — a destination run: the work for one destination while it has any. Internal.
//
// Its jobs waiting for a session, its resolved hosts and which one is next, its sessions, and
// the slow start: until one session has become usable a run connects to one host at a time
// (a dead destination costs one connection attempt per host, not one per job); after that,
// one session per few outstanding jobs, up to the route's limit, lowered when the destination
// refuses extra parallel sessions.
#pragma once

#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "core/delivery/mx.h"
#include "core/delivery/session.h"
#include "core/delivery/trouble.h"
#include "core/queue/port.h"

namespace mailq::detail {

struct DestinationRun : std::enable_shared_from_this<DestinationRun> {
  std::shared_ptr<const Destination> destination;
  std::deque<Job> jobs;  ///< waiting for a session
  std::vector<std::shared_ptr<Session>> sessions;
  enum class Phase { fresh, resolving, resolved } phase = Phase::fresh;
  std::vector<Target> targets;
  std::size_t next_target = 0;
  TimePoint resolved_at{};
  HostFailure last_failure;  ///< of the hosts tried since the last resolution
  /// A host of this attempt failed in a way that counts against the destination: when the
  /// attempt runs out of hosts, that is one failure of the destination (seed 000's count).
  bool counted_failure = false;
  std::size_t parallel_cap = SIZE_MAX;  ///< lowered when extra sessions are refused
  bool more_due = false;  ///< a cycle took its full share: more of the backlog may be due

  const std::string& key() const noexcept { return destination->key; }
  const Route& route() const noexcept { return *destination->route; }

  std::size_t live_sessions() const;
  std::size_t busy_sessions() const;
  bool any_ready() const;
  /// How many sessions the run wants now: `kJobsPerSession` outstanding jobs per session, up
  /// to `cap` (the route's and the lowered limit), one while none has become usable.
  std::size_t sessions_wanted() const;
  /// Moves past `target` when it is the next one (its connection failed).
  void skip(const Target& target, bool match_port);
  bool out_of_targets() const noexcept { return next_target >= targets.size(); }
  /// Whether a host failed since the last resolution (the attempt is under way).
  bool attempt_failed() const noexcept { return last_failure.set; }
  /// Drops a session object (after it ended).
  void forget(const Session* session);

  static constexpr std::size_t kJobsPerSession = 4;
};

}  // namespace mailq::detail
