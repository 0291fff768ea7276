// Shared by the spool fuzz targets (spool_file.h, segment_file.h, spool_records.h): the
// checksum repair that lets mutations reach the decoders behind the CRCs, and a field-by-field
// comparison of recovered records. Both spool layouts use the same preamble layout (8-byte
// magic, u32 version, CRC-32C of those 12 bytes) and the same record framing
// (docs/spool-format.md), so one repair serves both.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "mailq/message.h"
#include "spool/crc32c.h"
#include "spool/format.h"

namespace mailq::fuzz::spool_support {

inline void put_u32_at(std::string& s, std::size_t at, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) s[at + i] = static_cast<char>((v >> (8 * i)) & 0xFFu);
}

inline std::uint32_t get_u32_at(std::string_view s, std::size_t at) {
  std::uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= std::uint32_t{static_cast<unsigned char>(s[at + i])} << (8 * i);
  return v;
}

/// Recomputes the preamble CRC (whatever the magic says) and every record's header check and
/// CRC, walking the records by their length fields as long as they fit. The type byte is kept
/// as it is, so unknown types still reach the parser.
inline void repair_checksums(std::string& f) {
  using namespace spool::detail;
  if (f.size() < kPreambleSize) return;
  put_u32_at(f, 12, spool::detail::crc32c(0, f.data(), 12));
  std::size_t off = kPreambleSize;
  while (f.size() - off >= kRecordOverhead) {
    const std::uint32_t length = get_u32_at(f, off);
    if (length > f.size() - off - kRecordOverhead) return;
    auto type = static_cast<RecordType>(static_cast<unsigned char>(f[off + 4]));
    unsigned char header[kRecordHeaderSize];
    // body_record_header fills the same header layout for any type; fix the type after.
    body_record_header(length, header);
    header[4] = static_cast<unsigned char>(type);
    const std::uint16_t check =
        static_cast<std::uint16_t>(spool::detail::crc32c(0, header, 5) & 0xFFFFu);
    header[5] = static_cast<unsigned char>(check & 0xFFu);
    header[6] = static_cast<unsigned char>(check >> 8);
    header[7] = 0;
    for (std::size_t i = 0; i < kRecordHeaderSize; ++i) f[off + i] = static_cast<char>(header[i]);
    const std::size_t end = off + kRecordHeaderSize + length;
    put_u32_at(f, end, spool::detail::crc32c(0, f.data() + off, end - off));
    off = end + kRecordTrailerSize;
  }
}

/// Every field of the two records is equal.
inline bool same(const MessageRecord& a, const MessageRecord& b) {
  if (a.id != b.id || a.reverse_path != b.reverse_path || a.source_channel != b.source_channel ||
      a.message_id != b.message_id || a.envid != b.envid || a.ret != b.ret ||
      a.arrival != b.arrival || a.size != b.size || a.attempts != b.attempts || a.held != b.held ||
      a.recipients.size() != b.recipients.size()) {
    return false;
  }
  for (std::size_t i = 0; i < a.recipients.size(); ++i) {
    const RecipientRecord& x = a.recipients[i];
    const RecipientRecord& y = b.recipients[i];
    if (x.address != y.address || x.orcpt != y.orcpt || x.notify != y.notify ||
        x.route != y.route || x.state != y.state || x.attempts != y.attempts ||
        x.next_attempt != y.next_attempt || x.last_reply != y.last_reply ||
        x.remote_mta != y.remote_mta || x.delay_notified != y.delay_notified) {
      return false;
    }
  }
  return true;
}

}  // namespace mailq::fuzz::spool_support
