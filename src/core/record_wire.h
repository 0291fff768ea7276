// The byte encoding of mailq's records (docs/spool-format.md, "File layout"): little-endian
// integers, length-prefixed strings, nanosecond times, and the payloads of a message record
// ('M'), a change ('U') and an attempt row ('A'). One encoder for the record codec
// (include/mailq/record_codec.h) and the durable spools (src/spool/format.h), which frame the
// same payloads with lengths and checksums. Internal.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "mailq/message.h"
#include "mailq/storage.h"

namespace mailq::detail {

// Little-endian throughout, whatever the host.
inline void put_u8(std::string& out, std::uint8_t v) {
  out.push_back(static_cast<char>(v));
}

inline void put_u32(std::string& out, std::uint32_t v) {
  char b[4];
  for (int i = 0; i < 4; ++i) b[i] = static_cast<char>((v >> (8 * i)) & 0xFFu);
  out.append(b, 4);
}

inline void put_u64(std::string& out, std::uint64_t v) {
  char b[8];
  for (int i = 0; i < 8; ++i) b[i] = static_cast<char>((v >> (8 * i)) & 0xFFu);
  out.append(b, 8);
}

inline void put_str(std::string& out, std::string_view s) {
  put_u32(out, static_cast<std::uint32_t>(s.size()));
  out.append(s.data(), s.size());
}

// Nanoseconds since the epoch: exact for std::chrono::system_clock on Linux.
inline std::int64_t to_ns(TimePoint t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

inline TimePoint from_ns(std::int64_t ns) {
  return TimePoint(std::chrono::duration_cast<TimePoint::duration>(std::chrono::nanoseconds(ns)));
}

inline std::uint32_t get_u32_at(const unsigned char* p) {
  return static_cast<std::uint32_t>(p[0]) | static_cast<std::uint32_t>(p[1]) << 8 |
         static_cast<std::uint32_t>(p[2]) << 16 | static_cast<std::uint32_t>(p[3]) << 24;
}

// Bounds-checked reader: every getter fails (and keeps failing) past the end.
class Reader {
 public:
  explicit Reader(std::string_view s)
      : p_(reinterpret_cast<const unsigned char*>(s.data())), end_(p_ + s.size()) {}

  bool ok() const { return ok_; }
  bool at_end() const { return p_ == end_; }
  std::size_t remaining() const { return static_cast<std::size_t>(end_ - p_); }

  std::uint8_t u8() {
    if (!need(1)) return 0;
    return *p_++;
  }
  std::uint32_t u32() {
    if (!need(4)) return 0;
    std::uint32_t v = get_u32_at(p_);
    p_ += 4;
    return v;
  }
  std::uint64_t u64() {
    if (!need(8)) return 0;
    std::uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= static_cast<std::uint64_t>(p_[i]) << (8 * i);
    p_ += 8;
    return v;
  }
  std::int64_t i64() { return static_cast<std::int64_t>(u64()); }
  bool str(std::string* out) {
    std::uint32_t n = u32();
    if (!need(n)) return false;
    out->assign(reinterpret_cast<const char*>(p_), n);
    p_ += n;
    return true;
  }

 private:
  bool need(std::size_t n) {
    if (!ok_ || remaining() < n) {
      ok_ = false;
      return false;
    }
    return true;
  }
  const unsigned char* p_;
  const unsigned char* end_;
  bool ok_ = true;
};

/// The payloads alone (no framing). Decoders are bounds-checked (any bytes are safe to give
/// them) and return false with a reason on a malformed payload, changing nothing.
void put_meta_payload(std::string& out, const MessageRecord& record);
void put_update_payload(std::string& out, const RecordChange& change);
void put_attempt_payload(std::string& out, const AttemptRecord& attempt);

bool decode_meta(std::string_view payload, MessageRecord* out, std::string* why);
/// An update payload as a change (its `id` is not part of the payload and stays as it is).
bool decode_update(std::string_view payload, RecordChange* out, std::string* why);
/// Applies an update payload to `record` (whose recipients it must fit).
bool apply_update(std::string_view payload, MessageRecord* record, std::string* why);
bool decode_attempt(std::string_view payload, AttemptRecord* out, std::string* why);

}  // namespace mailq::detail
