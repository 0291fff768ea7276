#include "core/record_wire.h"

#include <utility>

namespace mailq::detail {
namespace {

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
// "dns;mx.example.org (TCP|...)": the host is what is read back. Only that whole form is
// upgraded, so that reading is idempotent (a host name read back is never cut again).
void upgrade_remote_mta(std::string* remote) {
  if (remote->rfind("dns;", 0) != 0 || remote->find(" (TCP|") == std::string::npos) return;
  std::string_view v(*remote);
  v.remove_prefix(4);
  *remote = std::string(v.substr(0, v.find(' ')));
}

// Into a RecipientRecord or a RecipientChange (the same fields).
template <class Recipient>
bool get_recipient_state(Reader& in, Recipient* r, std::string* why) {
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

void put_update_payload(std::string& out, const RecordChange& change) {
  put_u32(out, change.attempts);
  put_u8(out, change.held ? 1 : 0);
  put_u32(out, static_cast<std::uint32_t>(change.recipients.size()));
  for (const RecipientChange& r : change.recipients) {
    put_u32(out, r.index);
    put_recipient_state(out, r);
  }
}

void put_attempt_payload(std::string& out, const AttemptRecord& a) {
  put_str(out, a.route);
  put_u64(out, static_cast<std::uint64_t>(to_ns(a.time)));
  put_reply(out, a.reply);
  put_str(out, a.recipient);
  put_str(out, a.diagnostic);
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

bool decode_update(std::string_view payload, RecordChange* out, std::string* why) {
  Reader in(payload);
  RecordChange c;
  c.id = out->id;
  c.attempts = in.u32();
  const std::uint8_t held = in.u8();
  const std::uint32_t n = in.u32();
  if (!in.ok() || held > 1) {
    *why = "update record malformed";
    return false;
  }
  c.held = held != 0;
  // Each recipient takes at least 33 bytes: refuse a count the payload cannot hold before
  // reserving memory for it.
  if (n > in.remaining() / 33) {
    *why = "update record has an impossible recipient count " + std::to_string(n);
    return false;
  }
  c.recipients.resize(n);
  for (RecipientChange& r : c.recipients) {
    r.index = in.u32();
    if (!get_recipient_state(in, &r, why)) return false;
  }
  if (!in.at_end()) {
    *why = "update record has trailing bytes";
    return false;
  }
  *out = std::move(c);
  return true;
}

bool apply_update(std::string_view payload, MessageRecord* record, std::string* why) {
  RecordChange c;
  c.id = record->id;
  if (!decode_update(payload, &c, why)) return false;
  if (auto applied = apply_change(c, *record); !applied) {
    *why = applied.error().message;
    return false;
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

}  // namespace mailq::detail
