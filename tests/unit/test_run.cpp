// A destination run (src/core/delivery/run.h): slow start and the host list.
#include <catch2/catch.hpp>

#include "core/delivery/run.h"

using namespace mailq;
using namespace mailq::detail;

namespace {

std::shared_ptr<DestinationRun> run_with(std::size_t jobs, std::uint32_t max_connections) {
  auto route = std::make_shared<Route>();
  route->max_connections = max_connections;
  auto run = std::make_shared<DestinationRun>();
  run->destination =
      std::make_shared<Destination>(Destination{"example.com", "example.com", route});
  for (std::size_t i = 0; i < jobs; ++i)
    run->jobs.push_back(Job{MessageId{i + 1}, run->destination, {0}});
  return run;
}

struct NoOwner final : SessionOwner {
  void on_connect_failed(Session&, std::error_code) override {}
  void on_session_event(Session&, SmtpEvent&&) override {}
  void on_session_closed(Session&) override {}
};

}  // namespace

TEST_CASE("run: one session until one is usable, then one per four jobs up to the route's limit",
          "[delivery][run]") {
  ManualClock clock;
  NoOwner owner;
  auto run = run_with(40, 5);
  CHECK(run->sessions_wanted() == 1);  // nothing usable yet: one host at a time
  auto s = std::make_shared<Session>(owner, clock, run, Target{"mx", 10, "127.0.0.1", 25},
                                     SmtpClientOptions{}, false);
  run->sessions.push_back(s);
  s->ready = true;
  CHECK(run->sessions_wanted() == 5);  // 40 jobs want 10, the route allows 5
  run->parallel_cap = 2;               // the destination refused a third
  CHECK(run->sessions_wanted() == 2);
  run->jobs.resize(3);
  CHECK(run->sessions_wanted() == 1);
  run->jobs.clear();
  CHECK(run->sessions_wanted() == 0);
  CHECK(run->live_sessions() == 1);
  s->dead = true;
  CHECK(run->live_sessions() == 0);
  run->forget(s.get());
  CHECK(run->sessions.empty());
}

TEST_CASE("run: a failed host is skipped only when it is the next one", "[delivery][run]") {
  auto run = run_with(1, 10);
  run->targets = {{"a", 10, "127.0.0.1", 25}, {"a", 10, "127.0.0.1", 26}, {"b", 20, "::1", 25}};
  run->skip(Target{"b", 20, "::1", 25}, true);
  CHECK(run->next_target == 0);
  run->skip(Target{"a", 10, "127.0.0.1", 26}, true);  // another port: not the next one
  CHECK(run->next_target == 0);
  run->skip(Target{"a", 10, "127.0.0.1", 26}, false);  // by address only
  CHECK(run->next_target == 1);
  run->skip(Target{"a", 10, "127.0.0.1", 26}, true);
  CHECK(run->next_target == 2);
  CHECK_FALSE(run->out_of_targets());
  run->skip(Target{"b", 20, "::1", 25}, true);
  CHECK(run->out_of_targets());
}
