#include "support/test_loop.h"

#include <cstdint>

namespace mailq {
namespace test {

namespace {

struct Guard {
  uv_timer_t timer;
  bool fired = false;
};

void on_guard(uv_timer_t* t) {
  auto* g = static_cast<Guard*>(t->data);
  g->fired = true;
  uv_stop(t->loop);
}

// Starts a guard timer on the heap (its memory is freed by its close callback).
Guard* start_guard(uv_loop_t* loop, std::chrono::milliseconds limit, bool ref) {
  auto* g = new Guard;
  uv_timer_init(loop, &g->timer);
  g->timer.data = g;
  uv_timer_start(&g->timer, &on_guard, static_cast<std::uint64_t>(limit.count()), 0);
  if (!ref) uv_unref(reinterpret_cast<uv_handle_t*>(&g->timer));
  return g;
}

void close_guard(Guard* g) {
  uv_close(reinterpret_cast<uv_handle_t*>(&g->timer),
           [](uv_handle_t* h) { delete static_cast<Guard*>(h->data); });
}

}  // namespace

TestLoop::TestLoop() {
  uv_loop_init(&loop_);
}

TestLoop::~TestLoop() {
  if (!closed_) close();
}

bool TestLoop::run_until(const std::function<bool()>& done, std::chrono::milliseconds limit) {
  Guard* g = start_guard(&loop_, limit, true);
  bool ok = done();
  while (!ok && !g->fired) {
    uv_run(&loop_, UV_RUN_ONCE);
    ok = done();
  }
  close_guard(g);
  uv_run(&loop_, UV_RUN_NOWAIT);  // lets the guard's close callback run
  return ok;
}

void TestLoop::run_for(std::chrono::milliseconds d) {
  Guard* g = start_guard(&loop_, d, true);
  while (!g->fired) uv_run(&loop_, UV_RUN_ONCE);
  close_guard(g);
  uv_run(&loop_, UV_RUN_NOWAIT);
}

int TestLoop::close(std::string* leftovers, std::chrono::milliseconds limit) {
  if (closed_) return 0;
  closed_ = true;
  // The guard does not keep the loop alive: uv_run returns as soon as nothing else is
  // active, or the guard stops it when something never ends.
  Guard* g = start_guard(&loop_, limit, false);
  uv_run(&loop_, UV_RUN_DEFAULT);
  close_guard(g);
  uv_run(&loop_, UV_RUN_NOWAIT);
  int r = uv_loop_close(&loop_);
  if (r != 0) {
    std::string names;
    uv_walk(
        &loop_,
        [](uv_handle_t* h, void* arg) {
          auto* out = static_cast<std::string*>(arg);
          if (!out->empty()) *out += ", ";
          *out += uv_handle_type_name(uv_handle_get_type(h));
          if (!uv_is_closing(h)) uv_close(h, nullptr);
        },
        &names);
    if (leftovers) *leftovers = names;
    uv_run(&loop_, UV_RUN_DEFAULT);
    uv_loop_close(&loop_);
  }
  return r;
}

}  // namespace test
}  // namespace mailq
