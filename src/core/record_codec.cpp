// The record codec (include/mailq/record_codec.h): core's record encoding behind a kind and a
// version byte.
#include "mailq/record_codec.h"

#include <utility>

#include "core/record_wire.h"

namespace mailq {
namespace {

enum class Kind : char { record = 'M', change = 'C', attempt = 'A' };

const char* name_of(Kind kind) {
  return kind == Kind::record   ? "a message record"
         : kind == Kind::change ? "a change"
                                : "an attempt row";
}

std::string header(Kind kind) {
  std::string out;
  out.push_back(static_cast<char>(kind));
  out.push_back(static_cast<char>(kRecordEncodingVersion));
  return out;
}

Error refused(std::string why) {
  return Error(errc::corrupt_record, "record encoding: " + std::move(why));
}

// The payload after a header of `kind`, or why the bytes are not one.
Result<std::string_view> payload_of(std::string_view bytes, Kind kind) {
  if (bytes.size() < 2) {
    return refused(std::to_string(bytes.size()) + " bytes, shorter than its header");
  }
  const char k = bytes[0];
  if (k != static_cast<char>(Kind::record) && k != static_cast<char>(Kind::change) &&
      k != static_cast<char>(Kind::attempt)) {
    return refused("unknown kind " + std::to_string(static_cast<unsigned char>(k)));
  }
  if (k != static_cast<char>(kind)) {
    return refused(std::string(name_of(static_cast<Kind>(k))) + " where " + name_of(kind) +
                   " was expected");
  }
  const auto version = static_cast<unsigned char>(bytes[1]);
  if (version == 0) return refused("version 0");
  if (version > kRecordEncodingVersion) {
    return refused("version " + std::to_string(version) + " is newer than this build reads (" +
                   std::to_string(kRecordEncodingVersion) + ")");
  }
  return bytes.substr(2);
}

// The header of `kind`, then what `put` writes of `value`.
template <class T>
std::string encode_as(Kind kind, void (*put)(std::string&, const T&), const T& value) {
  std::string out = header(kind);
  put(out, value);
  return out;
}

// The payload after the header of `kind`, decoded by `decode`.
template <class T>
Result<T> decode_as(std::string_view bytes, Kind kind,
                    bool (*decode)(std::string_view, T*, std::string*)) {
  auto payload = payload_of(bytes, kind);
  if (!payload) return payload.error();
  T value;
  std::string why;
  if (!decode(*payload, &value, &why)) return refused(why);
  return value;
}

}  // namespace

std::string encode_record(const MessageRecord& record) {
  return encode_as(Kind::record, detail::put_meta_payload, record);
}

Result<MessageRecord> decode_record(std::string_view bytes) {
  return decode_as(bytes, Kind::record, detail::decode_meta);
}

std::string encode_change(const RecordChange& change) {
  std::string out = header(Kind::change);
  detail::put_u64(out, change.id.value);
  detail::put_update_payload(out, change);
  return out;
}

Result<RecordChange> decode_change(std::string_view bytes) {
  auto payload = payload_of(bytes, Kind::change);
  if (!payload) return payload.error();
  if (payload->size() < 8) return refused("change cut short in its message id");
  RecordChange change;
  detail::Reader in(payload->substr(0, 8));
  change.id.value = in.u64();
  std::string why;
  if (!detail::decode_update(payload->substr(8), &change, &why)) return refused(why);
  return change;
}

Result<void> apply_encoded_change(std::string_view bytes, MessageRecord& record) {
  auto change = decode_change(bytes);
  if (!change) return change.error();
  return apply_change(*change, record);
}

std::string encode_attempt(const AttemptRecord& attempt) {
  return encode_as(Kind::attempt, detail::put_attempt_payload, attempt);
}

Result<AttemptRecord> decode_attempt(std::string_view bytes) {
  return decode_as(bytes, Kind::attempt, detail::decode_attempt);
}

}  // namespace mailq
