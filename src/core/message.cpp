#include "mailq/message.h"

#include <algorithm>

namespace mailq {
namespace {

// Crockford base 32: digits and upper-case letters without I, L, O and U, so that an id read
// aloud or typed by an operator cannot be confused.
constexpr char kAlphabet[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
constexpr std::size_t kIdLength = 13;  // 13 * 5 = 65 bits >= 64

int decode_digit(char c) {
  if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  for (int i = 0; i < 32; ++i) {
    if (kAlphabet[i] == c) return i;
  }
  return -1;
}

}  // namespace

std::string MessageId::to_string() const {
  std::string out(kIdLength, '0');
  std::uint64_t v = value;
  for (std::size_t i = kIdLength; i-- > 0;) {
    out[i] = kAlphabet[v & 31u];
    v >>= 5;
  }
  return out;
}

bool MessageId::parse(std::string_view s, MessageId* out) {
  // Strict: exactly 13 digits of the alphabet (either case). Crockford's aliases (O for 0,
  // I and L for 1) are refused so that every id has exactly one spelling: file names in the
  // spool map one-to-one to ids.
  if (s.size() != kIdLength) return false;
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    int d = decode_digit(s[i]);
    if (d < 0) return false;
    // The first digit carries only the top 4 bits of the 64-bit value.
    if (i == 0 && d > 15) return false;
    v = (v << 5) | static_cast<std::uint64_t>(d);
  }
  // Zero is "no id" (MessageId's operator bool); it is never a valid queue id.
  if (v == 0) return false;
  if (out != nullptr) out->value = v;
  return true;
}

const char* to_string(RecipientState s) noexcept {
  switch (s) {
    case RecipientState::queued:
      return "queued";
    case RecipientState::deferred:
      return "deferred";
    case RecipientState::delivered:
      return "delivered";
    case RecipientState::bounced:
      return "bounced";
    case RecipientState::expired:
      return "expired";
  }
  return "unknown";
}

std::string queue_file_name(MessageId id, std::uint32_t attempts_before) {
  // Seed 002: ZZ on the first attempt, ZY on the second, ZX on the third... The letter stops
  // at 'A' (26th attempt and later) rather than running out of the alphabet.
  const std::uint32_t step = std::min<std::uint32_t>(attempts_before, 'Z' - 'A');
  std::string name = "Z";
  name += static_cast<char>('Z' - step);
  name += id.to_string();
  name += ".00";
  return name;
}

}  // namespace mailq
