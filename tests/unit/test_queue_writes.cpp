// The Queue's writes to its Storage: a state change or a removal the storage refuses is kept
// (merged with the message's later changes), reported once per backoff step, and written
// again until the storage has it; a storage that never recovers leaves the queue's state in
// memory and the message in the storage, delivered again after a restart (at least once).
#include "engine_fixture.h"

using namespace mailq;
using namespace mailq::test;

namespace {

const std::error_code kFailure = make_error_code(errc::storage_failure);

// The record the storage holds (nullopt when it holds none).
std::optional<MessageRecord> stored(MemoryStorage& storage, MessageId id) {
  std::optional<MessageRecord> out;
  REQUIRE(storage.load(
      [&](MessageRecord&& m) {
        if (m.id == id) out = std::move(m);
      },
      nullptr));
  return out;
}

// The notices about storage writes, in order.
std::vector<std::string> storage_notices(const Engine& e) {
  std::vector<std::string> out;
  for (const auto& ev : e.events.events) {
    if (ev.kind != EventKind::notice) continue;
    for (const auto& d : ev.diagnostic)
      if (d.rfind("storage: ", 0) == 0) out.push_back(d);
  }
  return out;
}

// Starts delivery and sends a message to `to`, whose later@example.com the server defers
// (450), after making the storage refuse the next `failing` updates; runs the first attempt.
MessageId send_deferred(Engine& e, const std::vector<std::string>& to, std::size_t failing) {
  example_com(e);
  e.transport.at("127.0.0.10").script.rcpt_replies["later@example.com"] = "450 4.2.0 greylisted";
  e.storage.fail_updates(failing, kFailure);
  e.deliverer->start();
  const MessageId id = e.send("s@example.org", to);
  e.settle();
  return id;
}

struct Reports {
  std::vector<std::string> lines;
  QueueConfig config() {
    QueueConfig qc = deterministic_queue_config();
    qc.error_handler = [this](const std::string& m) { lines.push_back(m); };
    return qc;
  }
};

}  // namespace

TEST_CASE(
    "a state change the storage refuses is written again with a backoff until it is "
    "recorded, each failure reported once",
    "[queue][storage]") {
  Reports reports;
  Engine e({3, Duration(15min)}, reports.config());
  const MessageId id = send_deferred(e, {"good@example.com", "later@example.com"}, 3);

  // The queue moved on; the storage did not record it yet, and the queue said so.
  CHECK(e.rcpt(id, 0).state == RecipientState::delivered);
  CHECK(e.rcpt(id, 1).state == RecipientState::deferred);
  REQUIRE(stored(e.storage, id));
  CHECK(stored(e.storage, id)->recipients[0].state == RecipientState::queued);
  CHECK(e.queue->stats().unwritten == 1);
  const std::string why = "storage: could not record the new state of " + id.to_string() +
                          ": update " + id.to_string() + ": storage failure; trying again in ";
  CHECK(storage_notices(e) == std::vector<std::string>{why + "1 s"});
  REQUIRE(reports.lines.size() == 1);
  CHECK(reports.lines[0] == "mailq: " + why + "1 s");

  // Refused twice more (1 s, then 2 s later), recorded at the third retry (4 s later).
  e.clock.advance(Duration(1s));
  CHECK(storage_notices(e).size() == 2);
  e.clock.advance(Duration(2s));
  CHECK(storage_notices(e) == std::vector<std::string>{why + "1 s", why + "2 s", why + "4 s"});
  CHECK(e.queue->stats().unwritten == 1);
  e.clock.advance(Duration(4s));
  CHECK(e.queue->stats().unwritten == 0);
  auto m = stored(e.storage, id);
  REQUIRE(m);
  CHECK(m->attempts == 1);
  CHECK(m->recipients[0].state == RecipientState::delivered);
  CHECK(m->recipients[0].last_reply.code == 250);
  CHECK(m->recipients[1].state == RecipientState::deferred);
  CHECK(m->recipients[1].attempts == 1);
  CHECK(m->recipients[1].last_reply.to_string() == "450 4.2.0 greylisted");
  CHECK(m->recipients[1].next_attempt == e.rcpt(id, 1).next_attempt);
  e.clock.advance(Duration(5min));
  CHECK(storage_notices(e).size() == 3);  // nothing more to report
  CHECK(reports.lines.size() >= 1);       // the reporter itself holds back repeats

  // Nothing was lost: the deferred recipient goes at its retry time, and only it.
  e.transport.at("127.0.0.10").script.rcpt_replies.clear();
  e.transport.received.clear();
  e.clock.advance(Duration(15min));
  REQUIRE(e.transport.received.size() == 1);
  CHECK(e.transport.received[0].rcpt_to == std::vector<std::string>{"later@example.com"});
  CHECK(e.queue->size() == 0);
  CHECK_FALSE(stored(e.storage, id));
}

TEST_CASE(
    "a change made while an earlier one is unwritten carries it: both are recorded at "
    "once, before the retry",
    "[queue][storage]") {
  Engine e;  // no Deliverer: the jobs are taken and completed here
  example_com(e);
  e.storage.fail_updates(2, kFailure);
  const MessageId id = e.send("s@example.org", {"a@example.com", "b@example.com"});
  auto outcome = [](std::size_t index, Reply reply) {
    RecipientOutcome o;
    o.index = index;
    o.reply = std::move(reply);
    return o;
  };
  const Reply later(451, "4.3.0", "try later");
  auto jobs = e.port().take_message(id);
  REQUIRE(jobs.size() == 1);
  e.port().complete(jobs[0], {outcome(0, later), outcome(1, later)}, true);
  CHECK(stored(e.storage, id)->recipients[0].state == RecipientState::queued);
  REQUIRE(storage_notices(e).size() == 1);

  // A second attempt within the first backoff step (a flush): a@ is delivered, b@ deferred
  // again. Its write carries the first change too; refused, and not reported twice.
  REQUIRE(e.port().make_all_due() == 1);
  jobs = e.port().take_due("example.com", e.clock.now(), 10);
  REQUIRE(jobs.size() == 1);
  e.port().complete(jobs[0], {outcome(0, Reply(250, "2.0.0", "Ok")), outcome(1, later)}, true);
  CHECK(e.rcpt(id, 0).state == RecipientState::delivered);
  CHECK(e.rcpt(id, 1).attempts == 2);
  CHECK(stored(e.storage, id)->attempts == 0);
  CHECK(storage_notices(e).size() == 1);

  // An operator's hold is written with everything still unwritten: the storage has it all.
  REQUIRE(e.queue->hold(id));
  CHECK(e.queue->stats().unwritten == 0);
  auto m = stored(e.storage, id);
  REQUIRE(m);
  CHECK(m->held);
  CHECK(m->attempts == 2);
  CHECK(m->recipients[0].state == RecipientState::delivered);
  CHECK(m->recipients[1].state == RecipientState::deferred);
  CHECK(m->recipients[1].attempts == 2);
  e.clock.advance(Duration(1min));
  CHECK(storage_notices(e).size() == 1);
}

TEST_CASE(
    "a removal the storage refuses is retried: the message does not stay behind in the "
    "storage",
    "[queue][storage]") {
  Engine e;
  example_com(e);
  e.storage.fail_removes(2, kFailure);
  e.deliverer->start();
  const MessageId id = e.send("s@example.org", {"good@example.com"});
  e.settle();
  CHECK(e.queue->find(id) == std::nullopt);  // delivered: done for the queue
  CHECK(stored(e.storage, id));              // not yet for the storage
  CHECK(e.queue->stats().unwritten == 1);
  const std::string why = "storage: could not record the removal of " + id.to_string() +
                          ": remove " + id.to_string() + ": storage failure; trying again in ";
  CHECK(storage_notices(e) == std::vector<std::string>{why + "1 s"});
  e.clock.advance(Duration(1s));
  e.clock.advance(Duration(2s));
  CHECK(storage_notices(e) == std::vector<std::string>{why + "1 s", why + "2 s"});
  CHECK_FALSE(stored(e.storage, id));
  CHECK(e.queue->stats().unwritten == 0);
}

TEST_CASE(
    "a storage that never recovers: the report repeats at the backoff, the queue keeps "
    "its state, and a restart from the storage delivers again",
    "[queue][storage]") {
  Engine e;
  const MessageId id = send_deferred(e, {"later@example.com"}, SIZE_MAX);
  // Three minutes: the retries double up to a minute, one report each.
  for (int i = 0; i < 185; ++i) e.clock.advance(Duration(1s));
  std::vector<std::string> waits;
  for (const auto& n : storage_notices(e)) waits.push_back(n.substr(n.rfind(" in ") + 4));
  CHECK(waits == std::vector<std::string>{"1 s", "2 s", "4 s", "8 s", "16 s", "32 s", "60 s",
                                          "60 s", "60 s"});
  // The queue keeps what happened; the storage still holds the message as it was.
  CHECK(e.rcpt(id).state == RecipientState::deferred);
  CHECK(e.rcpt(id).attempts == 1);
  CHECK(e.queue->stats().unwritten == 1);
  REQUIRE(stored(e.storage, id));
  CHECK(stored(e.storage, id)->recipients[0].state == RecipientState::queued);

  // A restart recovers the message from the storage and delivers it (again: at least once).
  e.deliverer.reset();
  e.queue.reset();
  e.queue = std::make_unique<Queue>(e.storage, e.routes, e.clock, &e.events,
                                    deterministic_queue_config());
  RecoveryReport report;
  REQUIRE(e.queue->recover(&report));
  CHECK(report.recovered == 1);
  DelivererConfig dc;
  dc.domain_state = {3, Duration(15min)};
  e.deliverer = std::make_unique<Deliverer>(*e.queue, e.resolver, e.transport, dc);
  e.transport.at("127.0.0.10").script.rcpt_replies.clear();
  e.transport.received.clear();
  e.deliverer->start();
  e.settle();
  REQUIRE(e.transport.received.size() == 1);
  CHECK(e.transport.received[0].rcpt_to == std::vector<std::string>{"later@example.com"});
  CHECK(e.queue->size() == 0);
  CHECK_FALSE(stored(e.storage, id));
}

TEST_CASE("a queue given an ErrorReporter reports through it, not through its own error handler",
          "[queue][storage]") {
  std::vector<std::string> direct, shared;
  ErrorReporter reporter([&](const std::string& m) { shared.push_back(m); });
  QueueConfig qc = deterministic_queue_config();
  qc.error_handler = [&](const std::string& m) { direct.push_back(m); };
  qc.error_reporter = &reporter;
  Engine e({3, Duration(15min)}, qc);
  const MessageId id = send_deferred(e, {"good@example.com", "later@example.com"}, 1);
  REQUIRE(shared.size() == 1);
  CHECK(shared[0].rfind("mailq: storage: could not record the new state of " + id.to_string(), 0) ==
        0);
  CHECK(direct.empty());
}
