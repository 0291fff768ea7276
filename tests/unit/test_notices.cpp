// The notices room (src/core/queue/notices.h): what outcomes do to a record, and which DSNs
// the NOTIFY rules call for. Pure.
#include <catch2/catch.hpp>

#include <random>

#include "core/queue/notices.h"

using namespace mailq;
using namespace mailq::detail;
using namespace std::chrono_literals;

namespace {

const TimePoint kT0 = TimePoint(std::chrono::hours(24 * 365 * 50));

MessageRecord record(std::size_t n) {
  MessageRecord m;
  m.id = MessageId{42};
  m.reverse_path = "sender@example.org";
  m.arrival = kT0;
  for (std::size_t i = 0; i < n; ++i) {
    RecipientRecord r;
    r.address = "r" + std::to_string(i) + "@example.com";
    r.route = "tcp_local";
    r.next_attempt = kT0;
    m.recipients.push_back(r);
  }
  return m;
}

RecipientOutcome outcome(std::size_t i, Reply r, bool counts = true) {
  RecipientOutcome o;
  o.index = i;
  o.reply = std::move(r);
  o.counts_as_attempt = counts;
  return o;
}

QueueConfig config() {
  QueueConfig c;
  c.retry.jitter = 0;
  return c;
}

}  // namespace

TEST_CASE("notices: delivered, bounced and deferred recipients, their attempts and retry time",
          "[queue][notices]") {
  MessageRecord m = record(4);
  m.recipients[3].state = RecipientState::delivered;  // final: left alone
  std::mt19937_64 rng(1);
  Hop hop{"mx.example.com", {"127.0.0.1", 1}, {"127.0.0.10", 25}, std::nullopt, "go ahead"};
  RecipientOutcome ok = outcome(0, Reply(250, "2.0.0", "Ok"));
  ok.hop = hop;
  ok.notes = {Note::of_transaction(hop, ok.reply)};
  const Applied a = apply_outcomes(
      m,
      {ok, outcome(1, Reply(550, "5.1.1", "no such user")), outcome(2, Reply(451, "4.3.0", "busy")),
       outcome(3, Reply(550, "5.0.0", "late")), outcome(9, Reply(250, "", "out of range"))},
      true, kT0 + 1min, config(), rng);
  CHECK(m.attempts == 1);
  CHECK(m.recipients[0].state == RecipientState::delivered);
  CHECK(m.recipients[0].remote_mta == "mx.example.com");
  CHECK(m.recipients[1].state == RecipientState::bounced);
  CHECK(m.recipients[1].remote_mta.empty());
  CHECK(m.recipients[2].state == RecipientState::deferred);
  CHECK(m.recipients[2].next_attempt == kT0 + 1min + 15min);
  CHECK(m.recipients[2].attempts == 1);
  CHECK(m.recipients[3].last_reply.empty());
  REQUIRE(a.touched.size() == 3);
  CHECK(a.touched[0].kind == EventKind::delivered);
  CHECK(a.touched[0].diagnostic ==
        std::vector<std::string>{"dns;mx.example.com (TCP|127.0.0.1|1|127.0.0.10|25)", "(go ahead)",
                                 "smtp; 250 2.0.0 Ok"});
  CHECK(a.touched[1].diagnostic == std::vector<std::string>{"550 5.1.1 no such user"});
  CHECK(a.bounced == std::vector<std::size_t>{1});
  REQUIRE(a.attempt_rows.size() == 1);
  CHECK(a.attempt_rows[0].recipient == "r2@example.com");
  CHECK(a.attempt_rows[0].reply == Reply(451, "4.3.0", "busy"));
  CHECK(a.delivered_count == 1);
  CHECK(a.bounced_count == 1);
  CHECK(a.deferred_count == 1);
}

TEST_CASE("notices: a self-imposed deferral is not an attempt and keeps the retry time",
          "[queue][notices]") {
  MessageRecord m = record(1);
  std::mt19937_64 rng(1);
  const Reply down = replies::domain_marked_down();
  const Applied a = apply_outcomes(m, {outcome(0, down, false)}, false, kT0 + 1min, config(), rng);
  CHECK(m.attempts == 0);
  CHECK(m.recipients[0].attempts == 0);
  CHECK(m.recipients[0].next_attempt == kT0);
  CHECK(m.recipients[0].last_reply == down);
  REQUIRE(a.attempt_rows.size() == 1);
  CHECK(a.attempt_rows[0].reply == down);
}

TEST_CASE("notices: the delay notice once per recipient after delay_notice_after",
          "[queue][notices]") {
  MessageRecord m = record(1);
  QueueConfig c = config();
  c.delay_notice_after = Duration(4h);
  std::mt19937_64 rng(1);
  auto a = apply_outcomes(m, {outcome(0, Reply(451, "", "x"))}, true, kT0 + 1h, c, rng);
  CHECK(a.delayed.empty());
  a = apply_outcomes(m, {outcome(0, Reply(451, "", "x"))}, true, kT0 + 5h, c, rng);
  CHECK(a.delayed == std::vector<std::size_t>{0});
  CHECK(m.recipients[0].delay_notified);
  a = apply_outcomes(m, {outcome(0, Reply(451, "", "x"))}, true, kT0 + 9h, c, rng);
  CHECK(a.delayed.empty());
}

TEST_CASE("notices: which recipients a DSN reports, by action and NOTIFY", "[queue][notices]") {
  MessageRecord m = record(5);
  m.recipients[0].notify = kNotifyDefault;
  m.recipients[1].notify = kNotifyNever;
  m.recipients[2].notify = kNotifySuccess;
  m.recipients[3].notify = kNotifyFailure | kNotifyDelay;
  m.recipients[4].notify = kNotifyDelay;
  for (auto& r : m.recipients) r.remote_mta = "mx.example.com";
  const QueueConfig c = config();
  const std::vector<std::size_t> all{0, 1, 2, 3, 4};
  auto finals = [](const std::optional<DsnInput>& in) {
    std::vector<std::string> out;
    if (in)
      for (auto& r : in->recipients) out.push_back(r.final_recipient);
    return out;
  };
  CHECK(finals(dsn_due(m, all, DsnAction::failed, c, kT0)) ==
        std::vector<std::string>{"r0@example.com", "r3@example.com"});
  // Without NOTIFY a delay is reported too (RFC 3461 §4.1 leaves it to the MTA).
  CHECK(finals(dsn_due(m, all, DsnAction::delayed, c, kT0)) ==
        std::vector<std::string>{"r0@example.com", "r3@example.com", "r4@example.com"});
  CHECK(finals(dsn_due(m, all, DsnAction::relayed, c, kT0)) ==
        std::vector<std::string>{"r2@example.com"});
  auto in = dsn_due(m, {0}, DsnAction::failed, c, kT0);
  REQUIRE(in);
  CHECK(in->to_address == "sender@example.org");
  CHECK(in->recipients[0].remote_mta == "mx.example.com");
  // Never about a notification.
  m.reverse_path.clear();
  CHECK_FALSE(dsn_due(m, all, DsnAction::failed, c, kT0));
}

TEST_CASE("a returned recipient without a DSN says why: the null sender, or its NOTIFY",
          "[queue][notices]") {
  MessageRecord m = record(4);
  m.recipients[1].notify = kNotifyNever;
  m.recipients[2].notify = kNotifyDelay;
  m.recipients[3].notify = kNotifyFailure | kNotifyDelay;
  CHECK(no_dsn_reason(m, m.recipients[0]).empty());  // no NOTIFY: failures are reported
  CHECK(no_dsn_reason(m, m.recipients[1]) == "no delivery status notification: NOTIFY=NEVER");
  CHECK(no_dsn_reason(m, m.recipients[2]) ==
        "no delivery status notification: NOTIFY without FAILURE");
  CHECK(no_dsn_reason(m, m.recipients[3]).empty());
  m.reverse_path.clear();
  for (const auto& r : m.recipients)
    CHECK(no_dsn_reason(m, r) ==
          "no delivery status notification: the sender is <> (RFC 5321 section 4.5.5)");
}
