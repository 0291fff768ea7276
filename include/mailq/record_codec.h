// mailq — a serialiser for the records a Storage keeps: a MessageRecord, a RecordChange and an
// AttemptRecord to bytes and back.
//
// For a custom Storage that keeps opaque bytes (a database column, a key-value store): it
// stores what `encode_*` gives and hands `decode_*` what it stored, so it cannot drop or
// reorder a field by accident. A storage that keeps whole records applies a change's bytes
// with `apply_encoded_change`; one that keeps a log stores the change's bytes and applies them
// in order at load.
//
// The bytes are the durable spools' own record encoding (docs/spool-format.md: the 'M', 'U'
// and 'A' payloads), behind a two-byte header: the kind ('M' a message record, 'C' a change,
// 'A' an attempt row) and the encoding version. A change carries its message id (u64) before
// the update payload. Decoding never trusts its input: any bytes are safe to give it (it is
// fuzzed), a malformed or truncated input and a version newer than this build reads are
// refused with `errc::corrupt_record` and words saying what is wrong.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "mailq/error.h"
#include "mailq/message.h"
#include "mailq/storage.h"

namespace mailq {

/// The version of the record encoding this build writes, and the newest it reads.
inline constexpr std::uint8_t kRecordEncodingVersion = 1;

/// Every field of `record`. A record without recipients encodes, but does not decode (no
/// Storage holds one).
std::string encode_record(const MessageRecord& record);
Result<MessageRecord> decode_record(std::string_view bytes);

/// Every field of `change`.
std::string encode_change(const RecordChange& change);
Result<RecordChange> decode_change(std::string_view bytes);
/// Decodes a change and applies it to `record` (apply_change): the message must be the
/// change's and fit it. Nothing changes on an error.
Result<void> apply_encoded_change(std::string_view bytes, MessageRecord& record);

/// Every field of `attempt`.
std::string encode_attempt(const AttemptRecord& attempt);
Result<AttemptRecord> decode_attempt(std::string_view bytes);

}  // namespace mailq
