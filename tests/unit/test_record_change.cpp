// RecordChange (include/mailq/storage.h): what an update carries, applied to a record,
// computed between two, built from a record and merged.
#include <catch2/catch.hpp>

#include "mailq/storage.h"

using mailq::change_between;
using mailq::change_of;
using mailq::MessageId;
using mailq::MessageRecord;
using mailq::RecipientRecord;
using mailq::RecipientState;
using mailq::RecordChange;
using mailq::Reply;
using mailq::TimePoint;

namespace {

MessageRecord three_recipients(std::uint64_t id) {
  MessageRecord m;
  m.id = MessageId{id};
  m.reverse_path = "a@b.example";
  for (int i = 0; i < 3; ++i) {
    RecipientRecord r;
    r.address = "r" + std::to_string(i) + "@c.example";
    r.route = "tcp_local";
    m.recipients.push_back(r);
  }
  return m;
}

bool same_recipient_state(const RecipientRecord& a, const RecipientRecord& b) {
  return a.state == b.state && a.attempts == b.attempts && a.next_attempt == b.next_attempt &&
         a.last_reply == b.last_reply && a.remote_mta == b.remote_mta &&
         a.delay_notified == b.delay_notified && a.address == b.address && a.route == b.route;
}

// Applying `c` to `from` gives `to` (held, attempts and every recipient's state).
void check_applies(const RecordChange& c, const MessageRecord& from, const MessageRecord& to) {
  MessageRecord applied = from;
  REQUIRE(apply_change(c, applied));
  CHECK(applied.attempts == to.attempts);
  CHECK(applied.held == to.held);
  REQUIRE(applied.recipients.size() == to.recipients.size());
  for (std::size_t i = 0; i < to.recipients.size(); ++i)
    CHECK(same_recipient_state(applied.recipients[i], to.recipients[i]));
}

}  // namespace

TEST_CASE("a change carries every mutable field of the recipients it lists", "[storage]") {
  MessageRecord before = three_recipients(7);
  MessageRecord after = before;
  after.attempts = 2;
  after.held = true;
  RecipientRecord& r = after.recipients[1];
  r.state = RecipientState::deferred;
  r.attempts = 2;
  r.next_attempt = TimePoint(std::chrono::seconds(1'700'000'000));
  r.last_reply = Reply(451, "4.3.0", "try later");
  r.remote_mta = "mx.c.example";
  r.delay_notified = true;

  const RecordChange c = change_between(before, after);
  CHECK(c.id == MessageId{7});
  CHECK(c.attempts == 2);
  CHECK(c.held);
  REQUIRE(c.recipients.size() == 1);
  CHECK(c.recipients[0].index == 1);
  CHECK_FALSE(c.makes_final());

  check_applies(c, before, after);

  // Each field alone makes a recipient changed.
  auto changed_by = [&](auto&& edit) {
    MessageRecord x = before;
    edit(x.recipients[2]);
    return change_between(before, x).recipients.size();
  };
  CHECK(changed_by([](RecipientRecord& x) { x.state = RecipientState::bounced; }) == 1);
  CHECK(changed_by([](RecipientRecord& x) { x.attempts = 9; }) == 1);
  CHECK(changed_by([](RecipientRecord& x) { x.next_attempt = TimePoint(std::chrono::hours(1)); }) ==
        1);
  CHECK(changed_by([](RecipientRecord& x) { x.last_reply.enhanced = "4.4.1"; }) == 1);
  CHECK(changed_by([](RecipientRecord& x) { x.remote_mta = "mx"; }) == 1);
  CHECK(changed_by([](RecipientRecord& x) { x.delay_notified = true; }) == 1);
  CHECK(changed_by([](RecipientRecord&) {}) == 0);
}

TEST_CASE("a change that does not fit the record is refused and changes nothing", "[storage]") {
  MessageRecord m = three_recipients(9);
  MessageRecord original = m;
  RecordChange c = change_of(m, {2});
  c.attempts = 5;
  c.recipients[0].index = 3;
  auto r = apply_change(c, m);
  REQUIRE_FALSE(r);
  CHECK(r.error().code == mailq::errc::bad_state);
  CHECK(r.error().message == "update 0000000000009: no recipient 3, stored 3");
  CHECK(m.attempts == original.attempts);

  RecordChange twice = change_of(m, {1});
  twice.recipients.push_back(twice.recipients[0]);
  r = apply_change(twice, m);
  REQUIRE_FALSE(r);
  CHECK(r.error().code == mailq::errc::invalid_parameter);
  CHECK(r.error().message == "update 0000000000009: recipient 1 out of order or twice");

  RecordChange other = change_of(three_recipients(10), {0});
  r = apply_change(other, m);
  REQUIRE_FALSE(r);
  CHECK(r.error().code == mailq::errc::invalid_parameter);
}

TEST_CASE("change_of lists the given recipients once each, in order", "[storage]") {
  MessageRecord m = three_recipients(11);
  m.recipients[0].state = RecipientState::delivered;
  const RecordChange c = change_of(m, {2, 0, 2});
  REQUIRE(c.recipients.size() == 2);
  CHECK(c.recipients[0].index == 0);
  CHECK(c.recipients[1].index == 2);
  CHECK(c.makes_final());
  CHECK(change_of(m).recipients.empty());
  REQUIRE(mailq::check_change(c, 3));
}

TEST_CASE("merged changes have the effect of applying both in turn", "[storage]") {
  MessageRecord m = three_recipients(12);
  MessageRecord one = m;
  one.attempts = 1;
  one.recipients[0].state = RecipientState::deferred;
  one.recipients[2].state = RecipientState::deferred;
  MessageRecord two = one;
  two.attempts = 2;
  two.held = true;
  two.recipients[1].state = RecipientState::bounced;
  two.recipients[2].state = RecipientState::delivered;

  RecordChange merged = change_between(m, one);
  mailq::merge_change(merged, change_between(one, two));
  REQUIRE(merged.recipients.size() == 3);
  for (std::size_t i = 0; i < 3; ++i) CHECK(merged.recipients[i].index == i);
  check_applies(merged, m, two);
}

TEST_CASE("MemoryStorage refuses what it does not hold, with the words of a spool", "[storage]") {
  mailq::MemoryStorage s;
  MessageRecord m = three_recipients(13);
  auto refused = s.update(change_of(m));
  REQUIRE_FALSE(refused);
  CHECK(refused.error().code == mailq::errc::not_found);
  CHECK(refused.error().message == "update: no message 000000000000D");
  CHECK(s.remove(m.id).error().message == "remove: no message 000000000000D");
  CHECK(s.append_attempt(m.id, {}).error().message == "append_attempt: no message 000000000000D");
  mailq::Result<void> stored = mailq::Error(mailq::errc::bad_state, "not called");
  s.insert(m, "body", [&](mailq::Result<void> r) { stored = std::move(r); });
  REQUIRE(stored);
  s.insert(m, "body", [&](mailq::Result<void> r) { stored = std::move(r); });
  REQUIRE_FALSE(stored);
  CHECK(stored.error().code == mailq::errc::bad_state);
  CHECK(stored.error().message == "insert 000000000000D: already stored");
  RecordChange beyond = change_of(m, {2});
  beyond.recipients[0].index = 3;
  CHECK(s.update(beyond).error().message == "update 000000000000D: no recipient 3, stored 3");
}
