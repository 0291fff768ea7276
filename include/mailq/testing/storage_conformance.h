// mailq — the Storage conformance suite: checks a Storage against the contract of storage.h.
//
// Header-only and free of any test framework (the standard library and mailq's core headers
// only): a host's test calls `check_storage_conformance` with a factory for its storage and
// fails with the lines it returns, in whatever framework it uses:
//
//     auto failures = mailq::testing::check_storage_conformance(
//         [&](mailq::Clock& clock) { return std::make_unique<MyStorage>(dir, clock); });
//     for (const auto& f : failures) ADD_FAILURE() << f;  // Catch2: CHECK(failures.empty())
//
// The suite runs the storage on its own ManualClock (a storage that completes work from timers
// gets them run between steps) and inserts a few dozen messages with ids from
// `StorageConformanceOptions::first_id`; give it an empty place. It checks, each check named
// at the head of its failure lines:
//   insert          `done` runs exactly once, success; the body reads back byte for byte
//   insert refused  a stored id, id 0, no recipients: refused with the code and words of the
//                   contract, nothing stored touched
//   recovery        every MessageRecord field comes back (after a reopen when durable)
//   attempt rows    every AttemptRecord field comes back, in order (also after a reopen)
//   update          each mutable field through a RecordChange, held and released, a final
//                   state: each durable on return (a reopen shows it), other recipients
//                   untouched
//   update refused  an index the message does not have, indices twice: refused, no change
//   remove          gone at once and for good (not read, updated or loaded again)
//   unknown id      update, append_attempt, remove, read_body, read_attempts: not_found
//   load            `each` once per message; it may update and remove the message it is given
//   destroyed       a storage destroyed with an insert pending never runs its `done` after
//   failures        (with `fail_writes`) a failed insert leaves nothing, a failed final
//                   update and a failed removal leave the previous state, in memory and after
//                   a reopen; each failure says storage_failure, with words
//   torn write      (with `tear_last_write`) a write cut short by a power cut: load succeeds,
//                   the messages before it come back whole, the torn one whole or not at all
// Every error must carry words (a non-empty message).
//
// Durability across a crash (kill -9, power loss) is beyond one process: the spools have their
// own crash tests (tests/crash/). A storage that is not durable (MemoryStorage) is checked with
// `durable = false`: what a reopen would show is then read through `load` on the same instance.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "mailq/clock.h"
#include "mailq/error.h"
#include "mailq/message.h"
#include "mailq/reply.h"
#include "mailq/storage.h"

namespace mailq {
namespace testing {

struct StorageConformanceOptions {
  /// Whether the storage keeps what it stored across instances: `open` called again, after
  /// the previous instance was destroyed, gives back the same messages. The checks that
  /// reopen need it; MemoryStorage is not durable (a new instance is empty) and is checked
  /// with this false, through `load` on the same instance.
  bool durable = true;
  /// The ids the checks use start here (a few dozen above it).
  std::uint64_t first_id = 0x0D00000000000001ull;
  /// How far the clock is moved before a reopen, so that deferred work (syncs) runs.
  Duration settle = std::chrono::seconds(5);
  /// Optional, the host's fault injection: while called with true, the storage's medium fails
  /// (a full disk, an I/O error: what the storage sees from its writes and syncs). Enables the
  /// "failures" check.
  std::function<void(bool failing)> fail_writes;
  /// Optional, for a durable storage: called while the storage is closed, damages its newest
  /// write the way a power cut in the middle of it would (cuts the newest file short). The
  /// message written last was never acknowledged: the storage may drop it, never garble it.
  /// Enables the "torn write" check.
  std::function<void()> tear_last_write;
};

/// Opens the storage under test with the suite's clock: again after the previous instance was
/// destroyed, to reopen the same place (a durable storage). nullptr when it cannot be opened
/// (reported as a failure).
using StorageFactory = std::function<std::unique_ptr<Storage>(Clock& clock)>;

namespace storage_conformance_detail {

inline std::string shown(const std::string& s) {
  std::string out = "\"";
  for (char c : s.substr(0, 60)) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7F || u == '"' || u == '\\') {
      static const char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[u >> 4];
      out += kHex[u & 15];
    } else {
      out += c;
    }
  }
  if (s.size() > 60) out += "...(" + std::to_string(s.size()) + " bytes)";
  return out + "\"";
}

inline std::string shown(TimePoint t) {
  return std::to_string(
             std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count()) +
         " ns";
}

inline std::string shown(const Reply& r) {
  return std::to_string(r.code) + " " + shown(r.enhanced) + " " + shown(r.text);
}

template <class T>
std::string shown(const T& v) {
  if constexpr (std::is_same_v<T, bool>) {
    return v ? "true" : "false";
  } else if constexpr (std::is_unsigned_v<T>) {
    return std::to_string(static_cast<unsigned long long>(v));
  } else {
    return std::to_string(static_cast<long long>(v));
  }
}

// Adds "<field>: stored X, got Y" to `out` when the values differ.
template <class T>
void compare(std::vector<std::string>& out, const std::string& field, const T& want, const T& got) {
  if (!(want == got)) out.push_back(field + ": stored " + shown(want) + ", got " + shown(got));
}

// The fields of `got` that differ from `want`, named.
inline std::vector<std::string> differences(const MessageRecord& want, const MessageRecord& got) {
  std::vector<std::string> out;
  compare(out, "id", want.id.value, got.id.value);
  compare(out, "reverse_path", want.reverse_path, got.reverse_path);
  compare(out, "source_channel", want.source_channel, got.source_channel);
  compare(out, "message_id", want.message_id, got.message_id);
  compare(out, "envid", want.envid, got.envid);
  compare(out, "ret", static_cast<int>(want.ret), static_cast<int>(got.ret));
  compare(out, "arrival", want.arrival, got.arrival);
  compare(out, "size", want.size, got.size);
  compare(out, "attempts", want.attempts, got.attempts);
  compare(out, "held", want.held, got.held);
  compare(out, "recipient count", want.recipients.size(), got.recipients.size());
  const std::size_t n = std::min(want.recipients.size(), got.recipients.size());
  for (std::size_t i = 0; i < n; ++i) {
    const RecipientRecord& a = want.recipients[i];
    const RecipientRecord& b = got.recipients[i];
    const std::string r = "recipient " + std::to_string(i) + " ";
    compare(out, r + "address", a.address, b.address);
    compare(out, r + "orcpt", a.orcpt, b.orcpt);
    compare(out, r + "notify", a.notify, b.notify);
    compare(out, r + "route", a.route, b.route);
    compare(out, r + "state", static_cast<int>(a.state), static_cast<int>(b.state));
    compare(out, r + "attempts", a.attempts, b.attempts);
    compare(out, r + "next_attempt", a.next_attempt, b.next_attempt);
    compare(out, r + "last_reply", a.last_reply, b.last_reply);
    compare(out, r + "remote_mta", a.remote_mta, b.remote_mta);
    compare(out, r + "delay_notified", a.delay_notified, b.delay_notified);
  }
  return out;
}

inline std::vector<std::string> differences(const AttemptRecord& want, const AttemptRecord& got) {
  std::vector<std::string> out;
  compare(out, "route", want.route, got.route);
  compare(out, "time", want.time, got.time);
  compare(out, "reply", want.reply, got.reply);
  compare(out, "recipient", want.recipient, got.recipient);
  compare(out, "diagnostic", want.diagnostic, got.diagnostic);
  return out;
}

inline TimePoint at_ns(std::int64_t ns) {
  return TimePoint(std::chrono::duration_cast<TimePoint::duration>(std::chrono::nanoseconds(ns)));
}

// A message with every field away from its default, each recipient different.
inline MessageRecord sample_message(std::uint64_t id, std::size_t recipients) {
  MessageRecord m;
  m.id = MessageId{id};
  m.reverse_path = "sender+" + std::to_string(id % 1000) + "@conformance.example";
  m.source_channel = "tcp_conformance";
  m.message_id = "<" + std::to_string(id) + ".conformance@example.org>";
  m.envid = "ENV" + std::to_string(id % 97);
  m.ret = DsnRet::headers;
  m.arrival = at_ns(1'700'000'000'123'456'789LL + static_cast<std::int64_t>(id % 1000));
  m.size = 4242 + id % 7;
  m.attempts = 2;
  m.held = false;
  for (std::size_t i = 0; i < recipients; ++i) {
    RecipientRecord r;
    r.address = "user" + std::to_string(i) + "@rcpt" + std::to_string(i) + ".example";
    r.orcpt = i == 1 ? std::string() : "rfc822;Orig" + std::to_string(i) + "@Example.com";
    r.notify = static_cast<std::uint8_t>(i == 2 ? kNotifyNever : kNotifyFailure | kNotifyDelay);
    r.route = i == 2 ? "tcp_other" : "tcp_local";
    r.state = i == 0 ? RecipientState::queued : RecipientState::deferred;
    r.attempts = static_cast<std::uint32_t>(i);
    r.next_attempt = m.arrival + std::chrono::minutes(15) + std::chrono::nanoseconds(i + 1);
    if (i != 0) r.last_reply = Reply(451, "4.4." + std::to_string(i), "try again later");
    r.remote_mta = i == 0 ? std::string() : "mx" + std::to_string(i) + ".rcpt.example";
    r.delay_notified = i == 1;
    m.recipients.push_back(r);
  }
  return m;
}

inline std::string sample_body(std::uint64_t id) {
  std::string body = "Subject: conformance " + std::to_string(id) + "\r\n\r\n";
  for (int c = 0; c < 256; ++c) body.push_back(static_cast<char>(c));
  return body + "\r\n.\r\n..\r\nend\r\n";
}

inline AttemptRecord sample_attempt(int n) {
  AttemptRecord a;
  a.route = "default-non-local-route";
  a.time = at_ns(1'700'000'100'000'000'001LL + n);
  a.reply = Reply(451, "4.4.1", "[internal] connection was not attempted " + std::to_string(n));
  a.recipient = "user1@rcpt1.example";
  a.diagnostic = std::string("TCP active open: Failed connect() \0 \r\n", 38) + std::to_string(n);
  return a;
}

struct InsertCalls {
  int calls = 0;
  bool after_destruction = false;
  Result<void> result = Error(errc::bad_state, "done did not run");
};

class Suite {
 public:
  Suite(const StorageFactory& open, const StorageConformanceOptions& options)
      : open_(open), options_(options), next_id_(options.first_id) {}

  std::vector<std::string> run() {
    check_ = "open";
    storage_ = open_(clock_);
    if (!storage_) {
      fail("the factory gave no storage");
      return failures_;
    }
    if (auto loaded = storage_->load([](MessageRecord&&) {}, nullptr); !loaded)
      fail("load of the empty storage failed: " + loaded.error().message);
    check_insert();
    check_insert_refused();
    check_recovery();
    check_attempt_rows();
    check_update();
    check_update_refused();
    check_remove();
    check_unknown_id();
    check_load();
    check_destroyed();
    if (options_.fail_writes) check_failures();
    if (options_.tear_last_write && options_.durable) check_torn_write();
    check_ = "insert";
    for (const auto& [id, calls] : inserts_) {
      if (calls->calls > 1) fail("done ran " + std::to_string(calls->calls) + " times for " + id);
      if (calls->after_destruction) fail("done ran after the storage was destroyed for " + id);
    }
    storage_.reset();
    clock_.run_pending();
    return failures_;
  }

 private:
  void fail(const std::string& what) { failures_.push_back(check_ + ": " + what); }

  MessageId new_id() { return MessageId{next_id_++}; }

  // Lets the storage complete what it completes from timers (a group commit).
  void settle() { clock_.run_pending(); }

  // An error with the code the contract names, and words.
  template <class T>
  void expect_error(const Result<T>& r, errc code, const std::string& what) {
    if (r.ok()) {
      fail(what + ": succeeded, expected " + make_error_code(code).message());
      return;
    }
    if (r.error().code != code)
      fail(what + ": " + r.error().code.message() + " (" + r.error().message + "), expected " +
           make_error_code(code).message());
    if (r.error().message.empty()) fail(what + ": the error has no words");
  }

  template <class T>
  bool expect_ok(const Result<T>& r, const std::string& what) {
    if (r.ok()) return true;
    fail(what + " failed: " + r.error().message);
    return false;
  }

  Result<void> insert(const MessageRecord& m, const std::string& body) {
    auto calls = std::make_shared<InsertCalls>();
    inserts_.emplace_back(m.id.to_string(), calls);
    storage_->insert(m, body, [calls](Result<void> r) {
      ++calls->calls;
      calls->result = std::move(r);
    });
    settle();
    if (calls->calls != 1)
      fail("done ran " + std::to_string(calls->calls) + " times for " + m.id.to_string());
    return calls->result;
  }

  // Inserts and requires success.
  bool stored(const MessageRecord& m, const std::string& body) {
    return expect_ok(insert(m, body), "insert of " + m.id.to_string());
  }

  // Every message load gives, by id (each must come once).
  std::map<std::uint64_t, MessageRecord> load_all() {
    std::map<std::uint64_t, MessageRecord> out;
    std::map<std::uint64_t, int> times;
    auto loaded = storage_->load(
        [&](MessageRecord&& m) {
          ++times[m.id.value];
          out[m.id.value] = std::move(m);
        },
        nullptr);
    if (!loaded) fail("load failed: " + loaded.error().message);
    for (const auto& [id, n] : times)
      if (n != 1)
        fail("load gave " + MessageId{id}.to_string() + " " + std::to_string(n) + " times");
    return out;
  }

  // What a restart would find: the storage reopened (durable) or loaded again.
  std::map<std::uint64_t, MessageRecord> recover() {
    if (options_.durable) {
      clock_.advance(options_.settle);
      storage_.reset();
      clock_.run_pending();
      storage_ = open_(clock_);
      if (!storage_) {
        fail("the factory gave no storage when reopening");
        return {};
      }
    }
    return load_all();
  }

  // The message as recovered equals `want`, field by field.
  void expect_recovered(const std::map<std::uint64_t, MessageRecord>& found,
                        const MessageRecord& want, const std::string& what) {
    auto it = found.find(want.id.value);
    if (it == found.end()) {
      fail(what + ": " + want.id.to_string() + " was not recovered");
      return;
    }
    for (const auto& d : differences(want, it->second)) fail(what + ": " + d);
  }

  void expect_body(MessageId id, const std::string& body, const std::string& what) {
    auto got = storage_->read_body(id);
    if (!expect_ok(got, what + ": read_body of " + id.to_string())) return;
    if (*got != body)
      fail(what + ": the body of " + id.to_string() + " differs: " + shown(*got) + ", stored " +
           shown(body));
  }

  void check_insert() {
    check_ = "insert";
    const MessageRecord m = sample_message(new_id().value, 3);
    if (!stored(m, sample_body(m.id.value))) return;
    expect_body(m.id, sample_body(m.id.value), "after insert");
    auto rows = storage_->read_attempts(m.id);
    if (expect_ok(rows, "read_attempts of a new message") && !rows->empty())
      fail("a new message has " + std::to_string(rows->size()) + " attempt rows");
    recovery_message_ = m;
  }

  void check_insert_refused() {
    check_ = "insert refused";
    const MessageRecord m = sample_message(new_id().value, 2);
    if (!stored(m, "original body")) return;
    MessageRecord again = sample_message(m.id.value, 1);
    expect_error(insert(again, "another body"), errc::bad_state, "an insert of a stored id");
    MessageRecord zero = sample_message(0, 1);
    expect_error(insert(zero, "body"), errc::invalid_parameter, "an insert of id 0");
    MessageRecord none = sample_message(new_id().value, 0);
    expect_error(insert(none, "body"), errc::invalid_parameter, "an insert without recipients");
    expect_body(m.id, "original body", "after the refused insert");
    const auto found = load_all();
    expect_recovered(found, m, "after the refused insert");
    if (found.count(none.id.value)) fail("a refused insert was stored");
  }

  void check_recovery() {
    check_ = "recovery";
    if (recovery_message_.id.value == 0) return;  // the insert check failed
    const auto found = recover();
    expect_recovered(found, recovery_message_, "every field");
    expect_body(recovery_message_.id, sample_body(recovery_message_.id.value), "the body");
  }

  void check_attempt_rows() {
    check_ = "attempt rows";
    const MessageRecord m = sample_message(new_id().value, 2);
    if (!stored(m, "body")) return;
    std::vector<AttemptRecord> rows;
    for (int i = 0; i < 3; ++i) {
      rows.push_back(sample_attempt(i));
      if (!expect_ok(storage_->append_attempt(m.id, rows.back()), "append_attempt")) return;
    }
    auto expect_rows = [&](const std::string& when) {
      auto got = storage_->read_attempts(m.id);
      if (!expect_ok(got, "read_attempts " + when)) return;
      if (got->size() != rows.size()) {
        fail(std::to_string(got->size()) + " rows " + when + ", appended " +
             std::to_string(rows.size()));
        return;
      }
      for (std::size_t i = 0; i < rows.size(); ++i)
        for (const auto& d : differences(rows[i], (*got)[i]))
          fail("row " + std::to_string(i) + " " + when + ": " + d);
    };
    expect_rows("as appended");
    recover();
    expect_rows("after recovery");
  }

  void check_update() {
    check_ = "update";
    MessageRecord m = sample_message(new_id().value, 3);
    if (!stored(m, "body")) return;
    // Each mutable field alone, on recipient 1 (others must not move), then the message's.
    struct Step {
      const char* what;
      std::function<void(MessageRecord&)> edit;
      std::vector<std::size_t> recipients;
    };
    const std::vector<Step> steps = {
        {"recipient state",
         [](MessageRecord& x) { x.recipients[1].state = RecipientState::queued; },
         {1}},
        {"recipient attempts", [](MessageRecord& x) { x.recipients[1].attempts = 7; }, {1}},
        {"recipient next_attempt",
         [](MessageRecord& x) { x.recipients[1].next_attempt += std::chrono::nanoseconds(999); },
         {1}},
        {"recipient reply code",
         [](MessageRecord& x) { x.recipients[1].last_reply.code = 452; },
         {1}},
        {"recipient enhanced code",
         [](MessageRecord& x) { x.recipients[1].last_reply.enhanced = "4.2.2"; },
         {1}},
        {"recipient reply text",
         [](MessageRecord& x) { x.recipients[1].last_reply.text = "mailbox full"; },
         {1}},
        {"recipient remote_mta",
         [](MessageRecord& x) { x.recipients[1].remote_mta = "mx9.rcpt.example"; },
         {1}},
        {"recipient delay_notified",
         [](MessageRecord& x) { x.recipients[1].delay_notified = false; },
         {1}},
        {"message attempts", [](MessageRecord& x) { x.attempts = 3; }, {}},
        {"held", [](MessageRecord& x) { x.held = true; }, {}},
        {"released", [](MessageRecord& x) { x.held = false; }, {}},
        {"a final state",
         [](MessageRecord& x) {
           x.recipients[2].state = RecipientState::delivered;
           x.recipients[2].last_reply = Reply(250, "2.0.0", "Ok: queued as 4B2F");
           x.recipients[2].remote_mta = "mx2.rcpt.example";
         },
         {2}},
        {"every field of two recipients",
         [](MessageRecord& x) {
           for (std::size_t i : {0u, 1u}) {
             RecipientRecord& r = x.recipients[i];
             r.state = RecipientState::bounced;
             r.attempts += 1;
             r.next_attempt = x.arrival + std::chrono::hours(3);
             r.last_reply = Reply(550, "5.1.1", "no such user " + std::to_string(i));
             r.remote_mta = "mx.other.example";
             r.delay_notified = !r.delay_notified;
           }
           x.attempts += 1;
         },
         {0, 1}},
    };
    for (const Step& step : steps) {
      step.edit(m);
      if (!expect_ok(storage_->update(change_of(m, step.recipients)),
                     std::string("update of ") + step.what))
        return;
      expect_recovered(recover(), m, step.what);
    }
    // A change that lists nothing and changes nothing is accepted and changes nothing.
    if (expect_ok(storage_->update(change_of(m)), "an empty change"))
      expect_recovered(recover(), m, "an empty change");
  }

  void check_update_refused() {
    check_ = "update refused";
    const MessageRecord m = sample_message(new_id().value, 2);
    if (!stored(m, "body")) return;
    MessageRecord edited = m;
    edited.recipients[1].state = RecipientState::delivered;
    RecordChange beyond = change_of(edited, {1});
    beyond.recipients[0].index = 2;
    expect_error(storage_->update(beyond), errc::bad_state,
                 "a change naming a recipient the message does not have");
    RecordChange twice = change_of(edited, {1});
    twice.recipients.push_back(twice.recipients[0]);
    expect_error(storage_->update(twice), errc::invalid_parameter,
                 "a change listing a recipient twice");
    expect_recovered(recover(), m, "after the refused changes");
  }

  void check_remove() {
    check_ = "remove";
    MessageRecord m = sample_message(new_id().value, 2);
    if (!stored(m, "body")) return;
    if (!expect_ok(storage_->append_attempt(m.id, sample_attempt(1)), "append_attempt")) return;
    if (!expect_ok(storage_->remove(m.id), "remove")) return;
    expect_error(storage_->read_body(m.id), errc::not_found, "read_body of a removed message");
    expect_error(storage_->read_attempts(m.id), errc::not_found,
                 "read_attempts of a removed message");
    m.held = true;
    expect_error(storage_->update(change_of(m)), errc::not_found, "update of a removed message");
    expect_error(storage_->remove(m.id), errc::not_found, "a second remove");
    if (load_all().count(m.id.value)) fail("load gives a removed message");
    if (recover().count(m.id.value)) fail("a removed message came back");
  }

  void check_unknown_id() {
    check_ = "unknown id";
    const MessageRecord m = sample_message(new_id().value, 1);
    expect_error(storage_->update(change_of(m)), errc::not_found, "update");
    expect_error(storage_->append_attempt(m.id, sample_attempt(0)), errc::not_found,
                 "append_attempt");
    expect_error(storage_->remove(m.id), errc::not_found, "remove");
    expect_error(storage_->read_body(m.id), errc::not_found, "read_body");
    expect_error(storage_->read_attempts(m.id), errc::not_found, "read_attempts");
  }

  void check_load() {
    check_ = "load";
    MessageRecord a = sample_message(new_id().value, 1);
    const MessageRecord b = sample_message(new_id().value, 1);
    const MessageRecord c = sample_message(new_id().value, 2);
    if (!stored(a, "a") || !stored(b, "b") || !stored(c, "c")) return;
    recover();
    // `each` updates the first, removes the second and appends to and reads the third.
    int seen = 0;
    auto loaded = storage_->load(
        [&](MessageRecord&& m) {
          if (m.id == a.id) {
            ++seen;
            MessageRecord held = m;
            held.held = true;
            expect_ok(storage_->update(change_of(held)), "update from inside load");
          } else if (m.id == b.id) {
            ++seen;
            expect_ok(storage_->remove(m.id), "remove from inside load");
          } else if (m.id == c.id) {
            ++seen;
            expect_ok(storage_->append_attempt(m.id, sample_attempt(5)),
                      "append_attempt from inside load");
            auto body = storage_->read_body(m.id);
            if (expect_ok(body, "read_body from inside load") && *body != "c")
              fail("read_body from inside load gave " + shown(*body));
          }
        },
        nullptr);
    if (!loaded) fail("load failed: " + loaded.error().message);
    if (seen != 3) fail("load gave " + std::to_string(seen) + " of the 3 messages");
    a.held = true;
    const auto found = load_all();
    expect_recovered(found, a, "the message updated from inside load");
    if (found.count(b.id.value)) fail("the message removed from inside load is still there");
    expect_recovered(found, c, "the message appended to from inside load");
    auto rows = storage_->read_attempts(c.id);
    if (expect_ok(rows, "read_attempts") && rows->size() != 1)
      fail("the row appended from inside load: " + std::to_string(rows->size()) + " rows");
  }

  void check_destroyed() {
    check_ = "destroyed";
    const MessageRecord m = sample_message(new_id().value, 1);
    auto calls = std::make_shared<InsertCalls>();
    inserts_.emplace_back(m.id.to_string(), calls);
    auto destroyed = std::make_shared<bool>(false);
    storage_->insert(m, "pending", [calls, destroyed](Result<void> r) {
      ++calls->calls;
      if (*destroyed) calls->after_destruction = true;
      calls->result = std::move(r);
    });
    storage_.reset();
    *destroyed = true;
    clock_.advance(options_.settle);
    storage_ = open_(clock_);
    if (!storage_) {
      fail("the factory gave no storage when reopening");
      return;
    }
    const auto found = load_all();
    // Whether an insert dropped by the destruction came back is the storage's business (it
    // was never acknowledged); if it did, it is whole.
    if (options_.durable && found.count(m.id.value)) {
      expect_recovered(found, m, "the insert pending at destruction");
      expect_body(m.id, "pending", "the insert pending at destruction");
    }
  }

  void check_failures() {
    check_ = "failures";
    MessageRecord m = sample_message(new_id().value, 2);
    if (!stored(m, "kept")) return;
    const MessageRecord before = m;
    settle();
    options_.fail_writes(true);
    const MessageRecord lost = sample_message(new_id().value, 1);
    expect_error(insert(lost, "lost"), errc::storage_failure, "an insert on a failing medium");
    MessageRecord edited = m;
    edited.recipients[0].state = RecipientState::delivered;  // final: durable on return
    edited.recipients[0].last_reply = Reply(250, "2.0.0", "Ok");
    expect_error(storage_->update(change_of(edited, {0})), errc::storage_failure,
                 "a final update on a failing medium");
    // A removal that is durable later may succeed here; if it fails, the message stays.
    const auto removed = storage_->remove(m.id);
    options_.fail_writes(false);
    if (removed.ok()) {
      if (recover().count(m.id.value)) fail("a removal that succeeded did not hold");
      return;
    }
    expect_error(removed, errc::storage_failure, "a removal on a failing medium");
    const auto found = load_all();
    if (found.count(lost.id.value)) fail("the failed insert left the message behind");
    expect_recovered(found, before, "after the failed update, in memory");
    const auto reopened = recover();
    if (reopened.count(lost.id.value)) fail("the failed insert came back after a reopen");
    expect_recovered(reopened, before, "after the failed update, reopened");
    expect_body(m.id, "kept", "after the failures");
    // The medium works again: the same insert and update go through.
    if (stored(lost, "lost")) expect_body(lost.id, "lost", "the insert made again");
    if (expect_ok(storage_->update(change_of(edited, {0})), "the update made again"))
      expect_recovered(recover(), edited, "the update made again");
  }

  void check_torn_write() {
    check_ = "torn write";
    const MessageRecord a = sample_message(new_id().value, 2);
    const MessageRecord b = sample_message(new_id().value, 3);
    if (!stored(a, sample_body(a.id.value))) return;
    // b's insert is left pending (not acknowledged) when the storage goes.
    storage_->insert(b, sample_body(b.id.value), [](Result<void>) {});
    storage_.reset();
    clock_.run_pending();
    options_.tear_last_write();
    storage_ = open_(clock_);
    if (!storage_) {
      fail("the factory gave no storage after the torn write");
      return;
    }
    const auto found = load_all();
    expect_recovered(found, a, "the message before the torn write");
    expect_body(a.id, sample_body(a.id.value), "the message before the torn write");
    if (found.count(b.id.value)) {
      expect_recovered(found, b, "the torn message, recovered");
      expect_body(b.id, sample_body(b.id.value), "the torn message, recovered");
    }
    // The storage goes on working after the damage.
    const MessageRecord c = sample_message(new_id().value, 1);
    if (stored(c, "after")) expect_recovered(recover(), c, "a message stored after the damage");
  }

  const StorageFactory& open_;
  StorageConformanceOptions options_;
  ManualClock clock_;
  std::unique_ptr<Storage> storage_;
  std::uint64_t next_id_;
  std::string check_;
  std::vector<std::string> failures_;
  std::vector<std::pair<std::string, std::shared_ptr<InsertCalls>>> inserts_;
  MessageRecord recovery_message_;
};

}  // namespace storage_conformance_detail

/// Runs every check of the suite against the storage `open` gives. One line per failure,
/// "check: what went wrong"; empty when the storage keeps the contract (as far as one process
/// can tell).
inline std::vector<std::string> check_storage_conformance(
    const StorageFactory& open, const StorageConformanceOptions& options = {}) {
  return storage_conformance_detail::Suite(open, options).run();
}

}  // namespace testing
}  // namespace mailq
