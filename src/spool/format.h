// The bytes of a spool file (docs/spool-format.md): encoding and decoding, no I/O.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/record_wire.h"
#include "mailq/message.h"
#include "mailq/storage.h"

namespace mailq {
namespace spool {
namespace detail {

inline constexpr char kMagic[8] = {'M', 'A', 'I', 'L', 'Q', 'S', 'P', 'L'};
inline constexpr std::uint32_t kFormatVersion = 1;
/// magic (8) + version (4) + CRC-32C of those 12 bytes (4).
inline constexpr std::size_t kPreambleSize = 16;
/// length (4) + type (1) + check of those 5 bytes (2) + a zero byte.
inline constexpr std::size_t kRecordHeaderSize = 8;
/// CRC-32C of header and payload.
inline constexpr std::size_t kRecordTrailerSize = 4;
inline constexpr std::size_t kRecordOverhead = kRecordHeaderSize + kRecordTrailerSize;
inline constexpr std::uint64_t kMaxPayload = 0xFFFFFFFFu;

enum class RecordType : std::uint8_t {
  meta = 'M',     ///< the MessageRecord as inserted (every field)
  body = 'B',     ///< the message body
  update = 'U',   ///< message attempts, held, and the recipients whose state changed
  attempt = 'A',  ///< one transient-attempt row
  // Records of a segment spool (segment_spool.h), each about one message: the payload starts
  // with the message id (for seg_insert, the metadata payload's own first field).
  seg_insert = 'i',   ///< metadata payload: a new message, or a full-state copy
  seg_body = 'b',     ///< u64 id, then the body
  seg_update = 'u',   ///< u64 id, then an update payload
  seg_attempt = 'a',  ///< u64 id, then an attempt payload
  seg_remove = 'x',   ///< u64 id
};

inline constexpr char kSegmentMagic[8] = {'M', 'A', 'I', 'L', 'Q', 'S', 'E', 'G'};
inline constexpr std::uint32_t kSegmentFormatVersion = 1;

/// The preamble of a segment file: "MAILQSEG", version, CRC (same layout as put_preamble).
void put_segment_preamble(std::string& out);

void put_preamble(std::string& out);

enum class PreambleStatus { ok, truncated, foreign, newer_version, corrupt };
/// Checks the first bytes of a file; `version` receives the version field when readable.
PreambleStatus check_preamble(std::string_view data, std::uint32_t* version);
PreambleStatus check_segment_preamble(std::string_view data, std::uint32_t* version);

/// Writes a record header into `out` and returns where the record starts; the payload is
/// appended next, then `end_record` fills in the length and appends the checksum.
std::size_t begin_record(std::string& out, RecordType type);
void end_record(std::string& out, std::size_t start);

/// Appends `v` little-endian (the id prefix of segment records).
void put_u64_le(std::string& out, std::uint64_t v);
std::uint64_t get_u64_le(std::string_view data);
/// A record header for `type` with a payload of `length` bytes (for records written around a
/// caller's buffer; the checksum is the CRC-32C of the header and the payload).
void record_header(RecordType type, std::uint32_t length, unsigned char out[kRecordHeaderSize]);

/// The payloads alone (no framing), for records that wrap them (segment_spool.h): core's
/// record encoding (src/core/record_wire.h), which the record codec (record_codec.h) writes
/// too.
using mailq::detail::put_attempt_payload;
using mailq::detail::put_meta_payload;
using mailq::detail::put_update_payload;

void put_meta_record(std::string& out, const MessageRecord& record);
/// An update record: the change's message-level fields and the recipients it lists.
void put_update_record(std::string& out, const RecordChange& change);
void put_attempt_record(std::string& out, const AttemptRecord& attempt);

/// The body record is written around the caller's buffer (no copy of the body): its header,
/// then the body, then `body_crc(header, body)`.
void body_record_header(std::uint32_t body_size, unsigned char out[kRecordHeaderSize]);
std::uint32_t body_crc(const unsigned char header[kRecordHeaderSize], std::string_view body);

enum class RecordStatus {
  ok,
  /// The data ends inside the record (fewer bytes than its header or its length says): a
  /// torn write when the data runs to the end of the file.
  incomplete,
  /// Bad checksum, unknown type or bad header check.
  corrupt,
};

struct RecordView {
  RecordType type{};
  std::string_view payload;
  std::size_t size = 0;  ///< header + payload + trailer
};

/// Parses the record at the start of `data` (which may run on past it).
RecordStatus parse_record(std::string_view data, RecordView* out);
/// Parses only a record header: type and payload length, without checking the checksum.
bool parse_record_header(std::string_view data, RecordType* type, std::uint32_t* length);

/// Decoders return false (with a reason) on malformed payloads.
using mailq::detail::apply_update;
using mailq::detail::decode_attempt;
using mailq::detail::decode_meta;

}  // namespace detail
}  // namespace spool
}  // namespace mailq
