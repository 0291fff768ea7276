#include "mailq/clock.h"

namespace mailq {

TimerId ManualClock::schedule(Duration after, std::function<void()> fn) {
  if (after < Duration{0}) after = Duration{0};
  TimerId id = next_id_++;
  TimePoint due = now_ + after;
  timers_.emplace(std::make_pair(due, id), std::move(fn));
  index_.emplace(id, due);
  return id;
}

void ManualClock::cancel(TimerId id) {
  auto it = index_.find(id);
  if (it == index_.end()) return;
  timers_.erase(std::make_pair(it->second, id));
  index_.erase(it);
}

TimePoint ManualClock::next_deadline() const {
  return timers_.empty() ? TimePoint::max() : timers_.begin()->first.first;
}

void ManualClock::advance(Duration d) {
  const TimePoint target = now_ + d;
  // Each timer runs at its own instant; callbacks may add timers that are due before target.
  while (!timers_.empty() && timers_.begin()->first.first <= target) {
    auto it = timers_.begin();
    if (it->first.first > now_) now_ = it->first.first;
    std::function<void()> fn = std::move(it->second);
    index_.erase(it->first.second);
    timers_.erase(it);
    fn();
  }
  if (target > now_) now_ = target;
}

}  // namespace mailq
