// Fuzz target: the spool record decoders behind the checksums (src/spool/format.h).
//
// Input: one selector byte, then:
//   0 (mod 4): a metadata payload -> decode_meta; when it decodes, encoding the record again
//              gives the very same bytes (the format is canonical: nothing is lost or
//              invented) and the record parses back through parse_record;
//   1: u32 length, a metadata payload, then an update payload -> apply_update on the
//      decoded record: a refused update changes nothing, an accepted one keeps the
//      recipient list (addresses, routes) and count;
//   2: an attempt payload -> decode_attempt, canonical like the metadata;
//   3: raw bytes -> check_preamble and parse_record over the whole input, record by record.
#pragma once

#include <string>
#include <string_view>

#include "fuzz_support.h"
#include "spool/format.h"
#include "spool_file.h"

namespace mailq::fuzz {

inline void run_spool_records(std::string_view data) {
  namespace sd = spool::detail;
  Input in(data);
  const std::uint8_t sel = in.byte();
  std::string why;
  switch (sel & 3) {
    case 0: {
      const std::string_view payload = in.rest();
      MessageRecord r;
      if (!sd::decode_meta(payload, &r, &why)) {
        MAILQ_FUZZ_CHECK(!why.empty(), "a refused metadata payload must say why");
        return;
      }
      MAILQ_FUZZ_CHECK(r.id.value != 0 && !r.recipients.empty(), "decoded an invalid record");
      std::string out;
      sd::put_meta_record(out, r);
      sd::RecordView rv;
      MAILQ_FUZZ_CHECK(sd::parse_record(out, &rv) == sd::RecordStatus::ok, "re-encoded meta");
      MAILQ_FUZZ_CHECK(rv.type == sd::RecordType::meta && rv.size == out.size(), "meta view");
      MAILQ_FUZZ_CHECK(rv.payload == payload, "metadata does not round-trip");
      return;
    }
    case 1: {
      const std::uint32_t n = in.u32();
      const std::string_view meta = in.take(n);
      const std::string_view update = in.rest();
      MessageRecord r;
      if (!sd::decode_meta(meta, &r, &why)) return;
      MessageRecord before = r;
      why.clear();
      if (!sd::apply_update(update, &r, &why)) {
        MAILQ_FUZZ_CHECK(!why.empty(), "a refused update must say why");
        MAILQ_FUZZ_CHECK(spool_file_detail::same(before, r), "a refused update changed the record");
        return;
      }
      MAILQ_FUZZ_CHECK(r.recipients.size() == before.recipients.size(), "recipient count");
      for (std::size_t i = 0; i < r.recipients.size(); ++i) {
        MAILQ_FUZZ_CHECK(r.recipients[i].address == before.recipients[i].address &&
                             r.recipients[i].route == before.recipients[i].route &&
                             r.recipients[i].orcpt == before.recipients[i].orcpt &&
                             r.recipients[i].notify == before.recipients[i].notify,
                         "an update changed an immutable recipient field");
        MAILQ_FUZZ_CHECK(
            static_cast<int>(r.recipients[i].state) <= static_cast<int>(RecipientState::expired),
            "state out of range");
      }
      // An update of every recipient, applied to the original, gives the same record.
      std::vector<std::size_t> all;
      for (std::size_t i = 0; i < r.recipients.size(); ++i) all.push_back(i);
      std::string out;
      sd::put_update_record(out, change_of(r, std::move(all)));
      sd::RecordView rv;
      MAILQ_FUZZ_CHECK(sd::parse_record(out, &rv) == sd::RecordStatus::ok, "re-encoded update");
      MessageRecord again = before;
      MAILQ_FUZZ_CHECK(sd::apply_update(rv.payload, &again, &why), why);
      MAILQ_FUZZ_CHECK(spool_file_detail::same(again, r), "update does not round-trip");
      return;
    }
    case 2: {
      const std::string_view payload = in.rest();
      AttemptRecord a;
      if (!sd::decode_attempt(payload, &a, &why)) return;
      std::string out;
      sd::put_attempt_record(out, a);
      sd::RecordView rv;
      MAILQ_FUZZ_CHECK(sd::parse_record(out, &rv) == sd::RecordStatus::ok, "re-encoded attempt");
      MAILQ_FUZZ_CHECK(rv.payload == payload, "attempt does not round-trip");
      return;
    }
    default: {
      std::string_view rest = in.rest();
      std::uint32_t version = 0;
      const auto ps = sd::check_preamble(rest, &version);
      if (ps == sd::PreambleStatus::ok) {
        MAILQ_FUZZ_CHECK(version >= 1 && version <= sd::kFormatVersion, "preamble version");
        rest.remove_prefix(sd::kPreambleSize);
      }
      while (!rest.empty()) {
        sd::RecordView rv;
        const auto st = sd::parse_record(rest, &rv);
        if (st != sd::RecordStatus::ok) break;
        MAILQ_FUZZ_CHECK(rv.size >= sd::kRecordOverhead && rv.size <= rest.size(), "record size");
        MAILQ_FUZZ_CHECK(rv.payload.size() == rv.size - sd::kRecordOverhead, "payload size");
        MessageRecord r;
        AttemptRecord a;
        if (rv.type == sd::RecordType::meta) (void)sd::decode_meta(rv.payload, &r, &why);
        if (rv.type == sd::RecordType::attempt) (void)sd::decode_attempt(rv.payload, &a, &why);
        rest.remove_prefix(rv.size);
      }
      return;
    }
  }
}

}  // namespace mailq::fuzz
