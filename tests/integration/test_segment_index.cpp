// The segment spool's in-memory index (docs/spool-format.md, "The segment spool", Memory):
// the recipient count, attempts and held flag, the 'u'/'a' locations kept apart; all of it
// must keep updates minimal and lookups and accounting right across many changes.
#include <catch2/catch.hpp>

#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "mailq/spool/layout.h"
#include "spool/format.h"
#include "support/spool_fixtures.h"

using mailq::spool::SegmentStorage;
using namespace mailq::spool_test;  // NOLINT: the shared spool test helpers

namespace {

// Bytes of the 'u' record of `change`.
std::uint64_t update_record_size(const mailq::RecordChange& change) {
  std::string payload;
  mailq::spool::detail::put_update_payload(payload, change);
  return mailq::spool::detail::kRecordOverhead + 8 + payload.size();
}

}  // namespace

TEST_CASE("an update of one recipient among many writes only that recipient, across a reopen",
          "[segment]") {
  TempDir dir;
  ManualClock clock;
  MessageRecord m = sample_record(7, 40);
  {
    SegmentStorage s(dir.path(), clock);
    insert_ok(s, clock, m, "body");
    check_minimal_updates(s, m, update_record_size);
  }
  SegmentStorage s(dir.path(), clock);
  Loaded l = load_all(s);
  REQUIRE(l.records.size() == 1);
  require_same(l.records[0], m);
  // The attempts and held flag were rebuilt from disk: a change of neither writes nothing, a
  // change of one recipient that recipient.
  auto before = s.stats();
  REQUIRE(s.update(mailq::change_of(m)));
  CHECK(s.stats().bytes_written == before.bytes_written);
  m.recipients[0].state = RecipientState::bounced;
  m.recipients[0].last_reply = Reply(550, "5.1.1", "No such user");
  REQUIRE(s.update(mailq::change_of(m, {0})));
  // (Appends after a load go to a new segment, which starts with its preamble.)
  CHECK(s.stats().segments_created - before.segments_created == 1);
  CHECK(s.stats().bytes_written - before.bytes_written ==
        mailq::spool::detail::kPreambleSize + update_record_size(mailq::change_of(m, {0})));
  CHECK(s.stats().synced_updates == 1);
}

TEST_CASE("thousands of inserts, changes and removals keep lookups and live bytes right",
          "[segment]") {
  TempDir dir;
  ManualClock clock;
  mailq::spool::SegmentOptions options;
  options.segment_size = 256 << 10;           // several segments
  options.compact_below_live_fraction = 0.0;  // compaction has its own tests
  std::map<std::uint64_t, MessageRecord> stored;
  std::map<std::uint64_t, int> attempts;
  std::mt19937_64 rng(7);
  auto body_of = [](std::uint64_t id) { return "body of " + std::to_string(id); };
  {
    SegmentStorage s(dir.path(), clock, options);
    std::uint64_t next_id = 1;
    for (int round = 0; round < 6; ++round) {
      // A burst of inserts, one, two or three recipients each, completed in one batch.
      int done = 0;
      for (int i = 0; i < 700; ++i, ++next_id) {
        MessageRecord m = sample_record(next_id, 1 + next_id % 3);
        s.insert(m, body_of(next_id), [&](mailq::Result<void> stored) {
          CHECK_FALSE(stored.code());
          ++done;
        });
        stored[next_id] = m;
      }
      clock.run_pending();
      REQUIRE(done == 700);
      // Deferrals and attempt rows for some, removals for more.
      std::vector<std::uint64_t> ids;
      for (const auto& kv : stored) ids.push_back(kv.first);
      for (std::uint64_t id : ids) {
        const auto pick = rng() % 5;
        if (pick < 2) {
          REQUIRE(s.remove(MessageId{id}));
          stored.erase(id);
          attempts.erase(id);
        } else if (pick == 2) {
          MessageRecord& m = stored[id];
          m.attempts++;
          m.recipients.back().state = RecipientState::deferred;
          m.recipients.back().attempts++;
          m.recipients.back().last_reply = deferral_reply();
          REQUIRE(s.update(mailq::change_of(m, {m.recipients.size() - 1})));
          REQUIRE(s.append_attempt(m.id, sample_attempt(attempts[id]++)));
        }
      }
      REQUIRE(s.size() == stored.size());
      for (std::uint64_t id : ids) {
        auto body = s.read_body(MessageId{id});
        if (stored.count(id)) {
          REQUIRE(body.ok());
          REQUIRE(*body == body_of(id));
          REQUIRE(s.read_attempts(MessageId{id}).value().size() ==
                  static_cast<std::size_t>(attempts.count(id) ? attempts[id] : 0));
        } else {
          REQUIRE(body.error().code == mailq::errc::not_found);
          REQUIRE(s.segment_of(MessageId{id}).empty());
        }
      }
    }
    REQUIRE(s.stats().segments_created > 2);
  }
  SegmentStorage s(dir.path(), clock, options);
  Loaded l = load_all(s);
  REQUIRE_FALSE(l.ec);
  CHECK(l.report.problems.empty());
  REQUIRE(l.records.size() == stored.size());
  for (const MessageRecord& r : l.records) {
    REQUIRE(stored.count(r.id.value));
    require_same(r, stored[r.id.value]);
    REQUIRE(s.read_attempts(r.id).value().size() ==
            static_cast<std::size_t>(attempts.count(r.id.value) ? attempts[r.id.value] : 0));
  }
  // The live-bytes accounting of the load matches the one kept while running: removing
  // every message leaves none.
  CHECK(s.stats().live_bytes > 0);
  for (const auto& kv : stored) REQUIRE(s.remove(MessageId{kv.first}));
  CHECK(s.size() == 0);
  CHECK(s.stats().live_bytes == 0);
}
