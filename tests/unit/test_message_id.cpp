#include <catch2/catch.hpp>

#include <cstdint>
#include <limits>
#include <random>
#include <string>

#include "mailq/message.h"

using namespace mailq;

TEST_CASE("MessageId renders 13 characters of upper-case Crockford base 32", "[message_id]") {
  CHECK(MessageId{1}.to_string() == "0000000000001");
  CHECK(MessageId{31}.to_string() == "000000000000Z");
  CHECK(MessageId{32}.to_string() == "0000000000010");
  CHECK(MessageId{0}.to_string() == "0000000000000");
  CHECK(MessageId{std::numeric_limits<std::uint64_t>::max()}.to_string() == "FZZZZZZZZZZZZ");
  // Digits 10..31 skip I, L, O and U.
  CHECK(MessageId{0x0123456789ABCDEFull}.to_string() == "028T5CY4TQKFF");
}

TEST_CASE("MessageId::parse round-trips and accepts lower case", "[message_id]") {
  std::mt19937_64 rng(12345);
  for (int i = 0; i < 1000; ++i) {
    MessageId id{rng() | 1};
    MessageId back;
    const std::string s = id.to_string();
    REQUIRE(s.size() == 13);
    REQUIRE(MessageId::parse(s, &back));
    REQUIRE(back == id);
  }
  MessageId lower;
  REQUIRE(MessageId::parse("028t5cy4tqkff", &lower));
  CHECK(lower.value == 0x0123456789ABCDEFull);
  MessageId max;
  REQUIRE(MessageId::parse("FZZZZZZZZZZZZ", &max));
  CHECK(max.value == std::numeric_limits<std::uint64_t>::max());
}

TEST_CASE("MessageId::parse rejects garbage", "[message_id]") {
  MessageId out{42};
  for (const char* bad : {"", "000000000001", "00000000000001", "000000000000I", "000000000000L",
                          "000000000000O", "000000000000U", "00000000000-1", "0000000000 01",
                          "G000000000000",  // 65th bit: over 64 bits
                          "ZZZZZZZZZZZZZ", "0000000000000" /* zero is no id */}) {
    INFO("input: " << bad);
    CHECK_FALSE(MessageId::parse(bad, &out));
  }
  CHECK(out.value == 42);  // untouched on failure
}

TEST_CASE("MessageId text order is numeric order (time-ordered ids sort as names)",
          "[message_id]") {
  std::mt19937_64 rng(7);
  for (int i = 0; i < 1000; ++i) {
    MessageId a{rng() >> (rng() % 64)};
    MessageId b{rng() >> (rng() % 64)};
    INFO(a.value << " " << b.value);
    CHECK((a < b) == (a.to_string() < b.to_string()));
  }
}

TEST_CASE("queue_file_name counts attempts down from ZZ as seed 002 shows",
          "[message_id][seed002]") {
  const MessageId id{0x0123456789ABCDEFull};
  CHECK(queue_file_name(id, 0) == "ZZ028T5CY4TQKFF.00");
  CHECK(queue_file_name(id, 1) == "ZY028T5CY4TQKFF.00");
  CHECK(queue_file_name(id, 2) == "ZX028T5CY4TQKFF.00");
  CHECK(queue_file_name(id, 24) == "ZB028T5CY4TQKFF.00");
  CHECK(queue_file_name(id, 25) == "ZA028T5CY4TQKFF.00");
  CHECK(queue_file_name(id, 26) == "ZA028T5CY4TQKFF.00");
  CHECK(queue_file_name(id, 4000000000u) == "ZA028T5CY4TQKFF.00");
}

TEST_CASE("RecipientState names", "[message_id]") {
  CHECK(std::string(to_string(RecipientState::queued)) == "queued");
  CHECK(std::string(to_string(RecipientState::deferred)) == "deferred");
  CHECK(std::string(to_string(RecipientState::delivered)) == "delivered");
  CHECK(std::string(to_string(RecipientState::bounced)) == "bounced");
  CHECK(std::string(to_string(RecipientState::expired)) == "expired");
  CHECK_FALSE(is_final(RecipientState::deferred));
  CHECK(is_final(RecipientState::expired));
}
