#include "mailq/domain_state.h"

namespace mailq {

bool DomainStateTable::record_failure(std::string_view destination, TimePoint now,
                                      std::string_view diagnostic) {
  auto [it, inserted] = states_.try_emplace(std::string(destination));
  DomainState& s = it->second;
  if (inserted) s.destination = std::string(destination);
  s.last_failure = std::string(diagnostic);
  // Failures while already down (attempts that were in flight when the mark was set) do not
  // extend the mark: the down period is the minimum retry interval from the marking failure.
  if (s.down_until > now) return false;
  ++s.consecutive_failures;
  if (config_.failure_threshold > 0 && s.consecutive_failures >= config_.failure_threshold) {
    // The count is kept: once the mark expires, the next failure (the probe) marks the
    // destination down again at once; only a successful connection clears it.
    s.down_until = now + config_.down_interval;
    return true;
  }
  return false;
}

void DomainStateTable::record_success(std::string_view destination) {
  auto it = states_.find(std::string(destination));
  if (it == states_.end()) return;
  it->second.consecutive_failures = 0;
  it->second.down_until = TimePoint{};
  states_.erase(it);  // nothing left worth remembering
}

bool DomainStateTable::is_down(std::string_view destination, TimePoint now) const {
  auto it = states_.find(std::string(destination));
  return it != states_.end() && it->second.down_until > now;
}

TimePoint DomainStateTable::down_until(std::string_view destination, TimePoint now) const {
  auto it = states_.find(std::string(destination));
  if (it == states_.end() || it->second.down_until <= now) return TimePoint{};
  return it->second.down_until;
}

std::vector<std::string> DomainStateTable::reset() {
  std::vector<std::string> was_down;
  for (auto& [k, s] : states_)
    if (s.down_until != TimePoint{}) was_down.push_back(k);
  states_.clear();
  return was_down;
}

void DomainStateTable::reset(std::string_view destination) {
  states_.erase(std::string(destination));
}

std::optional<DomainState> DomainStateTable::state(std::string_view destination) const {
  auto it = states_.find(std::string(destination));
  if (it == states_.end()) return std::nullopt;
  return it->second;
}

std::vector<DomainState> DomainStateTable::snapshot() const {
  std::vector<DomainState> out;
  out.reserve(states_.size());
  for (auto& [k, s] : states_) out.push_back(s);
  return out;
}

}  // namespace mailq
