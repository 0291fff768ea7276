// mailq — the libuv adapter's clock: `LoopClock`, a `mailq::Clock` on a `uv_loop_t` that the
// host owns (CMake target `mailq::uv`).
//
// Threading: single-threaded. Every member function must be called on the thread that runs
// the loop, and every timer callback runs on that thread from inside `uv_run`, never from
// inside the call that scheduled it.
//
// Ownership and shutdown: the host owns the loop. A LoopClock must be destroyed before the
// loop is closed, and the loop must run once more afterwards (`uv_run(loop, UV_RUN_DEFAULT)`
// returns when everything is closed): libuv frees a handle's memory only in its close
// callback. `uv_loop_close` then succeeds: no handle is left behind.
//
// Exceptions: an exception thrown by a timer callback is caught at the libuv boundary (it
// must not unwind through C frames) and reported to the clock's `ErrorReporter`; the loop
// goes on.
#pragma once

#include <uv.h>

#include <cstddef>
#include <functional>

#include "mailq/clock.h"
#include "mailq/events.h"

namespace mailq {
namespace uv {

/// A `mailq::Clock` on a libuv loop.
///
/// `now()` is the wall clock (`std::chrono::system_clock`), because that is what log lines,
/// DSNs and the spool record; timers run on the loop's monotonic time (`uv_now`), so a wall
/// clock step does not fire or delay them. As with libuv timers, a delay counts from the
/// loop's cached time of the current iteration.
///
/// Timers due at the same time run in the order they were scheduled. Zero-delay work
/// scheduled from inside a timer callback runs after the loop has polled for I/O once, so a
/// chain of posts cannot starve the sockets.
///
/// Internally one `uv_timer_t` (for future deadlines) plus a `uv_check_t` / `uv_idle_t` pair
/// (for work that is already due) serve any number of timers.
class LoopClock final : public Clock {
 public:
  /// `loop` must outlive the clock (and the close callbacks the destructor starts).
  /// `reporter` receives the exceptions escaping a timer callback ("mailq LoopClock: timer
  /// callback threw: ..."), rate limited; it must outlive the clock. Null: a reporter of the
  /// clock's own, to standard error.
  explicit LoopClock(uv_loop_t* loop, ErrorReporter* reporter = nullptr);
  /// Cancels every pending timer (their functions are destroyed, not run) and closes the
  /// handles. Allowed from inside one of the clock's own callbacks.
  ~LoopClock() override;
  LoopClock(const LoopClock&) = delete;
  LoopClock& operator=(const LoopClock&) = delete;

  TimePoint now() const override;
  /// Negative delays count as zero.
  TimerId schedule(Duration after, std::function<void()> fn) override;
  void cancel(TimerId id) override;

  /// Number of pending timers.
  std::size_t pending() const noexcept;
  uv_loop_t* loop() const noexcept;

 private:
  struct State;
  State* state_;  // freed by the last handle close callback, not by the destructor
};

}  // namespace uv
}  // namespace mailq
