// events.h: the ErrorReporter every part reports through (rate limit, counts, a handler or a
// sink that throws), and MemorySink. FanoutSink's own tests are with the log's (test_log.cpp).
#include <catch2/catch.hpp>

#include <stdexcept>
#include <string>
#include <vector>

#include "mailq/events.h"

using namespace mailq;

namespace {

const TimePoint kT0 = TimePoint(std::chrono::hours(24 * 365 * 50));

struct ThrowingSink final : EventSink {
  bool standard = true;
  void on_event(const Event&) override {
    if (standard) throw std::runtime_error("disk full");
    throw 42;
  }
};

}  // namespace

TEST_CASE(
    "ErrorReporter: one report per interval, the ones held back counted into the next, every "
    "problem counted",
    "[events][reporter]") {
  std::vector<std::string> heard;
  ErrorReporter r([&](const std::string& m) { heard.push_back(m); });
  r.report("first", kT0);
  r.report("second", kT0 + std::chrono::seconds(1));
  r.report("third", kT0 + kErrorReportInterval - std::chrono::milliseconds(1));
  CHECK(heard == std::vector<std::string>{"first"});
  r.report("fourth", kT0 + kErrorReportInterval);
  CHECK(heard == std::vector<std::string>{"first", "fourth (2 more since the last report)"});
  r.report("fifth", kT0 + 3 * kErrorReportInterval);
  CHECK(heard.back() == "fifth");  // nothing was held back since
  CHECK(r.problems() == 5);
}

TEST_CASE("ErrorReporter: a handler that throws does not unwind the caller", "[events][reporter]") {
  int calls = 0;
  ErrorReporter r([&](const std::string&) {
    ++calls;
    throw std::runtime_error("the handler's own trouble");
  });
  CHECK_NOTHROW(r.report("trouble", kT0));
  CHECK(calls == 1);
  CHECK(r.problems() == 1);
}

TEST_CASE("ErrorReporter::deliver: what a sink throws becomes a report, never an exception",
          "[events][reporter]") {
  std::vector<std::string> heard;
  ErrorReporter r([&](const std::string& m) { heard.push_back(m); });
  ThrowingSink sink;
  Event ev;
  ev.kind = EventKind::notice;
  CHECK_NOTHROW(r.deliver(&sink, ev, kT0));
  sink.standard = false;
  CHECK_NOTHROW(r.deliver(&sink, ev, kT0 + kErrorReportInterval));
  CHECK(heard == std::vector<std::string>{"mailq: the event sink threw: disk full",
                                          "mailq: the event sink threw: unknown exception"});
  CHECK_NOTHROW(r.deliver(nullptr, ev, kT0));  // no sink: nothing
  MemorySink memory;
  r.deliver(&memory, ev, kT0);
  REQUIRE(memory.events.size() == 1);
  CHECK(memory.events[0].kind == EventKind::notice);
}
