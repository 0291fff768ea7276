#include "spool/format.h"

#include <chrono>
#include <cstring>

#include "core/record_wire.h"
#include "spool/crc32c.h"

namespace mailq {
namespace spool {
namespace detail {
// Little-endian integers and the record payloads: core's record encoding (record_wire.h).
using mailq::detail::get_u32_at;
using mailq::detail::put_u32;
using mailq::detail::put_u64;
using mailq::detail::put_u8;

namespace {

void put_preamble_of(std::string& out, const char (&magic)[8], std::uint32_t format_version) {
  const std::size_t start = out.size();
  out.append(magic, sizeof magic);
  put_u32(out, format_version);
  put_u32(out, crc32c(0, out.data() + start, 12));
}

PreambleStatus check_preamble_of(std::string_view data, std::uint32_t* version,
                                 const char (&kMagic)[8], std::uint32_t kFormatVersion) {
  if (data.size() < sizeof kMagic) {
    // A prefix of the magic is a torn first write; anything else is not ours.
    return std::memcmp(data.data(), kMagic, data.size()) == 0 ? PreambleStatus::truncated
                                                              : PreambleStatus::foreign;
  }
  if (std::memcmp(data.data(), kMagic, sizeof kMagic) != 0) return PreambleStatus::foreign;
  if (data.size() < kPreambleSize) return PreambleStatus::truncated;
  const auto* p = reinterpret_cast<const unsigned char*>(data.data());
  if (crc32c(0, p, 12) != get_u32_at(p + 12)) return PreambleStatus::corrupt;
  const std::uint32_t v = get_u32_at(p + 8);
  if (version != nullptr) *version = v;
  if (v > kFormatVersion) return PreambleStatus::newer_version;
  if (v == 0) return PreambleStatus::corrupt;
  return PreambleStatus::ok;
}

}  // namespace

void put_preamble(std::string& out) {
  put_preamble_of(out, kMagic, kFormatVersion);
}

PreambleStatus check_preamble(std::string_view data, std::uint32_t* version) {
  return check_preamble_of(data, version, kMagic, kFormatVersion);
}

void put_segment_preamble(std::string& out) {
  put_preamble_of(out, kSegmentMagic, kSegmentFormatVersion);
}

PreambleStatus check_segment_preamble(std::string_view data, std::uint32_t* version) {
  return check_preamble_of(data, version, kSegmentMagic, kSegmentFormatVersion);
}

namespace {

// Bytes 5 and 6 of a record header check bytes 0..4 (length and type), so that a damaged
// length is recognised as damage rather than taken for a record cut short by a crash.
std::uint16_t header_check(const unsigned char* p) {
  return static_cast<std::uint16_t>(crc32c(0, p, 5) & 0xFFFFu);
}

void fill_header(unsigned char* p, std::uint32_t length, RecordType type) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<unsigned char>((length >> (8 * i)) & 0xFFu);
  p[4] = static_cast<unsigned char>(type);
  const std::uint16_t check = header_check(p);
  p[5] = static_cast<unsigned char>(check & 0xFFu);
  p[6] = static_cast<unsigned char>(check >> 8);
  p[7] = 0;
}

}  // namespace

std::size_t begin_record(std::string& out, RecordType type) {
  const std::size_t start = out.size();
  put_u32(out, 0);  // length, filled in by end_record
  put_u8(out, static_cast<std::uint8_t>(type));
  out.append(3, '\0');
  return start;
}

void end_record(std::string& out, std::size_t start) {
  const std::uint64_t length = out.size() - start - kRecordHeaderSize;
  auto* p = reinterpret_cast<unsigned char*>(&out[start]);
  fill_header(p, static_cast<std::uint32_t>(length), static_cast<RecordType>(p[4]));
  put_u32(out, crc32c(0, out.data() + start, out.size() - start));
}

void put_u64_le(std::string& out, std::uint64_t v) {
  put_u64(out, v);
}

std::uint64_t get_u64_le(std::string_view data) {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < 8 && i < data.size(); ++i)
    v |= static_cast<std::uint64_t>(static_cast<unsigned char>(data[i])) << (8 * i);
  return v;
}

void record_header(RecordType type, std::uint32_t length, unsigned char out[kRecordHeaderSize]) {
  fill_header(out, length, type);
}

void put_meta_record(std::string& out, const MessageRecord& r) {
  const std::size_t start = begin_record(out, RecordType::meta);
  put_meta_payload(out, r);
  end_record(out, start);
}

void put_update_record(std::string& out, const RecordChange& change) {
  const std::size_t start = begin_record(out, RecordType::update);
  put_update_payload(out, change);
  end_record(out, start);
}

void put_attempt_record(std::string& out, const AttemptRecord& a) {
  const std::size_t start = begin_record(out, RecordType::attempt);
  put_attempt_payload(out, a);
  end_record(out, start);
}

void body_record_header(std::uint32_t body_size, unsigned char out[kRecordHeaderSize]) {
  fill_header(out, body_size, RecordType::body);
}

std::uint32_t body_crc(const unsigned char header[kRecordHeaderSize], std::string_view body) {
  return crc32c(crc32c(0, header, kRecordHeaderSize), body.data(), body.size());
}

bool parse_record_header(std::string_view data, RecordType* type, std::uint32_t* length) {
  if (data.size() < kRecordHeaderSize) return false;
  const auto* p = reinterpret_cast<const unsigned char*>(data.data());
  const std::uint16_t check = header_check(p);
  if (p[5] != (check & 0xFFu) || p[6] != (check >> 8) || p[7] != 0) return false;
  switch (p[4]) {
    case static_cast<unsigned char>(RecordType::meta):
    case static_cast<unsigned char>(RecordType::body):
    case static_cast<unsigned char>(RecordType::update):
    case static_cast<unsigned char>(RecordType::attempt):
    case static_cast<unsigned char>(RecordType::seg_insert):
    case static_cast<unsigned char>(RecordType::seg_body):
    case static_cast<unsigned char>(RecordType::seg_update):
    case static_cast<unsigned char>(RecordType::seg_attempt):
    case static_cast<unsigned char>(RecordType::seg_remove):
      break;
    default:
      return false;
  }
  *type = static_cast<RecordType>(p[4]);
  *length = get_u32_at(p);
  return true;
}

RecordStatus parse_record(std::string_view data, RecordView* out) {
  if (data.size() < kRecordHeaderSize) return RecordStatus::incomplete;
  RecordType type;
  std::uint32_t length;
  if (!parse_record_header(data, &type, &length)) return RecordStatus::corrupt;
  const std::uint64_t total = std::uint64_t{length} + kRecordOverhead;
  if (data.size() < total) return RecordStatus::incomplete;
  const auto* p = reinterpret_cast<const unsigned char*>(data.data());
  const std::size_t body_end = kRecordHeaderSize + length;
  if (crc32c(0, p, body_end) != get_u32_at(p + body_end)) return RecordStatus::corrupt;
  out->type = type;
  out->payload = data.substr(kRecordHeaderSize, length);
  out->size = static_cast<std::size_t>(total);
  return RecordStatus::ok;
}

}  // namespace detail
}  // namespace spool
}  // namespace mailq
