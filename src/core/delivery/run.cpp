#include "core/delivery/run.h"

#include <algorithm>

namespace mailq::detail {

std::size_t DestinationRun::live_sessions() const {
  std::size_t n = 0;
  for (auto& s : sessions)
    if (!s->dead) ++n;
  return n;
}

std::size_t DestinationRun::busy_sessions() const {
  std::size_t n = 0;
  for (auto& s : sessions)
    if (!s->dead && s->job) ++n;
  return n;
}

bool DestinationRun::any_ready() const {
  return std::any_of(sessions.begin(), sessions.end(),
                     [](auto& s) { return !s->dead && s->ready; });
}

std::size_t DestinationRun::sessions_wanted() const {
  std::size_t cap = std::min<std::size_t>(route().max_connections, parallel_cap);
  // Until one session has succeeded, connect to one target at a time: a dead destination
  // costs one connection attempt per target, not one per job.
  if (!any_ready()) cap = 1;
  // Slow start: one session per kJobsPerSession outstanding jobs, up to the cap.
  const std::size_t desired =
      (jobs.size() + busy_sessions() + kJobsPerSession - 1) / kJobsPerSession;
  return std::min(cap, desired);
}

void DestinationRun::skip(const Target& target, bool match_port) {
  if (next_target < targets.size() && targets[next_target].address == target.address &&
      (!match_port || targets[next_target].port == target.port))
    ++next_target;
}

void DestinationRun::forget(const Session* session) {
  sessions.erase(std::remove_if(sessions.begin(), sessions.end(),
                                [session](auto& p) { return p.get() == session; }),
                 sessions.end());
}

}  // namespace mailq::detail
