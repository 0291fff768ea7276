// The segment spool when fdatasync fails (injected through spool::detail::sync_fault_hook):
// what was waiting on the sync is reported failed and stays out of a replay, and appends move
// to a new segment (after a failed sync Linux may report a later one clean without having
// written the pages, so the segment is not trusted again).
#include <catch2/catch.hpp>

#include <cerrno>
#include <cstring>
#include <set>
#include <string>

#include "mailq/spool/layout.h"
#include "support/spool_fixtures.h"
#include "support/sync_fault.h"

using mailq::spool::SegmentStorage;
using namespace mailq::spool_test;  // NOLINT: the shared spool test helpers

namespace {

std::set<std::uint64_t> ids_of(const Loaded& l) {
  std::set<std::uint64_t> ids;
  for (const auto& r : l.records) ids.insert(r.id.value);
  return ids;
}

}  // namespace

TEST_CASE("a failed fdatasync fails the inserts waiting on it and keeps them out of a replay",
          "[segment][sync-failure]") {
  TempDir dir;
  ManualClock clock;
  {
    SegmentStorage s(dir.path(), clock);
    REQUIRE_FALSE(s.open_error().code);
    insert_ok(s, clock, sample_record(1), "body one");
    std::vector<mailq::Result<void>> results;
    {
      FailDataSyncs failing;
      s.insert(sample_record(2), "body two",
               [&](mailq::Result<void> stored) { results.push_back(std::move(stored)); });
      s.insert(sample_record(3), "body three",
               [&](mailq::Result<void> stored) { results.push_back(std::move(stored)); });
      clock.run_pending();
      CHECK(failed_data_syncs == 1);  // one group commit, one sync
    }
    REQUIRE(results.size() == 2);
    CHECK_FALSE(results[0]);
    CHECK_FALSE(results[1]);
    // Each refusal says what failed.
    for (const auto& r : results) {
      CHECK(text_of(r).find("sync") != std::string::npos);
      CHECK(text_of(r).find(std::strerror(EIO)) != std::string::npos);
    }
    CHECK(s.stats().insert_failures == 2);
    CHECK(s.size() == 1);
    CHECK_FALSE(s.read_body(mailq::MessageId{2}));

    // The segment that failed a sync takes nothing more: the next insert starts another.
    insert_ok(s, clock, sample_record(4), "body four");
    CHECK(s.stats().segments_created == 2);
    CHECK(s.segment_of(mailq::MessageId{4}) != s.segment_of(mailq::MessageId{1}));
    CHECK(s.read_body(mailq::MessageId{4}).value() == "body four");
  }
  // A replay finds the records of 2 and 3 in the first segment and their removals after them.
  SegmentStorage again(dir.path(), clock);
  REQUIRE_FALSE(again.open_error().code);
  Loaded l = load_all(again);
  REQUIRE_FALSE(l.ec);
  CHECK(ids_of(l) == std::set<std::uint64_t>{1, 4});
  CHECK(l.report.quarantined == 0);
  CHECK(again.read_body(mailq::MessageId{1}).value() == "body one");
  CHECK(again.read_body(mailq::MessageId{4}).value() == "body four");
}

TEST_CASE("a final state whose sync fails is reported and not kept, in memory or on disk",
          "[segment][sync-failure]") {
  TempDir dir;
  ManualClock clock;
  MessageRecord m = sample_record(7, 2);
  m.recipients[0].state = RecipientState::queued;
  m.recipients[1].state = RecipientState::queued;
  {
    SegmentStorage s(dir.path(), clock);
    REQUIRE_FALSE(s.open_error().code);
    insert_ok(s, clock, m, "body");
    MessageRecord delivered = m;
    delivered.recipients[0].state = RecipientState::delivered;
    delivered.recipients[0].last_reply = Reply(250, "2.0.0", "ok");
    mailq::Result<void> refused;
    {
      FailDataSyncs failing;
      // A final state is synced before update returns.
      refused = s.update(mailq::change_of(delivered, {0}));
      CHECK_FALSE(refused);
      CHECK(failed_data_syncs == 1);
    }
    CHECK(text_of(refused).find("sync") != std::string::npos);
    // Nothing was recorded: the same update is written again when it is made again.
    const auto updates = s.stats().updates;
    REQUIRE(s.update(mailq::change_of(delivered, {0})));
    CHECK(s.stats().updates == updates + 1);
    CHECK(s.stats().segments_created == 2);  // not into the segment that failed
  }
  SegmentStorage again(dir.path(), clock);
  Loaded l = load_all(again);
  REQUIRE_FALSE(l.ec);
  REQUIRE(l.records.size() == 1);
  CHECK(l.records[0].recipients[0].state == RecipientState::delivered);
  CHECK(l.records[0].recipients[1].state == RecipientState::queued);
}
