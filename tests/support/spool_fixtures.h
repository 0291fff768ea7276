// Helpers of the spool tests (test_spool.cpp, test_segment_spool.cpp): scratch directories
// (optionally on a small tmpfs), sample records with every field set, field-by-field
// comparisons, and insert/load shorthands for any Storage on a ManualClock.
#pragma once

#include <catch2/catch.hpp>

#include <stdlib.h>
#include <sys/mount.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "mailq/clock.h"
#include "mailq/error.h"
#include "mailq/message.h"
#include "mailq/storage.h"

namespace mailq {
namespace spool_test {

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

// A fresh directory under /tmp, removed (with anything mounted on it unmounted) at the end.
class TempDir {
 public:
  explicit TempDir(const std::string& parent = "/tmp") {
    std::string tmpl = parent + "/mailq-spool-test-XXXXXX";
    char* p = ::mkdtemp(tmpl.data());
    REQUIRE(p != nullptr);
    path_ = p;
  }
  ~TempDir() {
    if (mounted_) ::umount2(path_.c_str(), MNT_DETACH);
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& sub) const { return path_ + "/" + sub; }
  // Mounts a tmpfs of `size` on the directory; false when not permitted.
  bool mount_tmpfs(const std::string& size) {
    std::string opts = "size=" + size + ",mode=0755";
    if (::mount("tmpfs", path_.c_str(), "tmpfs", 0, opts.c_str()) != 0) return false;
    mounted_ = true;
    return true;
  }

 private:
  std::string path_;
  bool mounted_ = false;
};

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

inline void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

inline std::vector<std::string> list_dir(const std::string& path) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(path, ec)) out.push_back(e.path().filename());
  std::sort(out.begin(), out.end());
  return out;
}

inline TimePoint at_ns(std::int64_t ns) {
  return TimePoint(std::chrono::duration_cast<TimePoint::duration>(std::chrono::nanoseconds(ns)));
}

// A record with every field set to something other than its default.
inline MessageRecord sample_record(std::uint64_t id, std::size_t recipients = 3) {
  MessageRecord m;
  m.id = MessageId{id};
  m.reverse_path = "adam@hosta.sesta.com";
  m.source_channel = "tcp_internal";
  m.message_id = "<01IRUD7SVA3Q9UN2D4@sesta.com>";
  m.envid = "QQ314159";
  m.ret = mailq::DsnRet::headers;
  m.arrival = at_ns(1'700'000'000'123'456'789);
  m.size = 4242;
  m.attempts = 0;
  m.held = false;
  for (std::size_t i = 0; i < recipients; ++i) {
    RecipientRecord r;
    r.address = "user" + std::to_string(i) + "@some.org";
    r.orcpt = "rfc822;orig" + std::to_string(i) + "@some.org";
    r.notify = static_cast<std::uint8_t>(mailq::kNotifyFailure | mailq::kNotifyDelay);
    r.route = "tcp_local";
    r.state = RecipientState::queued;
    r.next_attempt = at_ns(1'700'000'000'123'456'789 + static_cast<std::int64_t>(i));
    m.recipients.push_back(r);
  }
  return m;
}

inline void require_same(const RecipientRecord& a, const RecipientRecord& b) {
  CHECK(a.address == b.address);
  CHECK(a.orcpt == b.orcpt);
  CHECK(a.notify == b.notify);
  CHECK(a.route == b.route);
  CHECK(a.state == b.state);
  CHECK(a.attempts == b.attempts);
  CHECK(a.next_attempt == b.next_attempt);
  CHECK(a.last_reply == b.last_reply);
  CHECK(a.remote_mta == b.remote_mta);
  CHECK(a.delay_notified == b.delay_notified);
}

inline void require_same(const MessageRecord& a, const MessageRecord& b) {
  CHECK(a.id == b.id);
  CHECK(a.reverse_path == b.reverse_path);
  CHECK(a.source_channel == b.source_channel);
  CHECK(a.message_id == b.message_id);
  CHECK(a.envid == b.envid);
  CHECK(a.ret == b.ret);
  CHECK(a.arrival == b.arrival);
  CHECK(a.size == b.size);
  CHECK(a.attempts == b.attempts);
  CHECK(a.held == b.held);
  REQUIRE(a.recipients.size() == b.recipients.size());
  for (std::size_t i = 0; i < a.recipients.size(); ++i)
    require_same(a.recipients[i], b.recipients[i]);
}

inline void require_same(const AttemptRecord& a, const AttemptRecord& b) {
  CHECK(a.route == b.route);
  CHECK(a.time == b.time);
  CHECK(a.reply == b.reply);
  CHECK(a.recipient == b.recipient);
  CHECK(a.diagnostic == b.diagnostic);
}

// Inserts and completes the batch; returns the result.
inline mailq::Result<void> insert_outcome(mailq::Storage& s, ManualClock& clock,
                                          const MessageRecord& m, std::string_view body) {
  mailq::Result<void> result = mailq::Error(mailq::errc::bad_state, "no callback");
  bool called = false;
  s.insert(m, body, [&](mailq::Result<void> stored) {
    called = true;
    result = std::move(stored);
  });
  clock.run_pending();
  REQUIRE(called);
  return result;
}

// Inserts and completes the batch; returns the error code (empty on success).
inline std::error_code insert_result(mailq::Storage& s, ManualClock& clock, const MessageRecord& m,
                                     std::string_view body) {
  return insert_outcome(s, clock, m, body).code();
}

// Inserts and completes the batch; requires success.
inline void insert_ok(mailq::Storage& s, ManualClock& clock, const MessageRecord& m,
                      std::string_view body) {
  const auto r = insert_outcome(s, clock, m, body);
  INFO((r ? std::string() : r.error().message));
  REQUIRE(r.ok());
}

// The text of an error (what a failing call says); "" for a success.
inline std::string text_of(const mailq::Result<void>& r) {
  return r ? std::string() : r.error().message;
}

struct Loaded {
  std::vector<MessageRecord> records;
  RecoveryReport report;
  std::error_code ec;
  std::string error;  ///< the error's text when load failed
};

inline Loaded load_all(mailq::Storage& s) {
  Loaded out;
  auto loaded =
      s.load([&](MessageRecord&& r) { out.records.push_back(std::move(r)); }, &out.report);
  out.ec = loaded.code();
  out.error = text_of(loaded);
  return out;
}

inline Reply deferral_reply() {
  return Reply(451, "4.4.1",
               "[internal] connection was not attempted: domain is marked down (too many "
               "connection failures)");
}

inline AttemptRecord sample_attempt(int n) {
  AttemptRecord a;
  a.route = "default-non-local-route";
  a.time = at_ns(1'700'000'100'000'000'000 + n);
  a.reply = deferral_reply();
  a.recipient = "user" + std::to_string(n) + "@some.org";
  a.diagnostic = "TCP active open: Failed connect()    Error: no route to host";
  return a;
}

// The change that records every recipient of `m` as it is (and its attempts and held flag).
inline mailq::RecordChange change_of_all(const MessageRecord& m) {
  std::vector<std::size_t> all;
  for (std::size_t i = 0; i < m.recipients.size(); ++i) all.push_back(i);
  return mailq::change_of(m, std::move(all));
}

// Updates of a message with many recipients (sample_record(id, 40), stored) stay minimal:
// recipient 23 deferred writes that recipient only, unsynced; recipient 39 delivered writes
// that one only, synced; the change between the record and itself writes nothing; an index
// beyond the recipient list is refused. `record_size(change)` is the storage's update record
// size; `m` ends as updated.
template <class AnyStorage, class RecordSize>
void check_minimal_updates(AnyStorage& s, MessageRecord& m, RecordSize record_size) {
  m.recipients[23].state = RecipientState::deferred;
  m.recipients[23].attempts = 1;
  m.recipients[23].last_reply = deferral_reply();
  auto before = s.stats();
  REQUIRE(s.update(mailq::change_of(m, {23})));
  CHECK(s.stats().bytes_written - before.bytes_written == record_size(mailq::change_of(m, {23})));
  CHECK(s.stats().synced_updates == 0);
  // A final state of another recipient: that one only, synced.
  m.recipients[39].state = RecipientState::delivered;
  m.recipients[39].last_reply = Reply(250, "2.0.0", "Ok");
  before = s.stats();
  REQUIRE(s.update(mailq::change_of(m, {39})));
  CHECK(s.stats().bytes_written - before.bytes_written == record_size(mailq::change_of(m, {39})));
  CHECK(s.stats().synced_updates == 1);
  // Nothing changed: nothing written.
  before = s.stats();
  REQUIRE(s.update(mailq::change_between(m, m)));
  CHECK(s.stats().bytes_written == before.bytes_written);
  // The recipient list is immutable: an index beyond it is refused.
  mailq::RecordChange beyond = mailq::change_of(m, {39});
  beyond.recipients[0].index = 40;
  const auto refused = s.update(beyond);
  CHECK(refused.code() == mailq::errc::bad_state);
  CHECK(text_of(refused) == "update 0000000000007: no recipient 40, stored 40");
}

inline std::string binary_body(std::size_t n) {
  std::string body = "Subject: test\r\nMessage-ID: <x@y>\r\n\r\n";
  for (std::size_t i = 0; body.size() < n; ++i) body.push_back(static_cast<char>((i * 131) & 0xFF));
  body.resize(n);
  return body;
}

}  // namespace spool_test
}  // namespace mailq
