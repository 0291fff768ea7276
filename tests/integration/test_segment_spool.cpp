// The segment spool: group commit, round trips across reopen, torn tails, damaged records,
// disk full / read-only, segment rollover and deletion, compaction, layout refusal.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "mailq/queue.h"
#include "mailq/route.h"
#include "mailq/spool/file_spool.h"
#include "mailq/spool/layout.h"
#include "spool/crc32c.h"
#include "support/spool_fixtures.h"

using mailq::spool::SegmentOptions;
using mailq::spool::SegmentStorage;
using mailq::spool::SpoolStorage;
using namespace mailq::spool_test;  // NOLINT: the shared spool test helpers

namespace {

const std::string kSeg1 = "segments/0000000000000001.seg";
const std::string kSeg2 = "segments/0000000000000002.seg";

std::uintmax_t file_size(const std::string& path) {
  std::error_code ec;
  auto n = fs::file_size(path, ec);
  return ec ? 0 : n;
}

}  // namespace

TEST_CASE("a segment spool creates its layout and only one process may own it", "[segment]") {
  TempDir dir;
  ManualClock clock;
  const std::string root = dir / "a/b/spool";
  SegmentStorage s(root, clock);
  REQUIRE_FALSE(s.open_error().code);
  CHECK(list_dir(root) == std::vector<std::string>{"lock", "quarantine", "segments"});
  CHECK(list_dir(root + "/segments").empty());  // the first write creates a segment

  SegmentStorage second(root, clock);
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
  CHECK(second.update(mailq::change_of(sample_record(1))).code() == mailq::errc::storage_failure);
  auto opened = SegmentStorage::open(root, clock);
  REQUIRE_FALSE(opened.ok());
  CHECK(opened.error().code == mailq::errc::in_use);
}

TEST_CASE("a file spool and a segment spool refuse each other's directory", "[segment]") {
  TempDir dir;
  ManualClock clock;
  const std::string files = dir / "files";
  const std::string segments = dir / "segments";
  {
    SpoolStorage s(files, clock);
    insert_ok(s, clock, sample_record(1), "file spool");
  }
  {
    SegmentStorage s(segments, clock);
    insert_ok(s, clock, sample_record(2), "segment spool");
  }
  SegmentStorage on_files(files, clock);
  CHECK(on_files.open_error().code == mailq::errc::storage_failure);
  CHECK(on_files.open_error().message == "spool " + files + " holds a file spool (" + files +
                                             "/queue); open it with layout = files");
  SpoolStorage on_segments(segments, clock);
  CHECK(on_segments.open_error().code == mailq::errc::storage_failure);
  CHECK(on_segments.open_error().message == "spool " + segments + " holds a segment spool (" +
                                                segments +
                                                "/segments); open it with layout = segments");
  // Neither touched the other's messages.
  CHECK(list_dir(files + "/queue/tcp_local") == std::vector<std::string>{"ZZ0000000000001.00"});
  CHECK(list_dir(segments + "/segments") == std::vector<std::string>{"0000000000000001.seg"});

  // An empty queue/ (a file spool that never held a message) is no obstacle.
  const std::string empty = dir / "empty";
  { SpoolStorage s(empty, clock); }
  SegmentStorage fresh(empty, clock);
  CHECK_FALSE(fresh.open_error().code);
}

TEST_CASE("inserts of one loop turn share one fdatasync, completed from the clock", "[segment]") {
  TempDir dir;
  ManualClock clock;
  SegmentStorage s(dir.path(), clock);
  REQUIRE_FALSE(s.open_error().code);
  CHECK(s.stats().dir_syncs == 2);  // the spool's entry in its parent, the new layout
  int completed = 0;
  for (std::uint64_t i = 1; i <= 100; ++i) {
    s.insert(sample_record(i), "body " + std::to_string(i), [&](mailq::Result<void> stored) {
      CHECK_FALSE(stored.code());
      ++completed;
    });
  }
  CHECK(completed == 0);  // never from inside insert
  CHECK(s.pending_inserts() == 100);
  CHECK(s.size() == 0);
  CHECK(s.stats().syncs == 0);
  clock.run_pending();
  CHECK(completed == 100);
  CHECK(s.pending_inserts() == 0);
  CHECK(s.size() == 100);
  auto st = s.stats();
  CHECK(st.inserts == 100);
  CHECK(st.batches == 1);
  CHECK(st.syncs == 1);
  CHECK(st.dir_syncs == 3);  // the new segment's name
  CHECK(st.segments == 1);
  CHECK(st.segments_created == 1);
  CHECK(st.live_bytes == st.total_bytes - 16);
  CHECK(st.total_bytes == file_size(dir / kSeg1));
  CHECK(s.segment_of(MessageId{7}) == kSeg1);
  CHECK(s.segment_of(MessageId{1000}) == "");
  CHECK(s.read_body(MessageId{42}).value() == "body 42");

  // A second turn: one more sync, no directory sync.
  for (std::uint64_t i = 101; i <= 110; ++i)
    s.insert(sample_record(i), "x", [](mailq::Result<void>) {});
  clock.run_pending();
  st = s.stats();
  CHECK(st.batches == 2);
  CHECK(st.syncs == 2);
  CHECK(st.dir_syncs == 3);

  // The segment starts with the magic, version 1 and the CRC of both.
  const std::string bytes = read_file(dir / kSeg1);
  CHECK(bytes.substr(0, 8) == "MAILQSEG");
  CHECK(bytes.substr(8, 4) == std::string("\x01\x00\x00\x00", 4));
  const std::uint32_t crc = mailq::spool::detail::crc32c(0, bytes.data(), 12);
  CHECK(bytes.substr(12, 4) == std::string(reinterpret_cast<const char*>(&crc), 4));
}

TEST_CASE("a callback may insert again, and flush completes a batch at once", "[segment]") {
  TempDir dir;
  ManualClock clock;
  SegmentStorage s(dir.path(), clock);
  bool second = false;
  s.insert(sample_record(1), "one", [&](mailq::Result<void> stored) {
    REQUIRE_FALSE(stored.code());
    s.insert(sample_record(2), "two", [&](mailq::Result<void> stored2) {
      CHECK_FALSE(stored2.code());
      second = true;
    });
  });
  s.flush();
  CHECK(s.size() == 1);
  CHECK(s.pending_inserts() == 1);
  clock.run_pending();
  CHECK(second);
  CHECK(s.size() == 2);
}

TEST_CASE("every field of a record and its body survive a reopen of the segment spool",
          "[segment]") {
  TempDir dir;
  ManualClock clock;
  const bool verify = GENERATE(false, true);
  SegmentOptions options;
  options.verify_bodies_on_load = verify;
  MessageRecord a = sample_record(0x1234567, 3);
  a.recipients[1].state = RecipientState::deferred;
  a.recipients[1].attempts = 2;
  a.recipients[1].last_reply = deferral_reply();
  a.recipients[1].remote_mta = "mx.some.org";
  a.recipients[2].delay_notified = true;
  a.attempts = 2;
  MessageRecord b = sample_record(99, 1);
  b.reverse_path = "";
  b.held = true;
  MessageRecord c = sample_record(100, 2);
  const std::string body_a = binary_body(3000);
  const std::string body_c = binary_body(3u << 20);  // skipped at load unless verified
  {
    SegmentStorage s(dir.path(), clock, options);
    insert_ok(s, clock, a, body_a);
    insert_ok(s, clock, b, "");
    insert_ok(s, clock, c, body_c);
  }
  SegmentStorage s(dir.path(), clock, options);
  Loaded l = load_all(s);
  REQUIRE_FALSE(l.ec);
  REQUIRE(l.records.size() == 3);
  CHECK(l.report.recovered == 3);
  CHECK(l.report.problems.empty());
  std::map<std::uint64_t, MessageRecord> by_id;
  for (auto& r : l.records) by_id[r.id.value] = r;
  require_same(by_id.at(a.id.value), a);
  require_same(by_id.at(b.id.value), b);
  require_same(by_id.at(c.id.value), c);
  CHECK(s.read_body(a.id).value() == body_a);
  CHECK(s.read_body(b.id).value() == "");
  CHECK(s.read_body(c.id).value() == body_c);
  auto st = s.stats();
  CHECK(st.last_load_recovered == 3);
  CHECK(st.last_load_segments == 1);
  CHECK(st.last_load_repaired == 0);
  CHECK(st.last_load_quarantined == 0);
}

TEST_CASE("updates, held, and the attempt history round-trip a reopen", "[segment]") {
  TempDir dir;
  ManualClock clock;
  MessageRecord m = sample_record(5, 3);
  {
    SegmentStorage s(dir.path(), clock);
    insert_ok(s, clock, m, "body");
    // A deferral: written, not synced before returning.
    m.attempts = 1;
    m.recipients[0].state = RecipientState::deferred;
    m.recipients[0].attempts = 1;
    m.recipients[0].last_reply = deferral_reply();
    m.recipients[0].next_attempt = at_ns(1'800'000'000'000'000'000);
    const auto syncs = s.stats().syncs;
    REQUIRE(s.update(mailq::change_of(m, {0})));
    CHECK(s.stats().syncs == syncs);
    CHECK(s.stats().synced_updates == 0);
    REQUIRE(s.append_attempt(m.id, sample_attempt(1)));
    REQUIRE(s.append_attempt(m.id, sample_attempt(2)));
    // A delivery: synced before update returns.
    m.recipients[1].state = RecipientState::delivered;
    m.recipients[1].last_reply = Reply(250, "2.0.0", "Ok: queued as 4B2F");
    REQUIRE(s.update(mailq::change_of(m, {1})));
    CHECK(s.stats().syncs == syncs + 1);
    CHECK(s.stats().synced_updates == 1);
    // Held: synced too.
    m.held = true;
    REQUIRE(s.update(mailq::change_of(m)));
    CHECK(s.stats().synced_updates == 2);
    // Nothing changed: nothing written.
    const auto bytes = s.stats().bytes_written;
    REQUIRE(s.update(mailq::change_between(m, m)));
    CHECK(s.stats().bytes_written == bytes);
    CHECK(s.stats().updates == 3);
    CHECK(s.stats().attempts == 2);
    auto attempts = s.read_attempts(m.id);
    REQUIRE(attempts.ok());
    REQUIRE(attempts->size() == 2);
    require_same((*attempts)[1], sample_attempt(2));
  }
  SegmentStorage s(dir.path(), clock);
  Loaded l = load_all(s);
  REQUIRE(l.records.size() == 1);
  require_same(l.records[0], m);
  auto attempts = s.read_attempts(m.id);
  REQUIRE(attempts.ok());
  REQUIRE(attempts->size() == 2);
  require_same((*attempts)[0], sample_attempt(1));
  require_same((*attempts)[1], sample_attempt(2));
  // Released after the reopen: the update continues from the recovered held flag.
  m.held = false;
  REQUIRE(s.update(mailq::change_of(m)));
  CHECK(s.stats().synced_updates == 1);
  CHECK(s.read_body(m.id).value() == "body");
}

TEST_CASE("a removed message does not come back, its neighbours do", "[segment]") {
  TempDir dir;
  ManualClock clock;
  {
    SegmentStorage s(dir.path(), clock);
    for (std::uint64_t i = 1; i <= 5; ++i)
      insert_ok(s, clock, sample_record(i), "b" + std::to_string(i));
    REQUIRE(s.remove(MessageId{2}));
    REQUIRE(s.remove(MessageId{4}));
    CHECK(s.size() == 3);
    CHECK(s.stats().removes == 2);
    CHECK(s.read_body(MessageId{2}).error().code == mailq::errc::not_found);
  }
  SegmentStorage s(dir.path(), clock);
  Loaded l = load_all(s);
  REQUIRE(l.records.size() == 3);
  CHECK(l.records[0].id == MessageId{1});
  CHECK(l.records[1].id == MessageId{3});
  CHECK(l.records[2].id == MessageId{5});
  // An id may be used again after its removal.
  insert_ok(s, clock, sample_record(2), "again");
  Loaded again = load_all(s);
  CHECK(again.records.size() == 4);
  CHECK(s.read_body(MessageId{2}).value() == "again");
}

TEST_CASE("segment spool operations report not_found, bad_state and invalid_parameter",
          "[segment]") {
  TempDir dir;
  ManualClock clock;
  SegmentStorage s(dir.path(), clock);
  MessageRecord m = sample_record(1);
  const auto refused = s.update(mailq::change_of(m));
  CHECK(refused.code() == mailq::errc::not_found);
  CHECK(text_of(refused) == "update: no message 0000000000001");
  const auto refused2 = s.append_attempt(m.id, sample_attempt(1));
  CHECK(refused2.code() == mailq::errc::not_found);
  CHECK(text_of(refused2) == "append_attempt: no message 0000000000001");
  const auto refused3 = s.remove(m.id);
  CHECK(refused3.code() == mailq::errc::not_found);
  CHECK(text_of(refused3) == "remove: no message 0000000000001");
  CHECK(s.read_body(m.id).error().code == mailq::errc::not_found);
  CHECK(s.read_attempts(m.id).error().code == mailq::errc::not_found);

  MessageRecord zero = sample_record(0);
  const auto refused4 = insert_outcome(s, clock, zero, "x");
  CHECK(refused4.code() == mailq::errc::invalid_parameter);
  CHECK(text_of(refused4) == "insert: message id 0");
  MessageRecord none = sample_record(3);
  none.recipients.clear();
  const auto refused5 = insert_outcome(s, clock, none, "x");
  CHECK(refused5.code() == mailq::errc::invalid_parameter);
  CHECK(text_of(refused5) == "insert 0000000000003: no recipients");

  insert_ok(s, clock, m, "x");
  const auto refused6 = insert_outcome(s, clock, m, "y");
  CHECK(refused6.code() == mailq::errc::bad_state);
  CHECK(text_of(refused6) == "insert 0000000000001: already stored");
  mailq::RecordChange beyond = mailq::change_of(m, {2});
  beyond.recipients[0].index = 3;  // the recipient list is immutable
  const auto refused7 = s.update(beyond);
  CHECK(refused7.code() == mailq::errc::bad_state);
  CHECK(text_of(refused7) == "update 0000000000001: no recipient 3, stored 3");
  CHECK(s.stats().insert_failures == 3);
  CHECK(s.read_body(m.id).value() == "x");
}

TEST_CASE("destroying a segment spool makes pending inserts durable without callbacks",
          "[segment]") {
  TempDir dir;
  ManualClock clock;
  bool called = false;
  {
    SegmentStorage s(dir.path(), clock);
    s.insert(sample_record(1), "pending", [&](mailq::Result<void>) { called = true; });
  }
  CHECK_FALSE(called);
  CHECK(clock.pending() == 0);
  SegmentStorage s(dir.path(), clock);
  Loaded l = load_all(s);
  CHECK(l.records.size() == 1);
  CHECK(s.read_body(MessageId{1}).value() == "pending");
}

namespace {

// A history in one segment, with the segment's size after each step.
struct SegmentHistory {
  std::string bytes;
  std::vector<std::uint64_t> ends;  // after step 0 (insert 1), 1, 2, ...
};

// The steps: 0 insert 1, 1 defer 1, 2 attempt on 1, 3 insert 2, 4 deliver 1, 5 remove 1.
SegmentHistory make_segment_history(const std::string& root) {
  ManualClock clock;
  SegmentHistory h;
  SegmentStorage s(root, clock);
  const std::string seg = root + "/" + kSeg1;
  MessageRecord m = sample_record(1, 2);
  insert_ok(s, clock, m, "the first body");
  h.ends.push_back(file_size(seg));
  m.recipients[0].state = RecipientState::deferred;
  m.recipients[0].attempts = 1;
  m.attempts = 1;
  REQUIRE(s.update(mailq::change_of(m, {0})));
  h.ends.push_back(file_size(seg));
  REQUIRE(s.append_attempt(m.id, sample_attempt(1)));
  h.ends.push_back(file_size(seg));
  insert_ok(s, clock, sample_record(2, 1), "the second body");
  h.ends.push_back(file_size(seg));
  m.recipients[1].state = RecipientState::delivered;
  REQUIRE(s.update(mailq::change_of(m, {1})));
  h.ends.push_back(file_size(seg));
  REQUIRE(s.remove(m.id));
  h.ends.push_back(file_size(seg));
  s.flush();
  h.bytes = read_file(seg);
  REQUIRE(h.bytes.size() == h.ends.back());
  return h;
}

}  // namespace

TEST_CASE("recovery of a segment cut at every byte offset of its last records", "[segment]") {
  TempDir scratch;
  scratch.mount_tmpfs("16m");  // hundreds of spools: fast when a tmpfs is allowed
  const SegmentHistory h = make_segment_history(scratch / "original");
  for (std::uint64_t cut = h.ends[0]; cut <= h.ends.back(); ++cut) {
    // The last step wholly inside the cut.
    std::size_t step = 0;
    while (step + 1 < h.ends.size() && h.ends[step + 1] <= cut) ++step;
    const bool boundary = h.ends[step] == cut;
    const std::string root = scratch / ("cut" + std::to_string(cut));
    fs::create_directories(root + "/segments");
    write_file(root + "/" + kSeg1, h.bytes.substr(0, cut));
    {
      ManualClock clock;
      SegmentStorage s(root, clock);
      Loaded l = load_all(s);
      INFO("cut at " << cut << ", step " << step);
      REQUIRE_FALSE(l.ec);
      CHECK(l.report.problems.empty());
      CHECK(l.report.quarantined == 0);
      CHECK(s.stats().last_load_repaired == (boundary ? 0u : 1u));
      CHECK(file_size(root + "/" + kSeg1) == h.ends[step]);
      std::vector<std::uint64_t> ids;
      for (const auto& r : l.records) ids.push_back(r.id.value);
      const std::vector<std::uint64_t> want =
          step < 3 ? std::vector<std::uint64_t>{1}
                   : (step < 5 ? std::vector<std::uint64_t>{1, 2} : std::vector<std::uint64_t>{2});
      CHECK(ids == want);
      if (step < 5) {
        const MessageRecord& m = l.records[0];
        CHECK(m.recipients[0].state ==
              (step >= 1 ? RecipientState::deferred : RecipientState::queued));
        CHECK(m.recipients[1].state ==
              (step >= 4 ? RecipientState::delivered : RecipientState::queued));
        CHECK(s.read_attempts(MessageId{1}).value().size() == (step >= 2 ? 1u : 0u));
        CHECK(s.read_body(MessageId{1}).value() == "the first body");
      }
      if (step >= 3) CHECK(s.read_body(MessageId{2}).value() == "the second body");
    }
    fs::remove_all(root);
  }
}

TEST_CASE("a torn tail of an older segment (a power loss after a rollover) is cut too",
          "[segment]") {
  TempDir dir;
  ManualClock clock;
  SegmentOptions options;
  options.segment_size = 4096;
  const std::string body(1000, 'd');
  std::uintmax_t first_end = 0;
  {
    SegmentStorage s(dir.path(), clock, options);
    insert_ok(s, clock, sample_record(1), body);
    first_end = file_size(dir / kSeg1);
    insert_ok(s, clock, sample_record(2), body);
    insert_ok(s, clock, sample_record(3), body);  // segment 2
    REQUIRE(s.segment_of(MessageId{2}) == kSeg1);
    REQUIRE(s.segment_of(MessageId{3}) == kSeg2);
  }
  // Message 2's records lost their last 100 bytes: unsynced data a power loss took.
  const std::string bytes = read_file(dir / kSeg1);
  write_file(dir / kSeg1, bytes.substr(0, bytes.size() - 100));
  SegmentStorage s(dir.path(), clock, options);
  Loaded l = load_all(s);
  REQUIRE(l.records.size() == 2);
  CHECK(l.records[0].id == MessageId{1});
  CHECK(l.records[1].id == MessageId{3});
  CHECK(l.report.problems.empty());
  CHECK(s.stats().last_load_repaired == 1);
  CHECK(file_size(dir / kSeg1) == first_end);
}

TEST_CASE("a damaged record goes to quarantine with the rest of its segment", "[segment]") {
  TempDir dir;
  ManualClock clock;
  std::uintmax_t cut = 0;  // where message 2's records start
  {
    SegmentStorage s(dir.path(), clock);
    insert_ok(s, clock, sample_record(1), "first body");
    cut = file_size(dir / kSeg1);
    insert_ok(s, clock, sample_record(2), "SECOND-BODY-MARKER");
    insert_ok(s, clock, sample_record(3), "third body");
  }
  std::string bytes = read_file(dir / kSeg1);
  const std::size_t marker = bytes.find("SECOND-BODY-MARKER");
  REQUIRE(marker != std::string::npos);
  bytes[marker + 3] ^= 0x10;
  write_file(dir / kSeg1, bytes);
  const std::size_t body_record = marker - 8 - 8;  // header, id
  // Message 2's metadata goes with its body: the cut starts where its 'i' record does.
  const std::string qname = "0000000000000001.seg." + std::to_string(cut);
  {
    SegmentStorage s(dir.path(), clock);
    Loaded l = load_all(s);
    REQUIRE_FALSE(l.ec);
    REQUIRE(l.records.size() == 1);
    CHECK(l.records[0].id == MessageId{1});
    CHECK(l.report.quarantined == 1);
    CHECK(l.report.problems ==
          std::vector<std::string>{kSeg1 + ": damaged record at offset " +
                                   std::to_string(body_record) + "; the " +
                                   std::to_string(bytes.size() - cut) + " bytes from offset " +
                                   std::to_string(cut) + " moved to quarantine/" + qname});
    CHECK(list_dir(dir / "quarantine") == std::vector<std::string>{qname});
    CHECK(read_file(dir / ("quarantine/" + qname)) == bytes.substr(cut));
    CHECK(file_size(dir / kSeg1) == cut);
    CHECK(s.stats().last_load_quarantined == 1);
  }
  // Reported once: the next load finds a clean segment.
  SegmentStorage s(dir.path(), clock);
  Loaded l = load_all(s);
  CHECK(l.records.size() == 1);
  CHECK(l.report.problems.empty());
  CHECK(s.read_body(MessageId{1}).value() == "first body");
}

// Found by fuzz_segment_file: an 'i' record without its 'b' record in the middle of a segment
// was taken for a torn insert when the segment ended, and the cut went back to it, taking the
// records after it that the load had already applied (a delivered state, attempt rows).
TEST_CASE("an insert without its body in mid-segment is reported, and nothing after it is cut",
          "[segment]") {
  TempDir dir;
  ManualClock clock;
  std::uintmax_t meta2 = 0;  // where message 2's 'i' record starts
  MessageRecord third = sample_record(3);
  {
    SegmentStorage s(dir.path(), clock);
    insert_ok(s, clock, sample_record(1), "first body");
    insert_ok(s, clock, third, "third body");
    meta2 = file_size(dir / kSeg1);
    insert_ok(s, clock, sample_record(2), "SECOND-BODY-MARKER");  // the last insert
    third.recipients[0].state = RecipientState::delivered;
    REQUIRE(s.update(mailq::change_of(third, {0})));
    REQUIRE(s.append_attempt(MessageId{1}, sample_attempt(1)));
  }
  std::string bytes = read_file(dir / kSeg1);
  const std::size_t marker = bytes.find("SECOND-BODY-MARKER");
  REQUIRE(marker != std::string::npos);
  // Message 2's whole 'b' record (header, id, body, CRC) taken out: every record stays intact.
  bytes.erase(marker - 16, 16 + std::string("SECOND-BODY-MARKER").size() + 4);
  write_file(dir / kSeg1, bytes);

  for (int pass = 0; pass < 2; ++pass) {
    INFO("load " << pass + 1);
    SegmentStorage s(dir.path(), clock);
    Loaded l = load_all(s);
    REQUIRE_FALSE(l.ec);
    REQUIRE(l.records.size() == 2);
    CHECK(l.records[0].id == MessageId{1});
    CHECK(l.records[1].id == MessageId{3});
    CHECK(l.records[1].recipients[0].state == RecipientState::delivered);
    CHECK(s.read_attempts(MessageId{1}).value().size() == 1);
    CHECK(s.read_body(MessageId{3}).value() == "third body");
    CHECK(l.report.quarantined == 0);
    CHECK(l.report.problems ==
          std::vector<std::string>{kSeg1 + ": message " + MessageId{2}.to_string() + " (offset " +
                                   std::to_string(meta2) + ") has no body record; not recovered"});
    CHECK(file_size(dir / kSeg1) >= bytes.size());  // nothing cut off
  }
}

TEST_CASE("a flipped bit in the last record is a torn tail, in a body read_body says so",
          "[segment]") {
  TempDir dir;
  ManualClock clock;
  {
    SegmentStorage s(dir.path(), clock);
    insert_ok(s, clock, sample_record(1), "kept");
    insert_ok(s, clock, sample_record(2), "LAST-BODY");
  }
  std::string bytes = read_file(dir / kSeg1);
  const std::size_t marker = bytes.find("LAST-BODY");
  bytes[marker] ^= 1;
  write_file(dir / kSeg1, bytes);
  SegmentStorage s(dir.path(), clock);
  Loaded l = load_all(s);
  REQUIRE(l.records.size() == 1);
  CHECK(l.report.problems.empty());
  CHECK(s.stats().last_load_repaired == 1);

  // A body damaged after load: read_body checks the checksum.
  const std::size_t kept = read_file(dir / kSeg1).find("kept");
  {
    std::string now = read_file(dir / kSeg1);
    now[kept] = 'K';
    write_file(dir / kSeg1, now);
  }
  auto body = s.read_body(MessageId{1});
  REQUIRE_FALSE(body.ok());
  CHECK(body.error().code == mailq::errc::corrupt_record);
  CHECK(body.error().message == kSeg1 + ": the body of 0000000000001 at offset " +
                                    std::to_string(kept - 16) + " fails its checksum");
}

TEST_CASE("a large body is not read at load unless verify_bodies_on_load", "[segment]") {
  TempDir dir;
  ManualClock clock;
  const std::string big = binary_body(2u << 20);
  {
    SegmentStorage s(dir.path(), clock);
    insert_ok(s, clock, sample_record(1), big);
    insert_ok(s, clock, sample_record(2), "small");
  }
  std::string bytes = read_file(dir / kSeg1);
  const std::size_t body_off = bytes.find(big.substr(0, 64)) - 16;
  bytes[body_off + 16 + (1u << 20)] ^= 0x01;  // in the middle of the large body
  write_file(dir / kSeg1, bytes);
  {
    SegmentStorage s(dir.path(), clock);
    Loaded l = load_all(s);
    CHECK(l.records.size() == 2);
    CHECK(l.report.problems.empty());
    auto body = s.read_body(MessageId{1});
    REQUIRE_FALSE(body.ok());
    CHECK(body.error().code == mailq::errc::corrupt_record);
    CHECK(body.error().message == kSeg1 + ": the body of 0000000000001 at offset " +
                                      std::to_string(body_off) + " fails its checksum");
    CHECK(s.read_body(MessageId{2}).value() == "small");
  }
  SegmentOptions verify;
  verify.verify_bodies_on_load = true;
  SegmentStorage s(dir.path(), clock, verify);
  Loaded l = load_all(s);
  REQUIRE(l.records.size() == 0);
  REQUIRE(l.report.problems.size() == 1);
  CHECK(l.report.problems[0] == kSeg1 + ": damaged record at offset " + std::to_string(body_off) +
                                    "; the " + std::to_string(bytes.size() - 16) +
                                    " bytes from offset 16 moved to quarantine/" +
                                    "0000000000000001.seg.16");
  CHECK(read_file(dir / "quarantine/0000000000000001.seg.16") == bytes.substr(16));
}

TEST_CASE("unknown files in segments/ go to quarantine, and a newer segment stops the load",
          "[segment]") {
  TempDir dir;
  ManualClock clock;
  {
    SegmentStorage s(dir.path(), clock);
    insert_ok(s, clock, sample_record(1), "body");
  }
  write_file(dir / "segments/notes.txt", "hello");
  write_file(dir / "segments/0000000000000007.seg", "garbage that is not a segment");
  {
    SegmentStorage s(dir.path(), clock);
    Loaded l = load_all(s);
    REQUIRE_FALSE(l.ec);
    CHECK(l.records.size() == 1);
    CHECK(l.report.quarantined == 2);
    // Names that are not segments go while listing; bad preambles when the segments are read.
    CHECK(l.report.problems ==
          std::vector<std::string>{
              "segments/notes.txt: not a segment file; moved to quarantine/notes.txt",
              "segments/0000000000000007.seg: not a segment file (bad preamble); moved to "
              "quarantine/0000000000000007.seg"});
    CHECK(list_dir(dir / "quarantine") ==
          std::vector<std::string>{"0000000000000007.seg", "notes.txt"});
  }
  // Version 2 of the format: refused, the segment left alone.
  std::string pre = "MAILQSEG";
  pre += std::string("\x02\0\0\0", 4);
  const std::uint32_t crc = mailq::spool::detail::crc32c(0, pre.data(), 12);
  pre.append(reinterpret_cast<const char*>(&crc), 4);
  write_file(dir / "segments/0000000000000009.seg", pre + "future records");
  SegmentStorage s(dir.path(), clock);
  Loaded l = load_all(s);
  CHECK(l.ec == mailq::errc::storage_failure);
  CHECK(l.error ==
        "segments/0000000000000009.seg: segment format version 2 is newer than this build "
        "reads (1); refusing to start rather than ignore its messages");
  CHECK(l.records.empty());
  CHECK(read_file(dir / "segments/0000000000000009.seg") == pre + "future records");
}

TEST_CASE("disk full: a segment insert fails clearly, leaves nothing, harms nothing", "[segment]") {
  TempDir dir;
  if (!dir.mount_tmpfs("64k")) {
    WARN("skipped: cannot mount a tmpfs here (" << std::strerror(errno) << "); run as root");
    return;
  }
  ManualClock clock;
  auto spool = std::make_unique<SegmentStorage>(dir.path(), clock);
  SegmentStorage& s = *spool;
  REQUIRE_FALSE(s.open_error().code);
  const std::string body = binary_body(6000);
  std::vector<MessageId> stored;
  mailq::Result<void> failure;
  std::uintmax_t size_before = 0;
  for (std::uint64_t i = 1; i <= 64 && failure; ++i) {
    size_before = file_size(dir / kSeg1);
    failure = insert_outcome(s, clock, sample_record(i), body);
    if (failure) stored.push_back(MessageId{i});
  }
  REQUIRE(failure.code() == mailq::errc::storage_full);
  CHECK(stored.size() >= 5);
  CHECK(text_of(failure) == "write " + dir.path() + "/" + kSeg1 + ": No space left on device");
  CHECK(file_size(dir / kSeg1) == size_before);  // nothing partial left behind
  CHECK(s.size() == stored.size());
  CHECK(s.stats().insert_failures == 1);

  // An append that needs a new block fails and keeps the previous state.
  AttemptRecord big = sample_attempt(1);
  big.diagnostic = std::string(20000, 'x');
  CHECK(s.append_attempt(stored[0], big).code() == mailq::errc::storage_full);
  CHECK(file_size(dir / kSeg1) == size_before);
  CHECK(s.read_attempts(stored[0]).value().empty());

  for (MessageId id : stored) CHECK(s.read_body(id).value() == body);
  spool.reset();
  SegmentStorage reopened(dir.path(), clock);
  Loaded l = load_all(reopened);
  CHECK(l.report.recovered == stored.size());
  CHECK(l.report.problems.empty());
  CHECK(reopened.stats().last_load_repaired == 0);
}

TEST_CASE("read-only file system: segment inserts fail clearly, stored messages stay readable",
          "[segment]") {
  TempDir dir;
  if (!dir.mount_tmpfs("1m")) {
    WARN("skipped: cannot mount a tmpfs here (" << std::strerror(errno) << "); run as root");
    return;
  }
  ManualClock clock;
  {
    SegmentStorage s(dir.path(), clock);
    insert_ok(s, clock, sample_record(1), "kept");
  }
  // A writable descriptor would keep the remount from happening: the spool is closed first.
  REQUIRE(::mount(nullptr, dir.path().c_str(), nullptr, MS_REMOUNT | MS_RDONLY, nullptr) == 0);
  {
    SegmentStorage s(dir.path(), clock);
    REQUIRE_FALSE(s.open_error().code);
    Loaded l = load_all(s);
    REQUIRE_FALSE(l.ec);
    CHECK(l.records.size() == 1);
    CHECK(s.read_body(MessageId{1}).value() == "kept");
    const auto refused8 = insert_outcome(s, clock, sample_record(2), "lost");
    CHECK(refused8.code() == mailq::errc::storage_failure);
    CHECK(text_of(refused8) == "create " + dir.path() + "/" + kSeg2 + ": Read-only file system");
    MessageRecord m = sample_record(1);
    m.recipients[0].state = RecipientState::delivered;
    CHECK(s.update(mailq::change_of(m, {0})).code() == mailq::errc::storage_failure);
    CHECK(s.read_body(MessageId{1}).value() == "kept");
  }
  REQUIRE(::mount(nullptr, dir.path().c_str(), nullptr, MS_REMOUNT, nullptr) == 0);
  SegmentStorage s(dir.path(), clock);
  REQUIRE(load_all(s).records.size() == 1);
  insert_ok(s, clock, sample_record(3), "after");
  CHECK(s.size() == 2);
}

TEST_CASE("segments roll over at segment_size and go once they and all older ones are dead",
          "[segment]") {
  TempDir dir;
  ManualClock clock;
  SegmentOptions options;
  options.segment_size = 4096;
  options.compact_below_live_fraction = 0;  // this test is about deletion alone
  const std::string body(1000, 'b');
  {
    SegmentStorage s(dir.path(), clock, options);
    for (std::uint64_t i = 1; i <= 12; ++i) insert_ok(s, clock, sample_record(i), body);
    // Each message takes about 1.4 KB: two per segment.
    CHECK(s.stats().segments_created == 6);
    CHECK(list_dir(dir / "segments").size() == 6);
    for (std::uint64_t i = 1; i <= 12; ++i) {
      CHECK(s.segment_of(MessageId{i}) ==
            "segments/000000000000000" + std::to_string((i + 1) / 2) + ".seg");
    }
    for (std::uint64_t n = 1; n <= 6; ++n) {
      CHECK(file_size(dir / ("segments/000000000000000" + std::to_string(n) + ".seg")) <= 4096);
    }
    // Segment 2 dead, segment 1 not: both stay (prefix rule).
    REQUIRE(s.remove(MessageId{3}));
    REQUIRE(s.remove(MessageId{4}));
    CHECK(s.stats().segments_deleted == 0);
    CHECK(list_dir(dir / "segments").size() == 6);
    // Segment 1 dead too: 1 and 2 go.
    REQUIRE(s.remove(MessageId{1}));
    REQUIRE(s.remove(MessageId{2}));
    CHECK(s.stats().segments_deleted == 2);
    CHECK(s.stats().segments == 4);
    CHECK(list_dir(dir / "segments") ==
          std::vector<std::string>{"0000000000000003.seg", "0000000000000004.seg",
                                   "0000000000000005.seg", "0000000000000006.seg"});
    // The active segment never goes, even when dead.
    for (std::uint64_t i = 5; i <= 12; ++i) REQUIRE(s.remove(MessageId{i}));
    CHECK(s.size() == 0);
    CHECK(list_dir(dir / "segments") == std::vector<std::string>{"0000000000000006.seg"});
    CHECK(s.stats().live_bytes == 0);
  }
  // A restart starts a new segment; the old dead one goes at load.
  SegmentStorage s(dir.path(), clock, options);
  Loaded l = load_all(s);
  CHECK(l.records.empty());
  CHECK(list_dir(dir / "segments").empty());
  insert_ok(s, clock, sample_record(20), body);
  CHECK(s.segment_of(MessageId{20}) == "segments/0000000000000007.seg");
}

TEST_CASE("a message larger than segment_size gets a segment of its own", "[segment]") {
  TempDir dir;
  ManualClock clock;
  SegmentOptions options;
  options.segment_size = 4096;
  const std::string big = binary_body(10000);
  {
    SegmentStorage s(dir.path(), clock, options);
    insert_ok(s, clock, sample_record(1), "small");
    insert_ok(s, clock, sample_record(2), big);
    insert_ok(s, clock, sample_record(3), "small again");
    CHECK(s.segment_of(MessageId{1}) == kSeg1);
    CHECK(s.segment_of(MessageId{2}) == kSeg2);
    CHECK(s.segment_of(MessageId{3}) == "segments/0000000000000003.seg");
    CHECK(file_size(dir / kSeg2) > 10000);
    // An update of message 1 goes to the active segment, not to message 1's.
    MessageRecord m = sample_record(1);
    m.recipients[0].state = RecipientState::delivered;
    REQUIRE(s.update(mailq::change_of(m, {0})));
    CHECK(s.stats().segments == 3);
  }
  SegmentStorage s(dir.path(), clock, options);
  Loaded l = load_all(s);
  REQUIRE(l.records.size() == 3);
  CHECK(l.records[0].recipients[0].state == RecipientState::delivered);
  CHECK(s.read_body(MessageId{2}).value() == big);
}

TEST_CASE("compaction copies a long-deferred message forward and frees its old segment",
          "[segment]") {
  TempDir dir;
  ManualClock clock;
  SegmentOptions options;
  options.segment_size = 4096;
  const std::string body = binary_body(1500);
  MessageRecord old = sample_record(1, 2);
  {
    SegmentStorage s(dir.path(), clock, options);
    insert_ok(s, clock, old, body);
    old.attempts = 3;
    old.recipients[0].state = RecipientState::deferred;
    old.recipients[0].attempts = 3;
    old.recipients[0].last_reply = deferral_reply();
    old.recipients[1].state = RecipientState::delivered;
    old.recipients[1].last_reply = Reply(250, "2.0.0", "Ok");
    REQUIRE(s.update(mailq::change_of(old, {0, 1})));
    REQUIRE(s.append_attempt(old.id, sample_attempt(1)));
    REQUIRE(s.append_attempt(old.id, sample_attempt(2)));
    CHECK(s.segment_of(old.id) == kSeg1);
    // Traffic that comes and goes.
    for (std::uint64_t i = 2; i <= 30; ++i) {
      insert_ok(s, clock, sample_record(i), body);
      REQUIRE(s.remove(MessageId{i}));
      clock.run_pending();  // compaction runs from a timer
    }
    auto st = s.stats();
    CHECK(st.compacted_messages >= 1);
    CHECK(st.segments_deleted >= 1);
    CHECK(s.segment_of(old.id) != kSeg1);
    CHECK_FALSE(fs::exists(dir / kSeg1));
    CHECK(st.segments <= 2);
    // Still the same message.
    CHECK(s.read_body(old.id).value() == body);
    auto attempts = s.read_attempts(old.id).value();
    REQUIRE(attempts.size() == 2);
    require_same(attempts[1], sample_attempt(2));
    // Changes after the copy apply on top of it.
    old.recipients[0].next_attempt = at_ns(1'900'000'000'000'000'000);
    REQUIRE(s.update(mailq::change_of(old, {0})));
  }
  SegmentStorage s(dir.path(), clock, options);
  Loaded l = load_all(s);
  REQUIRE(l.records.size() == 1);
  CHECK(l.report.problems.empty());
  require_same(l.records[0], old);
  CHECK(s.read_body(old.id).value() == body);
  auto attempts = s.read_attempts(old.id).value();
  REQUIRE(attempts.size() == 2);
  require_same(attempts[0], sample_attempt(1));
  require_same(attempts[1], sample_attempt(2));
}

TEST_CASE("compact_now leaves no segment that qualifies", "[segment]") {
  TempDir dir;
  ManualClock clock;
  SegmentOptions options;
  options.segment_size = 4096;
  options.compact_below_live_fraction = 0.9;
  options.compact_bytes_per_turn = 1;  // one message per turn when run from the timer
  SegmentStorage s(dir.path(), clock, options);
  const std::string body(1000, 'c');
  for (std::uint64_t i = 1; i <= 12; ++i)
    s.insert(sample_record(i), body, [](mailq::Result<void>) {});
  s.flush();
  for (std::uint64_t i = 1; i <= 12; ++i) {
    if (i % 4 != 0) REQUIRE(s.remove(MessageId{i}));
  }
  REQUIRE(s.compact_now());
  auto st = s.stats();
  CHECK(st.compacted_messages >= 2);
  CHECK(s.size() == 3);
  for (std::uint64_t i : {4, 8, 12}) CHECK(s.read_body(MessageId{i}).value() == body);
  // What remains: the segments of the copies and the active one.
  CHECK(st.segments == list_dir(dir / "segments").size());
  CHECK(fs::exists(dir.path() + "/" + s.segment_of(MessageId{4})));
}

TEST_CASE("a Queue on a SegmentStorage recovers its messages after a restart", "[segment]") {
  TempDir dir;
  ManualClock clock;
  mailq::RouteTable routes;
  MessageId id;
  {
    SegmentStorage storage(dir.path(), clock);
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
    CHECK(storage.segment_of(id) == kSeg1);
  }
  SegmentStorage storage(dir.path(), clock);
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

// Figures, not assertions: `mailq_integration_tests "[segment-bench]"`. MAILQ_SEGMENT_BENCH_DIR
// picks the file system (default /tmp), MAILQ_SEGMENT_BENCH_N
// the number of messages for the load (default 200000).
TEST_CASE("segment spool benchmark: group commit and load rate", "[.][segment-bench]") {
  using Clock = std::chrono::steady_clock;
  auto seconds = [](Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double>(b - a).count();
  };
  const char* where = std::getenv("MAILQ_SEGMENT_BENCH_DIR");
  const char* n_env = std::getenv("MAILQ_SEGMENT_BENCH_N");
  const std::size_t n = n_env ? std::strtoul(n_env, nullptr, 10) : 200000;
  TempDir dir(where && *where ? where : "/tmp");
  ManualClock clock;
  const std::string body = binary_body(2048);
  const std::size_t per_turn = 1000;
  {
    SegmentStorage s(dir.path(), clock);
    std::size_t done = 0;
    const auto t0 = Clock::now();
    for (std::size_t i = 0; i < n; i += per_turn) {
      for (std::size_t k = i; k < std::min(n, i + per_turn); ++k) {
        s.insert(sample_record(k + 1, 1), body, [&](mailq::Result<void> stored) {
          REQUIRE_FALSE(stored.code());
          ++done;
        });
      }
      clock.run_pending();
    }
    const auto t1 = Clock::now();
    REQUIRE(done == n);
    auto st = s.stats();
    WARN("insert: " << n << " messages of 2 KB, " << per_turn
                    << " per loop turn: " << seconds(t0, t1) << " s = " << n / seconds(t0, t1)
                    << " msgs/s; " << st.syncs << " fdatasyncs, " << st.segments << " segments, "
                    << st.total_bytes / n << " bytes per message");
  }
  ::sync();
  SegmentStorage s(dir.path(), clock);
  const auto t0 = Clock::now();
  Loaded l = load_all(s);
  const auto t1 = Clock::now();
  REQUIRE(l.records.size() == n);
  WARN("load (warm cache): " << n << " messages in " << seconds(t0, t1)
                             << " s = " << n / seconds(t0, t1) << " msgs/s");
}
