// The file spool when fdatasync fails (injected through spool::detail::sync_fault_hook): an
// insert waiting on the sync is reported failed and leaves nothing behind, and an error
// handler that changes the spool while a background sync reports failures is safe.
#include <catch2/catch.hpp>

#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "mailq/spool/file_spool.h"
#include "support/spool_fixtures.h"
#include "support/sync_fault.h"

using mailq::spool::SpoolOptions;
using mailq::spool::SpoolStorage;
using mailq::spool::SyncMethod;
using namespace mailq::spool_test;  // NOLINT: the shared spool test helpers

TEST_CASE("a file spool insert whose fdatasync fails is reported and leaves nothing behind",
          "[spool][sync-failure]") {
  TempDir dir;
  ManualClock clock;
  SpoolOptions opts;
  opts.sync_method = SyncMethod::per_file;
  {
    SpoolStorage s(dir.path(), clock, opts);
    REQUIRE_FALSE(s.open_error().code);
    insert_ok(s, clock, sample_record(1), "body one");
    mailq::Result<void> refused;
    {
      FailDataSyncs failing;
      refused = insert_outcome(s, clock, sample_record(2), "body two");
      CHECK(failed_data_syncs == 1);
    }
    CHECK_FALSE(refused);
    CHECK(text_of(refused) ==
          "sync " + dir.path() + "/tmp/0000000000002.tmp: " + std::strerror(EIO));
    CHECK(s.size() == 1);
    CHECK_FALSE(s.read_body(mailq::MessageId{2}));
    CHECK(list_dir(dir / "tmp").empty());
    insert_ok(s, clock, sample_record(3), "body three");
  }
  SpoolStorage again(dir.path(), clock, opts);
  Loaded l = load_all(again);
  REQUIRE_FALSE(l.ec);
  REQUIRE(l.records.size() == 2);
  CHECK(l.report.quarantined == 0);
  CHECK(again.read_body(mailq::MessageId{1}).value() == "body one");
  CHECK(again.read_body(mailq::MessageId{3}).value() == "body three");
}

TEST_CASE("an error handler may remove messages while a background sync reports failures",
          "[spool][sync-failure]") {
  TempDir dir;
  ManualClock clock;
  SpoolOptions opts;
  opts.sync_method = SyncMethod::per_file;
  std::unique_ptr<SpoolStorage> s;
  std::vector<std::string> errors;
  std::vector<std::error_code> removals;
  opts.on_error = [&](const mailq::Error& e) {
    errors.push_back(e.message);
    // The handler drops every message the first time it is told about a failure.
    if (errors.size() == 1)
      for (std::uint64_t id = 1; id <= 20; ++id)
        removals.push_back(s->remove(mailq::MessageId{id}).code());
  };
  s = std::make_unique<SpoolStorage>(dir.path(), clock, opts);
  REQUIRE_FALSE(s->open_error().code);
  for (std::uint64_t id = 1; id <= 20; ++id)
    insert_ok(*s, clock, sample_record(id, 1), "body " + std::to_string(id));
  // A deferral: written at once, synced later (deferred_sync_delay).
  for (std::uint64_t id = 1; id <= 20; ++id) {
    MessageRecord m = sample_record(id, 1);
    m.attempts = 1;
    m.recipients[0].state = RecipientState::deferred;
    m.recipients[0].attempts = 1;
    m.recipients[0].last_reply = deferral_reply();
    REQUIRE(s->update(mailq::change_of(m, {0})));
  }
  {
    FailDataSyncs failing;
    clock.advance(opts.deferred_sync_delay + mailq::Duration(1));
    CHECK(failed_data_syncs >= 1);
  }
  REQUIRE_FALSE(errors.empty());
  // "sync <dir>/queue/<channel>/ZY<id>.00: Input/output error" (the first deferral's name)
  const std::string prefix = "sync " + dir.path() + "/queue/";
  const std::string suffix = std::string(".00: ") + std::strerror(EIO);
  CHECK(errors[0].compare(0, prefix.size(), prefix) == 0);
  CHECK(errors[0].find("/ZY") != std::string::npos);
  CHECK(errors[0].size() > suffix.size());
  CHECK(errors[0].compare(errors[0].size() - suffix.size(), suffix.size(), suffix) == 0);
  CHECK(removals.size() == 20);
  for (const auto& ec : removals) CHECK_FALSE(ec);
  CHECK(s->size() == 0);
  s.reset();
  SpoolStorage again(dir.path(), clock, opts);
  Loaded l = load_all(again);
  REQUIRE_FALSE(l.ec);
  CHECK(l.records.empty());
}
