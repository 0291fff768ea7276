// The file spool: format round trip, updates, renames, group commit, recovery of damaged
// files, disk full / read-only / permission denied.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "mailq/queue.h"
#include "mailq/route.h"
#include "mailq/spool/file_spool.h"
#include "spool/crc32c.h"
#include "spool/format.h"
#include "support/spool_fixtures.h"

namespace fs = std::filesystem;
using mailq::AttemptRecord;
using mailq::ManualClock;
using mailq::MessageId;
using mailq::MessageRecord;
using mailq::RecipientRecord;
using mailq::RecipientState;
using mailq::RecoveryReport;
using mailq::Reply;
using mailq::TimePoint;
using mailq::spool::SpoolOptions;
using mailq::spool::SpoolStorage;

using namespace mailq::spool_test;  // NOLINT: the shared spool test helpers

TEST_CASE("crc32c gives the Castagnoli check value, also in pieces", "[spool]") {
  using mailq::spool::detail::crc32c;
  CHECK(crc32c("123456789") == 0xE3069283u);
  CHECK(crc32c("") == 0u);
  std::string big = binary_body(100000);
  const std::uint32_t whole = crc32c(big);
  std::uint32_t piecewise = 0;
  for (std::size_t off = 0; off < big.size(); off += 777) {
    const std::size_t n = std::min<std::size_t>(777, big.size() - off);
    piecewise = crc32c(piecewise, big.data() + off, n);
  }
  CHECK(piecewise == whole);
}

TEST_CASE("channel directory names keep safe characters only", "[spool]") {
  CHECK(SpoolStorage::channel_directory("tcp_local") == "tcp_local");
  CHECK(SpoolStorage::channel_directory("default-non-local-route") == "default-non-local-route");
  CHECK(SpoolStorage::channel_directory("relay.example.com") == "relay.example.com");
  CHECK(SpoolStorage::channel_directory("a/b c\n") == "a_b_c_");
  CHECK(SpoolStorage::channel_directory("") == "_");
  CHECK(SpoolStorage::channel_directory(".") == "_");
  CHECK(SpoolStorage::channel_directory("..") == "_");
  CHECK(SpoolStorage::channel_directory(std::string(300, 'x')).size() == 200);
}

TEST_CASE("a spool creates its layout and only one process may own it", "[spool]") {
  TempDir dir;
  ManualClock clock;
  const std::string root = dir / "a/b/spool";
  SpoolStorage s(root, clock);
  REQUIRE_FALSE(s.open_error().code);
  CHECK(list_dir(root) == std::vector<std::string>{"lock", "quarantine", "queue", "tmp"});

  SpoolStorage second(root, clock);
  CHECK(second.open_error().code == mailq::errc::in_use);
  CHECK(second.open_error().message ==
        "spool " + root + " is in use by another process (" + root + "/lock is locked)");
  bool called = false;
  second.insert(sample_record(1), "body", [&](mailq::Result<void> stored) {
    called = true;
    CHECK(stored.code() == mailq::errc::storage_failure);
  });
  clock.run_pending();
  CHECK(called);
  auto opened = SpoolStorage::open(root, clock);
  REQUIRE_FALSE(opened.ok());
  CHECK(opened.error().code == mailq::errc::in_use);
}

TEST_CASE("insert completes from the clock, durable, at queue/<channel>/ZZ<id>.00", "[spool]") {
  TempDir dir;
  ManualClock clock;
  SpoolStorage s(dir.path(), clock);
  MessageRecord m = sample_record(0x1234567);
  bool called = false;
  s.insert(m, "Subject: x\r\n\r\nhello\r\n", [&](mailq::Result<void> stored) {
    called = true;
    CHECK_FALSE(stored.code());
  });
  CHECK_FALSE(called);  // never from inside insert
  CHECK(s.pending_inserts() == 1);
  CHECK(list_dir(dir / "tmp") == std::vector<std::string>{m.id.to_string() + ".tmp"});
  clock.run_pending();
  CHECK(called);
  CHECK(s.pending_inserts() == 0);
  CHECK(list_dir(dir / "tmp").empty());
  const std::string name = "ZZ" + m.id.to_string() + ".00";
  CHECK(name == "ZZ00000000J6HB7.00");
  CHECK(list_dir(dir / "queue") == std::vector<std::string>{"tcp_local"});
  CHECK(list_dir(dir / "queue/tcp_local") == std::vector<std::string>{name});
  CHECK(s.file_of(m.id) == "queue/tcp_local/" + name);
  auto body = s.read_body(m.id);
  REQUIRE(body.ok());
  CHECK(*body == "Subject: x\r\n\r\nhello\r\n");
  CHECK(s.size() == 1);

  // The file starts with the magic and version 1.
  std::string bytes = read_file(dir / ("queue/tcp_local/" + name));
  CHECK(bytes.substr(0, 8) == "MAILQSPL");
  CHECK(bytes.substr(8, 4) == std::string("\x01\x00\x00\x00", 4));
}

TEST_CASE("every field of a message record and its body survive a reopen", "[spool]") {
  TempDir dir;
  ManualClock clock;
  MessageRecord m = sample_record(77, 4);
  m.attempts = 2;
  m.recipients[1].state = RecipientState::deferred;
  m.recipients[1].attempts = 2;
  m.recipients[1].last_reply = deferral_reply();
  m.recipients[1].remote_mta = "mx.some.org";
  m.recipients[2].state = RecipientState::delivered;
  m.recipients[2].last_reply = Reply(250, "2.0.0", "Ok\nqueued as 12345");
  m.recipients[3].state = RecipientState::bounced;
  m.recipients[3].notify = mailq::kNotifyNever;
  m.recipients[3].orcpt.clear();
  m.recipients[3].route = "tcp_local";
  m.recipients[3].last_reply = Reply(550, "", "no such user");
  m.recipients[3].next_attempt = TimePoint::max();
  m.reverse_path.clear();                       // the null reverse path
  const std::string body = binary_body(20000);  // NULs, CRs, 8-bit bytes
  {
    SpoolStorage s(dir.path(), clock);
    insert_ok(s, clock, m, body);
  }
  SpoolStorage s(dir.path(), clock);
  Loaded l = load_all(s);
  REQUIRE_FALSE(l.ec);
  CHECK(l.report.recovered == 1);
  CHECK(l.report.quarantined == 0);
  CHECK(l.report.problems.empty());
  REQUIRE(l.records.size() == 1);
  require_same(l.records[0], m);
  auto b = s.read_body(m.id);
  REQUIRE(b.ok());
  CHECK(*b == body);
  CHECK(s.file_of(m.id) == "queue/tcp_local/ZX" + m.id.to_string() + ".00");
  auto attempts = s.read_attempts(m.id);
  REQUIRE(attempts.ok());
  CHECK(attempts->empty());
}

TEST_CASE("updates rename ZZ to ZY to ZX and reload with the latest state", "[spool]") {
  TempDir dir;
  ManualClock clock;
  MessageRecord m = sample_record(1000, 2);
  const std::string id = m.id.to_string();
  const std::string body = binary_body(100 * 1024);
  {
    SpoolStorage s(dir.path(), clock);
    insert_ok(s, clock, m, body);
    const auto size0 = fs::file_size(dir / ("queue/tcp_local/ZZ" + id + ".00"));

    // First attempt: both deferred.
    m.attempts = 1;
    for (auto& r : m.recipients) {
      r.state = RecipientState::deferred;
      r.attempts = 1;
      r.last_reply = deferral_reply();
      r.next_attempt = at_ns(1'800'000'000'000'000'000);
    }
    REQUIRE(s.update(change_of_all(m)));
    CHECK(list_dir(dir / "queue/tcp_local") == std::vector<std::string>{"ZY" + id + ".00"});
    // Appended, not rewritten: the 100 KB body is not written again.
    const auto size1 = fs::file_size(dir / ("queue/tcp_local/ZY" + id + ".00"));
    CHECK(size1 > size0);
    CHECK(size1 - size0 < 600);
    CHECK(s.stats().synced_updates == 0);  // a deferral is not synced at once

    // Second attempt: one delivered (synced before update returns), one deferred again.
    m.attempts = 2;
    m.recipients[0].state = RecipientState::delivered;
    m.recipients[0].last_reply = Reply(250, "2.0.0", "Ok");
    m.recipients[0].remote_mta = "host.some.org";
    m.recipients[1].attempts = 2;
    m.recipients[1].last_reply = Reply(421, "4.4.1", "connection refused");
    REQUIRE(s.update(mailq::change_of(m, {0, 1})));
    CHECK(list_dir(dir / "queue/tcp_local") == std::vector<std::string>{"ZX" + id + ".00"});
    CHECK(s.stats().synced_updates == 1);
    CHECK(s.stats().updates == 2);
    CHECK(s.stats().renames == 2);
    CHECK(s.file_of(m.id) == "queue/tcp_local/ZX" + id + ".00");

    // No change: nothing written.
    const auto bytes = s.stats().bytes_written;
    REQUIRE(s.update(mailq::change_between(m, m)));
    CHECK(s.stats().bytes_written == bytes);
    CHECK(s.stats().updates == 2);
  }
  SpoolStorage s(dir.path(), clock);
  Loaded l = load_all(s);
  REQUIRE(l.records.size() == 1);
  require_same(l.records[0], m);
  CHECK(s.read_body(m.id).value() == body);
}

TEST_CASE("an update appends only the recipients that changed", "[spool]") {
  TempDir dir;
  ManualClock clock;
  SpoolStorage s(dir.path(), clock);
  MessageRecord m = sample_record(5, 200);
  insert_ok(s, clock, m, "x");
  const std::string path = dir / ("queue/tcp_local/ZZ" + m.id.to_string() + ".00");
  const auto before = fs::file_size(path);
  m.recipients[117].state = RecipientState::deferred;
  m.recipients[117].last_reply = Reply(450, "4.2.0", "mailbox busy");
  m.recipients[117].remote_mta = "mx";
  REQUIRE(s.update(mailq::change_of(m, {117})));
  // Record: header 8, attempts 4, held 1, count 4, index 4, state 1 + attempts 4 + next 8 +
  // code 4 + enhanced 4+5 + text 4+12 + remote MTA 4+2, checksum 4.
  const std::size_t expected = 8 + 4 + 1 + 4 + 4 + (1 + 4 + 8 + 4 + 9 + 16 + 6) + 4;
  CHECK(fs::file_size(path) - before == expected);
}

TEST_CASE(
    "a remote MTA stored as seed 002's whole line by an older spool reads back as its host name",
    "[spool]") {
  TempDir dir;
  ManualClock clock;
  MessageRecord m = sample_record(6, 3);
  {
    SpoolStorage s(dir.path(), clock);
    insert_ok(s, clock, m, "x");
    m.recipients[1].state = RecipientState::deferred;
    m.recipients[1].remote_mta = "dns;mx.some.org (TCP|127.0.0.1|40312|127.0.0.1|25)";
    REQUIRE(s.update(mailq::change_of(m, {1})));
  }
  SpoolStorage s(dir.path(), clock);
  Loaded l = load_all(s);
  REQUIRE(l.records.size() == 1);
  CHECK(l.records[0].recipients[1].remote_mta == "mx.some.org");
  CHECK(l.records[0].recipients[0].remote_mta.empty());
}

TEST_CASE("held messages are visibly held: .HELD suffix, and back on release", "[spool]") {
  TempDir dir;
  ManualClock clock;
  MessageRecord m = sample_record(99);
  const std::string id = m.id.to_string();
  {
    SpoolStorage s(dir.path(), clock);
    insert_ok(s, clock, m, "body");
    m.held = true;
    REQUIRE(s.update(mailq::change_of(m)));
    CHECK(list_dir(dir / "queue/tcp_local") == std::vector<std::string>{"ZZ" + id + ".00.HELD"});
    CHECK(s.stats().synced_updates == 1);  // hold is synced at once
    CHECK(s.file_of(m.id) == "queue/tcp_local/ZZ" + id + ".00.HELD");
  }
  {
    SpoolStorage s(dir.path(), clock);
    Loaded l = load_all(s);
    REQUIRE(l.records.size() == 1);
    CHECK(l.records[0].held);
    m.held = false;
    REQUIRE(s.update(mailq::change_of(m)));
    CHECK(list_dir(dir / "queue/tcp_local") == std::vector<std::string>{"ZZ" + id + ".00"});
  }
  // Inserted held: held from the start.
  SpoolStorage s(dir.path(), clock);
  REQUIRE(load_all(s).records.size() == 1);
  MessageRecord h = sample_record(100);
  h.held = true;
  insert_ok(s, clock, h, "body");
  CHECK(s.file_of(h.id) == "queue/tcp_local/ZZ" + h.id.to_string() + ".00.HELD");
}

TEST_CASE("the transient-attempt history round-trips in order across reopen", "[spool]") {
  TempDir dir;
  ManualClock clock;
  MessageRecord m = sample_record(4242);
  std::vector<AttemptRecord> rows;
  {
    SpoolStorage s(dir.path(), clock);
    insert_ok(s, clock, m, "body");
    for (int i = 0; i < 3; ++i) {
      rows.push_back(sample_attempt(i));
      REQUIRE(s.append_attempt(m.id, rows.back()));
      // Interleaved state updates must not disturb the history.
      m.attempts = static_cast<std::uint32_t>(i + 1);
      m.recipients[0].attempts = m.attempts;
      m.recipients[0].state = RecipientState::deferred;
      REQUIRE(s.update(mailq::change_of(m, {0})));
    }
    rows.back().diagnostic = std::string(5000, 'd');  // a long row
    REQUIRE(s.append_attempt(m.id, rows.back()));
    rows.push_back(rows.back());
    rows[2] = sample_attempt(2);
    auto got = s.read_attempts(m.id);
    REQUIRE(got.ok());
    REQUIRE(got->size() == rows.size());
    for (std::size_t i = 0; i < rows.size(); ++i) require_same((*got)[i], rows[i]);
    CHECK(s.stats().attempts == 4);
  }
  SpoolStorage s(dir.path(), clock);
  Loaded l = load_all(s);
  REQUIRE(l.records.size() == 1);
  require_same(l.records[0], m);
  auto got = s.read_attempts(m.id);
  REQUIRE(got.ok());
  REQUIRE(got->size() == rows.size());
  for (std::size_t i = 0; i < rows.size(); ++i) require_same((*got)[i], rows[i]);
}

TEST_CASE("remove unlinks the file and the message does not come back", "[spool]") {
  TempDir dir;
  ManualClock clock;
  MessageRecord a = sample_record(1), b = sample_record(2);
  {
    SpoolStorage s(dir.path(), clock);
    insert_ok(s, clock, a, "a");
    insert_ok(s, clock, b, "b");
    REQUIRE(s.remove(a.id));
    CHECK(s.remove(a.id).code() == mailq::errc::not_found);
    CHECK(s.read_body(a.id).error().code == mailq::errc::not_found);
    CHECK(list_dir(dir / "queue/tcp_local") ==
          std::vector<std::string>{"ZZ" + b.id.to_string() + ".00"});
    const auto dir_syncs = s.stats().dir_syncs;
    clock.run_pending();  // not at the end of the loop turn: a drain would sync on every turn
    CHECK(s.stats().dir_syncs == dir_syncs);
    clock.advance(mailq::spool::SpoolOptions{}.deferred_sync_delay);  // within the delay
    CHECK(s.stats().dir_syncs == dir_syncs + 1);
  }
  SpoolStorage s(dir.path(), clock);
  Loaded l = load_all(s);
  REQUIRE(l.records.size() == 1);
  CHECK(l.records[0].id == b.id);
}

TEST_CASE("spool operations report not_found, bad_state and invalid_parameter", "[spool]") {
  TempDir dir;
  ManualClock clock;
  SpoolStorage s(dir.path(), clock);
  MessageRecord m = sample_record(10);
  CHECK(s.update(mailq::change_of(m)).code() == mailq::errc::not_found);
  CHECK(s.append_attempt(m.id, sample_attempt(1)).code() == mailq::errc::not_found);
  CHECK(s.read_attempts(m.id).error().code == mailq::errc::not_found);
  insert_ok(s, clock, m, "body");
  CHECK(insert_result(s, clock, m, "again") == mailq::errc::bad_state);
  // Two inserts of the same id in one batch.
  MessageRecord n = sample_record(11);
  int ok = 0, bad = 0;
  for (int i = 0; i < 2; ++i) {
    s.insert(n, "b", [&](mailq::Result<void> stored) {
      (stored.code() == mailq::errc::bad_state ? bad : ok)++;
    });
  }
  clock.run_pending();
  CHECK(ok == 1);
  CHECK(bad == 1);
  MessageRecord z = sample_record(0);
  CHECK(insert_result(s, clock, z, "b") == mailq::errc::invalid_parameter);
  MessageRecord none = sample_record(12, 0);
  CHECK(insert_result(s, clock, none, "b") == mailq::errc::invalid_parameter);
  mailq::RecordChange beyond = mailq::change_of(m, {2});
  beyond.recipients[0].index = 3;  // the recipient list is immutable
  CHECK(s.update(beyond).code() == mailq::errc::bad_state);
  mailq::RecordChange twice = mailq::change_of(m, {1});
  twice.recipients.push_back(twice.recipients[0]);
  CHECK(s.update(twice).code() == mailq::errc::invalid_parameter);
  CHECK(s.size() == 2);
}

TEST_CASE("the channel directory is the sanitized route of the first recipient", "[spool]") {
  TempDir dir;
  ManualClock clock;
  SpoolStorage s(dir.path(), clock);
  MessageRecord m = sample_record(8, 2);
  m.recipients[0].route = "../relay host/1";
  m.recipients[1].route = "tcp_other";
  insert_ok(s, clock, m, "body");
  CHECK(list_dir(dir / "queue") == std::vector<std::string>{".._relay_host_1"});
  CHECK(s.file_of(m.id) == "queue/.._relay_host_1/ZZ" + m.id.to_string() + ".00");
  // The route itself is kept as it was.
  Loaded l = load_all(s);
  REQUIRE(l.records.size() == 1);
  CHECK(l.records[0].recipients[0].route == "../relay host/1");
}

TEST_CASE("a second load reports the same messages once each", "[spool]") {
  TempDir dir;
  ManualClock clock;
  SpoolStorage s(dir.path(), clock);
  insert_ok(s, clock, sample_record(1), "a");
  insert_ok(s, clock, sample_record(2), "b");
  CHECK(load_all(s).records.size() == 2);
  Loaded l = load_all(s);
  CHECK(l.records.size() == 2);
  CHECK(l.report.recovered == 2);
  CHECK(s.size() == 2);
}

TEST_CASE("a message file removed behind the spool's back gives a clear error", "[spool]") {
  TempDir dir;
  ManualClock clock;
  SpoolStorage s(dir.path(), clock);
  MessageRecord m = sample_record(21);
  insert_ok(s, clock, m, "a");
  const std::string file = s.file_of(m.id);
  fs::remove(dir / file);
  m.recipients[0].state = RecipientState::delivered;
  const auto refused = s.update(mailq::change_of(m, {0}));
  CHECK(refused.code() == mailq::errc::storage_failure);
  CHECK(text_of(refused) == "open " + dir.path() + "/" + file + ": No such file or directory");
  auto b = s.read_body(m.id);
  REQUIRE_FALSE(b.ok());
  CHECK(b.error().code == mailq::errc::storage_failure);
  CHECK(s.remove(m.id).code() == std::error_code());  // already gone: removing it is done
  CHECK(s.size() == 0);
}

TEST_CASE("many inserts in one loop turn share one group commit", "[spool]") {
  TempDir dir;
  ManualClock clock;
  SECTION("automatic: one syncfs for the batch") {
    SpoolStorage s(dir.path(), clock);
    int done = 0;
    for (std::uint64_t i = 1; i <= 1000; ++i) {
      s.insert(sample_record(i, 1), "Subject: x\r\n\r\nbody " + std::to_string(i) + "\r\n",
               [&](mailq::Result<void> stored) {
                 CHECK_FALSE(stored.code());
                 ++done;
               });
    }
    CHECK(done == 0);
    clock.run_pending();
    CHECK(done == 1000);
    const auto st = s.stats();
    CHECK(st.inserts == 1000);
    CHECK(st.batches == 1);
    CHECK(st.fs_syncs == 1);
    CHECK(st.file_syncs == 0);
    // At open: the spool's parent, the spool (its subdirectories), queue (channels); then
    // queue (the new channel) and tcp_local.
    CHECK(st.dir_syncs <= 5);
    CHECK(st.fs_syncs + st.file_syncs + st.dir_syncs < 10);
    CHECK(list_dir(dir / "queue/tcp_local").size() == 1000);
    CHECK(list_dir(dir / "tmp").empty());
  }
  SECTION("per file: one fdatasync per file, still one batch and one directory sync") {
    SpoolOptions o;
    o.sync_method = mailq::spool::SyncMethod::per_file;
    SpoolStorage s(dir.path(), clock, o);
    for (std::uint64_t i = 1; i <= 300; ++i) s.insert(sample_record(i, 1), "b", [](auto) {});
    clock.run_pending();
    const auto st = s.stats();
    CHECK(st.inserts == 300);
    CHECK(st.batches == 1);
    CHECK(st.file_syncs == 300);  // more than kMaxBatchOpenFiles: some were reopened
    CHECK(st.fs_syncs == 0);
  }
  SECTION("two loop turns: two batches") {
    SpoolStorage s(dir.path(), clock);
    for (std::uint64_t i = 1; i <= 10; ++i) s.insert(sample_record(i, 1), "b", [](auto) {});
    clock.run_pending();
    for (std::uint64_t i = 11; i <= 20; ++i) s.insert(sample_record(i, 1), "b", [](auto) {});
    clock.run_pending();
    CHECK(s.stats().batches == 2);
    CHECK(s.size() == 20);
  }
}

TEST_CASE("a callback may insert again, flush completes a batch at once", "[spool]") {
  TempDir dir;
  ManualClock clock;
  SpoolStorage s(dir.path(), clock);
  bool second = false;
  s.insert(sample_record(1), "a", [&](mailq::Result<void> stored) {
    REQUIRE_FALSE(stored.code());
    s.insert(sample_record(2), "b", [&](mailq::Result<void> stored2) {
      CHECK_FALSE(stored2.code());
      second = true;
    });
  });
  s.flush();
  CHECK_FALSE(second);
  CHECK(s.pending_inserts() == 1);
  clock.run_pending();
  CHECK(second);
  CHECK(s.size() == 2);
}

TEST_CASE("destroying the spool makes pending inserts durable without callbacks", "[spool]") {
  TempDir dir;
  ManualClock clock;
  bool called = false;
  {
    SpoolStorage s(dir.path(), clock);
    s.insert(sample_record(31), "kept", [&](mailq::Result<void>) { called = true; });
  }
  CHECK_FALSE(called);
  CHECK(clock.pending() == 0);  // its timer was cancelled
  SpoolStorage s(dir.path(), clock);
  Loaded l = load_all(s);
  REQUIRE(l.records.size() == 1);
  CHECK(s.read_body(MessageId{31}).value() == "kept");
}

TEST_CASE("recovery removes leftover tmp files and never recovers them", "[spool]") {
  TempDir dir;
  ManualClock clock;
  {
    SpoolStorage s(dir.path(), clock);
    insert_ok(s, clock, sample_record(1), "one");
  }
  write_file(dir / "tmp/0000000000002.tmp", "half a message");
  write_file(dir / "tmp/junk", "");
  SpoolStorage s(dir.path(), clock);
  Loaded l = load_all(s);
  CHECK(l.report.recovered == 1);
  CHECK(l.report.quarantined == 0);
  CHECK(list_dir(dir / "tmp").empty());
  CHECK(s.stats().last_load_tmp_removed == 2);
}

TEST_CASE("recovery quarantines unknown and foreign files with a problem line each", "[spool]") {
  TempDir dir;
  ManualClock clock;
  MessageRecord m = sample_record(1);
  {
    SpoolStorage s(dir.path(), clock);
    insert_ok(s, clock, m, "one");
  }
  write_file(dir / "queue/tcp_local/README", "notes");
  write_file(dir / "queue/tcp_local/ZZ0000000000002.00", "From: not ours\r\n");
  fs::create_directory(dir / "queue/tcp_local/sub");
  write_file(dir / "queue/stray", "x");
  SpoolStorage s(dir.path(), clock);
  Loaded l = load_all(s);
  REQUIRE_FALSE(l.ec);
  CHECK(l.report.recovered == 1);
  CHECK(l.report.quarantined == 2);
  CHECK(l.report.problems == std::vector<std::string>{
                                 "queue/stray: not a channel directory; left in place",
                                 "queue/tcp_local/README: not a queue file name; moved to "
                                 "quarantine/tcp_local.README",
                                 "queue/tcp_local/ZZ0000000000002.00: not a mailq spool file; "
                                 "moved to quarantine/tcp_local.ZZ0000000000002.00",
                                 "queue/tcp_local/sub: unexpected directory; left in place",
                             });
  CHECK(list_dir(dir / "quarantine") ==
        std::vector<std::string>{"tcp_local.README", "tcp_local.ZZ0000000000002.00"});
  CHECK(read_file(dir / "quarantine/tcp_local.README") == "notes");
}

namespace {

// A small message file with a history: insert, deferral, attempt row, delivery. Records the
// file size after each step and the state the spool should recover from each prefix.
struct History {
  std::string bytes;                      // the final file
  std::string final_name;                 // its name
  std::vector<std::uint64_t> ends;        // file size after each step (ends[0]: after insert)
  std::vector<MessageRecord> states;      // state after each step
  std::vector<std::size_t> attempt_rows;  // attempt rows after each step
  std::uint64_t tail_off = 0;
  std::string body;
};

History make_history() {
  TempDir dir;
  ManualClock clock;
  History h;
  h.body = "Subject: small\r\n\r\nHello.\r\n";
  MessageRecord m = sample_record(0xABCDEF, 2);
  const std::string id = m.id.to_string();
  SpoolStorage s(dir.path(), clock);
  insert_ok(s, clock, m, h.body);
  auto path = [&] { return dir.path() + "/" + s.file_of(m.id); };
  auto step = [&](std::size_t rows) {
    h.ends.push_back(fs::file_size(path()));
    h.states.push_back(m);
    h.attempt_rows.push_back(rows);
  };
  step(0);
  h.tail_off = h.ends[0];
  m.attempts = 1;
  m.recipients[0].state = m.recipients[1].state = RecipientState::deferred;
  m.recipients[0].attempts = m.recipients[1].attempts = 1;
  m.recipients[0].last_reply = m.recipients[1].last_reply = deferral_reply();
  REQUIRE(s.update(mailq::change_of(m, {0, 1})));
  step(0);
  REQUIRE(s.append_attempt(m.id, sample_attempt(1)));
  step(1);
  m.attempts = 2;
  m.recipients[0].state = RecipientState::delivered;
  m.recipients[0].last_reply = Reply(250, "2.0.0", "Ok");
  REQUIRE(s.update(mailq::change_of(m, {0})));
  step(1);
  h.bytes = read_file(path());
  h.final_name = s.file_of(m.id).substr(std::string("queue/tcp_local/").size());
  return h;
}

// Index of the last step whose records all lie within the first `size` bytes.
std::size_t step_within(const History& h, std::uint64_t size) {
  std::size_t k = 0;
  for (std::size_t i = 0; i < h.ends.size(); ++i) {
    if (h.ends[i] <= size) k = i;
  }
  return k;
}

}  // namespace

TEST_CASE("recovery of a file truncated at every byte offset", "[spool]") {
  const History h = make_history();
  REQUIRE(h.ends.size() == 4);
  REQUIRE(h.bytes.size() == h.ends.back());
  TempDir scratch;
  scratch.mount_tmpfs("16m");  // hundreds of spools: fast when a tmpfs is allowed
  for (std::size_t cut = 0; cut <= h.bytes.size(); ++cut) {
    INFO("file cut to " << cut << " of " << h.bytes.size() << " bytes");
    TempDir dir(scratch.path());
    ManualClock clock;
    fs::create_directories(dir / "queue/tcp_local");
    write_file(dir / ("queue/tcp_local/" + h.final_name), h.bytes.substr(0, cut));
    SpoolStorage s(dir.path(), clock);
    Loaded l = load_all(s);
    REQUIRE_FALSE(l.ec);
    if (cut < h.tail_off) {
      // Cut inside the preamble, metadata or body: the message was never complete.
      CHECK(l.report.recovered == 0);
      CHECK(l.report.quarantined == 1);
      REQUIRE(l.report.problems.size() == 1);
      CHECK(list_dir(dir / "quarantine") == std::vector<std::string>{"tcp_local." + h.final_name});
      CHECK(list_dir(dir / "queue/tcp_local").empty());
      continue;
    }
    const std::size_t k = step_within(h, cut);
    REQUIRE(l.report.recovered == 1);
    CHECK(l.report.quarantined == 0);
    CHECK(l.report.problems.empty());
    REQUIRE(l.records.size() == 1);
    require_same(l.records[0], h.states[k]);
    CHECK(s.stats().last_load_repaired == (cut == h.ends[k] ? 0u : 1u));
    // The torn record is cut off, and the name follows the recovered attempt count.
    const std::string file = dir.path() + "/" + s.file_of(l.records[0].id);
    CHECK(fs::file_size(file) == h.ends[k]);
    CHECK(s.file_of(l.records[0].id) ==
          "queue/tcp_local/" + mailq::queue_file_name(l.records[0].id, h.states[k].attempts));
    CHECK(s.read_body(l.records[0].id).value() == h.body);
    CHECK(s.read_attempts(l.records[0].id).value().size() == h.attempt_rows[k]);
    // And appends go on from there.
    MessageRecord next = h.states[k];
    next.recipients[1].state = RecipientState::bounced;
    REQUIRE(s.update(mailq::change_of(next, {1})));
  }
}

TEST_CASE("recovery detects a flipped bit anywhere in a file", "[spool]") {
  const History h = make_history();
  const std::uint64_t last_start = h.ends[h.ends.size() - 2];
  std::size_t quarantined = 0, rolled_back = 0;
  TempDir scratch;
  scratch.mount_tmpfs("16m");
  for (std::size_t pos = 0; pos < h.bytes.size(); ++pos) {
    INFO("bit " << pos % 8 << " of byte " << pos << " of " << h.bytes.size());
    TempDir dir(scratch.path());
    ManualClock clock;
    fs::create_directories(dir / "queue/tcp_local");
    std::string bytes = h.bytes;
    bytes[pos] = static_cast<char>(bytes[pos] ^ (1 << (pos % 8)));
    write_file(dir / ("queue/tcp_local/" + h.final_name), bytes);
    SpoolStorage s(dir.path(), clock);
    Loaded l = load_all(s);
    REQUIRE_FALSE(l.ec);
    if (pos >= last_start) {
      // Damage in the last record looks like a torn append: the state before it is used.
      REQUIRE(l.report.recovered == 1);
      require_same(l.records[0], h.states[h.states.size() - 2]);
      CHECK(s.stats().last_load_repaired == 1);
      ++rolled_back;
    } else {
      // Anywhere else the damage is detected and the file kept aside.
      CHECK(l.report.recovered == 0);
      CHECK(l.report.quarantined == 1);
      CHECK(l.report.problems.size() == 1);
      ++quarantined;
    }
  }
  CHECK(quarantined + rolled_back == h.bytes.size());
}

TEST_CASE("recovery cuts zeros left after the last record", "[spool]") {
  const History h = make_history();
  TempDir dir;
  ManualClock clock;
  fs::create_directories(dir / "queue/tcp_local");
  write_file(dir / ("queue/tcp_local/" + h.final_name), h.bytes + std::string(4096, '\0'));
  SpoolStorage s(dir.path(), clock);
  Loaded l = load_all(s);
  REQUIRE(l.records.size() == 1);
  require_same(l.records[0], h.states.back());
  CHECK(s.stats().last_load_repaired == 1);
  CHECK(fs::file_size(dir / ("queue/tcp_local/" + h.final_name)) == h.bytes.size());
}

TEST_CASE("recovery renames a file whose name lags its recorded state", "[spool]") {
  const History h = make_history();
  TempDir dir;
  ManualClock clock;
  fs::create_directories(dir / "queue/tcp_local");
  const MessageId id{0xABCDEF};
  // A crash between the update and the rename leaves the old name.
  write_file(dir / ("queue/tcp_local/ZZ" + id.to_string() + ".00"), h.bytes);
  SpoolStorage s(dir.path(), clock);
  Loaded l = load_all(s);
  REQUIRE(l.records.size() == 1);
  CHECK(s.stats().last_load_renamed == 1);
  CHECK(list_dir(dir / "queue/tcp_local") ==
        std::vector<std::string>{"ZX" + id.to_string() + ".00"});
}

TEST_CASE("recovery quarantines a second file of the same message", "[spool]") {
  const History h = make_history();
  TempDir dir;
  ManualClock clock;
  fs::create_directories(dir / "queue/tcp_local");
  fs::create_directories(dir / "queue/tcp_other");
  write_file(dir / ("queue/tcp_local/" + h.final_name), h.bytes);
  write_file(dir / ("queue/tcp_other/" + h.final_name), h.bytes);
  SpoolStorage s(dir.path(), clock);
  Loaded l = load_all(s);
  CHECK(l.report.recovered == 1);
  CHECK(l.report.quarantined == 1);
  REQUIRE(l.report.problems.size() == 1);
  CHECK(l.report.problems[0] == "queue/tcp_other/" + h.final_name +
                                    ": duplicate of queue/tcp_local/" + h.final_name +
                                    "; moved to quarantine/tcp_other." + h.final_name);
}

TEST_CASE("a file of a newer format version is left in place and reported", "[spool]") {
  const History h = make_history();
  TempDir dir;
  ManualClock clock;
  fs::create_directories(dir / "queue/tcp_local");
  std::string bytes = h.bytes;
  std::string pre;
  pre.append("MAILQSPL", 8);
  pre.append("\x02\x00\x00\x00", 4);
  const std::uint32_t crc = mailq::spool::detail::crc32c(pre);
  for (int i = 0; i < 4; ++i) pre.push_back(static_cast<char>((crc >> (8 * i)) & 0xFF));
  bytes.replace(0, 16, pre);
  write_file(dir / ("queue/tcp_local/" + h.final_name), bytes);
  SpoolStorage s(dir.path(), clock);
  Loaded l = load_all(s);
  CHECK(l.report.recovered == 0);
  CHECK(l.report.quarantined == 0);
  REQUIRE(l.report.problems.size() == 1);
  CHECK(l.report.problems[0] == "queue/tcp_local/" + h.final_name +
                                    ": spool format version 2 is newer than this build reads (1); "
                                    "left in place");
  CHECK(list_dir(dir / "queue/tcp_local") == std::vector<std::string>{h.final_name});
}

TEST_CASE("read_body verifies the checksum of a large body", "[spool]") {
  TempDir dir;
  ManualClock clock;
  MessageRecord m = sample_record(3);
  const std::string body = binary_body(50000);
  {
    SpoolStorage s(dir.path(), clock);
    insert_ok(s, clock, m, body);
  }
  const std::string path = dir / ("queue/tcp_local/ZZ" + m.id.to_string() + ".00");
  std::string bytes = read_file(path);
  bytes[bytes.size() - 20000] ^= 0x10;
  write_file(path, bytes);
  {
    // Recovery reads only the small parts of a large file: the damage shows on reading.
    SpoolStorage s(dir.path(), clock);
    Loaded l = load_all(s);
    REQUIRE(l.records.size() == 1);
    auto b = s.read_body(m.id);
    REQUIRE_FALSE(b.ok());
    CHECK(b.error().code == mailq::errc::corrupt_record);
    CHECK(b.error().message ==
          "queue/tcp_local/ZZ" + m.id.to_string() + ".00: the body fails its checksum");
  }
  SpoolOptions o;
  o.verify_bodies_on_load = true;
  SpoolStorage s(dir.path(), clock, o);
  Loaded l = load_all(s);
  CHECK(l.report.recovered == 0);
  CHECK(l.report.quarantined == 1);
}

TEST_CASE("a killed process loses nothing acknowledged and leaves no partial message", "[spool]") {
  TempDir dir;
  ManualClock clock;
  // The child stores, updates and leaves an insert half done, then dies without any
  // clean-up (no destructor, no flush): what a SIGKILL leaves behind.
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ManualClock c;
    auto* s = new SpoolStorage(dir.path(), c);
    int ok = 0;
    for (std::uint64_t i = 1; i <= 5; ++i)
      s->insert(sample_record(i), "body " + std::to_string(i),
                [&](mailq::Result<void> stored) { ok += !stored.code(); });
    c.run_pending();
    MessageRecord m = sample_record(2);
    m.attempts = 1;
    m.recipients[0].state = RecipientState::deferred;   // written, not synced
    m.recipients[1].state = RecipientState::delivered;  // synced
    if (!s->update(mailq::change_of(m, {0, 1}))) ::_exit(3);
    if (!s->append_attempt(m.id, sample_attempt(1))) ::_exit(4);
    s->insert(sample_record(6), "never acknowledged", [](mailq::Result<void>) {});
    ::_exit(ok == 5 ? 0 : 2);
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  CHECK(list_dir(dir / "tmp") == std::vector<std::string>{"0000000000006.tmp"});

  SpoolStorage s(dir.path(), clock);
  Loaded l = load_all(s);
  CHECK(l.report.recovered == 5);
  CHECK(l.report.quarantined == 0);
  CHECK(list_dir(dir / "tmp").empty());
  std::sort(l.records.begin(), l.records.end(),
            [](const MessageRecord& a, const MessageRecord& b) { return a.id < b.id; });
  REQUIRE(l.records.size() == 5);
  CHECK(l.records[1].recipients[0].state == RecipientState::deferred);
  CHECK(l.records[1].recipients[1].state == RecipientState::delivered);
  CHECK(s.file_of(MessageId{2}) == "queue/tcp_local/ZY0000000000002.00");
  CHECK(s.read_attempts(MessageId{2}).value().size() == 1);
  for (std::uint64_t i = 1; i <= 5; ++i)
    CHECK(s.read_body(MessageId{i}).value() == "body " + std::to_string(i));
}

TEST_CASE("disk full: insert fails clearly, leaves nothing, harms nothing", "[spool]") {
  TempDir dir;
  if (!dir.mount_tmpfs("64k")) {
    WARN("skipped: cannot mount a tmpfs here (" << std::strerror(errno) << "); run as root");
    return;
  }
  ManualClock clock;
  auto spool = std::make_unique<SpoolStorage>(dir.path(), clock);
  SpoolStorage& s = *spool;
  REQUIRE_FALSE(s.open_error().code);
  const std::string body = binary_body(6000);
  std::vector<MessageId> stored;
  mailq::Result<void> failure;
  for (std::uint64_t i = 1; i <= 64 && failure; ++i) {
    failure = insert_outcome(s, clock, sample_record(i), body);
    if (failure) stored.push_back(MessageId{i});
  }
  REQUIRE(failure.code() == mailq::errc::storage_full);
  CHECK_FALSE(stored.empty());
  const MessageId failed{stored.size() + 1};
  CHECK(text_of(failure) ==
        "write " + dir.path() + "/tmp/" + failed.to_string() + ".tmp: No space left on device");
  CHECK(list_dir(dir / "tmp").empty());  // nothing partial left behind
  CHECK(s.size() == stored.size());

  // An update that needs a new block fails and keeps the previous state and file.
  MessageRecord m = sample_record(stored[0].value);
  const std::string path = dir.path() + "/" + s.file_of(m.id);
  // Fill the last free blocks so that any append needing a block fails.
  {
    std::ofstream filler(dir / "filler", std::ios::binary);
    std::string chunk(512, 'f');
    while (filler.write(chunk.data(), chunk.size())) filler.flush();
  }
  const auto size_before = fs::file_size(path);
  AttemptRecord big = sample_attempt(1);
  big.diagnostic = std::string(20000, 'x');
  CHECK(s.append_attempt(m.id, big).code() == mailq::errc::storage_full);
  CHECK(fs::file_size(path) == size_before);
  CHECK(s.read_attempts(m.id).value().empty());

  // Everything stored before is intact, and survives a reopen.
  for (MessageId id : stored) CHECK(s.read_body(id).value() == body);
  fs::remove(dir / "filler");
  spool.reset();
  SpoolStorage reopened(dir.path(), clock);
  Loaded l = load_all(reopened);
  CHECK(l.report.recovered == stored.size());
  CHECK(l.report.quarantined == 0);
}

TEST_CASE("read-only file system: insert fails clearly, stored messages stay readable", "[spool]") {
  TempDir dir;
  if (!dir.mount_tmpfs("1m")) {
    WARN("skipped: cannot mount a tmpfs here (" << std::strerror(errno) << "); run as root");
    return;
  }
  ManualClock clock;
  SpoolStorage s(dir.path(), clock);
  insert_ok(s, clock, sample_record(1), "kept");
  REQUIRE(::mount(nullptr, dir.path().c_str(), nullptr, MS_REMOUNT | MS_RDONLY, nullptr) == 0);
  const auto refused = insert_outcome(s, clock, sample_record(2), "lost");
  CHECK(refused.code() == mailq::errc::storage_failure);
  CHECK(text_of(refused) ==
        "create " + dir.path() + "/tmp/0000000000002.tmp: Read-only file system");
  MessageRecord m = sample_record(1);
  m.recipients[0].state = RecipientState::delivered;
  CHECK(s.update(mailq::change_of(m, {0})).code() == mailq::errc::storage_failure);
  CHECK(s.read_body(MessageId{1}).value() == "kept");
  REQUIRE(::mount(nullptr, dir.path().c_str(), nullptr, MS_REMOUNT, nullptr) == 0);
  insert_ok(s, clock, sample_record(3), "after");
  CHECK(s.size() == 2);
}

TEST_CASE("permission denied: insert fails clearly, nothing already queued is harmed", "[spool]") {
  TempDir dir;
  ManualClock clock;
  const std::string root = dir / "spool";
  {
    SpoolStorage s(root, clock);
    insert_ok(s, clock, sample_record(1), "kept");
  }
  if (::geteuid() != 0) {
    // Not root: plain permissions apply in this process.
    fs::permissions(root + "/tmp", fs::perms::owner_read | fs::perms::owner_exec);
    SpoolStorage s(root, clock);
    REQUIRE(load_all(s).records.size() == 1);
    const auto refused = insert_outcome(s, clock, sample_record(2), "x");
    CHECK(refused.code() == mailq::errc::storage_failure);
    CHECK(text_of(refused) == "create " + root + "/tmp/0000000000002.tmp: Permission denied");
    fs::permissions(root + "/tmp", fs::perms::owner_all);
    return;
  }
  // Root bypasses permission bits: run the insert as "nobody" in a child process, against a
  // spool it may read but not write.
  ::chmod(dir.path().c_str(), 0755);
  for (const char* sub : {"", "/queue", "/queue/tcp_local", "/tmp", "/quarantine"}) {
    ::chmod((root + sub).c_str(), 0755);
  }
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(10);
    ManualClock c;
    SpoolStorage s(root, c);
    if (s.open_error().code) ::_exit(11);
    if (!s.load([](mailq::MessageRecord&&) {}, nullptr)) ::_exit(14);  // it holds one
    mailq::Result<void> result;
    s.insert(sample_record(2), "x",
             [&](mailq::Result<void> stored) { result = std::move(stored); });
    c.run_pending();
    if (result.code() != mailq::errc::storage_failure) ::_exit(12);
    if (text_of(result) != "create " + root + "/tmp/0000000000002.tmp: Permission denied")
      ::_exit(13);
    ::_exit(0);
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  SpoolStorage s(root, clock);
  Loaded l = load_all(s);
  CHECK(l.report.recovered == 1);
  CHECK(l.report.quarantined == 0);
  CHECK(s.read_body(MessageId{1}).value() == "kept");
  CHECK(list_dir(root + "/tmp").empty());
}

TEST_CASE("a Queue on a SpoolStorage recovers its messages after a restart", "[spool]") {
  TempDir dir;
  ManualClock clock;
  mailq::RouteTable routes;
  MessageId id;
  {
    SpoolStorage storage(dir.path(), clock);
    mailq::Queue queue(storage, routes, clock);
    REQUIRE(queue.recover());
    auto env = mailq::make_envelope("adam@hosta.sesta.com", {"user@some.org", "other@some.org"});
    REQUIRE(env.ok());
    bool done = false;
    queue.enqueue(*env, "Subject: hi\r\nMessage-ID: <a@b>\r\n\r\nhello\r\n",
                  [&](mailq::Result<MessageId> r) {
                    REQUIRE(r.ok());
                    id = *r;
                    done = true;
                  });
    clock.run_pending();
    REQUIRE(done);
    CHECK(storage.file_of(id) == "queue/default-non-local-route/ZZ" + id.to_string() + ".00");
  }
  SpoolStorage storage(dir.path(), clock);
  mailq::Queue queue(storage, routes, clock);
  RecoveryReport report;
  REQUIRE(queue.recover(&report));
  CHECK(report.recovered == 1);
  const auto m = queue.find(id);
  REQUIRE(m);
  CHECK(m->recipients.size() == 2);
  CHECK(m->message_id == "<a@b>");
  CHECK(storage.read_body(id).value() == "Subject: hi\r\nMessage-ID: <a@b>\r\n\r\nhello\r\n");
}

// Figures, not assertions (machines are noisy): `mailq_integration_tests "[spool-bench]"`.
// MAILQ_SPOOL_BENCH_N sets the number of messages for the recovery scan (default 100000).
TEST_CASE("spool benchmark: group commit methods and recovery scan rate", "[.][spool-bench]") {
  using Clock = std::chrono::steady_clock;
  auto seconds = [](Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double>(b - a).count();
  };
  const char* base = std::getenv("MAILQ_SPOOL_BENCH_DIR");
  for (auto method : {mailq::spool::SyncMethod::per_file, mailq::spool::SyncMethod::syncfs}) {
    TempDir dir(base ? base : "/tmp");
    ManualClock clock;
    SpoolOptions o;
    o.sync_method = method;
    SpoolStorage s(dir.path(), clock, o);
    insert_ok(s, clock, sample_record(999999, 1), "warm-up");  // creates the channel
    auto t0 = Clock::now();
    for (std::uint64_t i = 1; i <= 1000; ++i) {
      s.insert(sample_record(i, 1), binary_body(2000),
               [](mailq::Result<void> stored) { REQUIRE(!stored.code()); });
    }
    auto t1 = Clock::now();
    clock.run_pending();
    auto t2 = Clock::now();
    std::printf("group commit of 1000 files of 2 KB, %s: write %.1f ms, commit %.1f ms\n",
                method == mailq::spool::SyncMethod::per_file ? "fdatasync per file" : "syncfs",
                seconds(t0, t1) * 1e3, seconds(t1, t2) * 1e3);
  }

  const char* n_text = std::getenv("MAILQ_SPOOL_BENCH_N");
  const std::uint64_t n = n_text ? std::strtoull(n_text, nullptr, 10) : 100000;
  TempDir dir(base ? base : "/tmp");
  ManualClock clock;
  {
    SpoolStorage s(dir.path(), clock);
    const std::string body = binary_body(1500);
    auto t0 = Clock::now();
    for (std::uint64_t i = 1; i <= n; ++i) {
      MessageRecord m = sample_record(i, 1 + i % 3);
      s.insert(m, body, [](mailq::Result<void> stored) { REQUIRE(!stored.code()); });
      if (i % 2000 == 0) clock.run_pending();
      if (i % 4 == 0) {
        m.attempts = 1;
        for (auto& r : m.recipients) r.state = RecipientState::deferred;
        clock.run_pending();
        REQUIRE(s.update(change_of_all(m)));
      }
    }
    clock.run_pending();
    s.flush();
    std::printf("stored %llu messages in %.1f s\n", static_cast<unsigned long long>(n),
                seconds(t0, Clock::now()));
  }
  ::sync();
  SpoolStorage s(dir.path(), clock);
  std::size_t count = 0;
  auto t0 = Clock::now();
  RecoveryReport report;
  REQUIRE(s.load([&](MessageRecord&&) { ++count; }, &report));
  const double warm = seconds(t0, Clock::now());
  REQUIRE(count == n);
  std::printf("recovery scan of %zu messages (page cache warm): %.2f s, %.0f messages/s\n", count,
              warm, static_cast<double>(count) / warm);
}

TEST_CASE("the delay-notice flag of a recipient survives an update and a reopen", "[spool]") {
  TempDir dir;
  ManualClock clock;
  MessageRecord m = sample_record(91, 2);
  {
    SpoolStorage s(dir.path(), clock);
    insert_ok(s, clock, m, "Subject: x\r\n\r\nx\r\n");
    m.recipients[1].state = RecipientState::deferred;
    m.recipients[1].delay_notified = true;
    REQUIRE(s.update(mailq::change_of(m, {1})));
    clock.run_pending();
  }
  SpoolStorage s(dir.path(), clock);
  Loaded l = load_all(s);
  REQUIRE_FALSE(l.ec);
  REQUIRE(l.records.size() == 1);
  CHECK_FALSE(l.records[0].recipients[0].delay_notified);
  CHECK(l.records[0].recipients[1].delay_notified);
  CHECK(l.records[0].recipients[1].state == RecipientState::deferred);
}
