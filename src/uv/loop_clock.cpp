// LoopClock: any number of mailq timers on one uv_timer_t plus a check/idle pair.

#include <cstdint>
#include <cstdio>
#include <exception>
#include <map>
#include <string>
#include <unordered_map>
#include <utility>

#include "mailq/uv/loop_clock.h"

namespace mailq {
namespace uv {

struct LoopClock::State {
  uv_loop_t* loop;
  // One timer for the earliest future deadline. Work that is already due runs from the check
  // handle (after the loop polled for I/O) while the idle handle keeps that poll from
  // blocking: with libuv 1.44 a zero timeout started inside a timer callback would run in the
  // same timer pass, and a chain of such posts would never let the loop read a socket.
  uv_timer_t timer;
  uv_check_t check;
  uv_idle_t idle;
  int handles_open = 0;
  bool alive = true;  // false once the LoopClock is destroyed
  bool immediate = false;

  TimerId next_id = 1;
  // Ordered by (due in loop milliseconds, id): equal deadlines run in scheduling order.
  std::map<std::pair<std::uint64_t, TimerId>, std::function<void()>> timers;
  std::unordered_map<TimerId, std::uint64_t> index;
  ErrorReporter own_reporter;  // when the host gave none
  ErrorReporter* reporter = &own_reporter;

  static void on_timer(uv_timer_t* t) { static_cast<State*>(t->data)->dispatch(); }
  static void on_check(uv_check_t* c) { static_cast<State*>(c->data)->dispatch(); }
  static void on_idle(uv_idle_t*) {}
  static void on_closed(uv_handle_t* h) {
    auto* s = static_cast<State*>(h->data);
    if (--s->handles_open == 0) delete s;
  }

  void stop_immediate() {
    if (!immediate) return;
    immediate = false;
    uv_check_stop(&check);
    uv_idle_stop(&idle);
  }

  // Points the handles at the earliest pending timer.
  void rearm() {
    if (!alive) return;
    if (timers.empty()) {
      uv_timer_stop(&timer);
      stop_immediate();
      return;
    }
    const std::uint64_t due = timers.begin()->first.first;
    const std::uint64_t now = uv_now(loop);
    if (due <= now) {
      uv_timer_stop(&timer);
      if (!immediate) {
        immediate = true;
        uv_idle_start(&idle, &State::on_idle);
        uv_check_start(&check, &State::on_check);
      }
    } else {
      stop_immediate();
      uv_timer_start(&timer, &State::on_timer, due - now, 0);
    }
  }

  void report(const std::string& message) {
    // The host's reporter need not outlive the clock: a callback that destroyed the clock
    // before throwing reports to the clock's own.
    ErrorReporter* r = alive ? reporter : &own_reporter;
    r->report(message, std::chrono::system_clock::now());
  }

  void dispatch() {
    const std::uint64_t now = uv_now(loop);
    // Only timers that existed when this pass began: zero-delay work they schedule waits for
    // the next pass (after an I/O poll).
    const TimerId limit = next_id;
    while (!timers.empty()) {
      auto it = timers.begin();
      if (it->first.first > now || it->first.second >= limit) break;
      std::function<void()> fn = std::move(it->second);
      index.erase(it->first.second);
      timers.erase(it);
      try {
        fn();
      } catch (const std::exception& e) {
        report(std::string("mailq LoopClock: timer callback threw: ") + e.what());
      } catch (...) {
        report("mailq LoopClock: timer callback threw a non-standard exception");
      }
      // The callback may have destroyed the clock: the state outlives it (it is freed by the
      // close callbacks), but nothing may be touched beyond this flag.
      if (!alive) return;
    }
    rearm();
  }
};

LoopClock::LoopClock(uv_loop_t* loop, ErrorReporter* reporter) : state_(new State) {
  State* s = state_;
  s->loop = loop;
  if (reporter != nullptr) s->reporter = reporter;
  uv_timer_init(loop, &s->timer);
  uv_check_init(loop, &s->check);
  uv_idle_init(loop, &s->idle);
  s->timer.data = s;
  s->check.data = s;
  s->idle.data = s;
  s->handles_open = 3;
  // A clock with nothing scheduled must not keep uv_run(UV_RUN_DEFAULT) alive: the handles
  // are only active while timers are pending, and inactive handles do not count.
}

LoopClock::~LoopClock() {
  State* s = state_;
  s->alive = false;
  // Destroy the pending callbacks now (they may own resources); moving the map out first
  // keeps it consistent if a destructor of a captured object reenters cancel() or schedule().
  auto timers = std::move(s->timers);
  s->timers.clear();
  s->index.clear();
  timers.clear();
  uv_close(reinterpret_cast<uv_handle_t*>(&s->timer), &State::on_closed);
  uv_close(reinterpret_cast<uv_handle_t*>(&s->check), &State::on_closed);
  uv_close(reinterpret_cast<uv_handle_t*>(&s->idle), &State::on_closed);
}

TimePoint LoopClock::now() const {
  return std::chrono::system_clock::now();
}

TimerId LoopClock::schedule(Duration after, std::function<void()> fn) {
  State* s = state_;
  if (after < Duration{0}) after = Duration{0};
  const TimerId id = s->next_id++;
  if (!s->alive) return id;  // reentered from a destructor during ~LoopClock: never runs
  const std::uint64_t due = uv_now(s->loop) + static_cast<std::uint64_t>(after.count());
  const bool earliest = s->timers.empty() || std::make_pair(due, id) < s->timers.begin()->first;
  s->timers.emplace(std::make_pair(due, id), std::move(fn));
  s->index.emplace(id, due);
  if (earliest) s->rearm();
  return id;
}

void LoopClock::cancel(TimerId id) {
  State* s = state_;
  auto it = s->index.find(id);
  if (it == s->index.end()) return;
  const auto key = std::make_pair(it->second, id);
  const bool earliest = s->timers.begin()->first == key;
  // Move the function out before erasing: its destructor may reenter the clock.
  std::function<void()> fn = std::move(s->timers[key]);
  s->timers.erase(key);
  s->index.erase(it);
  if (earliest) s->rearm();
}

std::size_t LoopClock::pending() const noexcept {
  return state_->timers.size();
}

uv_loop_t* LoopClock::loop() const noexcept {
  return state_->loop;
}

}  // namespace uv
}  // namespace mailq
