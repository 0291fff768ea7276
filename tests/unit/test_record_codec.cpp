// The record codec (include/mailq/record_codec.h): every field of a record, a change and an
// attempt row survives encoding; malformed, truncated and future input is refused.
#include <catch2/catch.hpp>

#include <random>
#include <string>

#include "core/record_wire.h"
#include "mailq/record_codec.h"
#include "support/spool_fixtures.h"

using namespace mailq;
using mailq::spool_test::require_same;

namespace {

// Every field away from its default (and each recipient's different from the others').
MessageRecord every_field() {
  MessageRecord m = mailq::spool_test::sample_record(0x0123456789abcdefull, 3);
  m.attempts = 7;
  m.held = true;
  m.size = (1ull << 40) + 3;
  for (std::size_t i = 0; i < m.recipients.size(); ++i) {
    RecipientRecord& r = m.recipients[i];
    r.notify = static_cast<std::uint8_t>(kNotifySuccess | (i == 1 ? kNotifyDelay : 0));
    r.state = i == 0 ? RecipientState::delivered : RecipientState::deferred;
    r.attempts = static_cast<std::uint32_t>(3 + i);
    r.next_attempt = m.arrival + std::chrono::hours(2) + std::chrono::nanoseconds(i);
    r.last_reply =
        Reply(i == 0 ? 250 : 451, "4.4." + std::to_string(i), "text " + std::to_string(i));
    r.remote_mta = "mx" + std::to_string(i) + ".some.org";
    r.delay_notified = i != 0;
  }
  return m;
}

AttemptRecord every_attempt_field() {
  AttemptRecord a;
  a.route = "default-non-local-route";
  a.time = TimePoint(std::chrono::nanoseconds(1'700'000'000'987'654'321LL));
  a.reply = Reply(451, "4.4.1", "[internal] connection was not attempted");
  a.recipient = "user@some.org";
  a.diagnostic = std::string("binary \0 and \r\n", 16);
  return a;
}

template <class T>
void check_refused(const Result<T>& r, const std::string& words) {
  REQUIRE_FALSE(r);
  CHECK(r.error().code == errc::corrupt_record);
  CHECK(r.error().message == "record encoding: " + words);
}

}  // namespace

TEST_CASE("the codec gives back every field of a record, a change and an attempt row", "[codec]") {
  const MessageRecord m = every_field();
  const auto record = decode_record(encode_record(m));
  REQUIRE(record);
  require_same(*record, m);

  RecordChange c = change_of(m, {0, 2});
  c.attempts = 9;
  c.held = false;
  const auto change = decode_change(encode_change(c));
  REQUIRE(change);
  CHECK(change->id == c.id);
  CHECK(change->attempts == 9);
  CHECK_FALSE(change->held);
  REQUIRE(change->recipients.size() == 2);
  MessageRecord x = m, y = m;
  REQUIRE(apply_change(c, x));
  REQUIRE(apply_encoded_change(encode_change(c), y));
  require_same(y, x);
  for (std::size_t k = 0; k < 2; ++k) {
    RecipientRecord a, b;
    c.recipients[k].apply_to(a);
    change->recipients[k].apply_to(b);
    CHECK(change->recipients[k].index == c.recipients[k].index);
    require_same(b, a);
  }

  const AttemptRecord a = every_attempt_field();
  const auto attempt = decode_attempt(encode_attempt(a));
  REQUIRE(attempt);
  require_same(*attempt, a);
}

TEST_CASE("the codec writes the spools' record payloads behind a kind and a version", "[codec]") {
  const MessageRecord m = every_field();
  std::string payload;
  detail::put_meta_payload(payload, m);
  CHECK(encode_record(m) == std::string("M\x01", 2) + payload);
  payload.clear();
  detail::put_attempt_payload(payload, every_attempt_field());
  CHECK(encode_attempt(every_attempt_field()) == std::string("A\x01", 2) + payload);
  CHECK(encode_change(change_of(m)).substr(0, 2) == std::string("C\x01", 2));
}

TEST_CASE("the codec refuses input cut short at any byte", "[codec]") {
  const std::string record = encode_record(every_field());
  for (std::size_t n = 0; n < record.size(); ++n) {
    INFO("record cut to " << n << " of " << record.size() << " bytes");
    const auto r = decode_record(std::string_view(record).substr(0, n));
    REQUIRE_FALSE(r);
    CHECK(r.error().code == errc::corrupt_record);
  }
  const std::string change = encode_change(change_of(every_field(), {0, 1, 2}));
  for (std::size_t n = 0; n < change.size(); ++n) {
    INFO("change cut to " << n << " of " << change.size() << " bytes");
    REQUIRE_FALSE(decode_change(std::string_view(change).substr(0, n)));
    MessageRecord m = every_field();
    REQUIRE_FALSE(apply_encoded_change(std::string_view(change).substr(0, n), m));
    require_same(m, every_field());  // nothing applied
  }
  const std::string attempt = encode_attempt(every_attempt_field());
  for (std::size_t n = 0; n < attempt.size(); ++n) {
    INFO("attempt cut to " << n << " of " << attempt.size() << " bytes");
    REQUIRE_FALSE(decode_attempt(std::string_view(attempt).substr(0, n)));
  }
  check_refused(decode_record(""), "0 bytes, shorter than its header");
  check_refused(decode_change(std::string_view(change).substr(0, 9)),
                "change cut short in its message id");
}

TEST_CASE("the codec refuses a version from the future, another kind and trailing bytes",
          "[codec]") {
  std::string record = encode_record(every_field());
  record[1] = 2;
  check_refused(decode_record(record), "version 2 is newer than this build reads (1)");
  record[1] = 0;
  check_refused(decode_record(record), "version 0");
  check_refused(decode_record(encode_attempt(every_attempt_field())),
                "an attempt row where a message record was expected");
  check_refused(decode_change(encode_record(every_field())),
                "a message record where a change was expected");
  check_refused(decode_attempt("Z\x01"), "unknown kind 90");
  check_refused(decode_record(encode_record(every_field()) + "x"), "metadata has trailing bytes");
  check_refused(decode_attempt(encode_attempt(every_attempt_field()) + "x"),
                "attempt record malformed");
  check_refused(decode_change(encode_change(change_of(every_field(), {1})) + "x"),
                "update record has trailing bytes");
}

TEST_CASE("an encoded change applies only to the message it fits", "[codec]") {
  MessageRecord m = every_field();
  RecordChange beyond = change_of(m, {2});
  beyond.recipients[0].index = 5;
  auto r = apply_encoded_change(encode_change(beyond), m);
  REQUIRE_FALSE(r);
  CHECK(r.error().code == errc::bad_state);
  CHECK(r.error().message == "update 028T5CY4TQKFF: no recipient 5, stored 3");
  MessageRecord other = every_field();
  other.id = MessageId{42};
  CHECK(apply_encoded_change(encode_change(change_of(m, {0})), other).code() ==
        errc::invalid_parameter);
  require_same(m, every_field());
}

TEST_CASE("the codec's decoders take any bytes without harm", "[codec]") {
  std::mt19937_64 rng(11);
  const std::string seeds[] = {encode_record(every_field()),
                               encode_change(change_of(every_field(), {0, 2})),
                               encode_attempt(every_attempt_field())};
  for (int i = 0; i < 20000; ++i) {
    std::string bytes = seeds[i % 3];
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) bytes[rng() % bytes.size()] = static_cast<char>(rng() & 0xFF);
    if (rng() % 4 == 0) bytes.resize(rng() % bytes.size());
    (void)decode_record(bytes);
    (void)decode_attempt(bytes);
    MessageRecord m = every_field();
    (void)apply_encoded_change(bytes, m);
  }
}
