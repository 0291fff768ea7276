#include "core/queue/packed_record.h"

#include <cassert>
#include <cstring>
#include <string>

namespace mailq::detail {

// Layout (little-endian; varint = LEB128, svarint = zigzag LEB128, str = varint length and the
// octets):
//   i64 arrival (ns since the epoch), varint size, varint attempts, u8 ret,
//   str reverse_path, str source_channel, str message_id, str envid, varint recipients,
//   then per recipient: str address, str route, varint destination, u8 state, svarint next_attempt
//   - arrival (ns), str orcpt, u8 notify, varint attempts, svarint reply code, str enhanced, str
//   text, str remote, u8 delay_notified.
// A block is written once and replaced whole when the message changes (a delivery attempt),
// so there is no slack and no per-field allocation.

namespace {

std::size_t varint_size(std::uint64_t v) {
  std::size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

std::uint64_t zigzag(std::int64_t v) {
  return (static_cast<std::uint64_t>(v) << 1) ^ static_cast<std::uint64_t>(v >> 63);
}
std::int64_t unzigzag(std::uint64_t v) {
  return static_cast<std::int64_t>(v >> 1) ^ -static_cast<std::int64_t>(v & 1);
}

std::size_t str_size(std::string_view s) {
  return varint_size(s.size()) + s.size();
}

struct Writer {
  std::uint8_t* p;
  void varint(std::uint64_t v) {
    while (v >= 0x80) {
      *p++ = static_cast<std::uint8_t>(v | 0x80);
      v >>= 7;
    }
    *p++ = static_cast<std::uint8_t>(v);
  }
  void u8(std::uint8_t v) { *p++ = v; }
  void fixed(std::uint64_t v, int n) {
    for (int i = 0; i < n; ++i) *p++ = static_cast<std::uint8_t>(v >> (8 * i));
  }
  void str(std::string_view s) {
    varint(s.size());
    if (!s.empty()) std::memcpy(p, s.data(), s.size());
    p += s.size();
  }
};

// Reads what Writer wrote; the block is the queue's own memory, never input from outside.
std::uint64_t get_varint(const std::uint8_t*& p) {
  std::uint64_t v = 0;
  int shift = 0;
  while (*p & 0x80) {
    v |= static_cast<std::uint64_t>(*p++ & 0x7f) << shift;
    shift += 7;
  }
  v |= static_cast<std::uint64_t>(*p++) << shift;
  return v;
}
std::uint64_t get_fixed(const std::uint8_t*& p, int n) {
  std::uint64_t v = 0;
  for (int i = 0; i < n; ++i) v |= static_cast<std::uint64_t>(*p++) << (8 * i);
  return v;
}
std::string_view get_str(const std::uint8_t*& p) {
  auto n = static_cast<std::size_t>(get_varint(p));
  std::string_view s(reinterpret_cast<const char*>(p), n);
  p += n;
  return s;
}

std::int64_t ns(TimePoint t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}
TimePoint from_ns(std::int64_t v) {
  return TimePoint(std::chrono::duration_cast<TimePoint::duration>(std::chrono::nanoseconds(v)));
}

constexpr std::size_t kFixedHeader = 8;  // arrival

}  // namespace

PackedRecord::PackedRecord(const MessageRecord& m, const std::uint32_t* destinations) {
  const std::int64_t arrival = ns(m.arrival);
  std::size_t n = kFixedHeader + varint_size(m.size) + varint_size(m.attempts) + 1 +
                  str_size(m.reverse_path) + str_size(m.source_channel) + str_size(m.message_id) +
                  str_size(m.envid) + varint_size(m.recipients.size());
  for (std::size_t i = 0; i < m.recipients.size(); ++i) {
    const RecipientRecord& r = m.recipients[i];
    n += str_size(r.address) + str_size(r.route) + varint_size(destinations ? destinations[i] : 0) +
         1 + varint_size(zigzag(ns(r.next_attempt) - arrival)) + str_size(r.orcpt) + 1 +
         varint_size(r.attempts) + varint_size(zigzag(r.last_reply.code)) +
         str_size(r.last_reply.enhanced) + str_size(r.last_reply.text) + str_size(r.remote_mta) + 1;
  }
  data_.reset(new std::uint8_t[n]);
  Writer w{data_.get()};
  w.fixed(static_cast<std::uint64_t>(arrival), 8);
  w.varint(m.size);
  w.varint(m.attempts);
  w.u8(static_cast<std::uint8_t>(m.ret));
  w.str(m.reverse_path);
  w.str(m.source_channel);
  w.str(m.message_id);
  w.str(m.envid);
  w.varint(m.recipients.size());
  for (std::size_t i = 0; i < m.recipients.size(); ++i) {
    const RecipientRecord& r = m.recipients[i];
    w.str(r.address);
    w.str(r.route);
    w.varint(destinations ? destinations[i] : 0);
    w.u8(static_cast<std::uint8_t>(r.state));
    w.varint(zigzag(ns(r.next_attempt) - arrival));
    w.str(r.orcpt);
    w.u8(r.notify);
    w.varint(r.attempts);
    w.varint(zigzag(r.last_reply.code));
    w.str(r.last_reply.enhanced);
    w.str(r.last_reply.text);
    w.str(r.remote_mta);
    w.u8(r.delay_notified ? 1 : 0);
  }
  assert(w.p == data_.get() + n);
}

std::size_t PackedRecord::size() const noexcept {
  // Not stored (a block of about a hundred octets would grow a malloc size class): the end
  // of the last recipient.
  if (!data_) return 0;
  Reader r = recipients();
  for (std::uint32_t i = 0; i < r.count; ++i) next_recipient(r);
  return static_cast<std::size_t>(r.p - data_.get());
}

TimePoint PackedRecord::arrival() const noexcept {
  const std::uint8_t* p = data_.get();
  return from_ns(static_cast<std::int64_t>(get_fixed(p, 8)));
}

PackedRecord::Reader PackedRecord::recipients() const noexcept {
  Reader r;
  const std::uint8_t* p = data_.get();
  r.arrival = from_ns(static_cast<std::int64_t>(get_fixed(p, 8)));
  get_varint(p);  // size
  get_varint(p);  // attempts
  p++;            // ret
  for (int i = 0; i < 4; ++i) get_str(p);
  r.count = static_cast<std::uint32_t>(get_varint(p));
  r.p = p;
  return r;
}

RecipientView PackedRecord::next_recipient(Reader& r) noexcept {
  RecipientView v;
  const std::uint8_t*& p = r.p;
  v.address = get_str(p);
  v.route = get_str(p);
  v.destination = static_cast<std::uint32_t>(get_varint(p));
  v.state = static_cast<RecipientState>(*p++);
  v.next_attempt = r.arrival + std::chrono::duration_cast<TimePoint::duration>(
                                   std::chrono::nanoseconds(unzigzag(get_varint(p))));
  v.orcpt = get_str(p);
  v.notify = *p++;
  v.attempts = static_cast<std::uint32_t>(get_varint(p));
  v.reply_code = static_cast<int>(unzigzag(get_varint(p)));
  v.reply_enhanced = get_str(p);
  v.reply_text = get_str(p);
  v.remote_mta = get_str(p);
  v.delay_notified = *p++ != 0;
  return v;
}

MessageRecord PackedRecord::unpack(MessageId id, bool held) const {
  MessageRecord m;
  m.id = id;
  m.held = held;
  const std::uint8_t* p = data_.get();
  m.arrival = from_ns(static_cast<std::int64_t>(get_fixed(p, 8)));
  m.size = get_varint(p);
  m.attempts = static_cast<std::uint32_t>(get_varint(p));
  m.ret = static_cast<DsnRet>(*p++);
  m.reverse_path = get_str(p);
  m.source_channel = get_str(p);
  m.message_id = get_str(p);
  m.envid = get_str(p);
  Reader r;
  r.count = static_cast<std::uint32_t>(get_varint(p));
  r.p = p;
  r.arrival = m.arrival;
  m.recipients.resize(r.count);
  for (auto& rec : m.recipients) {
    RecipientView v = next_recipient(r);
    rec.address = v.address;
    rec.orcpt = v.orcpt;
    rec.notify = v.notify;
    rec.route = v.route;
    rec.state = v.state;
    rec.attempts = v.attempts;
    rec.next_attempt = v.next_attempt;
    rec.last_reply = Reply(v.reply_code, std::string(v.reply_enhanced), std::string(v.reply_text));
    rec.remote_mta = v.remote_mta;
    rec.delay_notified = v.delay_notified;
  }
  return m;
}

}  // namespace mailq::detail
