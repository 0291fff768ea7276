// The file spool's in-memory index (docs/spool-format.md, "The file spool", Memory): the
// recipient count, the body's place in 32-bit fields, the attempt letter of the name as a
// step; updates must stay minimal and lookups, names and offsets right across many changes
// and a reopen.
#include <catch2/catch.hpp>

#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "mailq/spool/file_spool.h"
#include "spool/format.h"
#include "support/spool_fixtures.h"

using mailq::spool::SpoolStorage;
using namespace mailq::spool_test;  // NOLINT: the shared spool test helpers

namespace {

// Bytes of the update record of `change`.
std::uint64_t update_record_size(const mailq::RecordChange& change) {
  std::string bytes;
  mailq::spool::detail::put_update_record(bytes, change);
  return bytes.size();
}

std::string file_name(const MessageRecord& m, char letter) {
  return std::string("Z") + letter + m.id.to_string() + ".00" + (m.held ? ".HELD" : "");
}

}  // namespace

TEST_CASE("file spool - an update of one recipient among many writes only that recipient",
          "[spool][spool-index]") {
  TempDir dir;
  ManualClock clock;
  MessageRecord m = sample_record(7, 40);
  const std::string body = binary_body(100000);  // larger than the first read of a load
  {
    SpoolStorage s(dir.path(), clock);
    insert_ok(s, clock, m, body);
    check_minimal_updates(s, m, update_record_size);
    REQUIRE(s.append_attempt(m.id, sample_attempt(0)));
    CHECK(s.read_body(m.id).value() == body);
  }
  SpoolStorage s(dir.path(), clock);
  Loaded l = load_all(s);
  REQUIRE(l.records.size() == 1);
  require_same(l.records[0], m);
  CHECK(s.read_body(m.id).value() == body);
  auto attempts = s.read_attempts(m.id);
  REQUIRE(attempts.ok());
  REQUIRE(attempts->size() == 1);
  require_same((*attempts)[0], sample_attempt(0));
  // The attempts and held flag were rebuilt from disk: a change of neither writes nothing, a
  // change of one recipient that recipient.
  auto before = s.stats();
  REQUIRE(s.update(mailq::change_of(m)));
  CHECK(s.stats().bytes_written == before.bytes_written);
  m.recipients[0].state = RecipientState::bounced;
  m.recipients[0].last_reply = Reply(550, "5.1.1", "No such user");
  REQUIRE(s.update(mailq::change_of(m, {0})));
  CHECK(s.stats().bytes_written - before.bytes_written ==
        update_record_size(mailq::change_of(m, {0})));
  CHECK(s.stats().synced_updates == 1);
}

TEST_CASE(
    "file spool - a one-recipient message keeps its recipient count across updates and a reopen",
    "[spool][spool-index]") {
  TempDir dir;
  ManualClock clock;
  MessageRecord m = sample_record(9, 1);
  {
    SpoolStorage s(dir.path(), clock);
    insert_ok(s, clock, m, "body");
    m.recipients[0].state = RecipientState::deferred;
    m.recipients[0].attempts = 1;
    m.recipients[0].last_reply = deferral_reply();
    auto before = s.stats();
    REQUIRE(s.update(mailq::change_of(m, {0})));
    CHECK(s.stats().bytes_written - before.bytes_written ==
          update_record_size(mailq::change_of(m, {0})));
    before = s.stats();
    REQUIRE(s.update(mailq::change_between(m, m)));
    CHECK(s.stats().bytes_written == before.bytes_written);
    mailq::RecordChange second = mailq::change_of(m, {0});
    second.recipients[0].index = 1;
    const auto refused = s.update(second);
    CHECK(refused.code() == mailq::errc::bad_state);
    CHECK(text_of(refused) == "update 0000000000009: no recipient 1, stored 1");
  }
  SpoolStorage s(dir.path(), clock);
  Loaded l = load_all(s);
  REQUIRE(l.records.size() == 1);
  require_same(l.records[0], m);
  auto before = s.stats();
  REQUIRE(s.update(mailq::change_of(m)));
  CHECK(s.stats().bytes_written == before.bytes_written);
  m.recipients[0].state = RecipientState::delivered;
  m.recipients[0].last_reply = Reply(250, "2.0.0", "Ok");
  REQUIRE(s.update(mailq::change_of(m, {0})));
  CHECK(s.stats().bytes_written - before.bytes_written ==
        update_record_size(mailq::change_of(m, {0})));
  CHECK(s.stats().synced_updates == 1);
}

TEST_CASE("file spool - the attempt letter stops at A and renames only while it changes",
          "[spool][spool-index]") {
  TempDir dir;
  ManualClock clock;
  MessageRecord m = sample_record(11, 1);
  {
    SpoolStorage s(dir.path(), clock);
    insert_ok(s, clock, m, "body");
    for (std::uint32_t a = 1; a <= 30; ++a) {
      m.attempts = a;
      REQUIRE(s.update(mailq::change_of(m)));
      const char letter = static_cast<char>('Z' - std::min<std::uint32_t>(a, 25));
      REQUIRE(s.file_of(m.id) == "queue/tcp_local/" + file_name(m, letter));
    }
    // ZY .. ZA: 25 renames; attempts 26 to 30 keep the name ZA.
    CHECK(s.stats().renames == 25);
    m.held = true;
    REQUIRE(s.update(mailq::change_of(m)));
    CHECK(s.stats().renames == 26);
    CHECK(s.file_of(m.id) == "queue/tcp_local/" + file_name(m, 'A'));
    CHECK(list_dir(dir / "queue/tcp_local") == std::vector<std::string>{file_name(m, 'A')});
  }
  SpoolStorage s(dir.path(), clock);
  Loaded l = load_all(s);
  REQUIRE(l.records.size() == 1);
  require_same(l.records[0], m);
  CHECK(s.stats().last_load_renamed == 0);
  CHECK(s.file_of(m.id) == "queue/tcp_local/" + file_name(m, 'A'));
  m.held = false;
  m.attempts = 31;
  REQUIRE(s.update(mailq::change_of(m)));
  CHECK(s.file_of(m.id) == "queue/tcp_local/" + file_name(m, 'A'));
  CHECK(list_dir(dir / "queue/tcp_local") == std::vector<std::string>{file_name(m, 'A')});
}

TEST_CASE("file spool - thousands of inserts, changes and removals keep lookups and names right",
          "[spool][spool-index]") {
  TempDir dir;
  ManualClock clock;
  std::map<std::uint64_t, MessageRecord> stored;
  std::map<std::uint64_t, int> attempts;
  std::mt19937_64 rng(7);
  auto body_of = [](std::uint64_t id) { return "body of " + std::to_string(id); };
  auto route_of = [](std::uint64_t id) { return "route" + std::to_string(id % 4); };
  auto check_file = [&](SpoolStorage& s, const MessageRecord& m) {
    const char letter = static_cast<char>('Z' - std::min<std::uint32_t>(m.attempts, 25));
    REQUIRE(s.file_of(m.id) == "queue/" + route_of(m.id.value) + "/" + file_name(m, letter));
  };
  {
    SpoolStorage s(dir.path(), clock);
    std::uint64_t next_id = 1;
    for (int round = 0; round < 5; ++round) {
      // A burst of inserts, one, two or three recipients each, completed in one batch.
      int done = 0;
      for (int i = 0; i < 600; ++i, ++next_id) {
        MessageRecord m = sample_record(next_id, 1 + next_id % 3);
        for (auto& r : m.recipients) r.route = route_of(next_id);
        s.insert(m, body_of(next_id), [&](mailq::Result<void> stored) {
          CHECK_FALSE(stored.code());
          ++done;
        });
        stored[next_id] = m;
      }
      CHECK(s.pending_inserts() == 600);
      clock.run_pending();
      REQUIRE(done == 600);
      CHECK(s.pending_inserts() == 0);
      // Deferrals, holds and attempt rows for some, removals for more.
      std::vector<std::uint64_t> ids;
      for (const auto& kv : stored) ids.push_back(kv.first);
      for (std::uint64_t id : ids) {
        const auto pick = rng() % 6;
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
        } else if (pick == 3) {
          MessageRecord& m = stored[id];
          m.held = !m.held;
          REQUIRE(s.update(mailq::change_of(m)));
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
          check_file(s, stored[id]);
        } else {
          REQUIRE(body.error().code == mailq::errc::not_found);
          REQUIRE(s.file_of(MessageId{id}).empty());
          REQUIRE(s.remove(MessageId{id}).code() == mailq::errc::not_found);
        }
      }
      clock.advance(std::chrono::seconds(5));  // the deferred syncs
    }
  }
  SpoolStorage s(dir.path(), clock);
  Loaded l = load_all(s);
  REQUIRE_FALSE(l.ec);
  CHECK(l.report.problems.empty());
  CHECK(s.stats().last_load_renamed == 0);
  REQUIRE(l.records.size() == stored.size());
  REQUIRE(s.size() == stored.size());
  for (const MessageRecord& r : l.records) {
    REQUIRE(stored.count(r.id.value));
    require_same(r, stored[r.id.value]);
    check_file(s, r);
    REQUIRE(s.read_body(r.id).value() == body_of(r.id.value));
    REQUIRE(s.read_attempts(r.id).value().size() ==
            static_cast<std::size_t>(attempts.count(r.id.value) ? attempts[r.id.value] : 0));
  }
  // The reloaded attempts and held flags: a change of neither writes nothing.
  const auto before = s.stats();
  for (const auto& kv : stored) REQUIRE(s.update(mailq::change_of(kv.second)));
  CHECK(s.stats().bytes_written == before.bytes_written);
  for (const auto& kv : stored) REQUIRE(s.remove(MessageId{kv.first}));
  CHECK(s.size() == 0);
  for (std::size_t i = 0; i < 4; ++i) {
    CHECK(list_dir(dir / ("queue/route" + std::to_string(i))).empty());
  }
}
