#include "spool/format.h"

#include <chrono>
#include <cstring>

#include "spool/crc32c.h"

namespace mailq {
namespace spool {
namespace detail {
namespace {

// Little-endian throughout, whatever the host.
void put_u8(std::string& out, std::uint8_t v) {
  out.push_back(static_cast<char>(v));
}

void put_u32(std::string& out, std::uint32_t v) {
  char b[4];
  for (int i = 0; i < 4; ++i) b[i] = static_cast<char>((v >> (8 * i)) & 0xFFu);
  out.append(b, 4);
}

void put_u64(std::string& out, std::uint64_t v) {
  char b[8];
  for (int i = 0; i < 8; ++i) b[i] = static_cast<char>((v >> (8 * i)) & 0xFFu);
  out.append(b, 8);
}

void put_str(std::string& out, std::string_view s) {
  put_u32(out, static_cast<std::uint32_t>(s.size()));
  out.append(s.data(), s.size());
}

// Nanoseconds since the epoch: exact for std::chrono::system_clock on Linux.
std::int64_t to_ns(TimePoint t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

TimePoint from_ns(std::int64_t ns) {
  return TimePoint(std::chrono::duration_cast<TimePoint::duration>(std::chrono::nanoseconds(ns)));
}

std::uint32_t get_u32_at(const unsigned char* p) {
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

void put_reply(std::string& out, const Reply& r) {
  put_u32(out, static_cast<std::uint32_t>(r.code));
  put_str(out, r.enhanced);
  put_str(out, r.text);
}

bool get_reply(Reader& in, Reply* r) {
  r->code = static_cast<int>(in.u32());
  return in.str(&r->enhanced) && in.str(&r->text);
}

constexpr std::uint8_t kDelayNotifiedBit = 0x80;

// The part of a recipient that changes over its life, of a RecipientRecord or a
// RecipientChange (the same fields).
template <class Recipient>
void put_recipient_state(std::string& out, const Recipient& r) {
  // The high bit of the state byte: a "delayed" DSN was sent (files written before the flag
  // existed read as not sent).
  put_u8(out, static_cast<std::uint8_t>(static_cast<std::uint8_t>(r.state) |
                                        (r.delay_notified ? kDelayNotifiedBit : 0)));
  put_u32(out, r.attempts);
  put_u64(out, static_cast<std::uint64_t>(to_ns(r.next_attempt)));
  put_reply(out, r.last_reply);
  put_str(out, r.remote_mta);
}

// Spools written before the remote MTA was kept as a host name hold seed 002's whole line,
// "dns;mx.example.org (TCP|...)": the host is what is read back.
void upgrade_remote_mta(std::string* remote) {
  if (remote->rfind("dns;", 0) != 0) return;
  std::string_view v(*remote);
  v.remove_prefix(4);
  *remote = std::string(v.substr(0, v.find(' ')));
}

bool get_recipient_state(Reader& in, RecipientRecord* r, std::string* why) {
  std::uint8_t state = in.u8();
  r->delay_notified = (state & kDelayNotifiedBit) != 0;
  state = static_cast<std::uint8_t>(state & ~kDelayNotifiedBit);
  if (in.ok() && state > static_cast<std::uint8_t>(RecipientState::expired)) {
    *why = "unknown recipient state " + std::to_string(state);
    return false;
  }
  r->state = static_cast<RecipientState>(state);
  r->attempts = in.u32();
  r->next_attempt = from_ns(in.i64());
  if (!get_reply(in, &r->last_reply) || !in.str(&r->remote_mta)) {
    *why = "recipient state cut short";
    return false;
  }
  upgrade_remote_mta(&r->remote_mta);
  return true;
}

}  // namespace

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

void put_meta_payload(std::string& out, const MessageRecord& r) {
  put_u64(out, r.id.value);
  put_str(out, r.reverse_path);
  put_str(out, r.source_channel);
  put_str(out, r.message_id);
  put_str(out, r.envid);
  put_u8(out, static_cast<std::uint8_t>(r.ret));
  put_u64(out, static_cast<std::uint64_t>(to_ns(r.arrival)));
  put_u64(out, r.size);
  put_u32(out, r.attempts);
  put_u8(out, r.held ? 1 : 0);
  put_u32(out, static_cast<std::uint32_t>(r.recipients.size()));
  for (const auto& rc : r.recipients) {
    put_str(out, rc.address);
    put_str(out, rc.orcpt);
    put_u8(out, rc.notify);
    put_str(out, rc.route);
    put_recipient_state(out, rc);
  }
}

void put_update_record(std::string& out, const RecordChange& change) {
  const std::size_t start = begin_record(out, RecordType::update);
  put_update_payload(out, change);
  end_record(out, start);
}

void put_update_payload(std::string& out, const RecordChange& change) {
  put_u32(out, change.attempts);
  put_u8(out, change.held ? 1 : 0);
  put_u32(out, static_cast<std::uint32_t>(change.recipients.size()));
  for (const RecipientChange& r : change.recipients) {
    put_u32(out, r.index);
    put_recipient_state(out, r);
  }
}

void put_attempt_record(std::string& out, const AttemptRecord& a) {
  const std::size_t start = begin_record(out, RecordType::attempt);
  put_attempt_payload(out, a);
  end_record(out, start);
}

void put_attempt_payload(std::string& out, const AttemptRecord& a) {
  put_str(out, a.route);
  put_u64(out, static_cast<std::uint64_t>(to_ns(a.time)));
  put_reply(out, a.reply);
  put_str(out, a.recipient);
  put_str(out, a.diagnostic);
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

bool decode_meta(std::string_view payload, MessageRecord* out, std::string* why) {
  Reader in(payload);
  MessageRecord r;
  r.id.value = in.u64();
  in.str(&r.reverse_path);
  in.str(&r.source_channel);
  in.str(&r.message_id);
  in.str(&r.envid);
  const std::uint8_t ret = in.u8();
  r.arrival = from_ns(in.i64());
  r.size = in.u64();
  r.attempts = in.u32();
  const std::uint8_t held = in.u8();
  const std::uint32_t n = in.u32();
  if (!in.ok()) {
    *why = "metadata cut short";
    return false;
  }
  if (r.id.value == 0) {
    *why = "metadata has message id 0";
    return false;
  }
  if (ret > static_cast<std::uint8_t>(DsnRet::headers) || held > 1) {
    *why = "metadata has an out-of-range field";
    return false;
  }
  r.ret = static_cast<DsnRet>(ret);
  r.held = held != 0;
  // Each recipient takes at least 39 bytes: refuse a count the payload cannot hold before
  // reserving memory for it.
  if (n == 0 || n > in.remaining() / 39) {
    *why = "metadata has an impossible recipient count " + std::to_string(n);
    return false;
  }
  r.recipients.resize(n);
  for (auto& rc : r.recipients) {
    in.str(&rc.address);
    in.str(&rc.orcpt);
    rc.notify = in.u8();
    in.str(&rc.route);
    if (!in.ok()) {
      *why = "recipient cut short";
      return false;
    }
    if (!get_recipient_state(in, &rc, why)) return false;
  }
  if (!in.at_end()) {
    *why = "metadata has trailing bytes";
    return false;
  }
  *out = std::move(r);
  return true;
}

bool apply_update(std::string_view payload, MessageRecord* record, std::string* why) {
  Reader in(payload);
  const std::uint32_t attempts = in.u32();
  const std::uint8_t held = in.u8();
  const std::uint32_t n = in.u32();
  if (!in.ok() || held > 1) {
    *why = "update record malformed";
    return false;
  }
  // Decode into copies first so that a malformed record changes nothing.
  std::vector<std::pair<std::uint32_t, RecipientRecord>> changes;
  for (std::uint32_t k = 0; k < n; ++k) {
    const std::uint32_t i = in.u32();
    if (!in.ok() || i >= record->recipients.size()) {
      *why = "update record names recipient " + std::to_string(i) + " of " +
             std::to_string(record->recipients.size());
      return false;
    }
    RecipientRecord rc;
    if (!get_recipient_state(in, &rc, why)) return false;
    changes.emplace_back(i, std::move(rc));
  }
  if (!in.at_end()) {
    *why = "update record has trailing bytes";
    return false;
  }
  record->attempts = attempts;
  record->held = held != 0;
  for (auto& [i, rc] : changes) {
    RecipientRecord& dst = record->recipients[i];
    dst.state = rc.state;
    dst.attempts = rc.attempts;
    dst.next_attempt = rc.next_attempt;
    dst.last_reply = std::move(rc.last_reply);
    dst.remote_mta = std::move(rc.remote_mta);
    dst.delay_notified = rc.delay_notified;
  }
  return true;
}

bool decode_attempt(std::string_view payload, AttemptRecord* out, std::string* why) {
  Reader in(payload);
  AttemptRecord a;
  in.str(&a.route);
  a.time = from_ns(in.i64());
  get_reply(in, &a.reply);
  in.str(&a.recipient);
  in.str(&a.diagnostic);
  if (!in.ok() || !in.at_end()) {
    *why = "attempt record malformed";
    return false;
  }
  *out = std::move(a);
  return true;
}

}  // namespace detail
}  // namespace spool
}  // namespace mailq
