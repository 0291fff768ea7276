#include <catch2/catch.hpp>

#include "mailq/domain_state.h"

using namespace std::chrono_literals;
using namespace mailq;

TEST_CASE("DomainStateTable marks a destination down after the threshold, for 15 minutes",
          "[domain_state][seed000]") {
  DomainStateTable t;  // defaults: 5 failures, 15 minutes
  REQUIRE(t.config().down_interval == Duration(15min));
  TimePoint now{std::chrono::hours(1000)};
  for (int i = 0; i < 4; ++i) REQUIRE_FALSE(t.record_failure("example.com", now, "refused"));
  REQUIRE_FALSE(t.is_down("example.com", now));
  REQUIRE(t.record_failure("example.com", now, "refused"));
  REQUIRE(t.is_down("example.com", now));
  REQUIRE(t.down_until("example.com", now) == now + Duration(15min));
  REQUIRE(t.is_down("example.com", now + Duration(15min) - Duration(1)));
  REQUIRE_FALSE(t.is_down("example.com", now + Duration(15min)));
  REQUIRE_FALSE(t.is_down("other.example", now));
}

TEST_CASE("DomainStateTable: a success clears the count, failures must be consecutive",
          "[domain_state]") {
  DomainStateTable t({3, Duration(10min)});
  TimePoint now{std::chrono::hours(1)};
  t.record_failure("d", now, "x");
  t.record_failure("d", now, "x");
  t.record_success("d");
  REQUIRE_FALSE(t.record_failure("d", now, "x"));
  REQUIRE_FALSE(t.record_failure("d", now, "x"));
  REQUIRE(t.record_failure("d", now, "x"));
}

TEST_CASE("DomainStateTable: after the mark expires one more failure marks it down again",
          "[domain_state]") {
  DomainStateTable t({3, Duration(15min)});
  TimePoint now{std::chrono::hours(1)};
  for (int i = 0; i < 3; ++i) t.record_failure("d", now, "x");
  REQUIRE(t.is_down("d", now));
  // Failures of attempts already in flight do not extend the mark.
  REQUIRE_FALSE(t.record_failure("d", now + Duration(1min), "x"));
  REQUIRE(t.down_until("d", now) == now + Duration(15min));
  TimePoint later = now + Duration(16min);
  REQUIRE_FALSE(t.is_down("d", later));
  REQUIRE(t.record_failure("d", later, "x"));
  REQUIRE(t.down_until("d", later) == later + Duration(15min));
}

TEST_CASE("DomainStateTable::reset clears every mark (what a restart does)",
          "[domain_state][seed000]") {
  DomainStateTable t({1, Duration(15min)});
  TimePoint now{std::chrono::hours(1)};
  t.record_failure("a", now, "x");
  t.record_failure("b", now, "x");
  auto was = t.reset();
  std::sort(was.begin(), was.end());
  REQUIRE(was == std::vector<std::string>{"a", "b"});
  REQUIRE_FALSE(t.is_down("a", now));
  REQUIRE(t.snapshot().empty());
}
