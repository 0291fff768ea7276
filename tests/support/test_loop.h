// A libuv loop for integration tests: runs until a condition holds (bounded), and checks at
// the end that every handle was closed (uv_loop_close succeeds).
#pragma once

#include <uv.h>

#include <chrono>
#include <functional>
#include <string>

namespace mailq {
namespace test {

class TestLoop {
 public:
  TestLoop();
  /// Closes the loop if `close()` was not called (closing leftover handles by force).
  ~TestLoop();
  TestLoop(const TestLoop&) = delete;
  TestLoop& operator=(const TestLoop&) = delete;

  uv_loop_t* get() noexcept { return &loop_; }

  /// Runs the loop until `done()` is true; false when `limit` passed first.
  bool run_until(const std::function<bool()>& done,
                 std::chrono::milliseconds limit = std::chrono::seconds(30));
  /// Runs the loop for `d` (for "nothing else happens" checks, never for timing).
  void run_for(std::chrono::milliseconds d);
  /// Runs the loop until no handle is left (bounded by `limit`), then uv_loop_close. Returns
  /// uv_loop_close's result (0 = every handle was closed). `leftovers` lists the handle types
  /// still open when it failed; they are then closed by force.
  int close(std::string* leftovers = nullptr,
            std::chrono::milliseconds limit = std::chrono::seconds(30));

 private:
  uv_loop_t loop_;
  bool closed_ = false;
};

}  // namespace test
}  // namespace mailq
