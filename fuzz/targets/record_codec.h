// Fuzz target: the record codec (include/mailq/record_codec.h), the decoder a custom Storage
// runs on whatever bytes it kept.
//
// Input: any bytes, given to each decoder as they are. What decodes must encode back to the
// very same bytes (the encoding is canonical: nothing is lost or invented, except the remote
// MTA an older spool wrote as seed 002's whole line, read back as its host name); a refusal
// is corrupt_record with words. A decoded change is applied to a record made to fit it: it
// applies, and applying its encoding gives the same record.
#pragma once

#include <algorithm>
#include <string>
#include <string_view>

#include "fuzz_support.h"
#include "mailq/record_codec.h"

namespace mailq::fuzz {

namespace record_codec_detail {

template <class T>
void check_refusal(const Result<T>& r) {
  MAILQ_FUZZ_CHECK(r.error().code == errc::corrupt_record, "a refusal is corrupt_record");
  MAILQ_FUZZ_CHECK(
      r.error().message.rfind("record encoding: ", 0) == 0 && r.error().message.size() > 17,
      "a refusal must say why");
}

inline bool upgraded_remote(std::string_view data) {
  return data.find("dns;") != std::string_view::npos;
}

}  // namespace record_codec_detail

inline void run_record_codec(std::string_view data) {
  using namespace record_codec_detail;
  auto record = decode_record(data);
  if (record) {
    MAILQ_FUZZ_CHECK(record->id.value != 0 && !record->recipients.empty(), "invalid record");
    if (!upgraded_remote(data))
      MAILQ_FUZZ_CHECK(encode_record(*record) == data, "a record does not round-trip");
  } else {
    check_refusal(record);
  }

  auto attempt = decode_attempt(data);
  if (attempt) {
    MAILQ_FUZZ_CHECK(encode_attempt(*attempt) == data, "an attempt row does not round-trip");
  } else {
    check_refusal(attempt);
  }

  auto change = decode_change(data);
  if (!change) {
    check_refusal(change);
    return;
  }
  if (!upgraded_remote(data))
    MAILQ_FUZZ_CHECK(encode_change(*change) == data, "a change does not round-trip");
  // A record the change fits: as many recipients as its highest index needs (bounded).
  std::size_t needed = 1;
  for (const auto& r : change->recipients) needed = std::max<std::size_t>(needed, r.index + 1u);
  if (needed > 4096) return;
  MessageRecord m;
  m.id = change->id;
  m.recipients.resize(needed);
  MessageRecord before = m;
  auto applied = apply_encoded_change(data, m);
  if (!check_change(*change, needed)) {
    MAILQ_FUZZ_CHECK(!applied, "a change that does not fit was applied");
    MAILQ_FUZZ_CHECK(m.recipients.size() == before.recipients.size() && m.attempts == 0,
                     "a refused change changed the record");
    return;
  }
  MAILQ_FUZZ_CHECK(applied.ok(), "a change that fits was refused");
  MAILQ_FUZZ_CHECK(m.attempts == change->attempts && m.held == change->held, "message fields");
  for (const auto& r : change->recipients)
    MAILQ_FUZZ_CHECK(m.recipients[r.index].state == r.state &&
                         m.recipients[r.index].attempts == r.attempts &&
                         m.recipients[r.index].last_reply == r.last_reply &&
                         m.recipients[r.index].delay_notified == r.delay_notified,
                     "a recipient's state was not applied");
}

}  // namespace mailq::fuzz
