#include <catch2/catch.hpp>

#include <vector>

#include "mailq/clock.h"

using namespace std::chrono_literals;
using mailq::Duration;
using mailq::ManualClock;

TEST_CASE("ManualClock runs timers at their own instant, in order", "[clock]") {
  ManualClock clock;
  const auto start = clock.now();
  std::vector<int> order;
  std::vector<Duration> seen_at;
  clock.schedule(Duration(30s), [&] {
    order.push_back(2);
    seen_at.push_back(std::chrono::duration_cast<Duration>(clock.now() - start));
  });
  clock.schedule(Duration(10s), [&] {
    order.push_back(1);
    seen_at.push_back(std::chrono::duration_cast<Duration>(clock.now() - start));
  });
  clock.advance(Duration(20s));
  REQUIRE(order == std::vector<int>{1});
  clock.advance(Duration(20s));
  REQUIRE(order == std::vector<int>{1, 2});
  REQUIRE(seen_at == std::vector<Duration>{Duration(10s), Duration(30s)});
  REQUIRE(clock.now() - start == Duration(40s));
}

TEST_CASE("ManualClock: equal deadlines run in scheduling order, cancel works", "[clock]") {
  ManualClock clock;
  std::vector<int> order;
  clock.schedule(Duration(0), [&] { order.push_back(1); });
  auto id = clock.schedule(Duration(0), [&] { order.push_back(99); });
  clock.schedule(Duration(0), [&] {
    order.push_back(2);
    // Work posted from a callback runs in the same run_pending.
    clock.schedule(Duration(0), [&] { order.push_back(3); });
  });
  clock.cancel(id);
  clock.cancel(id);  // twice is harmless
  clock.run_pending();
  REQUIRE(order == std::vector<int>{1, 2, 3});
  REQUIRE(clock.pending() == 0);
}

TEST_CASE("ManualClock: a timer scheduled inside advance fires within the same advance",
          "[clock]") {
  ManualClock clock;
  int fired = 0;
  clock.schedule(Duration(1s), [&] { clock.schedule(Duration(1s), [&] { ++fired; }); });
  clock.advance(Duration(5s));
  REQUIRE(fired == 1);
}
