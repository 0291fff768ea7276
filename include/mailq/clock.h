// mailq — time, injected.
//
// Every delay in mailq (queue cycle, retry, down period, SMTP timeouts, lifetime) goes through
// a `Clock`, so tests run 15 minutes and 5 days in microseconds with `ManualClock`, and the
// real engine runs on libuv timers (`mailq::uv::LoopClock`, in the libuv adapter).
#pragma once

#include <functional>
#include <map>
#include <utility>

#include "mailq/time.h"

namespace mailq {

/// Time source and timer service, single-threaded.
///
/// Callbacks run on the clock's thread (the loop thread), never from inside `schedule`
/// itself: a timer with a zero delay is the way to "post" work to run after the current call
/// stack unwinds. A callback may schedule and cancel timers, including its own.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual TimePoint now() const = 0;
  /// Runs `fn` once, `after` from now (zero: as soon as the loop gets control). Never
  /// returns `kNoTimer`.
  virtual TimerId schedule(Duration after, std::function<void()> fn) = 0;
  /// Cancels a pending timer; no-op when it already ran or was cancelled.
  virtual void cancel(TimerId id) = 0;
};

/// A clock that moves only when told to. Timers due at the same instant run in the order
/// they were scheduled.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(TimePoint start = TimePoint{std::chrono::hours(24 * 365 * 50)})
      : now_(start) {}

  TimePoint now() const override { return now_; }
  TimerId schedule(Duration after, std::function<void()> fn) override;
  void cancel(TimerId id) override;

  /// Moves time forward by `d`, running every timer that falls due on the way (each at its
  /// own instant, in order), including timers scheduled by those callbacks.
  void advance(Duration d);
  /// Runs the timers due now (zero-delay work), repeatedly, until none is due.
  void run_pending() { advance(Duration{0}); }
  /// Number of pending timers.
  std::size_t pending() const noexcept { return timers_.size(); }
  /// Time of the earliest pending timer, or `TimePoint::max()`.
  TimePoint next_deadline() const;

 private:
  TimePoint now_;
  TimerId next_id_ = 1;
  // Ordered by (due time, id) so that equal deadlines run in scheduling order.
  std::map<std::pair<TimePoint, TimerId>, std::function<void()>> timers_;
  std::map<TimerId, TimePoint> index_;
};

}  // namespace mailq
